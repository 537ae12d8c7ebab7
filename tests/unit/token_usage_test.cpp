#include <gtest/gtest.h>

#include "runtime/rules/token_usage.hpp"

using namespace parley;

TEST(token_estimate, one_token_per_four_bytes_rounded_up_plus_three_per_message) {
  EXPECT_EQ(estimate_message_tokens(""), 3);
  EXPECT_EQ(estimate_message_tokens("a"), 4);
  EXPECT_EQ(estimate_message_tokens("abcd"), 4);
  EXPECT_EQ(estimate_message_tokens("abcde"), 5);
  EXPECT_EQ(estimate_message_tokens(std::string(400, 'x')), 103);
  // Bytes, not characters: "é" is two bytes in UTF-8, "日本" six.
  EXPECT_EQ(estimate_message_tokens("\xc3\xa9"), 4);
  EXPECT_EQ(estimate_message_tokens("\xe6\x97\xa5\xe6\x9c\xac"), 5);
}

TEST(token_estimate, prompt_over_every_message_sent_completion_over_the_reply) {
  std::vector<llm_message> sent{
      {"system", "be brief"}, {"user", "hello"}, {"assistant", "hello"}, {"user", "how are you?"}};
  auto u = estimate_usage(sent, "how are you?");
  EXPECT_TRUE(u.known);
  EXPECT_EQ(u.prompt_tokens, (2 + 3) + (2 + 3) + (2 + 3) + (3 + 3));
  EXPECT_EQ(u.completion_tokens, 3 + 3);
  EXPECT_EQ(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

TEST(token_estimate, no_messages_costs_nothing_but_the_reply) {
  auto u = estimate_usage({}, "");
  EXPECT_EQ(u.prompt_tokens, 0);
  EXPECT_EQ(u.completion_tokens, 3);
  EXPECT_EQ(u.total_tokens, 3);
}

namespace {

token_usage usage(std::int64_t p, std::int64_t c) {
  return token_usage{p, c, p + c, true};
}

} // namespace

TEST(usage_tally, sums_per_user_day_and_model) {
  usage_tally t{16};
  EXPECT_TRUE(t.add("alice", "2026-12-07", "gpt", usage(10, 5)));
  EXPECT_TRUE(t.add("alice", "2026-12-07", "gpt", usage(7, 1)));
  EXPECT_TRUE(t.add("alice", "2026-12-07", "echo", usage(3, 3)));
  EXPECT_TRUE(t.add("alice", "2026-12-08", "gpt", usage(1, 1)));
  EXPECT_TRUE(t.add("bob", "2026-12-07", "gpt", usage(2, 2)));
  EXPECT_EQ(t.keys(), 4u);
  auto rows = t.take();
  EXPECT_TRUE(t.empty());
  ASSERT_EQ(rows.size(), 4u);
  // Sorted by user, day, model.
  EXPECT_EQ(rows[0].model, "echo");
  EXPECT_EQ(rows[0].requests, 1);
  EXPECT_EQ(rows[1].user_id, "alice");
  EXPECT_EQ(rows[1].day, "2026-12-07");
  EXPECT_EQ(rows[1].model, "gpt");
  EXPECT_EQ(rows[1].requests, 2);
  EXPECT_EQ(rows[1].prompt_tokens, 17);
  EXPECT_EQ(rows[1].completion_tokens, 6);
  EXPECT_EQ(rows[2].day, "2026-12-08");
  EXPECT_EQ(rows[3].user_id, "bob");
  EXPECT_EQ(rows[3].prompt_tokens, 2);
}

TEST(usage_tally, unknown_usage_counts_the_call_only) {
  usage_tally t{4};
  t.add("alice", "2026-12-07", "gpt", token_usage{});
  t.add("alice", "2026-12-07", "gpt", usage(4, 2));
  auto rows = t.take();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 2);
  EXPECT_EQ(rows[0].prompt_tokens, 4);
  EXPECT_EQ(rows[0].completion_tokens, 2);
}

TEST(usage_tally, holds_at_most_max_keys_but_known_keys_still_add) {
  usage_tally t{2};
  EXPECT_TRUE(t.add("a", "2026-12-07", "m", usage(1, 1)));
  EXPECT_TRUE(t.add("b", "2026-12-07", "m", usage(1, 1)));
  EXPECT_FALSE(t.add("c", "2026-12-07", "m", usage(1, 1)));
  EXPECT_TRUE(t.add("a", "2026-12-07", "m", usage(1, 1)));
  EXPECT_EQ(t.keys(), 2u);
  auto rows = t.take();
  EXPECT_EQ(rows[0].requests, 2);
  // Emptied: room again.
  EXPECT_TRUE(t.add("c", "2026-12-07", "m", usage(1, 1)));
}

TEST(usage_tally, a_row_taken_back_merges_with_what_came_since) {
  usage_tally t{8};
  t.add("a", "2026-12-07", "m", usage(5, 5));
  auto rows = t.take();
  t.add("a", "2026-12-07", "m", usage(1, 2));
  for (auto& r : rows)
    EXPECT_TRUE(t.add(r));
  auto again = t.take();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].requests, 2);
  EXPECT_EQ(again[0].prompt_tokens, 6);
  EXPECT_EQ(again[0].completion_tokens, 7);
}

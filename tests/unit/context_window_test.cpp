#include <gtest/gtest.h>

#include "runtime/rules/context_window.hpp"

using namespace parley;

namespace {

message_record msg(std::int64_t seq, std::string role, std::string content, std::string cmid = "") {
  message_record m;
  m.seq = seq;
  m.role = std::move(role);
  m.content = std::move(content);
  m.client_message_id = std::move(cmid);
  if (m.role == "assistant")
    m.reply_to = seq - 1;
  return m;
}

} // namespace

TEST(context_window, keeps_only_the_newest_n) {
  message_window w;
  for (int i = 1; i <= 10; ++i)
    push_window(w, msg(i, i % 2 ? "user" : "assistant", "m" + std::to_string(i)), 4);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w.front().seq, 7);
  EXPECT_EQ(w.back().seq, 10);
}

TEST(context_window, context_is_system_then_newest_messages_ending_with_the_new_one) {
  message_window w;
  for (int i = 1; i <= 6; ++i)
    push_window(w, msg(i, i % 2 ? "user" : "assistant", "m" + std::to_string(i)), 4);
  auto ctx = build_context("be brief", w, msg(7, "user", "new"), 4);
  ASSERT_EQ(ctx.size(), 5u);
  EXPECT_EQ(ctx[0].role, "system");
  EXPECT_EQ(ctx[0].content, "be brief");
  EXPECT_EQ(ctx[1].content, "m4");
  EXPECT_EQ(ctx[3].content, "m6");
  EXPECT_EQ(ctx[4].content, "new");
  // No system prompt, window of one: only the new message.
  auto one = build_context("", w, msg(7, "user", "new"), 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].content, "new");
  // A short history is sent whole.
  message_window shorter{msg(1, "user", "a"), msg(2, "assistant", "b")};
  EXPECT_EQ(build_context("", shorter, msg(3, "user", "c"), 20).size(), 3u);
}

TEST(context_window, finds_a_client_id_with_its_reply) {
  message_window w{msg(1, "user", "a", "c1"), msg(2, "assistant", "A"),
                               msg(3, "user", "b", "c2")};
  auto hit = find_in_window(w, "c1");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->first.seq, 1);
  ASSERT_TRUE(hit->second);
  EXPECT_EQ(hit->second->content, "A");
  auto no_reply = find_in_window(w, "c2");
  ASSERT_TRUE(no_reply);
  EXPECT_FALSE(no_reply->second);
  EXPECT_FALSE(find_in_window(w, "zz"));
}

// API.md sections 1 and 4: with a token budget the context is the system
// prompt, the longest suffix of history whose counts fit together with it
// and the new message, and the new message, always.
TEST(context_window, a_token_budget_keeps_the_longest_suffix_that_fits) {
  message_window w;
  std::int64_t counts[] = {50, 40, 30, 20, 10, 5};
  for (int i = 0; i < 6; ++i) {
    auto m = msg(i + 1, i % 2 ? "assistant" : "user", "m" + std::to_string(i + 1));
    m.tokens = counts[i];
    push_window(w, m, 20);
  }
  auto user = msg(7, "user", "hello"); // estimate: 2 + 3 = 5
  std::string system = "be brief";     // estimate: 2 + 3 = 5
  auto contents = [](const context_plan& p) {
    std::vector<std::string> out;
    for (auto& m : p.messages)
      out.push_back(m.content);
    return out;
  };
  using v = std::vector<std::string>;
  // 5 + 5 + (5 + 10 + 20) = 45 fits 45; the next (30) would not.
  auto p = plan_context(system, w, user, 20, 45);
  EXPECT_EQ(contents(p), (v{"be brief", "m4", "m5", "m6", "hello"}));
  EXPECT_EQ(p.others, 5 + 35);
  // One token less: m4 no longer fits, and nothing older is taken after a gap.
  EXPECT_EQ(contents(plan_context(system, w, user, 20, 44)), (v{"be brief", "m5", "m6", "hello"}));
  // The new message is sent even when it alone is over the budget.
  p = plan_context(system, w, user, 20, 1);
  EXPECT_EQ(contents(p), (v{"be brief", "hello"}));
  EXPECT_EQ(p.others, 5);
  // No budget: PARLEY_CONTEXT_MESSAGES alone (n - 1 of history).
  EXPECT_EQ(contents(plan_context("", w, user, 3, 0)), (v{"m5", "m6", "hello"}));
  // The message count still caps a large budget.
  EXPECT_EQ(contents(plan_context("", w, user, 3, 100000)), (v{"m5", "m6", "hello"}));
  // A message without a count weighs its estimate.
  message_window unknown{msg(1, "user", std::string(40, 'x'))}; // 10 + 3
  EXPECT_EQ(plan_context("", unknown, user, 20, 18).messages.size(), 2u);
  EXPECT_EQ(plan_context("", unknown, user, 20, 17).messages.size(), 1u);
}

TEST(context_window, a_user_message_counts_the_prompt_growth_it_caused) {
  token_usage u;
  u.prompt_tokens = 120;
  u.known = true;
  EXPECT_EQ(user_message_tokens(u, 100, "anything"), 20);
  // Not reported, or not positive (an upstream counting otherwise): the
  // estimate.
  EXPECT_EQ(user_message_tokens(u, 120, "abcd"), 4);
  EXPECT_EQ(user_message_tokens(token_usage{}, 0, "abcdefgh"), 5);
  EXPECT_EQ(estimate_message_tokens(""), 3);
  EXPECT_EQ(estimate_message_tokens("abcde"), 5);
}

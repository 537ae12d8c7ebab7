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

// The pure part of OpenAI's stateful API (net/http/openai_items.hpp and the
// Conversations bodies in net/http/api.hpp): ids and their inverses, the
// translation of items into stored messages, and what is refused.

#include <gtest/gtest.h>

#include "net/http/api.hpp"
#include "net/http/openai_items.hpp"

using namespace parley;
using namespace parley::net;

TEST(openai_items, conversation_ids_wrap_session_ids_and_nothing_else) {
  EXPECT_EQ(conversation_id("abc123"), "conv_abc123");
  EXPECT_EQ(session_of_conversation("conv_abc123"), std::optional<std::string>{"abc123"});
  for (auto bad : {"conv_", "abc123", "resp_abc", "conv_a.b", "conv_a_b", "conv_a-b", "CONV_abc",
                   "conv_\xc3\xa9"})
    EXPECT_FALSE(session_of_conversation(bad)) << bad;
  EXPECT_FALSE(session_of_conversation("conv_" + std::string(65, 'a')));
}

TEST(openai_items, item_ids_name_one_message_of_one_session) {
  auto id = item_id("abc", 17);
  EXPECT_EQ(id, "msg_abc_17");
  EXPECT_EQ(seq_of_item(id, "abc"), std::optional<std::int64_t>{17});
  EXPECT_FALSE(seq_of_item(id, "abd"));  // another session's
  EXPECT_FALSE(seq_of_item(id, "ab"));   // a prefix of the session id
  EXPECT_FALSE(seq_of_item(id, "abc_1"));
  for (auto bad : {"msg_abc_", "msg_abc_0", "msg_abc_017", "msg_abc_-1", "msg_abc_1x", "msg_abc",
                   "item_abc_1", "msg_abc_99999999999999999999"})
    EXPECT_FALSE(seq_of_item(bad, "abc")) << bad;
}

TEST(openai_items, unix_seconds_of_stored_times) {
  EXPECT_EQ(unix_seconds("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(unix_seconds("2026-11-23T10:00:00.123456Z"), 1795428000);
  EXPECT_EQ(unix_seconds("2024-02-29T23:59:59Z"), 1709251199);
  EXPECT_EQ(unix_seconds("yesterday"), 0);
  EXPECT_EQ(unix_seconds(""), 0);
}

TEST(openai_items, create_conversation_translates_items_to_messages) {
  auto p = parse_create_conversation(R"({
    "metadata": {"topic": "x"},
    "items": [
      {"role": "user", "content": "plain"},
      {"type": "message", "role": "assistant",
       "content": [{"type": "output_text", "text": "a"}, {"type": "output_text", "text": "b"}]},
      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "c"}]}
    ]})");
  ASSERT_TRUE(p) << p.error->message;
  ASSERT_EQ(p.value.items.size(), 3u);
  EXPECT_EQ(p.value.items[0].role, "user");
  EXPECT_EQ(p.value.items[0].text, "plain");
  EXPECT_EQ(p.value.items[1].role, "assistant");
  EXPECT_EQ(p.value.items[1].text, "ab");
  EXPECT_EQ(p.value.items[2].text, "c");
  EXPECT_EQ(p.value.metadata_json, R"({"topic":"x"})");

  auto empty = parse_create_conversation("");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty.value.items.empty());
  EXPECT_EQ(empty.value.metadata_json, "{}");
}

TEST(openai_items, create_conversation_refuses_what_a_session_cannot_hold) {
  struct tc {
    std::string body;
    errc code;
  } cases[] = {
    {R"({"items": {}})", errc::invalid_request},
    {R"({"items": [{"role": "system", "content": "x"}]})", errc::invalid_request},
    {R"({"items": [{"role": "developer", "content": "x"}]})", errc::invalid_request},
    {R"({"items": [{"content": "x"}]})", errc::invalid_request},
    {R"({"items": [{"role": "user"}]})", errc::invalid_request},
    {R"({"items": [{"role": "user", "content": ""}]})", errc::invalid_request},
    {R"({"items": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})",
     errc::invalid_request},
    {R"({"items": [{"role": "user", "content": [{"type": "input_text"}]}]})", errc::invalid_request},
    {R"({"items": [{"type": "function_call_output", "role": "user", "content": "x"}]})",
     errc::invalid_request},
    {R"({"items": [{"role": "user", "content": "a\u0000b"}]})", errc::invalid_request},
    {R"({"metadata": []})", errc::invalid_request},
    {R"({"metadata": {"a": 1}})", errc::invalid_request},
    {R"({"metadata": {"": "x"}})", errc::invalid_request},
    {R"({"items": [{"role": "user", "content": ")" + std::string(33 * 1024, 'a') + R"("}]})",
     errc::payload_too_large},
  };
  for (auto& c : cases) {
    auto p = parse_create_conversation(c.body);
    ASSERT_FALSE(p) << c.body.substr(0, 200);
    EXPECT_EQ(p.error->code, c.code) << c.body.substr(0, 200);
    EXPECT_FALSE(p.error->message.empty());
  }
  std::string many = R"({"items": [)";
  for (int i = 0; i < 21; ++i)
    many += std::string(i ? "," : "") + R"({"role": "user", "content": "x"})";
  many += "]}";
  EXPECT_FALSE(parse_create_conversation(many));
  std::string pairs = R"({"metadata": {)";
  for (int i = 0; i < 17; ++i)
    pairs += std::string(i ? "," : "") + "\"k" + std::to_string(i) + "\": \"v\"";
  pairs += "}}";
  EXPECT_FALSE(parse_create_conversation(pairs));
}

TEST(openai_items, update_conversation_needs_metadata) {
  auto p = parse_update_conversation(R"({"metadata": {"a": "b"}})");
  ASSERT_TRUE(p);
  EXPECT_EQ(p.value.metadata_json, R"({"a":"b"})");
  EXPECT_FALSE(parse_update_conversation(R"({})"));
  EXPECT_FALSE(parse_update_conversation(""));
  EXPECT_FALSE(parse_update_conversation(R"({"metadata": "x"})"));
}

TEST(openai_items, response_ids_name_a_reply_of_a_session) {
  auto id = response_id("abc123", 4);
  EXPECT_EQ(id, "resp_abc123_4");
  auto turn = turn_of_response(id);
  ASSERT_TRUE(turn);
  EXPECT_EQ(turn->first, "abc123");
  EXPECT_EQ(turn->second, 4);
  for (auto bad : {"resp_", "resp_abc", "resp_abc_", "resp_abc_0", "resp_a.b_2", "resp__2",
                   "conv_abc_2", "resp_abc_2_3", "resp_abc_x"})
    EXPECT_FALSE(turn_of_response(bad)) << bad;
}

TEST(openai_items, a_response_request_is_translated_for_the_turn_and_the_upstream) {
  auto p = parse_create_response(R"({"model": "m", "input": "hi", "instructions": "be brief",
    "previous_response_id": "resp_abc_2", "temperature": 0.5, "max_output_tokens": 64,
    "metadata": {"k": "v"}})");
  ASSERT_TRUE(p) << p.error->message;
  auto& b = p.value;
  ASSERT_EQ(b.input.size(), 1u);
  EXPECT_EQ(b.input[0].role, "user");
  EXPECT_EQ(b.input[0].text, "hi");
  EXPECT_EQ(b.instructions, std::optional<std::string>{"be brief"});
  EXPECT_EQ(b.previous_response_id, "resp_abc_2");
  EXPECT_TRUE(b.store);
  EXPECT_FALSE(b.stream);
  EXPECT_EQ(b.call_options, R"({"max_tokens":64,"temperature":0.5})");
  EXPECT_EQ(b.metadata_json, R"({"k":"v"})");

  auto conv = parse_create_response(R"({"input": [{"role": "user", "content":
    [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}],
    "conversation": {"id": "conv_x"}})");
  ASSERT_TRUE(conv);
  EXPECT_EQ(conv.value.conversation, "conv_x");
  EXPECT_EQ(conv.value.input[0].text, "ab");
  EXPECT_EQ(conv.value.call_options, "{}");
  EXPECT_EQ(parse_create_response(R"({"input": "x", "conversation": "conv_y"})").value.conversation,
            "conv_y");

  // Unstored calls may carry a whole conversation, system roles included.
  auto free = parse_create_response(R"({"store": false, "input": [
    {"role": "developer", "content": "d"}, {"role": "system", "content": "s"},
    {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})");
  ASSERT_TRUE(free) << free.error->message;
  EXPECT_FALSE(free.value.store);
  ASSERT_EQ(free.value.input.size(), 4u);
  EXPECT_EQ(free.value.input[0].role, "developer");
}

TEST(openai_items, a_response_request_is_refused_with_a_reason) {
  for (auto body : {
         R"({})",
         R"({"input": ""})",
         R"({"input": []})",
         R"({"input": {}})",
         R"({"input": "x", "previous_response_id": "resp_a_2", "conversation": "conv_a"})",
         R"({"input": "x", "conversation": {}})",
         R"({"input": "x", "conversation": 5})",
         R"({"input": "x", "temperature": 2.5})",
         R"({"input": "x", "temperature": -1})",
         R"({"input": "x", "max_output_tokens": 0})",
         R"({"input": "x", "max_output_tokens": 1.5})",
         R"({"input": "x", "store": 1})",
         R"({"input": "x", "stream": "yes"})",
         R"({"input": "x", "model": ""})",
         R"({"input": "x", "instructions": 5})",
         R"({"input": [{"role": "tool", "content": "t"}], "store": false})",
         R"({"input": "x", "metadata": {"a": 1}})",
         R"({"input": "a\u0000b"})",
       }) {
    auto p = parse_create_response(body);
    ASSERT_FALSE(p) << body;
    EXPECT_EQ(p.error->code, errc::invalid_request) << body;
  }
  auto big = parse_create_response(R"({"input": ")" + std::string(33 * 1024, 'a') + R"("})");
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error->code, errc::payload_too_large);
}

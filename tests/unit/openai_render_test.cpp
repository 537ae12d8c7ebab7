// OpenAI's Response, Conversation and item list as the official SDKs read
// them (actors/edge/openai_render.hpp).

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/edge/openai_render.hpp"

namespace parley {
namespace {

using json = nlohmann::json;

message_record reply_of(const std::string& text) {
  message_record m;
  m.seq = 4;
  m.role = "assistant";
  m.content = text;
  m.created_at = "2026-11-23T10:00:00.123456Z";
  m.reply_to = 3;
  m.model = "mock-model";
  m.usage = {11, 5, 16, true};
  return m;
}

TEST(openai_render, a_stored_response_names_its_turn_and_conversation) {
  response_view v{"resp_abc_4", "abc", "resp_abc_2", "be brief", R"({"k":"v"})",
                  R"({"temperature":0.5,"max_tokens":64})", true};
  auto j = json::parse(render_response(v, reply_of("the \"answer\"")));
  EXPECT_EQ(j["id"], "resp_abc_4");
  EXPECT_EQ(j["object"], "response");
  EXPECT_EQ(j["created_at"], 1795428000);
  EXPECT_EQ(j["status"], "completed");
  EXPECT_EQ(j["model"], "mock-model");
  EXPECT_EQ(j["previous_response_id"], "resp_abc_2");
  EXPECT_EQ(j["conversation"], json({{"id", "conv_abc"}}));
  EXPECT_EQ(j["instructions"], "be brief");
  EXPECT_EQ(j["temperature"], 0.5);
  EXPECT_EQ(j["max_output_tokens"], 64);
  EXPECT_EQ(j["metadata"], json({{"k", "v"}}));
  EXPECT_EQ(j["store"], true);
  ASSERT_EQ(j["output"].size(), 1u);
  auto& item = j["output"][0];
  EXPECT_EQ(item["type"], "message");
  EXPECT_EQ(item["id"], "msg_abc_4");
  EXPECT_EQ(item["role"], "assistant");
  EXPECT_EQ(item["status"], "completed");
  EXPECT_EQ(item["content"],
            json::parse(R"([{"type":"output_text","text":"the \"answer\"","annotations":[]}])"));
  EXPECT_EQ(j["usage"], json::parse(R"({"input_tokens":11,"input_tokens_details":{"cached_tokens":0},
    "output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":16})"));
}

TEST(openai_render, an_unstored_response_has_no_conversation_and_nulls_for_what_was_not_asked) {
  response_view v{"resp_0f", "", "", "", "{}", "{}", false};
  auto j = json::parse(render_response(v, reply_of("x")));
  EXPECT_TRUE(j["conversation"].is_null());
  EXPECT_TRUE(j["previous_response_id"].is_null());
  EXPECT_TRUE(j["instructions"].is_null());
  EXPECT_TRUE(j["temperature"].is_null());
  EXPECT_TRUE(j["max_output_tokens"].is_null());
  EXPECT_EQ(j["store"], false);
  EXPECT_EQ(j["output"][0]["id"], "msg_0f");
}

// A response without call options is written straight into a string; it
// must read exactly as the DOM's rendering (taken here with an option
// neither temperature nor max_tokens, so both stay null).
TEST(openai_render, a_response_written_directly_reads_as_the_dom_one) {
  auto other = reply_of("tab\t, quote \", backslash \\, é, 🙂, \x01 and invalid \xff");
  other.usage = {};
  for (const auto& [v, reply] : std::vector<std::pair<response_view, message_record>>{
         {{"resp_abc_4", "abc", "resp_abc_2", "be \"brief\"", R"({"k": "v", "n": "ü"})", "{}", true},
          reply_of("plain")},
         {{"resp_abc_6", "abc", "", "", "{}", "", true}, other},
         {{"resp_0f", "", "", "", "{}", "{}", false}, reply_of("")},
         {{"resp_0f", "abc", "resp_abc_2", "", "{}", "{}", false}, other},
       }) {
    auto direct = json::parse(render_response(v, reply));
    auto dom_view = v;
    dom_view.call_options = R"({"seed":1})";
    auto dom = json::parse(render_response(dom_view, reply));
    EXPECT_EQ(direct, dom) << direct.dump() << "\n" << dom.dump();
  }
}

TEST(openai_render, conversations_and_item_lists) {
  session_record s;
  s.id = "abc";
  s.created_at = "1970-01-01T00:01:40Z";
  s.metadata_json = R"({"topic":"t"})";
  EXPECT_EQ(json::parse(render_conversation(s)),
            json::parse(R"({"id":"conv_abc","object":"conversation","created_at":100,
                            "metadata":{"topic":"t"}})"));
  EXPECT_EQ(json::parse(render_conversation_deleted("conv_abc")),
            json::parse(R"({"id":"conv_abc","object":"conversation.deleted","deleted":true})"));
  message_page p;
  message_record u;
  u.seq = 3;
  u.role = "user";
  u.content = "q";
  p.data = {reply_of("a"), u};
  p.next_after = 3;
  auto list = json::parse(render_item_list("abc", p));
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["first_id"], "msg_abc_4");
  EXPECT_EQ(list["last_id"], "msg_abc_3");
  EXPECT_EQ(list["has_more"], true);
  EXPECT_EQ(list["data"][1]["content"], json::parse(R"([{"type":"input_text","text":"q"}])"));
  auto empty = json::parse(render_item_list("abc", message_page{}));
  EXPECT_TRUE(empty["first_id"].is_null());
  EXPECT_TRUE(empty["last_id"].is_null());
  EXPECT_EQ(empty["has_more"], false);
}

} // namespace
} // namespace parley

// A turn's answer, written without a JSON DOM: the same document as the DOM
// rendering would give, for any text.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "actors/edge/api_render.hpp"
#include "net/http/json_text.hpp"

namespace parley {
namespace {

using json = nlohmann::json;

TEST(render, a_turn_is_the_documented_json_for_any_text) {
  for (std::string text : {std::string{"hello"}, std::string{"quote \" and \\ backslash"},
                           std::string{"ctl \x01\x1f\n\t\r\b\f end"}, std::string{"héllo ✓ 🚀"},
                           std::string{""}, std::string{"{\"json\": [1, 2]}"}}) {
    turn_reply t;
    t.user = {7, "user", text, "2026-11-23T10:00:00.000001Z", 0, "", text + "-id", {}};
    t.reply = {8, "assistant", text, "2026-11-23T10:00:00.000002Z", 7, "gpt-x", "",
               token_usage{12, 5, 17, true}};
    auto j = json::parse(render_turn(t));
    json want = {{"user_message",
                  {{"seq", 7},
                   {"role", "user"},
                   {"content", text},
                   {"created_at", "2026-11-23T10:00:00.000001Z"},
                   {"client_message_id", text + "-id"}}},
                 {"reply",
                  {{"seq", 8},
                   {"role", "assistant"},
                   {"content", text},
                   {"created_at", "2026-11-23T10:00:00.000002Z"},
                   {"reply_to", 7},
                   {"model", "gpt-x"},
                   {"usage", {{"prompt_tokens", 12}, {"completion_tokens", 5}, {"total_tokens", 17}}}}}};
    EXPECT_EQ(j, want) << render_turn(t);
    // GET .../messages renders the same message the same way.
    auto page = json::parse(render_message_page(message_page{{t.user, t.reply}, 0}));
    EXPECT_EQ(page["data"][1], want["reply"]);
    EXPECT_EQ(page["data"][0], want["user_message"]);
  }
  // Without a client id the user message has no such key.
  turn_reply t;
  t.user = {1, "user", "x", "t", 0, "", "", {}};
  t.reply = {2, "assistant", "y", "t", 1, "echo", "", {}};
  EXPECT_FALSE(json::parse(render_turn(t))["user_message"].contains("client_message_id"));
  // A reply without reported usage (an upstream that sent none, a message
  // stored before usage was recorded) has "usage": null; a user message none.
  auto j = json::parse(render_turn(t));
  EXPECT_TRUE(j["reply"].contains("usage"));
  EXPECT_TRUE(j["reply"]["usage"].is_null());
  EXPECT_FALSE(j["user_message"].contains("usage"));
  EXPECT_EQ(json::parse(render_message_page(message_page{{t.reply}, 0}))["data"][0], j["reply"]);
}

TEST(render, invalid_utf8_becomes_the_replacement_character) {
  std::string out;
  net::append_json_string(out, std::string{"a\xff" "b\xc3(\xed\xa0\x80z"});
  EXPECT_EQ(json::parse(out).get<std::string>(), "a\xef\xbf\xbd" "b\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz");
  out.clear();
  net::append_json_string(out, "\x7f");
  EXPECT_EQ(out, "\"\\u007f\"");
}

} // namespace
} // namespace parley

TEST(render, a_delta_event_carries_the_piece_as_one_json_string) {
  for (std::string piece : {"plain words ", "quote \" and \\ backslash", "line\nbreak\ttab",
                            "\x01 control", "caf\xc3\xa9 \xf0\x9f\x98\x80", "bad \xff byte"}) {
    auto sse = parley::render_delta_sse(piece);
    ASSERT_EQ(sse.rfind("event: delta\ndata: ", 0), 0u) << sse;
    ASSERT_EQ(sse.substr(sse.size() - 2), "\n\n");
    auto data = sse.substr(19, sse.size() - 21);
    EXPECT_EQ(data.find('\n'), std::string::npos) << "one data line: " << data;
    auto j = nlohmann::json::parse(data);
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j.size(), 1u);
    if (piece.find('\xff') == std::string::npos)
      EXPECT_EQ(j.at("content").get<std::string>(), piece);
    else
      EXPECT_EQ(j.at("content").get<std::string>(), "bad \xef\xbf\xbd byte");
  }
}

TEST(render, probe_and_feedback_bodies_keep_their_documented_field_order) {
  EXPECT_EQ(parley::render_health({}), R"({"status":"ok"})");
  EXPECT_EQ(parley::render_health({"storage", "llm"}),
            R"({"status":"unavailable","failing":["storage","llm"]})");
  EXPECT_EQ(parley::render_ready(true, "ok", "off", "ok", "ok"),
            R"({"status":"ready","checks":{"postgres":"ok","redis":"off","cluster":"ok","actors":"ok"}})");
  EXPECT_EQ(parley::render_ready(false, "down", "ok", "joining", "failing"),
            R"({"status":"unavailable","checks":{"postgres":"down","redis":"ok","cluster":"joining","actors":"failing"}})");
  EXPECT_EQ(parley::render_feedback("abc", 7, -1), R"({"session_id":"abc","seq":7,"rating":-1})");
  EXPECT_EQ(parley::render_completion_error_sse({parley::errc::overloaded, "busy"}),
            "data: " + parley::error_body({parley::errc::overloaded, "busy"}) + "\n\n");
}

TEST(render, gateway_chunks_are_relayed_as_they_came) {
  EXPECT_EQ(parley::render_relayed_chunk(R"({"choices":[]})"), "data: {\"choices\":[]}\n\n");
  // An upstream event of several data lines stays one event of as many lines.
  EXPECT_EQ(parley::render_relayed_chunk("{\n\"a\": 1\n}"), "data: {\ndata: \"a\": 1\ndata: }\n\n");
  parley::token_usage u;
  u.prompt_tokens = 3;
  u.completion_tokens = 4;
  u.total_tokens = 7;
  u.known = true;
  auto usage =
    nlohmann::json::parse(parley::render_usage_chunk("chatcmpl-1", 5, "echo", u).substr(6));
  EXPECT_EQ(usage["choices"], nlohmann::json::array());
  EXPECT_EQ(usage["usage"], nlohmann::json({{"prompt_tokens", 3},
                                            {"completion_tokens", 4},
                                            {"total_tokens", 7}}));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  parley::llm_result r;
  r.content = "hi";
  r.model = "echo";
  EXPECT_FALSE(nlohmann::json::parse(parley::render_completion("c", 1, r)).contains("usage"));
  r.usage = u;
  auto with_usage = nlohmann::json::parse(parley::render_completion("c", 1, r));
  EXPECT_EQ(with_usage["usage"]["total_tokens"], 7);
}

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "net/http/api.hpp"
#include "net/http/api_error.hpp"
#include "net/http/percent.hpp"

using namespace parley;
using namespace parley::net;

TEST(api, post_message_accepts_content_client_id_and_stream) {
  auto p = parse_post_message(R"({"content":"hi","client_message_id":"c-1","stream":true})");
  ASSERT_TRUE(p);
  EXPECT_EQ(p.value.content, "hi");
  EXPECT_EQ(p.value.client_message_id, "c-1");
  EXPECT_TRUE(p.value.stream);
}

TEST(api, post_message_rejects_bad_input_with_the_right_code) {
  struct tc {
    const char* body;
    errc code;
  } cases[] = {
    {"", errc::invalid_request},
    {"not json", errc::invalid_request},
    {"[1,2]", errc::invalid_request},
    {R"({})", errc::invalid_request},
    {R"({"content":""})", errc::invalid_request},
    {R"({"content":5})", errc::invalid_request},
    {R"({"content":"x","stream":"yes"})", errc::invalid_request},
    {R"({"content":"x","client_message_id":""})", errc::invalid_request},
    {R"({"content":"x","client_message_id":7})", errc::invalid_request},
    {"{\"content\":\"\xff\xfe\"}", errc::invalid_request},
  };
  for (auto& c : cases) {
    auto p = parse_post_message(c.body);
    ASSERT_FALSE(p) << c.body;
    EXPECT_EQ(p.error->code, c.code) << c.body;
    EXPECT_FALSE(p.error->message.empty());
  }
}

TEST(api, content_limit_is_32_kib_and_client_id_128_chars) {
  std::string ok(max_content_bytes, 'a'), big(max_content_bytes + 1, 'a');
  EXPECT_TRUE(parse_post_message(R"({"content":")" + ok + "\"}"));
  auto p = parse_post_message(R"({"content":")" + big + "\"}");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error->code, errc::payload_too_large);
  // 128 code points pass even when they take more bytes; 129 do not.
  std::string id;
  for (int i = 0; i < 128; ++i)
    id += "\xc3\xa9";
  EXPECT_TRUE(parse_post_message(R"({"content":"x","client_message_id":")" + id + "\"}"));
  EXPECT_FALSE(parse_post_message(R"({"content":"x","client_message_id":")" + id + "e\"}"));
}

TEST(api, deeply_nested_json_is_rejected_without_recursion) {
  std::string deep(10000, '[');
  auto p = parse_post_message(deep);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error->code, errc::invalid_request);
  // Brackets inside strings do not count.
  EXPECT_TRUE(parse_post_message(R"({"content":")" + std::string(200, '[') + "\"}"));
}

TEST(api, create_session_body_is_optional_and_typed) {
  EXPECT_TRUE(parse_create_session(""));
  auto p = parse_create_session(R"({"system_prompt":"s","model":"m","metadata":{"a":1}})");
  ASSERT_TRUE(p);
  EXPECT_EQ(*p.value.system_prompt, "s");
  EXPECT_EQ(*p.value.model, "m");
  EXPECT_EQ(p.value.metadata_json, R"({"a":1})");
  EXPECT_FALSE(parse_create_session(R"({"metadata":[1]})"));
  EXPECT_FALSE(parse_create_session(R"({"system_prompt":1})"));
}

TEST(api, feedback_rating_is_minus_one_or_one) {
  EXPECT_TRUE(parse_feedback(R"({"rating":1})"));
  EXPECT_TRUE(parse_feedback(R"({"rating":-1,"comment":"meh"})"));
  EXPECT_FALSE(parse_feedback(R"({"rating":0})"));
  EXPECT_FALSE(parse_feedback(R"({"rating":"1"})"));
  EXPECT_FALSE(parse_feedback(R"({"rating":1.5})"));
  EXPECT_FALSE(parse_feedback(R"({"rating":1,"comment":")" + std::string(4097, 'c') + "\"}"));
}

TEST(api, query_parsing_and_ranges) {
  auto q = parse_query("limit=5&after=3&cursor=a%20b+c");
  ASSERT_TRUE(q);
  EXPECT_EQ(q.value.at("cursor"), "a b c");
  EXPECT_EQ(query_int(q.value, "limit", 20, 1, 100).value, 5);
  EXPECT_EQ(query_int(q.value, "missing", 20, 1, 100).value, 20);
  for (auto bad : {"limit=0", "limit=101", "limit=x", "limit=", "limit=5x", "limit=-1"}) {
    auto b = parse_query(bad);
    ASSERT_TRUE(b);
    EXPECT_FALSE(query_int(b.value, "limit", 20, 1, 100)) << bad;
  }
  EXPECT_FALSE(parse_query("a=%zz"));
  EXPECT_FALSE(parse_query("a=%4"));
}

TEST(api, json_content_type_detection) {
  EXPECT_TRUE(is_json_content_type("application/json"));
  EXPECT_TRUE(is_json_content_type("Application/JSON; charset=utf-8"));
  EXPECT_FALSE(is_json_content_type("text/plain"));
  EXPECT_FALSE(is_json_content_type("application/jsonx"));
}

TEST(api, seq_segments) {
  EXPECT_EQ(parse_seq("12"), 12);
  EXPECT_FALSE(parse_seq("0"));
  EXPECT_FALSE(parse_seq("-1"));
  EXPECT_FALSE(parse_seq("1a"));
  EXPECT_FALSE(parse_seq(""));
}

TEST(api, error_bodies_have_openai_shape_and_statuses) {
  EXPECT_EQ(error_body({errc::session_busy, "busy"}),
            R"({"error":{"code":"session_busy","message":"busy","param":null,"type":"rate_limit_error"}})");
  EXPECT_EQ(error_body({errc::invalid_request, "bad", "messages[0].role"}),
            R"({"error":{"code":"invalid_request","message":"bad","param":"messages[0].role",)"
            R"("type":"invalid_request_error"}})");
  EXPECT_EQ(http_status(errc::payload_too_large), 413u);
  EXPECT_EQ(http_status(errc::upstream_timeout), 504u);
  EXPECT_TRUE(has_retry_after(errc::storage_unavailable));
  EXPECT_FALSE(has_retry_after(errc::not_found));
  EXPECT_EQ(errc_from_code("rate_limited"), errc::rate_limited);
  // Oversized headers: RFC 6585's 431, with a code API.md section 2 lists.
  EXPECT_EQ(http_status(errc::header_too_large), 431u);
  EXPECT_EQ(code_name(errc::header_too_large), "invalid_request");
  EXPECT_FALSE(has_retry_after(errc::header_too_large));
  EXPECT_EQ(http_status(errc::budget_exceeded), 429u);
  EXPECT_EQ(code_name(errc::budget_exceeded), "budget_exceeded");
  EXPECT_TRUE(has_retry_after(errc::budget_exceeded));
  EXPECT_EQ(errc_from_code("budget_exceeded"), errc::budget_exceeded);
  EXPECT_EQ(errc_from_code("invalid_request"), errc::invalid_request);
}

TEST(api, chat_completion_requests_follow_openai) {
  auto ok = parse_chat_completion(
    R"({"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"stream":true,"temperature":0.3})");
  ASSERT_TRUE(ok) << ok.error->message;
  EXPECT_EQ(ok.value.model, "m");
  ASSERT_EQ(ok.value.messages.size(), 2u);
  EXPECT_EQ(ok.value.messages[1].content, "ab");
  EXPECT_TRUE(ok.value.stream);
  EXPECT_FALSE(ok.value.include_usage);
  // Streamed: Parley asks the upstream for usage; everything else as sent.
  auto up = nlohmann::json::parse(ok.value.upstream_body);
  EXPECT_EQ(up["stream_options"], nlohmann::json({{"include_usage", true}}));
  EXPECT_EQ(up["temperature"], 0.3);
  EXPECT_EQ(up["messages"][1]["content"][1]["text"], "b");
  for (auto [bad, param] : std::vector<std::pair<std::string, std::string>>{
         {R"({"messages":[]})", "messages"},
         {R"({"messages":"hi"})", "messages"},
         {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"},
         {R"({"messages":[{"role":"x","content":"a"}]})", "messages[0].role"},
         {R"({"messages":[{"content":"a"}]})", "messages[0].role"},
         {R"({"messages":[{"role":"user","content":"a"},7]})", "messages[1]"},
         {R"({"messages":[{"role":"user","content":[{"text":"a"}]}]})", "messages[0].content[0]"},
         {R"({"model":5,"messages":[{"role":"user","content":"a"}]})", "model"},
         {R"({"messages":[{"role":"user","content":"a"}],"stream":"yes"})", "stream"},
         {R"({"messages":[{"role":"user","content":"a"}],"stream_options":{"include_usage":1}})",
          "stream_options.include_usage"}}) {
    auto p = parse_chat_completion(bad);
    ASSERT_FALSE(p) << bad;
    EXPECT_EQ(p.error->code, parley::errc::invalid_request) << bad;
    EXPECT_EQ(p.error->param, param) << bad;
  }
}

TEST(api, chat_completion_requests_pass_through_whole) {
  // Every role, every message field, unknown fields, image parts, a
  // content over 32 KiB: all kept (API.md section 5).
  nlohmann::json req = {
    {"messages",
     {{{"role", "developer"}, {"content", "d"}},
      {{"role", "user"},
       {"content",
        {{{"type", "text"}, {"text", "look"}},
         {{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64,AAAA"}}}}}},
       {"name", "bob"}},
      {{"role", "assistant"},
       {"content", nullptr},
       {"refusal", nullptr},
       {"tool_calls",
        {{{"id", "call_1"},
          {"type", "function"},
          {"function", {{"name", "f"}, {"arguments", "{\"a\":1}"}}}}}}},
      {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", std::string(40 * 1024, 'r')}},
      {{"role", "assistant"}, {"tool_calls", nlohmann::json::array()}}}},
    {"tools", {{{"type", "function"}, {"function", {{"name", "f"}, {"parameters", {}}}}}}},
    {"tool_choice", "auto"},
    {"n", 2},
    {"logprobs", true},
    {"top_logprobs", 2},
    {"seed", 7},
    {"x_vendor_field", {{"deep", {1, 2}}}},
    {"stream", false},
    {"stream_options", {{"include_usage", true}}}};
  auto p = parse_chat_completion(req.dump());
  ASSERT_TRUE(p) << p.error->message;
  EXPECT_FALSE(p.value.model);
  EXPECT_FALSE(p.value.stream);
  ASSERT_EQ(p.value.messages.size(), 5u);
  EXPECT_EQ(p.value.messages[1].content, "look");
  auto up = nlohmann::json::parse(p.value.upstream_body);
  // Unstreamed, stream_options means nothing upstream; the rest is the same.
  auto want = req;
  want.erase("stream_options");
  EXPECT_EQ(up, want);
  // The default model goes in front; the rest is unchanged.
  auto with = with_model(p.value.upstream_body, "gpt-\"x\"");
  auto w = nlohmann::json::parse(with);
  EXPECT_EQ(w["model"], "gpt-\"x\"");
  w.erase("model");
  EXPECT_EQ(w, want);
  EXPECT_EQ(with_model("{}", "m"), R"({"model":"m"})");
  // A null or empty model is the default's.
  for (auto m : {"null", "\"\""}) {
    auto n = parse_chat_completion(std::string{R"({"model":)"} + m +
                                   R"(,"messages":[{"role":"user","content":"a"}]})");
    ASSERT_TRUE(n) << m;
    EXPECT_FALSE(n.value.model) << m;
    EXPECT_FALSE(nlohmann::json::parse(n.value.upstream_body).contains("model")) << m;
  }
}

// API.md section 2: a NUL in any stored string is 400, never cut or stored.
TEST(api, nul_in_any_stored_string_is_invalid_request) {
  auto expect_nul_error = [](const auto& p, const char* field) {
    ASSERT_FALSE(p) << field;
    EXPECT_EQ(p.error->code, parley::errc::invalid_request) << field;
    EXPECT_NE(p.error->message.find(field), std::string::npos) << p.error->message;
  };
  expect_nul_error(parse_post_message(R"({"content":"a\u0000b"})"), "content");
  expect_nul_error(parse_post_message(R"({"content":"ab","client_message_id":"x\u0000"})"),
                   "client_message_id");
  expect_nul_error(parse_create_session(R"({"system_prompt":"\u0000"})"), "system_prompt");
  expect_nul_error(parse_create_session(R"({"model":"m\u0000"})"), "model");
  expect_nul_error(parse_create_session(R"({"metadata":{"k":"v\u0000"}})"), "metadata");
  expect_nul_error(parse_create_session(R"({"metadata":{"k\u0000":1}})"), "metadata");
  expect_nul_error(parse_create_session(R"({"metadata":{"a":[{"b":["\u0000"]}]}})"), "metadata");
  expect_nul_error(parse_feedback(R"({"rating":1,"comment":"\u0000"})"), "comment");
  expect_nul_error(parse_create_key(R"({"user":"al\u0000ice"})"), "user");
  expect_nul_error(parse_create_key(R"({"user":"al","models":["m\u0000"]})"), "models");
  expect_nul_error(parse_migrate(R"({"to":"node\u0000"})"), "to");
  // Other control characters are text like any other.
  EXPECT_TRUE(parse_post_message(R"({"content":"a\u0001\tb"})"));
  EXPECT_TRUE(parse_create_session(R"({"metadata":{"k":"v\u001f"}})"));
}

TEST(api, query_values_must_decode_to_utf8_text) {
  EXPECT_FALSE(parse_query("cursor=%FF%FE"));
  EXPECT_FALSE(parse_query("after=%00"));
  EXPECT_FALSE(parse_query("a%0A=1"));
  auto ok = parse_query("q=%C3%A9t%C3%A9&limit=5");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok.value["q"], "\xc3\xa9t\xc3\xa9");
}

// Issue 13, item 1: an error message quoting bytes that are not UTF-8 made
// the error body's dump throw inside the edge actor.
TEST(api, error_body_is_valid_json_whatever_bytes_the_message_quotes) {
  std::string body;
  ASSERT_NO_THROW(body = error_body({errc::not_found, "message '\xff\xfe' not found"}));
  auto j = nlohmann::json::parse(body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << body;
  EXPECT_EQ(j["error"]["code"], "not_found");
  EXPECT_EQ(j["error"]["message"], "message '\xef\xbf\xbd\xef\xbf\xbd' not found");
}

TEST(percent, decodes_escapes_and_plus_only_where_asked) {
  std::string out;
  ASSERT_TRUE(percent_decode("a%3Ab%40c+d%2b", out));
  EXPECT_EQ(out, "a:b@c+d+") << "in a URL's user information '+' is itself";
  ASSERT_TRUE(percent_decode("a%3Ab+c", out, plus::space));
  EXPECT_EQ(out, "a:b c") << "in a query '+' is a space";
  ASSERT_TRUE(percent_decode("", out));
  EXPECT_EQ(out, "");
  for (auto broken : {"%", "%4", "%zz", "ab%4g", "%%41"})
    EXPECT_FALSE(percent_decode(broken, out)) << broken;
  auto q = parse_query("a+b=c%20d&x=%2B");
  ASSERT_TRUE(q) << q.error->message;
  EXPECT_EQ(q.value.at("a b"), "c d");
  EXPECT_EQ(q.value.at("x"), "+");
}

TEST(api, a_new_key_may_carry_a_budget_and_models) {
  auto k = parse_create_key(R"({"user":"u"})");
  ASSERT_TRUE(k);
  EXPECT_EQ(k.value.token_budget_per_day, -1) << "absent: the node's default";
  EXPECT_TRUE(k.value.models.empty());
  k = parse_create_key(R"({"user":"u","token_budget_per_day":0,"models":["a","b"]})");
  ASSERT_TRUE(k);
  EXPECT_EQ(k.value.token_budget_per_day, 0);
  EXPECT_EQ(k.value.models, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(parse_create_key(R"({"user":"u","token_budget_per_day":null,"models":null})"));
  for (auto bad : {R"({"user":"u","token_budget_per_day":-5})",
                   R"({"user":"u","token_budget_per_day":1.5})",
                   R"({"user":"u","token_budget_per_day":"10"})", R"({"user":"u","models":[]})",
                   R"({"user":"u","models":"a"})", R"({"user":"u","models":[""]})",
                   R"({"user":"u","models":[7]})"}) {
    auto p = parse_create_key(bad);
    EXPECT_FALSE(p) << bad;
    if (!p) {
      EXPECT_EQ(p.error->code, parley::errc::invalid_request) << bad;
    }
  }
  std::string many = R"({"user":"u","models":[)";
  for (int i = 0; i < 65; ++i)
    many += std::string{i ? "," : ""} + "\"m" + std::to_string(i) + "\"";
  EXPECT_FALSE(parse_create_key(many + "]}")) << "at most 64 models";
}

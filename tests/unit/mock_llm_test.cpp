// tools/mock-llm's answers as plain JSON logic: what the client-library
// tests (tests/integration/openai) rely on, without a socket.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tools/mock-llm/mock_state.hpp"

using namespace mock_llm;

namespace {

chat_request read(const std::string& body) {
  chat_request req;
  auto error = read_chat_request(parse_json(body), req);
  EXPECT_FALSE(error) << body << " -> " << (error ? error->message : "");
  return req;
}

std::string refused_param(const std::string& body) {
  chat_request req;
  auto error = read_chat_request(parse_json(body), req);
  return error ? error->param : "(accepted)";
}

// The JSON documents of a stream's events, [DONE] left out.
std::vector<json> chunks(const stream_reply& reply) {
  std::vector<json> out;
  for (const auto& e : reply.events) {
    EXPECT_EQ(e.rfind("data: ", 0), 0u);
    const auto data = e.substr(6, e.size() - 8);
    if (data != "[DONE]")
      out.push_back(parse_json(data));
  }
  EXPECT_EQ(reply.events.back(), "data: [DONE]\n\n");
  return out;
}

const std::string weather_tools =
    R"("tools":[{"type":"function","function":{"name":"get_weather","parameters":)"
    R"({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},)"
    R"("unit":{"enum":["c","f"]},"hourly":{"type":"boolean"}},"required":["city"]}}},)"
    R"({"type":"function","function":{"name":"other"}}])";

} // namespace

TEST(mock_llm, plain_answers_keep_their_shape_and_carry_usage) {
  auto req = read(R"({"model":"m","messages":[{"role":"system","content":"be brief"},)"
                  R"({"role":"user","content":"hello there"}]})");
  auto doc = completion_document(req, 7, 100);
  EXPECT_EQ(doc["id"], "chatcmpl-mock-7");
  EXPECT_EQ(doc["model"], "m");
  ASSERT_EQ(doc["choices"].size(), 1u);
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "mock: hello there");
  EXPECT_EQ(doc["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(doc["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(doc["usage"], json({{"prompt_tokens", 4}, {"completion_tokens", 3},
                                {"total_tokens", 7}}));
}

TEST(mock_llm, a_user_message_with_tools_gets_a_tool_call_built_from_the_schema) {
  auto req = read(R"({"messages":[{"role":"user","content":"Paris"}],)" + weather_tools + "}");
  auto doc = completion_document(req, 3, 100);
  const auto& choice = doc["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  const auto& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["id"], "call_mock_3_0");
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(parse_json(call["function"]["arguments"].get<std::string>()),
            json({{"city", "Paris"}, {"days", 1}, {"unit", "c"}, {"hourly", true}}));
  EXPECT_GT(doc["usage"]["completion_tokens"], 0);

  // tool_choice picks the tool, or none.
  auto named = read(R"({"messages":[{"role":"user","content":"x"}],)" + weather_tools +
                    R"(,"tool_choice":{"type":"function","function":{"name":"other"}}})");
  ASSERT_TRUE(named.call);
  EXPECT_EQ(named.call->name, "other");
  EXPECT_EQ(named.call->arguments, "{}");
  EXPECT_FALSE(read(R"({"messages":[{"role":"user","content":"x"}],)" + weather_tools +
                    R"(,"tool_choice":"none"})")
                   .call);
  EXPECT_EQ(refused_param(R"({"messages":[{"role":"user","content":"x"}],)" + weather_tools +
                          R"(,"tool_choice":{"type":"function","function":{"name":"nope"}}})"),
            "tool_choice");
  EXPECT_EQ(refused_param(R"({"tools":[{"type":"function"}]})"), "tools");
}

TEST(mock_llm, a_tool_result_is_answered_with_text_that_includes_it) {
  auto req = read(R"({"messages":[{"role":"user","content":"Paris"},)"
                  R"({"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",)"
                  R"("function":{"name":"get_weather","arguments":"{}"}}]},)"
                  R"({"role":"tool","tool_call_id":"c1","content":"sunny, 21 C"}],)" +
                  weather_tools + "}");
  EXPECT_FALSE(req.call);
  auto doc = completion_document(req, 4, 100);
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "mock: sunny, 21 C");
  EXPECT_EQ(doc["choices"][0]["finish_reason"], "stop");
}

TEST(mock_llm, n_choices_differ_and_are_indexed) {
  auto doc = completion_document(read(R"({"n":3,"messages":[{"role":"user","content":"hi"}]})"),
                                 1, 100);
  ASSERT_EQ(doc["choices"].size(), 3u);
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "mock: hi");
  EXPECT_EQ(doc["choices"][1]["message"]["content"], "mock#1: hi");
  EXPECT_EQ(doc["choices"][2]["message"]["content"], "mock#2: hi");
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(doc["choices"][i]["index"], i);
  EXPECT_EQ(doc["usage"]["completion_tokens"], 6);
  EXPECT_EQ(refused_param(R"({"n":0})"), "n");
  EXPECT_EQ(refused_param(R"({"n":"2"})"), "n");
}

TEST(mock_llm, max_tokens_cuts_the_answer_with_finish_reason_length) {
  auto doc = completion_document(
      read(R"({"max_tokens":2,"messages":[{"role":"user","content":"one two three"}]})"), 1, 100);
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "mock: one");
  EXPECT_EQ(doc["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(doc["usage"]["completion_tokens"], 2);
  auto whole = completion_document(
      read(R"({"max_completion_tokens":4,"messages":[{"role":"user","content":"one two three"}]})"),
      1, 100);
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(refused_param(R"({"max_tokens":0})"), "max_tokens");
}

TEST(mock_llm, logprobs_spell_the_answer) {
  auto doc = completion_document(
      read(R"({"logprobs":true,"top_logprobs":2,"messages":[{"role":"user","content":"sure?"}]})"),
      1, 100);
  const auto& content = doc["choices"][0]["logprobs"]["content"];
  std::string spelled;
  for (const auto& t : content) {
    spelled += t["token"].get<std::string>();
    EXPECT_LT(t["logprob"].get<double>(), 0);
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
  }
  EXPECT_EQ(spelled, "mock: sure?");
  EXPECT_EQ(refused_param(R"({"top_logprobs":21})"), "top_logprobs");
}

TEST(mock_llm, image_parts_are_accepted_and_counted) {
  auto req = read(R"({"messages":[{"role":"user","content":[{"type":"text","text":"what is this"},)"
                  R"({"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}]})");
  EXPECT_EQ(req.reply, "mock: what is this (images: 1)");
}

TEST(mock_llm, a_plain_stream_is_unchanged_without_new_fields) {
  auto reply = stream_events(read(R"({"stream":true,"messages":[{"role":"user","content":"hi"}]})"),
                             2, 100);
  auto docs = chunks(reply);
  ASSERT_EQ(docs.size(), 3u); // "mock", ": hi", finish
  EXPECT_EQ(reply.content_events, 2u);
  EXPECT_EQ(docs[0]["choices"][0]["delta"], json({{"role", "assistant"}, {"content", "mock"}}));
  EXPECT_FALSE(docs[0].contains("usage"));
  EXPECT_EQ(docs[2]["choices"][0]["finish_reason"], "stop");
}

TEST(mock_llm, a_streamed_tool_call_comes_in_pieces_then_the_usage_chunk) {
  auto reply = stream_events(
      read(R"({"stream":true,"stream_options":{"include_usage":true},)"
           R"("messages":[{"role":"user","content":"Paris"}],)" +
           weather_tools + "}"),
      5, 100);
  auto docs = chunks(reply);
  ASSERT_GE(docs.size(), 5u);
  const auto& first = docs[0]["choices"][0]["delta"];
  EXPECT_TRUE(first["content"].is_null());
  EXPECT_EQ(first["tool_calls"][0]["index"], 0);
  EXPECT_EQ(first["tool_calls"][0]["id"], "call_mock_5_0");
  EXPECT_EQ(first["tool_calls"][0]["function"]["name"], "get_weather");
  std::string arguments;
  for (std::size_t i = 0; i < reply.content_events; ++i) {
    EXPECT_TRUE(docs[i].contains("usage") && docs[i]["usage"].is_null());
    arguments += docs[i]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                     .get<std::string>();
  }
  EXPECT_EQ(parse_json(arguments)["city"], "Paris");
  const auto& finish = docs[docs.size() - 2];
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "tool_calls");
  const auto& usage = docs.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_GT(usage["usage"]["total_tokens"], 0);
}

TEST(mock_llm, streamed_choices_interleave_and_each_finishes) {
  auto reply =
      stream_events(read(R"({"stream":true,"n":2,"messages":[{"role":"user","content":"hi"}]})"),
                    1, 100);
  auto docs = chunks(reply);
  std::string texts[2];
  int finishes = 0;
  for (const auto& d : docs) {
    ASSERT_EQ(d["choices"].size(), 1u);
    const auto& c = d["choices"][0];
    const int i = c["index"].get<int>();
    if (c["delta"].contains("content"))
      texts[i] += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null())
      ++finishes;
  }
  EXPECT_EQ(texts[0], "mock: hi");
  EXPECT_EQ(texts[1], "mock#1: hi");
  EXPECT_EQ(finishes, 2);
  EXPECT_EQ(docs[0]["choices"][0]["index"], 0);
  EXPECT_EQ(docs[1]["choices"][0]["index"], 1);
}

TEST(mock_llm, errors_name_the_param) {
  EXPECT_EQ(parse_json(error_body("bad", "invalid_request_error", "invalid_request", "n")),
            parse_json(R"({"error":{"message":"bad","type":"invalid_request_error",)"
                       R"("code":"invalid_request","param":"n"}})"));
  EXPECT_TRUE(parse_json(default_fail_body())["error"]["param"].is_null());
  mock_config config;
  EXPECT_FALSE(apply_patch(config, parse_json(R"({"api_key":"sk-1"})")));
  EXPECT_EQ(config.api_key, "sk-1");
  EXPECT_TRUE(apply_patch(config, parse_json(R"({"api_key":1})")));
}

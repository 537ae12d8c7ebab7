// OpenAI's stateful API on sessions (API.md section 5a): the Conversations
// routes. A conversation is a session seen through OpenAI's shapes: the same
// messages through both APIs; every client error has OpenAI's error shape
// and changes nothing; another user's, unknown and deleted ids are 404. The
// official `openai` SDK (tests/integration/openai/stateful_sdk.cjs) drives
// it across a three-node cluster.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

/// A 4xx/5xx in OpenAI's shape with this status and code.
::testing::AssertionResult is_error(const http_result& r, int status, const std::string& code) {
  auto j = r.js();
  if (r.status != status || !j.is_object() || !j.contains("error") || !j["error"].is_object())
    return ::testing::AssertionFailure() << "want " << status << " " << code << ", got "
                                         << describe(r);
  auto& e = j["error"];
  if (e.value("code", "") != code || !e["message"].is_string() || e["message"] == "" ||
      !e["type"].is_string())
    return ::testing::AssertionFailure() << "want code " << code << ", got " << describe(r);
  return ::testing::AssertionSuccess();
}

std::string text_of(const json& item) {
  std::string out;
  for (auto& part : item["content"])
    out += part.value("text", "");
  return out;
}

/// One node on a scratch database whose model is a mock upstream answering
/// as `mock-model`, with user alice's key; `env` adds settings.
struct responses_node {
  scratch_db db;
  mock_llm mock;
  parley_node node;
  std::string key;

  explicit responses_node(std::map<std::string, std::string> env = {})
    : node{db, with_mock(mock, std::move(env))}, key{node.create_key("alice")} {}

  /// `POST /v1/responses` as alice.
  http_result post(const json& body, headers h = {}) const {
    return node.call("POST", "/v1/responses", key, body.dump(), std::move(h));
  }
  /// The same with an Idempotency-Key.
  http_result post_keyed(const json& body, const std::string& k) const {
    return post(body, {{"Idempotency-Key", k}});
  }

private:
  static std::map<std::string, std::string> with_mock(const mock_llm& m,
                                                      std::map<std::string, std::string> env) {
    env["PARLEY_LLM_BASE_URL"] = m.base_url();
    env["PARLEY_LLM_MODEL"] = "mock-model";
    return env;
  }
};

struct stateful : ::testing::Test {
  scratch_db db;
  parley_node node{db};
  std::string key = node.create_key("alice");
  std::string other = node.create_key("bob");

  http_result call(const std::string& method, const std::string& target, const json& body = nullptr,
                   const std::string& as = {}) {
    return node.call(method, target, as.empty() ? key : as, body.is_null() ? "" : body.dump());
  }
};

TEST_F(stateful, a_conversation_is_a_session_with_the_same_messages) {
  auto created = call("POST", "/v1/conversations",
                      {{"metadata", {{"topic", "t"}}},
                       {"items", json::array({{{"role", "user"}, {"content", "first"}},
                                              {{"type", "message"},
                                               {"role", "assistant"},
                                               {"content", json::array({{{"type", "output_text"},
                                                                         {"text", "second"}}})}}})}});
  ASSERT_EQ(created.status, 200) << describe(created);
  auto conv = created.js();
  auto id = conv["id"].get<std::string>();
  ASSERT_EQ(id.rfind("conv_", 0), 0u) << id;
  EXPECT_EQ(conv["object"], "conversation");
  EXPECT_TRUE(conv["created_at"].is_number_integer());
  EXPECT_EQ(conv["metadata"], json({{"topic", "t"}}));
  auto session = id.substr(5);

  // The session API sees the items as messages 1 and 2 ...
  auto msgs = node.all_messages(key, session);
  ASSERT_EQ(msgs.size(), 2u) << msgs.dump();
  EXPECT_EQ(msgs[0]["role"], "user");
  EXPECT_EQ(msgs[0]["content"], "first");
  EXPECT_EQ(msgs[1]["role"], "assistant");
  EXPECT_EQ(msgs[1]["content"], "second");
  auto s = call("GET", "/v1/sessions/" + session).js();
  EXPECT_EQ(s["message_count"], 2);
  EXPECT_EQ(s["last_seq"], 2);

  // ... a turn through the session API continues it at seq 3 ...
  auto turn = node.post_message(key, session, {{"content", "third"}});
  ASSERT_EQ(turn.status, 200) << describe(turn);
  EXPECT_EQ(turn.js()["user_message"]["seq"], 3);

  // ... and the conversation shows all four, newest first by default.
  auto items = call("GET", "/v1/conversations/" + id + "/items");
  ASSERT_EQ(items.status, 200) << describe(items);
  auto page = items.js();
  EXPECT_EQ(page["object"], "list");
  ASSERT_EQ(page["data"].size(), 4u) << page.dump();
  EXPECT_EQ(page["data"][0]["role"], "assistant");
  EXPECT_EQ(text_of(page["data"][0]), turn.js()["reply"]["content"].get<std::string>());
  EXPECT_EQ(text_of(page["data"][1]), "third");
  EXPECT_EQ(page["data"][1]["content"][0]["type"], "input_text");
  EXPECT_EQ(page["data"][0]["content"][0]["type"], "output_text");
  EXPECT_EQ(text_of(page["data"][3]), "first");
  EXPECT_EQ(page["first_id"], page["data"][0]["id"]);
  EXPECT_EQ(page["last_id"], page["data"][3]["id"]);
  EXPECT_EQ(page["has_more"], false);

  // Deleting the conversation deletes the session.
  auto del = call("DELETE", "/v1/conversations/" + id);
  ASSERT_EQ(del.status, 200) << describe(del);
  EXPECT_EQ(del.js(), json({{"id", id}, {"object", "conversation.deleted"}, {"deleted", true}}));
  EXPECT_TRUE(is_error(call("GET", "/v1/sessions/" + session), 404, "not_found"));
  EXPECT_TRUE(is_error(call("GET", "/v1/conversations/" + id), 404, "not_found"));
  EXPECT_TRUE(is_error(call("GET", "/v1/conversations/" + id + "/items"), 404, "not_found"));
  EXPECT_TRUE(is_error(call("POST", "/v1/conversations/" + id, {{"metadata", json::object()}}),
                       404, "not_found"));
  EXPECT_TRUE(is_error(call("DELETE", "/v1/conversations/" + id), 404, "not_found"));
}

TEST_F(stateful, a_session_is_a_conversation) {
  auto session = node.create_session(key, {{"metadata", {{"a", "b"}}}});
  ASSERT_FALSE(session.empty());
  ASSERT_EQ(node.post_message(key, session, {{"content", "hi"}}).status, 200);
  auto conv = call("GET", "/v1/conversations/conv_" + session);
  ASSERT_EQ(conv.status, 200) << describe(conv);
  EXPECT_EQ(conv.js()["metadata"], json({{"a", "b"}}));
  auto items = call("GET", "/v1/conversations/conv_" + session + "/items?order=asc").js();
  ASSERT_EQ(items["data"].size(), 2u) << items.dump();
  EXPECT_EQ(text_of(items["data"][0]), "hi");
}

TEST_F(stateful, foreign_unknown_and_malformed_ids_are_404_in_openai_shape) {
  auto id = call("POST", "/v1/conversations").js()["id"].get<std::string>();
  for (auto& target : {"/v1/conversations/" + id, "/v1/conversations/" + id + "/items"})
    EXPECT_TRUE(is_error(call("GET", target, nullptr, other), 404, "not_found")) << target;
  EXPECT_TRUE(is_error(call("POST", "/v1/conversations/" + id, {{"metadata", {{"x", "y"}}}}, other),
                       404, "not_found"));
  EXPECT_TRUE(is_error(call("DELETE", "/v1/conversations/" + id, nullptr, other), 404, "not_found"));
  for (const std::string& bad :
       std::vector<std::string>{"conv_0123456789abcdef0123456789abcdef", "conv_", "resp_1",
                                id.substr(5), "conv_%C3%A9", "conv_a.b"})
    EXPECT_TRUE(is_error(call("GET", "/v1/conversations/" + bad), 404, "not_found")) << bad;
  // Nothing of alice's changed.
  auto still = call("GET", "/v1/conversations/" + id);
  ASSERT_EQ(still.status, 200);
  EXPECT_EQ(still.js()["metadata"], json::object());
  EXPECT_TRUE(is_error(node.call("GET", "/v1/conversations/" + id, ""), 401, "unauthorized"));
  EXPECT_TRUE(is_error(call("PUT", "/v1/conversations/" + id), 405, "method_not_allowed"));
}

TEST_F(stateful, bad_requests_are_400_and_change_nothing) {
  auto item = [](const std::string& role, const json& content) {
    return json{{"role", role}, {"content", content}};
  };
  json many = json::array();
  for (int i = 0; i < 21; ++i)
    many.push_back(item("user", "x"));
  for (const json& body : std::vector<json>{
         {{"items", "hello"}},
         {{"items", json::array({item("system", "be terse")})}},
         {{"items", json::array({item("tool", "x")})}},
         {{"items", json::array({item("user", "")})}},
         {{"items", json::array({item("user", 5)})}},
         {{"items", json::array({item("user", json::array({{{"type", "input_image"}}}))})}},
         {{"items", json::array({{{"type", "function_call"}, {"role", "user"}, {"content", "x"}}})}},
         {{"items", many}},
         {{"metadata", "x"}},
         {{"metadata", {{"n", 1}}}},
         {{"metadata", {{"k", std::string(513, 'v')}}}},
         {{"items", json::array({item("user", std::string("a\0b", 3))})}},
       })
    EXPECT_TRUE(is_error(call("POST", "/v1/conversations", body), 400, "invalid_request"))
      << body.dump();
  EXPECT_TRUE(is_error(call("POST", "/v1/conversations",
                            {{"items", json::array({item("user", std::string(33 * 1024, 'a'))})}}),
                       413, "payload_too_large"));
  auto sessions = call("GET", "/v1/sessions").js();
  EXPECT_EQ(sessions["data"].size(), 0u) << sessions.dump();

  auto id = call("POST", "/v1/conversations", {{"items", json::array({item("user", "a")})}})
              .js()["id"]
              .get<std::string>();
  auto other_conv = call("POST", "/v1/conversations", {{"items", json::array({item("user", "b")})}})
                      .js()["id"]
                      .get<std::string>();
  auto foreign_item = call("GET", "/v1/conversations/" + other_conv + "/items").js()["data"][0]["id"];
  for (const std::string& q :
       std::vector<std::string>{"order=sideways", "limit=0", "limit=101", "limit=x",
                                "after=" + foreign_item.get<std::string>(), "after=msg_1"})
    EXPECT_TRUE(is_error(call("GET", "/v1/conversations/" + id + "/items?" + q), 400,
                         "invalid_request"))
      << q;
  EXPECT_TRUE(is_error(call("POST", "/v1/conversations/" + id, {{"metadata", {{"n", 1}}}}), 400,
                       "invalid_request"));
  EXPECT_TRUE(is_error(call("POST", "/v1/conversations/" + id, json::object()), 400,
                       "invalid_request"));
  EXPECT_EQ(call("GET", "/v1/conversations/" + id).js()["metadata"], json::object());
}

// `Idempotency-Key` on POST /v1/conversations (API.md section 5a): the same
// key and body give the same conversation, made once; the same key with
// another body is 409; keys are the user's own.
TEST_F(stateful, an_idempotency_key_makes_a_conversation_once) {
  auto post = [&](const json& body, const std::string& k, const std::string& as = {}) {
    return node.call("POST", "/v1/conversations", as.empty() ? key : as, body.dump(),
                     {{"Idempotency-Key", k}});
  };
  json body = {{"metadata", {{"topic", "t"}}},
               {"items", json::array({{{"role", "user"}, {"content", "first"}}})}};
  auto a = post(body, "conv-key-1");
  ASSERT_EQ(a.status, 200) << describe(a);
  auto b = post(body, "conv-key-1");
  ASSERT_EQ(b.status, 200) << describe(b);
  EXPECT_EQ(b.js(), a.js());
  auto id = a.js()["id"].get<std::string>();
  EXPECT_EQ(call("GET", "/v1/sessions").js()["data"].size(), 1u);
  EXPECT_EQ(call("GET", "/v1/conversations/" + id + "/items").js()["data"].size(), 1u);
  // The same key with another body changes nothing.
  json other_body = {{"items", json::array({{{"role", "user"}, {"content", "second"}}})}};
  EXPECT_TRUE(is_error(post(other_body, "conv-key-1"), 409, "conflict"));
  EXPECT_TRUE(is_error(post({{"metadata", {{"topic", "u"}}}, {"items", body["items"]}},
                            "conv-key-1"),
                       409, "conflict"));
  EXPECT_EQ(call("GET", "/v1/sessions").js()["data"].size(), 1u);
  EXPECT_EQ(call("GET", "/v1/conversations/" + id + "/items").js()["data"].size(), 1u);
  // Another user's key of the same name is theirs; a new key, a new one.
  auto theirs = post(body, "conv-key-1", other);
  ASSERT_EQ(theirs.status, 200) << describe(theirs);
  EXPECT_NE(theirs.js()["id"], a.js()["id"]);
  auto fresh = post(body, "conv-key-2");
  ASSERT_EQ(fresh.status, 200) << describe(fresh);
  EXPECT_NE(fresh.js()["id"], a.js()["id"]);
  // A conversation made with a key is an ordinary one: its turns go on.
  auto r = call("POST", "/v1/responses", {{"input", "hi"}, {"conversation", id}});
  ASSERT_EQ(r.status, 200) << describe(r);
  auto again = post(body, "conv-key-1");
  ASSERT_EQ(again.status, 200) << describe(again);
  EXPECT_EQ(again.js()["id"], id);
  EXPECT_EQ(call("GET", "/v1/conversations/" + id + "/items").js()["data"].size(), 3u);
  EXPECT_TRUE(is_error(post(body, std::string(129, 'k')), 400, "invalid_request"));
}

TEST_F(stateful, appended_items_take_the_next_seqs_between_turns) {
  auto id = call("POST", "/v1/conversations").js()["id"].get<std::string>();
  auto session = id.substr(5);
  auto appended = call("POST", "/v1/conversations/" + id + "/items",
                       {{"items", json::array({{{"role", "user"}, {"content", "u1"}},
                                               {{"role", "assistant"}, {"content", "a1"}}})}});
  ASSERT_EQ(appended.status, 200) << describe(appended);
  auto list = appended.js();
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u) << list.dump();
  EXPECT_EQ(text_of(list["data"][0]), "u1");
  EXPECT_EQ(list["data"][1]["role"], "assistant");
  EXPECT_EQ(list["first_id"], "msg_" + session + "_1");
  EXPECT_EQ(list["last_id"], "msg_" + session + "_2");
  EXPECT_EQ(list["has_more"], false);

  // Appends and turns at once on one session: one writer, so the seqs stay
  // 1..n without gaps and every acknowledged message is there.
  std::vector<std::future<http_result>> calls;
  for (int i = 0; i < 6; ++i)
    calls.push_back(std::async(std::launch::async, [&, i] {
      parley_node& n = node;
      if (i % 2 == 0)
        return n.call("POST", "/v1/conversations/" + id + "/items", key,
                      json{{"items", json::array({{{"role", "user"},
                                                   {"content", "item " + std::to_string(i)}}})}}
                        .dump());
      return n.post_message(key, session, {{"content", "turn " + std::to_string(i)}});
    }));
  for (auto& f : calls) {
    auto r = f.get();
    EXPECT_EQ(r.status, 200) << describe(r);
  }
  auto msgs = node.all_messages(key, session);
  ASSERT_EQ(msgs.size(), 2u + 3u + 3u * 2u) << msgs.dump();
  for (std::size_t i = 0; i < msgs.size(); ++i)
    EXPECT_EQ(msgs[i]["seq"], static_cast<int>(i) + 1) << msgs.dump();
  for (auto& m : msgs) {
    // A turn's reply follows its message; an appended assistant item has
    // reply_to 0 (no turn).
    if (m["role"] == "assistant" && m.value("reply_to", 0) > 0) {
      EXPECT_EQ(msgs[m["reply_to"].get<std::size_t>() - 1]["role"], "user");
    }
  }
  auto s = call("GET", "/v1/sessions/" + session).js();
  EXPECT_EQ(s["last_seq"], 11);
  EXPECT_EQ(s["message_count"], 11);

  // Another user's, unknown and bad appends change nothing.
  auto one = json{{"items", json::array({{{"role", "user"}, {"content", "x"}}})}};
  EXPECT_TRUE(is_error(call("POST", "/v1/conversations/" + id + "/items", one, other), 404,
                       "not_found"));
  EXPECT_TRUE(is_error(call("POST", "/v1/conversations/conv_0123456789abcdef0123456789abcdef/items",
                            one),
                       404, "not_found"));
  for (const json& bad : std::vector<json>{json::object(), {{"items", json::array()}},
                                           {{"items", json::array({{{"role", "system"},
                                                                    {"content", "x"}}})}}})
    EXPECT_TRUE(is_error(call("POST", "/v1/conversations/" + id + "/items", bad), 400,
                         "invalid_request"))
      << bad.dump();
  EXPECT_EQ(node.all_messages(key, session).size(), 11u);
}

/// The messages of the mock's `i`-th request as (role, content) pairs.
std::vector<std::pair<std::string, std::string>> sent(const mock_llm& mock, std::size_t i) {
  std::vector<std::pair<std::string, std::string>> out;
  auto r = mock.requests();
  if (i >= r.size())
    return out;
  for (auto& m : r[i]["body"]["messages"])
    out.emplace_back(m.value("role", ""), m.value("content", ""));
  return out;
}

using chat = std::vector<std::pair<std::string, std::string>>;

TEST(stateful_responses, the_model_sees_the_conversation_and_only_this_calls_instructions) {
  responses_node fx;
  auto& mock = fx.mock;
  auto& node = fx.node;
  auto& key = fx.key;
  auto r1 = fx.post({{"input", "q1"}, {"instructions", "sys A"}, {"temperature", 0.25},
                  {"max_output_tokens", 50}});
  ASSERT_EQ(r1.status, 200) << describe(r1);
  auto a1 = r1.js()["output"][0]["content"][0]["text"].get<std::string>();
  EXPECT_EQ(sent(mock, 0), (chat{{"system", "sys A"}, {"user", "q1"}}));
  auto body0 = mock.requests()[0]["body"];
  EXPECT_EQ(body0["temperature"], 0.25);
  EXPECT_EQ(body0["max_tokens"], 50);
  auto id1 = r1.js()["id"].get<std::string>();
  auto conv = r1.js()["conversation"]["id"].get<std::string>();
  EXPECT_EQ(r1.js()["usage"]["input_tokens"].get<int>() + r1.js()["usage"]["output_tokens"].get<int>(),
            r1.js()["usage"]["total_tokens"].get<int>());

  auto r2 = fx.post({{"input", "q2"}, {"previous_response_id", id1}});
  ASSERT_EQ(r2.status, 200) << describe(r2);
  auto a2 = r2.js()["output"][0]["content"][0]["text"].get<std::string>();
  EXPECT_EQ(sent(mock, 1), (chat{{"user", "q1"}, {"assistant", a1}, {"user", "q2"}}));
  EXPECT_FALSE(mock.requests()[1]["body"].contains("temperature"));

  // store: false from the first response: its context, nothing written.
  auto r3 = fx.post({{"input", "q3"}, {"previous_response_id", id1}, {"store", false}});
  ASSERT_EQ(r3.status, 200) << describe(r3);
  EXPECT_EQ(sent(mock, 2), (chat{{"user", "q1"}, {"assistant", a1}, {"user", "q3"}}));
  auto items = node.call("GET", "/v1/conversations/" + conv + "/items?order=asc", key).js();
  ASSERT_EQ(items["data"].size(), 4u) << items.dump();

  // A fork from the first response: the same context, a new conversation.
  auto r4 = fx.post({{"input", "q4"}, {"previous_response_id", id1}});
  ASSERT_EQ(r4.status, 200) << describe(r4);
  EXPECT_EQ(sent(mock, 3), (chat{{"user", "q1"}, {"assistant", a1}, {"user", "q4"}}));
  auto fork = r4.js()["conversation"]["id"].get<std::string>();
  EXPECT_NE(fork, conv);
  auto forked = node.call("GET", "/v1/sessions/" + fork.substr(5), key).js();
  EXPECT_EQ(forked["last_seq"], 4) << forked.dump();
  EXPECT_EQ(node.all_messages(key, conv.substr(5)).size(), 4u);

  // The conversation parameter: its latest messages.
  auto r5 = fx.post({{"input", "q5"}, {"conversation", conv}});
  ASSERT_EQ(r5.status, 200) << describe(r5);
  EXPECT_EQ(sent(mock, 4),
            (chat{{"user", "q1"}, {"assistant", a1}, {"user", "q2"}, {"assistant", a2}, {"user", "q5"}}));

  // System and developer items of a stored response join this call's
  // instructions; only the user item is stored.
  auto r6 = fx.post({{"input", json::array({{{"role", "developer"}, {"content", "dev rules"}},
                                         {{"role", "user"}, {"content", "q6"}}})},
                  {"instructions", "sys B"},
                  {"previous_response_id", r5.js()["id"]}});
  ASSERT_EQ(r6.status, 200) << describe(r6);
  auto ctx6 = sent(mock, 5);
  ASSERT_FALSE(ctx6.empty());
  EXPECT_EQ(ctx6.front(), (std::pair<std::string, std::string>{"system", "sys B\n\ndev rules"}));
  EXPECT_EQ(ctx6.back(), (std::pair<std::string, std::string>{"user", "q6"}));
  EXPECT_EQ(node.all_messages(key, conv.substr(5)).size(), 8u);
  EXPECT_TRUE(is_error(fx.post({{"input", json::array({{{"role", "system"}, {"content", "only"}}})}}),
                       400, "invalid_request"));

  // An Idempotency-Key: a retry costs no model call.
  auto calls = mock.requests().size();
  auto i1 = fx.post({{"input", "once"}}, {{"Idempotency-Key", "k-1"}});
  auto i2 = fx.post({{"input", "once"}}, {{"Idempotency-Key", "k-1"}});
  ASSERT_EQ(i1.status, 200) << describe(i1);
  ASSERT_EQ(i2.status, 200) << describe(i2);
  EXPECT_EQ(i1.js()["id"], i2.js()["id"]);
  EXPECT_EQ(mock.requests().size(), calls + 1);
  EXPECT_TRUE(is_error(fx.post({{"input", "twice"}}, {{"Idempotency-Key", "k-1"}}), 409, "conflict"));
  // Scoped to the user: bob's k-1 is his own.
  auto bob = node.create_key("bob");
  auto b1 = node.call("POST", "/v1/responses", bob, json{{"input", "once"}}.dump(),
                      {{"Idempotency-Key", "k-1"}});
  ASSERT_EQ(b1.status, 200) << describe(b1);
  EXPECT_NE(b1.js()["id"], i1.js()["id"]);
}

/// The events of an SSE body: (event name, data).
std::vector<std::pair<std::string, json>> events_of(const std::string& body) {
  std::vector<std::pair<std::string, json>> out;
  std::size_t at = 0;
  while (at < body.size()) {
    auto end = body.find("\n\n", at);
    if (end == std::string::npos)
      break;
    auto block = body.substr(at, end - at);
    at = end + 2;
    std::string name, data;
    std::size_t line = 0;
    while (line < block.size()) {
      auto nl = block.find('\n', line);
      auto l = block.substr(line, nl == std::string::npos ? std::string::npos : nl - line);
      if (l.rfind("event: ", 0) == 0)
        name = l.substr(7);
      else if (l.rfind("data: ", 0) == 0)
        data += l.substr(6);
      line = nl == std::string::npos ? block.size() : nl + 1;
    }
    out.emplace_back(name, json::parse(data, nullptr, false));
  }
  return out;
}

// A stored response's input may replay history: every user and assistant
// item before its last user message is stored, in order, in the same
// commit as the turn (so a failed call or a retry stores them once).
TEST(stateful_responses, replayed_items_are_stored_in_order_with_their_turn_once) {
  responses_node fx;
  auto& mock = fx.mock;
  auto& node = fx.node;
  auto& key = fx.key;
  auto msg = [](const std::string& role, const std::string& text) {
    return json{{"role", role}, {"content", text}};
  };
  auto r1 = fx.post({{"input", json::array({msg("user", "q1"), msg("assistant", "a1"),
                                         msg("system", "sys"), msg("user", "q2")})}},
                 {{"Idempotency-Key", "replay-1"}});
  ASSERT_EQ(r1.status, 200) << describe(r1);
  EXPECT_EQ(sent(mock, 0), (chat{{"system", "sys"}, {"user", "q1"}, {"assistant", "a1"},
                                 {"user", "q2"}}));
  auto conv = r1.js()["conversation"]["id"].get<std::string>();
  auto session = conv.substr(5);
  EXPECT_EQ(r1.js()["id"], "resp_" + session + "_4");
  auto reply1 = r1.js()["output"][0]["content"][0]["text"].get<std::string>();
  auto msgs = node.all_messages(key, session);
  ASSERT_EQ(msgs.size(), 4u) << msgs.dump();
  EXPECT_EQ(msgs[0]["content"], "q1");
  EXPECT_EQ(msgs[1]["role"], "assistant");
  EXPECT_EQ(msgs[1]["content"], "a1");
  EXPECT_EQ(msgs[2]["content"], "q2");
  EXPECT_EQ(msgs[3]["content"], reply1);
  EXPECT_EQ(msgs[3]["reply_to"], 3);

  // A retry: the same response, nothing stored twice, no second call.
  auto again = fx.post({{"input", json::array({msg("user", "q1"), msg("assistant", "a1"),
                                            msg("system", "sys"), msg("user", "q2")})}},
                    {{"Idempotency-Key", "replay-1"}});
  ASSERT_EQ(again.status, 200) << describe(again);
  EXPECT_EQ(again.js()["id"], r1.js()["id"]);
  EXPECT_EQ(mock.requests().size(), 1u);
  EXPECT_EQ(node.all_messages(key, session).size(), 4u);

  // Continuing the chain with more replayed items: they follow in order.
  auto r2 = fx.post({{"input", json::array({msg("user", "q3"), msg("assistant", "a3"),
                                         msg("user", "q4")})},
                  {"previous_response_id", r1.js()["id"]}});
  ASSERT_EQ(r2.status, 200) << describe(r2);
  EXPECT_EQ(r2.js()["id"], "resp_" + session + "_8");
  EXPECT_EQ(sent(mock, 1), (chat{{"user", "q1"}, {"assistant", "a1"}, {"user", "q2"},
                                 {"assistant", reply1}, {"user", "q3"}, {"assistant", "a3"},
                                 {"user", "q4"}}));
  msgs = node.all_messages(key, session);
  ASSERT_EQ(msgs.size(), 8u) << msgs.dump();
  EXPECT_EQ(msgs[4]["content"], "q3");
  EXPECT_EQ(msgs[5]["content"], "a3");
  EXPECT_EQ(msgs[6]["content"], "q4");
  auto s = node.call("GET", "/v1/sessions/" + session, key).js();
  EXPECT_EQ(s["message_count"], 8);
  EXPECT_EQ(s["last_seq"], 8);

  // The model fails: nothing of the request is stored.
  mock.configure({{"fail_status", 500}, {"fail_count", -1}});
  auto failed = fx.post({{"input", json::array({msg("user", "q5"), msg("assistant", "a5"),
                                             msg("user", "q6")})},
                      {"conversation", conv}});
  EXPECT_GE(failed.status, 500) << describe(failed);
  EXPECT_EQ(node.all_messages(key, session).size(), 8u);

  // The last message item must be the user's: it is what the model answers.
  auto bad = fx.post({{"input", json::array({msg("user", "q"), msg("assistant", "a")})},
                   {"conversation", conv}});
  EXPECT_EQ(bad.status, 400) << describe(bad);
  EXPECT_EQ(node.all_messages(key, session).size(), 8u);
}

// An Idempotency-Key covers the whole request (API.md section 5a): a repeat
// of the same body returns the same response with no model call, also
// streamed; the same key with any other field of the body (instructions,
// temperature, max_output_tokens, metadata, model, replayed items,
// previous_response_id, conversation) is 409 conflict and writes nothing.
// Checked where the session actor still holds the keyed turn in its window
// and where it has to look the turn up (PARLEY_CONTEXT_MESSAGES 2), on the
// chain's fast path (previous_response_id naming the latest response) and
// through the edge's lookups.
TEST(stateful_responses, an_idempotency_key_covers_the_whole_request_body) {
  responses_node fx{{{"PARLEY_CONTEXT_MESSAGES", "2"}}};
  auto& mock = fx.mock;
  auto& node = fx.node;
  auto& key = fx.key;
  auto msg = [](const std::string& role, const std::string& text) {
    return json{{"role", role}, {"content", text}};
  };
  auto with = [](json body, const std::string& field, const json& value) {
    body[field] = value;
    return body;
  };
  // Every variation of `base` (whose user message is `question`) that must
  // be refused, with its reason.
  auto variations = [&](const json& base, const std::string& question) {
    std::vector<std::pair<std::string, json>> out{
      {"instructions", with(base, "instructions", "other rules")},
      {"temperature", with(base, "temperature", 0.75)},
      {"max_output_tokens", with(base, "max_output_tokens", 7)},
      {"metadata", with(base, "metadata", json{{"k", "v2"}})},
      {"model", with(base, "model", "another-model")},
      {"replayed items", with(base, "input", json::array({msg("user", "earlier"),
                                                          msg("assistant", "said"),
                                                          msg("user", question)}))},
    };
    return out;
  };

  // A new conversation.
  json base{{"input", json::array({msg("user", "the question")})},
            {"instructions", "rules"},
            {"temperature", 0.25},
            {"metadata", {{"k", "v"}}}};
  auto r1 = fx.post_keyed(base, "idem-new");
  ASSERT_EQ(r1.status, 200) << describe(r1);
  auto id1 = r1.js()["id"].get<std::string>();
  auto conv = r1.js()["conversation"]["id"].get<std::string>();
  auto session = conv.substr(5);
  ASSERT_EQ(mock.requests().size(), 1u);
  auto again = fx.post_keyed(base, "idem-new");
  ASSERT_EQ(again.status, 200) << describe(again);
  EXPECT_EQ(again.js()["id"], id1);
  // The same request streamed: the same response, as events.
  auto streamed = fx.post_keyed(with(base, "stream", true), "idem-new");
  ASSERT_EQ(streamed.status, 200) << describe(streamed);
  auto events = events_of(streamed.body);
  ASSERT_FALSE(events.empty()) << streamed.body;
  EXPECT_EQ(events.back().first, "response.completed") << streamed.body;
  EXPECT_EQ(events.back().second["response"]["id"], id1) << streamed.body;
  EXPECT_EQ(mock.requests().size(), 1u);
  auto refused = variations(base, "the question");
  refused.emplace_back("conversation", with(base, "conversation", conv));
  for (auto& [why, body] : refused) {
    EXPECT_TRUE(is_error(fx.post_keyed(body, "idem-new"), 409, "conflict")) << why;
    EXPECT_TRUE(is_error(fx.post_keyed(with(body, "stream", true), "idem-new"), 409, "conflict")) << why;
  }
  EXPECT_EQ(mock.requests().size(), 1u);
  EXPECT_EQ(node.all_messages(key, session).size(), 2u);

  // A chain going on from its latest response (the session actor's fast path).
  json next{{"input", "next question"}, {"previous_response_id", id1}};
  auto r2 = fx.post_keyed(next, "idem-chain");
  ASSERT_EQ(r2.status, 200) << describe(r2);
  auto id2 = r2.js()["id"].get<std::string>();
  ASSERT_EQ(mock.requests().size(), 2u);
  auto retry_and_refuse = [&](const char* where) {
    auto same = fx.post_keyed(next, "idem-chain");
    ASSERT_EQ(same.status, 200) << where << ": " << describe(same);
    EXPECT_EQ(same.js()["id"], id2) << where;
    auto s = fx.post_keyed(with(next, "stream", true), "idem-chain");
    ASSERT_EQ(s.status, 200) << where << ": " << describe(s);
    auto ev = events_of(s.body);
    ASSERT_FALSE(ev.empty()) << where << ": " << s.body;
    EXPECT_EQ(ev.back().second["response"]["id"], id2) << where << ": " << s.body;
    auto others = variations(next, "next question");
    others.emplace_back("previous_response_id", with(next, "previous_response_id", id2));
    for (auto& [why, body] : others) {
      EXPECT_TRUE(is_error(fx.post_keyed(body, "idem-chain"), 409, "conflict")) << where << ": " << why;
      EXPECT_TRUE(is_error(fx.post_keyed(with(body, "stream", true), "idem-chain"), 409, "conflict"))
        << where << ": " << why << " streamed";
    }
  };
  retry_and_refuse("in the window");
  EXPECT_EQ(mock.requests().size(), 2u);
  EXPECT_EQ(node.all_messages(key, session).size(), 4u);
  // Another turn pushes the keyed one out of the actor's window: the
  // retries look it up.
  auto r3 = fx.post_keyed({{"input", "third"}, {"previous_response_id", id2}}, "idem-third");
  ASSERT_EQ(r3.status, 200) << describe(r3);
  ASSERT_EQ(mock.requests().size(), 3u);
  retry_and_refuse("looked up");
  EXPECT_EQ(mock.requests().size(), 3u);
  EXPECT_EQ(node.all_messages(key, session).size(), 6u);
  // A response's own key with its previous response's: still conflicts.
  EXPECT_TRUE(is_error(fx.post_keyed({{"input", "third"}, {"previous_response_id", id1}}, "idem-third"),
                       409, "conflict"));
  EXPECT_EQ(mock.requests().size(), 3u);
  EXPECT_EQ(node.all_messages(key, session).size(), 6u);
}

// An Idempotency-Key is the user's, not one session's (API.md section 5a):
// the same key with a request that goes to ANOTHER session (another
// conversation, a new conversation, another previous response, a fork) is
// 409 conflict before any model call, and leaves nothing behind (no
// message, no session or forked conversation, no usage); the first
// response stays retrievable and its exact repeat answers it again.
TEST(stateful_responses, an_idempotency_key_is_refused_in_another_session) {
  responses_node fx;
  auto& db = fx.db;
  auto& mock = fx.mock;
  auto& node = fx.node;
  auto& key = fx.key;
  auto ok = [](const http_result& r) {
    EXPECT_EQ(r.status, 200) << describe(r);
    return r.status == 200 ? r.js()["id"].get<std::string>() : std::string{};
  };
  auto conv_of = [](const http_result& r) {
    return r.js()["conversation"]["id"].get<std::string>();
  };
  auto count = [&](const std::string& sql) { return db.query(sql)[0][0].as<long>(); };
  auto new_conv = [&] {
    auto r = node.call("POST", "/v1/conversations", key, "{}");
    EXPECT_EQ(r.status, 200) << describe(r);
    return r.js()["id"].get<std::string>();
  };

  // Conversation A: a new conversation made with key k-new, then a chain.
  auto a1 = fx.post_keyed({{"input", "a one"}}, "k-new");
  auto id_a1 = ok(a1);
  auto conv_a = conv_of(a1);
  auto id_a2 = ok(fx.post_keyed({{"input", "a two"}, {"previous_response_id", id_a1}}, "k-chain"));
  // Conversation B, made empty; a turn in it with key k-conv.
  auto conv_b = new_conv();
  auto b1 = fx.post_keyed({{"input", "b one"}, {"conversation", conv_b}}, "k-conv");
  auto id_b1 = ok(b1);
  auto id_b2 = ok(fx.post_keyed({{"input", "b two"}, {"conversation", conv_b}}, "k-b2"));
  // A fork of A (a1 is no longer its latest) with key k-fork.
  auto f1 = fx.post_keyed({{"input", "fork one"}, {"previous_response_id", id_a1}}, "k-fork");
  auto id_f1 = ok(f1);
  auto conv_f = conv_of(f1);
  ASSERT_NE(conv_f, conv_a);
  auto conv_c = new_conv();
  ASSERT_EQ(mock.requests().size(), 5u);

  auto messages = count("SELECT count(*) FROM messages");
  auto sessions = count("SELECT count(*) FROM sessions");
  auto usage = count("SELECT coalesce(sum(requests), 0) FROM usage_daily");
  ASSERT_EQ(usage, 5);
  // Each key with a request that would go to another session.
  std::vector<std::tuple<std::string, std::string, json>> refused{
    {"new conversation, then conversation B", "k-new", {{"input", "a one"}, {"conversation", conv_b}}},
    {"new conversation, then an empty conversation", "k-new",
     {{"input", "a one"}, {"conversation", conv_c}}},
    {"new conversation, then continuing B", "k-new",
     {{"input", "a one"}, {"previous_response_id", id_b2}}},
    {"new conversation, then a fork", "k-new", {{"input", "a one"}, {"previous_response_id", id_b1}}},
    {"conversation B, then conversation C", "k-conv",
     {{"input", "b one"}, {"conversation", conv_c}}},
    {"conversation B, then conversation A", "k-conv",
     {{"input", "b one"}, {"conversation", conv_a}}},
    {"conversation B, then a new conversation", "k-conv", {{"input", "b one"}}},
    {"conversation B, then a fork", "k-conv", {{"input", "b one"}, {"previous_response_id", id_a1}}},
    {"continuing A, then continuing B", "k-chain",
     {{"input", "a two"}, {"previous_response_id", id_b2}}},
    {"continuing A, then continuing the fork", "k-chain",
     {{"input", "a two"}, {"previous_response_id", id_f1}}},
    {"continuing A, then forking B", "k-chain",
     {{"input", "a two"}, {"previous_response_id", id_b1}}},
    {"continuing A, then a new conversation", "k-chain", {{"input", "a two"}}},
    {"a fork, then continuing A", "k-fork", {{"input", "fork one"}, {"previous_response_id", id_a2}}},
    {"a fork, then forking B", "k-fork", {{"input", "fork one"}, {"previous_response_id", id_b1}}},
    {"a fork, then a new conversation", "k-fork", {{"input", "fork one"}}},
    {"a fork, then conversation B", "k-fork",
     {{"input", "fork one"}, {"conversation", conv_b}}},
  };
  for (auto& [why, k, body] : refused) {
    EXPECT_TRUE(is_error(fx.post_keyed(body, k), 409, "conflict")) << why;
    auto streamed = body;
    streamed["stream"] = true;
    EXPECT_TRUE(is_error(fx.post_keyed(streamed, k), 409, "conflict")) << why << ", streamed";
    EXPECT_EQ(mock.requests().size(), 5u) << why;
    EXPECT_EQ(count("SELECT count(*) FROM messages"), messages) << why;
    EXPECT_EQ(count("SELECT count(*) FROM sessions"), sessions) << why;
  }
  EXPECT_EQ(count("SELECT coalesce(sum(requests), 0) FROM usage_daily"), usage);
  EXPECT_EQ(node.all_messages(key, conv_c.substr(5)).size(), 0u);

  // The first responses stand: retrievable, and an exact repeat (also
  // streamed) answers each again with no model call.
  std::vector<std::tuple<std::string, json, std::string>> firsts{
    {"k-new", {{"input", "a one"}}, id_a1},
    {"k-chain", {{"input", "a two"}, {"previous_response_id", id_a1}}, id_a2},
    {"k-conv", {{"input", "b one"}, {"conversation", conv_b}}, id_b1},
    {"k-fork", {{"input", "fork one"}, {"previous_response_id", id_a1}}, id_f1},
  };
  for (auto& [k, body, id] : firsts) {
    auto got = node.call("GET", "/v1/responses/" + id, key);
    ASSERT_EQ(got.status, 200) << k << ": " << describe(got);
    auto again = fx.post_keyed(body, k);
    ASSERT_EQ(again.status, 200) << k << ": " << describe(again);
    EXPECT_EQ(again.js()["id"], id) << k;
    auto streamed = body;
    streamed["stream"] = true;
    auto s = fx.post_keyed(streamed, k);
    ASSERT_EQ(s.status, 200) << k << ": " << describe(s);
    auto ev = events_of(s.body);
    ASSERT_FALSE(ev.empty()) << k << ": " << s.body;
    EXPECT_EQ(ev.back().second["response"]["id"], id) << k << ": " << s.body;
  }
  EXPECT_EQ(mock.requests().size(), 5u);
  EXPECT_EQ(count("SELECT count(*) FROM messages"), messages);
  EXPECT_EQ(count("SELECT count(*) FROM sessions"), sessions);
  // `store: false` stores nothing, so its key claims nothing.
  auto unstored = fx.post_keyed({{"input", "not kept"}, {"store", false}}, "k-unstored");
  ASSERT_EQ(unstored.status, 200) << describe(unstored);
  EXPECT_EQ(count("SELECT count(*) FROM response_keys WHERE idem_key = 'k-unstored'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM sessions"), sessions);
  // Deleting a conversation frees the keys its turns claimed.
  ASSERT_EQ(node.call("DELETE", "/v1/conversations/" + conv_b, key).status, 200);
  EXPECT_EQ(count("SELECT count(*) FROM response_keys WHERE idem_key IN ('k-conv', 'k-b2')"), 0);
  auto moved = fx.post_keyed({{"input", "b one"}, {"conversation", conv_c}}, "k-conv");
  ASSERT_EQ(moved.status, 200) << describe(moved);
  EXPECT_EQ(conv_of(moved), conv_c);
}

// A keyed turn stored before its request's hash was (schema 8) has none: a
// repeat of its key is compared by its user text alone, as then.
TEST(stateful_responses, a_keyed_turn_without_a_stored_hash_compares_its_text) {
  responses_node fx{{{"PARLEY_CONTEXT_MESSAGES", "2"}}};
  auto& db = fx.db;
  auto& mock = fx.mock;
  auto& node = fx.node;
  auto& key = fx.key;
  auto r1 = fx.post({{"input", "old question"}, {"instructions", "rules"}},
                 {{"Idempotency-Key", "old-1"}});
  ASSERT_EQ(r1.status, 200) << describe(r1);
  auto id1 = r1.js()["id"].get<std::string>();
  // Only the keyed user message keeps a hash.
  EXPECT_EQ(db.query("SELECT count(*) FROM messages WHERE request_hash IS NOT NULL")[0][0].as<int>(),
            1);
  // Out of the session actor's window, so a repeat reads it back.
  auto r2 = fx.post({{"input", "later"}, {"previous_response_id", id1}});
  ASSERT_EQ(r2.status, 200) << describe(r2);
  db.query("UPDATE messages SET request_hash = NULL");
  auto calls = mock.requests().size();
  auto same_text = fx.post({{"input", "old question"}, {"instructions", "other rules"}},
                        {{"Idempotency-Key", "old-1"}});
  ASSERT_EQ(same_text.status, 200) << describe(same_text);
  EXPECT_EQ(same_text.js()["id"], id1);
  EXPECT_TRUE(is_error(fx.post({{"input", "new question"}, {"instructions", "rules"}},
                            {{"Idempotency-Key", "old-1"}}),
                       409, "conflict"));
  EXPECT_EQ(mock.requests().size(), calls);
  EXPECT_EQ(node.all_messages(key, r1.js()["conversation"]["id"].get<std::string>().substr(5)).size(),
            4u);
}

// GET /v1/responses/{id} gives back the request's own options as given at
// creation (instructions, metadata, temperature, max_output_tokens); the
// input items list every input item stored with the response.
TEST_F(stateful, a_retrieved_response_has_its_requests_options_and_input_items) {
  json msgs = json::array({{{"role", "developer"}, {"content", "dev"}},
                           {{"role", "user"}, {"content", "q0"}},
                           {{"role", "assistant"}, {"content", "a0"}},
                           {{"role", "user"}, {"content", "q1"}}});
  auto r1 = call("POST", "/v1/responses",
                 {{"input", msgs}, {"instructions", "sys"}, {"metadata", {{"k", "v"}}},
                  {"temperature", 0.5}, {"max_output_tokens", 77}});
  ASSERT_EQ(r1.status, 200) << describe(r1);
  auto id1 = r1.js()["id"].get<std::string>();
  auto got = call("GET", "/v1/responses/" + id1);
  ASSERT_EQ(got.status, 200) << describe(got);
  for (auto field : {"instructions", "metadata", "temperature", "max_output_tokens", "output",
                     "conversation", "previous_response_id", "usage", "created_at", "model"})
    EXPECT_EQ(got.js()[field], r1.js()[field]) << field << ": " << got.body;
  EXPECT_EQ(got.js()["instructions"], "sys\n\ndev");
  EXPECT_EQ(got.js()["metadata"], json({{"k", "v"}}));
  EXPECT_EQ(got.js()["temperature"], 0.5);
  EXPECT_EQ(got.js()["max_output_tokens"], 77);
  auto inputs = call("GET", "/v1/responses/" + id1 + "/input_items?order=asc");
  ASSERT_EQ(inputs.status, 200) << describe(inputs);
  ASSERT_EQ(inputs.js()["data"].size(), 3u) << inputs.body;
  EXPECT_EQ(text_of(inputs.js()["data"][0]), "q0");
  EXPECT_EQ(text_of(inputs.js()["data"][1]), "a0");
  EXPECT_EQ(text_of(inputs.js()["data"][2]), "q1");

  // A response with none of them: nulls and {} as at creation; options
  // never carry over to the next response.
  auto r2 = call("POST", "/v1/responses", {{"input", "q2"}, {"previous_response_id", id1}});
  ASSERT_EQ(r2.status, 200) << describe(r2);
  auto got2 = call("GET", "/v1/responses/" + r2.js()["id"].get<std::string>());
  ASSERT_EQ(got2.status, 200) << describe(got2);
  for (auto field : {"instructions", "metadata", "temperature", "max_output_tokens",
                     "previous_response_id"})
    EXPECT_EQ(got2.js()[field], r2.js()[field]) << field << ": " << got2.body;
  EXPECT_TRUE(got2.js()["instructions"].is_null());
  EXPECT_EQ(got2.js()["metadata"], json::object());
  auto inputs2 = call("GET", "/v1/responses/" + r2.js()["id"].get<std::string>() + "/input_items");
  ASSERT_EQ(inputs2.js()["data"].size(), 1u) << inputs2.body;
}

// A continued conversation answers with the model the request names (OpenAI
// lets each response choose its own); a model the key may not name is 403
// whichever way the request continues, and makes nothing (no fork, no
// turn). Before, the conversation's model answered and the request's was
// ignored, also a forbidden one.
TEST(stateful_responses, a_continuation_uses_the_model_it_names_and_the_key_must_allow_it) {
  responses_node fx;
  auto& node = fx.node;
  auto made = node.admin("POST", "/admin/v1/api-keys",
                         {{"user", "carol"}, {"models", {"mock-model", "other-model"}}});
  ASSERT_EQ(made.status, 201) << describe(made);
  std::string carol = made.js()["api_key"];
  auto post = [&](const json& body) {
    return node.call("POST", "/v1/responses", carol, body.dump());
  };
  auto first = post({{"input", "one"}});
  ASSERT_EQ(first.status, 200) << describe(first);
  auto conv = first.js()["conversation"]["id"].get<std::string>();
  auto first_id = first.js()["id"].get<std::string>();
  auto second = post({{"input", "two"}, {"previous_response_id", first_id}, {"model", "other-model"}});
  ASSERT_EQ(second.status, 200) << describe(second);
  EXPECT_EQ(fx.mock.requests().back()["body"]["model"], "other-model");
  auto by_conv = post({{"input", "three"}, {"conversation", conv}, {"model", "other-model"},
                       {"stream", true}});
  ASSERT_EQ(by_conv.status, 200) << describe(by_conv);
  EXPECT_EQ(fx.mock.requests().back()["body"]["model"], "other-model");
  EXPECT_NE(by_conv.body.find("\"model\":\"other-model\""), std::string::npos) << by_conv.body;
  auto items = node.call("GET", "/v1/conversations/" + conv + "/items", carol).js()["data"];
  ASSERT_EQ(items.size(), 6u) << items.dump();

  auto calls = fx.mock.requests().size();
  auto sessions = [&] { return fx.db.query("SELECT count(*) FROM sessions")[0][0].as<int>(); };
  auto conversations = sessions();
  for (const json& body :
       {json{{"input", "x"}, {"previous_response_id", first_id}, {"model", "forbidden-model"}},
        json{{"input", "x"}, {"conversation", conv}, {"model", "forbidden-model"}},
        json{{"input", "x"}, {"model", "forbidden-model"}},
        json{{"input", "x"}, {"model", "forbidden-model"}, {"store", false}}}) {
    auto r = post(body);
    EXPECT_EQ(r.status, 403) << body.dump() << " " << describe(r);
    EXPECT_EQ(r.code(), "forbidden") << body.dump();
  }
  EXPECT_EQ(fx.mock.requests().size(), calls);
  EXPECT_EQ(sessions(), conversations) << "no fork was made";
  EXPECT_EQ(node.call("GET", "/v1/conversations/" + conv + "/items", carol).js()["data"].size(),
            6u);
}

TEST(stateful_responses, a_stream_names_each_event_by_its_type_and_fails_with_response_failed) {
  responses_node fx;
  auto& mock = fx.mock;
  auto& node = fx.node;
  auto& key = fx.key;
  auto r = node.call("POST", "/v1/responses", key,
                     json{{"input", "one two three four five six"}, {"stream", true}}.dump());
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_NE(r.header("content-type").find("text/event-stream"), std::string::npos);
  auto events = events_of(r.body);
  ASSERT_GE(events.size(), 9u) << r.body;
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].first, events[i].second.value("type", "?")) << r.body;
    EXPECT_EQ(events[i].second["sequence_number"], static_cast<int>(i)) << r.body;
  }
  EXPECT_EQ(events.front().first, "response.created");
  EXPECT_EQ(events.back().first, "response.completed");
  auto id = events.back().second["response"]["id"].get<std::string>();
  EXPECT_EQ(events.front().second["response"]["id"], id);
  // Every event that carries the response names its model, from the first.
  auto model = events.back().second["response"]["model"].get<std::string>();
  EXPECT_FALSE(model.empty()) << r.body;
  for (auto& e : events) {
    if (e.second.contains("response")) {
      EXPECT_EQ(e.second["response"]["model"], model) << e.first;
    }
  }
  // Committed before response.completed: retrievable at once.
  auto got = node.call("GET", "/v1/responses/" + id, key);
  ASSERT_EQ(got.status, 200) << describe(got);
  EXPECT_EQ(got.js()["output"], events.back().second["response"]["output"]);

  // The upstream cut mid-stream: response.failed saying why, nothing stored.
  auto conv = events.back().second["response"]["conversation"]["id"].get<std::string>();
  mock.configure({{"mode", "cut_stream"}});
  auto cut = node.call("POST", "/v1/responses", key,
                       json{{"input", "one two three four five six seven eight"},
                            {"conversation", conv},
                            {"stream", true}}
                         .dump());
  ASSERT_EQ(cut.status, 200) << describe(cut);
  auto failed = events_of(cut.body);
  ASSERT_FALSE(failed.empty()) << cut.body;
  EXPECT_EQ(failed.front().first, "response.created") << cut.body;
  EXPECT_EQ(failed.back().first, "response.failed") << cut.body;
  EXPECT_EQ(failed.back().second["response"]["status"], "failed");
  EXPECT_EQ(failed.front().second["response"]["model"], model) << cut.body;
  EXPECT_EQ(failed.back().second["response"]["model"], model) << cut.body;
  EXPECT_TRUE(failed.back().second["response"]["error"]["message"].is_string()) << cut.body;
  for (auto& e : failed)
    EXPECT_NE(e.first, "response.completed");
  mock.reset();
  auto items = node.call("GET", "/v1/conversations/" + conv + "/items", key).js();
  EXPECT_EQ(items["data"].size(), 2u) << items.dump();
  // store: false streams the same events, from the conversation's context,
  // and stores nothing.
  auto calls = mock.requests().size();
  auto unstored = node.call("POST", "/v1/responses", key,
                            json{{"input", "not kept"}, {"stream", true}, {"store", false},
                                 {"conversation", conv}}
                              .dump());
  ASSERT_EQ(unstored.status, 200) << describe(unstored);
  auto ev = events_of(unstored.body);
  ASSERT_GE(ev.size(), 9u) << unstored.body;
  for (std::size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i].first, ev[i].second.value("type", "?")) << unstored.body;
    EXPECT_EQ(ev[i].second["sequence_number"], static_cast<int>(i)) << unstored.body;
  }
  EXPECT_EQ(ev.back().first, "response.completed");
  EXPECT_EQ(ev.back().second["response"]["store"], false);
  EXPECT_EQ(ev.front().second["response"]["model"], model) << unstored.body;
  ASSERT_EQ(mock.requests().size(), calls + 1);
  auto ctx = sent(mock, calls);
  ASSERT_EQ(ctx.size(), 3u);
  EXPECT_EQ(ctx[0].second, "one two three four five six");
  EXPECT_EQ(ctx[2].second, "not kept");
  EXPECT_EQ(node.call("GET", "/v1/conversations/" + conv + "/items", key).js()["data"].size(), 2u);
}

// Streamed continuations of one response sent at once: the first to run
// appends to the conversation; by the time the others run the response is
// no longer its conversation's latest, so each forks and its model call sees
// the conversation up to that response only (API.md section 5a), as the
// non-streamed route already does.
TEST(stateful_responses, concurrent_streamed_continuations_of_one_response_fork) {
  responses_node fx;
  auto& mock = fx.mock;
  auto first = fx.post({{"input", "first"}});
  ASSERT_EQ(first.status, 200) << describe(first);
  auto prev = first.js()["id"].get<std::string>();
  auto conv = first.js()["conversation"]["id"].get<std::string>();
  auto answer = text_of(first.js()["output"][0]);
  mock.configure({{"chunk_delay_ms", 20}});
  constexpr int n = 4;
  std::vector<std::future<http_result>> calls;
  for (int i = 0; i < n; ++i)
    calls.push_back(std::async(std::launch::async, [&fx, &prev, i] {
      return fx.post({{"input", "cont " + std::to_string(i)},
                      {"previous_response_id", prev},
                      {"stream", true}});
    }));
  int appended = 0;
  for (auto& f : calls) {
    auto r = f.get();
    ASSERT_EQ(r.status, 200) << describe(r);
    auto events = events_of(r.body);
    ASSERT_FALSE(events.empty()) << r.body;
    ASSERT_EQ(events.back().first, "response.completed") << r.body;
    if (events.back().second["response"]["conversation"]["id"] == conv)
      ++appended;
  }
  EXPECT_EQ(appended, 1);
  auto items = fx.node.call("GET", "/v1/conversations/" + conv + "/items", fx.key).js();
  EXPECT_EQ(items["data"].size(), 4u) << items.dump();
  // Every continuation's model call saw "first", its answer and its own input.
  ASSERT_EQ(mock.requests().size(), 1u + n);
  for (std::size_t i = 1; i <= n; ++i) {
    auto ctx = sent(mock, i);
    ASSERT_EQ(ctx.size(), 3u) << mock.requests()[i].dump();
    EXPECT_EQ(ctx[0], (std::pair<std::string, std::string>{"user", "first"}));
    EXPECT_EQ(ctx[1], (std::pair<std::string, std::string>{"assistant", answer}));
  }
}

// A session deleted while one of its turns streams: the stream still ends,
// with `done` or `error` (API.md section 4), in bounded time; it used to send
// every delta and then neither, holding the connection open.
TEST(stateful_responses, a_stream_ends_when_its_session_is_deleted_mid_turn) {
  responses_node fx;
  auto session = fx.node.create_session(fx.key);
  fx.mock.configure({{"chunk_delay_ms", 20}});
  auto port = fx.node.port();
  auto key = fx.key;
  auto streamed = std::async(std::launch::async, [port, key, session] {
    return http(port, "POST", "/v1/sessions/" + session + "/messages",
                json{{"content", std::string(200, 'd')}, {"stream", true}}.dump(),
                {{"Authorization", "Bearer " + key}, {"Content-Type", "application/json"}},
                std::chrono::seconds(15));
  });
  std::this_thread::sleep_for(300ms);
  auto gone = fx.node.call("DELETE", "/v1/sessions/" + session, fx.key);
  ASSERT_EQ(gone.status, 204) << describe(gone);
  auto r = streamed.get();
  ASSERT_EQ(r.status, 200) << "the stream did not end within 15 s: " << describe(r);
  auto events = events_of(r.body);
  ASSERT_FALSE(events.empty()) << r.body;
  EXPECT_TRUE(events.back().first == "done" || events.back().first == "error") << r.body;
  EXPECT_EQ(fx.node.call("GET", "/v1/sessions/" + session, fx.key).status, 404);
}

TEST_F(stateful, responses_errors_have_openai_shape_and_change_nothing) {
  auto post = [&](const json& body, const std::string& as = {}, headers h = {}) {
    return node.call("POST", "/v1/responses", as.empty() ? key : as, body.dump(), std::move(h));
  };
  auto r = post({{"input", "hello"}});
  ASSERT_EQ(r.status, 200) << describe(r);
  auto id = r.js()["id"].get<std::string>();
  auto conv = r.js()["conversation"]["id"].get<std::string>();
  for (const json& body : std::vector<json>{
         json::object(),
         {{"input", ""}},
         {{"input", json::array()}},
         {{"input", 5}},
         {{"input", "x"}, {"previous_response_id", id}, {"conversation", conv}},
         {{"input", "x"}, {"temperature", 3}},
         {{"input", "x"}, {"temperature", "hot"}},
         {{"input", "x"}, {"max_output_tokens", 0}},
         {{"input", "x"}, {"store", "yes"}},
         {{"input", "x"}, {"metadata", {{"a", 1}}}},
         {{"input", "x"}, {"conversation", 7}},
         {{"input", json::array({{{"role", "user"}, {"content", "a"}},
                                 {{"role", "assistant"}, {"content", "b"}}})}},
         {{"input", json::array({{{"role", "assistant"}, {"content", "a"}}})}},
         {{"input", "x"},
          {"tools", json::array({{{"type", "function"}, {"name", "f"},
                                  {"parameters", json::object()}}})}},
         {{"input", "x"}, {"tools", "all"}},
       })
    EXPECT_TRUE(is_error(post(body), 400, "invalid_request")) << body.dump();
  EXPECT_EQ(post({{"input", "no tools"}, {"tools", json::array()}, {"store", false}}).status, 200);
  EXPECT_TRUE(is_error(post({{"input", "x"}}, {}, {{"Idempotency-Key", std::string(129, 'k')}}),
                       400, "invalid_request"));
  // Sent but empty is out of 1..128 too, not the same as not sent.
  EXPECT_TRUE(is_error(post({{"input", "x"}}, {}, {{"Idempotency-Key", ""}}), 400,
                       "invalid_request"));
  EXPECT_TRUE(is_error(node.call("POST", "/v1/conversations", key, "{}", {{"Idempotency-Key", ""}}),
                       400, "invalid_request"));
  for (const std::string& bad :
       std::vector<std::string>{"resp_0123456789abcdef0123456789abcdef_2", "resp_x", "nope",
                                id.substr(0, id.rfind('_')) + "_1"})
    EXPECT_TRUE(is_error(post({{"input", "x"}, {"previous_response_id", bad}}), 404, "not_found"))
      << bad;
  EXPECT_TRUE(is_error(post({{"input", "x"}, {"conversation", "conv_0123456789abcdef0123456789abcdef"}}),
                       404, "not_found"));
  EXPECT_TRUE(is_error(post({{"input", "x"}, {"conversation", "c"}}), 404, "not_found"));
  // Another user's response and conversation.
  EXPECT_TRUE(is_error(post({{"input", "x"}, {"previous_response_id", id}}, other), 404, "not_found"));
  EXPECT_TRUE(is_error(post({{"input", "x"}, {"conversation", conv}}, other), 404, "not_found"));
  EXPECT_TRUE(is_error(post({{"input", "x"}, {"conversation", conv}, {"store", false}}, other), 404,
                       "not_found"));
  EXPECT_TRUE(is_error(call("GET", "/v1/responses/" + id, nullptr, other), 404, "not_found"));
  EXPECT_TRUE(is_error(call("GET", "/v1/responses/" + id + "/input_items", nullptr, other), 404,
                       "not_found"));
  EXPECT_TRUE(is_error(call("GET", "/v1/responses/resp_nope"), 404, "not_found"));
  EXPECT_TRUE(is_error(call("GET", "/v1/responses/" + id.substr(0, id.rfind('_')) + "_1"), 404,
                       "not_found"));
  // Nothing was written by any of them.
  auto items = call("GET", "/v1/conversations/" + conv + "/items").js();
  EXPECT_EQ(items["data"].size(), 2u) << items.dump();
  EXPECT_EQ(call("GET", "/v1/sessions").js()["data"].size(), 1u);
  auto got = call("GET", "/v1/responses/" + id);
  ASSERT_EQ(got.status, 200) << describe(got);
  EXPECT_EQ(got.js()["output"], r.js()["output"]);
  auto inputs = call("GET", "/v1/responses/" + id + "/input_items").js();
  ASSERT_EQ(inputs["data"].size(), 1u) << inputs.dump();
  EXPECT_EQ(text_of(inputs["data"][0]), "hello");
  EXPECT_TRUE(is_error(call("DELETE", "/v1/responses/" + id, nullptr, other), 404, "not_found"));
  EXPECT_TRUE(is_error(call("DELETE", "/v1/responses/resp_nope"), 404, "not_found"));
  // A user message is no response.
  EXPECT_TRUE(is_error(call("DELETE", "/v1/responses/" + id.substr(0, id.rfind('_')) + "_1"), 404,
                       "not_found"));
  auto del = call("DELETE", "/v1/responses/" + id);
  ASSERT_EQ(del.status, 200) << describe(del);
  EXPECT_EQ(del.js(), json({{"id", id}, {"object", "response.deleted"}, {"deleted", true}}));
  EXPECT_TRUE(is_error(call("GET", "/v1/responses/" + id), 404, "not_found"));
  EXPECT_TRUE(is_error(call("GET", "/v1/responses/" + id + "/input_items"), 404, "not_found"));
  EXPECT_TRUE(is_error(call("DELETE", "/v1/responses/" + id), 404, "not_found"));
  EXPECT_TRUE(is_error(post({{"input", "x"}, {"previous_response_id", id}}), 404, "not_found"));
  EXPECT_TRUE(is_error(post({{"input", "x"}, {"previous_response_id", id}, {"store", false}}), 404,
                       "not_found"));
  // Its turn stays in the conversation.
  EXPECT_EQ(call("GET", "/v1/conversations/" + conv + "/items").js()["data"].size(), 2u);
}

// Items other than text messages (tool calls and their outputs, images,
// reasoning, references) are refused whole with a 400 whose `param` names
// the item or part, and nothing is written (API.md section 5a: items are
// text messages).
TEST_F(stateful, non_text_items_are_refused_naming_the_item_and_change_nothing) {
  auto r = call("POST", "/v1/responses", {{"input", "hello"}});
  ASSERT_EQ(r.status, 200) << describe(r);
  auto id = r.js()["id"].get<std::string>();
  auto conv = r.js()["conversation"]["id"].get<std::string>();
  auto user = [](const std::string& text) { return json{{"role", "user"}, {"content", text}}; };
  json call_item = {{"type", "function_call"}, {"call_id", "call_1"}, {"name", "lookup"},
                    {"arguments", "{}"}};
  json output_item = {{"type", "function_call_output"}, {"call_id", "call_1"}, {"output", "42"}};
  json image = {{"role", "user"},
                {"content", json::array({{{"type", "input_text"}, {"text", "what is this"}},
                                         {{"type", "input_image"},
                                          {"image_url", "https://example.com/a.png"}}})}};
  struct refused {
    json input;
    std::string param;
  };
  for (auto& [input, param] : std::vector<refused>{
         {json::array({user("a"), call_item}), "input[1]"},
         {json::array({output_item, user("a")}), "input[0]"},
         {json::array({image}), "input[0].content[1]"},
         {json::array({{{"type", "reasoning"}, {"summary", json::array()}}, user("a")}), "input[0]"},
         {json::array({{{"type", "item_reference"}, {"id", "msg_x"}}, user("a")}), "input[0]"},
         {json::array({{{"role", "tool"}, {"content", "x"}}, user("a")}), "input[0].role"},
       }) {
    for (bool store : {true, false})
      for (const json& where : {json{{"previous_response_id", id}}, json{{"conversation", conv}},
                                json::object()}) {
        json body = where;
        body["input"] = input;
        body["store"] = store;
        auto got = call("POST", "/v1/responses", body);
        EXPECT_TRUE(is_error(got, 400, "invalid_request")) << body.dump();
        EXPECT_EQ(got.js()["error"]["param"], param) << describe(got);
        EXPECT_EQ(got.js()["error"]["type"], "invalid_request_error") << describe(got);
      }
    auto got = call("POST", "/v1/conversations", {{"items", input}});
    EXPECT_TRUE(is_error(got, 400, "invalid_request")) << input.dump();
    auto items_param = param;
    items_param.replace(0, 5, "items");
    EXPECT_EQ(got.js()["error"]["param"], items_param) << describe(got);
    got = call("POST", "/v1/conversations/" + conv + "/items", {{"items", input}});
    EXPECT_TRUE(is_error(got, 400, "invalid_request")) << input.dump();
    EXPECT_EQ(got.js()["error"]["param"], items_param) << describe(got);
  }
  // Nothing was written: one conversation, its first turn only.
  EXPECT_EQ(call("GET", "/v1/sessions").js()["data"].size(), 1u);
  EXPECT_EQ(call("GET", "/v1/conversations/" + conv + "/items").js()["data"].size(), 2u);
}

/// PARLEY_TEST_NODE_MODULES when it holds the openai SDK, else "".
std::string node_modules() {
  const char* dir = std::getenv("PARLEY_TEST_NODE_MODULES");
  if (!dir || !std::filesystem::exists(std::filesystem::path(dir) / "openai" / "package.json"))
    return {};
  return dir;
}

TEST(stateful_sdk, the_openai_sdk_keeps_conversations_on_a_three_node_cluster) {
  auto modules = node_modules();
  if (modules.empty())
    GTEST_SKIP() << "PARLEY_TEST_NODE_MODULES does not hold the openai SDK (scripts/test "
                    "installs it)";
  scratch_db db;
  parley_cluster cluster{db, 3};
  auto key = cluster[0].create_key("sdk-user");
  auto other = cluster[1].create_key("sdk-other");
  auto url = [&](int i) { return "http://127.0.0.1:" + std::to_string(cluster[i].port()) + "/v1"; };
  for (int first = 0; first < 3; ++first) {
    SCOPED_TRACE("first node " + std::to_string(first));
    std::string rest = url((first + 1) % 3) + "," + url((first + 2) % 3);
    auto run = run_process("node",
                           {std::string(OPENAI_CLIENTS_DIR) + "/stateful_sdk.cjs", url(first), key,
                            other, "--nodes=" + rest},
                           {{"NODE_PATH", modules}}, 120s);
    auto at = run.out.rfind("{\"library\"");
    ASSERT_NE(at, std::string::npos) << describe(run);
    auto saw = json::parse(run.out.substr(at, run.out.find('\n', at) - at), nullptr, false);
    ASSERT_TRUE(saw.is_object()) << describe(run);
    std::string line;
    for (auto& [name, result] : saw["scenarios"].items())
      line += " " + name + (result.value("ok", false) ? "=ok" : "=FAIL");
    std::printf("[ stateful ] openai %s via node %d:%s\n", saw.value("version", "?").c_str(), first,
                line.c_str());
    for (auto scenario : {"conversations", "paging", "isolation", "chain", "fork", "store_false",
                          "idempotency", "responses_isolation", "stream", "replay_and_options",
                          "conversation_idempotency"}) {
      ASSERT_TRUE(saw["scenarios"].contains(scenario)) << saw.dump();
      EXPECT_TRUE(saw["scenarios"][scenario].value("ok", false))
        << scenario << ": " << saw["scenarios"][scenario].dump();
    }
    EXPECT_EQ(run.status, 0) << describe(run);
  }
}

} // namespace

namespace {

/// One run of stateful_sdk.cjs: what it saw (null when it printed nothing).
json run_sdk(const std::string& modules, const std::vector<std::string>& args) {
  std::vector<std::string> all{std::string(OPENAI_CLIENTS_DIR) + "/stateful_sdk.cjs"};
  all.insert(all.end(), args.begin(), args.end());
  auto run = run_process("node", all, {{"NODE_PATH", modules}}, 120s);
  auto at = run.out.rfind("{\"library\"");
  if (at == std::string::npos)
    return {{"ok", false}, {"error", describe(run)}};
  return json::parse(run.out.substr(at, run.out.find('\n', at) - at), nullptr, false);
}

} // namespace

TEST(stateful_sdk, a_conversation_continues_through_another_node_after_its_host_is_killed) {
  auto modules = node_modules();
  if (modules.empty())
    GTEST_SKIP() << "PARLEY_TEST_NODE_MODULES does not hold the openai SDK";
  scratch_db db;
  parley_cluster cluster{db, 3, {{"PARLEY_FAILURE_DETECT_MS", "1000"}}};
  auto key = cluster[0].create_key("sdk-user");
  auto url = [&](int i) { return "http://127.0.0.1:" + std::to_string(cluster[i].port()) + "/v1"; };
  // A conversation whose session node-2 hosts.
  std::string conv;
  for (int i = 0; i < 200 && conv.empty(); ++i) {
    auto id = cluster[0].call("POST", "/v1/conversations", key).js()["id"].get<std::string>();
    if (cluster[0].host_of(id.substr(5)) == cluster[2].node_id())
      conv = id;
  }
  ASSERT_FALSE(conv.empty());
  auto start = run_sdk(modules, {url(2), key, key, "--only=kill_start", "--conversation=" + conv});
  ASSERT_TRUE(start["scenarios"]["kill_start"].value("ok", false)) << start.dump();
  auto second = start["scenarios"]["kill_start"]["second"].get<std::string>();
  cluster[2].kill9();
  auto after = run_sdk(modules, {url(0), key, key, "--nodes=" + url(1), "--only=kill_continue",
                                 "--prev=" + second, "--conversation=" + conv});
  EXPECT_TRUE(after["scenarios"]["kill_continue"].value("ok", false)) << after.dump();
  auto msgs = cluster[1].all_messages(key, conv.substr(5));
  ASSERT_EQ(msgs.size(), 6u) << msgs.dump();
  auto texts = start["scenarios"]["kill_start"]["texts"];
  EXPECT_EQ(msgs[1]["content"], texts[0]);
  EXPECT_EQ(msgs[3]["content"], texts[1]);
  check_history(msgs);
}

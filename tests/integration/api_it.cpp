// Every route of API.md sections 3-4 and 7 (health) against a real node:
// success and error cases, and isolation between users.

#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

class api : public ::testing::Test {
protected:
  scratch_db db;
  parley_node node{db};
  std::string alice = node.create_key("alice");
  std::string bob = node.create_key("bob");

  void expect_error(const http_result& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << describe(r);
    EXPECT_EQ(r.code(), code) << describe(r);
    auto j = r.js();
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_FALSE(r.header("x-request-id").empty());
    EXPECT_EQ(r.header("x-parley-node"), node.node_id());
  }
};

} // namespace

// The harness's two modes (node_harness.hpp): the echo model answers with
// the message itself; in upstream mode (the ".upstream" runs) the turn goes
// to the shared mock-llm primary, and the fallback stays unused.
TEST_F(api, a_turn_reaches_the_model_of_the_harness_mode) {
  auto id = node.create_session(alice);
  auto r = node.post_message(alice, id, {{"content", "which model"}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["reply"]["content"], expected_reply("which model"));
  EXPECT_EQ(r.js()["reply"]["model"], expected_model());
  if (!upstream_mode()) {
    EXPECT_EQ(r.js()["reply"]["content"], "which model");
    return;
  }
  auto sent = shared_primary().requests();
  ASSERT_EQ(sent.size(), 1u) << sent.dump();
  EXPECT_EQ(sent[0]["body"]["messages"].back()["content"], "which model") << sent.dump();
  EXPECT_TRUE(shared_fallback().requests().empty());
}

TEST_F(api, health_and_readiness) {
  auto h = http(node.port(), "GET", "/healthz");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.js()["status"], "ok");
  auto r = http(node.port(), "GET", "/readyz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.js()["status"], "ready");
  EXPECT_EQ(r.js()["checks"]["postgres"], "ok");
  EXPECT_TRUE(r.js()["checks"]["redis"].is_string());
  EXPECT_EQ(r.js()["checks"]["cluster"], "ok");
}

TEST_F(api, authentication_and_admin_routes) {
  expect_error(node.call("GET", "/v1/sessions", ""), 401, "unauthorized");
  expect_error(node.call("GET", "/v1/sessions", "pk_nope"), 401, "unauthorized");
  expect_error(http(node.port(), "GET", "/v1/sessions", "", {{"Authorization", "Basic abc"}}), 401,
               "unauthorized");
  expect_error(node.call("POST", "/admin/v1/api-keys", alice, R"({"user":"mallory"})"), 403,
               "forbidden");
  expect_error(node.call("POST", "/admin/v1/api-keys", "", R"({"user":"mallory"})"), 401,
               "unauthorized");
  expect_error(node.call("POST", "/admin/v1/api-keys", node.admin_token(), R"({"user":""})"), 400,
               "invalid_request");
  auto k = node.call("POST", "/admin/v1/api-keys", node.admin_token(), R"({"user":"carol"})");
  ASSERT_EQ(k.status, 201) << describe(k);
  EXPECT_EQ(k.js()["user"], "carol");
  auto secret = k.js()["api_key"].get<std::string>();
  EXPECT_EQ(secret.rfind("pk_", 0), 0u);
  EXPECT_EQ(node.call("GET", "/v1/sessions", secret).status, 200);
  // Only a hash is stored.
  auto stored = db.query("SELECT key_hash FROM api_keys WHERE user_id = 'carol'");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_NE(stored[0][0].as<std::string>(), secret);
  expect_error(node.call("DELETE", "/admin/v1/api-keys/pk_00000000", node.admin_token()), 404,
               "not_found");
  // An id too long to exist is 404 in the words of what was asked for (it
  // said "session not found" on every route).
  auto long_id = node.call("DELETE", "/admin/v1/api-keys/" + std::string(3000, 'k'),
                           node.admin_token());
  expect_error(long_id, 404, "not_found");
  EXPECT_EQ(long_id.body.find("session"), std::string::npos) << long_id.body;
}

TEST_F(api, revoked_keys_stop_working_within_five_seconds) {
  auto key = node.create_key("dave");
  ASSERT_EQ(node.call("GET", "/v1/sessions", key).status, 200);
  auto prefix = key.substr(0, 11);
  EXPECT_EQ(node.call("DELETE", "/admin/v1/api-keys/" + prefix, node.admin_token()).status, 204);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int status = 200;
  while (std::chrono::steady_clock::now() < until &&
         (status = node.call("GET", "/v1/sessions", key).status) == 200)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(status, 401);
  EXPECT_EQ(node.call("GET", "/v1/sessions", alice).status, 200) << "other keys unaffected";
}

TEST_F(api, sessions_create_get_list_delete) {
  auto created = node.call("POST", "/v1/sessions", alice,
                           R"({"system_prompt":"be brief","model":"echo","metadata":{"k":1}})");
  ASSERT_EQ(created.status, 201) << describe(created);
  auto s = created.js();
  EXPECT_TRUE(s["id"].is_string());
  EXPECT_TRUE(s["created_at"].get<std::string>().back() == 'Z');
  EXPECT_EQ(s["system_prompt"], "be brief");
  EXPECT_EQ(s["metadata"]["k"], 1);
  auto id = s["id"].get<std::string>();
  EXPECT_EQ(node.call("POST", "/v1/sessions", alice).status, 201) << "the body is optional";

  auto got = node.call("GET", "/v1/sessions/" + id, alice);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.js()["message_count"], 0);
  EXPECT_EQ(got.js()["last_seq"], 0);
  ASSERT_EQ(node.post_message(alice, id, {{"content", "hi"}}).status, 200);
  got = node.call("GET", "/v1/sessions/" + id, alice);
  EXPECT_EQ(got.js()["message_count"], 2);
  EXPECT_EQ(got.js()["last_seq"], 2);

  EXPECT_EQ(node.call("DELETE", "/v1/sessions/" + id, alice).status, 204);
  expect_error(node.call("GET", "/v1/sessions/" + id, alice), 404, "not_found");
  expect_error(node.call("GET", "/v1/sessions/" + id + "/messages", alice), 404, "not_found");
  expect_error(node.post_message(alice, id, {{"content", "again"}}), 404, "not_found");
  expect_error(node.call("DELETE", "/v1/sessions/" + id, alice), 404, "not_found");
  EXPECT_EQ(db.query("SELECT count(*) FROM messages WHERE session_id = '" + id + "'")[0][0].as<int>(),
            0);
}

TEST_F(api, session_list_pages_newest_first) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.insert(ids.begin(), node.create_session(alice));
  node.create_session(bob);
  std::vector<std::string> seen;
  std::string target = "/v1/sessions?limit=2";
  for (int page = 0; page < 10; ++page) {
    auto r = node.call("GET", target, alice);
    ASSERT_EQ(r.status, 200) << describe(r);
    auto j = r.js();
    EXPECT_LE(j["data"].size(), 2u);
    for (auto& s : j["data"])
      seen.push_back(s["id"]);
    if (j["next_cursor"].is_null())
      break;
    target = "/v1/sessions?limit=2&cursor=" + j["next_cursor"].get<std::string>();
  }
  EXPECT_EQ(seen, ids);
  expect_error(node.call("GET", "/v1/sessions?limit=0", alice), 400, "invalid_request");
  expect_error(node.call("GET", "/v1/sessions?limit=101", alice), 400, "invalid_request");
  expect_error(node.call("GET", "/v1/sessions?limit=abc", alice), 400, "invalid_request");
  expect_error(node.call("GET", "/v1/sessions?cursor=garbage", alice), 400, "invalid_request");
}

TEST_F(api, messages_pages_and_feedback) {
  auto id = node.create_session(alice);
  for (int i = 1; i <= 3; ++i)
    ASSERT_EQ(node.post_message(alice, id, {{"content", "m" + std::to_string(i)}}).status, 200);
  auto page = node.call("GET", "/v1/sessions/" + id + "/messages?after=1&limit=2", alice);
  ASSERT_EQ(page.status, 200);
  auto j = page.js();
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["seq"], 2);
  EXPECT_EQ(j["data"][1]["seq"], 3);
  EXPECT_EQ(j["next_after"], 3);
  auto last = node.call("GET", "/v1/sessions/" + id + "/messages?after=5", alice).js();
  EXPECT_EQ(last["data"].size(), 1u);
  EXPECT_TRUE(last["next_after"].is_null());
  auto all = node.all_messages(alice, id);
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all[1]["role"], "assistant");
  EXPECT_EQ(all[1]["reply_to"], 1);
  EXPECT_EQ(all[1]["model"], expected_model());
  EXPECT_EQ(all[1]["content"], expected_reply("m1"));
  expect_error(node.call("GET", "/v1/sessions/" + id + "/messages?limit=501", alice), 400,
               "invalid_request");
  expect_error(node.call("GET", "/v1/sessions/" + id + "/messages?after=-1", alice), 400,
               "invalid_request");

  auto fb = "/v1/sessions/" + id + "/messages/2/feedback";
  EXPECT_EQ(node.call("POST", fb, alice, R"({"rating":1,"comment":"good"})").status, 201);
  EXPECT_EQ(node.call("POST", fb, alice, R"({"rating":-1})").status, 201);
  auto stored = db.query("SELECT rating, comment FROM feedback");
  ASSERT_EQ(stored.size(), 1u) << "feedback again on a message replaces it";
  EXPECT_EQ(stored[0][0].as<int>(), -1);
  expect_error(node.call("POST", fb, alice, R"({"rating":0})"), 400, "invalid_request");
  expect_error(node.call("POST", "/v1/sessions/" + id + "/messages/1/feedback", alice,
                         R"({"rating":1})"),
               400, "invalid_request");
  expect_error(node.call("POST", "/v1/sessions/" + id + "/messages/99/feedback", alice,
                         R"({"rating":1})"),
               404, "not_found");
  expect_error(node.call("POST", "/v1/sessions/" + id + "/messages/x/feedback", alice,
                         R"({"rating":1})"),
               404, "not_found");
}

TEST_F(api, request_validation) {
  auto id = node.create_session(alice);
  auto post = [&](const std::string& body, headers h = {}) {
    return node.call("POST", "/v1/sessions/" + id + "/messages", alice, body, h);
  };
  expect_error(post("{not json"), 400, "invalid_request");
  expect_error(post(R"({"content":5})"), 400, "invalid_request");
  expect_error(post(R"({"content":""})"), 400, "invalid_request");
  expect_error(post(R"({})"), 400, "invalid_request");
  expect_error(post(R"({"content":"x","client_message_id":""})"), 400, "invalid_request");
  expect_error(post(json{{"content", "x"}, {"client_message_id", std::string(129, 'c')}}.dump()),
               400, "invalid_request");
  expect_error(post(R"({"content":"x"})", {{"Content-Type", "text/plain"}}), 415,
               "unsupported_media_type");
  expect_error(post(json{{"content", std::string(32 * 1024 + 1, 'a')}}.dump()), 413,
               "payload_too_large");
  expect_error(post(json{{"content", "a"}, {"pad", std::string(64 * 1024, 'p')}}.dump()), 413,
               "payload_too_large");
  auto big_ok = post(json{{"content", std::string(32 * 1024 - 10, 'a')}}.dump());
  EXPECT_EQ(big_ok.status, 200) << describe(big_ok);
  expect_error(node.call("GET", "/v1/nothing", alice), 404, "not_found");
  auto wrong = node.call("PUT", "/v1/sessions", alice);
  expect_error(wrong, 405, "method_not_allowed");
  EXPECT_EQ(wrong.header("allow"), "GET, POST");
  // None of the rejected requests stored anything.
  auto s = node.call("GET", "/v1/sessions/" + id, alice).js();
  EXPECT_EQ(s["message_count"], 2);
}

TEST_F(api, one_user_cannot_see_or_touch_another_users_session) {
  auto id = node.create_session(alice);
  ASSERT_EQ(node.post_message(alice, id, {{"content", "secret"}}).status, 200);
  expect_error(node.call("GET", "/v1/sessions/" + id, bob), 404, "not_found");
  expect_error(node.call("GET", "/v1/sessions/" + id + "/messages", bob), 404, "not_found");
  expect_error(node.post_message(bob, id, {{"content", "intrude"}}), 404, "not_found");
  expect_error(node.call("POST", "/v1/sessions/" + id + "/messages/2/feedback", bob,
                         R"({"rating":-1})"),
               404, "not_found");
  expect_error(node.call("DELETE", "/v1/sessions/" + id, bob), 404, "not_found");
  EXPECT_EQ(node.call("GET", "/v1/sessions", bob).js()["data"].size(), 0u);
  auto msgs = node.all_messages(alice, id);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0]["content"], "secret");
  EXPECT_EQ(db.query("SELECT count(*) FROM feedback")[0][0].as<int>(), 0);
}

TEST_F(api, request_ids_and_node_header) {
  auto r = http(node.port(), "GET", "/healthz", "", {{"X-Request-Id", "abc-123"}});
  EXPECT_EQ(r.header("x-request-id"), "abc-123");
  auto g = http(node.port(), "GET", "/healthz");
  EXPECT_EQ(g.header("x-request-id").size(), 16u);
  EXPECT_NE(g.header("x-request-id"), http(node.port(), "GET", "/healthz").header("x-request-id"));
  auto e = node.call("GET", "/v1/sessions/nope", alice, "", {{"X-Request-Id", "err-1"}});
  EXPECT_EQ(e.header("x-request-id"), "err-1");
  EXPECT_EQ(e.header("x-parley-node"), node.node_id());
}

TEST_F(api, streaming_turn_is_server_sent_events_ending_with_done) {
  auto id = node.create_session(alice);
  auto r = node.post_message(alice, id, {{"content", "stream me"}, {"stream", true}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  auto done = r.body.find("event: done\ndata: ");
  ASSERT_NE(done, std::string::npos) << r.body;
  EXPECT_NE(r.body.find("event: delta"), std::string::npos);
  auto payload = r.body.substr(done + 18);
  payload = payload.substr(0, payload.find("\n\n"));
  auto j = json::parse(payload);
  EXPECT_EQ(j["reply"]["content"], expected_reply("stream me"));
  EXPECT_EQ(j["reply"]["seq"], 2);
  EXPECT_EQ(node.all_messages(alice, id).size(), 2u);
  // The deltas, in order, make up the reply; done carries the same body as
  // a non-streaming turn.
  std::string joined;
  for (auto at = r.body.find("event: delta\ndata: "); at != std::string::npos && at < done;
       at = r.body.find("event: delta\ndata: ", at + 1)) {
    auto data = r.body.substr(at + 19);
    joined += json::parse(data.substr(0, data.find("\n\n")))["content"].get<std::string>();
  }
  EXPECT_EQ(joined, expected_reply("stream me"));
  // Keep-alive: the connection serves the next request after a stream.
  http_connection conn{node.port()};
  auto h = headers{{"Authorization", "Bearer " + alice}};
  auto s1 = conn.request("POST", "/v1/sessions/" + id + "/messages",
                         json{{"content", "one more"}, {"stream", true}}.dump(), h);
  ASSERT_EQ(s1.status, 200);
  EXPECT_NE(s1.body.find("event: done"), std::string::npos);
  auto s2 = conn.request("GET", "/v1/sessions/" + id, "", h);
  EXPECT_EQ(s2.status, 200);
  EXPECT_EQ(s2.js()["message_count"], 4);
  // `Accept: text/event-stream` streams a turn that says nothing of it; a
  // body's explicit "stream" wins over the header.
  auto accept = headers{{"Authorization", "Bearer " + alice}, {"Accept", "text/event-stream"}};
  auto by_header = conn.request("POST", "/v1/sessions/" + id + "/messages",
                                json{{"content", "by header"}}.dump(), accept);
  EXPECT_EQ(by_header.header("content-type"), "text/event-stream");
  auto plain = conn.request("POST", "/v1/sessions/" + id + "/messages",
                            json{{"content", "not streamed"}, {"stream", false}}.dump(), accept);
  ASSERT_EQ(plain.status, 200) << describe(plain);
  EXPECT_EQ(plain.header("content-type"), "application/json");
  EXPECT_EQ(plain.js()["reply"]["seq"], 8);
  // Errors known before the turn are plain HTTP errors, not events.
  auto missing = node.post_message(alice, "nope", {{"content", "x"}, {"stream", true}});
  EXPECT_EQ(missing.status, 404);
}

TEST_F(api, metrics_are_prometheus_text_counting_every_answer) {
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(http(node.port(), "GET", "/healthz").status, 200);
  ASSERT_EQ(http(node.port(), "GET", "/nope").status, 404);
  auto r = http(node.port(), "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type").rfind("text/plain", 0), 0u);
  EXPECT_NE(r.body.find("# TYPE parley_http_requests_total counter"), std::string::npos);
  EXPECT_NE(r.body.find("# TYPE parley_http_request_duration_seconds histogram"),
            std::string::npos);
  EXPECT_EQ(node.metric("parley_http_requests_total{code=\"200\",route=\"healthz\"}"), 3);
  EXPECT_EQ(node.metric("parley_http_requests_total{code=\"404\",route=\"not_found\"}"), 1);
  EXPECT_EQ(node.metric("parley_http_request_duration_seconds_count{route=\"healthz\"}"), 3);
  EXPECT_EQ(node.metric("parley_cluster_nodes{status=\"up\"}"), 1);
  EXPECT_EQ(node.metric("parley_rate_limited_total"), 0);
  // A turn: one session actor activated, one group commit.
  auto id = node.create_session(alice);
  ASSERT_EQ(node.post_message(alice, id, {{"content", "count me"}}).status, 200);
  EXPECT_EQ(node.metric("parley_sessions_active"), 1);
  EXPECT_EQ(node.metric("parley_session_activations_total"), 1);
  EXPECT_EQ(node.metric("parley_storage_batch_size_count"), 1);
  EXPECT_EQ(node.metric("parley_storage_batch_size_sum"), 1);
  EXPECT_EQ(node.metric("parley_storage_commit_seconds_count"), 1);
  // Every actor type through the one instrumented entry point.
  auto text = http(node.port(), "GET", "/metrics").body;
  for (auto family : {"parley_actors gauge", "parley_actor_mailbox_depth gauge",
                      "parley_actor_messages_total counter",
                      "parley_actor_processing_seconds histogram",
                      "parley_session_activations_total counter",
                      "parley_storage_batch_size histogram", "parley_cluster_nodes gauge",
                      "parley_http_requests_in_flight gauge"})
    EXPECT_NE(text.find(std::string{"# TYPE "} + family), std::string::npos) << family;
  EXPECT_EQ(node.metric("parley_actors{actor=\"session\"}"), 1);
  EXPECT_GE(node.metric("parley_actor_messages_total{actor=\"session\"}"), 2);
  EXPECT_GE(node.metric("parley_actor_messages_total{actor=\"edge\"}"), 2);
  EXPECT_GE(node.metric("parley_actor_processing_seconds_count{actor=\"storage\"}"), 1);
  EXPECT_NE(text.find("parley_actor_processing_seconds_bucket{actor=\"session\",le=\"+Inf\"}"),
            std::string::npos);
  EXPECT_EQ(node.metric("parley_actor_mailbox_depth{actor=\"session\"}"), 0);
}

TEST(streaming, a_client_leaving_mid_stream_does_not_lose_the_turn) {
  scratch_db db;
  mock_llm mock;
  mock.configure({{"latency_ms", 600}});
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  auto body = json{{"content", "are you still there"}, {"stream", true},
                   {"client_message_id", "left-1"}}
                .dump();
  std::string req = "POST /v1/sessions/" + id + "/messages HTTP/1.1\r\nHost: x\r\n"
                    "Authorization: Bearer " + key + "\r\nContent-Type: application/json\r\n"
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  // The client gives up after 200 ms, long before the model answers.
  raw_exchange(node.port(), req, std::chrono::milliseconds(200));
  // The turn still completes and is stored; a reconnecting client finds it.
  ASSERT_TRUE(wait_for([&] { return node.all_messages(key, id).size() == 2; },
                       std::chrono::seconds(10)));
  auto msgs = node.all_messages(key, id);
  EXPECT_EQ(msgs[1]["content"], "mock: are you still there");
  auto again = node.post_message(key, id, {{"content", "are you still there"},
                                           {"client_message_id", "left-1"}});
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.js()["reply"]["seq"], 2);
  EXPECT_EQ(mock.requests().size(), 1u);
}

// API.md section 3: a key's own budget and model allowlist, given at
// creation and listed (never with a secret); the allowlist holds on the
// gateway, on new sessions and on turns of a session whose model the key
// may not name (the user's other key created it), changing nothing.
TEST_F(api, key_policy_is_created_listed_and_enforced) {
  auto model = expected_model();
  auto made = node.admin("POST", "/admin/v1/api-keys",
                         {{"user", "carol"}, {"token_budget_per_day", 5000}, {"models", {model}}});
  ASSERT_EQ(made.status, 201) << describe(made);
  auto k = made.js();
  EXPECT_EQ(k["user"], "carol");
  EXPECT_EQ(k["token_budget_per_day"], 5000);
  EXPECT_EQ(k["models"], json::array({model}));
  std::string limited = k["api_key"];
  auto open = node.create_key("carol");

  // Listing: newest first, this user's only, no secret; revoked keys show.
  auto listed = node.admin("GET", "/admin/v1/api-keys?user=carol");
  ASSERT_EQ(listed.status, 200) << describe(listed);
  auto data = listed.js()["data"];
  ASSERT_EQ(data.size(), 2u) << listed.body;
  EXPECT_TRUE(data[0]["models"].is_null()) << "the newer key has no allowlist";
  EXPECT_TRUE(data[0]["token_budget_per_day"].is_null());
  EXPECT_EQ(data[1]["prefix"], k["prefix"]);
  EXPECT_EQ(data[1]["models"], json::array({model}));
  EXPECT_EQ(data[1]["revoked"], false);
  EXPECT_FALSE(data[1]["created_at"].get<std::string>().empty());
  EXPECT_EQ(listed.body.find(limited), std::string::npos) << "a listing shows no secret";
  EXPECT_EQ(listed.body.find("api_key\""), std::string::npos);
  auto everyone = node.admin("GET", "/admin/v1/api-keys?limit=1000");
  ASSERT_EQ(everyone.status, 200);
  EXPECT_GE(everyone.js()["data"].size(), 4u) << "alice, bob and carol's two";
  expect_error(node.admin("GET", "/admin/v1/api-keys?limit=0"), 400, "invalid_request");
  expect_error(node.admin("GET", "/admin/v1/api-keys?user="), 400, "invalid_request");
  expect_error(node.call("GET", "/admin/v1/api-keys", alice), 403, "forbidden");
  for (auto bad : {json{{"user", "x"}, {"token_budget_per_day", -1}},
                   json{{"user", "x"}, {"token_budget_per_day", "many"}},
                   json{{"user", "x"}, {"models", json::array()}},
                   json{{"user", "x"}, {"models", {""}}}, json{{"user", "x"}, {"models", {1}}},
                   json{{"user", "x"}, {"models", "gpt"}}})
    expect_error(node.admin("POST", "/admin/v1/api-keys", bad), 400, "invalid_request");

  // The gateway: the allowed model answers, another is 403 naming it.
  auto chat = [&](const std::string& key, const json& body) {
    return node.call("POST", "/v1/chat/completions", key, body.dump());
  };
  json messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_EQ(chat(limited, {{"model", model}, {"messages", messages}}).status, 200);
  EXPECT_EQ(chat(limited, {{"messages", messages}}).status, 200) << "the default model";
  auto refused = chat(limited, {{"model", "gpt-other"}, {"messages", messages}});
  expect_error(refused, 403, "forbidden");
  EXPECT_NE(refused.body.find("gpt-other"), std::string::npos) << refused.body;

  // Sessions: creating one on another model is refused; a session that
  // the user's other key made on another model refuses this key's turns
  // and keeps its history as it was.
  expect_error(node.call("POST", "/v1/sessions", limited, json{{"model", "gpt-other"}}.dump()), 403,
               "forbidden");
  auto mine = node.create_session(limited);
  EXPECT_EQ(node.post_message(limited, mine, {{"content", "fine"}}).status, 200);
  auto other = node.create_session(open, {{"model", "gpt-other"}});
  expect_error(node.post_message(limited, other, {{"content", "not allowed"}}), 403, "forbidden");
  EXPECT_EQ(node.all_messages(open, other).size(), 0u);

  // Revoked keys stay listed, marked.
  ASSERT_EQ(node.admin("DELETE", "/admin/v1/api-keys/" + k["prefix"].get<std::string>()).status,
            204);
  auto after = node.admin("GET", "/admin/v1/api-keys?user=carol").js()["data"];
  EXPECT_EQ(after[1]["revoked"], true) << after.dump();
}

// A node is never half-dead (API.md sections 2 and 8): requests that once
// killed a core actor are answered with a 4xx and change nothing, the
// cluster's figures survive an upstream being configured, a core actor that
// stops takes the process down (non-zero) instead of leaving it half-alive,
// and the probes tell the truth. In the production shape: three nodes, an
// upstream and a fallback, Redis, the cluster view polled.

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include <sys/wait.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/send.hpp>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

std::map<std::string, std::string> production_env(const mock_llm& primary,
                                                  const mock_llm& fallback) {
  std::map<std::string, std::string> env{{"PARLEY_LLM_BASE_URL", primary.base_url()},
                                         {"PARLEY_LLM_FALLBACK_BASE_URL", fallback.base_url()}};
  if (auto* r = std::getenv("PARLEY_TEST_REDIS_URL"); r && *r)
    env["PARLEY_REDIS_URL"] = r;
  return env;
}

/// A raw request with the given target, headers and body (Connection: close).
std::string raw(const std::string& method, const std::string& target, const std::string& headers,
                const std::string& body = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

int status_of(const std::string& reply) {
  if (reply.rfind("HTTP/1.1 ", 0) != 0 || reply.size() < 12)
    return 0;
  return std::atoi(reply.substr(9, 3).c_str());
}

/// Every node serves a turn, is live and ready, and lists all three up.
void expect_whole(parley_cluster& c, const std::string& key, const std::string& after) {
  for (int i = 0; i < c.size(); ++i) {
    auto& n = c[i];
    ASSERT_TRUE(n.process().alive()) << after << ": node " << i << " died\n"
                                     << n.process().log_tail();
    EXPECT_EQ(http(n.port(), "GET", "/healthz").status, 200) << after << " node " << i;
    auto ready = http(n.port(), "GET", "/readyz");
    EXPECT_EQ(ready.status, 200) << after << " node " << i << ": " << ready.body;
    auto s = n.create_session(key);
    auto r = n.post_message(key, s, {{"content", "still there?"}});
    EXPECT_EQ(r.status, 200) << after << " node " << i << ": " << describe(r);
    auto view = n.admin("GET", "/admin/v1/cluster");
    ASSERT_EQ(view.status, 200) << after << " node " << i << ": " << describe(view);
    int up = 0;
    auto members = view.js()["nodes"];
    for (auto& m : members)
      up += m["status"] == "up" ? 1 : 0;
    EXPECT_EQ(up, 3) << after << " node " << i << ": " << view.body;
  }
}

bool log_has(parley_node& n, const std::string& needle) {
  std::ifstream in{n.process().log_path()};
  std::string line;
  while (std::getline(in, line))
    if (line.find(needle) != std::string::npos)
      return true;
  return false;
}

} // namespace

// Issue 13, items 1 and 6: bytes that are not UTF-8 in the path, a header or
// a route id once made the edge actor throw and stop for good (every later
// request 500, /healthz still 200). Each is now a 4xx, and all nodes go on.
TEST(supervision, invalid_bytes_anywhere_get_a_4xx_and_every_actor_lives) {
  scratch_db db;
  mock_llm primary, fallback;
  parley_cluster c{db, 3, production_env(primary, fallback)};
  auto& n = c[0];
  auto key = n.create_key("mallory");
  auto session = n.create_session(key);
  auto turn = n.post_message(key, session, {{"content", "hello"}});
  ASSERT_EQ(turn.status, 200) << describe(turn);
  auto user = "Authorization: Bearer " + key + "\r\n";
  auto admin = "Authorization: Bearer " + n.admin_token() + "\r\n";
  auto json_ct = std::string{"Content-Type: application/json\r\n"};
  std::string body = R"({"content":"hi"})";
  struct bad {
    std::string name, bytes;
  };
  std::vector<bad> cases = {
    {"feedback seq 0xFF",
     raw("POST", "/v1/sessions/" + session + "/messages/\xff/feedback", user + json_ct,
         R"({"rating":1})")},
    {"content type 0xFF",
     raw("POST", "/v1/sessions/" + session + "/messages",
         user + "Content-Type: application/json\xff\r\n", body)},
    {"drain node x0xFF", raw("POST", "/admin/v1/nodes/x\xff/drain", admin)},
    {"session id 0xFF", raw("GET", "/v1/sessions/ab\xff\xfe", user)},
    {"session id 0xFF on a turn", raw("POST", "/v1/sessions/ab\xff/messages", user + json_ct, body)},
    {"unknown route 0xFF", raw("GET", "/v1/\xff\xfe", user)},
    {"query 0xFF", raw("GET", "/v1/sessions?cursor=%FF%FE", user)},
    {"query NUL", raw("GET", "/v1/sessions/" + session + "/messages?after=%00", user)},
    {"X-Request-Id 0xFF",
     raw("POST", "/v1/sessions/" + session + "/messages", user + json_ct + "X-Request-Id: a\xff\r\n",
         body)},
    {"Accept 0xFF",
     raw("POST", "/v1/sessions/" + session + "/messages",
         user + json_ct + "Accept: text/event-stream\xff\r\n", body)},
    {"admin session 0xFF", raw("GET", "/admin/v1/sessions/\xc3\x28", admin)},
  };
  auto before = n.all_messages(key, session).size();
  for (auto& bad : cases) {
    auto reply = raw_exchange(n.port(), bad.bytes, std::chrono::seconds(10));
    auto status = status_of(reply);
    EXPECT_GE(status, 400) << bad.name << ": " << reply.substr(0, 300);
    EXPECT_LT(status, 500) << bad.name << ": " << reply.substr(0, 300);
    EXPECT_NE(reply.find("\"error\""), std::string::npos) << bad.name << ": " << reply;
    // Nothing internal leaks.
    EXPECT_EQ(reply.find("invalid byte sequence"), std::string::npos) << bad.name << ": " << reply;
  }
  EXPECT_EQ(n.all_messages(key, session).size(), before) << "a bad request stored something";
  expect_whole(c, key, "invalid bytes");
  EXPECT_FALSE(log_has(n, "exception in actor handler")) << n.process().log_tail();
}

// Issue 13, item 3: a NUL passed validation, PostgreSQL refused it, and
// each retry cost another model call; elsewhere it was silently cut.
TEST(supervision, nul_in_any_stored_string_is_a_400_without_a_model_call) {
  scratch_db db;
  mock_llm primary, fallback;
  parley_cluster c{db, 3, production_env(primary, fallback)};
  auto& n = c[1];
  auto key = n.create_key("nul");
  auto session = n.create_session(key);
  auto ok = n.post_message(key, session, {{"content", "first"}});
  ASSERT_EQ(ok.status, 200) << describe(ok);
  primary.clear();
  std::string nul{"a\0b", 3};
  auto sessions_before = db.query("SELECT count(*) FROM sessions")[0][0].as<int>();
  auto turn = n.post_message(key, session, {{"content", nul}});
  EXPECT_EQ(turn.status, 400) << describe(turn);
  EXPECT_EQ(turn.code(), "invalid_request");
  auto cmid = n.post_message(key, session, {{"content", "x"}, {"client_message_id", nul}});
  EXPECT_EQ(cmid.status, 400) << describe(cmid);
  for (auto body : {json{{"system_prompt", nul}}, json{{"metadata", {{"k", nul}}}},
                    json{{"metadata", {{nul, 1}}}}, json{{"metadata", {{"a", {nul}}}}}}) {
    auto r = n.call("POST", "/v1/sessions", key, body.dump());
    EXPECT_EQ(r.status, 400) << body.dump() << ": " << describe(r);
    EXPECT_EQ(r.code(), "invalid_request") << body.dump();
  }
  auto reply_seq = ok.js()["reply"]["seq"].get<int>();
  auto fb = n.call("POST", "/v1/sessions/" + session + "/messages/" + std::to_string(reply_seq) +
                             "/feedback",
                   key, json{{"rating", 1}, {"comment", nul}}.dump());
  EXPECT_EQ(fb.status, 400) << describe(fb);
  auto admin_key = n.admin("POST", "/admin/v1/api-keys", {{"user", nul}});
  EXPECT_EQ(admin_key.status, 400) << describe(admin_key);
  EXPECT_EQ(primary.requests().size(), 0u) << "a refused turn called the model";
  EXPECT_EQ(db.query("SELECT count(*) FROM sessions")[0][0].as<int>(), sessions_before);
  EXPECT_EQ(n.all_messages(key, session).size(), 2u);
  expect_whole(c, key, "NUL");
}

// Issue 13, item 2: with an upstream configured, reading the cluster's
// figures made the membership actor of every node throw and stop:
// /admin/v1/cluster answered 503 for good while /readyz stayed ready.
TEST(supervision, cluster_view_with_upstream_figures_keeps_every_node_whole) {
  scratch_db db;
  mock_llm primary, fallback;
  parley_cluster c{db, 3, production_env(primary, fallback)};
  auto key = c[0].create_key("operator");
  for (int i = 0; i < 3; ++i) {
    auto s = c[i].create_session(key);
    ASSERT_EQ(c[i].post_message(key, s, {{"content", "warm"}}).status, 200);
  }
  // An operator with the dashboard open: the view polled on every node.
  for (int round = 0; round < 5; ++round)
    for (int i = 0; i < 3; ++i) {
      auto v = c[i].admin("GET", "/admin/v1/cluster");
      ASSERT_EQ(v.status, 200) << "round " << round << " node " << i << ": " << describe(v);
      auto nodes = v.js()["nodes"];
      ASSERT_EQ(nodes.size(), 3u) << v.body;
      bool upstream_seen = false;
      for (auto& m : nodes)
        if (m.contains("stats") && m["stats"].is_object() && m["stats"].contains("llm"))
          for (auto& u : m["stats"]["llm"])
            upstream_seen |= u["requests"].get<int>() > 0;
      EXPECT_TRUE(upstream_seen) << v.body;
    }
  expect_whole(c, key, "cluster view");
}

// API.md section 8: a core actor that stops anyway takes the process down
// with a non-zero exit, so that its supervisor restarts it; never a live
// process with a dead core. The cluster port is CAF's, so a peer that can
// reach it can send an actor an exit message: the membership actor is
// killed from outside the process here.
TEST(supervision, a_core_actor_that_stops_takes_the_node_down_non_zero) {
  scratch_db db;
  mock_llm primary, fallback;
  auto env = production_env(primary, fallback);
  auto cluster_port = free_port();
  env["PARLEY_CLUSTER_PORT"] = std::to_string(cluster_port);
  parley_node node{db, env};
  auto key = node.create_key("alice");
  auto s = node.create_session(key);
  ASSERT_EQ(node.post_message(key, s, {{"content", "hi"}}).status, 200);
  {
    caf::actor_system_config cfg;
    cfg.load<caf::io::middleman>();
    caf::actor_system sys{cfg};
    auto membership = sys.middleman().remote_actor("127.0.0.1", cluster_port);
    ASSERT_TRUE(membership) << sys.render(membership.error());
    caf::anon_send_exit(*membership, caf::exit_reason::kill);
    // Let the message leave before the system shuts down.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_TRUE(wait_for([&] { return !node.process().alive(); }, std::chrono::seconds(15)))
    << "the node lives on with a dead membership actor\n"
    << node.process().log_tail();
  int status = node.process().terminate(std::chrono::seconds(1));
  EXPECT_EQ(status, 70) << node.process().log_tail();
  EXPECT_TRUE(log_has(node, "core actor stopped unexpectedly")) << node.process().log_tail();
}

// Issue 13: probes and strangers must not load the connections that commit
// turns: /readyz reads the supervisor's last PostgreSQL check, and an
// unknown bearer token is remembered (negatively) instead of looked up on
// every request.
TEST(supervision, readyz_and_unknown_tokens_cost_no_query_each) {
  scratch_db db;
  mock_llm primary, fallback;
  parley_node node{db, production_env(primary, fallback)};
  auto storage_messages = [&] {
    return node.metric("parley_actor_messages_total{actor=\"storage\"}");
  };
  ASSERT_EQ(http(node.port(), "GET", "/readyz").status, 200);
  auto before = storage_messages();
  ASSERT_GE(before, 0);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(http(node.port(), "GET", "/readyz").status, 200);
    auto r = http(node.port(), "GET", "/v1/sessions", "",
                  {{"Authorization", "Bearer not-a-key-of-anyone"}});
    ASSERT_EQ(r.status, 401);
  }
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Storage actors have their own traffic (the supervisor's check once a
  // second, each actor's connection check once a second, one lookup per
  // 2 s of the negative cache): far below one message per request, which
  // is what a query per probe or per unknown token would cost.
  auto allowed = 20 + 8 * seconds;
  EXPECT_LE(storage_messages() - before, allowed)
    << "200 probes and unknown tokens in " << seconds << " s";
}

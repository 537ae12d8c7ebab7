// Secrets (issue 15 items 2 and 6): Redis AUTH against a real `requirepass`
// server started by the test (the password form and the ACL form), what a
// wrong password does, and an admin token read from a file.

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "tests/integration/node_harness.hpp"
#include "tests/support/redis_server.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

std::string readiness_of_redis(const parley_node& node) {
  auto r = http(node.port(), "GET", "/readyz");
  auto j = r.js();
  return j.is_object() ? j["checks"].value("redis", "") : "";
}

std::string auth_url(const redis_server& redis, const std::string& userinfo, int db = 0) {
  return "redis://" + userinfo + "@127.0.0.1:" + std::to_string(redis.port()) + "/" +
         std::to_string(db);
}

/// The whole log of a node (every start).
std::string whole_log(parley_node& node) { return file_tail(node.process().log_path(), 1000000); }

std::string temp_file(const std::string& name, const std::string& content) {
  auto path = log_dir() + "/" + name;
  std::ofstream f{path, std::ios::trunc};
  f << content;
  return path;
}

} // namespace

// Two nodes share one password-protected Redis, one as the default user
// (requirepass), one as an ACL user: the rate limit holds across both, and
// neither password reaches a log.
TEST(secrets, rate_limits_hold_across_nodes_on_a_password_protected_redis) {
  const std::string password = "it-requirepass-Zq8pW3xK";
  const std::string acl_password = "it-acl-password-Hc4tN7vB";
  redis_server redis{password};
  // Without credentials the server answers nothing but NOAUTH.
  auto denied = raw_command("127.0.0.1", redis.port(), {"PING"});
  ASSERT_TRUE(denied);
  ASSERT_EQ(denied->type, REDIS_REPLY_ERROR);
  // The ACL user lives in the server's memory only: made again after a restart.
  auto add_acl_user = [&] {
    auto acl = raw_command("127.0.0.1", redis.port(),
                           {"ACL", "SETUSER", "parley", "on", ">" + acl_password, "~*", "&*",
                            "+@all"},
                           password);
    ASSERT_TRUE(acl);
    ASSERT_NE(acl->type, REDIS_REPLY_ERROR) << std::string{acl->str, acl->len};
  };
  add_acl_user();

  // Two nodes, each with its own form of credentials, on db 3.
  scratch_db db;
  std::vector<std::string> urls{auth_url(redis, ":" + password, 3),
                                auth_url(redis, "parley:" + acl_password, 3)};
  auto p0 = free_port(), p1 = free_port();
  std::string seeds = "127.0.0.1:" + std::to_string(p0) + ",127.0.0.1:" + std::to_string(p1);
  std::vector<std::unique_ptr<parley_node>> nodes;
  for (int i = 0; i < 2; ++i)
    nodes.push_back(std::make_unique<parley_node>(
      db, std::map<std::string, std::string>{
            {"PARLEY_REDIS_URL", urls[static_cast<std::size_t>(i)]},
            {"PARLEY_RATE_LIMIT_PER_MIN", "20"},
            {"PARLEY_NODE_ID", "auth-node-" + std::to_string(i)},
            {"PARLEY_CLUSTER_PORT", std::to_string(i ? p1 : p0)},
            {"PARLEY_SEEDS", seeds},
            {"PARLEY_FAILURE_DETECT_MS", "1500"}}));
  auto& a = *nodes[0];
  auto& b = *nodes[1];
  ASSERT_TRUE(wait_for(
    [&] {
      for (auto* n : {&a, &b}) {
        auto c = n->cluster();
        int up = 0;
        if (c.is_object())
          for (auto& m : c["nodes"])
            up += m.value("status", "") == "up";
        if (up != 2)
          return false;
      }
      return true;
    },
    20s))
    << a.cluster().dump();
  ASSERT_TRUE(wait_for([&] { return readiness_of_redis(a) == "ok"; }, 10s)) << a.process().log_tail();
  ASSERT_TRUE(wait_for([&] { return readiness_of_redis(b) == "ok"; }, 10s)) << b.process().log_tail();

  auto key = a.create_key("alice");
  auto id = a.create_session(key);
  int ok = 0, limited = 0;
  // Node a takes 5 of the 40, node b 35: per-node buckets (20 / 2 live
  // nodes each) would allow 5 + 10 = 15; one shared bucket allows its burst.
  for (int i = 0; i < 40; ++i) {
    auto& node = i % 8 == 0 ? a : b;
    auto r = node.post_message(key, id, {{"content", "m" + std::to_string(i)}});
    if (r.status == 200)
      ++ok;
    else {
      ASSERT_EQ(r.status, 429) << describe(r);
      ++limited;
    }
  }
  std::printf("[ figures  ] 40 quick requests over 2 nodes at 20/min on an AUTH Redis: %d allowed\n",
              ok);
  EXPECT_GE(ok, 19);
  EXPECT_LE(ok, 23);
  EXPECT_EQ(ok + limited, 40);
  // The bucket lives in Redis db 3, reached through AUTH.
  auto keys = raw_command("127.0.0.1", redis.port(), {"EVAL",
                          "redis.call('SELECT', 3) return redis.call('KEYS', 'parley:rl:*')", "0"},
                          password);
  ASSERT_TRUE(keys);
  ASSERT_EQ(keys->type, REDIS_REPLY_ARRAY);
  EXPECT_GE(keys->elements, 1u) << "the shared bucket is in db 3";

  // Every reconnect authenticates again: a Redis restart is survived, by
  // both forms of credentials.
  redis.restart();
  add_acl_user();
  auto bucket_count = [&] {
    auto k = raw_command("127.0.0.1", redis.port(),
                         {"EVAL", "redis.call('SELECT', 3) return redis.call('KEYS', 'parley:rl:*')",
                          "0"},
                         password);
    return k && k->type == REDIS_REPLY_ARRAY ? k->elements : std::size_t{0};
  };
  ASSERT_EQ(bucket_count(), 0u) << "the restarted server starts empty";
  for (auto* node : {&a, &b}) {
    auto k = node->create_key("after-restart");
    auto sid = node->create_session(k);
    auto before = bucket_count();
    ASSERT_TRUE(wait_for(
      [&] {
        node->post_message(k, sid, {{"content", "after restart"}});
        return bucket_count() > before;
      },
      10s))
      << node->node_id() << " is back on Redis after its restart\n"
      << node->process().log_tail();
    EXPECT_TRUE(wait_for([&] { return readiness_of_redis(*node) == "ok"; }, 10s));
  }

  for (auto* node : {&a, &b}) {
    auto log = whole_log(*node);
    EXPECT_FALSE(log.empty());
    EXPECT_EQ(log.find(password), std::string::npos) << "the requirepass password is in the log";
    EXPECT_EQ(log.find(acl_password), std::string::npos) << "the ACL password is in the log";
  }
}

// A wrong password: Redis is reported down, chat goes on with per-node
// limits, and the password is in no log line and no answer.
TEST(secrets, a_wrong_redis_password_reports_redis_down_and_turns_go_on) {
  redis_server redis{"it-right-password-Lm2sQ9"};
  const std::string wrong = "it-wrong-password-Vy6rT1";
  scratch_db db;
  parley_node node{db, {{"PARLEY_REDIS_URL", auth_url(redis, ":" + wrong)},
                        {"PARLEY_RATE_LIMIT_PER_MIN", "600"}}};
  ASSERT_TRUE(wait_for([&] { return readiness_of_redis(node) == "down"; }, 10s))
    << node.process().log_tail();
  auto ready = http(node.port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 200) << "Redis alone never makes a node unready";
  EXPECT_EQ(ready.body.find(wrong), std::string::npos);

  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  for (int i = 0; i < 5; ++i) {
    auto r = node.post_message(key, id, {{"content", "still served " + std::to_string(i)}});
    ASSERT_EQ(r.status, 200) << describe(r);
    EXPECT_EQ(r.body.find(wrong), std::string::npos);
  }
  auto metrics = http(node.port(), "GET", "/metrics");
  EXPECT_EQ(metrics.body.find(wrong), std::string::npos);
  auto cluster = node.admin("GET", "/admin/v1/cluster");
  EXPECT_EQ(cluster.body.find(wrong), std::string::npos);
  // Nothing was written with the wrong password.
  auto keys = raw_command("127.0.0.1", redis.port(), {"KEYS", "*"}, redis.password());
  ASSERT_TRUE(keys);
  EXPECT_EQ(keys->elements, 0u);
  EXPECT_EQ(whole_log(node).find(wrong), std::string::npos) << "the password is in the log";
}

// A URL with credentials that is malformed stops the node with one line that
// names the setting and hides the password.
TEST(secrets, a_bad_redis_url_with_a_password_is_refused_without_showing_it) {
  auto r = run_process(PARLEY_BIN, {},
                       {{"PARLEY_PG_URL", "host=127.0.0.1"},
                        {"PARLEY_ADMIN_TOKEN", std::string(40, 'a')},
                        {"PARLEY_HTTP_PORT", std::to_string(free_port())},
                        {"PARLEY_REDIS_URL", "redis://:it-leaky-password-Qw3@cache:99999/0"}},
                       10s);
  EXPECT_EQ(r.status, 2) << describe(r);
  auto all = r.out + r.err;
  EXPECT_NE(all.find("PARLEY_REDIS_URL"), std::string::npos) << all;
  EXPECT_NE(all.find("port"), std::string::npos) << all;
  EXPECT_EQ(all.find("it-leaky-password"), std::string::npos) << all;
}

// PARLEY_ADMIN_TOKEN_FILE as a Kubernetes or compose secret mount gives it.
TEST(secrets, the_admin_token_can_come_from_a_file) {
  const std::string token = "it-file-admin-token-4f9c2a7e1b3d5f8a0c6e";
  auto path = temp_file("parley-admin-token-" + std::to_string(free_port()), token + "\n");
  scratch_db db;
  parley_node node{db, {{"PARLEY_ADMIN_TOKEN_FILE", path}}};
  ASSERT_EQ(node.admin_token(), token);
  auto r = node.call("GET", "/admin/v1/cluster", token);
  EXPECT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(node.call("GET", "/admin/v1/cluster", token + "x").status, 401);
  EXPECT_EQ(node.call("GET", "/admin/v1/cluster", token.substr(0, 32)).status, 401);
  EXPECT_EQ(node.call("GET", "/admin/v1/cluster", "").status, 401);
  EXPECT_EQ(whole_log(node).find(token), std::string::npos);

  // Both the variable and the file: refused, naming both, showing neither.
  auto both = run_process(PARLEY_BIN, {},
                          {{"PARLEY_PG_URL", db.url()},
                           {"PARLEY_ADMIN_TOKEN", "it-env-admin-token-0123456789abcdef"},
                           {"PARLEY_ADMIN_TOKEN_FILE", path},
                           {"PARLEY_HTTP_PORT", std::to_string(free_port())}},
                          10s);
  EXPECT_EQ(both.status, 2) << describe(both);
  EXPECT_NE(both.err.find("PARLEY_ADMIN_TOKEN and PARLEY_ADMIN_TOKEN_FILE"), std::string::npos)
    << both.err;
  EXPECT_EQ(both.err.find("it-env-admin-token"), std::string::npos);
  EXPECT_EQ(both.err.find(token), std::string::npos);

  // A short token from a file is refused like one from the environment.
  auto short_path = temp_file("parley-short-token-" + std::to_string(free_port()), "short-tok\n");
  auto weak = run_process(PARLEY_BIN, {},
                          {{"PARLEY_PG_URL", db.url()},
                           {"PARLEY_ADMIN_TOKEN_FILE", short_path},
                           {"PARLEY_HTTP_PORT", std::to_string(free_port())}},
                          10s);
  EXPECT_EQ(weak.status, 2) << describe(weak);
  EXPECT_NE(weak.err.find("PARLEY_ADMIN_TOKEN"), std::string::npos) << weak.err;
  EXPECT_NE(weak.err.find("32"), std::string::npos) << weak.err;
  EXPECT_EQ(weak.err.find("short-tok"), std::string::npos) << weak.err;
  std::remove(path.c_str());
  std::remove(short_path.c_str());
}

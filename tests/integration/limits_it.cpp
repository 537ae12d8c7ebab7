// Shared limits against a real Redis: one rate limit for the whole cluster,
// Redis going away and coming back, key revocation across nodes, and load
// shedding of a node with a tiny in-flight cap.

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

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

} // namespace

TEST(limits, three_nodes_share_one_rate_limit_per_key) {
  scratch_db db;
  parley_cluster c{db, 3, {{"PARLEY_REDIS_URL", shared_redis_url()},
                           {"PARLEY_RATE_LIMIT_PER_MIN", "30"}}};
  auto key = c[0].create_key("alice");
  auto id = c[0].create_session(key);
  int ok = 0, limited = 0;
  for (int i = 0; i < 60; ++i) {
    auto r = c[i % 3].post_message(key, id, {{"content", "m" + std::to_string(i)}});
    if (r.status == 200) {
      ++ok;
      EXPECT_EQ(r.header("x-ratelimit-limit"), "30");
      EXPECT_FALSE(r.header("x-ratelimit-remaining").empty());
    } else {
      ASSERT_EQ(r.status, 429) << describe(r);
      EXPECT_EQ(r.code(), "rate_limited");
      EXPECT_GE(std::stoi(r.header("retry-after")), 1);
      EXPECT_EQ(r.header("x-ratelimit-remaining"), "0");
      ++limited;
    }
  }
  std::printf("[ figures  ] 60 quick requests over 3 nodes at 30/min: %d allowed\n", ok);
  EXPECT_GE(ok, 28);
  EXPECT_LE(ok, 35);
  EXPECT_EQ(ok + limited, 60);
  double counted = 0;
  for (int i = 0; i < 3; ++i)
    counted += c[i].metric("parley_rate_limited_total");
  EXPECT_EQ(counted, limited) << "every refusal is counted in parley_rate_limited_total";
  // A refused request stored nothing.
  EXPECT_EQ(c[1].all_messages(key, id).size(), static_cast<std::size_t>(2 * ok));
  // Another key is not affected.
  auto other = c[1].create_key("bob");
  auto bid = c[1].create_session(other);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(c[i].post_message(other, bid, {{"content", "fresh"}}).status, 200);
  EXPECT_EQ(readiness_of_redis(c[2]), "ok");
}

TEST(limits, redis_down_means_per_node_limits_and_back_without_restart) {
  scratch_db db;
  redis_server redis;
  parley_node node{db, {{"PARLEY_REDIS_URL", redis.url()}, {"PARLEY_RATE_LIMIT_PER_MIN", "20"}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  ASSERT_EQ(node.post_message(key, id, {{"content", "with redis"}}).status, 200);
  EXPECT_EQ(readiness_of_redis(node), "ok");

  redis.stop();
  // Ready all the same, and says why limits are per node now.
  ASSERT_TRUE(wait_for([&] { return readiness_of_redis(node) == "down"; }, 5s));
  EXPECT_EQ(http(node.port(), "GET", "/readyz").status, 200);
  // Chat goes on, limited by this node's bucket (20 / 1 live node), and no
  // request waits for the absent Redis.
  int ok = 0, limited = 0;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 30; ++i) {
    auto r = node.post_message(key, id, {{"content", "without " + std::to_string(i)}});
    (r.status == 200 ? ok : limited) += 1;
    if (r.status != 200) {
      EXPECT_EQ(r.code(), "rate_limited") << describe(r);
    }
  }
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ok + limited, 30);
  EXPECT_GE(ok, 18);
  EXPECT_LE(ok, 21);
  EXPECT_LT(took, 10s) << "30 requests must not wait on a dead Redis";

  redis.restart();
  ASSERT_TRUE(wait_for([&] { return readiness_of_redis(node) == "ok"; }, 10s));
  // Back on Redis: a new key's bucket appears there.
  auto key2 = node.create_key("carol");
  auto id2 = node.create_session(key2);
  ASSERT_EQ(node.post_message(key2, id2, {{"content", "redis again"}}).status, 200);
  auto keys = raw_command("127.0.0.1", redis.port(), {"KEYS", "parley:rl:*"});
  ASSERT_TRUE(keys);
  EXPECT_GE(keys->elements, 1u) << "the limit is counted in Redis again";
}

TEST(limits, a_key_revoked_on_one_node_stops_working_on_the_others) {
  scratch_db db;
  parley_cluster c{db, 2, {{"PARLEY_REDIS_URL", shared_redis_url()}}};
  auto key = c[0].create_key("alice");
  auto id = c[0].create_session(key);
  // node-1 has the key in its cache.
  ASSERT_EQ(c[1].call("GET", "/v1/sessions/" + id, key).status, 200);
  auto prefix = key.substr(0, 11);
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(c[0].admin("DELETE", "/admin/v1/api-keys/" + prefix).status, 204);
  ASSERT_TRUE(wait_for([&] { return c[1].call("GET", "/v1/sessions/" + id, key).status == 401; },
                       5s));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - start)
              .count();
  std::printf("[ figures  ] revocation seen on the other node after %lld ms\n",
              static_cast<long long>(ms));
  auto r = c[1].post_message(key, id, {{"content", "after revoke"}});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.code(), "unauthorized");
}

TEST(limits, a_node_over_its_inflight_cap_sheds_load_at_once) {
  scratch_db db;
  mock_llm mock;
  mock.configure({{"latency_ms", 800}});
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()}, {"PARLEY_MAX_INFLIGHT", "2"}}};
  auto key = node.create_key("alice");
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i)
    ids.push_back(node.create_session(key));
  std::vector<http_result> results(8);
  std::vector<std::chrono::milliseconds> took(8);
  std::vector<std::thread> ts;
  for (int i = 0; i < 8; ++i)
    ts.emplace_back([&, i] {
      auto start = std::chrono::steady_clock::now();
      results[static_cast<std::size_t>(i)] =
        node.post_message(key, ids[static_cast<std::size_t>(i)], {{"content", "x"}});
      took[static_cast<std::size_t>(i)] = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    });
  for (auto& t : ts)
    t.join();
  int ok = 0, shed = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    auto& r = results[i];
    if (r.status == 200)
      ++ok;
    else {
      ASSERT_EQ(r.status, 503) << describe(r);
      EXPECT_EQ(r.code(), "overloaded");
      EXPECT_FALSE(r.header("retry-after").empty());
      EXPECT_LT(took[i], 700ms) << "shedding answers before any model call could finish";
      ++shed;
    }
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(shed, 1);
  EXPECT_EQ(node.metric("parley_load_shed_total{reason=\"overloaded\"}"), shed);
  EXPECT_EQ(node.metric("parley_http_requests_total{code=\"503\",route=\"post_message\"}"),
            shed);
  EXPECT_EQ(static_cast<int>(mock.requests().size()), ok) << "a shed turn never reached the model";
}

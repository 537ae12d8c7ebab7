#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "runtime/config.hpp"

using namespace parley;

namespace {

settings base() { return {{"PARLEY_PG_URL", "host=x"}, {"PARLEY_ADMIN_TOKEN", "t"}}; }

} // namespace

TEST(config, defaults_follow_the_contract) {
  node_config c;
  std::string err;
  ASSERT_TRUE(make_config({}, base(), "h", c, err)) << err;
  EXPECT_EQ(c.http_host, "127.0.0.1");
  EXPECT_EQ(c.http_port, 8080);
  EXPECT_EQ(c.cluster_port, 4242);
  EXPECT_EQ(c.node_id, "node-h-8080");
  EXPECT_EQ(c.llm_timeout.count(), 60000);
  EXPECT_EQ(c.rate_limit_per_min, 600);
  EXPECT_EQ(c.context_messages, 20u);
  EXPECT_EQ(c.session_idle.count(), 300);
  EXPECT_EQ(c.failure_detect.count(), 3000);
  EXPECT_EQ(c.pg_timeout.count(), 5000);
  EXPECT_EQ(c.session_queue_limit, 32u);
  EXPECT_EQ(c.log_level, log::level::info);
  EXPECT_TRUE(c.access_log);
}

// API.md section 1: PARLEY_LLM_POOL_SIZE defaults to as many connections as
// turns may be in flight, so the pool never caps throughput below
// PARLEY_MAX_INFLIGHT; an explicit value still wins.
TEST(config, the_llm_pool_follows_max_inflight_unless_set) {
  node_config c;
  std::string err;
  ASSERT_TRUE(make_config({}, base(), "h", c, err)) << err;
  EXPECT_EQ(c.max_inflight, 10000u);
  EXPECT_EQ(c.llm_pool_size, 10000u);

  auto env = base();
  env["PARLEY_MAX_INFLIGHT"] = "250";
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(c.llm_pool_size, 250u);

  settings file{{"PARLEY_MAX_INFLIGHT", "300"}};
  ASSERT_TRUE(make_config(file, base(), "h", c, err)) << err;
  EXPECT_EQ(c.llm_pool_size, 300u) << "the max-inflight of the file counts too";

  env["PARLEY_LLM_POOL_SIZE"] = "32";
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(c.llm_pool_size, 32u);
  EXPECT_EQ(c.max_inflight, 250u);

  file["PARLEY_LLM_POOL_SIZE"] = "16";
  ASSERT_TRUE(make_config(file, base(), "h", c, err)) << err;
  EXPECT_EQ(c.llm_pool_size, 16u);

  env["PARLEY_LLM_POOL_SIZE"] = "0";
  EXPECT_FALSE(make_config({}, env, "h", c, err));
  EXPECT_EQ(err.rfind("PARLEY_LLM_POOL_SIZE", 0), 0u) << err;
}

TEST(config, descriptors_needed_count_client_connections_and_both_pools) {
  node_config c;
  std::string err;
  ASSERT_TRUE(make_config({}, base(), "h", c, err)) << err;
  auto echo = descriptors_needed(c); // no upstream: no pool
  EXPECT_GE(echo, c.max_connections + c.pg_pool);
  auto env = base();
  env["PARLEY_LLM_BASE_URL"] = "http://127.0.0.1:9000/v1";
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(descriptors_needed(c), echo + 10000);
  env["PARLEY_LLM_FALLBACK_BASE_URL"] = "http://127.0.0.1:9001/v1";
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(descriptors_needed(c), echo + 20000) << "each upstream has its own pool";
}

TEST(config, log_level_and_access_log) {
  struct tc {
    const char* level_name;
    log::level lv;
    const char* access_name;
    bool access;
  } cases[] = {{"warn", log::level::warn, "0", false}, {"debug", log::level::debug, "1", true}};
  for (auto& t : cases) {
    auto env = base();
    env["PARLEY_LOG_LEVEL"] = t.level_name;
    env["PARLEY_ACCESS_LOG"] = t.access_name;
    node_config c;
    std::string err;
    ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
    EXPECT_EQ(c.log_level, t.lv);
    EXPECT_EQ(c.access_log, t.access);
  }
}

TEST(config, environment_wins_over_the_file) {
  node_config c;
  std::string err;
  settings file = base();
  file["PARLEY_HTTP_PORT"] = "9000";
  file["PARLEY_NODE_ID"] = "from-file";
  settings env{{"PARLEY_HTTP_PORT", "9100"}};
  ASSERT_TRUE(make_config(file, env, "h", c, err)) << err;
  EXPECT_EQ(c.http_port, 9100);
  EXPECT_EQ(c.node_id, "from-file");
}

TEST(config, errors_name_the_bad_setting) {
  struct tc {
    const char* key;
    const char* value;
  } cases[] = {{"PARLEY_HTTP_PORT", "abc"},         {"PARLEY_HTTP_PORT", "70000"},
               {"PARLEY_CONTEXT_MESSAGES", "0"},    {"PARLEY_SEEDS", "hostonly"},
               {"PARLEY_REDIS_URL", "http://x"},    {"PARLEY_LLM_TIMEOUT_MS", "-5"},
               {"PARLEY_DEV", "maybe"},             {"PARLEY_LOG_LEVEL", "loud"},
               {"PARLEY_ACTOR_METRICS", "2"},       {"PARLEY_ACTOR_SCHEDULER", "fast"},
               {"PARLEY_LOG_LEVEL", "INFO"},        {"PARLEY_ACCESS_LOG", "2"},
               {"PARLEY_ACCESS_LOG", "on"},         {"PARLEY_PG_TIMEOUT_MS", "999"},
               {"PARLEY_PG_TIMEOUT_MS", "5s"}};
  for (auto& t : cases) {
    auto env = base();
    env[t.key] = t.value;
    node_config c;
    std::string err;
    EXPECT_FALSE(make_config({}, env, "h", c, err)) << t.key;
    EXPECT_EQ(err.rfind(t.key, 0), 0u) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos);
  }
  node_config c;
  std::string err;
  EXPECT_FALSE(make_config({}, {{"PARLEY_ADMIN_TOKEN", "t"}}, "h", c, err));
  EXPECT_EQ(err.rfind("PARLEY_PG_URL", 0), 0u);
  EXPECT_FALSE(make_config({}, {{"PARLEY_PG_URL", "x"}}, "h", c, err));
  EXPECT_EQ(err.rfind("PARLEY_ADMIN_TOKEN", 0), 0u);
  EXPECT_TRUE(make_config({}, {{"PARLEY_PG_URL", "x"}, {"PARLEY_DEV", "1"}}, "h", c, err));
}

// API.md section 1: mutual TLS on the cluster port takes all three
// PARLEY_CLUSTER_TLS_* settings or none; one or two is an error naming the
// missing ones, never a silent plain port. (The files themselves are
// checked in tests/integration/cluster_tls_it.cpp, with real PEMs.)
TEST(config, cluster_tls_takes_all_three_settings_or_none) {
  const std::vector<std::string> names{"PARLEY_CLUSTER_TLS_CERT", "PARLEY_CLUSTER_TLS_KEY",
                                       "PARLEY_CLUSTER_TLS_CA"};
  node_config c;
  std::string err;
  ASSERT_TRUE(make_config({}, base(), "h", c, err)) << err;
  EXPECT_FALSE(c.cluster_tls());
  auto empty = base();
  for (auto& n : names)
    empty[n] = "";
  ASSERT_TRUE(make_config({}, empty, "h", c, err)) << err;
  EXPECT_FALSE(c.cluster_tls()) << "empty values count as unset";

  for (unsigned mask = 1; mask < 7; ++mask) {
    auto env = base();
    std::vector<std::string> missing;
    for (unsigned i = 0; i < 3; ++i)
      if (mask & (1u << i))
        env[names[i]] = "/nonexistent/parley.pem";
      else
        missing.push_back(names[i]);
    EXPECT_FALSE(make_config({}, env, "h", c, err)) << mask;
    EXPECT_EQ(err.rfind(missing.front(), 0), 0u) << err;
    for (auto& m : missing)
      EXPECT_NE(err.find(m), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos);
  }
  // All three set: the files are read at once (here from the config file).
  settings file;
  for (auto& n : names)
    file[n] = "/nonexistent/parley.pem";
  EXPECT_FALSE(make_config(file, base(), "h", c, err));
  EXPECT_EQ(err, "PARLEY_CLUSTER_TLS_CERT: cannot read '/nonexistent/parley.pem'");
}

TEST(config, file_format_and_unknown_keys) {
  auto path = std::string{::testing::TempDir()} + "parley-config-test.env";
  {
    std::ofstream f{path};
    f << "# comment\n\nexport PARLEY_HTTP_PORT=9001\nPARLEY_PG_URL=\"host=a port=1\"\n";
  }
  settings s;
  std::string err;
  ASSERT_TRUE(read_config_file(path, s, err)) << err;
  EXPECT_EQ(s["PARLEY_HTTP_PORT"], "9001");
  EXPECT_EQ(s["PARLEY_PG_URL"], "host=a port=1");
  {
    std::ofstream f{path};
    f << "PARLEY_HTTP_PORTT=1\n";
  }
  EXPECT_FALSE(read_config_file(path, s, err));
  EXPECT_NE(err.find("PARLEY_HTTP_PORTT"), std::string::npos);
  std::remove(path.c_str());
}

TEST(config, the_shipped_examples_use_only_known_settings) {
  std::string err;
  for (auto name : {"single-node", "node-1", "node-2", "node-3"}) {
    settings file;
    EXPECT_TRUE(read_config_file(PARLEY_SOURCE_DIR "/cluster-config/" + std::string{name} + ".env",
                                 file, err))
      << err;
  }
}

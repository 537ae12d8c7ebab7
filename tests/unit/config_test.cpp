#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <vector>

#include "runtime/config.hpp"

using namespace parley;

namespace {

const std::string long_token = "0123456789abcdef0123456789abcdef"; // 32 characters

settings base() { return {{"PARLEY_PG_URL", "host=x"}, {"PARLEY_ADMIN_TOKEN", long_token}}; }

/// A file under the test's temporary directory holding `content`.
std::string secret_file(const std::string& name, const std::string& content) {
  auto path = std::string{::testing::TempDir()} + "parley-config-test-" + name;
  std::ofstream f{path, std::ios::binary | std::ios::trunc};
  f << content;
  return path;
}

/// make_config's error for `env` (empty when it succeeds).
std::string error_of(const settings& env, const settings& file = {}) {
  node_config c;
  std::string err;
  return make_config(file, env, "h", c, err) ? std::string{} : err;
}

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
  EXPECT_EQ(c.max_connections_per_ip, 1000u);
  EXPECT_EQ(c.auth_failures_per_min, 60);
}

// Issue 15: the per-address bounds take 0 for "off" and refuse nonsense.
TEST(config, per_address_bounds) {
  node_config c;
  std::string err;
  auto env = base();
  env["PARLEY_MAX_CONNECTIONS_PER_IP"] = "0";
  env["PARLEY_AUTH_FAILURES_PER_MIN"] = "0";
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(c.max_connections_per_ip, 0u);
  EXPECT_EQ(c.auth_failures_per_min, 0);
  for (const char* key : {"PARLEY_MAX_CONNECTIONS_PER_IP", "PARLEY_AUTH_FAILURES_PER_MIN"}) {
    auto bad = base();
    bad[key] = "-1";
    EXPECT_FALSE(make_config({}, bad, "h", c, err)) << key;
    EXPECT_NE(err.find(key), std::string::npos) << err;
  }
}

// API.md section 1: PARLEY_TOKEN_BUDGET_PER_DAY, 0 (unlimited) by default,
// a whole number of tokens otherwise, listed among the settings.
TEST(config, token_budget_per_day) {
  node_config c;
  std::string err;
  ASSERT_TRUE(make_config({}, base(), "h", c, err)) << err;
  EXPECT_EQ(c.token_budget_per_day, 0);
  auto env = base();
  env["PARLEY_TOKEN_BUDGET_PER_DAY"] = "250000";
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(c.token_budget_per_day, 250000);
  for (const char* bad_value : {"-1", "1e6", "lots"}) {
    auto bad = base();
    bad["PARLEY_TOKEN_BUDGET_PER_DAY"] = bad_value;
    EXPECT_FALSE(make_config({}, bad, "h", c, err)) << bad_value;
    EXPECT_NE(err.find("PARLEY_TOKEN_BUDGET_PER_DAY"), std::string::npos) << err;
  }
  auto& names = known_settings();
  EXPECT_NE(std::find(names.begin(), names.end(), "PARLEY_TOKEN_BUDGET_PER_DAY"), names.end());
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
               {"PARLEY_PG_TIMEOUT_MS", "5s"},      {"PARLEY_PG_URL", "host=h sslmod=require"},
               {"PARLEY_PG_URL", "postgresql://u:pw@h/x?ssl_mode=x"}};
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
  EXPECT_FALSE(make_config({}, {{"PARLEY_ADMIN_TOKEN", long_token}}, "h", c, err));
  EXPECT_EQ(err.rfind("PARLEY_PG_URL", 0), 0u);
  EXPECT_FALSE(make_config({}, {{"PARLEY_PG_URL", "host=x"}}, "h", c, err));
  EXPECT_EQ(err.rfind("PARLEY_ADMIN_TOKEN", 0), 0u);
  EXPECT_TRUE(make_config({}, {{"PARLEY_PG_URL", "host=x"}, {"PARLEY_DEV", "1"}}, "h", c, err));
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

// Issue 15 item 6: secrets as container platforms mount them.
TEST(config, secrets_come_from_files) {
  auto token = secret_file("token", std::string(40, 'k') + "\n");
  auto pg = secret_file("pg", "postgresql://parley:pw@db:5432/parley?sslmode=verify-full\r\n");
  auto redis = secret_file("redis", "redis://:s3cret@cache:6379/2");
  auto key = secret_file("llm", "sk-upstream-key \n\n");
  settings env{{"PARLEY_ADMIN_TOKEN_FILE", token},
               {"PARLEY_PG_URL_FILE", pg},
               {"PARLEY_REDIS_URL_FILE", redis},
               {"PARLEY_LLM_API_KEY_FILE", key}};
  node_config c;
  std::string err;
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(c.admin_token, std::string(40, 'k')) << "the trailing line break is dropped";
  EXPECT_EQ(c.pg_url, "postgresql://parley:pw@db:5432/parley?sslmode=verify-full");
  EXPECT_EQ(c.redis_url, "redis://:s3cret@cache:6379/2");
  EXPECT_EQ(c.llm_api_key, "sk-upstream-key");

  // The config file may name the files too.
  ASSERT_TRUE(make_config(env, {}, "h", c, err)) << err;
  EXPECT_EQ(c.admin_token, std::string(40, 'k'));

  // An empty VAR beside VAR_FILE does not count as set.
  env["PARLEY_ADMIN_TOKEN"] = "";
  ASSERT_TRUE(make_config({}, env, "h", c, err)) << err;
  EXPECT_EQ(c.admin_token, std::string(40, 'k'));
  // Every _FILE name is a known setting (accepted by --config, checked by
  // the deploy checks).
  for (auto& name : secret_settings()) {
    auto& all = known_settings();
    EXPECT_NE(std::find(all.begin(), all.end(), name + "_FILE"), all.end()) << name;
  }
}

TEST(config, a_secret_set_twice_or_from_a_bad_file_is_refused_without_showing_it) {
  auto token = secret_file("token2", std::string(40, 'k'));
  for (auto& name : secret_settings()) {
    auto env = base();
    env[name] = name == "PARLEY_REDIS_URL" ? "redis://:from-env-secret@h" : "from-env-secret-" + long_token;
    env[name + "_FILE"] = token;
    auto err = error_of(env);
    EXPECT_EQ(err.rfind(name + " and " + name + "_FILE", 0), 0u) << err;
    EXPECT_NE(err.find("both"), std::string::npos) << err;
    EXPECT_EQ(err.find("from-env-secret"), std::string::npos) << err;
    EXPECT_EQ(err.find("kkkk"), std::string::npos) << err;
  }
  // The environment's pair wins over the file's: no conflict across sources.
  auto env = base();
  env.erase("PARLEY_ADMIN_TOKEN");
  env["PARLEY_ADMIN_TOKEN_FILE"] = token;
  node_config c;
  std::string err;
  ASSERT_TRUE(make_config({{"PARLEY_ADMIN_TOKEN", "file-token-" + long_token}}, env, "h", c, err))
    << err;
  EXPECT_EQ(c.admin_token, std::string(40, 'k'));
  ASSERT_TRUE(make_config({{"PARLEY_ADMIN_TOKEN_FILE", token}}, base(), "h", c, err)) << err;
  EXPECT_EQ(c.admin_token, long_token);

  auto missing = base();
  missing.erase("PARLEY_ADMIN_TOKEN");
  missing["PARLEY_ADMIN_TOKEN_FILE"] = "/nonexistent/parley/token";
  err = error_of(missing);
  EXPECT_EQ(err.rfind("PARLEY_ADMIN_TOKEN_FILE: cannot read '/nonexistent/parley/token'", 0), 0u)
    << err;
  missing["PARLEY_ADMIN_TOKEN_FILE"] = secret_file("empty", " \n");
  EXPECT_NE(error_of(missing).find("is empty"), std::string::npos);
  missing["PARLEY_ADMIN_TOKEN_FILE"] = secret_file("two-lines", long_token + "\n" + long_token);
  err = error_of(missing);
  EXPECT_NE(err.find("more than one line"), std::string::npos) << err;
  EXPECT_EQ(err.find(long_token), std::string::npos) << err;
  missing["PARLEY_ADMIN_TOKEN_FILE"] = secret_file("huge", std::string(70000, 'x'));
  EXPECT_NE(error_of(missing).find("larger than"), std::string::npos);

  auto pg = base();
  pg.erase("PARLEY_PG_URL");
  pg["PARLEY_PG_URL_FILE"] = "/nonexistent/pg";
  EXPECT_EQ(error_of(pg).rfind("PARLEY_PG_URL_FILE", 0), 0u);
}

TEST(config, a_short_or_placeholder_admin_token_is_refused_outside_dev_mode) {
  auto env = base();
  env["PARLEY_ADMIN_TOKEN"] = std::string(31, 'a');
  auto err = error_of(env);
  EXPECT_EQ(err.rfind("PARLEY_ADMIN_TOKEN", 0), 0u) << err;
  EXPECT_NE(err.find("32"), std::string::npos) << err;
  EXPECT_EQ(err.find(std::string(31, 'a')), std::string::npos) << "the token is not shown";
  env["PARLEY_ADMIN_TOKEN"] = std::string(32, 'a');
  EXPECT_EQ(error_of(env), "");

  // deploy/k8s/secret.yaml's placeholder, read from the file itself.
  std::ifstream in{PARLEY_SOURCE_DIR "/deploy/k8s/secret.yaml"};
  std::string line, placeholder;
  while (std::getline(in, line))
    if (auto pos = line.find("PARLEY_ADMIN_TOKEN:"); pos != std::string::npos) {
      auto q1 = line.find('"', pos);
      auto q2 = line.find('"', q1 + 1);
      placeholder = line.substr(q1 + 1, q2 - q1 - 1);
    }
  ASSERT_FALSE(placeholder.empty());
  env["PARLEY_ADMIN_TOKEN"] = placeholder;
  err = error_of(env);
  EXPECT_EQ(err.rfind("PARLEY_ADMIN_TOKEN", 0), 0u) << "'" << placeholder << "' was accepted";
  EXPECT_EQ(err.find(placeholder), std::string::npos) << err;
  env["PARLEY_ADMIN_TOKEN"] = "CHANGEME-" + long_token;
  EXPECT_NE(error_of(env), "");

  // Development mode takes any token (and generates one when none is set).
  env["PARLEY_DEV"] = "1";
  env["PARLEY_ADMIN_TOKEN"] = "t";
  EXPECT_EQ(error_of(env), "");
  env["PARLEY_ADMIN_TOKEN"] = placeholder;
  EXPECT_EQ(error_of(env), "");
}

TEST(config, a_redis_password_never_appears_in_the_error) {
  auto env = base();
  env["PARLEY_REDIS_URL"] = "redis://:hunter2-secret@cache:99999";
  auto err = error_of(env);
  EXPECT_EQ(err.rfind("PARLEY_REDIS_URL", 0), 0u) << err;
  EXPECT_EQ(err.find("hunter2"), std::string::npos) << err;
  env["PARLEY_REDIS_URL"] = "redis://parley:hunter2-secret@cache:6380/1";
  EXPECT_EQ(error_of(env), "");
}

// A real node's stderr: one JSON object per line, an access line per
// answered request (without the query string), PARLEY_LOG_LEVEL and
// PARLEY_ACCESS_LOG, and the fatal errors of bad values.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

/// Long enough for a node outside development mode (at least 32 characters).
const std::string long_admin_token = "logs-test-admin-token-0123456789abcdef";

/// Every line of a node's log file, parsed; a line that is not a JSON
/// object fails the test.
std::vector<json> log_objects(const std::string& path) {
  std::istringstream in{file_tail(path, 1000000)};
  std::vector<json> out;
  std::string l;
  while (std::getline(in, l)) {
    auto j = json::parse(l, nullptr, false);
    EXPECT_TRUE(j.is_object()) << "not a JSON object: " << l;
    if (j.is_object())
      out.push_back(std::move(j));
  }
  return out;
}

std::vector<json> access_lines(const std::vector<json>& lines) {
  std::vector<json> out;
  for (auto& j : lines)
    if (j.value("msg", "") == "access")
      out.push_back(j);
  return out;
}

/// The one access line of `request_id` (null when there is none or several).
json access_line_of(const std::vector<json>& lines, const std::string& request_id) {
  json found;
  int n = 0;
  for (auto& j : access_lines(lines))
    if (j.value("request_id", "") == request_id) {
      found = j;
      ++n;
    }
  EXPECT_EQ(n, 1) << "access lines of " << request_id;
  return n == 1 ? found : json{};
}

/// The log lines of a node run with `env` that answered a turn and a 404,
/// then stopped.
std::vector<json> lines_of_a_short_run(const std::map<std::string, std::string>& env) {
  scratch_db db;
  parley_node node{db, env};
  auto key = node.create_key("alice");
  auto session = node.create_session(key);
  EXPECT_EQ(node.post_message(key, session, {{"content", "hi"}}).status, 200);
  EXPECT_EQ(http(node.port(), "GET", "/no/such/route").status, 404);
  EXPECT_EQ(node.stop(), 0);
  return log_objects(node.process().log_path());
}

/// Runs `parley` with `env` until it exits (bounded); its exit status.
int exit_status_of(const std::map<std::string, std::string>& env, const std::string& log_path) {
  child_process p{PARLEY_BIN, {}, env, log_path};
  wait_for([&] { return !p.alive(); }, 10s);
  return p.terminate(1s);
}

} // namespace

TEST(logs, every_line_is_json_and_each_answer_has_an_access_line) {
  scratch_db db;
  parley_node node{db};
  auto key = node.create_key("alice");
  auto session = node.create_session(key);
  auto turn = node.call("POST", "/v1/sessions/" + session + "/messages", key,
                        json{{"content", "hello \"log\"\n"}}.dump(), {{"X-Request-Id", "it-turn"}});
  ASSERT_EQ(turn.status, 200) << describe(turn);
  auto streamed =
    node.call("POST", "/v1/sessions/" + session + "/messages", key,
              json{{"content", "streamed"}, {"stream", true}}.dump(), {{"X-Request-Id", "it-sse"}});
  ASSERT_EQ(streamed.status, 200) << describe(streamed);
  ASSERT_NE(streamed.body.find("event: done"), std::string::npos) << streamed.body;
  auto missing = http(node.port(), "GET", "/no/such/route", "", {{"X-Request-Id", "it-404"}});
  ASSERT_EQ(missing.status, 404);
  const auto& token = node.admin_token();
  auto dashboard =
    http(node.port(), "GET", "/dashboard?token=" + token, "", {{"X-Request-Id", "it-dash"}});
  auto health =
    http(node.port(), "GET", "/healthz?x=1&token=" + token, "", {{"X-Request-Id", "it-health"}});
  ASSERT_EQ(health.status, 200);

  EXPECT_EQ(node.metric("parley_log_dropped_total"), 0);
  // Lines reach stderr while the node runs, not only when it stops.
  auto path = node.process().log_path();
  EXPECT_TRUE(
    wait_for([&] { return file_tail(path, 50).find("\"it-health\"") != std::string::npos; }, 10s))
    << file_tail(path);
  ASSERT_EQ(node.stop(), 0);

  auto lines = log_objects(path);
  const std::regex time_format{R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"};
  bool listening = false;
  for (auto& j : lines) {
    EXPECT_TRUE(std::regex_match(j.value("time", ""), time_format)) << j;
    EXPECT_EQ(j.value("node", ""), node.node_id()) << j;
    EXPECT_TRUE(j["level"] == "info" || j["level"] == "warn" || j["level"] == "error") << j;
    EXPECT_TRUE(j["msg"].is_string()) << j;
    listening = listening || j["msg"].get<std::string>().find("listening") != std::string::npos;
  }
  EXPECT_TRUE(listening);
  for (auto& j : access_lines(lines)) {
    EXPECT_EQ(j["level"], "info") << j;
    for (auto field : {"request_id", "method", "path", "route"})
      EXPECT_TRUE(j[field].is_string()) << field << " in " << j;
    for (auto field : {"status", "bytes"})
      EXPECT_TRUE(j[field].is_number_integer()) << field << " in " << j;
    EXPECT_TRUE(j["latency_ms"].is_number() && j["latency_ms"] >= 0) << j;
    EXPECT_EQ(j["path"].get<std::string>().find('?'), std::string::npos) << j;
  }

  auto t = access_line_of(lines, "it-turn");
  EXPECT_EQ(t["method"], "POST");
  EXPECT_EQ(t["path"], "/v1/sessions/" + session + "/messages");
  EXPECT_EQ(t["route"], "post_message");
  EXPECT_EQ(t["status"], 200);
  EXPECT_EQ(t["session"], session);
  EXPECT_EQ(t["bytes"], turn.body.size());

  // A streamed turn is logged once, when it ends, with every body byte.
  auto s = access_line_of(lines, "it-sse");
  EXPECT_EQ(s["route"], "post_message");
  EXPECT_EQ(s["status"], 200);
  EXPECT_EQ(s["session"], session);
  EXPECT_EQ(s["bytes"], streamed.body.size());

  auto m = access_line_of(lines, "it-404");
  EXPECT_EQ(m["route"], "not_found");
  EXPECT_EQ(m["status"], 404);
  EXPECT_EQ(m["path"], "/no/such/route");
  EXPECT_FALSE(m.contains("session")) << m;

  auto d = access_line_of(lines, "it-dash");
  EXPECT_EQ(d["path"], "/dashboard");
  EXPECT_EQ(d["status"], dashboard.status);
  auto h = access_line_of(lines, "it-health");
  EXPECT_EQ(h["path"], "/healthz");
  EXPECT_EQ(h["route"], "healthz");

  // The ?token= query never reaches the log, nor does the admin token.
  EXPECT_EQ(file_tail(path, 1000000).find(node.admin_token()), std::string::npos);
}

TEST(logs, level_warn_drops_info_lines_and_keeps_warnings) {
  for (auto& j : lines_of_a_short_run({{"PARLEY_LOG_LEVEL", "warn"}})) {
    EXPECT_TRUE(j["level"] == "warn" || j["level"] == "error") << j;
    EXPECT_NE(j["msg"], "access") << j;
  }

  // Warnings still come: development mode and a PostgreSQL that is not up.
  auto path = fresh_log("parley-warn-" + std::to_string(free_port()) + ".log");
  child_process waiting{PARLEY_BIN,
                        {},
                        {{"PARLEY_PG_URL", "host=127.0.0.1 port=" + std::to_string(free_port()) +
                                             " user=postgres dbname=postgres connect_timeout=2"},
                         {"PARLEY_HTTP_PORT", std::to_string(free_port())},
                         {"PARLEY_CLUSTER_PORT", std::to_string(free_port())},
                         {"PARLEY_DEV", "1"},
                         {"PARLEY_ADMIN_TOKEN", ""},
                         {"PARLEY_LOG_LEVEL", "warn"}},
                        path};
  EXPECT_TRUE(wait_for(
    [&] { return file_tail(path).find("waiting for PostgreSQL") != std::string::npos; }, 15s))
    << file_tail(path);
  waiting.kill9();
  auto lines = log_objects(path);
  ASSERT_EQ(lines.size(), 2u) << file_tail(path);
  EXPECT_EQ(lines[0]["msg"], "development mode: generated an admin token");
  EXPECT_EQ(lines[1]["msg"], "waiting for PostgreSQL");
  for (auto& j : lines)
    EXPECT_EQ(j["level"], "warn") << j;
}

TEST(logs, access_log_off_writes_no_access_lines) {
  auto lines = lines_of_a_short_run({{"PARLEY_ACCESS_LOG", "0"}});
  EXPECT_TRUE(access_lines(lines).empty());
  bool stopped = false;
  for (auto& j : lines)
    stopped = stopped || j["msg"] == "stopped";
  EXPECT_TRUE(stopped) << "other info lines still come";
}

TEST(logs, bad_log_settings_stop_the_node_with_one_line_naming_them) {
  for (auto [name, value] :
       {std::pair{"PARLEY_LOG_LEVEL", "loud"}, std::pair{"PARLEY_LOG_LEVEL", "WARN"},
        std::pair{"PARLEY_ACCESS_LOG", "2"}}) {
    auto path = fresh_log("parley-bad-" + std::to_string(free_port()) + ".log");
    auto status = exit_status_of({{"PARLEY_PG_URL", "host=127.0.0.1"},
                                  {"PARLEY_ADMIN_TOKEN", long_admin_token},
                                  {"PARLEY_HTTP_PORT", std::to_string(free_port())},
                                  {name, value}},
                                 path);
    EXPECT_NE(status, 0) << name << "=" << value;
    auto out = file_tail(path);
    EXPECT_NE(out.find(name), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  }
}

TEST(logs, a_fatal_error_is_written_before_the_node_exits) {
  scratch_db db;
  auto cluster_port = std::to_string(free_port());
  parley_node node{db, {{"PARLEY_CLUSTER_PORT", cluster_port}}};
  auto path = fresh_log("parley-fatal-" + std::to_string(free_port()) + ".log");
  auto status = exit_status_of({{"PARLEY_PG_URL", db.url()},
                                {"PARLEY_ADMIN_TOKEN", long_admin_token},
                                {"PARLEY_HTTP_PORT", std::to_string(free_port())},
                                {"PARLEY_CLUSTER_PORT", cluster_port}},
                               path);
  EXPECT_EQ(status, 2);
  auto lines = log_objects(path);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["level"], "error");
  EXPECT_NE(lines.back()["msg"].get<std::string>().find("PARLEY_CLUSTER_PORT"), std::string::npos)
    << lines.back();
}

TEST(logs, a_stalled_stderr_holds_up_no_request_and_lost_lines_are_counted) {
  scratch_db db;
  // stderr is a pipe nobody reads: once its buffer is full, the log writer
  // waits in write(2) and the log queue fills up.
  auto fifo = log_dir() + "/parley-stalled-" + std::to_string(free_port()) + ".fifo";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  auto port = free_port();
  child_process node{PARLEY_BIN,
                     {},
                     {{"PARLEY_PG_URL", db.url()},
                      {"PARLEY_ADMIN_TOKEN", long_admin_token},
                      {"PARLEY_HTTP_PORT", std::to_string(port)},
                      {"PARLEY_CLUSTER_PORT", std::to_string(free_port())}},
                     fifo};
  ASSERT_TRUE(wait_for([&] { return http(port, "GET", "/readyz").status == 200; }, 30s));
  http_connection c{port};
  int answered = 0;
  while (answered < 12000 && c.request("GET", "/healthz").status == 200)
    ++answered;
  EXPECT_EQ(answered, 12000);
  EXPECT_GT(metric(port, "parley_log_dropped_total"), 0);

  // Read the pipe again: the node writes what it kept and stops normally.
  std::string out;
  std::thread drain{[&] {
    auto until = std::chrono::steady_clock::now() + 60s;
    char buf[65536];
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{reader, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0)
        continue;
      auto n = ::read(reader, buf, sizeof buf);
      if (n == 0)
        break; // the node closed its end
      if (n > 0)
        out.append(buf, static_cast<std::size_t>(n));
    }
  }};
  EXPECT_EQ(node.terminate(30s), 0);
  drain.join();
  ::close(reader);
  ::unlink(fifo.c_str());
  EXPECT_NE(out.find("\"msg\":\"stopped\""), std::string::npos);
  EXPECT_NE(out.find("log lines dropped"), std::string::npos);
}

// An operator sees a failing upstream in the log: a warn line per failed
// attempt naming the upstream, the outcome and why, at most one a second
// per upstream with the number held back. A request the upstream refuses
// (a 4xx) is the client's and logs nothing. Before, failed attempts logged
// nothing at all.
TEST(logs, failed_model_attempts_are_logged_at_most_once_a_second_per_upstream) {
  scratch_db db;
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_LLM_MAX_ATTEMPTS", "1"},
                        {"PARLEY_LLM_BREAKER_THRESHOLD", "1000"}}};
  auto key = node.create_key("alice");
  auto session = node.create_session(key);
  mock.configure({{"fail_status", 503}});
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(node.post_message(key, session, {{"content", "x"}}).status, 502);
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(node.post_message(key, session, {{"content", "x"}}).status, 502);
  mock.configure({{"fail_status", 400}});
  std::this_thread::sleep_for(1100ms);
  node.call("POST", "/v1/chat/completions", key,
            R"({"messages":[{"role":"user","content":"refused"}]})");
  EXPECT_EQ(node.stop(), 0);
  std::vector<json> failed;
  for (auto& j : log_objects(node.process().log_path()))
    if (j.value("msg", "") == "model upstream attempt failed")
      failed.push_back(j);
  // Six failed attempts: the first logged, the next held back while they
  // come within a second (all of them on any machine that runs five turns
  // in a second: one line, then one for the sixth with held_back 4), and
  // every attempt accounted for; none for the 400.
  ASSERT_GE(failed.size(), 2u);
  ASSERT_LE(failed.size(), 6u);
  std::int64_t attempts = 0;
  for (auto& f : failed) {
    EXPECT_EQ(f["level"], "warn");
    EXPECT_EQ(f["upstream"], "primary");
    EXPECT_EQ(f["outcome"], "server_error");
    EXPECT_EQ(f["http_status"], 503);
    attempts += 1 + f["held_back"].get<std::int64_t>();
  }
  EXPECT_EQ(failed[0]["held_back"], 0);
  EXPECT_EQ(attempts, 6) << "one line or one held back per failed attempt, not the 400";
}

// And a PostgreSQL that went away, once a second at most, with the
// driver's words that answers keep out.
TEST(logs, failed_postgresql_calls_are_logged_at_most_once_a_second) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_PG_TIMEOUT_MS", "1000"}}};
  auto key = node.create_key("alice");
  auto session = node.create_session(key);
  db.query("ALTER TABLE messages ADD CONSTRAINT no_more CHECK (seq < 0) NOT VALID");
  for (int i = 0; i < 3; ++i)
    EXPECT_NE(node.post_message(key, session, {{"content", "x"}}).status, 200);
  EXPECT_EQ(node.stop(), 0);
  std::vector<json> failed;
  for (auto& j : log_objects(node.process().log_path()))
    if (j.value("msg", "") == "PostgreSQL call failed")
      failed.push_back(j);
  ASSERT_GE(failed.size(), 1u);
  EXPECT_LE(failed.size(), 2u);
  EXPECT_EQ(failed[0]["level"], "warn");
  EXPECT_NE(failed[0].value("reason", "").find("no_more"), std::string::npos) << failed[0].dump();
}

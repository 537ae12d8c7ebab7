// The chaos test: a three-node cluster under steady client load while faults
// come one after another: SIGKILL of a node, SIGSTOP/SIGCONT of one, a
// PostgreSQL restart, Redis stopped and started, the primary model upstream
// hanging (the fallback takes over), SIGTERM of a node with turns running on
// it. A background thread polls the dashboard's data (GET /admin/v1/cluster)
// every second throughout: always 200, three nodes up outside node faults.
// Clients retry 503, 504 and lost connections with the same
// client_message_id. Along the way (API.md sections 6 and 8): every route
// works at the first try 10 s after PostgreSQL or Redis is back; while the
// primary hangs no 504 reaches a client (the fallback answers); turns running
// on a node at its SIGTERM answer 200. Afterwards every acknowledged turn
// must be stored exactly once, as acknowledged, in gapless alternating
// histories (PostgreSQL and the API agree); every node must serve again; no
// node may log a supervision failure or exit non-zero (except the SIGKILLed
// one). The run prints what each phase's requests got, then a SUMMARY line.
//
// PostgreSQL and Redis are private servers of this test (the shared ones of
// scripts/test are never stopped). The test asserts outcomes, never timings;
// every wait is bounded, generously.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "tests/integration/node_harness.hpp"
#include "tests/support/pg_server.hpp"
#include "tests/support/redis_server.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

constexpr int kNodes = 3;
constexpr int kWorkers = 4;
constexpr int kSessions = 12;
constexpr int kMaxTurnsPerWorker = 400;
constexpr int kMaxAttempts = 14;              // per turn: the first try and 13 retries
constexpr auto kTurnDeadline = 75s;           // per turn, retries included
constexpr auto kRequestTimeout = 20s;         // per HTTP request
constexpr int kPrimaryLatencyMs = 1000;       // the primary model upstream
constexpr int kFallbackLatencyMs = 200;       // the fallback model upstream
constexpr const char* kLlmTimeoutMs = "2000"; // PARLEY_LLM_TIMEOUT_MS
constexpr auto kRecoveryGrace = 10s;          // API.md section 8, after PostgreSQL or Redis is back

// Supervision failures (API.md section 8); the last is CAF's own report of an
// actor that died of an exception its behavior did not catch.
const char* const kForbiddenLogLines[] = {
    "exception in actor handler", "core actor stopped unexpectedly", "*** unhandled exception"};

std::int64_t ms_since(steady::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count();
}

/// "200", "503 storage_unavailable", "no answer" (connection failed, closed or timed out).
std::string outcome_of(const http_result& r) {
  if (r.status == 0)
    return "no answer";
  auto code = r.code();
  return std::to_string(r.status) + (code.empty() ? "" : " " + code);
}

/// The run's phases: "warm-up", then one per fault; attempts are counted by
/// the phase they started in.
class phase_log {
public:
  int begin(const std::string& name) {
    std::lock_guard<std::mutex> lock{mu_};
    names_.push_back(name);
    current_ = static_cast<int>(names_.size()) - 1;
    std::printf("[ chaos    ] +%6.1f s  %s\n", ms_since(start_) / 1000.0, name.c_str());
    std::fflush(stdout);
    return current_;
  }
  int current() const { return current_; }
  std::string name(int i) const {
    std::lock_guard<std::mutex> lock{mu_};
    return names_.at(static_cast<std::size_t>(i));
  }
  int count() const {
    std::lock_guard<std::mutex> lock{mu_};
    return static_cast<int>(names_.size());
  }
  void note(const std::string& what) const {
    std::printf("[ chaos    ] +%6.1f s    %s\n", ms_since(start_) / 1000.0, what.c_str());
    std::fflush(stdout);
  }

private:
  mutable std::mutex mu_;
  std::vector<std::string> names_;
  std::atomic<int> current_{-1};
  steady::time_point start_ = steady::now();
};

/// A turn the cluster acknowledged (200), as the client saw it.
struct acked_turn {
  std::string session, client_id, content, reply;
  std::int64_t user_seq = 0, reply_seq = 0;
  int attempts = 0;
};

/// A turn that never got its 200 within the retry budget.
struct failed_turn {
  std::string session, client_id, content, last_outcome;
  int phase = 0, attempts = 0;
};

/// Client load: workers sending turns to random sessions through random
/// nodes, retrying 503/504/no answer with the same client_message_id.
class load {
public:
  load(std::vector<unsigned short> ports, std::string key, std::vector<std::string> sessions,
       phase_log& phases)
    : ports_(std::move(ports)), key_(std::move(key)), sessions_(std::move(sessions)),
      phases_(phases) {}

  ~load() { finish(); }

  void start() {
    for (int w = 0; w < kWorkers; ++w)
      threads_.emplace_back([this, w] { work(w); });
  }

  /// One turn on each of `sessions` at once, each first sent through `node`
  /// (retried like any other), so that turns are running there.
  void burst(int node, const std::vector<std::string>& sessions) {
    for (std::size_t i = 0; i < sessions.size(); ++i)
      threads_.emplace_back([this, node, i, session = sessions[i]] {
        std::mt19937 rng{static_cast<unsigned>(std::random_device{}()) + 1000u + i};
        turn(session, "burst" + std::to_string(node) + "-" + std::to_string(i), node, rng);
      });
  }

  /// Lets every worker finish its current turn (retries included), then joins.
  void finish() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
  }

  /// Requests to `node` that have been waiting for their answer for at least
  /// `min_age`: from now on their outcomes are collected (watched_outcomes).
  int watch_in_flight(int node, std::chrono::milliseconds min_age) {
    std::lock_guard<std::mutex> lock{mu_};
    watched_.clear();
    watched_outcomes_.clear();
    for (auto& [id, f] : in_flight_)
      if (f.node == node && steady::now() - f.since >= min_age)
        watched_.insert(id);
    return static_cast<int>(watched_.size());
  }
  /// True once every watched request has its answer.
  bool watched_done() {
    std::lock_guard<std::mutex> lock{mu_};
    return watched_outcomes_.size() == watched_.size();
  }
  std::vector<std::string> watched_outcomes() {
    std::lock_guard<std::mutex> lock{mu_};
    return watched_outcomes_;
  }

  /// While set, a `503 storage_unavailable` is a defect: PostgreSQL is up
  /// and every node has had the grace the contract gives it.
  std::atomic<bool> storage_must_work{false};
  /// While set (PostgreSQL accepts connections again, within the grace the
  /// contract gives), `503 storage_unavailable` answers are only counted.
  std::atomic<bool> storage_in_grace{false};

  // Results, read after finish().
  std::vector<acked_turn> acked;
  std::vector<failed_turn> failed;
  std::vector<std::string> bad_answers;               ///< 200s with a wrong body
  std::map<int, std::map<std::string, int>> outcomes; ///< phase answered in -> outcome -> count
  std::map<std::string, std::string> samples;         ///< outcome -> its first body
  std::vector<std::string> storage_failures;          ///< see storage_must_work
  int storage_unavailable_in_grace = 0;               ///< see storage_in_grace
  int retries = 0, retried_turns = 0;

private:
  struct flight {
    int node;
    steady::time_point since;
  };

  void work(int w) {
    std::mt19937 rng{static_cast<unsigned>(std::random_device{}()) + static_cast<unsigned>(w)};
    for (int n = 0; n < kMaxTurnsPerWorker && !stop_; ++n) {
      const auto& session = sessions_[rng() % sessions_.size()];
      turn(session, "w" + std::to_string(w) + "-t" + std::to_string(n), -1, rng);
    }
  }

  /// Sends one turn until it is acknowledged or its retry budget is spent;
  /// the first attempt goes through `first_node` (-1: a random node), the
  /// retries through random nodes, all with the same client_message_id.
  void turn(const std::string& session, const std::string& client_id, int first_node,
            std::mt19937& rng) {
    auto content = "chaos turn " + client_id + " \xc3\xa9\xe2\x9c\x93 " + std::to_string(rng());
    auto body = json{{"content", content}, {"client_message_id", client_id}}.dump();
    int first_phase = phases_.current();
    auto deadline = steady::now() + kTurnDeadline;
    http_result r;
    int attempt = 0;
    for (;;) {
      ++attempt;
      int node =
          attempt == 1 && first_node >= 0 ? first_node : static_cast<int>(rng() % ports_.size());
      bool storage_strict = storage_must_work, in_grace = storage_in_grace;
      auto id = begin(node);
      auto t0 = steady::now();
      r = http(ports_[static_cast<std::size_t>(node)], "POST",
               "/v1/sessions/" + session + "/messages", body, {{"Authorization", "Bearer " + key_}},
               kRequestTimeout);
      end(id, r, steady::now() - t0, storage_strict && storage_must_work,
          in_grace && storage_in_grace, node);
      bool again = r.status == 0 || r.status == 503 || r.status == 504;
      if (!again || attempt >= kMaxAttempts || steady::now() > deadline)
        break;
      auto backoff = std::min<std::int64_t>(250LL << std::min(attempt - 1, 4), 3000) +
                     static_cast<std::int64_t>(rng() % 250);
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
    }
    std::lock_guard<std::mutex> lock{mu_};
    if (attempt > 1) {
      retries += attempt - 1;
      ++retried_turns;
    }
    if (r.status != 200) {
      failed.push_back({session, client_id, content, outcome_of(r) + " " + r.body.substr(0, 200),
                        first_phase, attempt});
      return;
    }
    auto j = r.js();
    acked_turn t{session, client_id, content, "", 0, 0, attempt};
    try {
      t.user_seq = j.at("user_message").at("seq").get<std::int64_t>();
      t.reply_seq = j.at("reply").at("seq").get<std::int64_t>();
      t.reply = j.at("reply").at("content").get<std::string>();
      if (j.at("user_message").at("content") != content || t.reply_seq != t.user_seq + 1 ||
          j.at("reply").at("reply_to") != t.user_seq || t.reply != "mock: " + content)
        bad_answers.push_back(client_id + ": " + r.body.substr(0, 300));
    } catch (const std::exception&) {
      bad_answers.push_back(client_id + ": " + r.body.substr(0, 300));
    }
    acked.push_back(std::move(t));
  }

  long begin(int node) {
    std::lock_guard<std::mutex> lock{mu_};
    auto id = next_id_++;
    in_flight_[id] = {node, steady::now()};
    return id;
  }

  void end(long id, const http_result& r, steady::duration took, bool storage_strict, bool in_grace,
           int node) {
    auto what = outcome_of(r);
    if (r.status == 0)
      what += took >= kRequestTimeout - 1s ? " (timed out)" : " (refused or cut)";
    std::lock_guard<std::mutex> lock{mu_};
    in_flight_.erase(id);
    ++outcomes[phases_.current()][what];
    if (r.status != 200 && !samples.count(what))
      samples[what] = r.body.substr(0, 160);
    if (watched_.count(id))
      watched_outcomes_.push_back(r.status == 200 ? what : what + " " + r.body.substr(0, 160));
    if (in_grace && r.code() == "storage_unavailable")
      ++storage_unavailable_in_grace;
    if (storage_strict && r.code() == "storage_unavailable")
      storage_failures.push_back("through node-" + std::to_string(node) + ": " +
                                 r.body.substr(0, 200));
  }

  std::vector<unsigned short> ports_;
  std::string key_;
  std::vector<std::string> sessions_;
  phase_log& phases_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  long next_id_ = 0;
  std::map<long, flight> in_flight_;
  std::set<long> watched_;
  std::vector<std::string> watched_outcomes_;
};

/// The dashboard's data, GET /admin/v1/cluster on one node, every second.
/// While `node_fault` is clear (before and after a poll) the answer must list
/// three nodes, all up; while a node is down or stopped, it must still be 200.
class dashboard_poller {
public:
  dashboard_poller(unsigned short port, std::string token, const phase_log& phases)
    : port_(port), token_(std::move(token)), phases_(phases) {}
  ~dashboard_poller() { finish(); }

  std::atomic<bool> node_fault{false};

  void start() {
    thread_ = std::thread{[this] {
      while (!stop_) {
        auto t0 = steady::now();
        poll();
        std::this_thread::sleep_until(t0 + 1s);
      }
    }};
  }
  void finish() {
    stop_ = true;
    if (thread_.joinable())
      thread_.join();
  }

  int polls = 0;
  std::vector<std::string> problems;

private:
  void poll() {
    bool strict = !node_fault;
    int phase = phases_.current();
    auto r =
        http(port_, "GET", "/admin/v1/cluster", "", {{"Authorization", "Bearer " + token_}}, 10s);
    strict = strict && !node_fault;
    ++polls;
    std::string problem;
    auto j = r.js();
    if (r.status != 200)
      problem = outcome_of(r);
    else if (!j.is_object() || !j["nodes"].is_array())
      problem = "no nodes list";
    else if (strict) {
      int up = 0;
      for (auto& m : j["nodes"])
        up += m.value("status", "") == "up";
      if (j["nodes"].size() != kNodes || up != kNodes)
        problem =
            std::to_string(j["nodes"].size()) + " nodes listed, " + std::to_string(up) + " up";
    }
    if (!problem.empty())
      problems.push_back("[" + phases_.name(phase) + "] " + problem + ": " + r.body.substr(0, 200));
  }

  unsigned short port_;
  std::string token_;
  const phase_log& phases_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// Lines of `path` that contain `needle`.
std::vector<std::string> grep(const std::string& path, const std::string& needle) {
  std::vector<std::string> hits;
  std::ifstream in{path};
  std::string line;
  while (std::getline(in, line))
    if (line.find(needle) != std::string::npos)
      hits.push_back(line.substr(0, 300));
  return hits;
}

bool all_ready(parley_cluster& c) {
  for (int i = 0; i < c.size(); ++i)
    if (http(c[i].port(), "GET", "/readyz", "", {}, 5s).status != 200)
      return false;
  return true;
}

bool redis_ok_everywhere(parley_cluster& c) {
  for (int i = 0; i < c.size(); ++i) {
    auto j = http(c[i].port(), "GET", "/readyz", "", {}, 5s).js();
    if (!j.is_object() || !j["checks"].is_object() || j["checks"].value("redis", "") != "ok")
      return false;
  }
  return true;
}

/// Every route kind once on every node, at the first try (no retry): the
/// failures, as "node: route: outcome".
std::vector<std::string> probe_routes(parley_cluster& c, const std::string& key,
                                      const std::string& session, const std::string& tag) {
  std::vector<std::string> failures;
  for (int i = 0; i < c.size(); ++i) {
    auto& n = c[i];
    auto expect = [&](const std::string& what, const http_result& r, int want) {
      if (r.status != want)
        failures.push_back(n.node_id() + ": " + what + ": " + outcome_of(r) + " " +
                           r.body.substr(0, 160));
    };
    expect("GET /v1/sessions", n.call("GET", "/v1/sessions?limit=5", key), 200);
    expect("GET /v1/sessions/{id}", n.call("GET", "/v1/sessions/" + session, key), 200);
    expect("GET messages", n.call("GET", "/v1/sessions/" + session + "/messages?limit=1", key),
           200);
    expect("GET /admin/v1/sessions/{id}", n.admin("GET", "/admin/v1/sessions/" + session), 200);
    expect("POST /admin/v1/api-keys",
           n.admin("POST", "/admin/v1/api-keys", {{"user", "probe-" + tag}}), 201);
    expect("POST /v1/chat/completions",
           n.call("POST", "/v1/chat/completions", key,
                  json{{"model", "mock"}, {"messages", {{{"role", "user"}, {"content", "probe"}}}}}
                      .dump()),
           200);
    auto created = n.call("POST", "/v1/sessions", key, "{}");
    expect("POST /v1/sessions", created, 201);
    if (created.status == 201) {
      auto id = created.js().value("id", "");
      auto cid = "probe-" + tag + "-" + std::to_string(i);
      auto turn =
          n.post_message(key, id, {{"content", "probe " + cid}, {"client_message_id", cid}});
      expect("POST messages", turn, 200);
      if (turn.status == 200)
        expect("POST feedback",
               n.call("POST", "/v1/sessions/" + id + "/messages/2/feedback", key,
                      json{{"rating", 1}}.dump()),
               201);
    }
  }
  return failures;
}

/// One stored message, from PostgreSQL.
struct stored {
  std::int64_t seq = 0, reply_to = 0;
  std::string role, content, client_id;
};

} // namespace

TEST(chaos, faults_under_load_lose_duplicate_and_reorder_no_acknowledged_turn) {
  auto run_start = steady::now();
  phase_log phases;
  pg_server pg{[] { return free_port(); }};
  redis_server redis;
  mock_llm primary, fallback;
  primary.configure({{"latency_ms", kPrimaryLatencyMs}});
  fallback.configure({{"latency_ms", kFallbackLatencyMs}});
  scratch_db db{pg.url()};
  parley_cluster c{db,
                   kNodes,
                   {{"PARLEY_LLM_BASE_URL", primary.base_url()},
                    {"PARLEY_LLM_FALLBACK_BASE_URL", fallback.base_url()},
                    {"PARLEY_LLM_TIMEOUT_MS", kLlmTimeoutMs},
                    {"PARLEY_REDIS_URL", redis.url()},
                    // High enough never to refuse, so every turn passes Redis's token bucket.
                    {"PARLEY_RATE_LIMIT_PER_MIN", "100000"}}};
  continue_on_exit cont{c}; // whatever happens below, no node stays stopped

  auto key = c[0].create_key("chaos");
  std::vector<std::string> sessions;
  for (int i = 0; i < kSessions; ++i)
    sessions.push_back(c[i % kNodes].create_session(key));
  std::vector<unsigned short> ports;
  for (int i = 0; i < kNodes; ++i)
    ports.push_back(c[i].port());

  // Node 0 serves the dashboard and is never the target of a fault.
  dashboard_poller dash{c[0].port(), c[0].admin_token(), phases};
  load clients{ports, key, sessions, phases};
  std::vector<std::string> exits; // unexpected or non-zero exits
  int faults = 0;

  // A node that should be running but is gone: record how it ended, start it again.
  auto check_alive = [&](const std::string& when) {
    for (int i = 0; i < kNodes; ++i)
      if (!c[i].process().alive()) {
        int status = c[i].process().terminate();
        exits.push_back(c[i].node_id() + " exited with " + std::to_string(status) + " " + when);
        phases.note(exits.back() + "; restarting it");
        try {
          c[i].restart();
        } catch (const std::exception& e) {
          ADD_FAILURE() << c[i].node_id() << " would not restart: " << e.what();
        }
      }
  };
  auto restart_node = [&](int i) {
    try {
      c[i].restart();
    } catch (const std::exception& e) {
      ADD_FAILURE() << c[i].node_id() << " would not restart: " << e.what();
    }
  };
  auto reconverge = [&](const std::string& after) {
    bool ok = c.wait_converged(kNodes, 30s);
    EXPECT_TRUE(ok) << "the cluster did not see three nodes up again after " << after << ": "
                    << c[0].cluster().dump();
    dash.node_fault = false;
    if (!ok)
      phases.note("NOT converged after " + after);
  };

  phases.begin("warm-up");
  dash.start();
  clients.start();
  std::this_thread::sleep_for(8s);

  // 1. SIGKILL: in-flight requests to it fail, its sessions move on their next turn.
  phases.begin("SIGKILL node-2");
  ++faults;
  dash.node_fault = true;
  c[2].kill9();
  std::this_thread::sleep_for(3s);
  restart_node(2);
  reconverge("node-2's restart");
  std::this_thread::sleep_for(4s);
  check_alive("after the SIGKILL fault");

  // 2. SIGSTOP for a few seconds, then SIGCONT: declared down, then back.
  phases.begin("SIGSTOP node-1 (4 s)");
  ++faults;
  dash.node_fault = true;
  ::kill(c[1].process().pid(), SIGSTOP);
  std::this_thread::sleep_for(4s);
  ::kill(c[1].process().pid(), SIGCONT);
  check_alive("after SIGCONT");
  reconverge("node-1's SIGCONT");
  std::this_thread::sleep_for(4s);
  check_alive("after the SIGSTOP fault");

  // 3. PostgreSQL restart (fast shutdown: every connection is cut).
  phases.begin("PostgreSQL restart");
  ++faults;
  pg.stop();
  std::this_thread::sleep_for(3s);
  try {
    pg.start();
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  auto pg_back = steady::now();
  clients.storage_in_grace = true;
  bool ready_again = wait_for([&] { return all_ready(c); }, 40s);
  EXPECT_TRUE(ready_again) << "not every node was ready within 40 s of PostgreSQL's restart";
  phases.note(ready_again ? "every node ready again" : "NOT every node ready again");
  // API.md section 8: within 10 s every route works again at the first try.
  std::this_thread::sleep_until(pg_back + kRecoveryGrace);
  auto pg_probe = probe_routes(c, key, sessions[0], "pg");
  phases.note("routes probed on every node: " + std::to_string(pg_probe.size()) + " failed");
  clients.storage_in_grace = false;
  clients.storage_must_work = true;
  std::this_thread::sleep_for(3s);
  check_alive("after the PostgreSQL fault");

  // 4. Redis stopped, then started on the same port.
  phases.begin("Redis stop/start");
  ++faults;
  redis.stop();
  std::this_thread::sleep_for(4s);
  redis.restart();
  auto redis_restarted = steady::now();
  bool redis_back = wait_for([&] { return redis_ok_everywhere(c); }, 30s);
  EXPECT_TRUE(redis_back) << "not every node saw Redis again within 30 s";
  phases.note(redis_back ? "every node sees Redis again" : "NOT every node sees Redis again");
  std::this_thread::sleep_until(redis_restarted + kRecoveryGrace);
  auto redis_probe = probe_routes(c, key, sessions[0], "redis");
  phases.note("routes probed on every node: " + std::to_string(redis_probe.size()) + " failed");
  std::this_thread::sleep_for(3s);
  check_alive("after the Redis fault");

  // 5. The primary upstream hangs (never answers); each attempt times out
  //    after PARLEY_LLM_TIMEOUT_MS and the fallback must answer.
  auto fallback_before = fallback.requests().size();
  phases.begin("primary upstream hang (8 s)");
  int hang_phase = phases.current();
  ++faults;
  primary.configure({{"mode", "hang"}});
  std::this_thread::sleep_for(8s);
  primary.configure({{"mode", "normal"}});
  phases.note("primary healed");
  std::this_thread::sleep_for(5s);
  auto fallback_used = fallback.requests().size() - fallback_before;
  check_alive("after the upstream fault");

  // 6. SIGTERM while turns run on it: those turns must finish with 200, and
  //    the node must exit 0.
  phases.begin("SIGTERM node-1");
  ++faults;
  clients.storage_must_work = false;
  std::vector<std::string> on_node1;
  for (auto& s2 : sessions)
    if (on_node1.size() < 4 && c[0].host_of(s2) == c[1].node_id())
      on_node1.push_back(s2);
  for (auto& s2 : sessions)
    if (on_node1.size() < 4 && std::find(on_node1.begin(), on_node1.end(), s2) == on_node1.end())
      on_node1.push_back(s2);
  clients.burst(1, on_node1);
  int watched = 0;
  wait_for([&] { return (watched = clients.watch_in_flight(1, 300ms)) >= 2; }, 15s);
  dash.node_fault = true;
  int term_status = c[1].process().terminate(45s);
  phases.note("node-1 exited with " + std::to_string(term_status) + "; " + std::to_string(watched) +
              " requests were in flight on it");
  EXPECT_GT(watched, 0) << "no turn was running on node-1 when it got SIGTERM";
  EXPECT_EQ(term_status, 0) << "node-1 after SIGTERM:\n" << c[1].process().log_tail(30);
  if (term_status != 0)
    exits.push_back("node-1 exited with " + std::to_string(term_status) + " after SIGTERM");
  EXPECT_TRUE(wait_for([&] { return clients.watched_done(); }, 30s));
  auto sigterm_outcomes = clients.watched_outcomes();
  restart_node(1);
  reconverge("node-1's restart");
  std::this_thread::sleep_for(4s);
  check_alive("after the SIGTERM fault");

  phases.begin("cool-down");
  clients.finish();
  dash.finish();
  check_alive("at the end of the load");
  phases.note("load finished");

  // --- Every node serves again.
  EXPECT_TRUE(wait_for([&] { return all_ready(c); }, 30s)) << "not every node ready at the end";
  for (int i = 0; i < kNodes; ++i) {
    EXPECT_EQ(http(c[i].port(), "GET", "/healthz").status, 200) << c[i].node_id();
    auto ready = http(c[i].port(), "GET", "/readyz");
    EXPECT_EQ(ready.status, 200) << c[i].node_id() << " " << describe(ready);
    try {
      auto s = c[i].create_session(key);
      auto cid = "final-" + std::to_string(i);
      auto r =
          c[i].post_message(key, s, {{"content", "after the storm"}, {"client_message_id", cid}});
      EXPECT_EQ(r.status, 200) << c[i].node_id() << " " << describe(r);
      if (r.status == 200) {
        EXPECT_EQ(r.js()["reply"]["content"], "mock: after the storm");
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << c[i].node_id() << " does not serve: " << e.what();
    }
  }

  // --- Storage, from PostgreSQL.
  std::map<std::string, std::vector<stored>> histories;
  for (auto& s : sessions)
    histories[s];
  auto rows = db.query("SELECT session_id, seq, role, content, coalesce(reply_to, 0), "
                       "coalesce(client_message_id, '') FROM messages ORDER BY session_id, seq");
  for (const auto& row : rows) {
    auto id = row[0].as<std::string>();
    if (!histories.count(id))
      continue; // the final per-node sessions
    histories[id].push_back({row[1].as<std::int64_t>(), row[4].as<std::int64_t>(),
                             row[2].as<std::string>(), row[3].as<std::string>(),
                             row[5].as<std::string>()});
  }
  int history_problems = 0;
  for (auto& [id, msgs] : histories) {
    for (std::size_t i = 0; i < msgs.size(); ++i) {
      auto& m = msgs[i];
      bool user = i % 2 == 0;
      bool ok = m.seq == static_cast<std::int64_t>(i) + 1 &&
                m.role == (user ? "user" : "assistant") && (user || m.reply_to == m.seq - 1);
      if (!ok && ++history_problems <= 10)
        ADD_FAILURE() << "session " << id << " position " << i + 1 << ": seq " << m.seq << " "
                      << m.role << " reply_to " << m.reply_to << " (want seq " << i + 1
                      << ", alternating user/assistant, each reply after its message)";
    }
    if (msgs.size() % 2 != 0 && ++history_problems <= 10)
      ADD_FAILURE() << "session " << id << " ends with a message without its reply (seq "
                    << msgs.back().seq << ")";
  }
  auto dup_ids = db.query("SELECT session_id, client_message_id, count(*) FROM messages WHERE "
                          "client_message_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1");
  EXPECT_EQ(dup_ids.size(), 0u) << "client_message_ids stored more than once";

  std::map<std::string, int> stored_ids; // client_message_id -> times stored (user messages)
  for (auto& [id, msgs] : histories)
    for (auto& m : msgs)
      if (m.role == "user" && !m.client_id.empty())
        ++stored_ids[m.client_id];

  // --- The same histories through the API, read through every node in turn.
  std::map<std::string, json> via_api;
  int api_problems = 0, k = 0;
  for (auto& s : sessions) {
    try {
      via_api[s] = c[k++ % kNodes].all_messages(key, s);
    } catch (const std::exception& e) {
      ++api_problems;
      ADD_FAILURE() << "listing " << s << ": " << e.what();
      continue;
    }
    auto& api = via_api[s];
    auto& pgm = histories[s];
    bool same = api.size() == pgm.size();
    for (std::size_t i = 0; same && i < pgm.size(); ++i)
      same = api[i]["seq"] == pgm[i].seq && api[i]["role"] == pgm[i].role &&
             api[i]["content"] == pgm[i].content;
    if (!same) {
      ++api_problems;
      ADD_FAILURE() << "session " << s << ": the API lists " << api.size()
                    << " messages that differ from the " << pgm.size() << " in PostgreSQL";
    }
  }

  // --- Every acknowledged turn: stored once, at its seqs, unchanged.
  int verified = 0, retried_verified = 0, ack_problems = 0;
  for (auto& t : clients.acked) {
    auto& msgs = histories[t.session];
    auto at = [&](std::int64_t seq) -> const stored* {
      return seq >= 1 && seq <= static_cast<std::int64_t>(msgs.size()) &&
                     msgs[static_cast<std::size_t>(seq - 1)].seq == seq
                 ? &msgs[static_cast<std::size_t>(seq - 1)]
                 : nullptr;
    };
    auto* u = at(t.user_seq);
    auto* a = at(t.reply_seq);
    bool ok = u && a && u->role == "user" && u->content == t.content &&
              u->client_id == t.client_id && a->role == "assistant" && a->content == t.reply &&
              a->reply_to == t.user_seq && stored_ids[t.client_id] == 1;
    bool api_ok = false;
    if (via_api.count(t.session)) {
      auto& api = via_api[t.session];
      auto ui = static_cast<std::size_t>(t.user_seq - 1),
           ai = static_cast<std::size_t>(t.reply_seq - 1);
      api_ok = t.user_seq >= 1 && ai < api.size() && api[ui]["content"] == t.content &&
               api[ai]["content"] == t.reply && api[ai]["reply_to"] == t.user_seq;
    }
    if (ok && api_ok) {
      ++verified;
      retried_verified += t.attempts > 1;
    } else if (++ack_problems <= 10) {
      ADD_FAILURE() << "acknowledged turn " << t.client_id << " (session " << t.session << ", seqs "
                    << t.user_seq << "/" << t.reply_seq << ", " << t.attempts
                    << " attempts) is not stored as acknowledged: stored "
                    << stored_ids[t.client_id] << " time(s), in PostgreSQL "
                    << (ok ? "ok" : "wrong") << ", through the API " << (api_ok ? "ok" : "wrong");
    }
  }
  int unacked_stored = 0;
  for (auto& f : clients.failed)
    unacked_stored += stored_ids[f.client_id] > 0;

  // --- Logs and exits.
  // The final SIGTERM, to all at once; a node may take its HTTP drain (30 s)
  // and actor stop (10 s) bounds. What was still connected to each node
  // before, for a node that does not exit 0.
  std::vector<std::string> open_before(kNodes);
  for (int i = 0; i < kNodes; ++i)
    open_before[static_cast<std::size_t>(i)] =
        run_process("ss",
                    {"-tnH", "state", "connected", "exclude", "time-wait",
                     "( sport = :" + std::to_string(c[i].port()) + " )"},
                    {}, 10s)
            .out;
  std::vector<int> final_status(kNodes, -1);
  {
    std::vector<std::thread> stoppers;
    for (int i = 0; i < kNodes; ++i)
      stoppers.emplace_back(
          [&, i] { final_status[static_cast<std::size_t>(i)] = c[i].process().terminate(50s); });
    for (auto& t : stoppers)
      t.join();
  }
  for (int i = 0; i < kNodes; ++i)
    if (auto status = final_status[static_cast<std::size_t>(i)]; status != 0)
      exits.push_back(
          c[i].node_id() +
          (status == -1 ? " did not exit within 50 s" : " exited with " + std::to_string(status)) +
          " at the final SIGTERM; connections before it: " +
          (open_before[static_cast<std::size_t>(i)].empty()
               ? std::string{"none\n"}
               : "\n" + open_before[static_cast<std::size_t>(i)]) +
          "log: " + c[i].process().log_tail(4));
  std::vector<std::string> bad_lines;
  for (int i = 0; i < kNodes; ++i)
    for (auto* needle : kForbiddenLogLines)
      for (auto& l : grep(c[i].process().log_path(), needle))
        bad_lines.push_back(c[i].node_id() + ": " + l);

  // --- The report: what each phase saw, then the verdicts.
  for (int p = 0; p < phases.count(); ++p) {
    std::string line;
    for (auto& [what, n] : clients.outcomes[p])
      line += (line.empty() ? "" : ", ") + what + " x" + std::to_string(n);
    std::printf("[ chaos    ] phase %-30s attempts: %s\n", phases.name(p).c_str(),
                line.empty() ? "none" : line.c_str());
  }
  for (auto& [what, body] : clients.samples)
    std::printf("[ chaos    ] e.g. %s: %s\n", what.c_str(), body.c_str());
  std::string sigterm_line;
  for (auto& o : sigterm_outcomes)
    sigterm_line += (sigterm_line.empty() ? "" : ", ") + o;
  std::printf("[ chaos    ] SIGTERM: %d requests in flight on node-1 answered: %s\n", watched,
              sigterm_line.c_str());
  std::printf("[ chaos    ] the fallback upstream answered %zu calls during the hang phase\n",
              fallback_used);
  for (std::size_t i = 0; i < clients.failed.size() && i < 15; ++i) {
    auto& f = clients.failed[i];
    std::printf(
        "[ chaos    ] NOT acknowledged: %s (session %s) in [%s] after %d attempts, last: %s\n",
        f.client_id.c_str(), f.session.c_str(), phases.name(f.phase).c_str(), f.attempts,
        f.last_outcome.c_str());
  }
  for (auto& f : pg_probe)
    std::printf("[ chaos    ] after PostgreSQL's restart, first try failed: %s\n", f.c_str());
  for (auto& f : redis_probe)
    std::printf("[ chaos    ] after Redis's restart, first try failed: %s\n", f.c_str());
  std::printf("[ chaos    ] 503 storage_unavailable on turns begun after PostgreSQL accepted "
              "connections again, within the %lld s grace: %d\n",
              static_cast<long long>(kRecoveryGrace.count()), clients.storage_unavailable_in_grace);
  for (std::size_t i = 0; i < clients.storage_failures.size() && i < 10; ++i)
    std::printf("[ chaos    ] storage_unavailable after recovery: %s\n",
                clients.storage_failures[i].c_str());
  for (std::size_t i = 0; i < dash.problems.size() && i < 15; ++i)
    std::printf("[ chaos    ] dashboard: %s\n", dash.problems[i].c_str());
  for (int i = 0; i < kNodes; ++i) {
    auto& open = open_before[static_cast<std::size_t>(i)];
    std::printf("[ chaos    ] final SIGTERM: %s exited with %d; TCP connections to it before (not "
                "TIME-WAIT): %zd\n%s",
                c[i].node_id().c_str(), final_status[static_cast<std::size_t>(i)],
                std::count(open.begin(), open.end(), '\n'), open.c_str());
  }
  for (auto& e : exits)
    std::printf("[ chaos    ] exit: %s\n", e.c_str());
  for (std::size_t i = 0; i < bad_lines.size() && i < 10; ++i)
    std::printf("[ chaos    ] log: %s\n", bad_lines[i].c_str());
  std::printf("[ chaos    ] SUMMARY: %zu turns acknowledged, %zu not acknowledged (%d of them "
              "stored), %d retries over %d turns, %d faults injected, %d of %zu acknowledged turns "
              "verified in PostgreSQL and through the API (%d of them retried), %d dashboard polls "
              "(%zu bad), %.0f s\n",
              clients.acked.size(), clients.failed.size(), unacked_stored, clients.retries,
              clients.retried_turns, faults, verified, clients.acked.size(), retried_verified,
              dash.polls, dash.problems.size(), ms_since(run_start) / 1000.0);
  std::fflush(stdout);

  EXPECT_GT(clients.acked.size(), 50u) << "too little load got through to mean anything";
  for (int p = 1; p + 1 < phases.count(); ++p)
    EXPECT_FALSE(clients.outcomes[p].empty()) << "no turn ran during " << phases.name(p);
  EXPECT_EQ(clients.failed.size(), 0u)
      << "turns never acknowledged within " << kMaxAttempts << " attempts (listed above)";
  EXPECT_TRUE(clients.bad_answers.empty())
      << clients.bad_answers.size() << " 200 answers did not match their turn, e.g. "
      << clients.bad_answers.front();
  EXPECT_EQ(verified, static_cast<int>(clients.acked.size()));
  EXPECT_EQ(history_problems, 0);
  EXPECT_EQ(api_problems, 0);
  EXPECT_EQ(clients.outcomes[hang_phase].count("504 upstream_timeout"), 0u)
      << "the primary's timeouts reached clients instead of the fallback answering";
  EXPECT_TRUE(pg_probe.empty()) << "routes failed at the first try " << kRecoveryGrace.count()
                                << " s after PostgreSQL's restart (listed above)";
  EXPECT_TRUE(redis_probe.empty()) << "routes failed at the first try " << kRecoveryGrace.count()
                                   << " s after Redis's restart (listed above)";
  EXPECT_TRUE(clients.storage_failures.empty())
      << clients.storage_failures.size()
      << " turns got 503 storage_unavailable after PostgreSQL was back (listed above)";
  EXPECT_GT(fallback_used, 0u) << "the fallback upstream was never called while the primary hung";
  for (auto& o : sigterm_outcomes)
    EXPECT_EQ(o, "200") << "a turn in flight on node-1 at its SIGTERM";
  EXPECT_TRUE(dash.problems.empty())
      << dash.problems.size() << " bad dashboard polls (listed above)";
  EXPECT_TRUE(exits.empty()) << exits.size() << " unexpected exits (listed above)";
  EXPECT_TRUE(bad_lines.empty()) << bad_lines.size()
                                 << " supervision failures logged (listed above)";
}

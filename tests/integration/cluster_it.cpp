// The cluster: several real `parley` processes on one database. Routing
// through every node, migration with and without queued turns, drain and
// SIGTERM, SIGKILL under load, retries after a crash, and two actors of one
// session racing.

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

/// A session whose host (per the cluster) is node `want`.
std::string session_on(parley_cluster& c, const std::string& key, int want) {
  for (int i = 0; i < 200; ++i) {
    auto id = c[0].create_session(key);
    if (c[0].host_of(id) == c[want].node_id())
      return id;
  }
  throw std::runtime_error("no session placed on node " + std::to_string(want));
}

} // namespace

TEST(cluster, every_node_sees_every_member_and_routes_any_session) {
  scratch_db db;
  parley_cluster c{db, 3};
  auto view = c[1].cluster();
  EXPECT_EQ(view["self"], "node-1");
  ASSERT_EQ(view["nodes"].size(), 3u);
  for (auto& m : view["nodes"]) {
    EXPECT_EQ(m["status"], "up");
    EXPECT_FALSE(m["http"].get<std::string>().empty());
    EXPECT_FALSE(m["cluster"].get<std::string>().empty());
  }

  auto key = c[0].create_key("alice");
  std::vector<std::string> ids;
  std::set<std::string> hosts;
  for (int s = 0; s < 12; ++s) {
    ids.push_back(c[s % 3].create_session(key));
    // Every node agrees on where a session lives.
    auto host = c[0].host_of(ids.back());
    EXPECT_EQ(c[1].host_of(ids.back()), host);
    EXPECT_EQ(c[2].host_of(ids.back()), host);
    hosts.insert(host);
  }
  EXPECT_GE(hosts.size(), 2u) << "placement should spread 12 sessions over the nodes";
  for (int round = 0; round < 3; ++round)
    for (std::size_t s = 0; s < ids.size(); ++s) {
      auto& via = c[static_cast<int>((s + round) % 3)];
      auto r = via.post_message(key, ids[s], {{"content", "r" + std::to_string(round)}});
      ASSERT_EQ(r.status, 200) << describe(r);
      EXPECT_EQ(r.js()["reply"]["seq"], 2 * round + 2);
      EXPECT_EQ(r.header("x-parley-node"), via.node_id());
    }
  for (auto& id : ids) {
    auto users = check_history(c[2].all_messages(key, id));
    EXPECT_EQ(users, (std::vector<std::string>{"r0", "r1", "r2"}));
    auto loc = c[1].admin("GET", "/admin/v1/sessions/" + id).js();
    EXPECT_EQ(loc["state"], "active");
  }
  // Another user cannot reach a session through any node.
  auto bob = c[1].create_key("bob");
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(c[i].post_message(bob, ids[0], {{"content", "x"}}).status, 404);
}

TEST(cluster, admin_routes_validate_their_input) {
  scratch_db db;
  parley_cluster c{db, 2};
  auto key = c[0].create_key("alice");
  auto id = c[0].create_session(key);
  EXPECT_EQ(c[0].call("GET", "/admin/v1/cluster", key).status, 403);
  EXPECT_EQ(c[0].call("GET", "/admin/v1/cluster", "").status, 401);
  EXPECT_EQ(c[0].admin("GET", "/admin/v1/sessions/nope").status, 404);
  EXPECT_EQ(c[0].admin("POST", "/admin/v1/sessions/" + id + "/migrate", {{"to", "node-9"}}).status,
            404);
  auto bad = c[0].admin("POST", "/admin/v1/sessions/" + id + "/migrate", {{"to", 5}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.code(), "invalid_request");
  EXPECT_EQ(c[0].admin("POST", "/admin/v1/sessions/" + id + "/migrate").status, 400);
  EXPECT_EQ(c[0].admin("POST", "/admin/v1/nodes/node-9/drain").status, 404);
  EXPECT_EQ(c[0].admin("GET", "/admin/v1/nodes/node-1/drain").status, 405);
  auto passive = c[1].admin("GET", "/admin/v1/sessions/" + id).js();
  EXPECT_EQ(passive["state"], "passive");
}

TEST(cluster, an_idle_session_migrates_with_its_state) {
  scratch_db db;
  parley_cluster c{db, 3};
  auto key = c[0].create_key("alice");
  auto id = session_on(c, key, 0);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(c[i].post_message(key, id, {{"content", "t" + std::to_string(i)}}).status, 200);
  auto before = c[0].admin("GET", "/admin/v1/sessions/" + id).js();
  ASSERT_EQ(before["node"], "node-0");
  ASSERT_EQ(before["state"], "active");

  auto start = std::chrono::steady_clock::now();
  auto r = c[2].admin("POST", "/admin/v1/sessions/" + id + "/migrate", {{"to", "node-1"}});
  auto took = elapsed_ms(start);
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["node"], "node-1");
  EXPECT_EQ(r.js()["id"], id);
  std::printf("[ figures  ] migrate one idle session: %lld ms\n", static_cast<long long>(took));
  EXPECT_EQ(c[0].metric("parley_session_migrations_total"), 1);
  for (int i = 0; i < 3; ++i) {
    auto loc = c[i].admin("GET", "/admin/v1/sessions/" + id).js();
    EXPECT_EQ(loc["node"], "node-1") << "seen from node-" << i;
    EXPECT_EQ(loc["state"], "active");
    EXPECT_GT(loc["epoch"], before["epoch"]);
  }
  for (int i = 0; i < 3; ++i) {
    auto t = c[i].post_message(key, id, {{"content", "after" + std::to_string(i)}});
    ASSERT_EQ(t.status, 200) << describe(t);
    EXPECT_EQ(t.js()["user_message"]["seq"], 7 + 2 * i);
  }
  EXPECT_EQ(c[0].admin("GET", "/admin/v1/sessions/" + id).js()["node"], "node-1");
  check_history(c[0].all_messages(key, id));
  // Migrating to where it already is, and a passive session, both answer 200.
  EXPECT_EQ(c[0].admin("POST", "/admin/v1/sessions/" + id + "/migrate", {{"to", "node-1"}}).status,
            200);
  auto idle = c[0].create_session(key);
  auto m = c[0].admin("POST", "/admin/v1/sessions/" + idle + "/migrate", {{"to", "node-2"}});
  ASSERT_EQ(m.status, 200) << describe(m);
  EXPECT_EQ(c[1].admin("GET", "/admin/v1/sessions/" + idle).js()["node"], "node-2");
}

TEST(cluster, migration_with_twenty_turns_queued_loses_duplicates_and_reorders_nothing) {
  scratch_db db;
  mock_llm mock;
  mock.configure({{"latency_ms", 150}});
  parley_cluster c{db, 3, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                           {"PARLEY_CONTEXT_MESSAGES", "100"}}};
  auto key = c[0].create_key("alice");
  auto id = session_on(c, key, 0);
  mock.clear();

  // 20 turns sent one after another (so their order is defined), each on its
  // own connection, without waiting for answers: they queue behind the model.
  std::vector<http_result> results(20);
  std::vector<std::thread> ts;
  for (int i = 0; i < 20; ++i) {
    ts.emplace_back([&, i] {
      results[static_cast<std::size_t>(i)] =
        c[i % 3].post_message(key, id, {{"content", "q" + std::to_string(i)},
                                        {"client_message_id", "q" + std::to_string(i)}});
    });
    std::this_thread::sleep_for(15ms);
  }
  // The first turns are running or queued: move the session now.
  auto r = c[1].admin("POST", "/admin/v1/sessions/" + id + "/migrate", {{"to", "node-2"}});
  for (auto& t : ts)
    t.join();
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["node"], "node-2");
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(results[static_cast<std::size_t>(i)].status, 200)
      << "turn " << i << ": " << describe(results[static_cast<std::size_t>(i)]);

  auto msgs = c[0].all_messages(key, id);
  ASSERT_EQ(msgs.size(), 40u);
  auto users = check_history(msgs);
  std::set<std::string> distinct(users.begin(), users.end());
  EXPECT_EQ(distinct.size(), 20u) << "a turn was stored twice";
  // Turns from one client thread start in the order they were sent: each
  // was sent 15 ms after the previous, so the stored order is the send
  // order, except where two requests raced on the wire; require it mostly.
  int in_order = 0;
  for (std::size_t i = 0; i < users.size(); ++i)
    in_order += users[i] == "q" + std::to_string(i);
  EXPECT_GE(in_order, 16) << "stored order strays from the send order";
  EXPECT_EQ(mock.requests().size(), 20u) << "each turn calls the model exactly once";
  // Every model call saw the whole history before it.
  auto calls = mock.requests();
  for (std::size_t k = 0; k < calls.size(); ++k)
    EXPECT_EQ(calls[k]["body"]["messages"].size(), 2 * k + 1) << "call " << k;
  EXPECT_EQ(c[0].host_of(id), "node-2");
}

TEST(cluster, a_session_moved_with_queued_turns_still_passivates_when_idle) {
  // The turns handed over with a migration are not counted as sent by the
  // new node's registry: the successor must still be let go when idle.
  scratch_db db;
  mock_llm mock;
  parley_cluster c{db, 3, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                           {"PARLEY_SESSION_IDLE_SECONDS", "1"}}};
  auto key = c[0].create_key("alice");
  auto id = session_on(c, key, 0);
  mock.configure({{"latency_ms", 400}});
  mock.clear();
  std::vector<http_result> results(3);
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; ++i) {
    ts.emplace_back([&, i] {
      results[static_cast<std::size_t>(i)] =
        c[i].post_message(key, id, {{"content", "q" + std::to_string(i)}});
    });
    if (i == 0)
      ASSERT_TRUE(wait_for([&] { return mock.requests().size() == 1; }, 5s));
    else
      std::this_thread::sleep_for(50ms);
  }
  auto r = c[1].admin("POST", "/admin/v1/sessions/" + id + "/migrate", {{"to", "node-2"}});
  for (auto& t : ts)
    t.join();
  ASSERT_EQ(r.status, 200) << describe(r);
  for (auto& t : results)
    EXPECT_EQ(t.status, 200) << describe(t);
  EXPECT_EQ(c[0].metric("parley_session_migrations_total"), 1);
  bool passive = wait_for(
    [&] { return c[2].admin("GET", "/admin/v1/sessions/" + id).js()["state"] == "passive"; }, 6s);
  EXPECT_TRUE(passive) << c[2].admin("GET", "/admin/v1/sessions/" + id).body;
  EXPECT_EQ(c[2].metric("parley_sessions_active"), 0);
  EXPECT_EQ(c[0].metric("parley_sessions_active"), 0) << "the old actor is gone too";
}

namespace {

/// Three nodes, 30 active sessions, four clients turning through node-0 and
/// node-1 while node-2 leaves: by the admin drain then SIGTERM, or by SIGTERM
/// alone. No client may see an error, and every history stays gapless.
void leave_under_load(bool admin_drain) {
  scratch_db db;
  parley_cluster c{db, 3};
  auto key = c[0].create_key("alice");
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i)
    ids.push_back(c[i % 3].create_session(key));
  for (auto& id : ids)
    ASSERT_EQ(c[0].post_message(key, id, {{"content", "warm"}}).status, 200);
  std::this_thread::sleep_for(1s); // one heartbeat carries the session counts
  std::uint64_t hosted = member(c[0], "node-2").value("sessions_active", 0u);
  EXPECT_GT(hosted, 0u) << "no session was placed on node-2";

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::mutex mu;
  std::string first_failure;
  std::vector<std::thread> load;
  for (int w = 0; w < 4; ++w)
    load.emplace_back([&, w] {
      for (int n = 0; n < 400 && !stop; ++n) {
        auto& id = ids[static_cast<std::size_t>((w * 7 + n) % 30)];
        auto r = c[w % 2].post_message(key, id, {{"content", "w" + std::to_string(w)}});
        if (r.status == 200)
          ++ok;
        else {
          ++failed;
          std::lock_guard<std::mutex> lock{mu};
          if (first_failure.empty())
            first_failure = describe(r);
        }
      }
    });
  std::this_thread::sleep_for(300ms);
  auto start = std::chrono::steady_clock::now();
  if (admin_drain) {
    auto d = c[0].admin("POST", "/admin/v1/nodes/node-2/drain");
    EXPECT_EQ(d.status, 202) << describe(d);
    bool emptied = wait_for(
      [&] {
        auto m = member(c[1], "node-2");
        return m.is_object() && m["status"] == "leaving" && m["sessions_active"] == 0;
      },
      20s);
    EXPECT_TRUE(emptied) << c[1].cluster().dump();
    EXPECT_EQ(c[2].call("GET", "/readyz", "").status, 503) << "a leaving node is not ready";
    std::printf("[ figures  ] admin drain of a node hosting %llu active sessions under load: "
                "%lld ms\n",
                static_cast<unsigned long long>(hosted), static_cast<long long>(elapsed_ms(start)));
  }
  EXPECT_EQ(c[2].process().terminate(), 0);
  if (!admin_drain)
    std::printf("[ figures  ] SIGTERM of a node hosting %llu active sessions under load: exit "
                "after %lld ms\n",
                static_cast<unsigned long long>(hosted), static_cast<long long>(elapsed_ms(start)));
  std::this_thread::sleep_for(500ms);
  stop = true;
  for (auto& t : load)
    t.join();
  EXPECT_EQ(failed.load(), 0) << first_failure;
  EXPECT_GT(ok.load(), 0);
  for (auto& id : ids)
    check_history(c[0].all_messages(key, id));
  EXPECT_EQ(member(c[0], "node-2")["status"], "down");
}

} // namespace

TEST(cluster, drain_then_sigterm_gives_no_client_error) { leave_under_load(true); }

TEST(cluster, sigterm_alone_drains_and_gives_no_client_error) { leave_under_load(false); }

TEST(cluster, sigterm_finishes_running_turns_and_moves_queued_ones_in_order) {
  // API.md §6 and §8: SIGTERM lets every turn already running on the node
  // finish and answer 200; the turns queued behind them, and those sent
  // after the signal, move to the new owner and complete there, in order,
  // once each. Clients talk both to the stopping node and to others that
  // route to it.
  scratch_db db;
  mock_llm mock;
  std::map<std::string, std::string> env{{"PARLEY_LLM_BASE_URL", mock.base_url()}};
  if (auto* redis = std::getenv("PARLEY_TEST_REDIS_URL"); redis && *redis)
    env["PARLEY_REDIS_URL"] = redis;
  parley_cluster c{db, 3, env};
  auto key = c[0].create_key("alice");
  // Four sessions on node-0; the node each turn's client talks to: [running,
  // first queued, second queued, sent after SIGTERM]. The last queued turns
  // come through node-1: node-0 has no answer of its own left to wait for
  // while they run on the new owners.
  const std::vector<std::vector<int>> via{{0, 0, 1, 2}, {1, 1, 1, 2}, {0, 1, 1, 2}, {1, 0, 1, 2}};
  constexpr std::size_t turns = 4;
  // One queued turn of each client node is streamed: its pieces come from
  // the new owner too, complete and in order, before its `done` event.
  auto streamed = [](std::size_t s, std::size_t t) { return t == 2 && (s == 1 || s == 2); };
  std::vector<std::string> ids;
  for (std::size_t s = 0; s < via.size(); ++s)
    ids.push_back(session_on(c, key, 0));
  mock.configure({{"latency_ms", 1500}});
  mock.clear();

  auto content = [](std::size_t s, std::size_t t) {
    return "s" + std::to_string(s) + "-t" + std::to_string(t);
  };
  std::vector<std::vector<http_result>> results(ids.size(), std::vector<http_result>(turns));
  std::vector<std::thread> clients;
  auto send = [&](std::size_t t) {
    for (std::size_t s = 0; s < ids.size(); ++s)
      clients.emplace_back([&, s, t] {
        auto text = content(s, t);
        json body{{"content", text}, {"client_message_id", "cmid-" + text}};
        if (streamed(s, t))
          body["stream"] = true;
        results[s][t] = c[via[s][t]].post_message(key, ids[s], body);
      });
  };
  send(0);
  // Every session's first turn is in its model call on node-0 ...
  ASSERT_TRUE(wait_for([&] { return mock.requests().size() == ids.size(); }, 5s))
    << mock.requests().dump();
  // ... and two more wait behind it, sent one after the other.
  send(1);
  std::this_thread::sleep_for(150ms);
  send(2);
  std::this_thread::sleep_for(150ms);
  ASSERT_EQ(mock.requests().size(), ids.size()) << "the first turns are still running";

  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(c[0].process().pid(), SIGTERM), 0);
  // While node-0 leaves and its first turns still run, one more turn per
  // session through node-2, which no longer routes to node-0.
  std::this_thread::sleep_for(300ms);
  send(3);
  int rc = c[0].process().terminate(60s);
  auto took = elapsed_ms(start);
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(rc, 0) << "node-0 exits 0 after SIGTERM\n" << c[0].process().log_tail(60);
  std::printf("[ figures  ] SIGTERM with %zu turns running, %zu queued and %zu arriving: exit "
              "after %lld ms\n",
              ids.size(), 2 * ids.size(), ids.size(), static_cast<long long>(took));

  for (std::size_t s = 0; s < ids.size(); ++s)
    for (std::size_t t = 0; t < turns; ++t) {
      auto& r = results[s][t];
      EXPECT_EQ(r.status, 200) << content(s, t) << " sent through node-" << via[s][t] << ": "
                               << describe(r);
      if (r.status != 200)
        continue;
      auto js = r.js();
      if (streamed(s, t)) {
        auto done = r.body.find("event: done\ndata: ");
        ASSERT_NE(done, std::string::npos) << r.body;
        std::string joined;
        for (auto at = r.body.find("event: delta\ndata: "); at < done;
             at = r.body.find("event: delta\ndata: ", at + 1)) {
          auto data = r.body.substr(at + 19);
          joined += json::parse(data.substr(0, data.find("\n\n")))["content"].get<std::string>();
        }
        auto data = r.body.substr(done + 18);
        js = json::parse(data.substr(0, data.find("\n\n")));
        EXPECT_EQ(joined, "mock: " + content(s, t)) << "streamed pieces of " << content(s, t);
      }
      EXPECT_EQ(js["user_message"]["content"], content(s, t));
      EXPECT_EQ(js["user_message"]["seq"], 2 * t + 1) << content(s, t);
      EXPECT_EQ(js["reply"]["reply_to"], 2 * t + 1) << content(s, t);
      EXPECT_EQ(js["reply"]["content"], "mock: " + content(s, t));
    }
  for (std::size_t s = 0; s < ids.size(); ++s) {
    auto users = check_history(c[1].all_messages(key, ids[s]));
    std::vector<std::string> sent;
    for (std::size_t t = 0; t < turns; ++t)
      sent.push_back(content(s, t));
    EXPECT_EQ(users, sent) << "session " << s << ": each turn stored once, in the order sent";
    EXPECT_NE(c[1].host_of(ids[s]), "node-0");
  }
  EXPECT_EQ(mock.requests().size(), turns * ids.size()) << "each turn calls the model once";
  // The sessions serve on from their new owners.
  mock.configure({{"latency_ms", 0}});
  for (std::size_t s = 0; s < ids.size(); ++s) {
    auto r = c[2].post_message(key, ids[s], {{"content", "after"}});
    EXPECT_EQ(r.status, 200) << describe(r);
    EXPECT_EQ(r.js()["user_message"]["seq"], 2 * turns + 1);
  }
}

TEST(cluster, sigkill_under_load_loses_no_acknowledged_turn) {
  scratch_db db;
  parley_cluster c{db, 3, {{"PARLEY_FAILURE_DETECT_MS", "1000"}}};
  auto key = c[0].create_key("alice");
  std::vector<std::string> ids;
  for (int i = 0; i < 24; ++i)
    ids.push_back(c[0].create_session(key));
  auto victim = session_on(c, key, 2);
  ids.push_back(victim);

  std::mutex mu;
  std::map<std::string, std::set<std::string>> acked; // session -> contents
  std::atomic<bool> stop{false};
  std::atomic<int> retries{0}, lost{0};
  std::vector<std::string> failures; // what the client saw instead of 200 (under mu)
  std::vector<std::thread> load;
  for (int w = 0; w < 4; ++w)
    load.emplace_back([&, w] {
      for (int n = 0; n < 300 && !stop; ++n) {
        auto& id = ids[static_cast<std::size_t>((w * 5 + n) % ids.size())];
        auto content = "w" + std::to_string(w) + "-" + std::to_string(n);
        int r_count = 0;
        auto r = post_retrying(c[w % 2], key, id,
                               {{"content", content}, {"client_message_id", content}}, &r_count);
        retries += r_count;
        std::lock_guard<std::mutex> lock{mu};
        if (r.status == 200) {
          acked[id].insert(content);
        } else {
          ++lost;
          failures.push_back(content + " on session " + id + ": " + describe(r));
        }
      }
    });
  std::this_thread::sleep_for(500ms);
  c[2].kill9();
  auto killed = std::chrono::steady_clock::now();
  // The survivors declare it down within PARLEY_FAILURE_DETECT_MS + 1 s.
  bool down = wait_for([&] { return member(c[0], "node-2")["status"] == "down"; }, 2s);
  auto detect_ms = elapsed_ms(killed);
  EXPECT_TRUE(down) << c[0].cluster().dump();
  // A session the dead node hosted serves again from its new owner.
  auto r = post_retrying(c[1], key, victim, {{"content", "after-kill"}});
  auto failover_ms = elapsed_ms(killed);
  EXPECT_EQ(r.status, 200) << describe(r);
  std::printf("[ figures  ] SIGKILL: declared down after %lld ms, its session served again "
              "after %lld ms\n",
              static_cast<long long>(detect_ms), static_cast<long long>(failover_ms));
  std::this_thread::sleep_for(500ms);
  stop = true;
  for (auto& t : load)
    t.join();
  EXPECT_EQ(lost.load(), 0) << testing::PrintToString(failures);
  for (auto& id : ids) {
    auto users = check_history(c[0].all_messages(key, id));
    std::multiset<std::string> stored(users.begin(), users.end());
    for (auto& content : acked[id])
      EXPECT_EQ(stored.count(content), 1u) << "acknowledged turn " << content << " in " << id;
  }
  std::printf("[ figures  ] client retries (503/429 with the same client_message_id): %d\n",
              retries.load());
}

TEST(cluster, a_retry_after_the_hosting_node_died_completes_the_turn_exactly_once) {
  scratch_db db;
  mock_llm mock;
  parley_cluster c{db, 3, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                           {"PARLEY_FAILURE_DETECT_MS", "1000"}}};
  auto key = c[0].create_key("alice");
  auto id = session_on(c, key, 2);
  ASSERT_EQ(c[0].post_message(key, id, {{"content", "first"}}).status, 200);
  mock.configure({{"latency_ms", 1500}});
  json body{{"content", "in flight"}, {"client_message_id", "crash-1"}};
  http_result during;
  std::thread t{[&] { during = c[0].post_message(key, id, body); }};
  // The model call is running on node-2 when it dies.
  ASSERT_TRUE(wait_for([&] { return mock.requests().size() == 2; }, 5s));
  c[2].kill9();
  t.join();
  EXPECT_EQ(during.status, 503) << describe(during);
  EXPECT_FALSE(during.header("retry-after").empty());
  mock.configure({{"latency_ms", 0}});
  auto retry = post_retrying(c[0], key, id, body);
  ASSERT_EQ(retry.status, 200) << describe(retry);
  EXPECT_EQ(retry.js()["user_message"]["seq"], 3);
  auto again = c[1].post_message(key, id, body);
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.js(), retry.js()) << "the retry is answered from the stored turn";
  auto msgs = c[1].all_messages(key, id);
  ASSERT_EQ(msgs.size(), 4u);
  check_history(msgs);
  EXPECT_EQ(msgs[2]["content"], "in flight");
}

// A node stopped (SIGSTOP) past failure detection comes back to a cluster
// that declared it down and moved its sessions; its peers were down in its
// own view for that moment. Every turn sent meanwhile, to any node, gets an
// answer (200, or 503 to retry) within a bound far below the edge's safety
// net: a turn whose answer was lost in the flap would wait for minutes.
TEST(cluster, a_node_paused_past_failure_detection_leaves_no_turn_unanswered) {
  scratch_db db;
  mock_llm mock;
  mock.configure({{"latency_ms", 300}});
  parley_cluster c{db, 3, {{"PARLEY_LLM_BASE_URL", mock.base_url()}}};
  auto key = c[0].create_key("alice");
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i)
    ids.push_back(c[i % 3].create_session(key));
  continue_on_exit cont{c}; // whatever happens below, no node stays stopped

  std::mutex mu;
  std::map<std::string, std::set<std::string>> acked; // session -> contents
  std::vector<std::string> hung, lost;                // under mu
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int w = 0; w < 6; ++w)
    load.emplace_back([&, w] {
      for (int n = 0; n < 400 && !stop; ++n) {
        auto& id = ids[static_cast<std::size_t>((w * 7 + n) % ids.size())];
        auto content = "w" + std::to_string(w) + "-" + std::to_string(n);
        auto body = json{{"content", content}, {"client_message_id", content}}.dump();
        http_result r;
        for (int attempt = 0; attempt < 20 && r.status != 200; ++attempt) {
          auto& node = c[(w + n + attempt) % 3];
          auto t0 = std::chrono::steady_clock::now();
          r = http(node.port(), "POST", "/v1/sessions/" + id + "/messages", body,
                   {{"Authorization", "Bearer " + key}}, 15s);
          if (r.status == 0 && elapsed_ms(t0) >= 14000) {
            std::lock_guard<std::mutex> lock{mu};
            hung.push_back(content + " on session " + id + " via " + node.node_id());
          }
          if (r.status != 200)
            std::this_thread::sleep_for(200ms);
        }
        std::lock_guard<std::mutex> lock{mu};
        if (r.status == 200)
          acked[id].insert(content);
        else
          lost.push_back(content + " on session " + id + ": " + describe(r));
      }
    });
  std::this_thread::sleep_for(2s);
  for (int round = 0; round < 3; ++round) {
    auto& paused = c[1 + round % 2];
    ::kill(paused.process().pid(), SIGSTOP);
    std::this_thread::sleep_for(4s); // past PARLEY_FAILURE_DETECT_MS (1.5 s here)
    ::kill(paused.process().pid(), SIGCONT);
    EXPECT_TRUE(c.wait_converged(3)) << "round " << round;
    std::this_thread::sleep_for(4s);
  }
  stop = true;
  for (auto& t : load)
    t.join();
  EXPECT_TRUE(hung.empty()) << "no answer within 15 s: " << testing::PrintToString(hung);
  EXPECT_TRUE(lost.empty()) << testing::PrintToString(lost);
  for (auto& id : ids) {
    auto users = check_history(c[0].all_messages(key, id));
    std::multiset<std::string> stored(users.begin(), users.end());
    for (auto& content : acked[id])
      EXPECT_EQ(stored.count(content), 1u) << "acknowledged turn " << content << " in " << id;
  }
}

TEST(cluster, two_actors_of_one_session_race_and_only_the_current_one_commits) {
  // Two nodes that do not know each other (a partition from the start) on
  // one database: each activates the session; the later activation wins and
  // the stale actor's commit is refused, never stored.
  scratch_db db;
  parley_node a{db, {{"PARLEY_NODE_ID", "island-a"}}};
  parley_node b{db, {{"PARLEY_NODE_ID", "island-b"}}};
  auto key = a.create_key("alice");
  auto id = a.create_session(key);
  ASSERT_EQ(a.post_message(key, id, {{"content", "on a"}}).status, 200);
  ASSERT_EQ(b.post_message(key, id, {{"content", "on b"}}).status, 200);
  auto stale = a.post_message(key, id, {{"content", "stale a"}});
  EXPECT_EQ(stale.status, 503) << describe(stale);
  EXPECT_FALSE(stale.header("retry-after").empty());
  auto users = check_history(a.all_messages(key, id));
  EXPECT_EQ(users, (std::vector<std::string>{"on a", "on b"}));
  // A retry re-activates on a with a newer epoch and commits after b's turn.
  auto retry = a.post_message(key, id, {{"content", "stale a"}});
  ASSERT_EQ(retry.status, 200) << describe(retry);
  EXPECT_EQ(retry.js()["user_message"]["seq"], 5);
  // Now b is the stale one.
  EXPECT_EQ(b.post_message(key, id, {{"content", "stale b"}}).status, 503);
  users = check_history(b.all_messages(key, id));
  EXPECT_EQ(users, (std::vector<std::string>{"on a", "on b", "stale a"}));
}

TEST(cluster, heavy_load_raises_no_false_alarm) {
  // A short failure-detection time and every core busy with turns crossing
  // nodes: no member may be declared down, so the view never changes.
  scratch_db db;
  parley_cluster c{db, 3, {{"PARLEY_FAILURE_DETECT_MS", "500"}}};
  auto key = c[0].create_key("alice");
  std::vector<std::string> ids;
  for (int i = 0; i < 24; ++i)
    ids.push_back(c[0].create_session(key));
  std::vector<std::uint64_t> before;
  for (int i = 0; i < 3; ++i)
    before.push_back(c[i].cluster()["view_version"]);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> load;
  for (int w = 0; w < 12; ++w)
    load.emplace_back([&, w] {
      // Keep-alive connections, one per node, as a load balancer would hold.
      std::vector<std::unique_ptr<http_connection>> conns;
      for (int i = 0; i < 3; ++i)
        conns.push_back(std::make_unique<http_connection>(c[i].port()));
      for (int n = 0; n < 2000 && !stop; ++n) {
        auto& id = ids[static_cast<std::size_t>((w + n) % 24)];
        auto r = conns[static_cast<std::size_t>((w + n) % 3)]->request(
          "POST", "/v1/sessions/" + id + "/messages", json{{"content", "load"}}.dump(),
          {{"Authorization", "Bearer " + key}});
        if (r.status == 200)
          ++ok;
        else if (failed++ == 0)
          ADD_FAILURE() << "first failure: " << describe(r);
      }
    });
  std::this_thread::sleep_for(5s);
  stop = true;
  for (auto& t : load)
    t.join();
  std::printf("[ figures  ] %d turns in 5 s across 3 nodes with PARLEY_FAILURE_DETECT_MS=500\n",
              ok.load());
  EXPECT_EQ(failed.load(), 0);
  for (int i = 0; i < 3; ++i) {
    auto view = c[i].cluster();
    EXPECT_EQ(view["view_version"], before[static_cast<std::size_t>(i)])
      << "node-" << i << " saw a membership change under load: " << view.dump();
    for (auto& m : view["nodes"])
      EXPECT_EQ(m["status"], "up") << view.dump();
  }
}

TEST(cluster, a_streamed_turn_crosses_nodes_in_order) {
  scratch_db db;
  parley_cluster c{db, 3};
  auto key = c[0].create_key("alice");
  auto id = session_on(c, key, 2);
  auto r = c[0].post_message(key, id, {{"content", "one two three four five"}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  auto done = r.body.find("event: done\ndata: ");
  ASSERT_NE(done, std::string::npos) << r.body;
  std::string joined;
  int deltas = 0;
  for (auto at = r.body.find("event: delta\ndata: "); at != std::string::npos && at < done;
       at = r.body.find("event: delta\ndata: ", at + 1), ++deltas) {
    auto data = r.body.substr(at + 19);
    joined += json::parse(data.substr(0, data.find("\n\n")))["content"].get<std::string>();
  }
  EXPECT_GE(deltas, 2) << "the echo model streams word by word, the mock in 4-byte pieces";
  EXPECT_EQ(joined, expected_reply("one two three four five"))
    << "pieces arrive complete and in order";
  EXPECT_EQ(r.body.find("event: delta", done), std::string::npos) << "no delta after done";
  check_history(c[1].all_messages(key, id));
}

TEST(cluster, the_cluster_view_carries_every_nodes_figures_and_skips_a_silent_one) {
  scratch_db db;
  parley_cluster c{db, 3};
  auto key = c[0].create_key("alice");
  for (int n = 0; n < 3; ++n) {
    auto id = session_on(c, key, n);
    for (int t = 0; t < 2; ++t)
      ASSERT_EQ(c[(n + 1) % 3].post_message(key, id, {{"content", "x"}}).status, 200);
  }
  // Asked through node-0, every node's own figures: node-1's sessions as
  // node-1 itself counts them, its actor types, its HTTP totals.
  auto view = c[0].cluster();
  ASSERT_EQ(view["nodes"].size(), 3u);
  for (auto& m : view["nodes"]) {
    auto& stats = m["stats"];
    ASSERT_TRUE(stats.is_object()) << m.dump();
    auto i = std::stoi(m["id"].get<std::string>().substr(5)); // node-<i> is c[i]
    EXPECT_EQ(stats["sessions_active"].get<double>(), c[i].metric("parley_sessions_active"));
    // One answer shows one count: the member's line agrees with its figures
    // (it lagged them by a heartbeat, 0 beside 1 right after the turns).
    EXPECT_EQ(m["sessions_active"], stats["sessions_active"]) << m.dump();
    EXPECT_GT(stats["http"]["requests"].get<int>(), 0);
    EXPECT_GT(stats["rss_bytes"].get<double>(), 1e6);
    EXPECT_GE(stats["storage"]["commits"].get<int>(), 2);
    bool saw_session = false;
    for (auto& a : stats["actors"])
      if (a["type"] == "session") {
        saw_session = true;
        EXPECT_GE(a["count"].get<int>(), 1);
        EXPECT_GE(a["messages"].get<int>(), 4);
        EXPECT_GT(a["processing_p99_seconds"].get<double>(), 0);
      }
    EXPECT_TRUE(saw_session) << stats.dump();
  }
  // A hung node (stopped, still "up" until detected) costs the view at
  // most the stats timeout and shows as "stats": null.
  ::kill(c[2].process().pid(), SIGSTOP);
  auto t0 = std::chrono::steady_clock::now();
  auto hung = c[0].cluster();
  auto waited = elapsed_ms(t0);
  ::kill(c[2].process().pid(), SIGCONT);
  EXPECT_LT(waited, 3000);
  ASSERT_TRUE(hung.is_object());
  for (auto& m : hung["nodes"])
    EXPECT_EQ(m["stats"].is_null(), m["id"] == "node-2") << m.dump();
}

TEST(cluster, actors_route_needs_the_admin_token) {
  scratch_db db;
  parley_cluster c{db, 2};
  auto key = c[0].create_key("alice");
  auto id = session_on(c, key, 1);
  ASSERT_EQ(c[0].post_message(key, id, {{"content", "x"}}).status, 200);
  EXPECT_EQ(http(c[1].port(), "GET", "/admin/v1/actors").status, 401);
  EXPECT_EQ(http(c[1].port(), "GET", "/admin/v1/actors", "", {{"Authorization", "Bearer " + key}})
              .status,
            403);
  auto r = c[1].admin("GET", "/admin/v1/actors");
  ASSERT_EQ(r.status, 200);
  auto body = r.js();
  EXPECT_EQ(body["node"], "node-1");
  std::set<std::string> types;
  for (auto& a : body["actors"]) {
    types.insert(a["type"].get<std::string>());
    for (auto field : {"count", "mailbox_depth", "messages", "processing_p50_seconds",
                       "processing_p99_seconds"})
      EXPECT_TRUE(a.contains(field)) << a.dump();
  }
  for (auto type : {"edge", "registry", "session", "storage", "llm", "membership"})
    EXPECT_EQ(types.count(type), 1u) << type << " missing from " << r.body;
  EXPECT_GE(c[1].metric("parley_actor_messages_total{actor=\"session\"}"), 3);
  EXPECT_GE(c[1].metric("parley_actor_processing_seconds_count{actor=\"session\"}"), 3);
  EXPECT_EQ(c[1].metric("parley_actors{actor=\"session\"}"), 1);
}

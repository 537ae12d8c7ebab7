// The ratelimit actor and the revocation listener against real Redis
// servers: Redis decides while it is up; the local bucket answers within the
// bound while it is down, hung or late; Redis is used again after a restart;
// revocations published on one side reach the listener's target.

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <optional>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/ratelimit_actor.hpp"
#include "runtime/rules/token_budget.hpp"
#include "tests/support/redis_server.hpp"

using namespace std::chrono_literals;
using namespace parley;
using parley::test::redis_server;
using parley::test::shared_redis_url;
using parley::test::unique_name;

namespace {

using steady = std::chrono::steady_clock;

struct two_threads : caf::actor_system_config {
  two_threads() {
    set("scheduler.max-threads", 2);
    register_ratelimit_types(*this);
  }
};

class ratelimit : public ::testing::Test {
protected:
  ~ratelimit() override {
    for (auto& a : spawned_)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }

  ratelimit_actor limiter(const std::string& url, std::string prefix = unique_name("rl") + ":",
                          ratelimit_config cfg = {}) {
    cfg.redis_url = url;
    cfg.key_prefix = std::move(prefix);
    auto rl = spawn_ratelimit_actor(sys_, cfg);
    spawned_.push_back(caf::actor_cast<caf::actor>(rl));
    return rl;
  }

  caf::actor listener(const std::string& url, const caf::actor& target) {
    auto typed = caf::actor_cast<revocation_target_actor>(target);
    spawned_.push_back(caf::actor_cast<caf::actor>(spawn_revocation_listener(sys_, url, typed)));
    return spawned_.back();
  }

  /// One rate check with a 40 ms deadline, as the edge will send it.
  rate_decision check(const ratelimit_actor& rl, const std::string& key, std::int32_t rate,
                      std::int32_t nodes, std::chrono::nanoseconds budget = 40ms) {
    rate_decision out;
    out.allowed = false;
    caf::scoped_actor self{sys_};
    self->request(rl, 2s, rate_check_atom::value,
                  rate_check_request{key, rate, nodes, rate_check_deadline(budget)})
      .receive([&](const rate_decision& d) { out = d; },
               [&](caf::error& e) { ADD_FAILURE() << sys_.render(e); });
    return out;
  }

  /// check() and how long it took.
  std::pair<rate_decision, steady::duration> timed_check(const ratelimit_actor& rl,
                                                         const std::string& key,
                                                         std::int32_t rate, std::int32_t nodes) {
    auto start = steady::now();
    auto d = check(rl, key, rate, nodes);
    return {d, steady::now() - start};
  }

  /// A chat request of `key` against a daily budget (and a rate, 0: none).
  rate_decision budget_check(const ratelimit_actor& rl, const std::string& key,
                             std::int64_t budget, std::int64_t reserve, std::int32_t nodes = 1,
                             std::int32_t rate = 0) {
    rate_check_request r{key, rate, nodes, rate_check_deadline(40ms)};
    r.budget = budget;
    r.reserve = reserve;
    r.day = day_;
    rate_decision out;
    out.allowed = false;
    caf::scoped_actor self{sys_};
    self->request(rl, 2s, rate_check_atom::value, r)
      .receive([&](const rate_decision& d) { out = d; },
               [&](caf::error& e) { ADD_FAILURE() << sys_.render(e); });
    return out;
  }

  /// The end of a call admitted by `d`, which spent `actual` tokens.
  void settle(const ratelimit_actor& rl, const std::string& key, const rate_decision& d,
              std::int64_t actual) {
    caf::anon_send(rl, settle_atom::value,
                   budget_settlement{key, day_, d.reserved, actual, d.redis_ok});
  }

  /// Polls `f` until it holds or 3 s passed.
  template <class F>
  bool eventually(F f) {
    for (auto until = steady::now() + 3s; steady::now() < until;) {
      if (f())
        return true;
      std::this_thread::sleep_for(20ms);
    }
    return f();
  }

  /// Today (UTC): the actor keeps settlements of today only (a day that is
  /// over is dropped), so a fixed day failed every run after it.
  std::int64_t day_ = utc_day(std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());

  bool status(const ratelimit_actor& rl) {
    bool out = false;
    caf::scoped_actor self{sys_};
    self->request(rl, 2s, redis_status_atom::value)
      .receive([&](bool ok) { out = ok; }, [&](caf::error& e) { ADD_FAILURE() << sys_.render(e); });
    return out;
  }

  two_threads cfg_;
  caf::actor_system sys_{cfg_};
  std::vector<caf::actor> spawned_;
};

} // namespace

TEST_F(ratelimit, redis_decides_while_it_is_up) {
  auto rl = limiter(shared_redis_url());
  for (int i = 0; i < 3; ++i) {
    auto d = check(rl, "key-1", 3, 4);
    EXPECT_TRUE(d.redis_ok);
    EXPECT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.limit, 3) << "the cluster-wide rate, not a node's share";
    EXPECT_EQ(d.remaining, 2 - i);
  }
  auto denied = check(rl, "key-1", 3, 4);
  EXPECT_TRUE(denied.redis_ok);
  EXPECT_FALSE(denied.allowed);
  EXPECT_GT(denied.retry_after_ms, 15000);
  EXPECT_LE(denied.retry_after_ms, 20000);
  EXPECT_TRUE(check(rl, "key-2", 3, 4).allowed);
  EXPECT_TRUE(status(rl));
}

TEST_F(ratelimit, two_nodes_share_one_bucket_through_redis) {
  auto prefix = unique_name("cluster") + ":";
  auto n1 = limiter(shared_redis_url(), prefix);
  auto n2 = limiter(shared_redis_url(), prefix);
  int allowed = 0;
  for (int i = 0; i < 5; ++i) {
    allowed += check(n1, "key", 6, 2).allowed;
    allowed += check(n2, "key", 6, 2).allowed;
  }
  EXPECT_EQ(allowed, 6) << "the rate is cluster-wide, not per node";
}

TEST_F(ratelimit, a_late_request_is_answered_locally) {
  auto rl = limiter(shared_redis_url());
  auto d = check(rl, "key", 10, 2, -1ms);
  EXPECT_FALSE(d.redis_ok);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.limit, 5);
}

TEST_F(ratelimit, without_redis_the_nodes_share_applies_at_once) {
  for (auto url : {std::string{}, "redis://127.0.0.1:" + std::to_string(test::unused_port())}) {
    auto rl = limiter(url);
    int allowed = 0;
    for (int i = 0; i < 8; ++i) {
      auto [d, took] = timed_check(rl, "key", 10, 2);
      EXPECT_FALSE(d.redis_ok);
      EXPECT_EQ(d.limit, 5);
      EXPECT_LT(took, 100ms);
      allowed += d.allowed;
      if (!d.allowed) {
        EXPECT_GT(d.retry_after_ms, 0);
        EXPECT_LE(d.retry_after_ms, 12000) << "5 per minute: one token every 12 s";
      }
    }
    EXPECT_EQ(allowed, 5) << "url '" << url << "'";
    EXPECT_FALSE(status(rl));
  }
}

TEST_F(ratelimit, rate_zero_is_off) {
  auto rl = limiter("");
  for (int i = 0; i < 20; ++i)
    EXPECT_TRUE(check(rl, "key", 0, 1).allowed);
}

TEST_F(ratelimit, a_bad_url_is_refused_at_spawn) {
  ratelimit_config cfg;
  cfg.redis_url = "redis://host:notaport";
  EXPECT_THROW(spawn_ratelimit_actor(sys_, cfg), std::invalid_argument);
  EXPECT_THROW(spawn_revocation_listener(sys_, "http://x", revocation_target_actor{}), std::invalid_argument);
}

TEST_F(ratelimit, falls_back_within_the_bound_when_redis_stops_and_returns_after_a_restart) {
  redis_server server;
  auto rl = limiter(server.url());
  auto up = check(rl, "key", 600, 3);
  EXPECT_TRUE(up.redis_ok);
  EXPECT_EQ(up.limit, 600);

  server.stop();
  for (auto until = steady::now() + 1200ms; steady::now() < until;) {
    auto [d, took] = timed_check(rl, "key", 600, 3);
    EXPECT_FALSE(d.redis_ok);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.limit, 200);
    EXPECT_LT(took, 100ms);
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_FALSE(status(rl));

  server.restart();
  bool back = false;
  for (auto until = steady::now() + 5s; !back && steady::now() < until;) {
    back = check(rl, "key", 600, 3).redis_ok;
    if (!back)
      std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(back) << "Redis must be used again without a restart";
  EXPECT_TRUE(status(rl));
}

TEST_F(ratelimit, a_hung_redis_never_holds_a_request_beyond_the_bound) {
  redis_server server;
  auto rl = limiter(server.url());
  ASSERT_TRUE(check(rl, "key", 600, 2).redis_ok);
  server.hang();
  for (auto until = steady::now() + 1200ms; steady::now() < until;) {
    auto [d, took] = timed_check(rl, "key", 600, 2);
    EXPECT_FALSE(d.redis_ok);
    EXPECT_LT(took, 100ms);
    std::this_thread::sleep_for(20ms);
  }
  server.resume();
}

TEST_F(ratelimit, a_burst_against_a_hung_redis_drains_at_local_speed) {
  redis_server server;
  auto rl = limiter(server.url());
  ASSERT_TRUE(check(rl, "key", 600, 2).redis_ok);
  server.hang();
  // The first request waits for the command timeout; the others queue behind
  // it and must then be answered locally (they are late, and Redis is in its
  // backoff), not one by one from Redis, which would take 100 x 50 ms.
  caf::scoped_actor self{sys_};
  constexpr int burst = 100;
  auto start = steady::now();
  for (int i = 0; i < burst; ++i)
    self->send(rl, rate_check_atom::value,
               rate_check_request{"key", 600, 2, rate_check_deadline(40ms)});
  int answers = 0, from_redis = 0;
  for (bool more = true; more && answers < burst;)
    self->receive(
      [&](const rate_decision& d) {
        ++answers;
        from_redis += d.redis_ok;
      },
      caf::after(2s) >> [&] { more = false; });
  EXPECT_EQ(answers, burst);
  EXPECT_EQ(from_redis, 0);
  EXPECT_LT(steady::now() - start, 500ms);
  server.resume();
}

TEST_F(ratelimit, redis_status_notices_a_change_without_traffic) {
  redis_server server;
  auto rl = limiter(server.url());
  EXPECT_TRUE(status(rl)) << "the first status pings";
  server.stop();
  std::this_thread::sleep_for(1100ms); // older than status_max_age
  EXPECT_FALSE(status(rl));
}

TEST_F(ratelimit, a_published_revocation_reaches_the_listeners_target) {
  auto url = shared_redis_url();
  caf::scoped_actor target{sys_};
  auto lst = listener(url, target);
  auto rl = limiter(url);
  std::optional<std::string> got;
  for (auto until = steady::now() + 5s; !got && steady::now() < until;) {
    // The listener may not have subscribed yet; publish until it hears one.
    caf::anon_send(rl, publish_revoked_atom::value, std::string{"pk_deadbeef"});
    target->receive([&](key_revoked_atom, const std::string& payload) { got = payload; },
                    caf::after(300ms) >> [] {});
  }
  EXPECT_EQ(got.value_or("<none>"), "pk_deadbeef");

  target->monitor(lst);
  caf::anon_send_exit(lst, caf::exit_reason::user_shutdown);
  bool down = false;
  auto start = steady::now();
  while (!down && steady::now() - start < 3s)
    target->receive([&](const caf::down_msg& m) { down = m.source == lst.address(); },
                    [&](key_revoked_atom, const std::string&) {}, caf::after(3s) >> [] {});
  EXPECT_TRUE(down);
  EXPECT_LT(steady::now() - start, 1s) << "it checks for exit between reads of 200 ms";
}

TEST_F(ratelimit, the_listener_stops_promptly_while_redis_is_down) {
  caf::scoped_actor target{sys_};
  auto lst = listener("redis://127.0.0.1:" + std::to_string(test::unused_port()), target);
  std::this_thread::sleep_for(300ms); // let it fail and back off
  target->monitor(lst);
  auto start = steady::now();
  caf::anon_send_exit(lst, caf::exit_reason::user_shutdown);
  bool down = false;
  target->receive([&](const caf::down_msg&) { down = true; }, caf::after(3s) >> [] {});
  EXPECT_TRUE(down);
  EXPECT_LT(steady::now() - start, 1s);
}

TEST_F(ratelimit, the_listener_quits_when_its_target_terminates) {
  caf::actor lst;
  {
    caf::scoped_actor target{sys_};
    lst = listener(shared_redis_url(), target);
  }
  caf::scoped_actor watcher{sys_};
  watcher->monitor(lst);
  bool down = false;
  watcher->receive([&](const caf::down_msg&) { down = true; }, caf::after(3s) >> [] {});
  EXPECT_TRUE(down);
}

// -- daily budgets (issue 19, item 4) -----------------------------------------

TEST_F(ratelimit, a_budget_holds_across_nodes_through_redis_and_spend_settles_after) {
  auto prefix = unique_name("budget") + ":";
  auto n1 = limiter(shared_redis_url(), prefix);
  auto n2 = limiter(shared_redis_url(), prefix);
  auto a = budget_check(n1, "key", 100, 80, 2);
  EXPECT_TRUE(a.redis_ok);
  EXPECT_TRUE(a.allowed);
  EXPECT_EQ(a.budget, 100) << "the cluster-wide budget, not a node's share";
  EXPECT_EQ(a.reserved, 80);
  auto b = budget_check(n2, "key", 100, 80, 2); // the other node, at once
  EXPECT_TRUE(b.allowed);
  EXPECT_EQ(b.spent, 80);
  EXPECT_EQ(b.reserved, 20);
  auto refused = budget_check(n1, "key", 100, 80, 2);
  EXPECT_FALSE(refused.allowed);
  EXPECT_FALSE(refused.budget_ok);
  // The calls spent 30 and 10: each node settles its own, and the other
  // node sees the sum without asking for it.
  settle(n1, "key", a, 30);
  settle(n2, "key", b, 10);
  EXPECT_TRUE(eventually([&] {
    auto d = budget_check(n2, "key", 100, 0, 2);
    return d.allowed && d.spent == 40;
  }));
  // A call that failed gives its reservation back.
  auto c = budget_check(n1, "key", 100, 60, 2);
  ASSERT_TRUE(c.allowed);
  EXPECT_EQ(c.reserved, 60);
  settle(n1, "key", c, 0);
  EXPECT_TRUE(eventually([&] { return budget_check(n2, "key", 100, 0, 2).spent == 40; }));
}

TEST_F(ratelimit, a_spent_budget_refuses_before_the_rate_limit_counts) {
  auto rl = limiter(shared_redis_url());
  auto d = budget_check(rl, "key", 10, 10, 1, 3);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 2);
  for (int i = 0; i < 3; ++i)
    EXPECT_FALSE(budget_check(rl, "key", 10, 10, 1, 3).budget_ok);
  EXPECT_EQ(check(rl, "key", 3, 1).remaining, 1) << "refused calls took no rate token";
}

TEST_F(ratelimit, without_redis_each_node_spends_its_share_and_carries_it_to_redis_after) {
  redis_server server;
  auto prefix = unique_name("budget") + ":";
  auto rl = limiter(server.url(), prefix);
  auto up = budget_check(rl, "key", 300, 50, 3);
  ASSERT_TRUE(up.redis_ok);
  settle(rl, "key", up, 50);
  server.stop();
  // Down: this node's share is 300 / 3 = 100, and its own 50 count.
  auto d = budget_check(rl, "key", 300, 40, 3);
  EXPECT_FALSE(d.redis_ok);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.budget, 100);
  EXPECT_EQ(d.spent, 50);
  EXPECT_EQ(d.reserved, 40);
  settle(rl, "key", d, 45);
  auto e = budget_check(rl, "key", 300, 40, 3);
  EXPECT_TRUE(e.allowed);
  EXPECT_EQ(e.spent, 95);
  EXPECT_EQ(e.reserved, 5);
  settle(rl, "key", e, 5);
  auto refused = budget_check(rl, "key", 300, 1, 3);
  EXPECT_FALSE(refused.redis_ok);
  EXPECT_FALSE(refused.budget_ok);
  EXPECT_EQ(refused.spent, 100);
  // Back (a restarted server without persistence: its counters are gone):
  // what this node spent while it was down, 45 + 5, reaches the counter.
  server.restart();
  EXPECT_TRUE(eventually([&] {
    auto x = budget_check(rl, "key", 300, 0, 3);
    return x.redis_ok && x.spent == 50;
  }));
}

TEST_F(ratelimit, a_budget_of_zero_is_unlimited_and_counts_nothing) {
  auto prefix = unique_name("budget") + ":";
  auto rl = limiter(shared_redis_url(), prefix);
  for (int i = 0; i < 5; ++i) {
    auto d = budget_check(rl, "key", 0, 1000000);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.reserved, 0);
  }
  auto ep = storage::parse_redis_url(shared_redis_url());
  auto r = test::raw_command(ep.host, ep.port,
                             {"EXISTS", prefix + "budget:key:" + std::to_string(day_)});
  EXPECT_EQ(r->integer, 0);
}

namespace {

/// Script calls (EVALSHA and EVAL) the server has run since its last
/// CONFIG RESETSTAT, from INFO commandstats.
std::int64_t script_calls(const redis_server& server) {
  auto r = test::raw_command("127.0.0.1", server.port(), {"INFO", "commandstats"});
  std::string info = r && r->str ? std::string{r->str, r->len} : std::string{};
  std::int64_t total = 0;
  for (const char* name : {"cmdstat_evalsha:calls=", "cmdstat_eval:calls="})
    if (auto at = info.find(name); at != std::string::npos)
      total += std::stoll(info.substr(at + std::strlen(name)));
  return total;
}

} // namespace

// Issue 19's cost target: budgets add no Redis round trip to a request.
// Requests that come while settlements are pending carry them in their own
// script call; only what none carried costs a call of its own, at most one
// per settle delay.
TEST_F(ratelimit, settlements_ride_on_the_next_check_and_add_no_round_trip) {
  redis_server server;
  auto rl = limiter(server.url());
  auto first = budget_check(rl, "key", 1000000, 100, 1, 600);
  ASSERT_TRUE(first.redis_ok);
  test::raw_command("127.0.0.1", server.port(), {"CONFIG", "RESETSTAT"});
  // 50 calls one after the other, as one busy client: each check carries
  // the previous call's settlement.
  auto d = first;
  for (int i = 0; i < 50; ++i) {
    settle(rl, "key", d, 10);
    d = budget_check(rl, "key", 1000000, 100, 1, 600);
    ASSERT_TRUE(d.redis_ok);
    ASSERT_TRUE(d.allowed);
  }
  EXPECT_EQ(script_calls(server), 50) << "one script call per request, settlements included";
  EXPECT_EQ(d.spent, 50 * 10) << "every earlier call's spend, settled";
  // The last one has no check to ride on: one call of its own.
  settle(rl, "key", d, 10);
  EXPECT_TRUE(eventually([&] { return script_calls(server) == 51; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(script_calls(server), 51);
  auto last = budget_check(rl, "key", 1000000, 0, 1, 600);
  EXPECT_EQ(last.spent, 51 * 10);
}

// Issue 19's cost target, for a busy node: the checks that queue while a
// script call runs are decided together in the next one, so a node makes
// one Redis round trip per batch, not per request, and a batch decides
// exactly as its requests would one by one.
TEST_F(ratelimit, a_burst_of_checks_shares_script_calls_and_decides_as_one_by_one) {
  redis_server server;
  auto rl = limiter(server.url());
  ASSERT_TRUE(check(rl, "warm", 600, 1).redis_ok);
  test::raw_command("127.0.0.1", server.port(), {"CONFIG", "RESETSTAT"});
  // 300 requests at once of one key with a budget of 1,000 tokens, each
  // reserving 7, and a bucket of 200 per minute: the budget runs out first,
  // after 142 x 7 + 6; the bucket never denies.
  caf::scoped_actor self{sys_};
  constexpr int burst = 300;
  for (int i = 0; i < burst; ++i) {
    rate_check_request r{"key", 200, 1, rate_check_deadline(5s)};
    r.budget = 1000;
    r.reserve = 7;
    r.day = day_;
    self->send(rl, rate_check_atom::value, r);
  }
  int answers = 0, from_redis = 0, allowed = 0, over_budget = 0;
  std::int64_t reserved = 0;
  for (bool more = true; more && answers < burst;)
    self->receive(
      [&](const rate_decision& d) {
        ++answers;
        from_redis += d.redis_ok;
        allowed += d.allowed;
        over_budget += !d.budget_ok;
        reserved += d.reserved;
      },
      caf::after(5s) >> [&] { more = false; });
  ASSERT_EQ(answers, burst);
  EXPECT_EQ(from_redis, burst);
  EXPECT_EQ(allowed, 143);
  EXPECT_EQ(reserved, 1000) << "never more than the budget, however the batches fell";
  EXPECT_EQ(over_budget, burst - 143);
  auto calls = script_calls(server);
  EXPECT_GE(calls, 3) << "at most max_batch (128) requests per call";
  EXPECT_LE(calls, burst / 4) << "the queued checks shared calls";
  std::cout << "[ INFO     ] " << burst << " checks in " << calls << " script calls\n";
}

// Leases: a key with a budget and no rate limit needs Redis only about once
// per lease_calls calls; what a lease holds is reserved in Redis, so the
// cluster never reserves more than the budget, and it goes back when the
// lease is idle or the node stops.
namespace {

std::int64_t counter_value(const redis_server& server, const std::string& key) {
  auto r = test::raw_command("127.0.0.1", server.port(), {"GET", key});
  return r && r->str ? std::stoll(std::string{r->str, r->len}) : 0;
}

} // namespace

TEST_F(ratelimit, budget_only_checks_are_decided_from_a_lease_and_settle_exactly) {
  redis_server server;
  ratelimit_config cfg;
  cfg.lease_idle = 200ms;
  auto prefix = unique_name("lease") + ":";
  auto rl = limiter(server.url(), prefix, cfg);
  ASSERT_TRUE(check(rl, "warm", 600, 1).redis_ok);
  test::raw_command("127.0.0.1", server.port(), {"CONFIG", "RESETSTAT"});
  // 160 calls one after the other, each reserving 10 and spending 7.
  for (int i = 0; i < 160; ++i) {
    auto d = budget_check(rl, "key", 1000000, 10);
    ASSERT_TRUE(d.allowed);
    ASSERT_TRUE(d.redis_ok) << "reserved in Redis (by the lease)";
    ASSERT_EQ(d.reserved, 10);
    settle(rl, "key", d, 7);
  }
  auto calls = script_calls(server);
  EXPECT_LE(calls, 160 / 64 + 12) << "about one renewal per 64 calls, plus settlement flushes";
  std::cout << "[ INFO     ] 160 budget-only calls in " << calls << " script calls\n";
  // Idle, the lease goes back: the counter is then exactly what was spent.
  auto counter = prefix + "budget:key:" + std::to_string(day_);
  EXPECT_TRUE(eventually([&] { return counter_value(server, counter) == 160 * 7; }))
    << counter_value(server, counter);
}

TEST_F(ratelimit, a_stopping_node_gives_its_leases_back) {
  redis_server server;
  auto prefix = unique_name("lease") + ":";
  auto rl = limiter(server.url(), prefix); // lease_idle: the default second
  auto d = budget_check(rl, "key", 1000000, 10);
  ASSERT_TRUE(d.allowed);
  auto counter = prefix + "budget:key:" + std::to_string(day_);
  EXPECT_EQ(counter_value(server, counter), 640) << "a lease of 64 calls";
  settle(rl, "key", d, 4);
  caf::scoped_actor self{sys_};
  self->monitor(rl);
  self->send_exit(rl, caf::exit_reason::user_shutdown);
  self->receive([](const caf::down_msg&) {}, caf::after(2s) >> [] { ADD_FAILURE() << "no exit"; });
  EXPECT_EQ(counter_value(server, counter), 4) << "the lease went back, the spend stayed";
}

TEST_F(ratelimit, leases_across_nodes_never_reserve_more_than_the_budget) {
  auto prefix = unique_name("lease") + ":";
  auto n1 = limiter(shared_redis_url(), prefix);
  auto n2 = limiter(shared_redis_url(), prefix);
  // A budget of 1,000 and calls reserving 10 that spend nothing (failed
  // calls give everything back): each node's leases are at most a quarter
  // of what was left per node, so both keep being admitted until the
  // budget is nearly reserved, and together they never exceed it.
  std::int64_t held = 0;
  int admitted = 0;
  std::vector<rate_decision> open;
  for (int i = 0; i < 200; ++i) {
    auto& node = i % 2 ? n2 : n1;
    auto d = budget_check(node, "key", 1000, 10, 2);
    if (!d.allowed)
      break;
    ++admitted;
    held += d.reserved;
    open.push_back(d);
  }
  EXPECT_LE(held, 1000);
  EXPECT_GE(admitted, 90) << "leases left at most a few calls' worth unused on the other node";
  // Every call ends spending nothing: the whole budget is free again.
  for (std::size_t i = 0; i < open.size(); ++i)
    settle(i % 2 ? n2 : n1, "key", open[i], 0);
  EXPECT_TRUE(eventually([&] {
    auto d = budget_check(n1, "key", 1000, 10, 2);
    if (d.allowed)
      settle(n1, "key", d, 0);
    return d.allowed && d.spent < 1000;
  }));
}

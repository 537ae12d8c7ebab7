// Daily token budgets per API key (API.md sections 1 to 4, issue 19 item 4)
// against real nodes, PostgreSQL and Redis: a budget spent across two nodes,
// the key's own budget over PARLEY_TOKEN_BUDGET_PER_DAY, 0 = unlimited,
// session turns and gateway calls (plain and streamed) counted and refused
// alike, the 429 itself (body, Retry-After to the next UTC day) with nothing
// stored and no model call, and Redis down (each node its share). The spend
// counted is what the replies report, so the suite holds for the echo model
// and for the mock upstream alike.

#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <thread>

#include "tests/integration/node_harness.hpp"
#include "tests/support/redis_server.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

/// A new key of `user` with its own budget (-1: none, the node's applies).
std::string key_with_budget(parley_node& node, const std::string& user, std::int64_t budget) {
  json body{{"user", user}};
  if (budget >= 0)
    body["token_budget_per_day"] = budget;
  auto r = node.admin("POST", "/admin/v1/api-keys", body);
  if (r.status != 201)
    throw std::runtime_error("create key: " + describe(r));
  return r.js()["api_key"];
}

/// total_tokens of a turn's reply or a completion (0 when absent).
std::int64_t total_of(const http_result& r) {
  auto j = r.js();
  if (!j.is_object())
    return 0;
  auto& usage = j.contains("reply") ? j["reply"]["usage"] : j["usage"];
  return usage.is_object() ? usage.value("total_tokens", std::int64_t{0}) : 0;
}

std::int64_t seconds_to_utc_midnight() {
  auto now = static_cast<std::int64_t>(std::time(nullptr));
  return 86400 - now % 86400;
}

/// A refusal as API.md section 2 has it.
void expect_budget_refusal(const http_result& r) {
  EXPECT_EQ(r.status, 429) << describe(r);
  EXPECT_EQ(r.code(), "budget_exceeded") << r.body;
  auto j = r.js();
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_NE(j["error"].value("message", "").find("daily token budget"), std::string::npos)
      << r.body;
  EXPECT_TRUE(j["error"]["type"].is_string());
  auto retry = std::atoll(r.header("retry-after").c_str());
  EXPECT_NEAR(static_cast<double>(retry), static_cast<double>(seconds_to_utc_midnight()), 3)
      << "Retry-After: seconds to the next UTC day";
  EXPECT_FALSE(r.header("x-parley-node").empty());
}

/// Turns through `nodes` in turn (a short pause between two, as a client
/// thinks) until one is refused or `max_turns` passed; the spend of the
/// admitted turns. Every admitted turn came while the spend was under
/// `budget`, and the refusal only once it was not.
struct spend_run {
  std::int64_t spent = 0;
  int admitted = 0;
  http_result refusal;
};

spend_run spend_until_refused(std::vector<parley_node*> nodes, const std::string& key,
                              const std::string& session, std::int64_t budget, int max_turns) {
  spend_run run;
  for (int i = 0; i < max_turns; ++i) {
    auto& node = *nodes[static_cast<std::size_t>(i) % nodes.size()];
    auto r = node.post_message(key, session, {{"content", "spend " + std::to_string(i)}});
    if (r.status == 429 && r.code() == "budget_exceeded") {
      run.refusal = r;
      return run;
    }
    EXPECT_EQ(r.status, 200) << describe(r);
    EXPECT_LT(run.spent, budget) << "admitted with the budget already spent";
    run.spent += total_of(r);
    ++run.admitted;
    std::this_thread::sleep_for(30ms);
  }
  return run;
}

} // namespace

TEST(budget, a_budget_spent_through_one_node_is_refused_on_the_other) {
  scratch_db db;
  parley_cluster c{db, 2, {{"PARLEY_REDIS_URL", shared_redis_url()}}};
  auto key = key_with_budget(c[0], "alice", 60);
  auto id = c[0].create_session(key);
  auto run = spend_until_refused({&c[0], &c[1]}, key, id, 60, 40);
  ASSERT_EQ(run.refusal.status, 429) << "never refused after " << run.admitted << " turns";
  EXPECT_GE(run.spent, 60) << "refused before the budget was spent";
  EXPECT_GE(run.admitted, 2) << "the turns went through both nodes";
  expect_budget_refusal(run.refusal);
  // Refused on both nodes, on both chat routes.
  for (int n = 0; n < 2; ++n) {
    expect_budget_refusal(c[n].post_message(key, id, {{"content", "more"}}));
    expect_budget_refusal(c[n].call("POST", "/v1/chat/completions", key,
                                    R"({"messages": [{"role": "user", "content": "hi"}]})"));
  }
  // Another key of the same user has its own budget.
  auto other = key_with_budget(c[1], "alice", 60);
  auto id2 = c[1].create_session(other);
  EXPECT_EQ(c[1].post_message(other, id2, {{"content", "mine"}}).status, 200);
}

TEST(budget, the_keys_own_budget_overrides_the_default_and_zero_is_unlimited) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_REDIS_URL", shared_redis_url()},
                        {"PARLEY_TOKEN_BUDGET_PER_DAY", "40"}}};
  auto by_default = key_with_budget(node, "bob", -1);
  auto unlimited = key_with_budget(node, "bob", 0);
  auto larger = key_with_budget(node, "bob", 100000);
  auto id = node.create_session(by_default);
  auto run = spend_until_refused({&node}, by_default, id, 40, 40);
  ASSERT_EQ(run.refusal.status, 429);
  EXPECT_GE(run.spent, 40);
  for (auto& key : {unlimited, larger}) {
    auto s = node.create_session(key);
    std::int64_t spent = 0;
    for (int i = 0; spent < 3 * 40 && i < 40; ++i) {
      auto r = node.post_message(key, s, {{"content", "far past the default " + std::to_string(i)}});
      ASSERT_EQ(r.status, 200) << describe(r);
      spent += total_of(r);
    }
    EXPECT_GE(spent, 3 * 40);
  }
}

TEST(budget, a_refusal_stores_nothing_and_calls_no_model) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_REDIS_URL", shared_redis_url()}}};
  auto key = key_with_budget(node, "carol", 1);
  auto id = node.create_session(key);
  auto first = node.post_message(key, id, {{"content", "the one turn"}});
  ASSERT_EQ(first.status, 200) << describe(first);
  ASSERT_TRUE(wait_for(
      [&] {
        auto r = node.post_message(key, id, {{"content", "probe"}});
        return r.status == 429;
      },
      3s));
  auto messages_before = node.all_messages(key, id).size();
  auto calls_before = node.metric("parley_llm_tokens_total{direction=\"prompt\"}");
  auto usage_before = db.query("SELECT coalesce(sum(requests), 0)::bigint FROM usage_daily")[0][0]
                          .as<std::int64_t>();
  auto refused = node.post_message(key, id, {{"content", "over budget"}, {"client_message_id", "x1"}});
  expect_budget_refusal(refused);
  expect_budget_refusal(node.post_message(key, id, {{"content", "over budget"}, {"stream", true}}));
  expect_budget_refusal(node.call("POST", "/v1/chat/completions", key,
                                  R"({"messages": [{"role": "user", "content": "hi"}]})"));
  expect_budget_refusal(node.call("POST", "/v1/chat/completions", key,
                                  R"({"stream": true, "messages": [{"role": "user", "content": "hi"}]})"));
  std::this_thread::sleep_for(700ms); // past a gateway usage flush
  EXPECT_EQ(node.all_messages(key, id).size(), messages_before);
  EXPECT_EQ(node.metric("parley_llm_tokens_total{direction=\"prompt\"}"), calls_before);
  EXPECT_EQ(db.query("SELECT coalesce(sum(requests), 0)::bigint FROM usage_daily")[0][0]
                .as<std::int64_t>(),
            usage_before);
  EXPECT_EQ(db.query("SELECT count(*) FROM messages WHERE client_message_id = 'x1'")[0][0]
                .as<std::int64_t>(),
            0);
  EXPECT_GE(node.metric("parley_budget_exceeded_total"), 5);
}

TEST(budget, gateway_calls_and_session_turns_count_toward_one_budget) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_REDIS_URL", shared_redis_url()}}};
  // What one gateway call spends, measured with an unlimited key of its own
  // user in the daily totals (written off the request path).
  auto probe = key_with_budget(node, "dave-probe", 0);
  auto body = json{{"messages", {{{"role", "user"}, {"content", "count me in please"}}}}};
  ASSERT_EQ(node.call("POST", "/v1/chat/completions", probe, body.dump()).status, 200);
  std::int64_t gateway_spend = 0;
  ASSERT_TRUE(wait_for(
      [&] {
        gateway_spend =
            db.query("SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint FROM "
                     "usage_daily WHERE user_id = 'dave-probe'")[0][0]
                .as<std::int64_t>();
        return gateway_spend > 0;
      },
      5s));

  // A budget that one gateway call and one turn reach together, but
  // neither alone: the gateway call counts, the turn counts, the next call
  // of either kind is refused.
  auto turn_probe = key_with_budget(node, "dave-probe", 0);
  auto probe_session = node.create_session(turn_probe);
  auto pt = node.post_message(turn_probe, probe_session, {{"content", "count me in please"}});
  ASSERT_EQ(pt.status, 200) << describe(pt);
  auto turn_spend = total_of(pt);
  ASSERT_GT(turn_spend, 0);
  auto budget = gateway_spend + turn_spend;
  auto limited = key_with_budget(node, "dave", budget);
  auto id = node.create_session(limited);
  auto g = node.call("POST", "/v1/chat/completions", limited, body.dump());
  ASSERT_EQ(g.status, 200) << describe(g);
  std::this_thread::sleep_for(50ms);
  auto t = node.post_message(limited, id, {{"content", "count me in please"}});
  ASSERT_EQ(t.status, 200) << describe(t) << " (spent " << gateway_spend << " of " << budget
                           << ")";
  std::this_thread::sleep_for(50ms);
  expect_budget_refusal(node.post_message(limited, id, {{"content", "x"}}));
  expect_budget_refusal(node.post_message(limited, id, {{"content", "x"}, {"stream", true}}));
  expect_budget_refusal(node.call("POST", "/v1/chat/completions", limited, body.dump()));
  auto streamed = body;
  streamed["stream"] = true;
  expect_budget_refusal(node.call("POST", "/v1/chat/completions", limited, streamed.dump()));

  // A streamed completion counts too: with a budget of two calls, two
  // streamed calls are admitted and the third is refused.
  auto two = key_with_budget(node, "dave", 2 * gateway_spend);
  int admitted = 0;
  for (int i = 0; i < 5; ++i) {
    auto r = node.call("POST", "/v1/chat/completions", two, streamed.dump());
    if (r.status == 429) {
      expect_budget_refusal(r);
      break;
    }
    ASSERT_EQ(r.status, 200) << describe(r);
    ++admitted;
    std::this_thread::sleep_for(50ms);
  }
  // A streaming upstream that reports no usage leaves the reservation
  // counted (the rest of the budget at once): one call, not two.
  EXPECT_GE(admitted, 1);
  EXPECT_LE(admitted, 2);
}

TEST(budget, a_streamed_turn_settles_its_usage) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_REDIS_URL", shared_redis_url()}}};
  auto key = key_with_budget(node, "erin", 50);
  auto id = node.create_session(key);
  // Streamed turns only: each is admitted while the spend of the earlier
  // ones, which only their done events report, is under the budget.
  int admitted = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = node.post_message(key, id, {{"content", "stream " + std::to_string(i)}, {"stream", true}});
    if (r.status == 429) {
      expect_budget_refusal(r);
      break;
    }
    ASSERT_EQ(r.status, 200) << describe(r);
    ASSERT_NE(r.body.find("event: done"), std::string::npos) << r.body;
    ++admitted;
    std::this_thread::sleep_for(30ms);
  }
  EXPECT_GE(admitted, 1);
  EXPECT_LT(admitted, 40) << "streamed turns never reached the budget";
  // The history holds the admitted turns only, and they spent the budget.
  auto history = node.all_messages(key, id);
  ASSERT_EQ(history.size(), static_cast<std::size_t>(2 * admitted));
  std::int64_t spent = 0, before_last = 0;
  for (std::size_t i = 1; i < history.size(); i += 2) {
    before_last = spent;
    // A reply without usage (an upstream that reports none when streaming)
    // keeps its reservation, which is the rest of the budget at most.
    auto& usage = history[i]["usage"];
    spent += usage.is_object() ? usage["total_tokens"].get<std::int64_t>() : 50 - spent;
  }
  EXPECT_GE(spent, 50);
  EXPECT_LT(before_last, 50);
}

TEST(budget, redis_down_each_node_spends_its_share) {
  scratch_db db;
  redis_server redis;
  parley_cluster c{db, 2, {{"PARLEY_REDIS_URL", redis.url()}}};
  auto key = key_with_budget(c[0], "frank", 80);
  auto id = c[0].create_session(key);
  ASSERT_EQ(c[0].post_message(key, id, {{"content", "while redis is up"}}).status, 200);
  redis.stop();
  // Per node now: 80 / 2 live nodes = 40 each, this node's spend of the day
  // (the turn above) included.
  auto ready_down = [&](parley_node& n) {
    auto r = n.call("GET", "/readyz", "");
    auto j = r.js();
    return j.is_object() && j["checks"].value("redis", "") == "down";
  };
  ASSERT_TRUE(wait_for([&] { return ready_down(c[0]) && ready_down(c[1]); }, 10s));
  int admitted_0 = 0;
  http_result refused;
  for (int i = 0; i < 40; ++i) {
    auto r = c[0].post_message(key, id, {{"content", "down " + std::to_string(i)}});
    if (r.status == 429) {
      refused = r;
      break;
    }
    ASSERT_EQ(r.status, 200) << describe(r);
    ++admitted_0;
  }
  expect_budget_refusal(refused);
  EXPECT_NE(refused.js()["error"].value("message", "").find("of 40 tokens"), std::string::npos)
      << refused.body;
  // The other node has its own share left.
  auto other = c[1].post_message(key, id, {{"content", "the other node"}});
  EXPECT_EQ(other.status, 200) << describe(other);
  // Redis back: the cluster-wide counter decides again, and what the nodes
  // spent meanwhile reached it (the restarted server forgot the rest).
  redis.restart();
  ASSERT_TRUE(wait_for([&] { return !ready_down(c[0]) && !ready_down(c[1]); }, 15s));
  auto history = c[0].all_messages(key, id);
  std::int64_t spent = 0;
  for (std::size_t i = 1; i < history.size(); i += 2)
    spent += history[i]["usage"].value("total_tokens", std::int64_t{0});
  EXPECT_GE(spent, 40);
}

// Leases (operations.md): with a budget far from spent and no rate limit,
// each node's edge takes most calls' reservations from a lease without
// asking Redis, and settlements queue in its ledger; yet the cluster-wide
// counter ends up exactly at the sum of the replies' usage once the idle
// leases went back, and usage totals agree.
TEST(budget, leased_reservations_settle_to_exactly_what_the_replies_report) {
  scratch_db db;
  redis_server redis;
  parley_cluster c{db, 2, {{"PARLEY_REDIS_URL", redis.url()}}};
  auto key = key_with_budget(c[0], "grace", 100000000);
  auto id = c[0].create_session(key);
  std::int64_t spent = 0;
  for (int i = 0; i < 60; ++i) {
    auto r = c[static_cast<std::size_t>(i % 2)].post_message(
      key, id, {{"content", "leased " + std::to_string(i) + std::string(static_cast<std::size_t>(i * 7), 'x')}});
    ASSERT_EQ(r.status, 200) << describe(r);
    spent += total_of(r);
  }
  ASSERT_GT(spent, 0);
  // The counters of the day in this test's own Redis: one per key.
  auto counter = [&] {
    std::int64_t sum = 0;
    auto keys = raw_command("127.0.0.1", redis.port(), {"KEYS", "parley:rl:budget:*"});
    if (!keys || keys->type != REDIS_REPLY_ARRAY)
      return std::int64_t{-1};
    for (std::size_t i = 0; i < keys->elements; ++i) {
      auto v = raw_command("127.0.0.1", redis.port(),
                           {"GET", std::string{keys->element[i]->str, keys->element[i]->len}});
      if (v && v->str)
        sum += std::stoll(std::string{v->str, v->len});
    }
    return sum;
  };
  EXPECT_TRUE(wait_for([&] { return counter() == spent; }, 8s))
      << "counter " << counter() << ", replies " << spent;
  auto usage = c[1].call("GET", "/v1/usage", key);
  ASSERT_EQ(usage.status, 200) << describe(usage);
  std::int64_t total = 0;
  auto j = usage.js();
  for (auto& d : j["data"])
    total += d["prompt_tokens"].get<std::int64_t>() + d["completion_tokens"].get<std::int64_t>();
  EXPECT_EQ(total, spent) << usage.body;
}

// The Responses API spends the same budget (API.md sections 4 and 5a):
// stored responses (turns) and store:false calls count, and the next one
// is refused once the day's budget is spent, nothing stored.
TEST(budget, responses_spend_the_key_budget_and_are_refused_over_it) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_REDIS_URL", shared_redis_url()}}};
  auto key = key_with_budget(node, "rita", 60);
  std::int64_t spent = 0;
  http_result refusal;
  int admitted = 0;
  std::string previous;
  for (int i = 0; i < 40 && refusal.status == 0; ++i) {
    json body = {{"input", "respond to number " + std::to_string(i)}, {"store", i % 3 != 2}};
    if (!previous.empty() && i % 3 != 2)
      body["previous_response_id"] = previous;
    auto r = node.call("POST", "/v1/responses", key, body.dump());
    if (r.status == 429 && r.code() == "budget_exceeded") {
      refusal = r;
      break;
    }
    ASSERT_EQ(r.status, 200) << describe(r);
    EXPECT_LT(spent, 60) << "admitted with the budget already spent";
    auto j = r.js();
    spent += j["usage"].value("total_tokens", std::int64_t{0});
    if (i % 3 != 2)
      previous = j["id"];
    ++admitted;
    std::this_thread::sleep_for(30ms);
  }
  ASSERT_EQ(refusal.status, 429) << "never refused after " << admitted << " responses";
  expect_budget_refusal(refusal);
  EXPECT_GE(spent, 60);
  EXPECT_GE(admitted, 2);
  // The refused response stored nothing: the conversation ends with the
  // last admitted turn.
  auto stored = db.query("SELECT count(*) FROM messages WHERE role = 'user'")[0][0].as<int>();
  EXPECT_EQ(stored, admitted - admitted / 3) << "store:false writes nothing, a refusal neither";
}

// Usage of model calls (API.md section 4, issue 17 part 2 and 3): on the
// assistant message of a turn (its reply, the stream's done event, the
// history, after a restart, on an idempotent retry) and in the per-user
// daily totals that session turns and gateway calls add to, checked in
// PostgreSQL itself; a database of the previous schema version migrates
// with its data.

#include <gtest/gtest.h>

#include <map>
#include <thread>
#include <tuple>

#include "storage/schema.hpp"
#include "storage/secrets.hpp"
#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

/// Parley's estimate of one message (API.md section 4), written out again
/// here so that the test does not trust the code it checks.
std::int64_t estimate(const std::string& content) {
  return static_cast<std::int64_t>((content.size() + 3) / 4) + 3;
}

/// The done event's body of a streamed turn.
json done_of(const http_result& r) {
  auto at = r.body.find("event: done\ndata: ");
  if (at == std::string::npos)
    return nullptr;
  auto payload = r.body.substr(at + 18);
  return json::parse(payload.substr(0, payload.find("\n\n")), nullptr, false);
}

struct sums {
  std::int64_t requests = 0, prompt = 0, completion = 0;
  bool operator==(const sums& o) const {
    return std::tie(requests, prompt, completion) == std::tie(o.requests, o.prompt, o.completion);
  }
};

std::ostream& operator<<(std::ostream& os, const sums& s) {
  return os << "{requests " << s.requests << ", prompt " << s.prompt << ", completion "
            << s.completion << "}";
}

/// Adds one reply's usage (null: the call counts, its tokens do not).
void add(sums& s, const json& usage) {
  s.requests += 1;
  if (usage.is_object()) {
    s.prompt += usage["prompt_tokens"].get<std::int64_t>();
    s.completion += usage["completion_tokens"].get<std::int64_t>();
  }
}

/// The daily totals in PostgreSQL per user (every day, model and shard).
std::map<std::string, sums> stored_totals(const scratch_db& db) {
  std::map<std::string, sums> out;
  for (auto row : db.query("SELECT user_id, sum(requests)::bigint, sum(prompt_tokens)::bigint, "
                           "sum(completion_tokens)::bigint FROM usage_daily GROUP BY user_id"))
    out[row[0].as<std::string>()] = {row[1].as<std::int64_t>(), row[2].as<std::int64_t>(),
                                     row[3].as<std::int64_t>()};
  return out;
}

const std::map<std::string, std::string> echo{{"PARLEY_LLM_BASE_URL", ""}};

} // namespace

TEST(usage, echo_turns_carry_the_estimate_in_reply_done_history_retry_and_after_restart) {
  scratch_db db;
  parley_node node{db, echo};
  auto key = node.create_key("alice");
  auto id = node.create_session(key, {{"system_prompt", "be brief"}});

  auto first =
      node.post_message(key, id, {{"content", "hello there"}, {"client_message_id", "c1"}});
  ASSERT_EQ(first.status, 200) << describe(first);
  auto u1 = first.js()["reply"]["usage"];
  std::int64_t p1 = estimate("be brief") + estimate("hello there");
  EXPECT_EQ(u1, json({{"prompt_tokens", p1},
                      {"completion_tokens", estimate("hello there")},
                      {"total_tokens", p1 + estimate("hello there")}}))
      << first.body;
  EXPECT_FALSE(first.js()["user_message"].contains("usage"));

  // Streamed: the done event carries it like the plain body.
  auto second =
      node.post_message(key, id, {{"content", "a longer question, please"}, {"stream", true}});
  ASSERT_EQ(second.status, 200) << describe(second);
  auto done = done_of(second);
  ASSERT_TRUE(done.is_object()) << second.body;
  std::int64_t p2 = estimate("be brief") + estimate("hello there") + estimate("hello there") +
                    estimate("a longer question, please");
  EXPECT_EQ(done["reply"]["usage"]["prompt_tokens"], p2);
  EXPECT_EQ(done["reply"]["usage"]["completion_tokens"], estimate("a longer question, please"));
  EXPECT_EQ(done["reply"]["usage"]["total_tokens"], p2 + estimate("a longer question, please"));

  // The history has the same messages, usage included.
  auto history = node.all_messages(key, id);
  ASSERT_EQ(history.size(), 4u);
  EXPECT_EQ(history[1], first.js()["reply"]);
  EXPECT_EQ(history[3], done["reply"]);
  EXPECT_FALSE(history[0].contains("usage"));

  // Each completed call counted once in the metric.
  EXPECT_EQ(node.metric("parley_llm_tokens_total{direction=\"prompt\"}"), p1 + p2);
  EXPECT_EQ(node.metric("parley_llm_tokens_total{direction=\"completion\"}"),
            estimate("hello there") + estimate("a longer question, please"));

  // An idempotent retry answers the stored usage (from the window).
  auto again =
      node.post_message(key, id, {{"content", "hello there"}, {"client_message_id", "c1"}});
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.js(), first.js());

  // After a restart: the history, a retry from storage, and the next turn,
  // whose context (loaded at activation) is estimated in full.
  EXPECT_EQ(node.stop(), 0);
  node.restart();
  EXPECT_EQ(node.all_messages(key, id), history);
  auto from_storage =
      node.post_message(key, id, {{"content", "hello there"}, {"client_message_id", "c1"}});
  ASSERT_EQ(from_storage.status, 200);
  EXPECT_EQ(from_storage.js(), first.js());
  auto third = node.post_message(key, id, {{"content", "again"}});
  ASSERT_EQ(third.status, 200);
  std::int64_t p3 = p2 + estimate("a longer question, please") + estimate("again");
  EXPECT_EQ(third.js()["reply"]["usage"]["prompt_tokens"], p3);

  // SIGKILL: the acknowledged usage is committed (with its turn).
  history = node.all_messages(key, id);
  node.kill9();
  node.restart();
  EXPECT_EQ(node.all_messages(key, id), history);

  // The stored columns and the day's totals.
  auto rows = db.query("SELECT prompt_tokens, completion_tokens, total_tokens FROM messages "
                       "WHERE role = 'assistant' ORDER BY seq");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0][0].as<std::int64_t>(), p1);
  EXPECT_EQ(rows[2][0].as<std::int64_t>(), p3);
  EXPECT_TRUE(
      db.query("SELECT 1 FROM messages WHERE role = 'user' AND prompt_tokens IS NOT NULL").empty());
  auto totals = db.query("SELECT to_char(day, 'YYYY-MM-DD'), model, sum(requests)::bigint, "
                         "sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint "
                         "FROM usage_daily WHERE user_id = 'alice' GROUP BY day, model");
  ASSERT_EQ(totals.size(), 1u);
  EXPECT_EQ(totals[0][0].as<std::string>(),
            history[1]["created_at"].get<std::string>().substr(0, 10));
  EXPECT_EQ(totals[0][1].as<std::string>(), "echo");
  EXPECT_EQ(totals[0][2].as<std::int64_t>(), 3) << "a retry is no new call";
  EXPECT_EQ(totals[0][3].as<std::int64_t>(), p1 + p2 + p3);
  EXPECT_EQ(totals[0][4].as<std::int64_t>(),
            estimate("hello there") + estimate("a longer question, please") + estimate("again"));
}

// In upstream mode (.upstream) the nodes call the mock upstream with a
// fallback: the usage is the mock's, and the totals still add up.
TEST(usage, daily_totals_equal_the_replies_over_sessions_users_and_two_nodes) {
  scratch_db db;
  parley_cluster cluster{db, 2};
  std::map<std::string, std::string> keys{{"alice", cluster[0].create_key("alice")},
                                          {"bob", cluster[1].create_key("bob")}};
  std::map<std::string, sums> want;
  int n = 0;
  for (auto& [user, key] : keys) {
    // Upstream mode: bob's turns go to the fallback (the primary fails).
    if (upstream_mode() && user == "bob")
      shared_primary().configure({{"fail_status", 500}, {"fail_count", -1}});
    for (int s = 0; s < 3; ++s) {
      auto id = cluster[s % 2].create_session(key);
      for (int t = 0; t < 4; ++t) {
        // Alternate nodes: the owner commits, wherever the request came in.
        auto& node = cluster[(s + t) % 2];
        bool stream = (++n % 3) == 0;
        auto r = node.post_message(
            key, id,
            {{"content", "turn " + std::to_string(t) + " of session " + std::to_string(s)},
             {"stream", stream}});
        ASSERT_EQ(r.status, 200) << describe(r);
        auto body = stream ? done_of(r) : r.js();
        ASSERT_TRUE(body.is_object()) << r.body;
        auto& usage = body["reply"]["usage"];
        // Streamed too: Parley asks a streaming upstream for its usage
        // (stream_options.include_usage).
        ASSERT_TRUE(usage.is_object()) << r.body;
        {
          EXPECT_EQ(usage["total_tokens"], usage["prompt_tokens"].get<std::int64_t>() +
                                               usage["completion_tokens"].get<std::int64_t>());
          // The upstream's own count (the mock counts words: "mock: turn t
          // of session s"), or the echo model's estimate.
          EXPECT_EQ(usage["completion_tokens"],
                    upstream_mode() ? 6 : estimate(body["reply"]["content"].get<std::string>()));
        }
        add(want[user], usage);
      }
    }
  }
  if (upstream_mode()) {
    shared_primary().reset();
    EXPECT_GT(shared_fallback().requests().size(), 0u) << "the fallback answered bob";
  }
  EXPECT_EQ(stored_totals(db), want);
  // One row per key and writer: the totals of one (user, day, model) are a
  // handful of rows, however many turns.
  EXPECT_LE(db.query("SELECT count(*) FROM usage_daily")[0][0].as<int>(), 2 * 2 * 2 * 2);

  // A session that moves to the other node takes its window's usage along
  // (the handoff): a retry there answers the stored usage without a call.
  auto& alice = keys["alice"];
  auto id = cluster[0].create_session(alice);
  auto first = cluster[0].post_message(
      alice, id, {{"content", "before the move"}, {"client_message_id", "m1"}});
  ASSERT_EQ(first.status, 200) << describe(first);
  add(want["alice"], first.js()["reply"]["usage"]);
  auto from = cluster[0].host_of(id);
  auto to = from == "node-0" ? "node-1" : "node-0";
  auto moved = cluster[0].admin("POST", "/admin/v1/sessions/" + id + "/migrate", {{"to", to}});
  ASSERT_EQ(moved.status, 200) << describe(moved);
  ASSERT_EQ(cluster[0].host_of(id), to);
  auto retry = cluster[1].post_message(
      alice, id, {{"content", "before the move"}, {"client_message_id", "m1"}});
  ASSERT_EQ(retry.status, 200) << describe(retry);
  EXPECT_EQ(retry.js(), first.js());
  EXPECT_EQ(stored_totals(db), want) << "a retry is no new call";
}

TEST(usage, gateway_calls_add_to_the_totals_off_the_request_path) {
  scratch_db db;
  parley_node node{db, echo};
  auto key = node.create_key("carol");
  auto id = node.create_session(key);
  auto turn = node.post_message(key, id, {{"content", "a turn first"}});
  ASSERT_EQ(turn.status, 200);
  sums want;
  add(want, turn.js()["reply"]["usage"]);
  json messages = {{{"role", "system"}, {"content", "be brief"}},
                   {{"role", "user"}, {"content", "what is a token?"}}};
  std::int64_t prompt = estimate("be brief") + estimate("what is a token?");
  for (bool stream : {false, true, false, true}) {
    auto r = node.call("POST", "/v1/chat/completions", key,
                       json({{"messages", messages}, {"stream", stream}}).dump());
    ASSERT_EQ(r.status, 200) << describe(r);
    add(want, {{"prompt_tokens", prompt}, {"completion_tokens", estimate("what is a token?")}});
  }
  // A failed call (bad request) adds nothing.
  EXPECT_EQ(node.call("POST", "/v1/chat/completions", key, R"({"messages": 5})").status, 400);
  // Written within the storage actor's flush interval.
  EXPECT_TRUE(wait_for([&] { return stored_totals(db)["carol"] == want; }, std::chrono::seconds(5)))
      << stored_totals(db)["carol"] << " want " << want;
  auto models = db.query("SELECT DISTINCT model FROM usage_daily WHERE user_id = 'carol'");
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0][0].as<std::string>(), "echo");
  EXPECT_EQ(node.metric("parley_llm_tokens_total{direction=\"prompt\"}"), want.prompt);
  EXPECT_EQ(node.metric("parley_llm_tokens_total{direction=\"completion\"}"), want.completion);
  EXPECT_EQ(node.metric("parley_usage_dropped_total"), 0);
  // A graceful stop writes what the storage actor summed since its last flush.
  for (int i = 0; i < 3; ++i) {
    auto r = node.call("POST", "/v1/chat/completions", key, json({{"messages", messages}}).dump());
    ASSERT_EQ(r.status, 200) << describe(r);
    add(want, {{"prompt_tokens", prompt}, {"completion_tokens", estimate("what is a token?")}});
  }
  EXPECT_EQ(node.stop(), 0);
  EXPECT_EQ(stored_totals(db)["carol"], want);
}

// A flush that PostgreSQL refuses (here: usage_daily locked by someone
// else, until the statement timeout) wrote nothing: the sums wait and are
// written by a later flush, none dropped.
TEST(usage, gateway_usage_waits_out_a_flush_that_wrote_nothing) {
  scratch_db db;
  auto env = echo;
  env["PARLEY_PG_TIMEOUT_MS"] = "1000";
  parley_node node{db, env};
  auto key = node.create_key("erin");
  json body = {{"messages", {{{"role", "user"}, {"content", "count me"}}}}};
  sums want;
  {
    pqxx::connection c{db.url()};
    pqxx::work w{c};
    w.exec("LOCK TABLE usage_daily IN ACCESS EXCLUSIVE MODE");
    for (int i = 0; i < 3; ++i) {
      auto r = node.call("POST", "/v1/chat/completions", key, body.dump());
      ASSERT_EQ(r.status, 200) << describe(r);
      add(want, {{"prompt_tokens", estimate("count me")}, {"completion_tokens", estimate("count me")}});
    }
    // At least one flush runs into the lock and the statement timeout.
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    w.commit();
  }
  EXPECT_TRUE(wait_for([&] { return stored_totals(db)["erin"] == want; }, std::chrono::seconds(10)))
    << stored_totals(db)["erin"] << " want " << want;
  EXPECT_EQ(node.metric("parley_usage_dropped_total"), 0);
}

// A database of schema version 2 (the previous one, built by its own
// migrations) with a key, a session and a turn: the node migrates it at
// start-up and keeps every row; the old reply has no usage (null), new
// turns have it and start the totals.
TEST(usage, a_database_of_the_previous_schema_migrates_with_its_data) {
  scratch_db db;
  std::string secret = parley::generate_api_key();
  {
    pqxx::connection c{db.url()};
    pqxx::work w{c};
    w.exec("CREATE TABLE parley_schema_migrations (version integer PRIMARY KEY, name text NOT "
           "NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    for (auto& m : parley::storage::migrations()) {
      if (m.version > 2)
        break;
      w.exec(m.sql);
      w.exec_params("INSERT INTO parley_schema_migrations (version, name) VALUES ($1, $2)",
                    m.version, m.name);
    }
    w.exec_params("INSERT INTO api_keys (user_id, prefix, key_hash) VALUES ('dave', $1, $2)",
                  parley::key_prefix(secret), parley::hash_key(secret));
    w.exec("INSERT INTO sessions (id, user_id, created_at, model, last_seq, message_count) "
           "VALUES ('sess_old', 'dave', now(), 'echo', 2, 2)");
    w.exec("INSERT INTO messages (session_id, seq, role, content, created_at, reply_to, model, "
           "client_message_id) VALUES "
           "('sess_old', 1, 'user', 'from before', now(), NULL, NULL, 'old-1'), "
           "('sess_old', 2, 'assistant', 'from before', now(), 1, 'echo', NULL)");
    w.commit();
  }
  parley_node node{db, echo};
  EXPECT_EQ(db.query("SELECT max(version) FROM parley_schema_migrations")[0][0].as<int>(),
            parley::storage::migrations().back().version);
  auto history = node.all_messages(secret, "sess_old");
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0]["content"], "from before");
  EXPECT_EQ(history[1]["content"], "from before");
  EXPECT_TRUE(history[1].contains("usage"));
  EXPECT_TRUE(history[1]["usage"].is_null());
  // The old turn's retry answers as before.
  auto retry = node.post_message(secret, "sess_old",
                                 {{"content", "from before"}, {"client_message_id", "old-1"}});
  ASSERT_EQ(retry.status, 200) << describe(retry);
  EXPECT_EQ(retry.js()["reply"]["seq"], 2);
  EXPECT_TRUE(retry.js()["reply"]["usage"].is_null());
  // A new turn sees the old messages (estimated) and is counted.
  auto next = node.post_message(secret, "sess_old", {{"content", "and now"}});
  ASSERT_EQ(next.status, 200) << describe(next);
  EXPECT_EQ(next.js()["reply"]["seq"], 4);
  std::int64_t prompt = 2 * estimate("from before") + estimate("and now");
  EXPECT_EQ(next.js()["reply"]["usage"]["prompt_tokens"], prompt);
  sums want;
  add(want, next.js()["reply"]["usage"]);
  EXPECT_EQ(stored_totals(db)["dave"], want);
}

// API.md section 4: GET /v1/usage shows the caller's totals per day and
// model, session turns and gateway calls together, equal to the sum of the
// replies' usage; GET /admin/v1/usage?user= the same for anyone.
TEST(usage, the_usage_routes_show_the_totals_of_turns_and_gateway_calls) {
  scratch_db db;
  parley_node node{db};
  auto key = node.create_key("dana");
  auto other = node.create_key("erin");
  auto id = node.create_session(key);
  sums want;
  for (auto content : {"one", "two words", "and a third turn"}) {
    auto r = node.post_message(key, id, {{"content", content}});
    ASSERT_EQ(r.status, 200) << describe(r);
    add(want, r.js()["reply"]["usage"]);
  }
  auto g = node.call("POST", "/v1/chat/completions", key,
                     json({{"messages", {{{"role", "user"}, {"content", "gateway"}}}}}).dump());
  ASSERT_EQ(g.status, 200) << describe(g);
  add(want, g.js()["usage"]);
  // Gateway usage is written within the storage actor's flush interval.
  auto seen = [&](const http_result& r) {
    sums s;
    auto j = r.js();
    if (r.status != 200 || !j.is_object())
      return s;
    for (auto& row : j["data"]) {
      s.requests += row["requests"].get<std::int64_t>();
      s.prompt += row["prompt_tokens"].get<std::int64_t>();
      s.completion += row["completion_tokens"].get<std::int64_t>();
    }
    return s;
  };
  ASSERT_TRUE(wait_for([&] { return seen(node.call("GET", "/v1/usage", key)) == want; },
                       std::chrono::seconds(5)))
    << seen(node.call("GET", "/v1/usage", key)) << " want " << want << ": "
    << describe(node.call("GET", "/v1/usage", key));
  // (the reply bodies of the turns above and the gateway's answer carry it)
  auto mine = node.call("GET", "/v1/usage?days=1", key);
  ASSERT_EQ(mine.status, 200) << describe(mine);
  auto rows = mine.js()["data"];
  ASSERT_EQ(rows.size(), 1u) << mine.body;
  EXPECT_EQ(rows[0]["model"], expected_model());
  EXPECT_EQ(rows[0]["date"].get<std::string>().size(), 10u) << "YYYY-MM-DD";
  EXPECT_EQ(seen(node.admin("GET", "/admin/v1/usage?user=dana&days=90")), want);

  // Nobody else's: another user sees none of it, and only the admin asks
  // for anyone.
  auto theirs = node.call("GET", "/v1/usage", other);
  ASSERT_EQ(theirs.status, 200);
  EXPECT_TRUE(theirs.js()["data"].empty()) << theirs.body;
  EXPECT_EQ(node.call("GET", "/admin/v1/usage?user=dana", key).status, 403);
  EXPECT_EQ(node.admin("GET", "/admin/v1/usage").code(), "invalid_request");
  for (auto bad : {"/v1/usage?days=0", "/v1/usage?days=91", "/v1/usage?days=x"})
    EXPECT_EQ(node.call("GET", bad, key).code(), "invalid_request") << bad;
}

// API.md sections 1 and 4: PARLEY_CONTEXT_TOKENS. Over turns of varied
// lengths the upstream receives the system prompt, the longest suffix of
// history whose stored counts fit the budget with it and the new message
// (at most PARLEY_CONTEXT_MESSAGES), and the new message; a user message
// counts the prompt growth it caused; a session may set its own budget
// (0: off); the counts survive a restart with the session's window.
TEST(usage, the_context_is_the_longest_suffix_whose_token_counts_fit) {
  scratch_db db;
  mock_llm mock;
  parley_node node{db,
                   {{"PARLEY_LLM_BASE_URL", mock.base_url()}, {"PARLEY_LLM_FALLBACK_BASE_URL", ""},
                    {"PARLEY_CONTEXT_TOKENS", "60"}, {"PARLEY_CONTEXT_MESSAGES", "12"}}};
  auto key = node.create_key("fay");
  std::string system = "answer in one short sentence";
  auto id = node.create_session(key, {{"system_prompt", system}});
  auto open = node.create_session(key, {{"system_prompt", system}, {"context_tokens", 0}});
  // Contents of varied lengths (the mock counts words; the estimate bytes).
  std::vector<std::string> contents;
  for (int i = 0; i < 14; ++i)
    contents.push_back(std::string(static_cast<std::size_t>(1 + (i * 37) % 90), 'a' + i % 26) +
                       " word" + std::string(static_cast<std::size_t>(i % 4), '!') + " end");
  struct stored {
    std::string role, content;
    std::int64_t tokens;
  };
  auto history = [&](const std::string& session) {
    std::vector<stored> out;
    for (auto row : db.query("SELECT role, content, tokens FROM messages WHERE session_id = '" +
                             session + "' ORDER BY seq"))
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(),
                     row[2].is_null() ? -1 : row[2].as<std::int64_t>()});
    return out;
  };
  bool restarted = false;
  int cut_by_tokens = 0;
  for (std::size_t t = 0; t < contents.size(); ++t) {
    if (t == 9 && !restarted) {
      // A restart: the window comes back from PostgreSQL with its counts.
      node.restart();
      restarted = true;
    }
    auto before = history(id);
    mock.clear();
    auto r = node.post_message(key, id, {{"content", contents[t]}});
    ASSERT_EQ(r.status, 200) << describe(r);
    auto sent = mock.requests().back()["body"]["messages"];
    // What the rule gives, from the stored counts (every one known).
    std::int64_t used = estimate(system) + estimate(contents[t]);
    std::vector<std::string> want{system};
    std::size_t take = 0;
    std::int64_t others = estimate(system);
    for (auto it = before.rbegin(); it != before.rend() && take < 11; ++it, ++take) {
      ASSERT_GT(it->tokens, 0) << "a stored message without a count: " << it->content;
      if (used + it->tokens > 60) {
        ++cut_by_tokens;
        break;
      }
      used += it->tokens;
      others += it->tokens;
    }
    for (auto it = before.end() - static_cast<std::ptrdiff_t>(take); it != before.end(); ++it)
      want.push_back(it->content);
    want.push_back(contents[t]);
    std::vector<std::string> got;
    for (auto& m : sent)
      got.push_back(m["content"]);
    EXPECT_EQ(got, want) << "turn " << t;
    EXPECT_LT(got.size(), 13u);
    // The new user message's count: the prompt's growth over what was sent
    // besides it, as the upstream counted.
    auto after = history(id);
    auto prompt = r.js()["reply"]["usage"]["prompt_tokens"].get<std::int64_t>();
    auto user_tokens = after[after.size() - 2].tokens;
    EXPECT_EQ(user_tokens, prompt - others > 0 ? prompt - others : estimate(contents[t]))
      << "turn " << t;
    EXPECT_EQ(after.back().tokens, r.js()["reply"]["usage"]["completion_tokens"]);
  }
  EXPECT_TRUE(restarted);
  EXPECT_GT(cut_by_tokens, 3) << "the budget cut the history";

  // The session that turned its budget off sends its whole window.
  for (std::size_t t = 0; t < 8; ++t)
    ASSERT_EQ(node.post_message(key, open, {{"content", contents[t]}}).status, 200);
  mock.clear();
  ASSERT_EQ(node.post_message(key, open, {{"content", "last"}}).status, 200);
  EXPECT_EQ(mock.requests().back()["body"]["messages"].size(), 1u + 11u + 1u);
  auto s = node.call("GET", "/v1/sessions/" + open, key);
  EXPECT_EQ(s.js()["context_tokens"], 0) << s.body;
  EXPECT_EQ(node.call("POST", "/v1/sessions", key, R"({"context_tokens": -1})").code(),
            "invalid_request");
}

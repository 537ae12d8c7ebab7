// The path to the model against the mock upstream, one failure mode at a
// time: what the client sees (status, code, time), which upstream got the
// call, and what was stored.

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

std::int64_t ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t)
    .count();
}

struct setup {
  scratch_db db;
  mock_llm primary;
  std::unique_ptr<mock_llm> fallback;
  std::unique_ptr<parley_node> node;
  std::string key, id;

  explicit setup(std::map<std::string, std::string> env = {}, bool with_fallback = false) {
    env["PARLEY_LLM_BASE_URL"] = primary.base_url();
    if (with_fallback) {
      fallback = std::make_unique<mock_llm>();
      env["PARLEY_LLM_FALLBACK_BASE_URL"] = fallback->base_url();
    }
    node = std::make_unique<parley_node>(db, env);
    key = node->create_key("alice");
    id = node->create_session(key);
  }
  http_result turn(const std::string& content) {
    return node->post_message(key, id, {{"content", content}});
  }
  std::size_t stored() { return node->all_messages(key, id).size(); }
};

} // namespace

TEST(upstream, a_5xx_is_retried_and_the_turn_succeeds) {
  setup s;
  s.primary.configure({{"fail_status", 503}, {"fail_count", 2}});
  auto r = s.turn("hello");
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["reply"]["content"], "mock: hello");
  EXPECT_EQ(s.primary.requests().size(), 3u) << "two failures, then the successful retry";
  EXPECT_EQ(s.node->metric("parley_llm_requests_total{outcome=\"server_error\",upstream=\"primary\"}"),
            2);
  EXPECT_EQ(s.stored(), 2u);
}

TEST(upstream, a_429_is_retried_after_its_retry_after) {
  setup s;
  s.primary.configure({{"fail_status", 429}, {"fail_count", 1}, {"retry_after", 1}});
  auto start = std::chrono::steady_clock::now();
  auto r = s.turn("slowly");
  auto took = ms_since(start);
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_GE(took, 950) << "the retry waited for Retry-After: 1";
  EXPECT_LT(took, 5000);
  EXPECT_EQ(s.primary.requests().size(), 2u);
}

TEST(upstream, persistent_failure_gives_502_after_the_attempts_and_stores_nothing) {
  setup s{{{"PARLEY_LLM_MAX_ATTEMPTS", "3"}}};
  s.primary.configure({{"fail_status", 500}, {"fail_count", -1}});
  auto r = s.turn("doomed");
  EXPECT_EQ(r.status, 502) << describe(r);
  EXPECT_EQ(r.code(), "upstream_error");
  EXPECT_EQ(s.primary.requests().size(), 3u);
  EXPECT_EQ(s.stored(), 0u);
  // A 4xx is the request's fault: not retried.
  s.primary.clear();
  s.primary.configure({{"fail_status", 400}, {"fail_count", -1}});
  EXPECT_EQ(s.turn("bad").status, 502);
  EXPECT_EQ(s.primary.requests().size(), 1u);
}

TEST(upstream, a_dropped_connection_is_retried) {
  setup s;
  s.primary.configure({{"mode", "close"}, {"fail_count", 1}});
  auto r = s.turn("again");
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(s.primary.requests().size(), 2u);
}

TEST(upstream, an_open_circuit_fails_fast_then_a_probe_closes_it) {
  setup s{{{"PARLEY_LLM_MAX_ATTEMPTS", "1"},
           {"PARLEY_LLM_BREAKER_THRESHOLD", "2"},
           {"PARLEY_LLM_BREAKER_COOLDOWN_MS", "1500"}}};
  s.primary.configure({{"fail_status", 500}, {"fail_count", -1}});
  EXPECT_EQ(s.turn("one").status, 502);
  EXPECT_EQ(s.turn("two").status, 502);
  EXPECT_EQ(s.node->metric("parley_llm_circuit_state{upstream=\"primary\"}"), 1);
  auto start = std::chrono::steady_clock::now();
  auto fast = s.turn("three");
  auto took = ms_since(start);
  EXPECT_EQ(fast.status, 503) << describe(fast);
  EXPECT_EQ(fast.code(), "upstream_unavailable");
  EXPECT_FALSE(fast.header("retry-after").empty());
  EXPECT_LT(took, 500) << "an open circuit answers without calling the upstream";
  std::printf("[ figures  ] fast fail with an open circuit: %lld ms\n",
              static_cast<long long>(took));
  EXPECT_EQ(s.primary.requests().size(), 2u);
  // After the cool-down one probe goes through; it succeeds and closes it.
  s.primary.reset();
  std::this_thread::sleep_for(1600ms);
  auto probe = s.turn("four");
  EXPECT_EQ(probe.status, 200) << describe(probe);
  EXPECT_EQ(s.node->metric("parley_llm_circuit_state{upstream=\"primary\"}"), 0);
  EXPECT_EQ(s.turn("five").status, 200);
}

TEST(upstream, the_fallback_takes_over_when_the_primary_fails_or_is_open) {
  setup s{{{"PARLEY_LLM_MAX_ATTEMPTS", "2"},
           {"PARLEY_LLM_BREAKER_THRESHOLD", "2"},
           {"PARLEY_LLM_BREAKER_COOLDOWN_MS", "60000"}},
          true};
  s.primary.configure({{"fail_status", 502}, {"fail_count", -1}});
  auto r = s.turn("via fallback");
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["reply"]["content"], "mock: via fallback");
  EXPECT_EQ(s.primary.requests().size(), 2u);
  EXPECT_EQ(s.fallback->requests().size(), 1u);
  // The primary's circuit is open now: the next turn goes to the fallback at once.
  auto start = std::chrono::steady_clock::now();
  auto r2 = s.turn("straight to fallback");
  ASSERT_EQ(r2.status, 200) << describe(r2);
  EXPECT_LT(ms_since(start), 1000);
  EXPECT_EQ(s.primary.requests().size(), 2u) << "an open circuit is skipped";
  EXPECT_EQ(s.fallback->requests().size(), 2u);
  EXPECT_EQ(s.node->metric("parley_llm_requests_total{outcome=\"success\",upstream=\"fallback\"}"),
            2);
  // Both failing: 502, nothing stored.
  s.fallback->configure({{"fail_status", 500}, {"fail_count", -1}});
  EXPECT_EQ(s.turn("nobody").status, 502);
  EXPECT_EQ(s.stored(), 4u);
}

namespace {

const char* primary_timeouts = "parley_llm_requests_total{outcome=\"timeout\",upstream=\"primary\"}";
const char* fallback_timeouts =
  "parley_llm_requests_total{outcome=\"timeout\",upstream=\"fallback\"}";
const char* fallback_successes =
  "parley_llm_requests_total{outcome=\"success\",upstream=\"fallback\"}";

} // namespace

// API.md section 8: PARLEY_LLM_TIMEOUT_MS bounds one attempt; an attempt that
// times out on the primary is retried on the fallback before 504.
TEST(upstream, a_hung_primary_times_out_and_the_fallback_answers) {
  setup s{{{"PARLEY_LLM_TIMEOUT_MS", "2000"}}, true};
  s.primary.configure({{"mode", "hang"}, {"fail_count", -1}});
  auto r = s.turn("stuck");
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["reply"]["content"], "mock: stuck");
  EXPECT_EQ(s.primary.requests().size(), 1u) << "a timed-out attempt is not retried on the primary";
  EXPECT_EQ(s.fallback->requests().size(), 1u);
  EXPECT_EQ(s.node->metric(primary_timeouts), 1) << "the primary attempt is counted as timed out";
  EXPECT_EQ(s.node->metric(fallback_successes), 1);
  EXPECT_EQ(s.stored(), 2u);
}

TEST(upstream, a_hung_primary_without_a_fallback_gives_504_after_one_attempt) {
  setup s{{{"PARLEY_LLM_TIMEOUT_MS", "600"}}};
  s.primary.configure({{"mode", "hang"}, {"fail_count", -1}});
  auto r = s.turn("stuck");
  EXPECT_EQ(r.status, 504) << describe(r);
  EXPECT_EQ(r.code(), "upstream_timeout");
  EXPECT_EQ(s.primary.requests().size(), 1u) << "a timeout used the attempt's whole budget";
  EXPECT_EQ(s.node->metric(primary_timeouts), 1);
  EXPECT_EQ(s.stored(), 0u);
}

TEST(upstream, a_hung_primary_and_a_hung_fallback_give_504) {
  setup s{{{"PARLEY_LLM_TIMEOUT_MS", "600"}}, true};
  s.primary.configure({{"mode", "hang"}, {"fail_count", -1}});
  s.fallback->configure({{"mode", "hang"}, {"fail_count", -1}});
  auto r = s.turn("stuck twice");
  EXPECT_EQ(r.status, 504) << describe(r);
  EXPECT_EQ(r.code(), "upstream_timeout");
  EXPECT_EQ(s.primary.requests().size(), 1u);
  EXPECT_EQ(s.fallback->requests().size(), 1u) << "the fallback got its own attempt";
  EXPECT_EQ(s.node->metric(primary_timeouts), 1);
  EXPECT_EQ(s.node->metric(fallback_timeouts), 1);
  EXPECT_EQ(s.stored(), 0u);
}

TEST(upstream, the_gateway_goes_to_the_fallback_when_the_primary_hangs) {
  setup s{{{"PARLEY_LLM_TIMEOUT_MS", "2000"}}, true};
  s.primary.configure({{"mode", "hang"}, {"fail_count", -1}});
  json body{{"model", "mock"}, {"messages", {{{"role", "user"}, {"content", "gateway hang"}}}}};
  auto r = s.node->call("POST", "/v1/chat/completions", s.key, body.dump());
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["choices"][0]["message"]["content"], "mock: gateway hang");
  EXPECT_EQ(s.primary.requests().size(), 1u);
  EXPECT_EQ(s.fallback->requests().size(), 1u);
  EXPECT_EQ(s.node->metric(primary_timeouts), 1);
  // Streamed: nothing was sent before the primary timed out, so the
  // fallback's stream is the answer.
  body["stream"] = true;
  auto st = s.node->call("POST", "/v1/chat/completions", s.key, body.dump());
  ASSERT_EQ(st.status, 200) << describe(st);
  EXPECT_NE(st.body.find("data: [DONE]"), std::string::npos) << st.body;
  EXPECT_EQ(st.body.find("\"error\""), std::string::npos) << st.body;
  EXPECT_EQ(s.fallback->requests().size(), 2u);
  EXPECT_EQ(s.node->metric(primary_timeouts), 2);
}

namespace {

/// When (ms after sending) a marker first appeared in a timed exchange; -1: never.
std::int64_t first_seen(const std::vector<std::pair<std::chrono::milliseconds, std::string>>& parts,
                        const std::string& marker) {
  std::string all;
  for (auto& [at, data] : parts) {
    all += data;
    if (all.find(marker) != std::string::npos)
      return at.count();
  }
  return -1;
}

std::string joined(const std::vector<std::pair<std::chrono::milliseconds, std::string>>& parts) {
  std::string all;
  for (auto& p : parts)
    all += p.second;
  return all;
}

} // namespace

TEST(upstream_stream, pieces_reach_the_client_as_the_upstream_sends_them) {
  setup s;
  s.primary.configure({{"chunk_delay_ms", 150}});
  auto parts = timed_exchange(
    s.node->port(),
    raw_post("/v1/sessions/" + s.id + "/messages", s.key,
             json{{"content", "abcdefghijklmnopqrst"}, {"stream", true}}.dump()),
    std::chrono::seconds(10));
  auto first = first_seen(parts, "event: delta");
  auto done = first_seen(parts, "event: done");
  ASSERT_GE(first, 0) << joined(parts);
  ASSERT_GE(done, 0) << joined(parts);
  std::printf("[ figures  ] streamed turn: first delta after %lld ms, done after %lld ms\n",
              static_cast<long long>(first), static_cast<long long>(done));
  EXPECT_GE(done - first, 600) << "the reply was buffered, not streamed";
  auto stored = s.node->all_messages(s.key, s.id);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[1]["content"], "mock: abcdefghijklmnopqrst");
  EXPECT_TRUE(s.primary.requests()[0]["body"]["stream"].get<bool>());
}

TEST(upstream_stream, a_stream_cut_midway_is_not_retried_and_stores_nothing) {
  setup s{{{"PARLEY_LLM_MAX_ATTEMPTS", "3"}}, true};
  s.primary.configure({{"mode", "cut_stream"}, {"fail_count", 1}});
  auto r = s.node->post_message(s.key, s.id,
                                {{"content", "a long answer please"}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_NE(r.body.find("event: delta"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("event: error"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("event: done"), std::string::npos);
  EXPECT_EQ(s.primary.requests().size(), 1u) << "no retry after the first piece reached the client";
  EXPECT_EQ(s.fallback->requests().size(), 0u) << "nor the fallback";
  EXPECT_EQ(s.stored(), 0u);
  auto next = s.turn("and now");
  EXPECT_EQ(next.status, 200) << describe(next);
}

TEST(upstream_stream, a_stream_failing_before_its_first_piece_goes_to_the_fallback) {
  setup s{{{"PARLEY_LLM_MAX_ATTEMPTS", "1"}}, true};
  s.primary.configure({{"fail_status", 503}, {"fail_count", -1}});
  auto r = s.node->post_message(s.key, s.id, {{"content", "rescue me"}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_NE(r.body.find("event: done"), std::string::npos) << r.body;
  EXPECT_EQ(s.fallback->requests().size(), 1u);
  auto stored = s.node->all_messages(s.key, s.id);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[1]["content"], "mock: rescue me");
}

// Once pieces reached the client the reply cannot be restarted on the
// fallback without the client seeing two replies: a stream that stalls
// after its first pieces times out and ends with an error event.
TEST(upstream_stream, a_stream_stalling_after_its_first_pieces_times_out_without_the_fallback) {
  setup s{{{"PARLEY_LLM_TIMEOUT_MS", "1500"}}, true};
  s.primary.configure({{"mode", "stall_stream"}, {"fail_count", 1}});
  auto r = s.node->post_message(s.key, s.id,
                                {{"content", "a long answer please"}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_NE(r.body.find("event: delta"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("event: error"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("event: done"), std::string::npos) << r.body;
  EXPECT_EQ(s.primary.requests().size(), 1u);
  EXPECT_EQ(s.fallback->requests().size(), 0u) << "no fallback after pieces reached the client";
  EXPECT_EQ(s.node->metric(primary_timeouts), 1);
  EXPECT_EQ(s.stored(), 0u);
  auto next = s.turn("and now");
  EXPECT_EQ(next.status, 200) << describe(next);
}

TEST(upstream_stream, a_hung_stream_before_its_first_piece_goes_to_the_fallback) {
  setup s{{{"PARLEY_LLM_TIMEOUT_MS", "2000"}}, true};
  s.primary.configure({{"mode", "hang"}, {"fail_count", -1}});
  auto r = s.node->post_message(s.key, s.id, {{"content", "rescue me"}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_NE(r.body.find("event: done"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("event: error"), std::string::npos) << r.body;
  EXPECT_EQ(s.primary.requests().size(), 1u);
  EXPECT_EQ(s.fallback->requests().size(), 1u);
  EXPECT_EQ(s.node->metric(primary_timeouts), 1);
  auto stored = s.node->all_messages(s.key, s.id);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[1]["content"], "mock: rescue me");
}

namespace {

/// Starts a streamed turn whose client reads for 400 ms, then leaves.
void leave_mid_stream(setup& s, const std::string& content) {
  timed_exchange(s.node->port(),
                 raw_post("/v1/sessions/" + s.id + "/messages", s.key,
                          json{{"content", content}, {"stream", true}}.dump()),
                 std::chrono::milliseconds(400));
}

} // namespace

TEST(upstream_stream, by_default_a_client_leaving_mid_stream_still_gets_its_turn_stored) {
  setup s;
  s.primary.configure({{"chunk_delay_ms", 100}});
  leave_mid_stream(s, "a fairly long question for a slow stream");
  EXPECT_TRUE(wait_for([&] { return s.stored() == 2; }, std::chrono::seconds(10)));
}

TEST(upstream_stream, with_cancel_on_disconnect_the_upstream_call_stops_and_nothing_is_stored) {
  setup s{{{"PARLEY_STREAM_CANCEL_ON_DISCONNECT", "1"}}};
  s.primary.configure({{"chunk_delay_ms", 100}});
  leave_mid_stream(s, "a fairly long question for a slow stream");
  // The full stream takes ~1.3 s; give it well beyond that, then check.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(s.stored(), 0u);
  EXPECT_GE(s.node->metric("parley_llm_requests_total{outcome=\"broken\",upstream=\"primary\"}"), 1)
    << "the upstream call ended as cancelled";
  // The session goes on normally.
  s.primary.configure({{"chunk_delay_ms", 0}});
  EXPECT_EQ(s.turn("next").status, 200);
}

namespace {

/// Runs one turn on each of `ids` at once (a thread each); their statuses.
std::vector<int> concurrent_turns(setup& s, const std::vector<std::string>& ids) {
  std::vector<int> status(ids.size(), 0);
  std::vector<std::thread> threads;
  threads.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i)
    threads.emplace_back([&, i] {
      status[i] = s.node->post_message(s.key, ids[i], {{"content", "turn " + std::to_string(i)}})
                    .status;
    });
  for (auto& t : threads)
    t.join();
  return status;
}

} // namespace

// API.md section 1: by default the upstream pool holds as many connections as
// turns may be in flight, so it never caps throughput below
// PARLEY_MAX_INFLIGHT (it used to stop at 64 calls in flight).
TEST(upstream_pool, by_default_more_than_64_slow_turns_are_in_flight_at_once) {
  setup s;
  constexpr std::size_t sessions = 150;
  std::vector<std::string> ids{s.id};
  while (ids.size() < sessions)
    ids.push_back(s.node->create_session(s.key));
  s.primary.configure({{"latency_ms", 1500}});
  http(s.primary.port(), "DELETE", "/_mock/stats");
  auto status = concurrent_turns(s, ids);
  EXPECT_EQ(std::count(status.begin(), status.end(), 200), static_cast<long>(sessions));
  auto stats = s.primary.stats();
  std::printf("[ figures  ] %zu turns at 1.5 s upstream latency: %lld calls in flight at once\n",
              sessions, static_cast<long long>(stats.value("peak_in_flight", -1)));
  EXPECT_GT(stats.value("peak_in_flight", 0), 64) << stats.dump();
  EXPECT_EQ(stats.value("answered", 0), static_cast<int>(sessions)) << stats.dump();
}

TEST(upstream_pool, an_explicit_pool_size_caps_the_calls_in_flight) {
  setup s{{{"PARLEY_LLM_POOL_SIZE", "8"}}};
  constexpr std::size_t sessions = 24;
  std::vector<std::string> ids{s.id};
  while (ids.size() < sessions)
    ids.push_back(s.node->create_session(s.key));
  s.primary.configure({{"latency_ms", 1000}});
  http(s.primary.port(), "DELETE", "/_mock/stats");
  auto status = concurrent_turns(s, ids);
  EXPECT_EQ(std::count(status.begin(), status.end(), 200), static_cast<long>(sessions))
    << "calls beyond the pool wait for a connection";
  auto stats = s.primary.stats();
  EXPECT_LE(stats.value("peak_in_flight", 99), 8) << stats.dump();
  EXPECT_GE(stats.value("peak_in_flight", 0), 2) << "the pool's connections are used at once";
  std::set<long long> connections;
  for (auto& r : s.primary.requests())
    connections.insert(r.value("connection", 0LL));
  EXPECT_LE(connections.size(), 8u) << "connections are kept alive and reused";
}

// The autoscaler's load signal (deploy/k8s/hpa.yaml): turns admitted and not
// yet answered, back to zero once they are.
TEST(upstream_pool, slow_turns_show_in_the_turns_in_flight_gauge) {
  setup s;
  constexpr std::size_t sessions = 10;
  std::vector<std::string> ids{s.id};
  while (ids.size() < sessions)
    ids.push_back(s.node->create_session(s.key));
  EXPECT_EQ(s.node->metric("parley_turns_in_flight"), 0);
  s.primary.configure({{"latency_ms", 1500}});
  std::vector<int> status;
  std::thread turns{[&] { status = concurrent_turns(s, ids); }};
  EXPECT_TRUE(wait_for([&] { return s.node->metric("parley_turns_in_flight") == sessions; }, 5s))
    << s.node->metric("parley_turns_in_flight");
  turns.join();
  EXPECT_EQ(std::count(status.begin(), status.end(), 200), static_cast<long>(sessions));
  EXPECT_EQ(s.node->metric("parley_turns_in_flight"), 0);
}

namespace {

/// A chunk with one piece of text, as an upstream streams it.
std::string piece_chunk(const std::string& text) {
  return json{{"model", "up-model"},
              {"choices", json::array({{{"index", 0},
                                        {"delta", {{"content", text}}},
                                        {"finish_reason", nullptr}}})}}
    .dump();
}

std::string finish_chunk() {
  return json{{"choices", json::array({{{"index", 0}, {"delta", json::object()},
                                        {"finish_reason", "stop"}}})}}
    .dump();
}

} // namespace

// A stream is the answer only when it is whole: it ends with [DONE] or a
// finish_reason, and every event in it is a JSON chunk. Cut short (the
// upstream closed cleanly before its end), with an error event, or with a
// chunk that is not JSON in UTF-8 (a lone surrogate), a session turn ends
// with an error event and stores nothing, so a retry with the same
// client_message_id gets a real answer; the gateway's client gets one error
// line and no [DONE]. Before, the partial text was stored and acknowledged.
TEST(upstream_stream, an_unfinished_or_faulty_stream_is_an_error_and_stores_nothing) {
  // Each bad stream counts against the primary's circuit; it stays closed
  // here, so that every call meets the bad stream.
  setup s{{{"PARLEY_LLM_BREAKER_THRESHOLD", "1000"}}, true};
  struct bad_stream {
    std::string name;
    std::vector<std::string> script;
  };
  std::vector<bad_stream> cases = {
    {"cut short", {piece_chunk("Hel"), piece_chunk("lo")}},
    {"error event",
     {piece_chunk("Hel"), R"({"error":{"message":"overloaded","type":"server_error"}})",
      finish_chunk(), "[DONE]"}},
    {"not json", {piece_chunk("Hel"), "{\"choices\":[{\"delta\":{\"content\":\"x", finish_chunk(),
                  "[DONE]"}},
    {"lone surrogate", {piece_chunk("Hel"), R"({"choices":[{"delta":{"content":"\ud83d"}}]})",
                        finish_chunk(), "[DONE]"}},
  };
  int n = 0;
  for (auto& c : cases) {
    auto cmid = "bad-" + std::to_string(n++);
    s.primary.configure({{"stream_script", c.script}});
    auto r = s.node->post_message(
      s.key, s.id, {{"content", "tell me"}, {"client_message_id", cmid}, {"stream", true}});
    ASSERT_EQ(r.status, 200) << c.name << ": " << describe(r);
    EXPECT_NE(r.body.find("event: error"), std::string::npos) << c.name << ": " << r.body;
    EXPECT_EQ(r.body.find("event: done"), std::string::npos) << c.name << ": " << r.body;
    EXPECT_EQ(s.stored(), 0u) << c.name;
    EXPECT_EQ(s.fallback->requests().size(), 0u) << c.name << ": pieces had reached the client";

    // The gateway: the upstream's text, then one error line, no [DONE].
    auto g = s.node->call("POST", "/v1/chat/completions", s.key,
                          json{{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                               {"stream", true}}
                            .dump());
    ASSERT_EQ(g.status, 200) << c.name << ": " << describe(g);
    auto last = g.body.rfind("data: ");
    ASSERT_NE(last, std::string::npos) << c.name << ": " << g.body;
    EXPECT_EQ(g.body.compare(last, 15, "data: {\"error\":"), 0) << c.name << ": " << g.body;
    EXPECT_EQ(g.body.find("data: [DONE]"), std::string::npos) << c.name << ": " << g.body;

    // The same client_message_id again, the upstream whole: a real answer.
    s.primary.configure({{"stream_script", json::array()}});
    auto again = s.node->post_message(
      s.key, s.id, {{"content", "tell me"}, {"client_message_id", cmid}, {"stream", true}});
    EXPECT_NE(again.body.find("event: done"), std::string::npos) << c.name << ": " << again.body;
    auto stored = s.node->all_messages(s.key, s.id);
    ASSERT_EQ(stored.size(), 2u) << c.name;
    EXPECT_EQ(stored[1]["content"], "mock: tell me") << c.name;
    ASSERT_EQ(s.node->call("DELETE", "/v1/sessions/" + s.id, s.key).status, 204);
    s.id = s.node->create_session(s.key);
  }
  // A fault before the first piece reached the client: the fallback answers.
  s.primary.configure({{"stream_script", json::array({"<html>bad gateway</html>"})}});
  auto r = s.node->post_message(s.key, s.id, {{"content", "rescue me"}, {"stream", true}});
  EXPECT_NE(r.body.find("event: done"), std::string::npos) << r.body;
  EXPECT_EQ(s.fallback->requests().size(), 1u);
  auto stored = s.node->all_messages(s.key, s.id);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[1]["content"], "mock: rescue me");
}

// An answer of 200 that Parley cannot read (a proxy's HTML page) is the
// upstream's failure like a 502: the fallback answers. Before, the turn got
// 502 and the fallback was never asked.
TEST(upstream, an_unreadable_answer_of_200_goes_to_the_fallback) {
  setup s{{{"PARLEY_LLM_MAX_ATTEMPTS", "1"}}, true};
  s.primary.configure({{"fail_status", 200}, {"fail_body", "<html>502 Bad Gateway</html>"}});
  for (bool stream : {false, true}) {
    auto r = s.node->post_message(s.key, s.id, {{"content", "rescue me"}, {"stream", stream}});
    ASSERT_EQ(r.status, 200) << describe(r);
    if (stream) {
      EXPECT_NE(r.body.find("event: done"), std::string::npos) << r.body;
    }
  }
  EXPECT_EQ(s.fallback->requests().size(), 2u);
  auto stored = s.node->all_messages(s.key, s.id);
  ASSERT_EQ(stored.size(), 4u);
  EXPECT_EQ(stored[3]["content"], "mock: rescue me");
}

// A model's answer holding U+0000, which PostgreSQL cannot store, is stored
// (and streamed) with U+FFFD in its place. Before, the turn failed with 503
// storage_unavailable, every time the model said it again.
TEST(upstream, a_nul_in_the_models_answer_is_stored_as_the_replacement_character) {
  setup s;
  json completion = {
    {"id", "c1"},
    {"object", "chat.completion"},
    {"model", "up-model"},
    {"choices", json::array({{{"index", 0},
                              {"message", {{"role", "assistant"}, {"content", std::string("a\0b", 3)}}},
                              {"finish_reason", "stop"}}})}};
  s.primary.configure({{"fail_status", 200}, {"fail_body", completion}});
  auto r = s.turn("say it");
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["reply"]["content"], "a\xEF\xBF\xBD" "b");
  s.primary.reset();
  s.primary.configure({{"stream_script", json::array({piece_chunk(std::string("c\0d", 3)),
                                                      finish_chunk(), "[DONE]"})}});
  auto st = s.node->post_message(s.key, s.id, {{"content", "again"}, {"stream", true}});
  ASSERT_EQ(st.status, 200) << describe(st);
  EXPECT_NE(st.body.find("event: done"), std::string::npos) << st.body;
  EXPECT_EQ(st.body.find("\\u0000"), std::string::npos) << st.body;
  auto stored = s.node->all_messages(s.key, s.id);
  ASSERT_EQ(stored.size(), 4u);
  EXPECT_EQ(stored[1]["content"], "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(stored[3]["content"], "c\xEF\xBF\xBD" "d");
}

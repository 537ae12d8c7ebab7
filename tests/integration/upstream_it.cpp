// The path to the model against the mock upstream, one failure mode at a
// time: what the client sees (status, code, time), which upstream got the
// call, and what was stored.

#include <gtest/gtest.h>

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

TEST(upstream, a_hung_upstream_times_out_and_the_fallback_is_not_tried_beyond_the_budget) {
  setup s{{{"PARLEY_LLM_TIMEOUT_MS", "600"}}, true};
  s.primary.configure({{"mode", "hang"}, {"fail_count", -1}});
  auto start = std::chrono::steady_clock::now();
  auto r = s.turn("stuck");
  auto took = ms_since(start);
  EXPECT_EQ(r.status, 504) << describe(r);
  EXPECT_EQ(r.code(), "upstream_timeout");
  EXPECT_GE(took, 550);
  EXPECT_LT(took, 3000);
  EXPECT_EQ(s.fallback->requests().size(), 0u) << "a timeout spent the call's budget";
  EXPECT_EQ(s.stored(), 0u);
}

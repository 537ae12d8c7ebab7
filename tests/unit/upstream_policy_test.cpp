#include <gtest/gtest.h>

#include "runtime/rules/upstream_policy.hpp"

using namespace parley;
using namespace std::chrono_literals;

TEST(upstream_policy, statuses_and_outcomes) {
  EXPECT_EQ(classify_status(200), attempt_outcome::success);
  EXPECT_EQ(classify_status(429), attempt_outcome::throttled);
  EXPECT_EQ(classify_status(503), attempt_outcome::server_error);
  EXPECT_EQ(classify_status(400), attempt_outcome::client_error);
  EXPECT_TRUE(is_retryable(attempt_outcome::connect_error));
  EXPECT_TRUE(is_retryable(attempt_outcome::throttled));
  EXPECT_TRUE(is_retryable(attempt_outcome::server_error));
  EXPECT_FALSE(is_retryable(attempt_outcome::timeout));
  EXPECT_FALSE(is_retryable(attempt_outcome::client_error));
  EXPECT_TRUE(counts_as_failure(attempt_outcome::timeout));
  EXPECT_FALSE(counts_as_failure(attempt_outcome::throttled));
  EXPECT_FALSE(counts_as_failure(attempt_outcome::client_error));
}

TEST(upstream_policy, a_timeout_goes_to_the_fallback_but_a_refused_request_does_not) {
  EXPECT_TRUE(tries_the_fallback(attempt_outcome::timeout));
  EXPECT_TRUE(tries_the_fallback(attempt_outcome::server_error));
  EXPECT_TRUE(tries_the_fallback(attempt_outcome::connect_error));
  EXPECT_TRUE(tries_the_fallback(attempt_outcome::broken));
  EXPECT_TRUE(tries_the_fallback(attempt_outcome::throttled));
  EXPECT_FALSE(tries_the_fallback(attempt_outcome::client_error));
  EXPECT_FALSE(tries_the_fallback(attempt_outcome::local_overload));
  EXPECT_FALSE(tries_the_fallback(attempt_outcome::success));
}

TEST(upstream_policy, the_call_bound_leaves_each_upstream_two_attempt_timeouts) {
  EXPECT_EQ(call_time_bound(2000ms, 1), 4000ms);
  EXPECT_EQ(call_time_bound(2000ms, 2), 8000ms);
  EXPECT_EQ(call_time_bound(60000ms, 2), 240000ms);
  EXPECT_EQ(call_time_bound(500ms, 0), 1000ms) << "the echo model: still a sane deadline";
}

TEST(upstream_policy, retry_after_in_seconds_only) {
  EXPECT_EQ(parse_retry_after("2"), 2000ms);
  EXPECT_EQ(parse_retry_after(" 0 "), 0ms);
  EXPECT_FALSE(parse_retry_after(""));
  EXPECT_FALSE(parse_retry_after("-1"));
  EXPECT_FALSE(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"));
}

TEST(upstream_policy, backoff_grows_with_full_jitter_and_honours_retry_after) {
  retry_policy p;
  std::mt19937_64 rng{42};
  for (int attempt = 1; attempt <= 6; ++attempt) {
    auto ceiling = std::min<std::int64_t>(200 << attempt, 5000);
    for (int i = 0; i < 200; ++i) {
      auto w = p.backoff(attempt, std::nullopt, rng);
      ASSERT_TRUE(w);
      EXPECT_GE(w->count(), 0);
      EXPECT_LT(w->count(), ceiling) << "attempt " << attempt;
    }
  }
  EXPECT_EQ(p.backoff(1, 3000ms, rng), 3000ms);
  EXPECT_FALSE(p.backoff(1, 60000ms, rng)) << "a hint beyond max_retry_after gives up";
}

TEST(upstream_policy, breaker_opens_probes_and_closes) {
  using clock = circuit_breaker::clock;
  circuit_breaker b{3, 1000ms};
  auto t = clock::time_point{} + 100s;
  EXPECT_TRUE(b.allow(t));
  b.on_failure(t);
  b.on_failure(t);
  EXPECT_EQ(b.current(t), circuit_breaker::state::closed);
  b.on_success(); // resets the count
  b.on_failure(t);
  b.on_failure(t);
  EXPECT_TRUE(b.allow(t));
  b.on_failure(t);
  EXPECT_EQ(b.current(t), circuit_breaker::state::open);
  EXPECT_FALSE(b.allow(t + 999ms));
  // Half-open: one probe only.
  EXPECT_EQ(b.current(t + 1000ms), circuit_breaker::state::half_open);
  EXPECT_TRUE(b.allow(t + 1000ms));
  EXPECT_FALSE(b.allow(t + 1001ms));
  // The probe fails: open again for a full cool-down.
  b.on_failure(t + 1100ms);
  EXPECT_FALSE(b.allow(t + 2000ms));
  EXPECT_TRUE(b.allow(t + 2100ms));
  b.on_success();
  EXPECT_EQ(b.current(t + 2100ms), circuit_breaker::state::closed);
  EXPECT_TRUE(b.allow(t + 2100ms));
  // An abandoned probe frees the slot.
  circuit_breaker a{1, 10ms};
  a.on_failure(t);
  EXPECT_TRUE(a.allow(t + 10ms));
  a.on_abandon();
  EXPECT_TRUE(a.allow(t + 11ms));
}

// The per-node token bucket (the rate limit while Redis is away), on a fake
// clock: burst, refill, retry hints, node shares, key independence and the
// bound on tracked keys.

#include <gtest/gtest.h>

#include "runtime/rules/local_bucket.hpp"

using namespace std::chrono_literals;
using parley::local_bucket;
using parley::node_share;

namespace {

const local_bucket::clock::time_point t0{std::chrono::hours{1000}};

} // namespace

TEST(local_bucket, lets_the_rate_through_as_a_burst_then_denies) {
  local_bucket b;
  for (int i = 0; i < 6; ++i) {
    auto v = b.take("k", 6, 1, t0);
    EXPECT_TRUE(v.allowed) << i;
    EXPECT_EQ(v.limit, 6);
    EXPECT_EQ(v.remaining, 5 - i);
    EXPECT_EQ(v.retry_after_ms, 0);
  }
  auto denied = b.take("k", 6, 1, t0);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.remaining, 0);
  EXPECT_EQ(denied.retry_after_ms, 10000) << "6 per minute: one token every 10 s";
}

// The auth throttle takes before a key lookup and gives back when the key
// was valid; a give-back never lifts a bucket above its burst.
TEST(local_bucket, give_back_returns_one_token_up_to_the_burst) {
  local_bucket b;
  for (int i = 0; i < 6; ++i)
    b.take("k", 6, 1, t0);
  EXPECT_FALSE(b.take("k", 6, 1, t0).allowed);
  b.give_back("k", 6, 1);
  EXPECT_TRUE(b.take("k", 6, 1, t0).allowed);
  EXPECT_FALSE(b.take("k", 6, 1, t0).allowed);
  local_bucket full;
  full.take("f", 6, 1, t0);
  for (int i = 0; i < 10; ++i)
    full.give_back("f", 6, 1);
  EXPECT_EQ(full.take("f", 6, 1, t0).remaining, 5) << "still at most 6";
  full.give_back("unknown", 6, 1);
  EXPECT_EQ(full.size(), 1u) << "giving back tracks nothing new";
}

TEST(local_bucket, refills_rate_per_minute_and_says_when) {
  local_bucket b;
  for (int i = 0; i < 6; ++i)
    b.take("k", 6, 1, t0);
  auto early = b.take("k", 6, 1, t0 + 4s);
  EXPECT_FALSE(early.allowed);
  EXPECT_EQ(early.retry_after_ms, 6000);
  auto on_time = b.take("k", 6, 1, t0 + 10s);
  EXPECT_TRUE(on_time.allowed);
  EXPECT_EQ(on_time.remaining, 0);
  EXPECT_FALSE(b.take("k", 6, 1, t0 + 10s).allowed);
  // 30 s later three tokens have accrued, never a fraction more.
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(b.take("k", 6, 1, t0 + 40s).allowed) << i;
  EXPECT_FALSE(b.take("k", 6, 1, t0 + 40s).allowed);
}

TEST(local_bucket, never_holds_more_than_the_burst) {
  local_bucket b;
  b.take("k", 6, 1, t0);
  int allowed = 0;
  for (int i = 0; i < 20; ++i)
    allowed += b.take("k", 6, 1, t0 + 10min).allowed;
  EXPECT_EQ(allowed, 6);
}

TEST(local_bucket, a_clock_going_backwards_refills_nothing) {
  local_bucket b;
  for (int i = 0; i < 6; ++i)
    b.take("k", 6, 1, t0 + 1min);
  EXPECT_FALSE(b.take("k", 6, 1, t0).allowed);
  EXPECT_FALSE(b.take("k", 6, 1, t0 + 1min).allowed);
}

TEST(local_bucket, the_limit_is_the_nodes_share_of_the_rate) {
  EXPECT_EQ(node_share(600, 3), 200);
  EXPECT_EQ(node_share(10, 3), 3) << "rounded down: the shares never exceed the rate";
  EXPECT_EQ(node_share(1, 5), 1) << "at least one";
  EXPECT_EQ(node_share(5, 0), 5);
  EXPECT_EQ(node_share(5, -2), 5);

  local_bucket b;
  int allowed = 0;
  for (int i = 0; i < 10; ++i)
    allowed += b.take("k", 10, 3, t0).allowed;
  EXPECT_EQ(allowed, 3);
  auto v = b.take("k", 10, 3, t0);
  EXPECT_EQ(v.limit, 3);
  EXPECT_EQ(v.retry_after_ms, 20000) << "3 per minute: one token every 20 s";
}

TEST(local_bucket, a_smaller_share_clamps_the_tokens) {
  local_bucket b;
  EXPECT_EQ(b.take("k", 10, 1, t0).remaining, 9);
  auto v = b.take("k", 10, 2, t0); // a second node joined: the share is 5
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.limit, 5);
  EXPECT_EQ(v.remaining, 4);
}

TEST(local_bucket, keys_are_independent) {
  local_bucket b;
  for (int i = 0; i < 3; ++i)
    b.take("a", 3, 1, t0);
  EXPECT_FALSE(b.take("a", 3, 1, t0).allowed);
  auto other = b.take("b", 3, 1, t0);
  EXPECT_TRUE(other.allowed);
  EXPECT_EQ(other.remaining, 2);
}

TEST(local_bucket, rate_zero_means_no_limit) {
  local_bucket b;
  for (int i = 0; i < 100; ++i)
    EXPECT_TRUE(b.take("k", 0, 1, t0).allowed);
  EXPECT_EQ(b.size(), 0u);
}

TEST(local_bucket, tracks_a_bounded_number_of_keys_forgetting_the_least_recent) {
  local_bucket b{3};
  for (auto k : {"a", "b", "c"})
    EXPECT_TRUE(b.take(k, 1, 1, t0).allowed); // each now empty
  EXPECT_FALSE(b.take("a", 1, 1, t0).allowed); // a is now the most recent
  EXPECT_TRUE(b.take("d", 1, 1, t0).allowed);  // evicts b, the least recent
  EXPECT_EQ(b.size(), 3u);
  EXPECT_TRUE(b.take("b", 1, 1, t0).allowed) << "b was forgotten: a full bucket again";
  EXPECT_FALSE(b.take("a", 1, 1, t0).allowed) << "a was kept";
  EXPECT_EQ(b.size(), 3u);
}

TEST(local_bucket, many_keys_stay_within_the_bound) {
  local_bucket b{1000};
  for (int i = 0; i < 5000; ++i)
    b.take("key-" + std::to_string(i), 60, 1, t0 + std::chrono::milliseconds{i});
  EXPECT_EQ(b.size(), 1000u);
}

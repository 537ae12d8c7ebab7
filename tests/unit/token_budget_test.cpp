// Daily token budgets: the UTC day and the seconds to its end, the budget a
// key lives by, the reservation, the admission rule and the per-node
// counters used while Redis is away.

#include <gtest/gtest.h>

#include "runtime/rules/token_budget.hpp"

using namespace parley;

namespace {

// 2026-12-07T00:00:00Z
constexpr std::int64_t midnight = 1796601600;

} // namespace

TEST(token_budget, utc_day_and_seconds_to_midnight) {
  EXPECT_EQ(utc_day(0), 0);
  EXPECT_EQ(utc_day(86399), 0);
  EXPECT_EQ(utc_day(86400), 1);
  EXPECT_EQ(utc_day(-1), -1);
  EXPECT_EQ(utc_day(midnight), 20794);
  EXPECT_EQ(utc_day(midnight - 1), 20793);
  EXPECT_EQ(seconds_to_next_utc_day(midnight), 86400);
  EXPECT_EQ(seconds_to_next_utc_day(midnight - 1), 1);
  EXPECT_EQ(seconds_to_next_utc_day(midnight + 12 * 3600 + 30), 12 * 3600 - 30);
  EXPECT_EQ(seconds_to_next_utc_day(-1), 1);
}

TEST(token_budget, the_keys_own_budget_overrides_the_default) {
  EXPECT_EQ(effective_budget(-1, 5000), 5000); // none of its own: the node's
  EXPECT_EQ(effective_budget(-1, 0), 0);
  EXPECT_EQ(effective_budget(0, 5000), 0); // its own: unlimited
  EXPECT_EQ(effective_budget(300, 5000), 300);
  EXPECT_EQ(effective_budget(300, 0), 300);
}

TEST(token_budget, a_node_share_never_adds_up_to_more_than_the_budget) {
  EXPECT_EQ(node_budget_share(0, 3), 0);
  EXPECT_EQ(node_budget_share(1000, 1), 1000);
  EXPECT_EQ(node_budget_share(1000, 3), 333);
  EXPECT_EQ(node_budget_share(2, 3), 1);
  EXPECT_EQ(node_budget_share(1000, 0), 1000);
}

TEST(token_budget, reservation_is_the_prompt_plus_the_completion_it_may_produce) {
  EXPECT_EQ(budget_reservation(40, 100), 140);
  EXPECT_EQ(budget_reservation(40, std::nullopt), 40 + default_completion_allowance);
  EXPECT_EQ(budget_reservation(-5, -1), 0);
}

TEST(token_budget, admission_reserves_at_most_what_is_left) {
  auto v = admit_budget(0, 0, 500); // unlimited
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.reserved, 0);
  v = admit_budget(100, 1000, 300);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.spent, 100);
  EXPECT_EQ(v.reserved, 300);
  v = admit_budget(900, 1000, 300); // some left: admitted, reserves the rest
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.reserved, 100);
  v = admit_budget(1000, 1000, 1);
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.reserved, 0);
  EXPECT_FALSE(admit_budget(1200, 1000, 0).allowed);
}

TEST(token_budget, local_counters_reserve_settle_and_start_again_each_day) {
  local_budget b{10};
  auto v = b.reserve("k", 7, 100, 60);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.reserved, 60);
  v = b.reserve("k", 7, 100, 60); // a burst: only what is left
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.reserved, 40);
  EXPECT_FALSE(b.reserve("k", 7, 100, 60).allowed);
  b.add("k", 7, 25 - 60); // the first call spent 25 of its 60
  b.add("k", 7, 10 - 40); // the second 10 of its 40
  EXPECT_EQ(b.spent("k", 7), 35);
  EXPECT_TRUE(b.reserve("k", 7, 100, 60).allowed);
  EXPECT_EQ(b.spent("k", 7), 95);
  b.add("k", 6, 500); // yesterday's late settlement: dropped
  EXPECT_EQ(b.spent("k", 7), 95);
  v = b.reserve("k", 8, 100, 60); // a new day
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.spent, 0);
  b.add("k", 8, -1000); // never below 0
  EXPECT_EQ(b.spent("k", 8), 0);
  EXPECT_TRUE(b.reserve("other", 8, 0, 60).allowed); // unlimited: not tracked
  EXPECT_EQ(b.spent("other", 8), 0);
}

TEST(token_budget, local_counters_are_bounded) {
  local_budget b{2};
  b.add("a", 1, 10);
  b.add("b", 1, 20);
  b.add("a", 1, 1); // a is now the most recent
  b.add("c", 1, 30); // evicts b
  EXPECT_EQ(b.size(), 2u);
  EXPECT_EQ(b.spent("a", 1), 11);
  EXPECT_EQ(b.spent("b", 1), 0);
  EXPECT_EQ(b.spent("c", 1), 30);
}

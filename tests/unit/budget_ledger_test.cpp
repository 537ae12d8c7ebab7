// The budget ledger (actors/budget_ledger.hpp): leases hand out only what
// they hold, renewals add to them, sweeps give back the idle ones and those
// of past days, and the settlement queue tells its first writer to send the
// one message of a batch and stays bounded.

#include <gtest/gtest.h>

#include "actors/budget_ledger.hpp"

using parley::budget_ledger;
using parley::budget_settlement;

TEST(budget_ledger, a_lease_hands_out_only_what_it_holds) {
  budget_ledger l;
  EXPECT_FALSE(l.take("k", 7, 1000, 10)) << "no lease yet";
  std::int64_t back = 0;
  // A renewal of 160 for a call of 10: the call takes 10, 150 stay.
  EXPECT_EQ(l.renew("k", 7, true, 160, 400, 10, back), 10);
  EXPECT_EQ(back, 0);
  EXPECT_EQ(l.lease_of("k", 7), (std::pair<std::int64_t, std::int64_t>{150, 400}));
  for (int i = 0; i < 15; ++i) {
    auto d = l.take("k", 7, 1000, 10);
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->allowed);
    EXPECT_TRUE(d->redis_ok) << "reserved in Redis: settles as such";
    EXPECT_EQ(d->reserved, 10);
    EXPECT_EQ(d->spent, 400);
  }
  EXPECT_FALSE(l.take("k", 7, 1000, 10)) << "empty";
  EXPECT_FALSE(l.take("k", 8, 1000, 10)) << "another day";
  EXPECT_FALSE(l.take("k", 7, 1000, 0)) << "a call reserving nothing asks the actor";
  // A renewal that Redis refused notes the counter and hands out nothing.
  EXPECT_EQ(l.renew("k", 7, false, 0, 1000, 10, back), 0);
  EXPECT_EQ(l.lease_of("k", 7).second, 1000);
}

TEST(budget_ledger, a_renewal_joins_what_is_left_and_a_full_ledger_gives_back) {
  budget_ledger l{1};
  std::int64_t back = 0;
  ASSERT_EQ(l.renew("a", 7, true, 25, 25, 10, back), 10); // 15 left
  ASSERT_TRUE(l.take("a", 7, 1000, 10));                   // 5 left
  EXPECT_FALSE(l.take("a", 7, 1000, 10));
  EXPECT_EQ(l.renew("a", 7, true, 20, 45, 10, back), 10) << "5 + 20, 10 of them taken";
  EXPECT_EQ(l.lease_of("a", 7).first, 15);
  // One lease at most: another key's renewal takes its call's share and
  // gives the rest back.
  EXPECT_EQ(l.renew("b", 7, true, 160, 160, 10, back), 10);
  EXPECT_EQ(back, 150);
  EXPECT_EQ(l.lease_of("b", 7).first, 0);
}

TEST(budget_ledger, sweeps_give_back_idle_leases_and_forget_past_days) {
  budget_ledger l;
  std::int64_t back = 0;
  l.renew("busy", 7, true, 100, 100, 10, back);
  l.renew("idle", 7, true, 100, 100, 10, back);
  l.renew("old", 6, true, 100, 100, 10, back);
  // The first sweep marks the leases used since they were made; the old
  // day's goes at once, with nothing to give back (its counter expires).
  auto first = l.sweep(7);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].key_id, "old");
  EXPECT_EQ(first[0].left, 0);
  ASSERT_TRUE(l.take("busy", 7, 1000, 10));
  auto second = l.sweep(7);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].key_id, "idle");
  EXPECT_EQ(second[0].day, 7);
  EXPECT_EQ(second[0].left, 90);
  EXPECT_TRUE(l.has_leases());
  auto rest = l.take_all();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].left, 80);
  EXPECT_FALSE(l.has_leases());
}

TEST(budget_ledger, the_first_settlement_of_a_batch_sends_and_the_queue_is_bounded) {
  budget_ledger l{10, 3};
  using queued = budget_ledger::queued;
  EXPECT_EQ(l.add(budget_settlement{"k", 7, 10, 4, true}), queued::first);
  EXPECT_EQ(l.add(budget_settlement{"k", 7, 10, 5, true}), queued::later);
  EXPECT_EQ(l.add(budget_settlement{"k", 7, 10, 6, true}), queued::later);
  EXPECT_EQ(l.add(budget_settlement{"k", 7, 10, 7, true}), queued::dropped) << "full";
  EXPECT_EQ(l.dropped(), 1u);
  auto batch = l.drain();
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[2].actual, 6);
  EXPECT_TRUE(l.drain().empty());
  EXPECT_EQ(l.add(budget_settlement{"k", 7, 10, 8, true}), queued::first) << "a new batch";
}

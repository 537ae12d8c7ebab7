#include <optional>
#include <utility>

#include <gtest/gtest.h>

#include "actors/edge/inflight_gate.hpp"

#include <vector>

using parley::inflight_gate;

TEST(inflight_gate, tickets_count_while_they_live_and_the_bound_refuses_more) {
  inflight_gate gate{2};
  auto a = gate.try_enter();
  ASSERT_TRUE(a);
  {
    auto b = gate.try_enter();
    ASSERT_TRUE(b);
    EXPECT_EQ(gate.count(), 2u);
    EXPECT_FALSE(gate.try_enter());
  }
  EXPECT_EQ(gate.count(), 1u);
  a->reset();
  a->reset();
  EXPECT_EQ(gate.count(), 0u);
}

TEST(inflight_gate, a_moved_ticket_counts_once) {
  inflight_gate gate{5};
  auto a = gate.try_enter();
  inflight_gate::ticket moved = std::move(*a);
  EXPECT_EQ(gate.count(), 1u);
  a.reset();
  EXPECT_EQ(gate.count(), 1u);
  inflight_gate::ticket other;
  other = std::move(moved);
  EXPECT_TRUE(other);
  EXPECT_FALSE(moved);
  EXPECT_EQ(gate.count(), 1u);
  other = inflight_gate::ticket{};
  EXPECT_EQ(gate.count(), 0u);
}

TEST(inflight_gate, a_ticket_may_outlive_its_gate) {
  std::optional<inflight_gate::ticket> t;
  {
    inflight_gate gate{1};
    t = gate.try_enter();
  }
  t.reset(); // no use of the freed gate
  SUCCEED();
}

TEST(inflight_gate, the_observer_hears_every_count) {
  inflight_gate gate{3};
  std::vector<std::size_t> heard;
  gate.on_change([&](std::size_t n) { heard.push_back(n); });
  {
    auto a = gate.try_enter();
    auto b = gate.try_enter();
    auto moved = std::move(*a);
    moved.reset();
    moved.reset(); // idempotent: heard once
  }
  EXPECT_EQ(heard, (std::vector<std::size_t>{1, 2, 1, 0}));
}

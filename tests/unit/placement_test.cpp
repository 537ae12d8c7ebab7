#include <gtest/gtest.h>

#include <map>

#include "runtime/rules/placement.hpp"

using parley::place;

TEST(placement, every_node_computes_the_same_owner) {
  std::vector<std::string> a{"n1", "n2", "n3"}, b{"n3", "n1", "n2"};
  for (int i = 0; i < 1000; ++i) {
    auto id = "s" + std::to_string(i);
    EXPECT_EQ(place(id, a), place(id, b));
  }
  EXPECT_EQ(place("x", {}), "");
  EXPECT_EQ(place("x", {"only"}), "only");
}

TEST(placement, spreads_sessions_evenly) {
  std::vector<std::string> nodes{"n1", "n2", "n3"};
  std::map<std::string, int> count;
  for (int i = 0; i < 30000; ++i)
    ++count[place("session-" + std::to_string(i), nodes)];
  for (auto& [n, c] : count)
    EXPECT_NEAR(c, 10000, 600) << n;
}

TEST(placement, a_membership_change_moves_only_sessions_that_must_move) {
  std::vector<std::string> three{"n1", "n2", "n3"}, four{"n1", "n2", "n3", "n4"};
  int moved = 0;
  for (int i = 0; i < 20000; ++i) {
    auto id = "s" + std::to_string(i);
    auto before = place(id, three), after = place(id, four);
    if (before != after) {
      EXPECT_EQ(after, "n4") << "a session may only move to the node that joined";
      ++moved;
    }
    // A node leaving moves only its own sessions.
    std::vector<std::string> two{"n1", "n3"};
    if (before != "n2") {
      EXPECT_EQ(place(id, two), before);
    }
  }
  EXPECT_NEAR(moved, 5000, 500);
}

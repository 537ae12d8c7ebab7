// The deadline book of actors/deadlines.hpp: what a long-lived actor keeps
// instead of CAF's per-request timers (pure logic; the session protocol tests
// drive it inside an actor).

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "actors/deadlines.hpp"

namespace parley {
namespace {

using namespace std::chrono_literals;
using tp = deadline_book::time_point;

TEST(DeadlineBook, ATakenTicketNeverExpiresAndALateAnswerFindsNothing) {
  deadline_book book;
  std::vector<std::string> fired;
  auto t0 = tp{} + 1s;
  auto a = book.add(t0 + 5s, [&](caf::error&) { fired.push_back("a"); });
  auto b = book.add(t0 + 5s, [&](caf::error& e) {
    EXPECT_EQ(e, caf::sec::request_timeout);
    fired.push_back("b");
  });
  auto c = book.add(t0 + 2s, [&](caf::error&) { fired.push_back("c"); });
  auto handler = book.take(a);
  ASSERT_TRUE(handler);
  EXPECT_FALSE(book.take(a)); // once
  book.expire(t0 + 2s);
  EXPECT_EQ(fired, (std::vector<std::string>{"c"}));
  EXPECT_FALSE(book.settle(c)); // expired: its late answer is dropped
  book.expire(t0 + 10s);
  EXPECT_EQ(fired, (std::vector<std::string>{"c", "b"}));
  EXPECT_FALSE(book.settle(b));
  EXPECT_EQ(book.pending(), 0u);
}

TEST(DeadlineBook, OneWakeUpIsAskedForUntilAnEarlierDeadlineComes) {
  deadline_book book;
  auto t0 = tp{} + 1s;
  EXPECT_FALSE(book.wake_at());
  book.add(t0 + 30s, [](caf::error&) {});
  EXPECT_EQ(book.wake_at(), t0 + 30s);
  book.add(t0 + 40s, [](caf::error&) {});
  EXPECT_FALSE(book.wake_at()); // the message for 30 s comes first
  book.add(t0 + 10s, [](caf::error&) {});
  EXPECT_EQ(book.wake_at(), t0 + 10s);
  // The 10 s message came: look again at what is left.
  book.woke();
  book.expire(t0 + 10s);
  EXPECT_EQ(book.wake_at(), t0 + 30s);
  EXPECT_EQ(book.pending(), 2u);
}

TEST(DeadlineBook, AnExpiryMayFileAnotherDeadline) {
  deadline_book book;
  auto t0 = tp{} + 1s;
  int runs = 0;
  book.add(t0 + 1s, [&](caf::error&) {
    ++runs;
    book.add(t0 + 1s, [&](caf::error&) { ++runs; }); // due already: runs in the same sweep
  });
  book.expire(t0 + 1s);
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(book.pending(), 0u);
}

} // namespace
} // namespace parley

// now_rfc3339: the one timestamp format Parley stores and serves.

#include <chrono>
#include <ctime>
#include <regex>

#include <gtest/gtest.h>

#include "net/http/clock.hpp"

namespace parley {
namespace {

TEST(clock, now_is_rfc3339_utc_with_microseconds_and_moves_forward) {
  const std::regex shape{R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)"};
  std::string last;
  for (int i = 0; i < 2000; ++i) {
    auto t = now_rfc3339();
    ASSERT_TRUE(std::regex_match(t, shape)) << t;
    ASSERT_GE(t, last); // same width, so text order is time order
    last = t;
  }
  std::time_t secs = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char day[16];
  std::strftime(day, sizeof day, "%Y-%m-%dT", &tm);
  auto now = now_rfc3339();
  // The date part agrees with gmtime (unless midnight passed in between).
  if (tm.tm_hour != 23 || tm.tm_min != 59) {
    EXPECT_EQ(now.substr(0, 11), day);
  }
}

} // namespace
} // namespace parley

#include "storage/clock.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace parley {

std::string now_rfc3339() {
  using namespace std::chrono;
  auto us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(us / 1000000);
  // Two timestamps per turn: the part up to the second changes once a
  // second, so each thread formats it once and then only writes the
  // microseconds.
  thread_local std::time_t cached_secs = -1;
  thread_local char prefix[80];
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  std::string out;
  out.reserve(27);
  out += prefix;
  auto frac = static_cast<long>(us % 1000000);
  char digits[7] = "000000";
  for (int i = 5; i >= 0; --i, frac /= 10)
    digits[i] = static_cast<char>('0' + frac % 10);
  out.append(digits, 6);
  out += 'Z';
  return out;
}

} // namespace parley

#include "net/http/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace parley {

void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t, int digits) {
  using namespace std::chrono;
  auto ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(ns / 1000000000);
  thread_local std::time_t cached_secs = -1;
  thread_local char prefix[80];
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  out += prefix;
  if (digits > 0) {
    char frac[10] = {};
    auto rest = ns % 1000000000;
    for (int i = 8; i >= 0; --i, rest /= 10)
      frac[i] = static_cast<char>('0' + rest % 10);
    out += '.';
    out.append(frac, static_cast<std::size_t>(std::min(digits, 9)));
  }
  out += 'Z';
}

std::string now_rfc3339() {
  std::string out;
  out.reserve(27);
  append_rfc3339(out, std::chrono::system_clock::now(), 6);
  return out;
}

} // namespace parley

#pragma once
// Wall-clock timestamps in the one format Parley stores and serves.

#include <chrono>
#include <string>

namespace parley {

/// Now, as RFC 3339 in UTC with microseconds: "2026-11-23T10:00:00.123456Z".
/// PostgreSQL's timestamptz keeps microseconds, so the string survives a
/// round trip through the database unchanged.
std::string now_rfc3339();

/// Appends `t` as RFC 3339 in UTC with `digits` (0 to 9) fractional digits of
/// the second, e.g. "2026-11-23T10:00:00.123Z" for 3. The part up to the
/// second changes once a second, so each thread formats it once.
void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t, int digits);

} // namespace parley

#pragma once
// Wall-clock timestamps in the one format Parley stores and serves.

#include <string>

namespace parley {

/// Now, as RFC 3339 in UTC with microseconds: "2026-11-23T10:00:00.123456Z".
/// PostgreSQL's timestamptz keeps microseconds, so the string survives a
/// round trip through the database unchanged.
std::string now_rfc3339();

} // namespace parley

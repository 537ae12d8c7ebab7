#pragma once
// Timeouts for libpq connection strings: PARLEY_PG_TIMEOUT_MS turned into the
// libpq parameters that bound connecting and notice a dead or blackholed
// server, added to what the operator wrote without overriding any of it.

#include <chrono>
#include <string>

namespace parley::storage {

/// `conninfo` (a libpq `key=value` string, or a `postgresql://` /
/// `postgres://` URI) with every one of these parameters it does not set
/// already appended, in its own syntax:
///   connect_timeout      the bound in seconds, rounded up (libpq's unit;
///                        libpq treats anything below 2 as 2, so 2 at least)
///   keepalives=1, keepalives_idle, keepalives_interval, keepalives_count
///                        so that an idle connection to a dead peer is
///                        noticed within the bound (whole seconds)
///   tcp_user_timeout     the bound in ms: data unacknowledged that long
///                        closes the connection (libpq 12 and later)
/// Pure; `timeout` must be at least 1 ms.
std::string with_pg_timeouts(const std::string& conninfo, std::chrono::milliseconds timeout);

/// Empty when libpq can parse `conninfo` (syntax and parameter names; values
/// such as sslmode are checked when connecting); else one line saying why.
/// libpq's own message is included only when the string holds no password
/// (no `password` parameter and no `user:password@` in a URI), since libpq
/// quotes the offending text. Pure.
std::string pg_conninfo_error(const std::string& conninfo);

} // namespace parley::storage

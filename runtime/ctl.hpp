#pragma once
// `parley ctl`: the operators' command line over the admin API (API.md
// sections 3 and 6) of any node. Parsing and rendering are pure; run_ctl
// makes one blocking HTTP call, so it belongs to the command line only.

#include <chrono>
#include <iosfwd>
#include <string>
#include <vector>

#include "net/http_client.hpp"
#include "runtime/config.hpp"

namespace parley {

/// `parley ctl`'s exit codes.
enum class ctl_exit : int {
  ok = 0,
  api_error = 1,   ///< the node answered with an error (or with something not JSON)
  usage = 2,       ///< unknown command or option, missing or bad argument
  unreachable = 3, ///< no connection, or no answer within --timeout-ms
};

/// One admin call, as parsed from the words after `ctl`.
struct ctl_command {
  std::string url;            ///< http://host:port[/base], as given or defaulted
  net::upstream_url endpoint; ///< `url` parsed
  std::string token;          ///< the admin bearer token
  bool json = false;          ///< print the server's JSON instead of tables
  std::chrono::milliseconds timeout{5000};
  std::string name; ///< "cluster", "session", "migrate", "drain", "key create", ...
  std::vector<std::string> operands; ///< the command's arguments, e.g. {ID, NODE}
  std::string method, path, body;    ///< the HTTP request (path without the URL's base)
};

/// Parses the words after `ctl`. `env` supplies the defaults: PARLEY_CTL_URL,
/// else http://PARLEY_HTTP_HOST:PARLEY_HTTP_PORT (127.0.0.1:8080), and
/// PARLEY_ADMIN_TOKEN. False with `err` set (one line) on a usage error.
bool parse_ctl(const std::vector<std::string>& args, const settings& env, ctl_command& out,
               std::string& err);

/// What `parley ctl` prints for the 2xx answer `body` to `cmd`: aligned tables
/// or `key value` lines, or the body itself with --json. False when a body
/// that must be JSON is not.
bool render_ctl_answer(const ctl_command& cmd, const std::string& body, std::string& text);

/// Runs `parley ctl` with the words after `ctl`: prints to `out` (answers)
/// and `err` (errors, as `parley ctl: ...`); returns a ctl_exit value.
int run_ctl(const std::vector<std::string>& args, const settings& env, std::ostream& out,
            std::ostream& err);

} // namespace parley

#pragma once
// A one-shot blocking HTTP/1.1 client for command-line tools such as
// `parley ctl`: one request on a fresh plain-TCP connection, under one
// deadline. It blocks the calling thread, so never call it from a server
// thread (asio or CAF); the node itself uses http_client.

#include <chrono>
#include <string>

#include "net/http_client.hpp"

namespace parley::net {

/// One request: `target` is the path (and query) to ask for.
struct blocking_request {
  std::string method; ///< "GET", "POST", "DELETE", ...
  std::string target;
  std::string body;   ///< sent as application/json when not empty
  std::string bearer; ///< Authorization: Bearer <bearer> when not empty
};

/// Sends `req` to `url` (its scheme must be http) and waits for the whole
/// answer. Resolving, connecting, writing and reading together end by
/// `timeout`. Returns `ok` with http_status and body (any status), or
/// connect_error, timeout or io_error with `error` saying what happened.
fetch_result fetch_blocking(const upstream_url& url, const blocking_request& req,
                            std::chrono::milliseconds timeout);

} // namespace parley::net

#pragma once
// A pooled keep-alive HTTP/1.1 client for one upstream (Boost.Beast). All of
// its state lives on one strand, so it needs no lock; callers may post from
// any thread and get exactly one callback, on an asio thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "net/io_runtime.hpp"

namespace parley::net {

/// An http:// base URL split into parts; `base_path` has no trailing '/'.
struct upstream_url {
  std::string scheme;
  std::string host;
  std::string port;
  std::string base_path;
};

/// Parses `http://host[:port][/path]`; on failure returns nullopt and sets `err`.
std::optional<upstream_url> parse_upstream_url(std::string_view url, std::string& err);

enum class fetch_status : std::uint8_t {
  ok,            ///< a response arrived (any HTTP status)
  connect_error, ///< resolve or connect failed
  timeout,       ///< the attempt's deadline passed
  io_error,      ///< the connection broke mid-exchange
  overloaded,    ///< the pool and its wait queue are full
};

struct fetch_result {
  fetch_status status = fetch_status::io_error;
  unsigned http_status = 0;
  std::string body;
  std::string retry_after; ///< the Retry-After header, if any
  std::string error;       ///< what went wrong, for logs and messages
};

using fetch_callback = std::function<void(fetch_result)>;

struct client_options {
  std::size_t pool_size = 64;     ///< connections open at most
  std::size_t queue_limit = 4096; ///< requests waiting for a connection at most
  std::size_t body_limit = 16 * 1024 * 1024;
};

class http_client {
public:
  http_client(io_runtime& io, upstream_url url, client_options opts);
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  /// POSTs a JSON body to base_path + path with a bearer key (empty: none).
  /// The whole attempt, including the wait for a pooled connection, ends by
  /// `timeout`. Thread-safe.
  void post_json(std::string path, std::string body, std::string bearer,
                 std::chrono::milliseconds timeout, fetch_callback cb);

  const upstream_url& url() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace parley::net

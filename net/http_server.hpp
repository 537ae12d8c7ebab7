#pragma once
// Parley's HTTP/1.1 listener (Boost.Beast, asynchronous, keep-alive). It
// reads one request at a time per connection, enforces the size limits and
// timeouts, and hands each request to a handler together with a responder.
// The handler may answer from any thread, later; the responder posts the
// answer onto the connection's strand (the only way in from outside).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/io_runtime.hpp"

namespace parley::net {

/// One parsed request, owned by the handler.
struct http_request {
  std::string method;
  std::string path;  ///< target without the query string
  std::string query; ///< after '?', undecoded
  std::string body;
  std::string content_type;
  std::string authorization;
  std::string accept;
  /// The `Idempotency-Key` header (OpenAI's Responses API), when sent (maybe empty).
  std::optional<std::string> idempotency_key;
  std::string request_id; ///< the client's X-Request-Id, or a generated one
  /// Who sent it: the peer's IPv4 address, or the /64 network of its IPv6
  /// address (one subscriber's block), e.g. "203.0.113.7", "2001:db8:1:2::/64".
  std::string peer;
  std::chrono::steady_clock::time_point received;
};

using header_list = std::vector<std::pair<std::string, std::string>>;

struct http_response {
  unsigned status = 200;
  std::string body;
  std::string content_type = "application/json";
  header_list headers;
};

/// The answer channel of one request. send() is thread-safe and takes effect
/// once; later calls are ignored.
class responder {
public:
  virtual ~responder() = default;
  virtual void send(http_response r) = 0;

  /// A streamed answer instead of send(): the status and headers of `head`
  /// go out at once with chunked transfer encoding (its body is ignored),
  /// then each write() is one chunk, in order, and finish() ends the answer
  /// (the connection then serves its next request). All thread-safe.
  /// `hold` (optional) is kept until the chunk went to the socket or was
  /// dropped (the client gone): a producer paces itself by it.
  virtual void start_stream(http_response head) { send(std::move(head)); }
  virtual void write(std::string chunk, std::shared_ptr<void> hold = nullptr) {}
  virtual void finish() {}
  /// True once the client is known to be gone (a write to it failed).
  virtual bool closed() const { return false; }
};
using responder_ptr = std::shared_ptr<responder>;

/// Called on an asio thread for every complete request. Must not block.
using request_handler = std::function<void(http_request&&, responder_ptr)>;

struct server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  std::string node_id;
  std::chrono::milliseconds header_timeout{10000}; ///< first byte to end of body
  std::chrono::milliseconds idle_timeout{60000};   ///< keep-alive wait between requests
  std::size_t body_limit = 64 * 1024;
  /// The body limit of a request to `path` (the target without its query),
  /// when it differs from `body_limit`; empty: `body_limit` for every path.
  /// Called on an asio thread once the headers are in; must not block.
  std::function<std::size_t(std::string_view path)> body_limit_for;
  /// Bodies over `body_limit` (the larger limits of body_limit_for) being
  /// read at once, in bytes, at most: each reserves its Content-Length (a
  /// chunked one its path's limit) until it is read; beyond: 503
  /// `overloaded`. Bodies are read before any key is checked, so this is
  /// what strangers can make a node hold. 0: no cap.
  std::size_t large_body_budget = 0;
  /// Request line and headers together at most; beyond: 431.
  std::size_t header_limit = 16 * 1024;
  /// Once the headers are in, the read buffer holds at most this many bytes
  /// the parser has not consumed yet: a chunk-size line with its
  /// extensions, or the trailer section, longer than this is a 400. (Body
  /// bytes never wait in the buffer: the parser moves them out at once.)
  std::size_t line_limit = 8 * 1024;
  std::size_t max_connections = 20000;
  /// Open connections per peer (http_request::peer) at most; 0: no cap.
  /// Beyond it a new connection gets 503 `overloaded` and is closed.
  std::size_t max_connections_per_ip = 1000;
};

class http_server {
public:
  http_server(io_runtime& io, server_options opts, request_handler handler);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Binds and starts accepting. Throws std::runtime_error naming the address
  /// when the bind fails.
  void start();

  /// Stops accepting, closes idle connections, lets in-flight requests answer
  /// (their connections then close), and returns when none is left or the
  /// deadline passed.
  void stop(std::chrono::milliseconds deadline);

  /// The bound port (useful when the configured port was 0).
  std::uint16_t port() const;

  /// Connections currently open.
  std::size_t connections() const;

  struct impl; ///< implementation detail, public for the connection class

private:
  std::shared_ptr<impl> impl_;
};

} // namespace parley::net

#pragma once
// A pooled keep-alive HTTP/1.1 client for one upstream (Boost.Beast), over
// plain TCP or TLS. The pool's state lives on one strand and each connection's
// exchange on a strand of its own, so it needs no lock and different calls'
// exchanges run in parallel; callers may post from any thread and get their
// callbacks on an asio thread.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "net/io_runtime.hpp"

namespace parley::net {

/// An http:// or https:// base URL split into parts; `base_path` has no
/// trailing '/'; an IPv6 `host` is kept without its brackets.
struct upstream_url {
  std::string scheme; ///< "http" or "https"
  std::string host;
  std::string port;
  std::string base_path;
};

/// Parses `http[s]://host[:port][/path]` (port 80 for http, 443 for https by
/// default; `[v6addr]` works as host); on failure returns nullopt and sets `err`.
std::optional<upstream_url> parse_upstream_url(std::string_view url, std::string& err);

enum class fetch_status : std::uint8_t {
  ok,            ///< a response arrived (any HTTP status); for a stream: it ended cleanly
  connect_error, ///< resolve, connect or the TLS handshake (e.g. certificate verification) failed
  timeout,       ///< the attempt's deadline passed
  io_error,      ///< the connection broke mid-exchange
  overloaded,    ///< the pool and its wait queue are full
  too_large,     ///< the answer (or one event of a stream) is over client_options::body_limit
};

struct fetch_result {
  fetch_status status = fetch_status::io_error;
  unsigned http_status = 0;
  std::string body;        ///< the response body; for a stream only a non-event-stream answer's
  std::string retry_after; ///< the Retry-After header, if any
  std::string error;       ///< what went wrong, for logs and messages
  /// post_json_stream: the events delivered to on_event before this result
  /// (so a caller knows whether anything was streamed before a failure).
  std::size_t events = 0;
};

using fetch_callback = std::function<void(fetch_result)>;

/// Flow control of one streamed call: after handing on the events of one
/// read, the client reads the upstream's next bytes only once every event
/// it handed on was consumed, so a stream holds at most one read (16 KiB,
/// or one event up to the body limit) beyond the socket buffers, however
/// slowly its consumer writes. Each event's consumer holds a ticket until
/// it is done with the event (written out, or dropped).
///
/// With a `window`, the reading goes on while the events handed on and not
/// yet consumed hold at most `window` bytes (their tickets' sizes): a
/// consumer that keeps up never parks the reader (no hand-off back per
/// event), one that falls behind holds at most the window and one read.
class stream_pace : public std::enable_shared_from_this<stream_pace> {
public:
  explicit stream_pace(std::size_t window = 0) : window_(window) {}
  /// A ticket for one event of `bytes` handed on: dropping it (on any
  /// thread) consumes the event.
  std::shared_ptr<void> ticket(std::size_t bytes = 0);
  /// The reader's side: true when no ticket is out (or the window holds
  /// them); otherwise keeps `resume`, which the thread dropping the ticket
  /// that lets the reader go on runs, and returns false.
  bool go_on_or_park(std::function<void()> resume);

private:
  struct held; ///< a ticket: consumes its event when dropped
  bool may_go_on() const { return out_ == 0 || (window_ > 0 && bytes_ <= window_); }
  void release(std::size_t bytes);

  const std::size_t window_;
  std::mutex mu_;
  std::size_t out_ = 0;   ///< tickets out
  std::size_t bytes_ = 0; ///< their bytes
  std::function<void()> parked_;
};

/// The callbacks of one streamed call. Both run on the strand of the call's
/// connection (an asio thread shared with the HTTP server), never at the same
/// time: they must not block or throw; hand the work to an actor instead.
struct stream_callbacks {
  /// Called once per server-sent event, in order and as it arrives, with the
  /// event's `data:` lines joined by '\n'. The view is valid only during the call.
  std::function<void(std::string_view data)> on_event;
  /// Called exactly once, after the last on_event.
  fetch_callback on_done;
  /// Optional: set it (from any thread) to abandon the stream; the client
  /// closes the upstream connection when the next bytes arrive (or at the
  /// deadline) and on_done gets io_error "cancelled".
  std::shared_ptr<std::atomic<bool>> cancel;
  /// Optional: paces the reading by the consumer (on_event takes tickets).
  std::shared_ptr<stream_pace> pace;
};

struct client_options {
  std::size_t pool_size = 64;                ///< connections open at most
  std::size_t queue_limit = 4096;            ///< requests waiting for a connection at most
  std::size_t body_limit = 16 * 1024 * 1024; ///< a response body, or one event, at most
  /// https only: a PEM file of CA certificates trusted in addition to the
  /// system store (OpenSSL's default paths; SSL_CERT_FILE/SSL_CERT_DIR apply).
  std::string ca_file;
};

class http_client {
public:
  /// For https, builds the TLS context (TLS 1.2+, peer and host name
  /// verification). Throws std::invalid_argument when `opts.ca_file` cannot
  /// be loaded.
  http_client(io_runtime& io, upstream_url url, client_options opts);
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  /// POSTs a JSON body to base_path + path with a bearer key (empty: none).
  /// An answer body over opts.body_limit ends the call with too_large. The
  /// whole attempt, including the wait for a pooled connection, the
  /// connect and the TLS handshake, ends by `timeout`. Thread-safe; `cb` is
  /// called exactly once, on an asio thread.
  void post_json(std::string path, std::string body, std::string bearer,
                 std::chrono::milliseconds timeout, fetch_callback cb);

  /// POSTs like post_json with `Accept: text/event-stream` and reads the
  /// answer incrementally: each event of a 2xx `text/event-stream` body goes
  /// to `cb.on_event` as it arrives (chunked, sized or close-delimited; LF or
  /// CRLF lines; comments skipped; events without data are not delivered).
  /// Then `cb.on_done` gets:
  /// - ok with http_status once the body ended cleanly (body empty);
  /// - ok with http_status and the whole body, and no on_event, for a non-2xx
  ///   answer or one that is not an event stream;
  /// - too_large when that body, or one event, is over opts.body_limit;
  /// - timeout when `timeout` (which covers the whole stream) passed, or
  ///   connect_error, io_error or overloaded; `events` tells how many events
  ///   were delivered before.
  /// A cleanly ended stream's connection returns to the pool; a broken or
  /// timed-out one is closed. Thread-safe; see stream_callbacks for threading.
  void post_json_stream(std::string path, std::string body, std::string bearer,
                        std::chrono::milliseconds timeout, stream_callbacks cb);

  const upstream_url& url() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace parley::net

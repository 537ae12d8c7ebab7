#include "net/http_server.hpp"

#include <atomic>
#include <cstdio>
#include <deque>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "net/http/api_error.hpp"
#include "net/http/json_text.hpp"

namespace parley::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::chrono::seconds write_timeout{30};
/// Lingering after an answer to a request not read whole (linger_close).
constexpr std::chrono::seconds linger_total{10};
constexpr std::chrono::seconds linger_idle{2};
constexpr std::size_t linger_bytes = 64 * 1024 * 1024;
constexpr std::size_t linger_read = 16 * 1024;
/// A streamed answer's chunks queued at once are written together up to
/// this many bytes.
constexpr std::size_t coalesce_limit = 64 * 1024;

/// "64 KiB", "8 MiB", or "1000 bytes": a body limit in a client's words.
std::string describe_bytes(std::size_t n) {
  if (n >= 1024 * 1024 && n % (1024 * 1024) == 0)
    return std::to_string(n / (1024 * 1024)) + " MiB";
  if (n >= 1024 && n % 1024 == 0)
    return std::to_string(n / 1024) + " KiB";
  return std::to_string(n) + " bytes";
}

std::string make_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  auto v = rng();
  std::string s(16, '0');
  for (int i = 0; i < 16; ++i, v >>= 4)
    s[static_cast<std::size_t>(i)] = hex[v & 0xF];
  return s;
}

/// A client id is echoed only when it is short printable ASCII, so that it
/// can never break a header or a log line.
bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128)
    return false;
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7E)
      return false;
  return true;
}

/// A request's header fields that make it malformed whatever its route: a
/// transfer coding other than chunked (RFC 9112 section 6.1: Parley decodes
/// none, and reading `gzip, chunked` as plain chunked would take compressed
/// bytes for the body), and a field that must appear once appearing twice
/// (which of two credentials or keys would count is a guess).
std::optional<api_error> refuse_fields(const http::request<http::string_body>& msg) {
  if (auto te = msg.find(http::field::transfer_encoding); te != msg.end()) {
    auto codings = te->value();
    if (!beast::iequals(codings, "chunked"))
      return api_error{errc::not_implemented,
                       "Transfer-Encoding '" + std::string{codings} +
                         "' is not supported: send the body with chunked alone or with a "
                         "Content-Length"};
  }
  for (auto name : {"Authorization", "Idempotency-Key", "Content-Type"})
    if (msg.count(name) > 1)
      return api_error{errc::invalid_request,
                       std::string{"the request has more than one "} + name + " header"};
  return std::nullopt;
}

/// The peer a connection counts against (http_request::peer): an IPv4
/// address (also when it arrives v4-mapped on an IPv6 socket), or the /64
/// network of an IPv6 address, since one subscriber usually holds a whole
/// /64 and could otherwise step around a per-address cap.
std::string peer_key(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  if (a.is_v4())
    return a.to_string();
  auto bytes = a.to_v6().to_bytes();
  for (std::size_t i = 8; i < bytes.size(); ++i)
    bytes[i] = 0;
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

/// Why a new connection is answered 503 and closed instead of served.
enum class refusal { none, node_full, peer_full };

} // namespace

class connection;

struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
  impl(io_runtime& io, server_options o, request_handler h)
    : ioc(io.context()), opts(std::move(o)), handler(std::move(h)),
      acceptor(asio::make_strand(ioc)) {}

  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);

  /// Counts a new connection of `peer`; false (and nothing counted) when
  /// the peer already holds max_connections_per_ip. Any thread.
  bool admit_peer(const std::string& peer) {
    if (opts.max_connections_per_ip == 0)
      return true;
    std::lock_guard<std::mutex> lk{peers_mu};
    auto [it, fresh] = per_peer.try_emplace(peer, 0);
    if (it->second >= opts.max_connections_per_ip)
      return false;
    ++it->second;
    return true;
  }

  /// Uncounts a connection admit_peer counted. Any thread.
  void release_peer(const std::string& peer) {
    std::lock_guard<std::mutex> lk{peers_mu};
    if (auto it = per_peer.find(peer); it != per_peer.end() && --it->second == 0)
      per_peer.erase(it);
  }

  asio::io_context& ioc;
  server_options opts;
  request_handler handler;
  tcp::acceptor acceptor;
  std::atomic<bool> stopping{false};
  std::atomic<std::size_t> open{0};
  /// Bytes reserved by large bodies being read (server_options::large_body_budget).
  std::atomic<std::size_t> large_reserved{0};
  std::uint16_t bound_port = 0;
  // Connections register here on open and close (not per request) so that
  // stop() can reach idle ones.
  std::mutex live_mu;
  std::unordered_set<std::shared_ptr<connection>*> live;
  // Open connections per peer; an entry exists only while its peer has one
  // open, so the table never holds more than max_connections entries.
  std::mutex peers_mu;
  std::unordered_map<std::string, std::size_t> per_peer;
};

/// One client connection. All of its state is touched on its strand only.
class connection : public std::enable_shared_from_this<connection> {
public:
  /// `peer_counted`: admit_peer counted this connection for `peer`.
  connection(tcp::socket&& s, std::shared_ptr<http_server::impl> srv, std::string peer,
             bool peer_counted)
    : stream_(std::move(s)), srv_(std::move(srv)), peer_(std::move(peer)),
      peer_counted_(peer_counted) {
    srv_->open.fetch_add(1, std::memory_order_relaxed);
  }

  ~connection() {
    release_large();
    if (peer_counted_)
      srv_->release_peer(peer_);
    srv_->open.fetch_sub(1, std::memory_order_relaxed);
  }

  void start(refusal why) {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this(), why] {
      if (why != refusal::none) {
        self->write_error(11, true,
                          {errc::overloaded,
                           why == refusal::node_full
                             ? "this node has too many open connections"
                             : "too many open connections from your address (at most " +
                                 std::to_string(self->srv_->opts.max_connections_per_ip) +
                                 "); close some or retry later"},
                          make_request_id());
        return;
      }
      self->register_live();
      self->read_request();
    });
  }

  /// Closes the connection if no request is in flight. Runs on the strand.
  void on_stop() {
    if (!in_flight_) {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      stream_.close();
    }
  }

  /// Posts a response onto the strand. Any thread.
  void deliver(http_response r) {
    asio::post(stream_.get_executor(),
               [self = shared_from_this(), r = std::move(r)]() mutable { self->write(std::move(r)); });
  }

  /// Streamed answers (responder::start_stream, write, finish). Any thread;
  /// everything is queued on the strand and written in order.
  void deliver_stream_start(http_response head) {
    asio::post(stream_.get_executor(), [self = shared_from_this(), h = std::move(head)]() mutable {
      self->stream_start(std::move(h));
    });
  }
  /// Posted, not deferred: a deferred hand-off from an io thread waits for
  /// that thread (no idle one is woken), which measured no cheaper and
  /// risks a piece waiting behind a preempted thread.
  void deliver_chunk(std::string chunk, std::shared_ptr<void> hold) {
    asio::post(stream_.get_executor(), [self = shared_from_this(), c = std::move(chunk),
                                        h = std::move(hold)]() mutable {
      self->enqueue(out_item{std::move(c), false, std::move(h)});
    });
  }
  void deliver_stream_end() {
    asio::post(stream_.get_executor(),
               [self = shared_from_this()] { self->enqueue(out_item{{}, true, nullptr}); });
  }

  /// Set once a write to the client failed; read from any thread.
  std::atomic<bool> peer_gone{false};

  auto executor() { return stream_.get_executor(); }

private:
  void register_live() {
    self_slot_ = std::make_unique<std::shared_ptr<connection>>(shared_from_this());
    std::lock_guard<std::mutex> lk{srv_->live_mu};
    srv_->live.insert(self_slot_.get());
  }

  void unregister_live() {
    if (!self_slot_)
      return;
    {
      std::lock_guard<std::mutex> lk{srv_->live_mu};
      srv_->live.erase(self_slot_.get());
    }
    // Drop the self reference last; the handler holding `self` keeps us alive.
    auto slot = std::move(self_slot_);
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
    unregister_live();
  }

  /// Waits for the first byte of the next request under the idle timeout.
  void wait_idle() {
    if (buffer_.size() > 0)
      return read_request();
    // An idle connection keeps no large buffer from an earlier request.
    if (buffer_.capacity() > 4096)
      buffer_.shrink_to_fit();
    buffer_.max_size(srv_->opts.header_limit);
    stream_.expires_after(srv_->opts.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              if (ec || self->srv_->stopping.load())
                                return self->close();
                              self->buffer_.commit(n);
                              self->read_request();
                            });
  }

  void read_request() {
    parser_.emplace();
    // The largest limit until the target is known; then the path's own
    // (on_read_some), before the parser takes the first body byte.
    body_limit_ = srv_->opts.body_limit;
    limit_chosen_ = !srv_->opts.body_limit_for;
    parser_->body_limit(limit_chosen_ ? body_limit_ : std::numeric_limits<std::uint64_t>::max());
    parser_->header_limit(static_cast<std::uint32_t>(srv_->opts.header_limit));
    stream_.expires_after(srv_->opts.header_timeout);
    read_some();
  }

  /// One step of reading a request (http::async_read, step by step). The
  /// read buffer only ever holds bytes the parser has not consumed yet:
  /// while the headers arrive at most header_limit of them, afterwards at
  /// most line_limit. Beast 1.74 bounds the headers itself, but not a
  /// chunk-size line with its extensions, nor the trailers: without this
  /// cap one `1;aaaa...` line would grow the buffer without end.
  void read_some() {
    auto cap = parser_->is_header_done() ? srv_->opts.line_limit : srv_->opts.header_limit;
    // Never below what it holds: the parser consumes that first.
    buffer_.max_size(std::max(cap, buffer_.size()));
    http::async_read_some(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&connection::on_read_some, shared_from_this()));
  }

  void on_read_some(beast::error_code ec, std::size_t n) {
    if (!ec && !limit_chosen_ && parser_->is_header_done()) {
      // The parser stops after the headers (it is not eager), so no body
      // byte was counted yet: the path's limit applies to all of them.
      limit_chosen_ = true;
      auto target = parser_->get().target();
      auto path = target.substr(0, target.find('?'));
      body_limit_ = srv_->opts.body_limit_for({path.data(), path.size()});
      auto length = parser_->content_length();
      if (length && *length > body_limit_)
        ec = http::error::body_limit;
      else if (!reserve_large(length ? *length : body_limit_))
        return refuse_unread({errc::overloaded, "this node is receiving too many large request "
                                                "bodies at once; retry shortly"});
      else
        parser_->body_limit(body_limit_);
    }
    if (!ec && !parser_->is_done())
      return read_some();
    on_read(ec, n);
  }

  /// Counts a body over the default limit against large_body_budget; false
  /// when the budget is spent.
  bool reserve_large(std::size_t bytes) {
    auto budget = srv_->opts.large_body_budget;
    if (budget == 0 || bytes <= srv_->opts.body_limit)
      return true;
    auto& reserved = srv_->large_reserved;
    auto now = reserved.load(std::memory_order_relaxed);
    do {
      if (now + bytes > budget)
        return false;
    } while (!reserved.compare_exchange_weak(now, now + bytes, std::memory_order_relaxed));
    reserved_ = bytes;
    return true;
  }

  void release_large() {
    if (reserved_ > 0)
      srv_->large_reserved.fetch_sub(reserved_, std::memory_order_relaxed);
    reserved_ = 0;
  }

  void on_read(beast::error_code ec, std::size_t) {
    release_large(); // read (or failed): the body is the handler's now
    head_ = false;
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted)
      return close();
    if (ec == http::error::body_limit)
      return refuse_unread({errc::payload_too_large,
                            "the request body is over " + describe_bytes(body_limit_)});
    if (ec == http::error::header_limit ||
        (ec == http::error::buffer_overflow && !parser_->is_header_done()))
      return refuse_unread({errc::header_too_large,
                            "the request line and headers are over " +
                              std::to_string(srv_->opts.header_limit / 1024) + " KiB"});
    if (ec == http::error::buffer_overflow)
      return write_error(11, true,
                         {errc::invalid_request,
                          "a chunk-size line with its extensions, or the trailer section, is "
                          "over " +
                            std::to_string(srv_->opts.line_limit / 1024) + " KiB"},
                         make_request_id());
    if (ec) {
      if (ec.category() == http::make_error_code(http::error::bad_method).category())
        return write_error(11, true,
                           {errc::invalid_request, "malformed HTTP request: " + ec.message()},
                           make_request_id());
      return close();
    }
    auto& msg = parser_->get();
    head_ = msg.method() == http::verb::head;
    if (auto refusal = refuse_fields(msg))
      return write_error(msg.version(), true, *refusal, make_request_id());
    // API.md section 2: text that is not UTF-8, or holds a NUL or another
    // control character, in the target or a header value is the client's
    // error, answered before anything routes or stores it.
    if (!is_clean_text({msg.target().data(), msg.target().size()}, allow_controls::no))
      return write_error(msg.version(), false,
                         {errc::invalid_request, "the request path or query is not valid UTF-8 "
                                                 "text (percent-encode other bytes)"},
                         make_request_id());
    for (auto& field : msg)
      if (!is_clean_text({field.value().data(), field.value().size()}, allow_controls::no))
        return write_error(msg.version(), false,
                           {errc::invalid_request, "the value of header '" +
                                                     std::string{field.name_string()} +
                                                     "' is not valid UTF-8 text"},
                           make_request_id());
    // Also on routes that read no body: bytes that are not UTF-8 are the
    // client's error wherever they are.
    if (!is_clean_text(msg.body()))
      return write_error(msg.version(), false,
                         {errc::invalid_request,
                          "the request body is not valid UTF-8 text (or holds a NUL byte)"},
                         make_request_id());
    http_request req;
    req.method = std::string{msg.method_string()};
    auto target = msg.target();
    auto q = target.find('?');
    req.path = std::string{target.substr(0, q)};
    if (q != beast::string_view::npos)
      req.query = std::string{target.substr(q + 1)};
    req.content_type = std::string{msg[http::field::content_type]};
    req.authorization = std::string{msg[http::field::authorization]};
    req.accept = std::string{msg[http::field::accept]};
    if (auto key = msg.find("Idempotency-Key"); key != msg.end())
      req.idempotency_key = std::string{key->value()};
    auto rid = msg["X-Request-Id"];
    req.request_id = acceptable_request_id(rid) ? std::string{rid} : make_request_id();
    req.received = std::chrono::steady_clock::now();
    req.peer = peer_;
    req.body = std::move(msg.body());
    version_ = msg.version();
    keep_alive_ = msg.keep_alive();
    request_id_ = req.request_id;
    in_flight_ = true;
    stream_.expires_never();
    dispatch(std::move(req));
  }

  void dispatch(http_request&& req);

  void write(http_response r) {
    auto res = std::make_shared<http::response<http::string_body>>(
      static_cast<http::status>(r.status), version_);
    res->set(http::field::content_type, r.content_type);
    res->set("X-Request-Id", request_id_);
    res->set("X-Parley-Node", srv_->opts.node_id);
    for (auto& [k, v] : r.headers)
      res->set(k, v);
    res->body() = std::move(r.body);
    bool keep = keep_alive_ && !srv_->stopping.load() && !close_after_;
    res->keep_alive(keep);
    res->prepare_payload();
    if (head_) { // the head of the answer alone, its Content-Length kept (RFC 9110 9.3.2)
      auto length = res->body().size();
      res->body().clear();
      res->content_length(length);
    }
    stream_.expires_after(write_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                        self->in_flight_ = false;
                        if (!ec && self->linger_)
                          return self->linger_close();
                        if (ec || !keep)
                          return self->close();
                        self->wait_idle();
                      });
  }

  struct out_item {
    std::string data;
    bool last = false;
    std::shared_ptr<void> hold; ///< the producer's, released once written or dropped
  };

  void stream_start(http_response h) {
    auto res = std::make_shared<http::response<http::empty_body>>(
      static_cast<http::status>(h.status), version_);
    res->set(http::field::content_type, h.content_type);
    res->set(http::field::cache_control, "no-cache");
    res->set("X-Request-Id", request_id_);
    res->set("X-Parley-Node", srv_->opts.node_id);
    for (auto& [k, v] : h.headers)
      res->set(k, v);
    res->chunked(true);
    stream_keep_ = keep_alive_ && !srv_->stopping.load() && !close_after_;
    res->keep_alive(stream_keep_);
    auto sr = std::make_shared<http::response_serializer<http::empty_body>>(*res);
    writing_ = true;
    stream_.expires_after(write_timeout);
    http::async_write_header(stream_, *sr,
                             [self = shared_from_this(), res, sr](beast::error_code ec, std::size_t) {
                               self->writing_ = false;
                               if (ec)
                                 return self->stream_failed();
                               self->watch_writes();
                               self->pump_out();
                             });
  }

  void enqueue(out_item item) {
    out_.push_back(std::move(item));
    if (!writing_)
      pump_out();
  }

  /// Writes what is queued; after the last chunk the connection goes back
  /// to reading requests (or closes). The chunks queued at once go out in
  /// one write (up to coalesce_limit bytes), framed here into one reused
  /// buffer, and the stream's end with them. Written on the socket itself:
  /// the stream's watchdog (watch_writes) bounds each write instead of a
  /// timer armed and cancelled per chunk.
  void pump_out() {
    if (writing_ || out_.empty())
      return;
    if (peer_gone.load()) {
      out_.clear();
      return;
    }
    wire_.clear();
    bool last = false;
    while (!out_.empty() && !last) {
      auto& next = out_.front();
      if (!wire_.empty() && !next.last && wire_.size() + next.data.size() > coalesce_limit)
        break;
      if (next.last) {
        wire_ += "0\r\n\r\n";
        last = true;
      } else {
        append_chunk(wire_, next.data);
      }
      if (next.hold)
        wire_holds_.push_back(std::move(next.hold));
      out_.pop_front();
    }
    writing_ = true;
    write_started_ = std::chrono::steady_clock::now();
    asio::async_write(stream_.socket(), asio::buffer(wire_),
                      [self = shared_from_this(), last](beast::error_code ec, std::size_t) {
                        self->writing_ = false;
                        self->wire_holds_.clear(); // lets the producers go on
                        if (ec)
                          return self->stream_failed();
                        if (last) {
                          self->watchdog_.cancel();
                          self->in_flight_ = false;
                          if (!self->stream_keep_)
                            return self->close();
                          return self->wait_idle();
                        }
                        self->pump_out();
                      });
  }

  /// One chunk of the chunked transfer coding: size in hex, CRLF, data, CRLF.
  static void append_chunk(std::string& out, const std::string& data) {
    char size[20];
    auto n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    out.append(size, static_cast<std::size_t>(n));
    out += data;
    out += "\r\n";
  }

  /// From the stream's head to its end: a write that has not completed
  /// within write_timeout closes the connection (checked every
  /// write_timeout, not armed per chunk).
  void watch_writes() {
    auto at = (writing_ ? write_started_ : std::chrono::steady_clock::now()) + write_timeout;
    watchdog_.expires_at(at);
    watchdog_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || !self->in_flight_ || self->peer_gone.load())
        return;
      if (self->writing_ && std::chrono::steady_clock::now() - self->write_started_ >= write_timeout) {
        beast::error_code ignored;
        self->stream_.socket().close(ignored); // the write fails: stream_failed
        return;
      }
      self->watch_writes();
    });
  }

  void stream_failed() {
    peer_gone.store(true);
    watchdog_.cancel();
    out_.clear();
    in_flight_ = false;
    close();
  }

  /// An error answered before the request was read whole (its body, or
  /// the rest of its headers): the connection closes after the answer, by
  /// linger_close.
  void refuse_unread(const api_error& e) {
    linger_ = true;
    write_error(11, true, e, make_request_id());
  }

  /// After an answer to a request that was not read whole: the send side is
  /// shut, and what the client still sends is read and dropped for a while
  /// (RFC 9112 section 9.6), so that a client that writes its whole body
  /// before it reads gets the answer. Closed at once, the socket would answer
  /// the unread bytes with a reset, the client's write would fail and the
  /// answer would be lost. Bounded: linger_bytes in all, linger_idle between
  /// reads, linger_total from the answer; a node that stops closes at once.
  void linger_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    linger_until_ = std::chrono::steady_clock::now() + linger_total;
    linger_left_ = linger_bytes;
    buffer_.clear();
    buffer_.shrink_to_fit();
    buffer_.max_size(linger_read);
    drain();
  }

  void drain() {
    if (linger_left_ == 0 || srv_->stopping.load() ||
        std::chrono::steady_clock::now() >= linger_until_)
      return close();
    stream_.expires_after(linger_idle);
    stream_.async_read_some(buffer_.prepare(linger_read),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              if (ec)
                                return self->close();
                              self->linger_left_ -= std::min(n, self->linger_left_);
                              self->drain(); // the bytes read are dropped: never committed
                            });
  }

  void write_error(unsigned version, bool close_after, const api_error& e, std::string rid) {
    version_ = version;
    keep_alive_ = false;
    close_after_ = close_after;
    request_id_ = std::move(rid);
    in_flight_ = true;
    http_response r;
    r.status = http_status(e.code);
    r.body = error_body(e);
    if (has_retry_after(e.code))
      r.headers.emplace_back("Retry-After", "1");
    write(std::move(r));
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http_server::impl> srv_;
  std::string peer_;
  bool peer_counted_ = false;
  std::unique_ptr<std::shared_ptr<connection>> self_slot_;
  std::string request_id_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool head_ = false; ///< the request in flight is a HEAD: its answer has no body
  bool close_after_ = false;
  bool linger_ = false; ///< the request was not read whole: linger_close after the answer
  std::size_t linger_left_ = 0;
  std::chrono::steady_clock::time_point linger_until_;
  bool in_flight_ = false;
  std::size_t body_limit_ = 0; ///< of the request being read
  std::size_t reserved_ = 0;   ///< of large_body_budget, while its body is read
  bool limit_chosen_ = true;   ///< body_limit_ is the request's path's
  // streamed answers
  std::deque<out_item> out_;
  std::string wire_;                             ///< the chunks being written
  std::vector<std::shared_ptr<void>> wire_holds_; ///< their producers' holds
  std::chrono::steady_clock::time_point write_started_;
  asio::steady_timer watchdog_{stream_.get_executor()};
  bool writing_ = false;
  bool stream_keep_ = false;
};

namespace {

/// Answers exactly once; a responder dropped unanswered answers 500 so that
/// a bug can never leave a client hanging.
class connection_responder final : public responder {
public:
  explicit connection_responder(std::shared_ptr<connection> c) : conn_(std::move(c)) {}

  ~connection_responder() override {
    if (streaming_) {
      finish(); // a stream dropped without finish() still ends properly
      return;
    }
    if (!done_.exchange(true)) {
      http_response r;
      r.status = 500;
      r.body = error_body({errc::internal, "the request was dropped without an answer"});
      conn_->deliver(std::move(r));
    }
  }

  void send(http_response r) override {
    if (done_.exchange(true))
      return;
    conn_->deliver(std::move(r));
  }

  void start_stream(http_response head) override {
    if (done_.exchange(true))
      return;
    streaming_ = true;
    conn_->deliver_stream_start(std::move(head));
  }

  void write(std::string chunk, std::shared_ptr<void> hold) override {
    if (streaming_ && !finished_ && !chunk.empty())
      conn_->deliver_chunk(std::move(chunk), std::move(hold));
  }

  void finish() override {
    if (streaming_ && !finished_.exchange(true))
      conn_->deliver_stream_end();
  }

  bool closed() const override { return conn_->peer_gone.load(); }

private:
  std::shared_ptr<connection> conn_;
  std::atomic<bool> done_{false};
  std::atomic<bool> streaming_{false};
  std::atomic<bool> finished_{false};
};

} // namespace

void connection::dispatch(http_request&& req) {
  auto rsp = std::make_shared<connection_responder>(shared_from_this());
  try {
    srv_->handler(std::move(req), rsp);
  } catch (const std::exception& e) {
    http_response r;
    r.status = 500;
    r.body = error_body({errc::internal, std::string{"internal error: "} + e.what()});
    rsp->send(std::move(r));
  }
}

void http_server::impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc),
                        beast::bind_front_handler(&impl::on_accept, shared_from_this()));
}

void http_server::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (stopping.load() || !acceptor.is_open())
    return;
  if (!ec) {
    socket.set_option(tcp::no_delay{true}, ec);
    auto remote = socket.remote_endpoint(ec);
    if (ec) // gone already
      return do_accept();
    auto peer = peer_key(remote.address());
    auto why = refusal::none;
    if (open.load(std::memory_order_relaxed) >= opts.max_connections)
      why = refusal::node_full;
    else if (!admit_peer(peer))
      why = refusal::peer_full;
    bool counted = why == refusal::none && opts.max_connections_per_ip > 0;
    std::make_shared<connection>(std::move(socket), shared_from_this(), std::move(peer), counted)
      ->start(why);
  } else if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
    // Out of file descriptors: back off briefly instead of spinning.
    auto t = std::make_shared<asio::steady_timer>(acceptor.get_executor());
    t->expires_after(std::chrono::milliseconds(50));
    t->async_wait([self = shared_from_this(), t](beast::error_code) { self->do_accept(); });
    return;
  }
  do_accept();
}

http_server::http_server(io_runtime& io, server_options opts, request_handler handler)
  : impl_(std::make_shared<impl>(io, std::move(opts), std::move(handler))) {}

http_server::~http_server() {
  if (!impl_->stopping.load())
    stop(std::chrono::milliseconds(0));
}

void http_server::start() {
  beast::error_code ec;
  auto addr = asio::ip::make_address(impl_->opts.host, ec);
  if (ec)
    throw std::runtime_error("PARLEY_HTTP_HOST: not an IP address: " + impl_->opts.host);
  tcp::endpoint ep{addr, impl_->opts.port};
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec)
    a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    a.bind(ep, ec);
  if (!ec)
    a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + impl_->opts.host + ":" +
                             std::to_string(impl_->opts.port) + ": " + ec.message());
  impl_->bound_port = a.local_endpoint().port();
  asio::dispatch(a.get_executor(), [i = impl_] { i->do_accept(); });
}

void http_server::stop(std::chrono::milliseconds deadline) {
  if (impl_->stopping.exchange(true))
    return;
  std::promise<void> closed;
  asio::post(impl_->acceptor.get_executor(), [i = impl_, &closed] {
    beast::error_code ec;
    i->acceptor.close(ec);
    closed.set_value();
  });
  closed.get_future().wait_for(std::chrono::seconds(2));
  {
    std::lock_guard<std::mutex> lk{impl_->live_mu};
    for (auto* slot : impl_->live) {
      auto c = *slot;
      asio::post(c->executor(), [c] { c->on_stop(); });
    }
  }
  auto until = std::chrono::steady_clock::now() + deadline;
  while (impl_->open.load() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

std::uint16_t http_server::port() const { return impl_->bound_port; }

std::size_t http_server::connections() const { return impl_->open.load(); }

} // namespace parley::net

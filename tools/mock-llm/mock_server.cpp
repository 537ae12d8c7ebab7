#include "mock_server.hpp"

#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <openssl/ssl.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace mock_llm {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

constexpr std::uint64_t body_limit = 1024 * 1024;
constexpr auto idle_timeout = 120s;
constexpr auto handshake_timeout = 10s;
constexpr auto tls_shutdown_timeout = 2s;
constexpr std::size_t drain_bytes = 256;

using string_request = http::request<http::string_body>;
using string_response = http::response<http::string_body>;

/// Whether the stream of a reply runs to [DONE] or is cut halfway.
enum class stream_end { complete, cut, stall };

// A TLS peer that closed without close_notify. OpenSSL 3 reports it as an
// SSL error of its own rather than the stream_truncated Asio 1.74 knows.
bool truncated(beast::error_code ec) {
  return ec == ssl::error::stream_truncated ||
         (ec.category() == net::error::get_ssl_category() &&
          ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
              SSL_R_UNEXPECTED_EOF_WHILE_READING);
}

// Clients that go away are the normal case here, not worth a line on stderr.
void fail(beast::error_code ec, const char* what) {
  if (ec == net::error::operation_aborted || ec == net::error::eof ||
      ec == net::error::connection_reset || ec == net::error::broken_pipe ||
      ec == http::error::partial_message || ec == beast::error::timeout || truncated(ec))
    return;
  std::cerr << "mock-llm: " << what << ": " << ec.message() << '\n';
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

string_response make_response(unsigned status, std::string body, unsigned version,
                              bool keep_alive, std::string_view content_type = "application/json") {
  string_response res;
  res.version(version);
  res.result(status);
  res.keep_alive(keep_alive);
  res.set(http::field::server, "mock-llm");
  if (!body.empty())
    res.set(http::field::content_type, content_type);
  res.body() = std::move(body);
  return res;
}

string_response json_response(const json& doc, unsigned version, bool keep_alive) {
  return make_response(200, dump(doc), version, keep_alive);
}

string_response error_response(unsigned status, std::string_view message, std::string_view code,
                               unsigned version, bool keep_alive) {
  return make_response(status, error_body(message, "invalid_request_error", code), version,
                       keep_alive);
}

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/// One client connection over `Stream` (plain_stream or tls_stream). Owned
/// by the handlers of its pending operations: it lives while a handshake,
/// read, write or timer wait is outstanding.
template <class Stream> class session : public std::enable_shared_from_this<session<Stream>> {
public:
  static constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

  session(plain_stream&& stream, std::shared_ptr<mock_state> state)
      : stream_(std::move(stream)), timer_(stream_.get_executor()), state_(std::move(state)),
        connection_(state_->next_connection()) {}

  session(plain_stream&& stream, ssl::context& tls, std::shared_ptr<mock_state> state)
      : stream_(std::move(stream), tls), timer_(stream_.get_executor()), state_(std::move(state)),
        connection_(state_->next_connection()) {}

  void run() {
    // A stream is a series of small writes (the header, every chunk; with
    // TLS also session tickets); without this, Nagle holds one back for the
    // peer's delayed ACK (~40 ms) and skews stream timings.
    beast::error_code ignored;
    lowest().socket().set_option(tcp::no_delay{true}, ignored);
    if constexpr (is_tls) {
      lowest().expires_after(handshake_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              beast::bind_front_handler(&session::on_handshake, self()));
    } else {
      do_read();
    }
  }

private:
  std::shared_ptr<session> self() { return this->shared_from_this(); }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void on_handshake(beast::error_code ec) {
    if (ec) {
      fail(ec, "TLS handshake");
      return close();
    }
    do_read();
  }

  /// Ends the connection after a response that said `Connection: close`:
  /// half-close for plain TCP, close_notify (bounded) for TLS.
  void close_gracefully();

  /// The header of a streamed reply and the serializer that writes it.
  struct stream_head {
    stream_head(unsigned version, bool keep_alive) : res(http::status::ok, version) {
      res.set(http::field::server, "mock-llm");
      res.set(http::field::content_type, "text/event-stream");
      res.set(http::field::cache_control, "no-cache");
      res.keep_alive(keep_alive);
      res.chunked(true);
    }
    http::response<http::empty_body> res;
    http::response_serializer<http::empty_body> serializer{res};
  };

  void do_read();
  void on_read(beast::error_code ec, std::size_t bytes);
  void handle(string_request req);
  void handle_chat(const string_request& req, std::string_view path);
  void handle_config(const string_request& req);

  void send(string_response res);
  void on_write(bool close, beast::error_code ec, std::size_t bytes);

  void start_stream(unsigned version, bool keep_alive, stream_reply reply, stream_end end);
  void on_stream_header(beast::error_code ec, std::size_t bytes);
  void write_event();
  void on_event(beast::error_code ec, std::size_t bytes);
  void finish_stream();
  void on_stream_end(beast::error_code ec, std::size_t bytes);

  void hang();
  void do_drain();
  void close();

  /// Runs `fn` after `delay` on the timer, or at once when `delay` is zero.
  template <class Fn> void after(std::chrono::milliseconds delay, Fn fn);
  /// Runs `fn` at `due` on the timer, or at once when that time has passed.
  template <class Fn> void at(std::chrono::steady_clock::time_point due, Fn fn);

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  net::steady_timer timer_;
  std::shared_ptr<mock_state> state_;
  std::uint64_t connection_; ///< this connection's number, logged with each request

  // The reply being streamed.
  std::unique_ptr<stream_head> stream_head_;
  std::vector<std::string> events_;
  std::size_t next_event_ = 0;
  std::size_t stop_after_ = 0; ///< events to send; fewer than events_.size() when cut
  stream_end stream_end_ = stream_end::complete;
  std::chrono::milliseconds chunk_delay_{0};
  /// When the first event went out: event k is due chunk_delay_ * k later
  /// (a fixed timeline, as a model decodes: a late write does not push the
  /// next pieces back, so streams spread over time stay spread).
  std::chrono::steady_clock::time_point first_event_at_;
  bool keep_alive_ = false;
};

template <class Stream>
template <class Fn>
void session<Stream>::after(std::chrono::milliseconds delay, Fn fn) {
  if (delay <= 0ms)
    return fn();
  at(std::chrono::steady_clock::now() + delay, std::move(fn));
}

template <class Stream>
template <class Fn>
void session<Stream>::at(std::chrono::steady_clock::time_point due, Fn fn) {
  if (due <= std::chrono::steady_clock::now()) {
    fn();
    return;
  }
  timer_.expires_at(due);
  timer_.async_wait([keep = self(), fn = std::move(fn)](beast::error_code ec) mutable {
    if (!ec)
      fn();
  });
}

template <class Stream> void session<Stream>::do_read() {
  parser_.emplace();
  parser_->body_limit(body_limit);
  lowest().expires_after(idle_timeout);
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&session::on_read, self()));
}

template <class Stream> void session<Stream>::on_read(beast::error_code ec, std::size_t) {
  if (ec == http::error::end_of_stream)
    return close();
  if (ec == http::error::body_limit)
    return send(error_response(413, "request body exceeds 1 MiB", "request_too_large", 11, false));
  if (ec && ec.category() == beast::error_code(http::error::bad_target).category() &&
      ec != http::error::partial_message)
    return send(error_response(400, "malformed HTTP request: " + ec.message(), "invalid_request",
                               11, false));
  if (ec) {
    fail(ec, "read");
    return close();
  }
  auto req = parser_->release();
  parser_.reset();
  try {
    handle(std::move(req));
  } catch (const std::exception& e) {
    // Only resource exhaustion gets here; the connection is in an unknown state.
    send(make_response(500, error_body(e.what(), "server_error", "internal_error"), 11, false));
  }
}

template <class Stream> void session<Stream>::handle(string_request req) {
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  const auto method = req.method();
  const unsigned version = req.version();
  const bool keep_alive = req.keep_alive();
  auto not_allowed = [&](std::string_view allow) {
    auto res = error_response(405, "method not allowed", "method_not_allowed", version, keep_alive);
    res.set(http::field::allow, allow);
    return res;
  };

  if (path == "/v1/chat/completions" || path == "/chat/completions") {
    if (method != http::verb::post)
      return send(not_allowed("POST"));
    return handle_chat(req, path);
  }
  if (path == "/v1/models" || path == "/models") {
    if (method != http::verb::get)
      return send(not_allowed("GET"));
    const json models = {{"object", "list"},
                         {"data", json::array({{{"id", "mock"},
                                                {"object", "model"},
                                                {"owned_by", "mock"}}})}};
    return send(json_response(models, version, keep_alive));
  }
  if (path == "/healthz") {
    if (method != http::verb::get)
      return send(not_allowed("GET"));
    return send(json_response({{"status", "ok"}}, version, keep_alive));
  }
  if (path == "/_mock/requests") {
    if (method == http::verb::get)
      return send(json_response(state_->records_document(), version, keep_alive));
    if (method == http::verb::delete_) {
      state_->clear_records();
      return send(make_response(204, {}, version, keep_alive));
    }
    return send(not_allowed("GET, DELETE"));
  }
  if (path == "/_mock/stats") {
    if (method == http::verb::get)
      return send(json_response(state_->stats_document(), version, keep_alive));
    if (method == http::verb::delete_) {
      state_->reset_stats();
      return send(json_response(state_->stats_document(), version, keep_alive));
    }
    return send(not_allowed("GET, DELETE"));
  }
  if (path == "/_mock/config")
    return handle_config(req);
  send(error_response(404, "no route for " + std::string(req.method_string()) + " " +
                               std::string(path),
                      "not_found", version, keep_alive));
}

template <class Stream>
void session<Stream>::handle_chat(const string_request& req, std::string_view path) {
  const unsigned version = req.version();
  const bool keep_alive = req.keep_alive();
  const json body = parse_json(req.body());
  const std::uint64_t n =
      state_->record("POST", path, req[http::field::authorization], body, req.body(), connection_);

  if (const auto& key = state_->config().api_key;
      !key.empty() && req[http::field::authorization] != "Bearer " + key)
    return send(make_response(401,
                              error_body("Incorrect API key provided.", "invalid_request_error",
                                         "invalid_api_key"),
                              version, keep_alive));

  chat_request chat;
  if (auto error = read_chat_request(body, chat))
    return send(make_response(400,
                              error_body(error->message, "invalid_request_error",
                                         "invalid_request", error->param),
                              version, keep_alive));

  const mock_config& config = state_->config();
  const failure_kind failure = state_->take_failure();
  switch (failure) {
  case failure_kind::hang:
    return hang();
  case failure_kind::close:
    return close();
  case failure_kind::status: {
    const bool is_json = !parse_json(config.fail_body).is_discarded();
    auto res = make_response(static_cast<unsigned>(config.fail_status), config.fail_body, version,
                             keep_alive, is_json ? "application/json" : "text/plain");
    if (config.retry_after > 0)
      res.set(http::field::retry_after, std::to_string(config.retry_after));
    return after(config.latency, [this, res = std::move(res),
                                  answer = state_->begin_answer()]() mutable {
      answer.reset();
      send(std::move(res));
    });
  }
  case failure_kind::cut_stream:
    if (!chat.stream)
      return close();
    break;
  case failure_kind::stall_stream:
    if (!chat.stream)
      return hang();
    break;
  case failure_kind::none:
    break;
  }
  if (chat.stream && !config.stream_script.empty()) {
    stream_reply reply;
    for (const auto& data : config.stream_script)
      reply.events.push_back("data: " + data + "\n\n");
    reply.content_events = reply.events.size();
    return after(config.latency, [this, version, keep_alive, reply = std::move(reply),
                                  answer = state_->begin_answer()]() mutable {
      answer.reset();
      start_stream(version, keep_alive, std::move(reply), stream_end::complete);
    });
  }
  if (chat.stream) {
    const auto end = failure == failure_kind::cut_stream     ? stream_end::cut
                     : failure == failure_kind::stall_stream ? stream_end::stall
                                                             : stream_end::complete;
    return after(config.latency, [this, version, keep_alive, end,
                                  reply = stream_events(chat, n, unix_now(), config.stamp_pieces),
                                  answer = state_->begin_answer()]() mutable {
      answer.reset();
      start_stream(version, keep_alive, std::move(reply), end);
    });
  }
  auto res = json_response(completion_document(chat, n, unix_now()), version, keep_alive);
  after(config.latency, [this, res = std::move(res), answer = state_->begin_answer()]() mutable {
    answer.reset();
    send(std::move(res));
  });
}

template <class Stream> void session<Stream>::handle_config(const string_request& req) {
  const unsigned version = req.version();
  const bool keep_alive = req.keep_alive();
  switch (req.method()) {
  case http::verb::get:
    break;
  case http::verb::post: {
    const json patch = parse_json(req.body());
    if (patch.is_discarded())
      return send(error_response(400, "config is not valid JSON", "invalid_request", version,
                                 keep_alive));
    if (auto error = apply_patch(state_->config(), patch))
      return send(error_response(400, *error, "invalid_request", version, keep_alive));
    break;
  }
  case http::verb::delete_:
    state_->reset_config();
    break;
  default: {
    auto res = error_response(405, "method not allowed", "method_not_allowed", version, keep_alive);
    res.set(http::field::allow, "GET, POST, DELETE");
    return send(std::move(res));
  }
  }
  send(json_response(to_json(state_->config()), version, keep_alive));
}

template <class Stream> void session<Stream>::send(string_response res) {
  auto owned = std::make_shared<string_response>(std::move(res));
  owned->prepare_payload();
  if (owned->result() == http::status::no_content) // RFC 9110: no Content-Length on 204
    owned->erase(http::field::content_length);
  lowest().expires_after(idle_timeout);
  http::async_write(stream_, *owned,
                    [keep = self(), owned](beast::error_code ec, std::size_t bytes) {
                      keep->on_write(owned->need_eof(), ec, bytes);
                    });
}

template <class Stream>
void session<Stream>::on_write(bool close, beast::error_code ec, std::size_t) {
  if (ec) {
    fail(ec, "write");
    return this->close();
  }
  if (close)
    return close_gracefully();
  do_read();
}

template <class Stream> void session<Stream>::close_gracefully() {
  if constexpr (is_tls) {
    lowest().expires_after(tls_shutdown_timeout);
    stream_.async_shutdown([keep = self()](beast::error_code) { keep->close(); });
  } else {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }
}

template <class Stream>
void session<Stream>::start_stream(unsigned version, bool keep_alive, stream_reply reply,
                                   stream_end end) {
  events_ = std::move(reply.events);
  next_event_ = 0;
  stream_end_ = end;
  // Cut and stalled streams stop after about half of the content chunks,
  // never at [DONE].
  stop_after_ = end != stream_end::complete ? (reply.content_events + 1) / 2
                                            : events_.size();
  chunk_delay_ = state_->config().chunk_delay;
  keep_alive_ = keep_alive;
  stream_head_ = std::make_unique<stream_head>(version, keep_alive);
  lowest().expires_after(idle_timeout);
  http::async_write_header(stream_, stream_head_->serializer,
                           beast::bind_front_handler(&session::on_stream_header,
                                                     self()));
}

template <class Stream> void session<Stream>::on_stream_header(beast::error_code ec, std::size_t) {
  stream_head_.reset();
  if (ec) {
    fail(ec, "write header");
    return close();
  }
  if (stop_after_ == 0)
    return finish_stream();
  first_event_at_ = std::chrono::steady_clock::now();
  write_event();
}

template <class Stream> void session<Stream>::write_event() {
  lowest().expires_after(idle_timeout);
  stamp_event(events_[next_event_],
              std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count());
  net::async_write(stream_, http::make_chunk(net::buffer(events_[next_event_])),
                   beast::bind_front_handler(&session::on_event, self()));
}

template <class Stream> void session<Stream>::on_event(beast::error_code ec, std::size_t) {
  if (ec) {
    fail(ec, "write chunk");
    return close();
  }
  if (++next_event_ == stop_after_)
    return finish_stream();
  if (chunk_delay_ <= 0ms)
    return write_event();
  at(first_event_at_ + chunk_delay_ * next_event_, [this] { write_event(); });
}

template <class Stream> void session<Stream>::finish_stream() {
  events_.clear();
  if (stream_end_ == stream_end::cut)
    return close();
  if (stream_end_ == stream_end::stall)
    return hang();
  lowest().expires_after(idle_timeout);
  net::async_write(stream_, http::make_chunk_last(),
                   beast::bind_front_handler(&session::on_stream_end, self()));
}

template <class Stream>
void session<Stream>::on_stream_end(beast::error_code ec, std::size_t bytes) {
  on_write(!keep_alive_, ec, bytes);
}

template <class Stream> void session<Stream>::hang() {
  // Keep only the socket: the request is gone, the buffer shrinks to the drain size.
  buffer_.clear();
  buffer_.shrink_to_fit();
  lowest().expires_never();
  do_drain();
}

template <class Stream> void session<Stream>::do_drain() {
  // Reads and discards until the client closes, which ends the session.
  stream_.async_read_some(buffer_.prepare(drain_bytes),
                          [keep = self()](beast::error_code ec, std::size_t) {
                            if (ec)
                              return keep->close();
                            keep->do_drain();
                          });
}

template <class Stream> void session<Stream>::close() {
  beast::error_code ec;
  lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
  lowest().close();
}

} // namespace

mock_server::mock_server(net::io_context& ioc, const tcp::endpoint& endpoint,
                         std::shared_ptr<mock_state> state, ssl::context* tls)
    : ioc_(ioc), acceptor_(ioc), state_(std::move(state)), tls_(tls) {
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(net::socket_base::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(net::socket_base::max_listen_connections);
}

tcp::endpoint mock_server::local_endpoint() const { return acceptor_.local_endpoint(); }

void mock_server::start() { do_accept(); }

void mock_server::stop() {
  beast::error_code ec;
  acceptor_.close(ec);
}

void mock_server::do_accept() {
  acceptor_.async_accept(ioc_, beast::bind_front_handler(&mock_server::on_accept, this));
}

void mock_server::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open())
    return;
  if (ec)
    fail(ec, "accept");
  else if (tls_)
    std::make_shared<session<tls_stream>>(plain_stream(std::move(socket)), *tls_, state_)->run();
  else
    std::make_shared<session<plain_stream>>(plain_stream(std::move(socket)), state_)->run();
  do_accept();
}

} // namespace mock_llm

#include "net/http_client.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <deque>
#include <limits>
#include <stdexcept>
#include <vector>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace parley::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

namespace {

std::string_view default_port(std::string_view scheme) {
  return scheme == "https" ? "443" : "80";
}

} // namespace

std::optional<upstream_url> parse_upstream_url(std::string_view url, std::string& err) {
  upstream_url u;
  auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    err = "expected http[s]://host[:port][/path]";
    return std::nullopt;
  }
  for (char ch : url.substr(0, sep))
    u.scheme.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(ch))));
  if (u.scheme != "http" && u.scheme != "https") {
    err = "scheme '" + std::string{url.substr(0, sep)} +
          "' is not supported (use http:// or https://)";
    return std::nullopt;
  }
  auto rest = url.substr(sep + 3);
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  while (!path.empty() && path.back() == '/')
    path.remove_suffix(1);
  auto bad = [&] {
    err = "bad host or port in '" + std::string{url} + "'";
    return std::nullopt;
  };
  std::string_view host = authority;
  std::string_view port = default_port(u.scheme);
  if (!authority.empty() && authority.front() == '[') { // [v6addr][:port]
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return bad();
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return bad();
      port = after.substr(1);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty() || port.empty() || port.find_first_not_of("0123456789") != std::string::npos)
    return bad();
  u.host = std::string{host};
  u.port = std::string{port};
  u.base_path = std::string{path};
  return u;
}

namespace {

using strand_t = asio::strand<asio::io_context::executor_type>;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/// How long a TLS close_notify exchange may take before the socket is just closed.
constexpr auto tls_shutdown_bound = std::chrono::milliseconds(500);
/// Body bytes handed to the stream parser per read.
constexpr std::size_t stream_read_size = 16 * 1024;

/// What becomes of a connection once its call ends.
enum class conn_fate {
  keep,  ///< back to the idle pool
  close, ///< the exchange ended cleanly but the connection may not be reused: TLS close_notify
  abort, ///< broken or timed out: close the socket at once
};

struct pooled_connection {
  pooled_connection(strand_t s, ssl::context* tls) {
    if (tls)
      secure.emplace(s, *tls);
    else
      plain.emplace(s);
  }
  beast::tcp_stream& tcp() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
  /// Runs `fn` with the stream HTTP goes over (TLS or plain).
  template <class Fn>
  void with_stream(Fn&& fn) {
    if (secure)
      fn(*secure);
    else
      fn(*plain);
  }

  std::optional<beast::tcp_stream> plain;
  std::optional<tls_stream> secure;
  beast::flat_buffer buffer;
  bool connected = false;
  std::string verify_error; ///< why the peer's certificate was rejected, if it was
};

struct pending_call {
  std::string target;
  std::string body;
  std::string bearer;
  clock::time_point deadline;
  fetch_callback cb; ///< on_done for a stream
  std::function<void(std::string_view)> on_event;
  std::shared_ptr<std::atomic<bool>> cancel; ///< a stream the caller abandoned
  std::shared_ptr<stream_pace> pace;         ///< a stream read at its consumer's pace
  bool streamed = false;
  bool retried = false;
};

/// Incremental `text/event-stream` parser after the WHATWG "interpreting an
/// event stream" rules, keeping only the data field: lines end with CRLF, LF
/// or CR (also split across feeds), ':' starts a comment, a blank line
/// dispatches the `data:` lines gathered so far joined by '\n'.
class sse_parser {
public:
  explicit sse_parser(std::size_t limit) : limit_(limit) {}

  /// Parses `bytes`, calling `on_event(std::string_view)` per complete event.
  /// False when a line or an event grows beyond the limit.
  template <class Fn>
  bool feed(std::string_view bytes, Fn&& on_event) {
    while (!bytes.empty()) {
      if (skip_lf_) {
        skip_lf_ = false;
        if (bytes.front() == '\n') {
          bytes.remove_prefix(1);
          continue;
        }
      }
      auto eol = bytes.find_first_of("\r\n");
      if (eol == std::string_view::npos) {
        line_.append(bytes);
        break;
      }
      line_.append(bytes.substr(0, eol));
      skip_lf_ = bytes[eol] == '\r';
      bytes.remove_prefix(eol + 1);
      end_line(on_event);
      if (data_.size() > limit_)
        return false;
    }
    return line_.size() + data_.size() <= limit_;
  }

private:
  template <class Fn>
  void end_line(Fn& on_event) {
    std::string_view line = line_;
    if (line.empty()) {
      if (!data_.empty()) {
        data_.pop_back(); // the '\n' after the last data line
        on_event(std::string_view{data_});
      }
      data_.clear();
    } else if (line.front() != ':') {
      auto colon = line.find(':');
      auto field = line.substr(0, colon);
      auto value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      if (field == "data") {
        data_.append(value);
        data_.push_back('\n');
      }
    }
    line_.clear();
  }

  std::size_t limit_;
  std::string line_;
  std::string data_;
  bool skip_lf_ = false;
};

/// The state of one streamed response while its body arrives.
struct stream_read {
  explicit stream_read(std::size_t limit) : sse(limit) {}
  http::response_parser<http::buffer_body> parser;
  sse_parser sse;
  std::array<char, stream_read_size> chunk;
  bool event_stream = false; ///< a 2xx text/event-stream: parse events; else keep the body
  fetch_result result;
  /// The call's deadline while the body is read: one timer for the whole
  /// body instead of one armed and cancelled per read. On its strand only.
  std::optional<asio::steady_timer> deadline;
  bool timed_out = false; ///< the deadline passed: the read in progress was cancelled
  bool ended = false;     ///< finished: the timer must leave the connection alone
};

bool is_event_stream(std::string_view content_type) {
  constexpr std::string_view want = "text/event-stream";
  while (!content_type.empty() && content_type.front() == ' ')
    content_type.remove_prefix(1);
  if (content_type.size() < want.size())
    return false;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(content_type[i])) != want[i])
      return false;
  }
  auto rest = content_type.substr(want.size());
  return rest.empty() || rest.front() == ';' || rest.front() == ' ';
}

/// A TLS peer that closed without close_notify. OpenSSL 3 reports it as an
/// SSL error of its own rather than the stream_truncated Asio 1.74 maps eof to.
bool truncated(beast::error_code ec) {
  return ec == ssl::error::stream_truncated ||
         (ec.category() == asio::error::get_ssl_category() &&
          ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
              SSL_R_UNEXPECTED_EOF_WHILE_READING);
}

std::string describe(beast::error_code ec) {
  if (ec == beast::error::timeout)
    return "timed out";
  if (truncated(ec))
    return "the connection was closed mid-response (TLS stream truncated)";
  return ec.message();
}

bool is_ip_literal(const std::string& host) {
  beast::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

std::string host_header(const upstream_url& u) {
  auto h = u.host.find(':') == std::string::npos ? u.host : "[" + u.host + "]";
  return u.port == default_port(u.scheme) ? h : h + ":" + u.port;
}

std::unique_ptr<ssl::context> make_tls_context(const std::string& ca_file) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_verify_mode(ssl::verify_peer);
  beast::error_code ec;
  // Without a system store only ca_file is trusted; every handshake says so.
  ctx->set_default_verify_paths(ec);
  if (!ca_file.empty()) {
    ctx->load_verify_file(ca_file, ec);
    if (ec)
      throw std::invalid_argument("cannot load the CA file '" + ca_file + "': " + ec.message());
  }
  return ctx;
}

fetch_result fail(fetch_status st, std::string what, std::size_t events = 0) {
  fetch_result r;
  r.status = st;
  r.error = std::move(what);
  r.events = events;
  return r;
}

} // namespace

struct http_client::impl : std::enable_shared_from_this<http_client::impl> {
  impl(io_runtime& io, upstream_url u, client_options o)
    : ioc(io.context()), strand(asio::make_strand(io.context())), url(std::move(u)),
      opts(std::move(o)),
      host(host_header(url)), resolver(strand), queue_timer(strand) {
    if (url.scheme == "https")
      tls = make_tls_context(opts.ca_file);
  }

  using conn_ptr = std::shared_ptr<std::unique_ptr<pooled_connection>>;
  using call_ptr = std::shared_ptr<pending_call>;

  void submit(pending_call&& call) {
    if (active < opts.pool_size)
      return start(std::move(call));
    if (waiting.size() >= opts.queue_limit) {
      if (call.cb)
        call.cb(
            fail(fetch_status::overloaded, "the upstream connection pool and its queue are full"));
      return;
    }
    bool earliest = waiting.empty() || call.deadline < queue_timer.expiry();
    waiting.push_back(std::move(call));
    if (earliest)
      arm_queue_timer(waiting.back().deadline);
  }

  // Invariant: while `waiting` is not empty, a wait is pending on queue_timer
  // that ends no later than the earliest deadline in it.
  void arm_queue_timer(clock::time_point at) {
    queue_timer.expires_at(at);
    queue_timer.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec)
        self->expire_waiting();
    });
  }

  void expire_waiting() {
    auto now = clock::now();
    std::vector<pending_call> expired;
    std::deque<pending_call> keep;
    for (auto& w : waiting) {
      if (w.deadline <= now)
        expired.push_back(std::move(w));
      else
        keep.push_back(std::move(w));
    }
    waiting.swap(keep);
    if (!waiting.empty()) {
      auto earliest = waiting.front().deadline;
      for (auto& w : waiting)
        earliest = std::min(earliest, w.deadline);
      arm_queue_timer(earliest);
    }
    for (auto& e : expired) {
      if (e.cb)
        e.cb(fail(fetch_status::timeout, "timed out waiting for an upstream connection"));
    }
  }

  void start(pending_call&& call) {
    ++active;
    std::unique_ptr<pooled_connection> conn;
    if (!idle.empty()) {
      conn = std::move(idle.back());
      idle.pop_back();
    } else
      conn = std::make_unique<pooled_connection>(asio::make_strand(ioc), tls.get());
    auto c = std::make_shared<std::unique_ptr<pooled_connection>>(std::move(conn));
    auto p = std::make_shared<pending_call>(std::move(call));
    if ((*c)->connected)
      return send(c, p, true);
    connect(c, p);
  }

  void connect(conn_ptr c, call_ptr p) {
    resolver.async_resolve(
        url.host, url.port,
        [self = shared_from_this(), c, p](beast::error_code ec, tcp::resolver::results_type rs) {
          if (ec)
            return self->finish(c, p, fail(fetch_status::connect_error, "resolve: " + ec.message()),
                                conn_fate::abort);
          auto& s = (*c)->tcp();
          s.expires_at(p->deadline);
          s.async_connect(rs, [self, c, p](beast::error_code ec2, const tcp::endpoint&) {
            if (ec2) {
              auto st = ec2 == beast::error::timeout ? fetch_status::timeout
                                                     : fetch_status::connect_error;
              return self->finish(c, p, fail(st, "connect: " + ec2.message()), conn_fate::abort);
            }
            beast::error_code ignored;
            (*c)->tcp().socket().set_option(tcp::no_delay{true}, ignored);
            if ((*c)->secure)
              return self->handshake(c, p);
            (*c)->connected = true;
            self->send(c, p, false);
          });
        });
  }

  void handshake(conn_ptr c, call_ptr p) {
    auto& conn = **c;
    auto& s = *conn.secure;
    // RFC 6066: SNI carries host names only, never address literals.
    // (SSL_set_tlsext_host_name spelled out: the macro's C cast trips -Wold-style-cast.)
    if (!is_ip_literal(url.host) &&
        SSL_ctrl(s.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(url.host.c_str())) != 1)
      return finish(c, p, fail(fetch_status::connect_error, "TLS: cannot set the SNI host name"),
                    conn_fate::abort);
    s.set_verify_callback(
        [conn = &conn, host = url.host, check = ssl::host_name_verification(url.host)](
            bool preverified, ssl::verify_context& ctx) {
          if (!preverified) {
            auto* store = ctx.native_handle();
            conn->verify_error = X509_verify_cert_error_string(X509_STORE_CTX_get_error(store));
            return false;
          }
          if (!check(preverified, ctx)) {
            conn->verify_error = "the certificate does not match host '" + host + "'";
            return false;
          }
          return true;
        });
    s.async_handshake(ssl::stream_base::client, [self = shared_from_this(), c,
                                                 p](beast::error_code ec) {
      if (ec) {
        if (ec == beast::error::timeout)
          return self->finish(c, p, fail(fetch_status::timeout, "TLS handshake: timed out"),
                              conn_fate::abort);
        auto& why = (*c)->verify_error;
        auto what = "TLS handshake with " + self->url.host + ":" + self->url.port + " failed: " +
                    (why.empty() ? ec.message() : "certificate verification failed: " + why);
        return self->finish(c, p, fail(fetch_status::connect_error, std::move(what)),
                            conn_fate::abort);
      }
      (*c)->connected = true;
      self->send(c, p, false);
    });
  }

  void send(conn_ptr c, call_ptr p, bool reused) {
    auto req = std::make_shared<http::request<http::string_body>>(http::verb::post, p->target, 11);
    req->set(http::field::host, host);
    req->set(http::field::content_type, "application/json");
    req->set(http::field::accept, p->streamed ? "text/event-stream" : "application/json");
    req->set(http::field::user_agent, "parley");
    if (!p->bearer.empty())
      req->set(http::field::authorization, "Bearer " + p->bearer);
    req->keep_alive(true);
    req->body() = p->body;
    req->prepare_payload();
    (*c)->tcp().expires_at(p->deadline);
    auto self = shared_from_this();
    (*c)->with_stream([&](auto& s) {
      http::async_write(s, *req, [self, c, p, req, reused](beast::error_code ec, std::size_t) {
        if (ec)
          return self->on_exchange_error(c, p, ec, reused, false);
        if (p->streamed)
          self->receive_stream(c, p, reused);
        else
          self->receive(c, p, reused);
      });
    });
  }

  void receive(conn_ptr c, call_ptr p, bool reused) {
    auto parser = std::make_shared<http::response_parser<http::string_body>>();
    parser->body_limit(opts.body_limit);
    auto self = shared_from_this();
    auto& conn = **c;
    // The headers first: Beast 1.74 does not check a Content-Length against
    // the body limit when the body arrives in the same read as the headers.
    conn.with_stream([&](auto& s) {
      http::async_read_header(
          s, conn.buffer, *parser,
          [self, c, p, parser, reused](beast::error_code ec, std::size_t) {
            auto length = ec ? boost::none : parser->content_length();
            if (ec == http::error::body_limit || (length && *length > self->opts.body_limit))
              return self->finish(c, p,
                                  fail(fetch_status::too_large,
                                       "the response body exceeds the body limit"),
                                  conn_fate::abort);
            if (ec)
              return self->on_exchange_error(c, p, ec, reused, parser->got_some());
            self->receive_body(c, p, parser);
          });
    });
  }

  void receive_body(conn_ptr c, call_ptr p,
                    std::shared_ptr<http::response_parser<http::string_body>> parser) {
    auto self = shared_from_this();
    auto& conn = **c;
    conn.with_stream([&](auto& s) {
      http::async_read(
          s, conn.buffer, *parser, [self, c, p, parser](beast::error_code ec, std::size_t) {
            if (ec == http::error::body_limit)
              return self->finish(c, p,
                                  fail(fetch_status::too_large,
                                       "the response body exceeds the body limit"),
                                  conn_fate::abort);
            if (ec)
              return self->on_exchange_error(c, p, ec, false, true);
            auto& res = parser->get();
            fetch_result r;
            r.status = fetch_status::ok;
            r.http_status = res.result_int();
            r.retry_after = std::string{res[http::field::retry_after]};
            r.body = std::move(res.body());
            self->finish(c, p, std::move(r), res.keep_alive() ? conn_fate::keep : conn_fate::close);
          });
    });
  }

  void receive_stream(conn_ptr c, call_ptr p, bool reused) {
    auto rd = std::make_shared<stream_read>(opts.body_limit);
    // A stream is bounded by its deadline, each event by opts.body_limit. (Not
    // boost::none: Beast 1.74 compares a Content-Length against the empty
    // optional and rejects every sized body.)
    rd->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    auto self = shared_from_this();
    auto& conn = **c;
    conn.with_stream([&](auto& s) {
      http::async_read_header(
          s, conn.buffer, rd->parser, [self, c, p, rd, reused](beast::error_code ec, std::size_t) {
            if (ec)
              return self->on_exchange_error(c, p, ec, reused, rd->parser.got_some());
            auto& res = rd->parser.get();
            rd->result.http_status = res.result_int();
            rd->result.retry_after = std::string{res[http::field::retry_after]};
            rd->event_stream =
                res.result_int() / 100 == 2 && is_event_stream(res[http::field::content_type]);
            self->watch_deadline(c, p, rd);
            self->read_stream_body(c, p, rd);
          });
    });
  }

  /// The body's reads run without the stream's expiry (a timer per read);
  /// this timer cancels the read in progress at the call's deadline, or
  /// stops the next one (a paced stream waits without a read).
  void watch_deadline(conn_ptr c, call_ptr p, std::shared_ptr<stream_read> rd) {
    auto& lowest = (*c)->tcp();
    lowest.expires_never();
    rd->deadline.emplace(lowest.get_executor(), p->deadline);
    rd->deadline->async_wait([c, rd](beast::error_code ec) {
      if (ec || rd->ended)
        return;
      rd->timed_out = true;
      (*c)->tcp().cancel();
    });
  }

  /// Ends a streamed call (on its connection's strand).
  void end_stream(conn_ptr c, call_ptr p, stream_read& rd, fetch_result r, conn_fate fate) {
    rd.ended = true;
    if (rd.deadline)
      rd.deadline->cancel();
    finish(c, p, std::move(r), fate);
  }

  void read_stream_body(conn_ptr c, call_ptr p, std::shared_ptr<stream_read> rd) {
    if (rd->parser.is_done()) {
      auto fate = rd->parser.keep_alive() ? conn_fate::keep : conn_fate::close;
      rd->result.status = fetch_status::ok;
      return end_stream(c, p, *rd, std::move(rd->result), fate);
    }
    if (rd->timed_out)
      return end_stream(c, p, *rd,
                        fail(fetch_status::timeout, timed_out_what(*rd), rd->result.events),
                        conn_fate::abort);
    auto& body = rd->parser.get().body();
    body.data = rd->chunk.data();
    body.size = rd->chunk.size();
    auto self = shared_from_this();
    auto& conn = **c;
    conn.with_stream([&](auto& s) {
      http::async_read_some(s, conn.buffer, rd->parser,
                            [self, c, p, rd](beast::error_code ec, std::size_t) {
                              self->on_stream_body(c, p, rd, ec);
                            });
    });
  }

  void on_stream_body(conn_ptr c, call_ptr p, std::shared_ptr<stream_read> rd,
                      beast::error_code ec) {
    if (ec == http::error::need_buffer)
      ec = {};
    std::string_view got{rd->chunk.data(), rd->chunk.size() - rd->parser.get().body().size};
    if (!consume(*p, *rd, got))
      return end_stream(c, p, *rd,
                        fail(fetch_status::too_large,
                             rd->event_stream ? "an event exceeds the body limit"
                                              : "the response body exceeds the body limit",
                             rd->result.events),
                        conn_fate::abort);
    if (p->cancel && p->cancel->load())
      return end_stream(c, p, *rd, fail(fetch_status::io_error, "cancelled", rd->result.events),
                        conn_fate::abort);
    if (rd->timed_out)
      return end_stream(c, p, *rd,
                        fail(fetch_status::timeout, timed_out_what(*rd), rd->result.events),
                        conn_fate::abort);
    if (ec) {
      auto st = ec == beast::error::timeout ? fetch_status::timeout : fetch_status::io_error;
      auto what = describe(ec);
      if (rd->result.events > 0)
        what += " after " + std::to_string(rd->result.events) + " events";
      return end_stream(c, p, *rd, fail(st, std::move(what), rd->result.events),
                        conn_fate::abort);
    }
    // The events of this read went on; the next read waits until they were
    // consumed (their tickets dropped), on this connection's strand again.
    if (p->pace && !got.empty() && rd->event_stream) {
      auto resume = [self = shared_from_this(), c, p, rd] {
        asio::post((*c)->tcp().get_executor(),
                   [self, c, p, rd] { self->read_stream_body(c, p, rd); });
      };
      if (!p->pace->go_on_or_park(std::move(resume)))
        return;
    }
    read_stream_body(c, p, std::move(rd));
  }

  /// What a stream that passed its deadline failed with.
  static std::string timed_out_what(const stream_read& rd) {
    auto what = describe(beast::error::timeout);
    if (rd.result.events > 0)
      what += " after " + std::to_string(rd.result.events) + " events";
    return what;
  }

  /// Hands body bytes to the event parser, or keeps them as the error body.
  bool consume(pending_call& p, stream_read& rd, std::string_view bytes) {
    if (bytes.empty())
      return true;
    if (rd.event_stream) {
      return rd.sse.feed(bytes, [&](std::string_view data) {
        ++rd.result.events;
        if (p.on_event)
          p.on_event(data);
      });
    }
    if (rd.result.body.size() + bytes.size() > opts.body_limit)
      return false;
    rd.result.body.append(bytes);
    return true;
  }

  /// A kept-alive connection the server closed meanwhile fails at once; such
  /// a call is tried once more on a fresh connection (nothing reached the
  /// upstream's application, so this is no retry in the API's sense).
  void on_exchange_error(conn_ptr c, call_ptr p, beast::error_code ec, bool reused,
                         bool got_response_bytes) {
    bool stale = reused && !got_response_bytes &&
                 (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                  ec == asio::error::broken_pipe || ec == asio::error::eof || truncated(ec));
    if (stale && !p->retried && clock::now() < p->deadline) {
      p->retried = true;
      retire(std::move(*c), conn_fate::abort);
      *c = std::make_unique<pooled_connection>(asio::make_strand(ioc), tls.get());
      // The resolver is the pool's: connect from its strand.
      return asio::post(strand, [self = shared_from_this(), c, p] { self->connect(c, p); });
    }
    auto st = ec == beast::error::timeout ? fetch_status::timeout : fetch_status::io_error;
    finish(c, p, fail(st, describe(ec)), conn_fate::abort);
  }

  void retire(std::unique_ptr<pooled_connection> conn, conn_fate fate) {
    if (fate == conn_fate::close && conn->secure && conn->connected) {
      std::shared_ptr<pooled_connection> holder{std::move(conn)};
      holder->tcp().expires_after(tls_shutdown_bound);
      holder->secure->async_shutdown([holder](beast::error_code) { holder->tcp().close(); });
      return;
    }
    beast::error_code ignored;
    conn->tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    conn->tcp().close();
  }

  /// Ends a call: runs on its connection's strand (or the pool's, for a
  /// call that never had a connection). The connection goes back to the pool
  /// on the pool's strand, posted before the callback runs, so a call the
  /// callback makes finds it idle.
  void finish(conn_ptr c, call_ptr p, fetch_result r, conn_fate fate) {
    if (*c && fate == conn_fate::keep)
      (*c)->tcp().expires_never();
    auto cb = std::move(p->cb);
    p->on_event = nullptr;
    asio::post(strand, [self = shared_from_this(), c, fate] { self->release(c, fate); });
    if (cb)
      cb(std::move(r));
  }

  /// The pool's side of a call's end, on the pool's strand: the connection
  /// is kept or closed, and waiting calls start.
  void release(conn_ptr c, conn_fate fate) {
    --active;
    if (*c && fate == conn_fate::keep)
      idle.push_back(std::move(*c));
    else if (*c)
      retire(std::move(*c), fate);
    while (!waiting.empty() && active < opts.pool_size) {
      auto next = std::move(waiting.front());
      waiting.pop_front();
      if (clock::now() >= next.deadline) {
        if (next.cb)
          next.cb(fail(fetch_status::timeout, "timed out waiting for an upstream connection"));
        continue;
      }
      start(std::move(next));
    }
  }

  asio::io_context& ioc;
  /// The pool's strand: `idle`, `waiting`, `active`, the resolver and the
  /// queue timer. Each connection has a strand of its own, so the exchanges
  /// of different calls run in parallel on the io threads.
  strand_t strand;
  upstream_url url;
  client_options opts;
  std::string host;                  ///< the Host header
  std::unique_ptr<ssl::context> tls; ///< set for https
  tcp::resolver resolver;
  asio::steady_timer queue_timer; ///< ends waiting calls at their deadline
  std::vector<std::unique_ptr<pooled_connection>> idle;
  std::deque<pending_call> waiting;
  std::size_t active = 0;
};

/// One event's ticket: consumes it when dropped (never copied: one drop).
struct stream_pace::held {
  held(std::shared_ptr<stream_pace> p, std::size_t n) : pace(std::move(p)), bytes(n) {}
  held(const held&) = delete;
  held& operator=(const held&) = delete;
  ~held() { pace->release(bytes); }
  std::shared_ptr<stream_pace> pace;
  std::size_t bytes;
};

std::shared_ptr<void> stream_pace::ticket(std::size_t bytes) {
  {
    std::lock_guard<std::mutex> lk{mu_};
    ++out_;
    bytes_ += bytes;
  }
  return std::make_shared<held>(shared_from_this(), bytes);
}

bool stream_pace::go_on_or_park(std::function<void()> resume) {
  std::lock_guard<std::mutex> lk{mu_};
  if (may_go_on())
    return true;
  parked_ = std::move(resume);
  return false;
}

void stream_pace::release(std::size_t bytes) {
  std::function<void()> resume;
  {
    std::lock_guard<std::mutex> lk{mu_};
    --out_;
    bytes_ -= bytes;
    if (parked_ && may_go_on()) {
      resume = std::move(parked_);
      parked_ = nullptr;
    }
  }
  if (resume)
    resume();
}

http_client::http_client(io_runtime& io, upstream_url url, client_options opts)
  : impl_(std::make_shared<impl>(io, std::move(url), std::move(opts))) {}

http_client::~http_client() = default;

const upstream_url& http_client::url() const {
  return impl_->url;
}

namespace {

pending_call make_call(const upstream_url& url, std::string path, std::string body,
                       std::string bearer, std::chrono::milliseconds timeout) {
  pending_call call;
  call.target = url.base_path + path;
  call.body = std::move(body);
  call.bearer = std::move(bearer);
  call.deadline = clock::now() + timeout;
  return call;
}

} // namespace

void http_client::post_json(std::string path, std::string body, std::string bearer,
                            std::chrono::milliseconds timeout, fetch_callback cb) {
  auto call = make_call(impl_->url, std::move(path), std::move(body), std::move(bearer), timeout);
  call.cb = std::move(cb);
  asio::post(impl_->strand,
             [i = impl_, call = std::move(call)]() mutable { i->submit(std::move(call)); });
}

void http_client::post_json_stream(std::string path, std::string body, std::string bearer,
                                   std::chrono::milliseconds timeout, stream_callbacks cb) {
  auto call = make_call(impl_->url, std::move(path), std::move(body), std::move(bearer), timeout);
  call.cb = std::move(cb.on_done);
  call.on_event = std::move(cb.on_event);
  call.cancel = std::move(cb.cancel);
  call.pace = std::move(cb.pace);
  call.streamed = true;
  asio::post(impl_->strand,
             [i = impl_, call = std::move(call)]() mutable { i->submit(std::move(call)); });
}

} // namespace parley::net

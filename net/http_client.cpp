#include "net/http_client.hpp"

#include <deque>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace parley::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

std::optional<upstream_url> parse_upstream_url(std::string_view url, std::string& err) {
  upstream_url u;
  auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    err = "expected http://host[:port][/path]";
    return std::nullopt;
  }
  u.scheme = std::string{url.substr(0, sep)};
  if (u.scheme != "http") {
    err = "scheme '" + u.scheme + "' is not supported (use http://)";
    return std::nullopt;
  }
  auto rest = url.substr(sep + 3);
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  while (!path.empty() && path.back() == '/')
    path.remove_suffix(1);
  auto colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    u.host = std::string{authority.substr(0, colon)};
    u.port = std::string{authority.substr(colon + 1)};
  } else {
    u.host = std::string{authority};
    u.port = "80";
  }
  if (u.host.empty() || u.port.empty() ||
      u.port.find_first_not_of("0123456789") != std::string::npos) {
    err = "bad host or port in '" + std::string{url} + "'";
    return std::nullopt;
  }
  u.base_path = std::string{path};
  return u;
}

namespace {

using strand_t = asio::strand<asio::io_context::executor_type>;

struct pooled_connection {
  explicit pooled_connection(strand_t s) : stream(s) {}
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bool connected = false;
};

struct pending_call {
  std::string target;
  std::string body;
  std::string bearer;
  clock::time_point deadline;
  fetch_callback cb;
  bool retried = false;
};

} // namespace

struct http_client::impl : std::enable_shared_from_this<http_client::impl> {
  impl(io_runtime& io, upstream_url u, client_options o)
    : strand(asio::make_strand(io.context())), url(std::move(u)), opts(o), resolver(strand) {}

  void submit(pending_call&& call) {
    if (active < opts.pool_size)
      return start(std::move(call));
    if (waiting.size() >= opts.queue_limit) {
      fetch_result r;
      r.status = fetch_status::overloaded;
      r.error = "the upstream connection pool and its queue are full";
      return call.cb(std::move(r));
    }
    waiting.push_back(std::move(call));
  }

  void start(pending_call&& call) {
    ++active;
    std::unique_ptr<pooled_connection> conn;
    if (!idle.empty()) {
      conn = std::move(idle.back());
      idle.pop_back();
    } else
      conn = std::make_unique<pooled_connection>(strand);
    auto c = std::make_shared<std::unique_ptr<pooled_connection>>(std::move(conn));
    auto p = std::make_shared<pending_call>(std::move(call));
    if ((*c)->connected)
      return send(c, p, true);
    connect(c, p);
  }

  using conn_ptr = std::shared_ptr<std::unique_ptr<pooled_connection>>;
  using call_ptr = std::shared_ptr<pending_call>;

  void connect(conn_ptr c, call_ptr p) {
    resolver.async_resolve(
      url.host, url.port,
      [self = shared_from_this(), c, p](beast::error_code ec, tcp::resolver::results_type rs) {
        if (ec)
          return self->finish(c, p, fail(fetch_status::connect_error, "resolve: " + ec.message()),
                              false);
        auto& s = (*c)->stream;
        s.expires_at(p->deadline);
        s.async_connect(rs, [self, c, p](beast::error_code ec2, const tcp::endpoint&) {
          if (ec2) {
            auto st = ec2 == beast::error::timeout ? fetch_status::timeout
                                                   : fetch_status::connect_error;
            return self->finish(c, p, fail(st, "connect: " + ec2.message()), false);
          }
          beast::error_code ignored;
          (*c)->stream.socket().set_option(tcp::no_delay{true}, ignored);
          (*c)->connected = true;
          self->send(c, p, false);
        });
      });
  }

  void send(conn_ptr c, call_ptr p, bool reused) {
    auto req = std::make_shared<http::request<http::string_body>>(http::verb::post, p->target, 11);
    req->set(http::field::host, url.host + ":" + url.port);
    req->set(http::field::content_type, "application/json");
    req->set(http::field::accept, "application/json");
    req->set(http::field::user_agent, "parley");
    if (!p->bearer.empty())
      req->set(http::field::authorization, "Bearer " + p->bearer);
    req->keep_alive(true);
    req->body() = p->body;
    req->prepare_payload();
    auto& s = (*c)->stream;
    s.expires_at(p->deadline);
    http::async_write(s, *req, [self = shared_from_this(), c, p, req, reused](beast::error_code ec,
                                                                             std::size_t) {
      if (ec)
        return self->on_exchange_error(c, p, ec, reused);
      self->receive(c, p, reused);
    });
  }

  void receive(conn_ptr c, call_ptr p, bool reused) {
    auto parser = std::make_shared<http::response_parser<http::string_body>>();
    parser->body_limit(opts.body_limit);
    auto& conn = **c;
    http::async_read(conn.stream, conn.buffer, *parser,
                     [self = shared_from_this(), c, p, parser, reused](beast::error_code ec,
                                                                       std::size_t) {
                       if (ec)
                         return self->on_exchange_error(c, p, ec, reused);
                       auto& res = parser->get();
                       fetch_result r;
                       r.status = fetch_status::ok;
                       r.http_status = res.result_int();
                       r.retry_after = std::string{res[http::field::retry_after]};
                       r.body = std::move(res.body());
                       self->finish(c, p, std::move(r), res.keep_alive());
                     });
  }

  /// A kept-alive connection the server closed meanwhile fails at once; such
  /// a call is tried once more on a fresh connection (nothing reached the
  /// upstream's application, so this is no retry in the API's sense).
  void on_exchange_error(conn_ptr c, call_ptr p, beast::error_code ec, bool reused) {
    bool stale = reused && (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                            ec == asio::error::broken_pipe || ec == asio::error::eof);
    if (stale && !p->retried && clock::now() < p->deadline) {
      p->retried = true;
      (*c)->stream.close();
      (*c)->connected = false;
      (*c)->buffer.clear();
      return connect(c, p);
    }
    auto st = ec == beast::error::timeout ? fetch_status::timeout : fetch_status::io_error;
    finish(c, p, fail(st, ec.message()), false);
  }

  static fetch_result fail(fetch_status st, std::string what) {
    fetch_result r;
    r.status = st;
    r.error = std::move(what);
    return r;
  }

  void finish(conn_ptr c, call_ptr p, fetch_result r, bool reusable) {
    --active;
    if (reusable && *c) {
      (*c)->stream.expires_never();
      idle.push_back(std::move(*c));
    } else if (*c) {
      beast::error_code ignored;
      (*c)->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      (*c)->stream.close();
    }
    auto cb = std::move(p->cb);
    cb(std::move(r));
    while (!waiting.empty() && active < opts.pool_size) {
      auto next = std::move(waiting.front());
      waiting.pop_front();
      if (clock::now() >= next.deadline) {
        next.cb(fail(fetch_status::timeout, "timed out waiting for an upstream connection"));
        continue;
      }
      start(std::move(next));
    }
  }

  strand_t strand;
  upstream_url url;
  client_options opts;
  tcp::resolver resolver;
  std::vector<std::unique_ptr<pooled_connection>> idle;
  std::deque<pending_call> waiting;
  std::size_t active = 0;
};

http_client::http_client(io_runtime& io, upstream_url url, client_options opts)
  : impl_(std::make_shared<impl>(io, std::move(url), opts)) {}

http_client::~http_client() = default;

const upstream_url& http_client::url() const { return impl_->url; }

void http_client::post_json(std::string path, std::string body, std::string bearer,
                            std::chrono::milliseconds timeout, fetch_callback cb) {
  pending_call call;
  call.target = impl_->url.base_path + path;
  call.body = std::move(body);
  call.bearer = std::move(bearer);
  call.deadline = clock::now() + timeout;
  call.cb = std::move(cb);
  asio::post(impl_->strand, [i = impl_, call = std::move(call)]() mutable {
    i->submit(std::move(call));
  });
}

} // namespace parley::net

#include "net/blocking_fetch.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace parley::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

namespace {

/// The exchange, as asynchronous steps on a private io_context that the
/// caller's thread runs to the end: that is what lets one timer bound it all.
class exchange {
public:
  exchange(const upstream_url& url, const blocking_request& req, std::chrono::milliseconds timeout)
    : url_(url), deadline_(io_, timeout), timeout_(timeout) {
    request_.method_string(req.method);
    request_.target(url.base_path + req.target);
    bool v6 = url.host.find(':') != std::string::npos;
    request_.set(http::field::host, (v6 ? "[" + url.host + "]" : url.host) + ":" + url.port);
    request_.set(http::field::user_agent, "parley-ctl");
    request_.set(http::field::accept, "application/json");
    if (!req.bearer.empty())
      request_.set(http::field::authorization, "Bearer " + req.bearer);
    if (!req.body.empty())
      request_.set(http::field::content_type, "application/json");
    request_.body() = req.body;
    request_.keep_alive(false);
    request_.prepare_payload();
  }

  fetch_result run() {
    deadline_.async_wait([this](error_code ec) { on_deadline(ec); });
    resolver_.async_resolve(
        url_.host, url_.port,
        [this](error_code ec, tcp::resolver::results_type r) { on_resolve(ec, std::move(r)); });
    io_.run();
    return std::move(result_);
  }

private:
  void on_deadline(error_code ec) {
    if (ec)
      return; // cancelled: the exchange ended first
    timed_out_ = true;
    resolver_.cancel();
    stream_.cancel();
  }

  void on_resolve(error_code ec, tcp::resolver::results_type endpoints) {
    if (ec)
      return finish(fetch_status::connect_error, "resolve " + url_.host + ": " + ec.message());
    stream_.async_connect(endpoints, [this](error_code e, const tcp::endpoint&) { on_connect(e); });
  }

  void on_connect(error_code ec) {
    if (ec)
      return finish(fetch_status::connect_error, "connect: " + ec.message());
    http::async_write(stream_, request_, [this](error_code e, std::size_t) { on_write(e); });
  }

  void on_write(error_code ec) {
    if (ec)
      return finish(fetch_status::io_error, "send: " + ec.message());
    http::async_read(stream_, buffer_, response_,
                     [this](error_code e, std::size_t) { on_read(e); });
  }

  void on_read(error_code ec) {
    if (ec)
      return finish(fetch_status::io_error, "receive: " + ec.message());
    result_.http_status = response_.result_int();
    result_.body = std::move(response_.body());
    finish(fetch_status::ok, {});
  }

  void finish(fetch_status status, std::string what) {
    deadline_.cancel();
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    result_.status = timed_out_ ? fetch_status::timeout : status;
    result_.error = timed_out_ ? "no answer within " + std::to_string(timeout_.count()) + " ms"
                               : std::move(what);
  }

  const upstream_url& url_;
  asio::io_context io_;
  tcp::resolver resolver_{io_};
  beast::tcp_stream stream_{io_};
  asio::steady_timer deadline_;
  std::chrono::milliseconds timeout_;
  bool timed_out_ = false;
  http::request<http::string_body> request_;
  beast::flat_buffer buffer_;
  http::response<http::string_body> response_;
  fetch_result result_;
};

} // namespace

fetch_result fetch_blocking(const upstream_url& url, const blocking_request& req,
                            std::chrono::milliseconds timeout) {
  return exchange{url, req, timeout}.run();
}

} // namespace parley::net

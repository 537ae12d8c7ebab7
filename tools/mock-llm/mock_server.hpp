#pragma once
// The mock's HTTP/1.1 front end (Boost.Beast, asynchronous, keep-alive), over
// plain TCP or TLS. Each connection reads one request at a time; chat requests go through failure
// injection, the other routes are the models list, health and the /_mock/
// control API. See README.md for the routes.

#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "mock_state.hpp"

namespace mock_llm {

/// Listens on one endpoint and serves every connection it accepts.
///
/// Threading: everything, including `mock_state`, runs on the single thread
/// that runs the io_context, which is why the state takes no locks. The server
/// must outlive that thread's `run()`.
class mock_server {
public:
  /// Opens, binds and listens. Throws boost::system::system_error on failure.
  /// With `tls` (a server context holding the certificate and key; it must
  /// outlive the server and its connections) every connection speaks HTTPS.
  mock_server(boost::asio::io_context& ioc, const boost::asio::ip::tcp::endpoint& endpoint,
              std::shared_ptr<mock_state> state, boost::asio::ssl::context* tls = nullptr);

  /// The bound endpoint: the real port when port 0 was asked for.
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  /// Starts accepting connections.
  void start();

  /// Stops accepting. Open connections end when the io_context is destroyed.
  void stop();

private:
  void do_accept();
  void on_accept(boost::system::error_code ec, boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<mock_state> state_;
  boost::asio::ssl::context* tls_;
};

} // namespace mock_llm

#pragma once
// The asio side of a node: one io_context and the threads that run it. The
// HTTP server and the upstream client share it; nothing else runs there.

#include <memory>

namespace boost::asio {
class io_context;
}

namespace parley::net {

class io_runtime {
public:
  /// Starts `threads` threads running the io_context until stop().
  explicit io_runtime(unsigned threads);
  ~io_runtime();
  io_runtime(const io_runtime&) = delete;
  io_runtime& operator=(const io_runtime&) = delete;

  boost::asio::io_context& context();

  /// Stops the io_context and joins its threads. Idempotent.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace parley::net

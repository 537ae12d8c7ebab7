#include "net/io_runtime.hpp"

#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace parley::net {

struct io_runtime::impl {
  boost::asio::io_context ioc;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{
    ioc.get_executor()};
  std::vector<std::thread> threads;
};

io_runtime::io_runtime(unsigned threads) : impl_(std::make_unique<impl>()) {
  for (unsigned i = 0; i < std::max(1u, threads); ++i)
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

io_runtime::~io_runtime() { stop(); }

boost::asio::io_context& io_runtime::context() { return impl_->ioc; }

void io_runtime::stop() {
  impl_->guard.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads)
    if (t.joinable())
      t.join();
  impl_->threads.clear();
}

} // namespace parley::net

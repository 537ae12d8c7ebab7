#include "runtime/telemetry/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <ctime>
#include <memory>
#include <thread>

#include <spdlog/async_logger.h>
#include <spdlog/details/null_mutex.h>
#include <spdlog/details/thread_pool.h>
#include <spdlog/sinks/base_sink.h>

#include "net/http/json_text.hpp"
#include "net/http/clock.hpp"

namespace parley::log {

namespace {

// Lines the queue holds (408 bytes each, preallocated: 3.3 MB); beyond, the oldest
// one is overwritten so that logging never blocks.
constexpr std::size_t queue_lines = 8192;
// The writer's pause once the queue is empty, and its largest write.
constexpr std::chrono::milliseconds writer_pause{1};
constexpr std::size_t writer_batch_bytes = 64 * 1024;

std::string node_id_;
level min_level_ = level::info;
std::shared_ptr<spdlog::details::thread_pool> pool_;
std::shared_ptr<spdlog::async_logger> logger_;
std::uint64_t dropped_before_shutdown_ = 0;

constexpr std::string_view name(level lv) {
  switch (lv) {
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
  }
  return "info";
}

spdlog::level::level_enum spdlog_level(level lv) {
  switch (lv) {
    case level::debug: return spdlog::level::debug;
    case level::info: return spdlog::level::info;
    case level::warn: return spdlog::level::warn;
    case level::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

/// Appends ".ddd" for 0 <= thousandths < 1000.
void append_fraction(std::string& out, std::int64_t thousandths) {
  out += '.';
  out += static_cast<char>('0' + thousandths / 100);
  out += static_cast<char>('0' + thousandths / 10 % 10);
  out += static_cast<char>('0' + thousandths % 10);
}

/// Appends "2026-11-23T10:00:00.123Z" with its quotes.
void append_time(std::string& out, std::chrono::system_clock::time_point t) {
  out += '"';
  append_rfc3339(out, t, 3);
  out += '"';
}

void append_key(std::string& out, std::string_view key) {
  out += ',';
  net::append_json_string(out, key);
  out += ':';
}

void append_int(std::string& out, std::int64_t v) {
  char digits[24];
  auto r = std::to_chars(digits, digits + sizeof digits, v);
  out.append(digits, r.ptr);
}

/// Writes all of `data` to stderr (a failed write drops the rest).
void write_stderr(const char* data, std::size_t size) {
  while (size > 0) {
    auto n = ::write(STDERR_FILENO, data, size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

/// Straight to stderr: before init and after shutdown.
void write_now(std::string text) {
  text += '\n';
  write_stderr(text.data(), text.size());
}

/// The writer thread's sink. Lines gather in a buffer that goes to stderr in
/// one write(2) once the queue is empty (or the buffer is large); then the
/// writer pauses briefly instead of waiting on the queue, so that a busy node
/// queues lines without waking it for each one: one wake-up and one write per
/// pause rather than per line, and a line reaches stderr within about a pause.
class stderr_batch_sink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
public:
  explicit stderr_batch_sink(spdlog::details::thread_pool& pool) : pool_(pool) {}
  ~stderr_batch_sink() override { flush_(); }

private:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    formatter_->format(msg, buf_);
    bool drained = pool_.queue_size() == 0;
    if (drained || buf_.size() >= writer_batch_bytes)
      flush_();
    if (drained)
      std::this_thread::sleep_for(writer_pause);
  }

  void flush_() override {
    write_stderr(buf_.data(), buf_.size());
    buf_.clear();
  }

  spdlog::details::thread_pool& pool_;
  spdlog::memory_buf_t buf_;
};

} // namespace

std::optional<level> parse_level(std::string_view s) {
  for (auto lv : {level::debug, level::info, level::warn, level::error})
    if (s == name(lv))
      return lv;
  return std::nullopt;
}

void init(std::string node_id, level min_level) {
  node_id_ = std::move(node_id);
  min_level_ = min_level;
  pool_ = std::make_shared<spdlog::details::thread_pool>(queue_lines, 1);
  logger_ =
    std::make_shared<spdlog::async_logger>("parley", std::make_shared<stderr_batch_sink>(*pool_),
                                           pool_, spdlog::async_overflow_policy::overrun_oldest);
  logger_->set_pattern("%v");
  logger_->set_level(spdlog::level::trace);
}

void shutdown() {
  if (!pool_)
    return;
  logger_->flush(); // queued behind every line: writes them all out
  dropped_before_shutdown_ = pool_->overrun_counter();
  logger_.reset();
  // The pool's destructor lets its thread finish the queue, then joins it.
  pool_.reset();
  if (dropped_before_shutdown_ > 0)
    line(level::warn, "log lines dropped: the queue was full")
      .num("dropped", static_cast<std::int64_t>(dropped_before_shutdown_))
      .write();
}

bool enabled(level lv) {
  return lv >= min_level_;
}

std::uint64_t dropped() {
  return pool_ ? pool_->overrun_counter() : dropped_before_shutdown_;
}

line::line(level lv, std::string_view msg) : lv_(lv), on_(enabled(lv)) {
  if (!on_)
    return;
  time_ = std::chrono::system_clock::now();
  start(node_id_, msg);
}

line::line(level lv, std::string_view msg, std::chrono::system_clock::time_point t,
           std::string_view node)
  : lv_(lv), on_(true), time_(t) {
  start(node, msg);
}

void line::start(std::string_view node, std::string_view msg) {
  buf_.reserve(256);
  buf_ += "{\"time\":";
  append_time(buf_, time_);
  buf_ += ",\"level\":\"";
  buf_ += name(lv_);
  buf_ += "\",\"node\":";
  net::append_json_string(buf_, node);
  buf_ += ",\"msg\":";
  net::append_json_string(buf_, msg);
}

line& line::str(std::string_view key, std::string_view value) {
  if (on_) {
    append_key(buf_, key);
    net::append_json_string(buf_, value);
  }
  return *this;
}

line& line::num(std::string_view key, std::int64_t value) {
  if (on_) {
    append_key(buf_, key);
    append_int(buf_, value);
  }
  return *this;
}

line& line::ms(std::string_view key, std::chrono::nanoseconds value) {
  if (on_) {
    auto us = std::max<std::int64_t>(0, value.count() / 1000);
    append_key(buf_, key);
    append_int(buf_, us / 1000);
    append_fraction(buf_, us % 1000);
  }
  return *this;
}

std::string line::text() const {
  return buf_.empty() ? std::string{} : buf_ + "}";
}

void line::write() {
  if (!on_)
    return;
  on_ = false;
  buf_ += '}';
  if (!logger_)
    return write_now(std::move(buf_));
  logger_->log(time_, spdlog::source_loc{}, spdlog_level(lv_),
               spdlog::string_view_t{buf_.data(), buf_.size()});
}

void write(level lv, std::string_view msg, const fields& extra) {
  line l{lv, msg};
  for (auto& [k, v] : extra)
    l.str(k, v);
  l.write();
}

} // namespace parley::log

#pragma once
// Structured logs: one JSON object per line on stderr. Lines are built on the
// calling thread and written by one background thread (spdlog's asynchronous
// logger with a bounded queue that overwrites its oldest line when full), so
// no actor or asio thread ever waits for stderr.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley::log {

enum class level { debug, info, warn, error };

/// "debug", "info", "warn" or "error"; nullopt for anything else.
std::optional<level> parse_level(std::string_view name);

/// Starts the background writer, stamps `node_id` on every line and drops
/// lines below `min_level`. Call once, before any other thread logs.
void init(std::string node_id, level min_level);

/// Writes every queued line and stops the background writer; lines logged
/// afterwards go to stderr at once. Call when no other thread logs any more.
void shutdown();

/// True when lines of `lv` are written.
bool enabled(level lv);

/// Lines lost because the queue was full (it overwrites the oldest one).
std::uint64_t dropped();

/// One line built in place: time (RFC 3339, UTC, milliseconds), level, node
/// and msg, then the fields in the order they are added. A line below the
/// level set by init costs nothing: it is neither built nor written.
class line {
public:
  line(level lv, std::string_view msg);
  /// A line with a given time and node, whatever the level (tests).
  line(level lv, std::string_view msg, std::chrono::system_clock::time_point t,
       std::string_view node);

  /// A string field; any bytes are fine (escaped, invalid UTF-8 replaced).
  line& str(std::string_view key, std::string_view value);
  line& num(std::string_view key, std::int64_t value);
  /// A number of milliseconds with three decimals.
  line& ms(std::string_view key, std::chrono::nanoseconds value);

  /// The JSON object as it stands before write(), without a newline; empty
  /// for a line below the level.
  std::string text() const;
  /// Queues the line for stderr; a second call does nothing.
  void write();

private:
  void start(std::string_view node, std::string_view msg);

  level lv_;
  bool on_;
  std::chrono::system_clock::time_point time_;
  std::string buf_;
};

using fields = std::vector<std::pair<std::string, std::string>>;

/// Writes one line with string fields `extra`.
void write(level lv, std::string_view msg, const fields& extra = {});

inline void debug(std::string_view msg, const fields& extra = {}) {
  write(level::debug, msg, extra);
}
inline void info(std::string_view msg, const fields& extra = {}) { write(level::info, msg, extra); }
inline void warn(std::string_view msg, const fields& extra = {}) { write(level::warn, msg, extra); }
inline void error(std::string_view msg, const fields& extra = {}) {
  write(level::error, msg, extra);
}

/// At most one line a second from a place that may fail at every request (an
/// upstream down, PostgreSQL away): due() says whether to write one now and
/// how many were held back before it. One owner (an actor's state): not
/// thread-safe.
class throttle {
public:
  bool due(std::int64_t& held) {
    auto now = std::chrono::steady_clock::now();
    if (last_ != std::chrono::steady_clock::time_point{} && now - last_ < std::chrono::seconds(1)) {
      ++held_;
      return false;
    }
    last_ = now;
    held = held_;
    held_ = 0;
    return true;
  }

private:
  std::chrono::steady_clock::time_point last_{};
  std::int64_t held_ = 0;
};

} // namespace parley::log

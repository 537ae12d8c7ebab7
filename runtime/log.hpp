#pragma once
// Structured logs: one JSON object per line on stderr.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley::log {

enum class level { debug, info, warn, error };

/// Sets the node id stamped on every line and the lowest level written.
void init(std::string node_id, std::string_view min_level);

using fields = std::vector<std::pair<std::string, std::string>>;

/// Writes one line: time, level, node, msg, then `extra`. Thread-safe; one
/// write(2) per line so that lines never interleave.
void write(level lv, std::string_view msg, const fields& extra = {});

inline void info(std::string_view msg, const fields& extra = {}) { write(level::info, msg, extra); }
inline void warn(std::string_view msg, const fields& extra = {}) { write(level::warn, msg, extra); }
inline void error(std::string_view msg, const fields& extra = {}) {
  write(level::error, msg, extra);
}

} // namespace parley::log

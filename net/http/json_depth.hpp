#pragma once
// Nesting depth of a JSON text, scanned without building it, so that a deep
// document is refused before a recursive parser or destructor could exhaust
// the stack. Header-only and dependency-free: the server and mock-llm share it.

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace parley::net {

inline std::size_t json_depth(std::string_view s) {
  std::size_t depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      max = std::max(max, ++depth);
    else if ((c == '}' || c == ']') && depth > 0)
      --depth;
  }
  return max;
}

} // namespace parley::net

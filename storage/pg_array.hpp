#pragma once
// PostgreSQL array literals ("{...}") built from C++ values, so a whole
// group commit travels as a handful of array parameters of one statement
// (unnest on the server) instead of two statements per turn.

#include <cstdint>
#include <string>

namespace parley::storage {

/// Builds one array literal, element by element.
class pg_array {
public:
  /// A text-like element, always double-quoted with `"` and `\` escaped, so
  /// commas, braces, blanks and the word NULL stay plain text.
  void add(const std::string& s) {
    open_element();
    out_ += '"';
    for (char c : s) {
      if (c == '"' || c == '\\')
        out_ += '\\';
      out_ += c;
    }
    out_ += '"';
  }
  void add(std::int64_t v) {
    open_element();
    out_ += std::to_string(v);
  }
  void add_null() {
    open_element();
    out_ += "NULL";
  }
  /// The literal, e.g. {"a","b\"c",NULL} or {} when empty.
  std::string str() const { return out_ + '}'; }

private:
  void open_element() {
    if (out_.size() > 1)
      out_ += ',';
  }
  std::string out_ = "{";
};

} // namespace parley::storage

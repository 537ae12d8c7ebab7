#pragma once
// RFC 3986 percent-decoding, header-only: the query strings of the HTTP API
// (net/http/api.cpp, where '+' also means a space) and the user information of a
// Redis URL (storage/redis_client.cpp, where it does not).

#include <string>
#include <string_view>

namespace parley::net {

enum class plus { literal, space };

/// Decodes `in` into `out`; false on a broken escape (`%` without two hex
/// digits). With plus::space, '+' becomes ' ' (application/x-www-form-urlencoded).
inline bool percent_decode(std::string_view in, std::string& out, plus p = plus::literal) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+' && p == plus::space) {
      out += ' ';
    } else if (c == '%') {
      int hi = i + 1 < in.size() ? hex(in[i + 1]) : -1;
      int lo = i + 2 < in.size() ? hex(in[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        return false;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return true;
}

} // namespace parley::net

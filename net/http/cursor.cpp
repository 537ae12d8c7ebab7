#include "net/http/cursor.hpp"

namespace parley::net {

std::string encode_cursor(const std::string& created_at, const std::string& id) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string raw = created_at + "|" + id, s;
  s.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    s += hex[c >> 4];
    s += hex[c & 0xF];
  }
  return s;
}

bool decode_cursor(const std::string& cursor, std::string& created_at, std::string& id) {
  if (cursor.empty() || cursor.size() % 2 != 0 || cursor.size() > 512)
    return false;
  std::string raw;
  for (std::size_t i = 0; i < cursor.size(); i += 2) {
    auto v = [](char c) -> int {
      if (c >= '0' && c <= '9')
        return c - '0';
      if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
      return -1;
    };
    int hi = v(cursor[i]), lo = v(cursor[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    raw += static_cast<char>(hi * 16 + lo);
  }
  auto bar = raw.find('|');
  if (bar == std::string::npos)
    return false;
  created_at = raw.substr(0, bar);
  id = raw.substr(bar + 1);
  // Exactly the shape now_rfc3339() writes, so PostgreSQL never sees junk.
  if (created_at.size() != 27 || created_at[4] != '-' || created_at[10] != 'T' ||
      created_at.back() != 'Z' || id.empty())
    return false;
  for (std::size_t i = 0; i < 26; ++i) {
    char c = created_at[i];
    bool digit_pos = !(i == 4 || i == 7 || i == 10 || i == 13 || i == 16 || i == 19);
    if (digit_pos != (c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

} // namespace parley::net

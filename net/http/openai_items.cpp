#include "net/http/openai_items.hpp"

#include <cctype>
#include <charconv>
#include <ctime>

namespace parley::net {

namespace {

constexpr std::string_view conv_prefix = "conv_";
constexpr std::string_view item_prefix = "msg_";

/// Session ids are Parley's (hex); anything else names none.
bool plausible_session(std::string_view id) {
  if (id.empty() || id.size() > 64)
    return false;
  for (unsigned char c : id)
    if (!std::isalnum(c))
      return false;
  return true;
}

bool digits(std::string_view s, std::size_t at, std::size_t n, int& out) {
  if (at + n > s.size())
    return false;
  out = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i])))
      return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

} // namespace

std::string conversation_id(std::string_view session_id) {
  std::string id{conv_prefix};
  id += session_id;
  return id;
}

std::optional<std::string> session_of_conversation(std::string_view id) {
  if (id.substr(0, conv_prefix.size()) != conv_prefix)
    return std::nullopt;
  id.remove_prefix(conv_prefix.size());
  if (!plausible_session(id))
    return std::nullopt;
  return std::string{id};
}

std::string item_id(std::string_view session_id, std::int64_t seq) {
  std::string id{item_prefix};
  id += session_id;
  id += '_';
  id += std::to_string(seq);
  return id;
}

std::optional<std::int64_t> seq_of_item(std::string_view id, std::string_view session_id) {
  if (id.substr(0, item_prefix.size()) != item_prefix)
    return std::nullopt;
  id.remove_prefix(item_prefix.size());
  if (id.size() <= session_id.size() + 1 || id.substr(0, session_id.size()) != session_id ||
      id[session_id.size()] != '_')
    return std::nullopt;
  id.remove_prefix(session_id.size() + 1);
  std::int64_t seq = 0;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), seq);
  if (ec != std::errc{} || end != id.data() + id.size() || seq < 1 || id.front() == '0')
    return std::nullopt;
  return seq;
}

std::string response_id(std::string_view session_id, std::int64_t seq) {
  std::string id{"resp_"};
  id += session_id;
  id += '_';
  id += std::to_string(seq);
  return id;
}

std::optional<std::pair<std::string, std::int64_t>> turn_of_response(std::string_view id) {
  constexpr std::string_view prefix = "resp_";
  if (id.substr(0, prefix.size()) != prefix)
    return std::nullopt;
  id.remove_prefix(prefix.size());
  auto sep = id.find('_');
  if (sep == std::string_view::npos || !plausible_session(id.substr(0, sep)))
    return std::nullopt;
  std::string session{id.substr(0, sep)};
  std::string item{item_prefix};
  item += id;
  auto seq = seq_of_item(item, session);
  if (!seq)
    return std::nullopt;
  return std::pair{std::move(session), *seq};
}

std::int64_t unix_seconds(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS[.frac]Z
  std::tm tm{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (!digits(t, 0, 4, y) || !digits(t, 5, 2, mo) || !digits(t, 8, 2, d) || !digits(t, 11, 2, h) ||
      !digits(t, 14, 2, mi) || !digits(t, 17, 2, s) || t[4] != '-' || t[7] != '-' ||
      (t[10] != 'T' && t[10] != ' ') || t[13] != ':' || t[16] != ':')
    return 0;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<std::int64_t>(timegm(&tm));
}

} // namespace parley::net

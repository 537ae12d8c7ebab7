#include "storage/pg_conninfo.hpp"

#include <algorithm>
#include <cctype>
#include <set>
#include <utility>
#include <vector>

#include <libpq-fe.h>

namespace parley::storage {

namespace {

bool is_uri(const std::string& s) {
  return s.rfind("postgresql://", 0) == 0 || s.rfind("postgres://", 0) == 0;
}

/// Parameter names of a `key=value` string, as libpq reads them: blanks
/// around '=', values bare or in single quotes, backslash escapes both.
std::set<std::string> keyword_names(const std::string& s) {
  std::set<std::string> names;
  std::size_t i = 0, n = s.size();
  auto blank = [&](std::size_t k) { return std::isspace(static_cast<unsigned char>(s[k])) != 0; };
  while (i < n) {
    while (i < n && blank(i))
      ++i;
    if (i == n)
      break;
    std::size_t start = i;
    while (i < n && s[i] != '=' && !blank(i))
      ++i;
    names.insert(s.substr(start, i - start));
    while (i < n && blank(i))
      ++i;
    if (i < n && s[i] == '=')
      ++i;
    while (i < n && blank(i))
      ++i;
    if (i < n && s[i] == '\'') {
      for (++i; i < n && s[i] != '\''; ++i)
        if (s[i] == '\\' && i + 1 < n)
          ++i;
      if (i < n)
        ++i;
    } else {
      for (; i < n && !blank(i); ++i)
        if (s[i] == '\\' && i + 1 < n)
          ++i;
    }
  }
  return names;
}

/// Parameter names of a URI's query string.
std::set<std::string> query_names(const std::string& uri) {
  std::set<std::string> names;
  auto q = uri.find('?');
  if (q == std::string::npos)
    return names;
  for (std::size_t pos = q + 1; pos <= uri.size();) {
    auto amp = uri.find('&', pos);
    auto item = uri.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    names.insert(item.substr(0, item.find('=')));
    if (amp == std::string::npos)
      break;
    pos = amp + 1;
  }
  return names;
}

} // namespace

std::string with_pg_timeouts(const std::string& conninfo, std::chrono::milliseconds timeout) {
  auto ms = std::max<std::int64_t>(1, timeout.count());
  auto secs = std::max<std::int64_t>(2, (ms + 999) / 1000);
  // Keepalive: first probe after half the bound, then probes a second (or
  // more, for long bounds) apart, all within the bound (libpq takes whole
  // seconds; tcp_user_timeout holds the exact bound when data is in flight).
  auto total = std::max<std::int64_t>(2, ms / 1000);
  auto idle = std::max<std::int64_t>(1, total / 2);
  auto interval = std::max<std::int64_t>(1, (total - idle) / 3);
  auto count = std::max<std::int64_t>(1, (total - idle) / interval);
  const std::vector<std::pair<std::string, std::string>> wanted{
    {"connect_timeout", std::to_string(secs)},
    {"keepalives", "1"},
    {"keepalives_idle", std::to_string(idle)},
    {"keepalives_interval", std::to_string(interval)},
    {"keepalives_count", std::to_string(count)},
    {"tcp_user_timeout", std::to_string(ms)}};

  std::string out = conninfo;
  if (is_uri(conninfo)) {
    auto have = query_names(conninfo);
    for (auto& [k, v] : wanted) {
      if (have.count(k))
        continue;
      char last = out.empty() ? '\0' : out.back();
      if (out.find('?') == std::string::npos)
        out += '?';
      else if (last != '?' && last != '&')
        out += '&';
      out += k + "=" + v;
    }
    return out;
  }
  auto have = keyword_names(conninfo);
  for (auto& [k, v] : wanted) {
    if (have.count(k))
      continue;
    if (!out.empty() && !std::isspace(static_cast<unsigned char>(out.back())))
      out += ' ';
    out += k + "=" + v;
  }
  return out;
}

std::string pg_conninfo_error(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts) {
    PQconninfoFree(opts);
    return {};
  }
  std::string detail = err ? err : "out of memory";
  if (err)
    PQfreemem(err);
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' '))
    detail.pop_back();
  bool may_hold_secret = conninfo.find("password") != std::string::npos ||
                         (is_uri(conninfo) && conninfo.find('@') != std::string::npos);
  std::string out = "not a libpq connection string or postgresql:// URI that libpq can parse";
  // These two quote a parameter name, never a value; other messages may
  // quote any text of the string.
  bool names_a_parameter = detail.rfind("invalid connection option", 0) == 0 ||
                           detail.rfind("invalid URI query parameter", 0) == 0;
  if (!may_hold_secret && names_a_parameter && detail.find('\n') == std::string::npos)
    out += " (" + detail + ")";
  return out;
}

} // namespace parley::storage

#include "net/http/router.hpp"

#include <array>

namespace parley::net {

namespace {

using segments = std::array<std::string_view, 8>;

/// Splits "/v1/sessions/abc" into {"v1","sessions","abc"}; empty segments
/// (a doubled or trailing slash) make the path unknown.
bool split_path(std::string_view path, segments& out, std::size_t& n) {
  n = 0;
  if (path.empty() || path.front() != '/')
    return false;
  path.remove_prefix(1);
  while (!path.empty()) {
    if (n == out.size())
      return false;
    auto slash = path.find('/');
    auto seg = path.substr(0, slash);
    if (seg.empty())
      return false;
    out[n++] = seg;
    if (slash == std::string_view::npos)
      break;
    path.remove_prefix(slash + 1);
    if (path.empty())
      return false;
  }
  return true;
}

/// True when the path's segments fit `pattern`; fills `id` and `seq`.
bool fits(std::string_view pattern, const segments& s, std::size_t n, route_match& m) {
  segments p;
  std::size_t pn = 0;
  if (!split_path(pattern, p, pn) || pn != n)
    return false;
  for (std::size_t i = 0; i < n; ++i)
    if (p[i].front() != '{' && p[i] != s[i])
      return false;
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] == "{id}")
      m.id = std::string{s[i]};
    else if (p[i] == "{seq}")
      m.seq = std::string{s[i]};
  }
  return true;
}

} // namespace

route_match match_route(std::string_view method, std::string_view path) {
  segments s;
  std::size_t n = 0;
  if (!split_path(path, s, n))
    return {};
  bool allowed[3] = {false, false, false};
  bool known_path = false;
  for (auto& row : route_table) {
    route_match m;
    if (!fits(row.pattern, s, n, m))
      continue;
    if (method == method_name(row.method)) {
      m.r = row.id;
      return m;
    }
    known_path = true;
    allowed[static_cast<int>(row.method)] = true;
  }
  if (!known_path)
    return {};
  route_match m;
  m.r = route::method_not_allowed;
  for (auto mt : {http_method::get, http_method::post, http_method::del}) {
    if (!allowed[static_cast<int>(mt)])
      continue;
    if (!m.allow.empty())
      m.allow += ", ";
    m.allow += method_name(mt);
  }
  return m;
}

std::string_view route_name(route r) {
  if (r == route::not_found)
    return "not_found";
  if (r == route::method_not_allowed)
    return "method_not_allowed";
  if (is_endpoint(r))
    return row_of(r).name;
  return "unknown";
}

} // namespace parley::net

#include "net/http/router.hpp"

#include <array>
#include <vector>

namespace parley::net {

namespace {

/// Splits "/v1/sessions/abc" into {"v1","sessions","abc"}; empty segments
/// (a doubled or trailing slash) make the path unknown.
bool split_path(std::string_view path, std::array<std::string_view, 8>& out, std::size_t& n) {
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

struct method_table {
  route get = route::not_found;
  route post = route::not_found;
  route del = route::not_found;
};

route_match pick(std::string_view method, const method_table& t) {
  route_match m;
  if (method == "GET" && t.get != route::not_found)
    m.r = t.get;
  else if (method == "POST" && t.post != route::not_found)
    m.r = t.post;
  else if (method == "DELETE" && t.del != route::not_found)
    m.r = t.del;
  else {
    m.r = route::method_not_allowed;
    std::string allow;
    auto add = [&](route r, const char* name) {
      if (r == route::not_found)
        return;
      if (!allow.empty())
        allow += ", ";
      allow += name;
    };
    add(t.get, "GET");
    add(t.post, "POST");
    add(t.del, "DELETE");
    m.allow = std::move(allow);
  }
  return m;
}

} // namespace

route_match match_route(std::string_view method, std::string_view path) {
  std::array<std::string_view, 8> s;
  std::size_t n = 0;
  if (!split_path(path, s, n))
    return {};
  route_match m;
  if (n == 1 && s[0] == "healthz")
    m = pick(method, {route::healthz, route::not_found, route::not_found});
  else if (n == 1 && s[0] == "readyz")
    m = pick(method, {route::readyz, route::not_found, route::not_found});
  else if (n == 1 && s[0] == "metrics")
    m = pick(method, {route::metrics, route::not_found, route::not_found});
  else if (n == 1 && s[0] == "dashboard")
    m = pick(method, {route::dashboard, route::not_found, route::not_found});
  else if (n == 3 && s[0] == "v1" && s[1] == "chat" && s[2] == "completions")
    m = pick(method, {route::not_found, route::chat_completions, route::not_found});
  else if (n == 2 && s[0] == "v1" && s[1] == "models")
    m = pick(method, {route::list_models, route::not_found, route::not_found});
  else if (n >= 2 && s[0] == "v1" && s[1] == "sessions") {
    if (n == 2)
      m = pick(method, {route::list_sessions, route::create_session, route::not_found});
    else if (n == 3)
      m = pick(method, {route::get_session, route::not_found, route::delete_session});
    else if (n == 4 && s[3] == "messages")
      m = pick(method, {route::list_messages, route::post_message, route::not_found});
    else if (n == 6 && s[3] == "messages" && s[5] == "feedback") {
      m = pick(method, {route::not_found, route::post_feedback, route::not_found});
      m.seq = std::string{s[4]};
    } else
      return {};
    if (n >= 3)
      m.id = std::string{s[2]};
  } else if (n >= 3 && s[0] == "admin" && s[1] == "v1" && s[2] == "api-keys") {
    if (n == 3)
      m = pick(method, {route::not_found, route::create_api_key, route::not_found});
    else if (n == 4) {
      m = pick(method, {route::not_found, route::not_found, route::revoke_api_key});
      m.id = std::string{s[3]};
    } else
      return {};
  } else if (n >= 3 && s[0] == "admin" && s[1] == "v1") {
    if (n == 3 && s[2] == "cluster")
      m = pick(method, {route::cluster_info, route::not_found, route::not_found});
    else if (n == 3 && s[2] == "actors")
      m = pick(method, {route::admin_actors, route::not_found, route::not_found});
    else if (n == 4 && s[2] == "sessions")
      m = pick(method, {route::admin_session, route::not_found, route::not_found});
    else if (n == 5 && s[2] == "sessions" && s[4] == "migrate")
      m = pick(method, {route::not_found, route::migrate_session, route::not_found});
    else if (n == 5 && s[2] == "nodes" && s[4] == "drain")
      m = pick(method, {route::not_found, route::drain_node, route::not_found});
    else
      return {};
    m.id = n >= 4 ? std::string{s[3]} : std::string{};
  } else
    return {};
  return m;
}

std::string_view route_name(route r) {
  switch (r) {
    case route::not_found: return "not_found";
    case route::method_not_allowed: return "method_not_allowed";
    case route::healthz: return "healthz";
    case route::readyz: return "readyz";
    case route::create_api_key: return "create_api_key";
    case route::revoke_api_key: return "revoke_api_key";
    case route::create_session: return "create_session";
    case route::list_sessions: return "list_sessions";
    case route::get_session: return "get_session";
    case route::delete_session: return "delete_session";
    case route::post_message: return "post_message";
    case route::list_messages: return "list_messages";
    case route::post_feedback: return "post_feedback";
    case route::cluster_info: return "cluster_info";
    case route::admin_session: return "admin_session";
    case route::migrate_session: return "migrate_session";
    case route::admin_actors: return "admin_actors";
    case route::dashboard: return "dashboard";
    case route::drain_node: return "drain_node";
    case route::metrics: return "metrics";
    case route::chat_completions: return "chat_completions";
    case route::list_models: return "list_models";
  }
  return "unknown";
}

} // namespace parley::net

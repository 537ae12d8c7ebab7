#pragma once
// Maps (method, path) to a route of API.md. Pure: no I/O, no allocation
// beyond the captured path parameters.

#include <cstdint>
#include <string>
#include <string_view>

namespace parley::net {

enum class route : std::uint8_t {
  not_found,
  method_not_allowed,
  healthz,
  readyz,
  create_api_key,
  revoke_api_key,
  create_session,
  list_sessions,
  get_session,
  delete_session,
  post_message,
  list_messages,
  post_feedback,
  cluster_info,
  admin_session,
  migrate_session,
  drain_node,
  admin_actors,
  dashboard,
  metrics,
  chat_completions,
  list_models,
};

/// The outcome of routing one request.
struct route_match {
  route r = route::not_found;
  std::string id;   ///< `{id}` or `{key_prefix_or_id}` when the route has one
  std::string seq;  ///< `{seq}` of the feedback route, unparsed
  std::string allow; ///< for method_not_allowed: the `Allow` header value
};

/// Route a request. `path` excludes the query string.
route_match match_route(std::string_view method, std::string_view path);

/// Human name of a route, used as a metrics label and in logs.
std::string_view route_name(route r);

} // namespace parley::net

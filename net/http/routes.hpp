#pragma once
// The route table of API.md: one row per endpoint, read by the router
// (net/http/router.cpp), the HTTP adapter (runtime/http/http_api.cpp: which body and
// query parser, whether `{id}` names a session, who answers) and the edge
// (actors/edge/edge_actor.cpp: which credential, which handler). Adding an
// endpoint is one row here and one handler where its `answered_by` says
// (the edge checks at compile time that every edge row has one).
// Pure data: no I/O, nothing of CAF.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace parley::net {

/// Every route, in the order of `route_table` (checked below). The first
/// two are outcomes of routing, not endpoints: they have no row.
enum class route : std::uint8_t {
  not_found,
  method_not_allowed,
  healthz,
  readyz,
  metrics,
  dashboard,
  chat_completions,
  list_models,
  usage,
  create_session,
  list_sessions,
  get_session,
  delete_session,
  post_message,
  list_messages,
  post_feedback,
  create_api_key,
  list_api_keys,
  revoke_api_key,
  cluster_info,
  admin_actors,
  admin_session,
  migrate_session,
  drain_node,
  admin_usage,
  top_usage,
  create_conversation,
  get_conversation,
  update_conversation,
  delete_conversation,
  list_conversation_items,
  append_conversation_items,
  create_response,
  get_response,
  delete_response,
  list_response_input_items,
};

enum class http_method : std::uint8_t { get, post, del };

/// Which credential a route needs (checked by the edge).
enum class auth_level : std::uint8_t {
  none,  ///< anyone (probes, metrics)
  user,  ///< a user's API key
  admin, ///< the admin token; a valid user key gets 403
  /// the admin token, which a browser may send as `?token=` instead; a
  /// missing one is answered with how to give it
  admin_page,
};

/// How the request body is read (net/http/api.hpp's parsers); `none` ignores it.
enum class body_parser : std::uint8_t {
  none,
  create_session,
  post_message,
  feedback,
  create_key,
  migrate,
  chat_completion,
  create_conversation,
  update_conversation,
  append_items,
  create_response,
};

/// Which query parameters are read (runtime/http/http_api.cpp); all routes
/// reject a malformed query string.
enum class query_parser : std::uint8_t {
  none,
  session_page, ///< limit (1-100, default 20), cursor
  message_page, ///< limit (1-500, default 50), after
  page_token,   ///< token: the admin token when no Authorization header came
  key_list,     ///< user (optional, 1-128 characters), limit (1-1000, default 100)
  usage_days,   ///< days (1-90, default 7), user (optional here; the admin route needs it)
  top_limit,    ///< limit (1-100, default 10)
  item_page,    ///< limit (1-100, default 20), after (an item id), order (asc, desc: default)
};

/// Who answers: the HTTP adapter on its own thread, with no actor on the
/// path (liveness and metrics must answer while actors are stuck), or the edge.
enum class answered_by : std::uint8_t { http, edge };

struct route_row {
  route id;
  /// The metrics label and log name (the enum's name).
  std::string_view name;
  http_method method;
  /// Literal segments and parameters: `{id}` (any one segment; the route's
  /// subject) and `{seq}` (a message number, parsed by the adapter).
  std::string_view pattern;
  auth_level auth;
  body_parser body;
  query_parser query;
  /// `{id}` names a session: one that cannot be a session id is 404 before
  /// any actor sees it, and the access log line names the session.
  bool reaches_session;
  answered_by by;
};

using hm = http_method;
using al = auth_level;
using bp = body_parser;
using qp = query_parser;
using ab = answered_by;

// clang-format off
inline constexpr std::array<route_row, 34> route_table{{
  // id                     name                method    pattern                                auth            body                 query              session  answered by
  {route::healthz,           "healthz",          hm::get,  "/healthz",                               al::none,       bp::none,            qp::none,          false,   ab::http},
  {route::readyz,            "readyz",           hm::get,  "/readyz",                                al::none,       bp::none,            qp::none,          false,   ab::edge},
  {route::metrics,           "metrics",          hm::get,  "/metrics",                               al::none,       bp::none,            qp::none,          false,   ab::http},
  {route::dashboard,         "dashboard",        hm::get,  "/dashboard",                             al::admin_page, bp::none,            qp::page_token,    false,   ab::edge},
  {route::chat_completions,  "chat_completions", hm::post, "/v1/chat/completions",                   al::user,       bp::chat_completion, qp::none,          false,   ab::edge},
  {route::list_models,       "list_models",      hm::get,  "/v1/models",                             al::user,       bp::none,            qp::none,          false,   ab::edge},
  {route::usage,             "usage",            hm::get,  "/v1/usage",                              al::user,       bp::none,            qp::usage_days,    false,   ab::edge},
  {route::create_session,    "create_session",   hm::post, "/v1/sessions",                           al::user,       bp::create_session,  qp::none,          false,   ab::edge},
  {route::list_sessions,     "list_sessions",    hm::get,  "/v1/sessions",                           al::user,       bp::none,            qp::session_page,  false,   ab::edge},
  {route::get_session,       "get_session",      hm::get,  "/v1/sessions/{id}",                      al::user,       bp::none,            qp::none,          true,    ab::edge},
  {route::delete_session,    "delete_session",   hm::del,  "/v1/sessions/{id}",                      al::user,       bp::none,            qp::none,          true,    ab::edge},
  {route::post_message,      "post_message",     hm::post, "/v1/sessions/{id}/messages",             al::user,       bp::post_message,    qp::none,          true,    ab::edge},
  {route::list_messages,     "list_messages",    hm::get,  "/v1/sessions/{id}/messages",             al::user,       bp::none,            qp::message_page,  true,    ab::edge},
  {route::post_feedback,     "post_feedback",    hm::post, "/v1/sessions/{id}/messages/{seq}/feedback", al::user,    bp::feedback,        qp::none,          true,    ab::edge},
  {route::create_api_key,    "create_api_key",   hm::post, "/admin/v1/api-keys",                     al::admin,      bp::create_key,      qp::none,          false,   ab::edge},
  {route::list_api_keys,     "list_api_keys",    hm::get,  "/admin/v1/api-keys",                     al::admin,      bp::none,            qp::key_list,      false,   ab::edge},
  {route::revoke_api_key,    "revoke_api_key",   hm::del,  "/admin/v1/api-keys/{id}",                al::admin,      bp::none,            qp::none,          false,   ab::edge},
  {route::cluster_info,      "cluster_info",     hm::get,  "/admin/v1/cluster",                      al::admin,      bp::none,            qp::none,          false,   ab::edge},
  {route::admin_actors,      "admin_actors",     hm::get,  "/admin/v1/actors",                       al::admin,      bp::none,            qp::none,          false,   ab::edge},
  {route::admin_session,     "admin_session",    hm::get,  "/admin/v1/sessions/{id}",                al::admin,      bp::none,            qp::none,          true,    ab::edge},
  {route::migrate_session,   "migrate_session",  hm::post, "/admin/v1/sessions/{id}/migrate",        al::admin,      bp::migrate,         qp::none,          true,    ab::edge},
  {route::drain_node,        "drain_node",       hm::post, "/admin/v1/nodes/{id}/drain",             al::admin,      bp::none,            qp::none,          false,   ab::edge},
  {route::admin_usage,       "admin_usage",      hm::get,  "/admin/v1/usage",                        al::admin,      bp::none,            qp::usage_days,    false,   ab::edge},
  {route::top_usage,         "top_usage",        hm::get,  "/admin/v1/usage/top",                    al::admin,      bp::none,            qp::top_limit,     false,   ab::edge},
  {route::create_conversation, "create_conversation", hm::post, "/v1/conversations",           al::user,       bp::create_conversation, qp::none,      false,   ab::edge},
  {route::get_conversation,  "get_conversation", hm::get,  "/v1/conversations/{id}",                 al::user,       bp::none,            qp::none,          false,   ab::edge},
  {route::update_conversation, "update_conversation", hm::post, "/v1/conversations/{id}",      al::user,       bp::update_conversation, qp::none,      false,   ab::edge},
  {route::delete_conversation, "delete_conversation", hm::del, "/v1/conversations/{id}",       al::user,       bp::none,            qp::none,          false,   ab::edge},
  {route::list_conversation_items, "list_conversation_items", hm::get, "/v1/conversations/{id}/items", al::user, bp::none,        qp::item_page,     false,   ab::edge},
  {route::append_conversation_items, "append_conversation_items", hm::post, "/v1/conversations/{id}/items", al::user, bp::append_items, qp::none, false, ab::edge},
  {route::create_response,   "create_response",  hm::post, "/v1/responses",                          al::user,       bp::create_response, qp::none,          false,   ab::edge},
  {route::get_response,      "get_response",     hm::get,  "/v1/responses/{id}",                     al::user,       bp::none,            qp::none,          false,   ab::edge},
  {route::delete_response,   "delete_response",  hm::del,  "/v1/responses/{id}",                     al::user,       bp::none,            qp::none,          false,   ab::edge},
  {route::list_response_input_items, "list_response_input_items", hm::get, "/v1/responses/{id}/input_items", al::user, bp::none,     qp::item_page,     false,   ab::edge},
}};
// clang-format on

/// Number of `route` values (the two outcomes included).
inline constexpr std::size_t route_count = route_table.size() + 2;

constexpr std::size_t route_index(route r) { return static_cast<std::size_t>(r); }

/// The row of an endpoint (not of not_found or method_not_allowed).
constexpr const route_row& row_of(route r) { return route_table[route_index(r) - 2]; }

constexpr bool is_endpoint(route r) { return route_index(r) >= 2 && route_index(r) < route_count; }

namespace detail {
constexpr bool rows_in_enum_order() {
  for (std::size_t i = 0; i < route_table.size(); ++i)
    if (route_index(route_table[i].id) != i + 2)
      return false;
  return true;
}
} // namespace detail
static_assert(detail::rows_in_enum_order(),
              "route_table must list every endpoint once, in the order of enum route");

constexpr std::string_view method_name(http_method m) {
  switch (m) {
    case http_method::get: return "GET";
    case http_method::post: return "POST";
    case http_method::del: return "DELETE";
  }
  return "";
}

} // namespace parley::net

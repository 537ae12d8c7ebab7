// The edge actor: authenticates each call as its route's row says and
// dispatches it to the route's handler (one per row of net/http/routes.hpp,
// in the table below); the handlers live in edge_sessions.cpp,
// edge_gateway.cpp and edge_admin.cpp, authentication in edge_auth.cpp.

#include "actors/edge/edge_actor.hpp"

#include <array>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/edge/edge_state.hpp"

namespace parley {

// --- Answers ---------------------------------------------------------------

void reply(const call_ptr& c, unsigned status, std::string body, std::string content_type) {
  net::http_response r;
  r.status = status;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  r.headers = c->headers;
  c->out->send(std::move(r));
}

void reply_error(const call_ptr& c, const api_error& e) {
  net::http_response r;
  r.status = http_status(e.code);
  r.body = error_body(e);
  r.headers = c->headers;
  if (has_retry_after(e.code))
    r.headers.emplace_back("Retry-After", std::to_string(c->retry_after > 0 ? c->retry_after : 1));
  c->out->send(std::move(r));
}

void reply_error(const call_ptr& c, const caf::error& e) { reply_error(c, to_api_error(e)); }

std::pair<registry_actor, std::string> route_to(edge_self* self, const std::string& session_id) {
  auto& st = self->state;
  auto& owner = st.view->owner(session_id);
  if (owner.id == st.cfg.node_id || !owner.registry)
    return {st.registry, st.cfg.node_id};
  // Registries travel untyped in member_info (vocabulary.hpp).
  return {caf::actor_cast<registry_actor>(owner.registry), owner.id};
}

std::optional<inflight_gate::ticket> admit(edge_self* self, const call_ptr& c, const char* what) {
  auto t = self->state.inflight.try_enter();
  if (!t) {
    self->state.metrics->shed("overloaded");
    reply_error(c, {errc::overloaded,
                    std::string{"this node has too many "} + what + " in flight; retry"});
  }
  return t;
}

namespace {

// --- The handler of each route ---------------------------------------------

using net::route;

constexpr std::array<route_handler, net::route_count> make_handlers() {
  std::array<route_handler, net::route_count> h{};
  h[net::route_index(route::readyz)] = handle_readyz;
  h[net::route_index(route::dashboard)] = handle_dashboard;
  h[net::route_index(route::chat_completions)] = handle_chat_completions;
  h[net::route_index(route::list_models)] = handle_list_models;
  h[net::route_index(route::create_session)] = handle_create_session;
  h[net::route_index(route::list_sessions)] = handle_list_sessions;
  h[net::route_index(route::get_session)] = handle_get_session;
  h[net::route_index(route::delete_session)] = handle_delete_session;
  h[net::route_index(route::post_message)] = handle_post_message;
  h[net::route_index(route::list_messages)] = handle_list_messages;
  h[net::route_index(route::post_feedback)] = handle_post_feedback;
  h[net::route_index(route::create_api_key)] = handle_create_api_key;
  h[net::route_index(route::list_api_keys)] = handle_list_api_keys;
  h[net::route_index(route::usage)] = handle_usage;
  h[net::route_index(route::admin_usage)] = handle_admin_usage;
  h[net::route_index(route::top_usage)] = handle_top_usage;
  h[net::route_index(route::revoke_api_key)] = handle_revoke_api_key;
  h[net::route_index(route::cluster_info)] = handle_cluster_info;
  h[net::route_index(route::admin_actors)] = handle_admin_actors;
  h[net::route_index(route::admin_session)] = handle_admin_session;
  h[net::route_index(route::migrate_session)] = handle_migrate_session;
  h[net::route_index(route::drain_node)] = handle_drain_node;
  h[net::route_index(route::create_conversation)] = handle_create_conversation;
  h[net::route_index(route::get_conversation)] = handle_get_conversation;
  h[net::route_index(route::update_conversation)] = handle_update_conversation;
  h[net::route_index(route::delete_conversation)] = handle_delete_conversation;
  h[net::route_index(route::list_conversation_items)] = handle_list_conversation_items;
  h[net::route_index(route::append_conversation_items)] = handle_append_conversation_items;
  h[net::route_index(route::create_response)] = handle_create_response;
  h[net::route_index(route::get_response)] = handle_get_response;
  h[net::route_index(route::delete_response)] = handle_delete_response;
  h[net::route_index(route::list_response_input_items)] = handle_list_response_input_items;
  return h;
}

constexpr auto handlers = make_handlers();

/// Every row the table gives to the edge has a handler, and no other does.
constexpr bool one_handler_per_edge_route() {
  for (auto& row : net::route_table)
    if ((handlers[net::route_index(row.id)] != nullptr) != (row.by == net::answered_by::edge))
      return false;
  return handlers[net::route_index(route::not_found)] == nullptr &&
         handlers[net::route_index(route::method_not_allowed)] == nullptr;
}
static_assert(one_handler_per_edge_route(),
              "every route answered by the edge needs exactly one handler in this table");

// --- Authentication and dispatch -------------------------------------------

/// The route's credential, then its handler. A validation failure found on
/// the HTTP side is answered only once the caller proved who they are, so
/// nothing leaks to strangers.
void dispatch(edge_self* self, const call_ptr& c) {
  if (!net::is_endpoint(c->route) || !handlers[net::route_index(c->route)])
    return reply_error(c, {errc::internal, "unexpected route"});
  auto handler = handlers[net::route_index(c->route)];
  auto auth = net::row_of(c->route).auth;
  if (auth == net::auth_level::none)
    return handler(self, c, nullptr);
  if (auth == net::auth_level::admin_page && c->bearer.empty())
    return reply_error(c, {errc::unauthorized,
                           "the dashboard needs the admin token: open "
                           "/dashboard?token=<PARLEY_ADMIN_TOKEN> or send "
                           "Authorization: Bearer <PARLEY_ADMIN_TOKEN>"});
  bool admin = auth != net::auth_level::user;
  if (admin && is_admin_token(self, c->bearer)) {
    if (c->early_error)
      return reply_error(c, *c->early_error);
    return handler(self, c, nullptr);
  }
  // A user key, or on an admin route a key that is valid but not enough.
  with_key(self, c, [self, c, admin, handler](const api_key_record& key) {
    if (admin)
      return reply_error(c, {errc::forbidden, "this route needs the admin token"});
    if (c->early_error)
      return reply_error(c, *c->early_error);
    handler(self, c, &key);
  });
}

void on_view(edge_self* self, view_ptr v) {
  auto& st = self->state;
  st.view = std::move(v);
  if (auto* me = st.view->find(st.cfg.node_id); me && me->status == member_status::leaving)
    st.draining = true;
  double up = 0, leaving = 0, down = 0;
  for (auto& m : st.view->members)
    (m.status == member_status::up ? up : m.status == member_status::leaving ? leaving : down) += 1;
  st.metrics->cluster_nodes(up, leaving, down);
  for (auto& m : st.view->members)
    if (m.status == member_status::down)
      abandon_turns_on(self, m.id);
}

edge_actor::behavior_type edge_behavior(edge_self* self, edge_config cfg, edge_peers peers) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.inflight.set_max(st.cfg.max_inflight);
  st.storage = std::move(peers.storage);
  st.registry = std::move(peers.registry);
  st.membership = std::move(peers.membership);
  st.ratelimit = std::move(peers.ratelimit);
  st.ledger = std::move(peers.ledger);
  st.llm = std::move(peers.llm);
  st.metrics = peers.metrics ? std::move(peers.metrics) : std::make_shared<node_metrics>();
  st.inflight.on_change([m = st.metrics](std::size_t n) { m->turns_in_flight(n); });
  st.health = std::move(peers.health);
  self->set_down_handler(
    [self](caf::down_msg& dm) { abandon_turns_via(self, dm.source.get()); });
  member_info me;
  me.id = st.cfg.node_id;
  me.status = member_status::up;
  me.registry = caf::actor_cast<caf::actor>(st.registry);
  st.view = cluster_view::alone(std::move(me));
  if (st.membership)
    self->send(st.membership, view_atom::value,
               view_subscriber_actor{caf::actor_cast<edge_actor>(self)});
  return {
    [self](http_call& call) {
      auto c = std::make_shared<http_call>(std::move(call));
      // An exception here is a broken invariant of Parley, never the
      // client's doing (input was validated on the asio thread): answer
      // this request, log it with its id, and go on serving the others.
      try {
        dispatch(self, c);
      } catch (const std::exception& e) {
        actor_fault(edge_state::name, e.what(), "http_call", c->request_id);
        reply_error(c, {errc::internal, "internal error while handling this request (request id " +
                                          c->request_id + "); it was logged"});
      }
    },
    [self](view_atom, view_ptr& v) { on_view(self, std::move(v)); },
    // A stream ended (its sink answered the client).
    [self](finished_atom, const std::string& node, std::uint64_t ticket) {
      stream_finished(self, node, ticket);
    },
    [self](refused_atom, const stream_refusal& r) { stream_refused(self, r); },
    [self](drain_atom) { self->state.draining = true; },
    [self](deadline_atom) { sweep_deadlines(self); },
    [self](key_revoked_atom, const std::string& prefix_or_id) {
      self->state.keys.forget(prefix_or_id);
    },
  };
}

} // namespace

edge_actor spawn_edge_actor(caf::actor_system& sys, const edge_config& cfg, edge_peers peers) {
  return sys.spawn(edge_behavior, cfg, std::move(peers));
}

} // namespace parley

#pragma once
// The edge actor: one per node, where HTTP meets the actors. The HTTP layer
// parses and validates on its own threads and sends one `http_call` per
// request; the edge authenticates it (with a short-lived key cache) as the
// route table says and dispatches it to the route's handler, which answers
// through the call's responder (it posts onto the connection's strand).
//
// Files: edge_actor.cpp (the behaviour, authentication order, dispatch, the
// handler table), edge_auth.* (API keys and their cache), edge_sessions.cpp
// (the session routes and turns), edge_gateway.cpp (the OpenAI gateway and
// the rate limit with its fallback), edge_admin.cpp (admin routes, readiness,
// the dashboard), stream_sink.* (the one SSE sink actor), edge_state.hpp
// (what they share; private to actors/).
//
/// Protocol: `edge_actor` below, node-local (an http_call carries its
/// responder; the others come from this node's actors).
///
/// Routing: a turn goes to the registry of the session's owner in the
/// current view (this node's registry when it owns it); reads and writes
/// that need no session actor go straight to storage.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "runtime/telemetry/metrics.hpp"
#include "actors/edge/stream_sink.hpp"
#include "actors/llm_actor.hpp"
#include "actors/membership_actor.hpp"
#include "actors/ratelimit_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "actors/supervisor_actor.hpp"
#include "net/http/api.hpp"
#include "net/http_server.hpp"
#include "net/http/router.hpp"

namespace parley {

/// One validated HTTP request on its way to the edge.
struct http_call {
  net::route route = net::route::not_found;
  std::string id;
  std::int64_t seq = 0;
  std::string bearer; ///< the token after "Bearer ", empty when absent
  std::string peer;   ///< the client's address (net::http_request::peer)
  std::string request_id;
  bool stream = false;
  /// A validation failure found before authentication; answered only once
  /// the caller proved who they are, so nothing leaks to strangers.
  std::optional<api_error> early_error;
  /// The parsed body, of the type the route's row names (net/http/routes.hpp).
  net::request_body body;
  std::int32_t limit = 0; ///< a page's size; for usage (query_parser::usage_days), the days
  std::int64_t after = 0;
  std::string cursor; ///< a page's cursor; for item pages (query_parser::item_page), `after`
  bool ascending = false; ///< item pages: `order=asc`
  std::string idempotency_key; ///< `Idempotency-Key` (create_response), 1-128 characters
  std::string user; ///< an admin listing's `user` query parameter; empty: everyone
  net::responder_ptr out;
  /// Added to every answer (rate-limit headers of chat responses).
  net::header_list headers;
  /// Retry-After seconds of an error answer; 0: the default of its code.
  int retry_after = 0;
  /// A streamed turn's sink actor (set by the edge).
  stream_sink_actor sink;
  /// The key's budget hold of this call (with_rate_limit), for handlers that
  /// reach the model call through several steps; settled with the call's
  /// usage, or its reservation goes back when the call ends without one.
  std::shared_ptr<class budget_hold> budget;
};

/// The edge's protocol. It includes what the membership actor tells its
/// subscribers (view_subscriber_actor), what the revocation listener tells
/// its target (revocation_target_actor) and what a stream sink reports
/// (sink_report_actor), so an edge handle converts to each of them.
using edge_actor = caf::typed_actor<
  /// One request from the HTTP layer: answered through its responder.
  caf::reacts_to<http_call>,
  /// The cluster changed (from membership): route with the new view; turns
  /// waiting on a node that went down get 503.
  caf::reacts_to<view_atom, view_ptr>,
  /// The node is stopping: /readyz answers 503 from now on.
  caf::reacts_to<drain_atom>,
  /// (prefix_or_id) a key was revoked on another node (from the revocation
  /// listener): it leaves the key cache.
  caf::reacts_to<key_revoked_atom, std::string>,
  /// (node, ticket) a stream sink answered its client (stream_sink.hpp):
  /// the request leaves the in-flight count.
  caf::reacts_to<finished_atom, std::string, std::uint64_t>,
  /// A stream sink's turn was refused before its stream started
  /// (stream_sink.hpp): the request's turn_refusal decides.
  caf::reacts_to<refused_atom, stream_refusal>,
  /// Internal: the deadlines of its requests are due (actors/deadlines.hpp).
  caf::reacts_to<deadline_atom>>;

struct edge_config {
  std::string node_id;
  std::string admin_token;
  /// The answer of `GET /dashboard` once the admin token checked out
  /// (runtime/http/dashboard.cpp: the page and its security headers).
  net::http_response dashboard;
  /// PARLEY_CONTEXT_MESSAGES: the history a `store: false` response sees.
  std::size_t context_messages = 20;
  std::string default_model;
  std::size_t max_inflight = 10000;
  std::chrono::milliseconds turn_timeout{600000};
  std::chrono::milliseconds storage_timeout{30000};
  std::chrono::milliseconds key_cache_ttl{2000};
  /// PARLEY_AUTH_FAILURES_PER_MIN: lookups of keys this node has not seen
  /// valid, per client address and minute (burst = rate); 0: no limit.
  std::int32_t auth_failures_per_min = 60;
  std::int32_t rate_limit_per_min = 600; ///< 0: off
  /// PARLEY_TOKEN_BUDGET_PER_DAY: tokens per key per UTC day for keys
  /// without a budget of their own; 0: unlimited.
  std::int64_t token_budget_per_day = 0;
  bool redis = false; ///< PARLEY_REDIS_URL set: limits are cluster-wide, else per node
  /// PARLEY_STREAM_CANCEL_ON_DISCONNECT: a streamed turn whose client left is
  /// abandoned (upstream call closed, nothing stored) instead of completed.
  bool cancel_on_disconnect = false;
};

/// The node's other actors the edge talks to.
struct edge_peers {
  storage_pool_ptr storage;
  registry_actor registry;     ///< this node's session registry
  membership_actor membership; ///< this node's membership actor
  ratelimit_actor ratelimit;   ///< this node's ratelimit actor
  /// Shared with the ratelimit actor (its cfg.ledger); null: none.
  std::shared_ptr<budget_ledger> ledger;
  metrics_ptr metrics;
  llm_actor llm; ///< this node's llm actor (the stateless gateway)
  /// The supervisor's board: /readyz reads PostgreSQL's state and the core
  /// actors' liveness from it instead of asking for them on each call.
  health_ptr health;
};

edge_actor spawn_edge_actor(caf::actor_system& sys, const edge_config& cfg, edge_peers peers);

} // namespace parley

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(parley::http_call)

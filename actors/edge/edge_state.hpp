#pragma once
// Private to the edge's files (actors/edge/edge_*.cpp, stream_sink.cpp): the
// edge actor's state, the helpers that answer a call, and the handlers the
// route table dispatches to. Not for use outside actors/.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>

#include <caf/actor.hpp>
#include <caf/error.hpp>

#include "actors/cluster_view.hpp"
#include "actors/edge/edge_actor.hpp"
#include "actors/edge/edge_auth.hpp"
#include "actors/edge/inflight_gate.hpp"
#include "actors/deadlines.hpp"
#include "actors/instrumented.hpp"
#include "runtime/rules/local_bucket.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

using call_ptr = std::shared_ptr<http_call>;
/// request_turn's `refused` (below).
using turn_refusal = std::function<bool(const call_ptr&, const api_error&)>;

/// A turn sent to another node's registry, until answered: when that node
/// goes down it is answered 503 at once (or its sink told to).
struct remote_turn {
  call_ptr call;
  inflight_gate::ticket admitted;
  /// The proxy of the remote registry the turn went through: when it dies
  /// (its connection closed), the turn is lost, also while the view still
  /// shows the node up.
  const caf::actor_control_block* via = nullptr;
};

struct edge_state {
  static inline const char* name = "edge";
  edge_config cfg;
  storage_pool_ptr storage;
  registry_actor registry;
  membership_actor membership;
  ratelimit_actor ratelimit;
  std::shared_ptr<budget_ledger> ledger; ///< shared with the ratelimit actor; may be null
  llm_actor llm; ///< the stateless gateway
  deadline_book deadlines; ///< of its requests on a turn's path (actors/deadlines.hpp)
  view_ptr view;
  key_cache keys;
  health_ptr health;
  metrics_ptr metrics;
  bool draining = false;
  /// Turns and chat completions in flight on this node, at most
  /// cfg.max_inflight: each holds a ticket until it is answered.
  inflight_gate inflight;
  /// Streams of this node's sessions and of the gateway, by ticket number,
  /// until their sink reports (finished_atom).
  std::unordered_map<std::uint64_t, inflight_gate::ticket> streams;
  /// The turn_refusal of a stream that has one (a Responses continuation),
  /// with its call, by ticket number, until its sink reports.
  std::unordered_map<std::uint64_t, std::pair<call_ptr, turn_refusal>> stream_refusals;
  /// Turns sent to another node's registry, by node and ticket number.
  std::unordered_map<std::string, std::unordered_map<std::uint64_t, remote_turn>> remote;
  /// The remote registry proxies monitored, once each (remote_turn::via).
  std::unordered_set<const caf::actor_control_block*> watched;
  std::uint64_t next_ticket = 0;
  /// Decides when the ratelimit actor does not answer in time.
  local_bucket fallback{10000};
};

using edge_self = instrumented_actor<edge_state, edge_actor::base>;

// --- Answers (edge_actor.cpp) -----------------------------------------------

/// An answer that is no Parley error (a 2xx, or an upstream's 4xx passed
/// through) with the call's extra headers.
void reply(const call_ptr& c, unsigned status, std::string body,
           std::string content_type = "application/json");
/// An error answer (API.md section 2) with the call's extra headers and,
/// for codes that have one, Retry-After.
void reply_error(const call_ptr& c, const api_error& e);
void reply_error(const call_ptr& c, const caf::error& e);

/// The registry that should get a turn for `session_id`, and its node.
std::pair<registry_actor, std::string> route_to(edge_self* self, const std::string& session_id);

/// A ticket for one more request in flight, or nothing after answering
/// 503 overloaded (`what`: "turns" or "requests").
std::optional<inflight_gate::ticket> admit(edge_self* self, const call_ptr& c, const char* what);

/// The body of the call's route (the route table guarantees its type).
template <class T>
T& body_of(const call_ptr& c) {
  return std::get<T>(c->body);
}

// --- Authentication (edge_auth.cpp) ----------------------------------------

using key_continuation = std::function<void(const api_key_record&)>;
/// True when `bearer` is the admin token (compared in constant time).
bool is_admin_token(edge_self* self, const std::string& bearer);
/// Authenticates a user key (cache, then storage) and continues with the
/// key's record; answers 401 (and 429 for a flood of unknown keys) itself.
void with_key(edge_self* self, const call_ptr& c, key_continuation next);

// --- Handlers, one per route the edge answers (see edge_actor.cpp's table) --
// `key` is the caller's API key on user routes, null on the others.

using route_handler = void (*)(edge_self* self, const call_ptr& c, const api_key_record* key);

// edge_admin.cpp
void handle_readyz(edge_self*, const call_ptr&, const api_key_record*);
void handle_dashboard(edge_self*, const call_ptr&, const api_key_record*);
void handle_create_api_key(edge_self*, const call_ptr&, const api_key_record*);
void handle_list_api_keys(edge_self*, const call_ptr&, const api_key_record*);
// edge_usage.cpp
void handle_usage(edge_self*, const call_ptr&, const api_key_record*);
void handle_admin_usage(edge_self*, const call_ptr&, const api_key_record*);
void handle_top_usage(edge_self*, const call_ptr&, const api_key_record*);
void handle_revoke_api_key(edge_self*, const call_ptr&, const api_key_record*);
void handle_cluster_info(edge_self*, const call_ptr&, const api_key_record*);
void handle_admin_actors(edge_self*, const call_ptr&, const api_key_record*);
void handle_admin_session(edge_self*, const call_ptr&, const api_key_record*);
void handle_migrate_session(edge_self*, const call_ptr&, const api_key_record*);
void handle_drain_node(edge_self*, const call_ptr&, const api_key_record*);

class budget_hold;
using budget_hold_ptr = std::shared_ptr<budget_hold>;

// edge_sessions.cpp
/// Answers a completed turn (not streamed).
using turn_answer = std::function<void(const call_ptr&, turn_reply&)>;
/// Sends `t` to the registry of its session's owner with an in-flight
/// ticket (503 without one); a streamed call (`c->stream`) gets a turn sink,
/// which renders the answer itself; otherwise `answer` renders it. Errors
/// are answered in the error shape.
/// `make_sink` (optional) spawns a streamed call's sink instead of the
/// session turn's (spawn_turn_sink's arguments but the system). `budget`
/// (optional): the key's hold (with_rate_limit), settled with the turn's
/// usage (in the sink when streamed: its turn_listener). `refused`
/// (optional) sees a failed turn's error first and returns true when it
/// took the call over (answered it or went on otherwise); for a streamed
/// call, the not_latest and not_found refusals before its stream started
/// (stream_refused).
using sink_maker =
  std::function<stream_sink_actor(sink_target, registry_actor, turn_request, turn_listener)>;
void request_turn(edge_self* self, const call_ptr& c, turn_request t, turn_answer answer,
                  sink_maker make_sink = {}, budget_hold_ptr budget = {},
                  turn_refusal refused = {});
void handle_create_session(edge_self*, const call_ptr&, const api_key_record*);
void handle_list_sessions(edge_self*, const call_ptr&, const api_key_record*);
void handle_get_session(edge_self*, const call_ptr&, const api_key_record*);
void handle_delete_session(edge_self*, const call_ptr&, const api_key_record*);
void handle_post_message(edge_self*, const call_ptr&, const api_key_record*);
void handle_list_messages(edge_self*, const call_ptr&, const api_key_record*);
void handle_post_feedback(edge_self*, const call_ptr&, const api_key_record*);

/// The turns waiting on `node`, which went down, are answered 503 at once.
void abandon_turns_on(edge_self* self, const std::string& node);
/// Answers the turns that went through `proxy`, which died: a message sent
/// to a dead proxy is lost without an error, so their answers never come.
void abandon_turns_via(edge_self* self, const caf::actor_control_block* proxy);
/// A sink reported (finished_atom, node, ticket): its stream is complete.
void stream_finished(edge_self* self, const std::string& node, std::uint64_t ticket);
/// A sink reported (refused_atom, r): the session refused its turn before
/// the stream started; the request's turn_refusal decides, or the error is
/// its answer.
void stream_refused(edge_self* self, const stream_refusal& r);

// edge_conversations.cpp (OpenAI's Conversations API on sessions)
void handle_create_conversation(edge_self*, const call_ptr&, const api_key_record*);
void handle_get_conversation(edge_self*, const call_ptr&, const api_key_record*);
void handle_update_conversation(edge_self*, const call_ptr&, const api_key_record*);
void handle_delete_conversation(edge_self*, const call_ptr&, const api_key_record*);
void handle_list_conversation_items(edge_self*, const call_ptr&, const api_key_record*);
void handle_append_conversation_items(edge_self*, const call_ptr&, const api_key_record*);

// edge_responses.cpp (OpenAI's Responses API on session turns)
void handle_create_response(edge_self*, const call_ptr&, const api_key_record*);
void handle_get_response(edge_self*, const call_ptr&, const api_key_record*);
void handle_delete_response(edge_self*, const call_ptr&, const api_key_record*);
void handle_list_response_input_items(edge_self*, const call_ptr&, const api_key_record*);

// edge_gateway.cpp
void handle_chat_completions(edge_self*, const call_ptr&, const api_key_record*);
void handle_list_models(edge_self*, const call_ptr&, const api_key_record*);

// edge_limits.cpp

/// An admitted call's reservation against its key's daily token budget,
/// until the call's usage settles it (settle) or the last holder lets go
/// without (a refund). Either queues one settlement in the budget ledger
/// for the ratelimit actor (or sends it one, without a ledger), fire and
/// forget, from whichever thread. Shared by the handlers and sinks that
/// may see the call's result.
class budget_hold {
public:
  budget_hold(ratelimit_actor rl, std::shared_ptr<budget_ledger> ledger, metrics_ptr metrics,
              budget_settlement s);
  ~budget_hold();
  budget_hold(const budget_hold&) = delete;
  budget_hold& operator=(const budget_hold&) = delete;
  /// The call's usage (prompt + completion); the first call counts.
  void settle(const token_usage& u);

private:
  void send(budget_settlement s);

  ratelimit_actor rl_;
  std::shared_ptr<budget_ledger> ledger_;
  metrics_ptr metrics_; ///< counts settlements a full ledger dropped
  budget_settlement s_;
  std::atomic<bool> done_{false};
};
/// Null: the key has no budget.
using limited_continuation = std::function<void(budget_hold_ptr)>;

/// The per-key rate limit and daily token budget of chat requests (turns
/// and completions), checked together before any model call: adds the
/// X-RateLimit headers, answers 429 `rate_limited` or `budget_exceeded`
/// itself, else calls `next` with the call's hold, which `reserve()` tokens
/// back (runtime/rules/token_budget.hpp's budget_reservation; called only
/// when the key has a budget).
void with_rate_limit(edge_self* self, const call_ptr& c, const api_key_record& key,
                     const std::function<std::int64_t()>& reserve, limited_continuation next);
/// What a chat completion reserves: the estimate of its messages plus its
/// max_completion_tokens (or max_tokens), else the default allowance.
std::int64_t completion_reservation(const call_ptr& c);

} // namespace parley

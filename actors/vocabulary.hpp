#pragma once
// The message vocabulary of Parley's actors: every atom, every message
// struct with its `inspect`, the error category, and type registration.
// Everything a session's turn carries is serializable so that it can cross
// the cluster. The protocols that use these messages are declared as typed
// interfaces in each actor's header (session_actor.hpp, storage_actor.hpp,
// ...); this header only names the words.
//
// Conventions: a message of more than two values besides its atom is a
// struct with `inspect` (named fields instead of positions); a handle whose
// interface is declared in a header that includes this one (member_info's
// registry and membership, a session's own handle) travels as `caf::actor`
// and is cast to its interface where it is used.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/optional.hpp>
#include <caf/sec.hpp>

#include "net/http/api_error.hpp"
#include "runtime/rules/context_window.hpp" // llm_message
#include "storage/records.hpp"

namespace caf {
class actor_system_config;
}

namespace parley {

// -- atoms -------------------------------------------------------------------

using activate_atom = caf::atom_constant<caf::atom("activate")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
/// An actor's own deadlines are due (actors/deadlines.hpp).
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;
using passivate_atom = caf::atom_constant<caf::atom("passivate")>;
using gone_atom = caf::atom_constant<caf::atom("gone")>;
using stale_atom = caf::atom_constant<caf::atom("stale")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using count_atom = caf::atom_constant<caf::atom("count")>;
using find_key_atom = caf::atom_constant<caf::atom("findkey")>;
using make_key_atom = caf::atom_constant<caf::atom("makekey")>;
using revoke_atom = caf::atom_constant<caf::atom("revoke")>;
using list_keys_atom = caf::atom_constant<caf::atom("listkeys")>;
using new_sess_atom = caf::atom_constant<caf::atom("newsess")>;
using get_sess_atom = caf::atom_constant<caf::atom("getsess")>;
using list_sess_atom = caf::atom_constant<caf::atom("listsess")>;
using del_sess_atom = caf::atom_constant<caf::atom("delsess")>;
using list_msg_atom = caf::atom_constant<caf::atom("listmsg")>;
using find_cmid_atom = caf::atom_constant<caf::atom("findcmid")>;
using feedback_atom = caf::atom_constant<caf::atom("feedback")>;
// OpenAI's stateful API (API.md section 5a)
using set_meta_atom = caf::atom_constant<caf::atom("setmeta")>;
using append_atom = caf::atom_constant<caf::atom("append")>;
using fork_atom = caf::atom_constant<caf::atom("fork")>;
using ensure_atom = caf::atom_constant<caf::atom("ensure")>;
using started_atom = caf::atom_constant<caf::atom("started")>;
using get_resp_atom = caf::atom_constant<caf::atom("getresp")>;
using del_resp_atom = caf::atom_constant<caf::atom("delresp")>;
using llm_call_atom = caf::atom_constant<caf::atom("llmcall")>;
using llm_done_atom = caf::atom_constant<caf::atom("llmdone")>;
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using delta_atom = caf::atom_constant<caf::atom("delta")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using finished_atom = caf::atom_constant<caf::atom("finished")>;
using refused_atom = caf::atom_constant<caf::atom("refused")>;
using chunk_atom = caf::atom_constant<caf::atom("chunk")>;
// cluster
using hello_atom = caf::atom_constant<caf::atom("hello")>;
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using beat_atom = caf::atom_constant<caf::atom("beat")>;
using view_atom = caf::atom_constant<caf::atom("view")>;
using pin_atom = caf::atom_constant<caf::atom("pin")>;
using migrate_atom = caf::atom_constant<caf::atom("migrate")>;
using handoff_atom = caf::atom_constant<caf::atom("handoff")>;
using moved_atom = caf::atom_constant<caf::atom("moved")>;
using where_atom = caf::atom_constant<caf::atom("where")>;
using cluster_atom = caf::atom_constant<caf::atom("cluster")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using discovered_atom = caf::atom_constant<caf::atom("discovered")>;
// rate limits and key revocation
using rate_check_atom = caf::atom_constant<caf::atom("ratecheck")>;
using redis_status_atom = caf::atom_constant<caf::atom("redisstat")>;
using publish_revoked_atom = caf::atom_constant<caf::atom("pubrevoke")>;
using key_revoked_atom = caf::atom_constant<caf::atom("keyrevoked")>;
// daily token budgets: a call's spend settled, and the ratelimit actor's
// flush of settlements to Redis
using settle_atom = caf::atom_constant<caf::atom("settle")>;
using budget_flush_atom = caf::atom_constant<caf::atom("bgflush")>;
// the ratelimit actor deciding the rate checks it has gathered, in one Redis call
using rate_flush_atom = caf::atom_constant<caf::atom("rlflush")>;
// the ratelimit actor giving back budget leases not used for a while
using lease_sweep_atom = caf::atom_constant<caf::atom("rlsweep")>;
// settlements queued in the budget ledger (budget_ledger.hpp) wait to be drained
using settle_batch_atom = caf::atom_constant<caf::atom("settlebat")>;
// supervision: `(health_atom) -> bool` is answered by every instrumented
// actor in its mailbox order, before its behaviour (instrumented.hpp), so it
// is in no typed interface: the supervisor pings through untyped handles.
using health_atom = caf::atom_constant<caf::atom("health")>;
// internal self-messages (timers and batches; each actor's interface lists
// those it sends itself through its own handle)
using pg_tick_atom = caf::atom_constant<caf::atom("pgtick")>;
using activate_flush_atom = caf::atom_constant<caf::atom("actflush")>;
using cmid_flush_atom = caf::atom_constant<caf::atom("cmidflush")>;
using listen_atom = caf::atom_constant<caf::atom("listen")>;
using tick_atom = caf::atom_constant<caf::atom("svtick")>;
// usage of gateway calls (to a storage actor), and its flush timer
using usage_atom = caf::atom_constant<caf::atom("usage")>;
using usage_of_atom = caf::atom_constant<caf::atom("usageof")>;
using top_usage_atom = caf::atom_constant<caf::atom("topusage")>;
using usage_flush_atom = caf::atom_constant<caf::atom("useflush")>;

// -- cluster views -------------------------------------------------------------

struct cluster_view;
/// An immutable view of the cluster (cluster_view.hpp); node-local, never
/// serialized.
using view_ptr = std::shared_ptr<const cluster_view>;

// -- turns -------------------------------------------------------------------

/// One chat turn, from the edge to the owner's registry and session actor.
struct turn_request {
  std::string session_id;
  std::string user_id;
  std::string content;
  std::string client_message_id; ///< empty: none
  std::string request_id;
  /// Registries this turn passed through; bounds forwarding while nodes'
  /// views of the cluster disagree.
  std::int32_t hops = 0;
  /// A streamed turn: the actor on the client's node (the edge's stream
  /// sink, stream_sink_actor, carried as caf::actor) that gets each piece of the reply as (delta_atom,
  /// std::string) before the turn_reply, and may answer a piece's sender
  /// with (cancel_atom) when its client left. Invalid: not streamed.
  caf::actor sink;
  /// The models the caller's API key may use (empty: any): a session whose
  /// model is not among them refuses the turn with 403 forbidden.
  std::vector<std::string> models;
  /// OpenAI's Conversations API (`POST /v1/conversations/{id}/items`): when
  /// not empty, the turn stores these messages (role and content) after
  /// the session's last one, without a model call, and `content` is unused.
  std::vector<message_record> append = {};
  /// OpenAI's Responses API: the system message of this turn's model call
  /// instead of the session's system prompt (empty: the session's), and
  /// the call's options (llm_request::options).
  std::string instructions = {};
  std::string call_options = {};
  /// OpenAI's `previous_response_id`: the seq of the reply this turn must
  /// follow (0: none). When it is not the session's last message, a reply
  /// still there and not deleted, the turn does nothing and fails with
  /// errc::not_latest (the edge then forks), unless the client message id
  /// names a stored turn (a retry, answered as such).
  std::int64_t previous_seq = 0;
  /// OpenAI's replayed input items (role and content): stored in order
  /// before the user message, in the same commit as the turn, and sent to
  /// the model as history.
  std::vector<message_record> before = {};
  /// OpenAI's Responses API: the request's options, stored with the turn
  /// (turn_write::options; the actor sets input_before).
  response_options options = {};
  /// With a client message id, the hash of everything that defines the
  /// request beside its content (an OpenAI response's Idempotency-Key):
  /// stored with the user message, and a repeat of the id with another
  /// hash is a conflict (message_record::request_hash). Empty: content only.
  std::string request_hash = {};
  /// OpenAI's Responses API: the model of this turn's call, which `models`
  /// must allow (empty: the session's).
  std::string model = {};
};

/// A completed turn: both messages are committed in PostgreSQL.
struct turn_reply {
  message_record user;
  message_record reply;
  /// An appending turn (turn_request::append): the messages it stored, in
  /// order (`user` and `reply` are then empty).
  std::vector<message_record> appended = {};
};


// -- model calls -------------------------------------------------------------

struct llm_request {
  std::string model;
  /// A session turn's context; for a gateway call the text of each message
  /// (what the echo model reads).
  std::vector<llm_message> messages;
  /// A gateway call (API.md section 5): the client's whole request as the
  /// upstream gets it (net::chat_completion_body::upstream_body with
  /// `model` set), sent unchanged; its answer is relayed (llm_result::raw,
  /// or streamed, each chunk as it comes: chunk_atom). Empty: a session
  /// turn, whose request Parley builds from `model` and `messages`.
  std::string raw_body = {};
  /// A session turn's call options, a JSON object's text whose members
  /// join the upstream request (`temperature`, `max_tokens`); empty: none.
  std::string options = {};
};

struct llm_result {
  std::string content;
  std::string model;
  token_usage usage = {}; ///< known when the upstream reported it (the echo model always does)
  /// A gateway call's whole answer as the upstream gave it, when one did
  /// (not the echo model's): relayed to the client unchanged (streamed: in
  /// chunks, when the upstream ignored `stream`).
  std::string raw = {};
  /// The upstream's HTTP status of `raw`: 2xx, or a 4xx other than 429
  /// (the client's error, passed through with no retry); 0 without `raw`.
  std::uint32_t upstream_status = 0;
};

/// One chunk of a gateway call's upstream stream on its way to the client:
/// from the upstream connection's thread to the completion sink on the same
/// node (never serialized), as (chunk_atom, relay_chunk).
struct relay_chunk {
  std::string data; ///< the event's `data`, unchanged
  /// The final usage chunk (`choices: []`): relayed only when the client
  /// asked with stream_options.include_usage.
  bool usage_only = false;
  /// Dropped once the chunk is written to the client (or the client is
  /// gone): the upstream read waits for it (net::stream_pace).
  std::shared_ptr<void> ticket;
};

/// How one model call attempt of the llm actor ended (internal: sent by the
/// upstream connection's thread to the llm actor).
struct llm_attempt_done {
  std::uint64_t id = 0;       ///< the call
  std::int32_t status = 0;    ///< net::fetch_status
  std::uint32_t http_status = 0;
  std::string body;
  std::string error;          ///< what went wrong, for the client's message
  std::string retry_after;    ///< the upstream's Retry-After header, if any
};

// -- storage requests ----------------------------------------------------------

/// A session taken over from another node (a migration's handoff): when its
/// epoch and last seq in PostgreSQL are still these, only the epoch moves on.
struct adopt_request {
  std::string session_id;
  std::int64_t epoch = 0;
  std::int64_t last_seq = 0;
};

/// A new API key of `user_id` (`POST /admin/v1/api-keys`); the secret itself
/// never leaves the edge.
struct make_key_request {
  api_key_record key; ///< user, prefix (key_prefix(secret)), budget, models
  std::string hash;   ///< hash_key(secret)
};

/// `GET /admin/v1/api-keys`: newest first; every user's when `user` is empty.
struct list_keys_request {
  std::string user;
  std::int32_t limit = 100;
};

/// One page of a user's sessions (`GET /v1/sessions`).
struct list_sessions_request {
  std::string user_id;
  std::int32_t limit = 0;
  std::string cursor; ///< empty: the first page
};

/// One page of a session's messages (`GET /v1/sessions/{id}/messages`).
struct list_messages_request {
  std::string session_id;
  std::string user_id;
  std::int64_t after = 0; ///< messages with a greater seq (descending: a smaller one)
  std::int32_t limit = 0;
  /// Newest first (a conversation's items, `order=desc`).
  bool descending = false;
};

/// A conversation's new metadata (`POST /v1/conversations/{id}`).
struct update_metadata_request {
  std::string session_id;
  std::string user_id;
  std::string metadata_json; ///< a JSON object
};

/// A rating of one assistant message (`POST .../feedback`).
struct feedback_request {
  std::string session_id;
  std::string user_id;
  std::int64_t seq = 0;
  std::int32_t rating = 0;
  caf::optional<std::string> comment; ///< none: no comment
};

/// What a stored client id resolved to.
struct client_id_hit {
  bool found = false;
  message_record user;
  bool has_reply = false;
  message_record reply;
  /// The lookup with a response's seq: that response was deleted.
  bool gone = false;
  /// The lookup with a user (an OpenAI Idempotency-Key): the session the
  /// user's key belongs to (empty: none yet).
  std::string key_owner = {};
};

// -- cluster -----------------------------------------------------------------

/// A member's state. Its JSON and metrics names (to_string) are "up",
/// "leaving" and "down" (API.md).
enum class member_status : std::uint8_t { up, leaving, down };

/// "up", "leaving" or "down".
const char* to_string(member_status s);

/// One node as the cluster sees it. Travels in hello and heartbeat messages.
struct member_info {
  std::string id;
  std::string http;    ///< host:port of its HTTP API
  std::string cluster; ///< host:port of its CAF middleman
  member_status status = member_status::up;
  std::uint64_t incarnation = 0; ///< start time; a restarted node is a new incarnation
  std::uint64_t sessions_active = 0;
  caf::actor membership; ///< its membership_actor (membership_actor.hpp)
  caf::actor registry;   ///< its registry_actor (registry_actor.hpp)
};

/// A migration pinned `session` to `node`; `relay`: pass it on to every
/// member (false when it comes from another member).
struct pin_request {
  std::string session;
  std::string node;
  bool relay = false;
};

// -- rate limits -----------------------------------------------------------------

/// One chat request of API key `key_id` against its limit (ratelimit_actor.hpp).
struct rate_check_request {
  std::string key_id;
  std::int32_t rate_per_min = 0; ///< <= 0: off
  std::int32_t live_nodes = 1;   ///< the local bucket's share is rate / live_nodes
  /// rate_check_deadline(): past it when dequeued, the local bucket decides.
  std::int64_t deadline_ns = 0;
  /// The key's daily token budget (token_budget.hpp's effective_budget);
  /// <= 0: none, nothing reserved.
  std::int64_t budget = 0;
  std::int64_t reserve = 0; ///< tokens this call reserves (budget_reservation)
  std::int64_t day = 0;     ///< the UTC day of the request (utc_day)
};

/// The answer to a rate check (ratelimit_actor.hpp).
struct rate_decision {
  bool allowed = true;
  std::int32_t limit = 0;          ///< the bucket capacity used (rate, or this node's share)
  std::int32_t remaining = 0;      ///< whole tokens left after this request
  std::int32_t retry_after_ms = 0; ///< when denied: until the next token; else 0
  bool redis_ok = false;           ///< true: Redis decided; false: the local bucket did
  bool budget_ok = true;           ///< false: the key's budget of the day is spent
  std::int64_t budget = 0;         ///< the budget used (the key's, or this node's share)
  std::int64_t spent = 0;          ///< the day's counter before this call
  std::int64_t reserved = 0;       ///< what this call reserved (in Redis when redis_ok)
};

/// A call admitted against a daily budget has ended (ratelimit_actor.hpp):
/// what it reserved, and what it spent.
struct budget_settlement {
  std::string key_id;
  std::int64_t day = 0;
  std::int64_t reserved = 0;
  std::int64_t actual = 0;  ///< prompt + completion tokens; 0 for a call that failed
  bool in_redis = false;    ///< the reservation was made in Redis (else on this node)
};

/// What a session actor ships to its new node when it migrates.
struct handoff_state {
  session_record session;
  std::vector<message_record> window;
};

/// Whether a session has an actor: "active" or "passive" in JSON and, so
/// that the cluster's messages stay as they were, on the wire (to_string).
enum class session_state : std::uint8_t { active, passive };

/// "active" or "passive".
const char* to_string(session_state s);
/// The state named `s`; false when `s` names none.
bool from_string(const std::string& s, session_state& out);

/// Where a session lives (`GET /admin/v1/sessions/{id}`).
struct session_location {
  std::string node;
  session_state state = session_state::passive;
};

// -- inspect -----------------------------------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, member_info& x) {
  return f(caf::meta::type_name("parley.member"), x.id, x.http, x.cluster, x.status,
           x.incarnation, x.sessions_active, x.membership, x.registry);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, handoff_state& x) {
  return f(caf::meta::type_name("parley.handoff"), x.session, x.window);
}

/// The state travels as its name ("active", "passive"), as it did when it
/// was a string.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, session_location& x) {
  std::string state = to_string(x.state);
  auto load = caf::meta::load_callback([&]() -> caf::error {
    if (!from_string(state, x.state))
      return caf::sec::invalid_argument;
    return caf::none;
  });
  return f(caf::meta::type_name("parley.location"), x.node, state, load);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_usage& x) {
  return f(caf::meta::type_name("parley.token_usage"), x.prompt_tokens, x.completion_tokens,
           x.total_tokens, x.known);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, usage_total& x) {
  return f(caf::meta::type_name("parley.usage_total"), x.user_id, x.day, x.model, x.requests,
           x.prompt_tokens, x.completion_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, message_record& x) {
  return f(caf::meta::type_name("parley.message"), x.seq, x.role, x.content, x.created_at,
           x.reply_to, x.model, x.client_message_id, x.usage, x.tokens, x.request_hash);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, session_record& x) {
  return f(caf::meta::type_name("parley.session"), x.id, x.user_id, x.created_at,
           x.system_prompt, x.model, x.metadata_json, x.message_count, x.last_seq, x.epoch,
           x.context_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, activation_record& x) {
  return f(caf::meta::type_name("parley.activation"), x.session, x.window);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, turn_write& x) {
  return f(caf::meta::type_name("parley.turn_write"), x.session_id, x.epoch, x.user, x.reply,
           x.before, x.options, x.user_id);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, api_key_record& x) {
  return f(caf::meta::type_name("parley.api_key"), x.id, x.user_id, x.prefix,
           x.token_budget_per_day, x.models, x.created_at, x.revoked);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, session_page& x) {
  return f(caf::meta::type_name("parley.session_page"), x.data, x.next_cursor);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, response_options& x) {
  return f(caf::meta::type_name("parley.response_options"), x.keep, x.instructions,
           x.metadata_json, x.call_options, x.input_before);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, response_record& x) {
  return f(caf::meta::type_name("parley.response_record"), x.turn, x.options);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, message_page& x) {
  return f(caf::meta::type_name("parley.message_page"), x.data, x.next_after);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, turn_request& x) {
  return f(caf::meta::type_name("parley.turn_request"), x.session_id, x.user_id, x.content,
           x.client_message_id, x.request_id, x.hops, x.sink, x.models, x.append, x.instructions,
           x.call_options, x.previous_seq, x.before,
           x.options, x.request_hash, x.model);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, turn_reply& x) {
  return f(caf::meta::type_name("parley.turn_reply"), x.user, x.reply, x.appended);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, response_ref& x) {
  return f(caf::meta::type_name("parley.response_ref"), x.session_id, x.user_id, x.seq);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fork_request& x) {
  return f(caf::meta::type_name("parley.fork_request"), x.new_id, x.source_id, x.user_id,
           x.upto_seq, x.created_at, x.idem_key);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, append_write& x) {
  return f(caf::meta::type_name("parley.append_write"), x.session_id, x.epoch, x.after_seq,
           x.messages);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, llm_message& x) {
  return f(caf::meta::type_name("parley.llm_message"), x.role, x.content);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, llm_request& x) {
  return f(caf::meta::type_name("parley.llm_request"), x.model, x.messages, x.raw_body,
           x.options);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, llm_result& x) {
  return f(caf::meta::type_name("parley.llm_result"), x.content, x.model, x.usage, x.raw,
           x.upstream_status);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, llm_attempt_done& x) {
  return f(caf::meta::type_name("parley.llm_attempt_done"), x.id, x.status, x.http_status, x.body,
           x.error, x.retry_after);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, adopt_request& x) {
  return f(caf::meta::type_name("parley.adopt_request"), x.session_id, x.epoch, x.last_seq);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, feedback_request& x) {
  return f(caf::meta::type_name("parley.feedback_request"), x.session_id, x.user_id, x.seq,
           x.rating, x.comment);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, make_key_request& x) {
  return f(caf::meta::type_name("parley.make_key_request"), x.key, x.hash);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_keys_request& x) {
  return f(caf::meta::type_name("parley.list_keys_request"), x.user, x.limit);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_sessions_request& x) {
  return f(caf::meta::type_name("parley.list_sessions_request"), x.user_id, x.limit, x.cursor);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_messages_request& x) {
  return f(caf::meta::type_name("parley.list_messages_request"), x.session_id, x.user_id, x.after,
           x.limit, x.descending);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, update_metadata_request& x) {
  return f(caf::meta::type_name("parley.update_metadata_request"), x.session_id, x.user_id,
           x.metadata_json);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rate_check_request& x) {
  return f(caf::meta::type_name("parley.rate_check_request"), x.key_id, x.rate_per_min,
           x.live_nodes, x.deadline_ns, x.budget, x.reserve, x.day);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, budget_settlement& x) {
  return f(caf::meta::type_name("parley.budget_settlement"), x.key_id, x.day, x.reserved,
           x.actual, x.in_redis);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, pin_request& x) {
  return f(caf::meta::type_name("parley.pin"), x.session, x.node, x.relay);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rate_decision& x) {
  return f(caf::meta::type_name("parley.rate_decision"), x.allowed, x.limit, x.remaining,
           x.retry_after_ms, x.redis_ok, x.budget_ok, x.budget, x.spent, x.reserved);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, client_id_hit& x) {
  return f(caf::meta::type_name("parley.client_id_hit"), x.found, x.user, x.has_reply, x.reply,
           x.gone, x.key_owner);
}

// -- errors ------------------------------------------------------------------

/// The CAF error category of Parley's errors.
constexpr caf::atom_value error_category = caf::atom("parley");

/// A caf::error carrying an API error code and a message for the client.
caf::error make_error(errc code, std::string message);

/// Translates any caf::error (ours, or CAF's own such as a request timeout)
/// back into an API error.
api_error to_api_error(const caf::error& e);

/// Registers every message type and the error category; call on each node.
void register_types(caf::actor_system_config& cfg);

/// Registers the ratelimit actor's messages alone (tests of the ratelimit
/// actor; register_types includes them).
void register_ratelimit_types(caf::actor_system_config& cfg);

} // namespace parley

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(parley::view_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(parley::relay_chunk)

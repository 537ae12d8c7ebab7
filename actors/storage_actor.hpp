#pragma once
// Storage actors: each owns one PostgreSQL connection (pg_store) and runs
// DETACHED, on its own thread, so that blocking libpqxx calls never stall the
// CAF scheduler.
//
/// Protocol: `storage_actor` below (every request answers a value or a
/// parley error); `session_store_actor` is the part a session actor uses.
///
/// Group commit: turn writes are not committed one by one. A write joins
/// the current batch and the actor sends itself `flush_atom`; because the
/// mailbox is FIFO, the flush runs after every write that arrived before it,
/// so all of them share one transaction and one COMMIT.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "runtime/telemetry/metrics.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

/// What a session actor asks of storage (session_actor.hpp): a narrow
/// interface, so a session can be driven against a fake store.
using session_store_actor = caf::typed_actor<
  /// Bumps the session's epoch and loads its last `window` messages; the
  /// activations that arrive together share one transaction.
  caf::replies_to<activate_atom, std::string, std::int32_t>::with<activation_record>,
  /// -> the new epoch, or 0 when the shipped state is outdated (the session
  /// then activates normally).
  caf::replies_to<adopt_atom, adopt_request>::with<std::int64_t>,
  /// (id, client_message_id or empty, seq, user or empty) -> the stored
  /// turn with that client id, if any; whether the response whose reply
  /// has that seq was deleted (client_id_hit::gone); with a user (the
  /// client id is an OpenAI Idempotency-Key) the session the user's key
  /// belongs to (client_id_hit::key_owner). Lookups that arrive together
  /// share one statement.
  caf::replies_to<find_cmid_atom, std::string, std::string, std::int64_t,
                  std::string>::with<client_id_hit>,
  /// One turn's user message and reply, committed with the writer's epoch
  /// (group commit, below).
  caf::replies_to<turn_write>::with<commit_outcome>,
  /// Messages appended without a model call (OpenAI's conversation items),
  /// fenced like a turn; committed at once, not in the group commit.
  caf::replies_to<append_atom, append_write>::with<commit_outcome>>;

/// The storage actor's whole protocol; a storage_actor handle converts to a
/// session_store_actor implicitly.
using storage_actor = session_store_actor::extend<
  /// (hash) -> the key with that hash; id 0: none.
  caf::replies_to<find_key_atom, std::string>::with<api_key_record>,
  /// -> the new key.
  caf::replies_to<make_key_atom, make_key_request>::with<api_key_record>,
  /// -> the keys asked for, newest first (no secrets: only hashes are stored).
  caf::replies_to<list_keys_atom, list_keys_request>::with<std::vector<api_key_record>>,
  /// (user, days) -> the user's daily totals of the last `days` UTC days,
  /// by day then model (`GET /v1/usage`).
  caf::replies_to<usage_of_atom, std::string, std::int32_t>::with<std::vector<usage_total>>,
  /// (limit) -> today's users with the most tokens (`model` empty), most first.
  caf::replies_to<top_usage_atom, std::int32_t>::with<std::vector<usage_total>>,
  /// (prefix_or_id) -> the number of keys revoked.
  caf::replies_to<revoke_atom, std::string>::with<std::int32_t>,
  caf::replies_to<new_sess_atom, session_record>::with<session_record>,
  /// A session with its first messages (seq 1.., in order) in one
  /// transaction: a conversation created with items.
  caf::replies_to<new_sess_atom, session_record, std::vector<message_record>>::with<session_record>,
  /// The same once per id (an Idempotency-Key's session), with the hash of
  /// the request: the session as stored when the same request made it,
  /// now or before; errc::conflict when another request took the id.
  caf::replies_to<new_sess_atom, session_record, std::vector<message_record>,
                  std::string>::with<session_record>,
  /// -> true when the fork exists now (made now, or by an earlier attempt
  /// with the same new id); false when the source is not the user's.
  caf::replies_to<fork_atom, fork_request>::with<bool>,
  /// -> the messages up to a stored response (its message and reply last),
  /// or not_found (none, deleted, another user's).
  caf::replies_to<get_resp_atom, response_ref>::with<response_record>,
  /// -> whether a response was deleted now.
  caf::replies_to<del_resp_atom, response_ref>::with<bool>,
  /// Creates the session unless one with its id exists (an idempotent
  /// retry): -> whether it exists now as the given user's.
  caf::replies_to<ensure_atom, session_record, std::string>::with<bool>,
  /// -> the session with its new metadata, or not_found (also another user's).
  caf::replies_to<set_meta_atom, update_metadata_request>::with<session_record>,
  /// (id, user) -> the session, or not_found (also another user's).
  caf::replies_to<get_sess_atom, std::string, std::string>::with<session_record>,
  /// (id) -> the session, whoever owns it, or not_found.
  caf::replies_to<get_sess_atom, std::string>::with<session_record>,
  /// -> one page of the user's sessions.
  caf::replies_to<list_sess_atom, list_sessions_request>::with<session_page>,
  /// (id, user) -> whether it was deleted.
  caf::replies_to<del_sess_atom, std::string, std::string>::with<bool>,
  /// -> one page of messages, or not_found (also another user's session);
  /// `next_after` is nonzero when more follow.
  caf::replies_to<list_msg_atom, list_messages_request>::with<message_page>,
  caf::replies_to<feedback_atom, feedback_request>::with<feedback_outcome>,
  /// -> whether PostgreSQL answers (the supervisor's readiness check).
  caf::replies_to<ping_atom>::with<bool>,
  /// Internal (sent to itself): commit the batch of turn writes.
  caf::reacts_to<flush_atom>,
  /// Internal: run the waiting activations in one transaction.
  caf::reacts_to<activate_flush_atom>,
  /// Internal: run the waiting client id lookups in one statement.
  caf::reacts_to<cmid_flush_atom>,
  /// Internal timer: check the connection while idle.
  caf::reacts_to<pg_tick_atom>,
  /// One gateway call's usage (fire and forget, through record_usage):
  /// summed per (user, day, model) and added to the daily totals at the
  /// next flush, at most usage_flush_interval later.
  caf::reacts_to<usage_atom, usage_total>,
  /// Internal timer: write the summed usage (one statement).
  caf::reacts_to<usage_flush_atom>>;

/// Gateway usage on its way to a storage actor, bounded: senders count a
/// record in before sending it (record_usage) and the storage actor counts
/// it out when it takes it from its mailbox; beyond `limit` records
/// waiting, new ones are dropped (parley_usage_dropped_total) instead of
/// growing the mailbox while PostgreSQL is slow.
struct usage_backlog {
  explicit usage_backlog(std::int64_t max) : limit(max) {}
  std::atomic<std::int64_t> queued{0};
  const std::int64_t limit;
};
using usage_backlog_ptr = std::shared_ptr<usage_backlog>;

/// How long gateway usage waits in a storage actor before it is written.
inline constexpr std::chrono::milliseconds usage_flush_interval{500};
/// Most (user, day, model) keys a storage actor sums between two flushes;
/// beyond, new keys are dropped (and counted).
inline constexpr std::size_t usage_max_keys = 10000;

/// Spawns one detached storage actor for `pg_url`; `pg_timeout` is
/// PARLEY_PG_TIMEOUT_MS (pg_store). It connects at once and keeps its
/// connection checked while idle (a closed one is replaced within a second,
/// a silent one within two seconds plus `pg_timeout`). A call that finds its
/// connection dead runs once more on a new one when nothing can have been
/// committed. While PostgreSQL refuses connections each call tries once (a
/// refusal is immediate); after an attempt that timed out (bounded by
/// `pg_timeout`), calls fail at once for a second.
/// `usage_shard` (storage::usage_shard_of) is the row of the daily usage
/// totals this actor's connection adds to; `backlog` the bound of gateway
/// usage sent to it (nullptr: none is).
storage_actor spawn_storage_actor(caf::actor_system& sys, const std::string& pg_url,
                               metrics_ptr metrics = nullptr,
                               std::chrono::milliseconds pg_timeout = std::chrono::milliseconds(5000),
                               int usage_shard = 0, usage_backlog_ptr backlog = nullptr);

/// The node's storage actors, as handles of interface `Handle`. A session's
/// writes always go to the same actor (so they stay ordered and batch
/// together); reads spread round robin.
/// Turn commits of every session go to the first actor and the client id
/// lookups before them to the second (the first with a pool of one): a
/// group commit's cost in PostgreSQL is mostly per statement, so one lane
/// that commits whatever arrived during the previous commit (turns of all
/// sessions) costs far less per turn than several lanes with a few turns
/// each, and the lookups batch the same way beside it. PostgreSQL's commit
/// latency, not the number of lanes, bounds the rate of turns: each commit
/// takes every turn that is ready.
///
/// Gateway usage goes to the last actor (for_usage), off the commit lane,
/// bounded by the pool's usage_backlog.
template <class Handle>
class actor_pool {
public:
  explicit actor_pool(std::vector<Handle> actors, usage_backlog_ptr backlog = nullptr)
    : actors_(std::move(actors)), backlog_(std::move(backlog)) {}

  /// The same actors seen through a narrower interface.
  template <class Other>
  explicit actor_pool(const actor_pool<Other>& other)
    : actors_(other.all().begin(), other.all().end()), backlog_(other.backlog()) {}

  const Handle& for_session(const std::string& session_id) const {
    return actors_[std::hash<std::string>{}(session_id) % actors_.size()];
  }
  const Handle& any() const {
    return actors_[next_.fetch_add(1, std::memory_order_relaxed) % actors_.size()];
  }
  const Handle& for_commits() const { return actors_.front(); }
  const Handle& for_lookups() const { return actors_[actors_.size() > 1 ? 1 : 0]; }
  const Handle& for_usage() const { return actors_.back(); }
  const std::vector<Handle>& all() const { return actors_; }
  /// Null when the pool takes no gateway usage.
  const usage_backlog_ptr& backlog() const { return backlog_; }

private:
  std::vector<Handle> actors_;
  usage_backlog_ptr backlog_;
  mutable std::atomic<std::size_t> next_{0};
};

using storage_pool = actor_pool<storage_actor>;
using storage_pool_ptr = std::shared_ptr<const storage_pool>;

/// One gateway call's usage, to `pool`'s usage actor, fire and forget: the
/// caller's (user, model) on today's UTC date. Dropped and counted
/// (parley_usage_dropped_total, `metrics` may be null) when the pool's
/// backlog is full or the pool has none. Any thread.
void record_usage(const storage_pool& pool, const std::string& user_id, const std::string& model,
                  const token_usage& usage, node_metrics* metrics);
/// What session actors hold: the same actors, as session stores.
using session_store_pool_ptr = std::shared_ptr<const actor_pool<session_store_actor>>;

} // namespace parley

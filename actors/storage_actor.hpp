#pragma once
// Storage actors: each owns one PostgreSQL connection (pg_store) and runs
// DETACHED, on its own thread, so that blocking libpqxx calls never stall the
// CAF scheduler.
//
/// Protocol (every request answers a value or a parley error):
///   (find_key_atom, hash)                     -> api_key_record (id 0: none)
///   (make_key_atom, user, hash, prefix)       -> api_key_record
///   (revoke_atom, prefix_or_id)               -> int32 matched
///   (new_sess_atom, session_record)           -> session_record
///   (get_sess_atom, id, user)                 -> session_record | not_found
///   (get_sess_atom, id)                       -> session_record | not_found (any user)
///   (adopt_atom, id, epoch, last_seq)         -> int64 new epoch (0: state outdated)
///   (list_sess_atom, user, limit, cursor)     -> session_page
///   (del_sess_atom, id, user)                 -> bool deleted
///   (activate_atom, id, window)               -> activation_record | not_found
///     (batched: the activations that arrive together share one transaction)
///   (list_msg_atom, id, user, after, limit)   -> message_page | not_found
///   (find_cmid_atom, id, client_message_id)   -> client_id_hit
///   (feedback_atom, id, user, seq, rating, comment, has_comment) -> feedback_outcome
///   (ping_atom)                               -> bool
///   turn_write                                -> commit_outcome
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

#include "actors/metrics.hpp"

namespace parley {

/// Spawns one detached storage actor for `pg_url`; `pg_timeout` is
/// PARLEY_PG_TIMEOUT_MS (pg_store). It connects at once and keeps its
/// connection checked while idle (a closed one is replaced within a second,
/// a silent one within two seconds plus `pg_timeout`). A call that finds its
/// connection dead runs once more on a new one when nothing can have been
/// committed. While PostgreSQL refuses connections each call tries once (a
/// refusal is immediate); after an attempt that timed out (bounded by
/// `pg_timeout`), calls fail at once for a second.
caf::actor spawn_storage_actor(caf::actor_system& sys, const std::string& pg_url,
                               metrics_ptr metrics = nullptr,
                               std::chrono::milliseconds pg_timeout = std::chrono::milliseconds(5000));

/// The node's storage actors. A session's writes always go to the same actor
/// (so they stay ordered and batch together); reads spread round robin.
/// Turn commits of every session go to the first actor and the client id
/// lookups before them to the second (the first with a pool of one): a
/// group commit's cost in PostgreSQL is mostly per statement, so one lane
/// that commits whatever arrived during the previous commit (turns of all
/// sessions) costs far less per turn than several lanes with a few turns
/// each, and the lookups batch the same way beside it. PostgreSQL's commit
/// latency, not the number of lanes, bounds the rate of turns: each commit
/// takes every turn that is ready.
class storage_pool {
public:
  explicit storage_pool(std::vector<caf::actor> actors) : actors_(std::move(actors)) {}

  const caf::actor& for_session(const std::string& session_id) const;
  const caf::actor& any() const;
  const caf::actor& for_commits() const { return actors_.front(); }
  const caf::actor& for_lookups() const { return actors_[actors_.size() > 1 ? 1 : 0]; }
  const std::vector<caf::actor>& all() const { return actors_; }

private:
  std::vector<caf::actor> actors_;
  mutable std::atomic<std::size_t> next_{0};
};

using storage_pool_ptr = std::shared_ptr<const storage_pool>;

} // namespace parley

#pragma once
// The session actor: one per active chat session, living on the session's
// owner node. Its queue is the session's turn order: one turn at a time, in
// arrival order, each turn's model call seeing every earlier turn.
//
/// Protocol:
///   turn_request               -> turn_reply | session_busy | not_found | conflict
///                                 | upstream_* | storage_unavailable | session_moved
///   (idle_atom, activity)      internal idle timer
///   (passivate_atom)           from the registry: no turn is on its way; quit
///                              (after a move: once the turns it relayed are answered)
///   (moved_atom)               from the predecessor on another node: the turns queued
///                              there are on their way; run the ones that came here
///                              straight after them
///   (gone_atom)                from the registry: the session was deleted; quit
///   (delta_atom, piece)        from the successor: a piece of a relayed streamed turn,
///                              on to its sink (the pieces of this actor's own turns go
///                              from the llm actor to the sink directly, under this
///                              actor's identity)
///   (cancel_atom)              from a streamed turn's sink: its client left and the node
///                              cancels on disconnect; on to the llm actor (or successor)
///
/// Life: spawned by the registry on the first turn, the actor activates by
/// bumping the session's epoch in PostgreSQL and loading its window. Every
/// commit carries that epoch, so once another activation happened (a
/// migration, a partition, a second node) this actor can never commit again:
/// it answers `session_moved` and asks the registry to let it go. After
/// PARLEY_SESSION_IDLE_SECONDS without a turn it asks the same (passivation).
/// A turn writes its user message and reply in one transaction after the
/// model answered, so a history never holds a user message without reply.
///
/// Migration: the running turn finishes and answers here first; then the
/// state goes to the target's registry, and every queued turn (and every
/// later arrival) is relayed to the successor as a request of this actor,
/// whose answer this actor passes on. So the old actor, and a node that is
/// stopping, stays until every turn it accepted is answered, and the
/// successor runs the relayed turns before those that reached it directly.

#include <chrono>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "runtime/telemetry/metrics.hpp"
#include "actors/storage_actor.hpp"

namespace parley {

struct session_config {
  std::size_t window = 20;      ///< PARLEY_CONTEXT_MESSAGES
  std::size_t queue_limit = 32; ///< turns waiting beyond the running one
  std::chrono::seconds idle{300};
  /// How long a turn waits for the llm actor: beyond llm_call_bound(), which
  /// covers every upstream's attempts (the fallback's after the primary's).
  std::chrono::milliseconds llm_call_timeout{250000};
  std::chrono::milliseconds storage_timeout{30000};
};

/// What every session actor of a node shares.
struct session_env {
  std::shared_ptr<const session_config> cfg;
  storage_pool_ptr storage;
  caf::actor llm;
  metrics_ptr metrics; ///< may be null (tests)
};

/// Spawns a session actor as a child of `registry`.
caf::actor spawn_session_actor(caf::event_based_actor* registry, std::string id,
                               const session_env& env);

} // namespace parley

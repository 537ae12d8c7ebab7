#pragma once
// The session actor: one per active chat session, living on the session's
// owner node. Its queue is the session's turn order: one turn at a time, in
// arrival order, each turn's model call seeing every earlier turn.
//
/// Protocol: `session_actor` below. It depends on narrow interfaces only
/// (session_store_actor, model_client_actor, session_registry_actor), so it
/// can be driven message by message against fakes.
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
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/llm_actor.hpp"
#include "runtime/telemetry/metrics.hpp"
#include "actors/storage_actor.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

/// What a session actor tells its registry (registry_actor.hpp extends it).
using session_registry_actor = caf::typed_actor<
  /// (id, turns received): no turn runs or waits; may this actor go? The
  /// registry answers with (passivate_atom) only when it forwarded exactly
  /// that many turns (passivation handshake, registry_actor.hpp).
  caf::reacts_to<idle_atom, std::string, std::uint64_t>,
  /// (id, target registry): the session moved there; route its turns there.
  caf::reacts_to<moved_atom, std::string, caf::actor>,
  /// (id): another actor holds the session now (a newer epoch fenced this
  /// one's write): route no more turns here; the next one starts a fresh
  /// actor that loads the session. Turns already on their way here are
  /// answered session_moved.
  caf::reacts_to<stale_atom, std::string>>;

/// The session actor's protocol. Handles of sessions travel as `caf::actor`
/// in its own messages (handoff, activate), cast back with
/// caf::actor_cast<session_actor>.
using session_actor = caf::typed_actor<
  /// A turn -> its reply once both messages are committed | session_busy |
  /// not_found | conflict | upstream_* | storage_unavailable | session_moved.
  /// From the registry, from the predecessor (relayed), or from the edge's
  /// stream sink chain; a streamed turn's pieces go to turn_request::sink.
  caf::replies_to<turn_request>::with<turn_reply>,
  /// From a streamed turn's sink: its client left and the node cancels on
  /// disconnect; on to the llm actor (or to the successor, for a relayed turn).
  caf::reacts_to<cancel_atom>,
  /// (piece) from the successor: a piece of a relayed streamed turn, on to
  /// its sink (the pieces of this actor's own turns go from the llm actor to
  /// the sink directly, under this actor's identity).
  caf::reacts_to<delta_atom, std::string>,
  /// (reply seq, model) from the successor: a relayed streamed turn's call started;
  /// on to its sink like a piece.
  caf::reacts_to<started_atom, std::int64_t, std::string>,
  /// From the predecessor on another node: the turns queued there are on
  /// their way; run the ones that came here straight after them. Also the
  /// actor's own timer, should the predecessor never say so.
  caf::reacts_to<moved_atom>,
  /// Internal idle timer (one at a time; actors/deadlines.hpp says why).
  caf::reacts_to<idle_atom>,
  /// Internal: the deadlines of its requests are due (actors/deadlines.hpp).
  caf::reacts_to<deadline_atom>,
  /// From the registry: no turn is on its way; quit (after a move: once the
  /// turns it relayed are answered).
  caf::reacts_to<passivate_atom>,
  /// From the registry: the session was deleted; fail the queue and quit.
  caf::reacts_to<gone_atom>,
  /// (target registry, node) -> node, once the session's state went there
  /// (the running turn finishes first) | session_moved | conflict.
  caf::replies_to<migrate_atom, caf::actor, std::string>::with<std::string>,
  /// From the target's registry: take over the shipped state -> this actor
  /// (as caf::actor), once active.
  caf::replies_to<handoff_atom, handoff_state>::with<caf::actor>,
  /// From the registry: become active -> this actor (as caf::actor) |
  /// session_moved | the activation's error.
  caf::replies_to<activate_atom>::with<caf::actor>>;

struct session_config {
  std::size_t window = 20;      ///< PARLEY_CONTEXT_MESSAGES
  std::int64_t context_tokens = 0; ///< PARLEY_CONTEXT_TOKENS (0: off); a session may set its own
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
  /// Activations go to for_session(id), turn commits to for_commits() and
  /// client id lookups to for_lookups() (storage_actor.hpp).
  session_store_pool_ptr storage;
  model_client_actor llm;
  metrics_ptr metrics; ///< may be null (tests)
};

/// Spawns a session actor linked to `parent` (the registry, whose handle is
/// `registry`): when the registry stops, its sessions stop too.
session_actor spawn_session_actor(caf::local_actor* parent, session_registry_actor registry,
                                  std::string id, const session_env& env);

} // namespace parley

#pragma once
// The session registry: one per node; finds or activates the session actor
// of each turn this node owns, forwards turns for sessions it does not own,
// moves sessions away when the cluster changes, and decides when one may
// passivate.
//
/// Protocol: `registry_actor` below (it extends session_registry_actor, what
/// its session actors tell it). Other nodes' registries travel as
/// `caf::actor` in member_info and are cast to registry_actor where used.
///
/// Passivation handshake: the registry counts the turns it forwarded to each
/// session actor; a session that asks to go reports how many it received.
/// Only when both agree is nothing in flight, and only then is the entry
/// removed and the actor told to quit. So no turn is ever sent to an actor
/// that is about to vanish. Migration uses the same rule: the old actor quits
/// only after the registry acknowledged its move and every turn it forwarded
/// to the new actor was answered.
///
/// Forwarding: a turn goes to the session's actor here if there is one, else
/// to the node a recent migration moved it to, else to its owner in this
/// node's view; a turn that this node owns only because another member is
/// leaving goes to that member first (straight from an edge only): it may
/// still run a turn of the session, which an activation here would fence. Views converge within a heartbeat; until they do, a turn may
/// take a second hop, and after two hops it is served where it is (epoch
/// fencing keeps that safe whatever the views say).

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/session_actor.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

using registry_actor = session_registry_actor::extend<
  /// A turn: delegated to the session actor here, or to the registry of the
  /// node that hosts the session (see Forwarding) -> the session's answer.
  caf::replies_to<turn_request>::with<turn_reply>,
  /// A new cluster view (from membership): sessions whose owner changed
  /// migrate to it.
  caf::reacts_to<view_atom, view_ptr>,
  /// Internal timer: retry the moves that failed.
  caf::reacts_to<beat_atom>,
  /// Internal: the deadlines of its requests are due (actors/deadlines.hpp).
  caf::reacts_to<deadline_atom>,
  /// (id, node) -> node: move a session there (admin).
  caf::replies_to<migrate_atom, std::string, std::string>::with<std::string>,
  /// From a migrating session actor on another node: take the session over
  /// -> the new session actor (as caf::actor).
  caf::replies_to<handoff_atom, handoff_state>::with<caf::actor>,
  /// (id) -> the session actor (as caf::actor), once active here.
  caf::replies_to<activate_atom, std::string>::with<caf::actor>,
  /// (id) -> where the session lives (`GET /admin/v1/sessions/{id}`).
  caf::replies_to<where_atom, std::string>::with<session_location>,
  /// (id) the session was deleted (from an edge): its actor quits.
  caf::reacts_to<gone_atom, std::string>,
  /// -> active session actors, with those that moved away but still relay
  /// turns (a drain waits for them).
  caf::replies_to<count_atom>::with<std::uint64_t>>;

registry_actor spawn_registry_actor(caf::actor_system& sys, const session_env& env,
                                std::string node_id);

} // namespace parley

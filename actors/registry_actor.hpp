#pragma once
// The session registry: one per node; finds or activates the session actor
// of each turn this node owns, forwards turns for sessions it does not own,
// moves sessions away when the cluster changes, and decides when one may
// passivate.
//
/// Protocol:
///   turn_request                  -> delegated to the session actor, or to the
///                                    registry of the node that hosts it
///   (view_atom, view_ptr)         a new cluster view: sessions whose owner
///                                 changed migrate to it
///   (migrate_atom, id, node)      -> string node: move a session (admin)
///   (handoff_atom, handoff_state) -> actor: take over a migrating session
///   (activate_atom, id)           -> actor: make a session active here
///   (moved_atom, id, registry)    from a session actor that shipped itself
///   (where_atom, id)              -> session_location
///   (idle_atom, id, received)     from a session asking to go
///   (gone_atom, id)               the session was deleted
///   (count_atom)                  -> uint64 active session actors, with those that
///                                    moved away but still relay turns (a drain waits)
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

#include "actors/session_actor.hpp"

namespace parley {

caf::actor spawn_registry_actor(caf::actor_system& sys, const session_env& env,
                                std::string node_id);

} // namespace parley

#pragma once
// The session registry: one per node; finds or activates the session actor
// of each turn that this node owns, and decides when one may passivate.
//
/// Protocol:
///   turn_request                        -> delegated to the session actor
///   (idle_atom, id, received)           from a session asking to go
///   (gone_atom, id)                     the session was deleted
///   (count_atom)                        -> uint64 active session actors
///
/// Passivation handshake: the registry counts the turns it forwarded to each
/// session actor; a session that asks to go reports how many it received.
/// Only when both agree is nothing in flight, and only then is the entry
/// removed and the actor told to quit. So no turn is ever sent to an actor
/// that is about to vanish.

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/session_actor.hpp"

namespace parley {

caf::actor spawn_registry_actor(caf::actor_system& sys, const session_env& env);

} // namespace parley

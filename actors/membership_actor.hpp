#pragma once
// Membership: one per node, published on the cluster port (CAF middleman).
// It keeps this node's view of the members (up, leaving, down), joins the
// cluster through the seeds, and tells its subscribers (edge, registry) of
// every change with a fresh immutable cluster_view.
//
/// Protocol:
///   (hello_atom, member_info, vector<member_info>) -> vector<member_info>
///                                     a peer introduces itself and its view
///   (heartbeat_atom, member_info)     a peer is alive (status, load)
///   (view_atom, actor subscriber)     subscribe; the current view is sent at once
///                                     as (view_atom, view_ptr)
///   (pin_atom, session, node, relay)  a migration pinned a session to a node
///   (drain_atom)                      this node is leaving: status "leaving"
///   (drain_atom, node)                -> bool: tell `node` to leave (false: unknown)
///   (cluster_atom)                    -> (uint64 view version, vector<member_info>),
///                                     this node first; the version moves on every
///                                     change of membership (and pin)
///   (stats_atom)                      -> string: this node's figures (JSON object)
///   (stats_atom, cluster_atom)        -> map<node id, string>: the figures of this
///                                     node and of every member not down that
///                                     answers within stats_timeout
///
/// Failure detection: each member monitors the others' membership actors, so
/// a killed process (its TCP connection closes) is down within milliseconds;
/// a silent one (hung, partitioned) misses its heartbeats and is declared
/// down after PARLEY_FAILURE_DETECT_MS. CAF's own middleman heartbeat (set up
/// by the runtime on every node) closes such connections on the same bound.
/// Dials go through `connector`, so under mutual TLS (runtime/node.cpp) only
/// peers with a certificate from the cluster's CA are reached, as only they
/// are admitted. Down members and unreached seeds are dialled again every
/// second, so a healed partition or a restarted node joins back without
/// help. A member down for max(5 min, 100 x PARLEY_FAILURE_DETECT_MS) is
/// forgotten (scale-in).
///
/// The actor is detached (its own thread): its timers must not wait behind
/// a busy scheduler, or heavy load would look like a dead node.

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/io/middleman_actor.hpp>

#include "actors/messages.hpp"

namespace parley {

struct membership_config {
  member_info self; ///< id, http, cluster and incarnation; handles are filled in
  std::vector<std::string> seeds; ///< "host:port" cluster addresses
  std::chrono::milliseconds failure_detect{3000};
  caf::actor registry; ///< asked for this node's active session count
  std::function<std::string()> local_stats; ///< this node's figures as JSON
  std::chrono::milliseconds stats_timeout{1000};
  /// Dials the seeds and members: the middleman actor that speaks the
  /// cluster port's protocol (CAF's OpenSSL manager's under mutual TLS);
  /// none: the plain middleman's.
  caf::io::middleman_actor connector;
};

caf::actor spawn_membership_actor(caf::actor_system& sys, membership_config cfg);

} // namespace parley

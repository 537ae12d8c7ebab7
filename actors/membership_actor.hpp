#pragma once
// Membership: one per node, published on the cluster port (CAF middleman).
// It keeps this node's view of the members (up, leaving, down), joins the
// cluster through the seeds, and tells its subscribers (edge, registry) of
// every change with a fresh immutable cluster_view.
//
/// Protocol: `membership_actor` below. Peers' membership actors travel as
/// `caf::actor` in member_info (they come from the wire) and are cast to
/// membership_actor where used.
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
#include <map>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/io/middleman_actor.hpp>

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/vocabulary.hpp"

namespace parley {

/// What the membership actor tells its subscribers (the edge and the
/// registry, whose interfaces include it): node-local, never on the wire.
using view_subscriber_actor = caf::typed_actor<
  /// The cluster changed: route with this view.
  caf::reacts_to<view_atom, view_ptr>>;

using membership_actor = caf::typed_actor<
  /// (peer, its view) -> this node's view (this node first): a peer
  /// introduces itself.
  caf::replies_to<hello_atom, member_info, std::vector<member_info>>::with<
    std::vector<member_info>>,
  /// (peer) a peer is alive (status, load).
  caf::reacts_to<heartbeat_atom, member_info>,
  /// Internal timer: heartbeats, failure detection, dials.
  caf::reacts_to<beat_atom>,
  /// (subscriber) subscribe; the current view is sent at once, and every
  /// later one, as (view_atom, view_ptr).
  caf::reacts_to<view_atom, view_subscriber_actor>,
  /// A migration pinned a session to a node (relayed to every member once).
  caf::reacts_to<pin_atom, pin_request>,
  /// (cluster addresses) the members Redis knows of (discovery_actor.hpp):
  /// dialled like seeds until reached; an empty list when Redis is away.
  caf::reacts_to<discovered_atom, std::vector<std::string>>,
  /// This node is leaving: status "leaving".
  caf::reacts_to<drain_atom>,
  /// (node) -> tell `node` to leave (false: unknown or down).
  caf::replies_to<drain_atom, std::string>::with<bool>,
  /// -> (view version, members, this node first); the version moves on
  /// every change of membership (and pin).
  caf::replies_to<cluster_atom>::with<std::uint64_t, std::vector<member_info>>,
  /// -> this node's figures (a JSON object).
  caf::replies_to<stats_atom>::with<std::string>,
  /// -> node id -> figures, of this node and of every member not down that
  /// answers within stats_timeout.
  caf::replies_to<stats_atom, cluster_atom>::with<std::map<std::string, std::string>>>;

struct membership_config {
  member_info self; ///< id, http, cluster and incarnation; handles are filled in
  std::vector<std::string> seeds; ///< "host:port" cluster addresses
  /// A discovery actor reports members (discovery_actor.hpp): the node has
  /// joined only once its first report's addresses were dialled.
  bool discovery = false;
  std::chrono::milliseconds failure_detect{3000};
  /// This node's registry (registry_actor), asked for its active session
  /// count (count_atom) and published in member_info.
  caf::actor registry;
  std::function<std::string()> local_stats; ///< this node's figures as JSON
  std::chrono::milliseconds stats_timeout{1000};
  /// Dials the seeds and members: the middleman actor that speaks the
  /// cluster port's protocol (CAF's OpenSSL manager's under mutual TLS);
  /// none: the plain middleman's.
  caf::io::middleman_actor connector;
};

membership_actor spawn_membership_actor(caf::actor_system& sys, membership_config cfg);

} // namespace parley

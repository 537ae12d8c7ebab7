#pragma once
// The discovery actor: nodes of one cluster find each other through Redis,
// so that a node started later joins with no change to anyone's settings
// (PARLEY_SEEDS may stay empty; seeds and Redis may be combined).
//
/// Protocol: `discovery_actor` below. It runs DETACHED and owns one blocking
/// redis_client; once per `interval` it registers this node's cluster
/// address in the cluster's membership set for `ttl` and reads every other
/// entry in the same round trip (redis_client::announce_member), then tells
/// the membership actor (discovered_atom, addresses), which dials those it
/// has not reached. When Redis cannot be reached it sends an empty list:
/// the members already known stay (heartbeats keep them), a new node without
/// a seed runs alone until Redis is back, and nobody waits on Redis for
/// longer than one bounded call. On an exit message it removes its entry,
/// so a stopped node is not dialled again; a killed one expires after `ttl`.
///
/// Cost: one Lua call per node per interval, O(n) in its answer; see
/// docs/operations.md (cluster size) for where that stops being small.

#include <chrono>
#include <string>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/membership_actor.hpp"

namespace parley {

using discovery_actor = caf::typed_actor<
  /// Internal timer: register and read once.
  caf::reacts_to<beat_atom>>;

struct discovery_config {
  std::string redis_url; ///< PARLEY_REDIS_URL (required)
  /// The membership set: one per cluster (discovery_key), so clusters with
  /// separate databases sharing one Redis never meet.
  std::string key;
  std::string entry; ///< this node's cluster address, as peers dial it
  std::chrono::milliseconds interval{1000};
  std::chrono::milliseconds ttl{10000};
  membership_actor membership;
};

/// The Redis key of a cluster's membership set; `cluster` names the cluster
/// (storage::pg_store::cluster_identity: one per database).
std::string discovery_key(const std::string& cluster);

/// Spawns the discovery actor (detached). Throws std::invalid_argument on a
/// bad URL. Does not connect yet.
discovery_actor spawn_discovery_actor(caf::actor_system& sys, discovery_config cfg);

} // namespace parley

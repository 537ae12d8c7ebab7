#pragma once
// The ratelimit actor: chat requests per API key per minute, and tokens per
// API key per UTC day, cluster-wide through one token bucket and one budget
// counter per key in Redis (one script, one round trip per request), per
// node while Redis is away.
// It runs DETACHED and owns one blocking redis_client, so Redis never stalls
// the CAF scheduler. One per node; node-local (deadlines are steady-clock).
//
/// Protocol: `ratelimit_actor` below; the revocation listener's is
/// `revocation_listener_actor`.
///
/// Rate checks: rate_per_min <= 0 means "off" (allowed, nothing counted).
/// Otherwise the bucket `key_prefix + key_id` in Redis decides (capacity =
/// rate, refill rate/60 per second; redis_ok = true). The local bucket
/// decides instead, at once (redis_ok = false, limit = rate / live_nodes, at
/// least 1), when no Redis is configured, when Redis failed recently and is
/// in its reconnect backoff, when `deadline_ns` (see rate_check_deadline) has
/// passed by the time the request is dequeued, or when the Redis call fails.
/// When Redis is back, the next call after the backoff uses it again.
///
/// Budgets (runtime/rules/token_budget.hpp): a request with `budget` > 0 is
/// also checked against its key's counter of `day` (tokens spent, plus the
/// reservations of calls still running): at or over the budget it is
/// refused (budget_ok = false, no rate token taken); else, when the bucket
/// allows too, it reserves min(reserve, budget - spent). In Redis the
/// counter is `key_prefix + "budget:" + key_id + ":" + day`, shared by the
/// cluster, expiring an hour after its day; the local decision uses this
/// node's counter against budget / live_nodes (node_budget_share).
///
/// Settlements: (settle_atom, budget_settlement) is fire and forget, sent
/// when an admitted call ended (actual 0 when it failed: a refund); the
/// edge queues them in the budget ledger instead and sends settle_batch_atom
/// when the queue was empty, so a busy node sends one message per batch
/// (budget_ledger.hpp). The spend goes on this node's counter at once, and into a map of pending
/// Redis deltas (per counter, at most `max_pending` counters; beyond, a
/// delta is lost to Redis and kept here only). The next rate check carries
/// up to 64 of them in its own script call; a flush `settle_delay` after the
/// first pending one sends what no check carried (one call, off every
/// request's path, at most one per delay), and while Redis is away retries
/// every reconnect backoff. A node's spend during an outage thus reaches
/// Redis when it is back.
///
/// Batches: checks that need Redis are gathered, and all those that came
/// before the actor got to them are decided in one script call (at most
/// `max_batch` per call): a busy node makes one round trip per batch, not
/// per request, and a lone request waits for nothing but its own call. The
/// script decides a batch's requests in order, as if they came one by one.
///
/// Leases: a check with a budget and no rate limit (nothing else needs Redis
/// per request) is decided from its key's lease when the lease holds its
/// reservation (by the edge itself, through the budget ledger, without
/// sending the check here at all): tokens of the key's day reserved in Redis for this node by
/// an earlier check, which reserved lease_calls times its own reservation
/// instead of one (but at most a quarter of what was left of the budget per
/// live node, and at least its own). A node thus asks Redis about once per
/// lease_calls budget-only calls of a key; calls settle as any reservation
/// made in Redis. A lease not used for lease_idle, or of a past day, is
/// given back (a negative settlement); so are all of them when the actor
/// exits (one last script call). The cost: other nodes see a lease as
/// spent, so near the end of a budget a check may be refused while other
/// nodes still hold leases (each at most a quarter of what was left per
/// node, shrinking to one call's reservation), until they use them or give
/// them back within lease_idle; a node killed without stopping leaves its
/// leases counted until the day ends.
///
/// Latency and backlog: the actor handles one message at a time. A Redis call
/// blocks it for at most `command_timeout` (50 ms); a reconnect attempt for
/// at most `connect_timeout` + `command_timeout`, and only once per
/// `reconnect_backoff`, since any failure starts a backoff during which
/// nothing touches the network. Requests that queue up meanwhile and whose
/// deadline passes are answered from the local bucket in microseconds, so
/// a backlog drains at memory speed: no request waits much longer than its
/// own deadline plus one Redis call in progress. Callers therefore MUST pass
/// a short deadline (rate_check_deadline(40ms), say) and use a request
/// timeout a little above it, falling back on their own side if it fires.
/// Note that an answer the caller no longer waits for still took a token.
///
/// redis_status: answers from the last operation; when that is older than
/// `status_max_age` and no backoff is running, it PINGs first (bounded as
/// above), so an idle node still notices Redis coming and going.
///
/// Revocations: publish_revoked is fire and forget and silently dropped
/// while Redis is away; it only shortens the time until other nodes notice a
/// revoked key, which their key cache expiry bounds anyway.
///
/// The revocation listener (spawn_revocation_listener) sends its target
///   (key_revoked_atom, payload)
/// for each message published on `revoked_channel`.
///
/// Both actors keep running until they receive an exit message
/// (caf::anon_send_exit): send one before the actor system shuts down. The
/// listener also quits when its target terminates.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/budget_ledger.hpp"
#include "actors/vocabulary.hpp"
#include "storage/redis_client.hpp"

namespace parley {

// -- interfaces --------------------------------------------------------------

using ratelimit_actor = caf::typed_actor<
  /// -> the decision (Rate checks, above).
  caf::replies_to<rate_check_atom, rate_check_request>::with<rate_decision>,
  /// -> whether the last Redis operation succeeded.
  caf::replies_to<redis_status_atom>::with<bool>,
  /// A finished call's spend (Settlements, above); no answer.
  caf::reacts_to<settle_atom, budget_settlement>,
  /// Settlements wait in the budget ledger (Settlements, above); no answer.
  caf::reacts_to<settle_batch_atom>,
  /// Internal: send the pending settlements to Redis.
  caf::reacts_to<budget_flush_atom>,
  /// Internal: decide the gathered rate checks (Batches, above).
  caf::reacts_to<rate_flush_atom>,
  /// Internal: give back leases not used since the last sweep (Leases).
  caf::reacts_to<lease_sweep_atom>,
  /// (payload) PUBLISH on `revoked_channel`; no answer.
  caf::reacts_to<publish_revoked_atom, std::string>>;

/// What the revocation listener tells its target (the edge, whose interface
/// includes it): node-local.
using revocation_target_actor = caf::typed_actor<
  /// (payload) a key id or prefix published on `revoked_channel`.
  caf::reacts_to<key_revoked_atom, std::string>>;

/// The revocation listener only ever talks to itself (its read loop); it
/// sends its target (key_revoked_atom, std::string).
using revocation_listener_actor = caf::typed_actor<
  /// Internal: one bounded read of the subscription.
  caf::reacts_to<listen_atom>>;

// -- actors ------------------------------------------------------------------

/// The Redis channel that carries revoked key ids or prefixes.
inline constexpr const char* revoked_channel = "parley:revoked";

struct ratelimit_config {
  std::string redis_url; ///< PARLEY_REDIS_URL; empty: no Redis, local buckets only
  storage::redis_options redis;
  std::string key_prefix = "parley:rl:"; ///< Redis key of a bucket: prefix + key_id
  std::size_t max_local_keys = 100000;   ///< keys the local bucket and budget remember
  std::size_t max_pending = 10000;       ///< budget counters with settlements not yet in Redis
  /// The longest a settlement waits for a rate check to carry it to Redis
  /// before a flush of its own sends it.
  std::chrono::milliseconds settle_delay{10};
  std::chrono::milliseconds status_max_age{1000};
  /// The most rate checks one script call decides.
  std::size_t max_batch = 128;
  /// A budget lease holds the reservations of this many calls (Leases);
  /// 0: no leases, every budget check asks Redis.
  std::int64_t lease_calls = 64;
  /// A lease not used for this long is given back to Redis.
  std::chrono::milliseconds lease_idle{1000};
  /// Shared with the edge: leases and queued settlements. Null: the actor
  /// makes its own (nobody else takes leases or queues settlements).
  std::shared_ptr<budget_ledger> ledger;
};

/// The deadline argument of a rate check: `budget` from now, in nanoseconds
/// of std::chrono::steady_clock. Meaningful on this host only.
std::int64_t rate_check_deadline(std::chrono::nanoseconds budget);

/// Spawns the node's ratelimit actor (detached). Throws std::invalid_argument
/// when cfg.redis_url is set but malformed. Does not connect yet.
ratelimit_actor spawn_ratelimit_actor(caf::actor_system& sys, ratelimit_config cfg);

/// Spawns a detached actor that SUBSCRIBEs to `revoked_channel` and forwards
/// each payload to `target`, reconnecting forever (with the backoff of
/// `opts`) and re-subscribing after each reconnect. It checks its mailbox
/// between reads of at most `read_timeout`, so an exit message stops it
/// within about that time. Throws std::invalid_argument on a bad URL.
revocation_listener_actor
spawn_revocation_listener(caf::actor_system& sys, const std::string& redis_url,
                          revocation_target_actor target,
                          storage::redis_options opts = {},
                          std::chrono::milliseconds read_timeout = std::chrono::milliseconds{200});

} // namespace parley

#pragma once
// The per-node token bucket: Parley's rate limit while Redis cannot be
// reached. Same rule as the cluster-wide bucket in Redis
// (storage/redis_client.cpp): capacity = limit (burst = rate), refilled at
// limit/60 tokens per second. The limit is this node's share of the key's
// rate, so that the nodes together stay within it. Pure: time is an
// argument, so tests need no sleeps.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>

namespace parley {

/// One rate limit decision.
struct bucket_verdict {
  bool allowed = false;
  std::int32_t limit = 0;          ///< the capacity the decision used
  std::int32_t remaining = 0;      ///< whole tokens left after this request
  std::int32_t retry_after_ms = 0; ///< when denied: until one token exists; else 0
};

/// A node's share of a cluster-wide rate: rate / live_nodes rounded down, so
/// that the shares never add up to more than the rate, but at least 1.
/// live_nodes below 1 counts as 1.
std::int32_t node_share(std::int32_t rate_per_min, std::int32_t live_nodes);

/// Token buckets per API key, in memory. Not thread-safe: one owner (the
/// ratelimit actor).
class local_bucket {
public:
  using clock = std::chrono::steady_clock;

  /// Remembers at most `max_keys` keys (at least 1). A new key beyond that
  /// evicts the least recently used one, whose next request then starts with
  /// a full bucket; with a generous bound only long-idle keys go, and for
  /// those a full bucket is what they would have anyway.
  explicit local_bucket(std::size_t max_keys = 100000);

  /// Takes one token from `key`'s bucket for a request at `now`, with
  /// capacity node_share(rate_per_min, live_nodes). A rate of 0 or less means
  /// "no limit": allowed, nothing tracked. `now` should come from one
  /// monotonic clock; a time before the key's last request refills nothing.
  bucket_verdict take(const std::string& key, std::int32_t rate_per_min, std::int32_t live_nodes,
                      clock::time_point now);

  /// Gives back the token a take() for `key` took (same rate and nodes),
  /// up to the bucket's capacity: what it paid for turned out free (the
  /// auth throttle takes before a lookup and gives back when the key was
  /// valid). Nothing when `key` is not tracked.
  void give_back(const std::string& key, std::int32_t rate_per_min, std::int32_t live_nodes);

  /// Keys currently tracked.
  std::size_t size() const { return buckets_.size(); }

private:
  struct bucket {
    double tokens;
    clock::time_point at;
    std::list<std::string>::iterator lru;
  };

  std::size_t max_keys_;
  std::unordered_map<std::string, bucket> buckets_;
  std::list<std::string> lru_; ///< front: most recently used
};

} // namespace parley

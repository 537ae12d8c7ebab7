#include "runtime/rules/local_bucket.hpp"

#include <algorithm>
#include <cmath>

namespace parley {

namespace {

// Refills are sums of small fractions; without a little slack a bucket that
// holds exactly one token can read as 0.99999999999.
constexpr double epsilon = 1e-9;

} // namespace

std::int32_t node_share(std::int32_t rate_per_min, std::int32_t live_nodes) {
  return std::max<std::int32_t>(1, rate_per_min / std::max<std::int32_t>(1, live_nodes));
}

local_bucket::local_bucket(std::size_t max_keys) : max_keys_(std::max<std::size_t>(1, max_keys)) {}

bucket_verdict local_bucket::take(const std::string& key, std::int32_t rate_per_min,
                                  std::int32_t live_nodes, clock::time_point now) {
  if (rate_per_min <= 0)
    return {true, 0, 0, 0};
  auto limit = node_share(rate_per_min, live_nodes);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      buckets_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    it = buckets_.emplace(key, bucket{static_cast<double>(limit), now, lru_.begin()}).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }

  auto& b = it->second;
  double per_ms = limit / 60000.0;
  if (now > b.at) {
    std::chrono::duration<double, std::milli> idle = now - b.at;
    b.tokens += idle.count() * per_ms;
    b.at = now;
  }
  // Also clamps a bucket filled under a larger share (a node left, then came back).
  b.tokens = std::min<double>(b.tokens, limit);

  bucket_verdict v;
  v.limit = limit;
  if (b.tokens + epsilon >= 1) {
    b.tokens = std::max(0.0, b.tokens - 1);
    v.allowed = true;
  } else {
    v.retry_after_ms = static_cast<std::int32_t>(std::ceil((1 - b.tokens) / per_ms));
  }
  v.remaining = static_cast<std::int32_t>(std::floor(b.tokens + epsilon));
  return v;
}

void local_bucket::give_back(const std::string& key, std::int32_t rate_per_min,
                             std::int32_t live_nodes) {
  if (rate_per_min <= 0)
    return;
  if (auto it = buckets_.find(key); it != buckets_.end())
    it->second.tokens =
      std::min<double>(it->second.tokens + 1, node_share(rate_per_min, live_nodes));
}

} // namespace parley

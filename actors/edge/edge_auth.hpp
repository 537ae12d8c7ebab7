#pragma once
// The edge's memory of API keys (used by edge_auth.cpp): keys seen valid
// and seen unknown for a short while, lookups under way with the requests
// waiting for them, and a per-address budget for lookups of unseen keys.
// Owned by the edge actor; not thread-safe.

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/fwd.hpp>

#include "runtime/rules/local_bucket.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

struct key_cache {
  using clock = std::chrono::steady_clock;
  /// Bound of each table (and of the per-address buckets).
  static constexpr std::size_t limit = 100000;

  /// A request waiting for a key lookup: called with the record (id 0:
  /// unknown) or with the error of the lookup.
  using waiter = std::function<void(const api_key_record*, const caf::error*)>;

  struct entry {
    api_key_record rec;
    clock::time_point expires;
  };

  std::unordered_map<std::string, entry> valid; ///< by key hash
  /// Hashes of tokens storage did not know, until their expiry: a client
  /// repeating a bad token costs no query on the connections that commit
  /// turns. Bounded like `valid`.
  std::unordered_map<std::string, clock::time_point> unknown;
  /// Per client address: lookups of keys not in `valid`, which random keys
  /// are (the negative cache cannot stop those). Its LRU bound keeps the
  /// table small under a flood from many addresses.
  local_bucket lookups_by_peer{limit};
  /// Key lookups under way, by key hash: the requests waiting for each.
  /// At most one entry per request in flight.
  std::unordered_map<std::string, std::vector<waiter>> pending;

  /// Drops a revoked key (by prefix or id).
  void forget(const std::string& prefix_or_id);
};

} // namespace parley

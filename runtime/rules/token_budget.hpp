#pragma once
// Daily token budgets per API key (API.md sections 1 to 4): the UTC day and
// the time to its end, the budget a key lives by, what a call reserves
// before it runs, the admission rule, and the per-node budget counters used
// while Redis cannot be reached. Pure: time is an argument. The same
// admission rule runs in Redis (storage/redis_client.cpp's script) for the
// cluster-wide counters; operations.md says what a burst can overshoot.

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>

namespace parley {

/// The UTC day of `unix_seconds`: days since 1970-01-01 (floor, so times
/// before 1970 fall on negative days).
std::int64_t utc_day(std::int64_t unix_seconds);

/// Seconds from `unix_seconds` to the next UTC midnight: 1..86400 (86400 at
/// midnight itself). The `Retry-After` of `429 budget_exceeded`.
std::int64_t seconds_to_next_utc_day(std::int64_t unix_seconds);

/// The budget a key lives by: its own `token_budget_per_day` when it has one
/// (>= 0), else the node's PARLEY_TOKEN_BUDGET_PER_DAY. 0: unlimited.
std::int64_t effective_budget(std::int64_t key_budget, std::int64_t node_default);

/// A node's share of a key's daily budget while Redis is away: budget /
/// live_nodes rounded down, at least 1 (live_nodes below 1 counts as 1).
/// A budget of 0 (unlimited) stays 0.
std::int64_t node_budget_share(std::int64_t budget, std::int32_t live_nodes);

/// Completion tokens reserved for a call that names no max_tokens nor
/// max_completion_tokens.
inline constexpr std::int64_t default_completion_allowance = 1024;

/// What a call reserves before it runs: its prompt's estimate plus the
/// completion it may produce (`max_completion` when the request names one,
/// else default_completion_allowance). Negative inputs count as 0.
std::int64_t budget_reservation(std::int64_t prompt_estimate,
                                std::optional<std::int64_t> max_completion);

/// One budget decision.
struct budget_verdict {
  bool allowed = true;
  std::int64_t spent = 0;    ///< the day's counter before this call (spent + reserved)
  std::int64_t reserved = 0; ///< what this call reserved
};

/// The admission rule: with a budget (> 0), a counter at or over it refuses;
/// otherwise the call is admitted and reserves min(reserve, budget - spent),
/// so the calls running at once never reserve more than the budget.
/// budget <= 0: admitted, nothing reserved.
budget_verdict admit_budget(std::int64_t spent, std::int64_t budget, std::int64_t reserve);

/// Per-key counters of one UTC day each, in memory: this node's spend (and
/// its running calls' reservations), which decides alone while Redis is
/// away. Not thread-safe: one owner (the ratelimit actor).
class local_budget {
public:
  /// Remembers at most `max_keys` keys (at least 1); a new key beyond that
  /// evicts the least recently used one, whose spend this node then forgets.
  explicit local_budget(std::size_t max_keys = 100000);

  /// admit_budget() against `key`'s counter of `day` with budget `share`
  /// (node_budget_share), adding what it reserves.
  budget_verdict reserve(const std::string& key, std::int64_t day, std::int64_t share,
                         std::int64_t reserve);

  /// Adds `delta` (a call's spend less its reservation here; negative: a
  /// refund) to `key`'s counter of `day`; a counter of an earlier day starts
  /// again from 0, a delta for a day before the counter's is dropped, and a
  /// counter never goes below 0.
  void add(const std::string& key, std::int64_t day, std::int64_t delta);

  /// `key`'s counter of `day` (0 when none).
  std::int64_t spent(const std::string& key, std::int64_t day) const;

  std::size_t size() const { return counters_.size(); }

private:
  struct counter {
    std::int64_t day = 0;
    std::int64_t spent = 0;
    std::list<std::string>::iterator lru;
  };
  counter& touch(const std::string& key, std::int64_t day);

  std::size_t max_keys_;
  std::unordered_map<std::string, counter> counters_;
  std::list<std::string> lru_; ///< front: most recently used
};

} // namespace parley

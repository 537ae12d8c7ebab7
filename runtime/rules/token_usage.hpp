#pragma once
// Token accounting: Parley's estimate of a model call's usage (the built-in
// echo model reports it; API.md section 4) and the per-user daily totals
// that gateway calls add up to before they are written. Pure, tested without
// actors.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "runtime/rules/context_window.hpp" // llm_message
#include "storage/records.hpp"

namespace parley {

/// A model call's usage by the same estimate: `prompt_tokens` over the
/// messages sent (the system prompt included), `completion_tokens` over the
/// reply as one message, `total_tokens` their sum; `known` is true.
token_usage estimate_usage(const std::vector<llm_message>& sent, std::string_view reply);

/// Usage of model calls summed per (user, UTC day, model), at most
/// `max_keys` distinct keys: what a writer collects between two flushes of
/// the daily totals, so that one statement writes each key once however
/// many calls it saw. Not thread-safe.
class usage_tally {
public:
  explicit usage_tally(std::size_t max_keys) : max_keys_(max_keys) {}

  /// Adds `calls` model calls with `usage` (unknown usage adds only the
  /// calls). False, and nothing added, when the key is new and the tally
  /// already holds max_keys keys.
  bool add(const std::string& user, const std::string& day, const std::string& model,
           const token_usage& usage, std::int64_t calls = 1);
  /// Adds a whole row (e.g. one whose write failed, to try again); false as
  /// add().
  bool add(const usage_total& row);
  /// The sums, one row per key (sorted by user, day, model), and empties
  /// the tally.
  std::vector<usage_total> take();

  std::size_t keys() const { return sums_.size(); }
  bool empty() const { return sums_.empty(); }

private:
  struct sum {
    std::int64_t requests = 0;
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
  };
  std::size_t max_keys_;
  std::map<std::tuple<std::string, std::string, std::string>, sum> sums_;
};

} // namespace parley

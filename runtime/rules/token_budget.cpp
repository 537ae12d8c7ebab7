#include "runtime/rules/token_budget.hpp"

#include <algorithm>

namespace parley {

namespace {

constexpr std::int64_t seconds_per_day = 86400;

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  auto q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

} // namespace

std::int64_t utc_day(std::int64_t unix_seconds) {
  return floor_div(unix_seconds, seconds_per_day);
}

std::int64_t seconds_to_next_utc_day(std::int64_t unix_seconds) {
  return (utc_day(unix_seconds) + 1) * seconds_per_day - unix_seconds;
}

std::int64_t effective_budget(std::int64_t key_budget, std::int64_t node_default) {
  return key_budget >= 0 ? key_budget : std::max<std::int64_t>(0, node_default);
}

std::int64_t node_budget_share(std::int64_t budget, std::int32_t live_nodes) {
  if (budget <= 0)
    return 0;
  return std::max<std::int64_t>(1, budget / std::max<std::int32_t>(1, live_nodes));
}

std::int64_t budget_reservation(std::int64_t prompt_estimate,
                                std::optional<std::int64_t> max_completion) {
  auto completion = max_completion ? *max_completion : default_completion_allowance;
  return std::max<std::int64_t>(0, prompt_estimate) + std::max<std::int64_t>(0, completion);
}

budget_verdict admit_budget(std::int64_t spent, std::int64_t budget, std::int64_t reserve) {
  budget_verdict v;
  v.spent = spent;
  if (budget <= 0)
    return v;
  if (spent >= budget) {
    v.allowed = false;
    return v;
  }
  v.reserved = std::clamp<std::int64_t>(reserve, 0, budget - spent);
  return v;
}

local_budget::local_budget(std::size_t max_keys) : max_keys_(std::max<std::size_t>(1, max_keys)) {}

local_budget::counter& local_budget::touch(const std::string& key, std::int64_t day) {
  auto it = counters_.find(key);
  if (it == counters_.end()) {
    if (counters_.size() >= max_keys_) {
      counters_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    it = counters_.emplace(key, counter{day, 0, lru_.begin()}).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  auto& c = it->second;
  if (c.day < day) {
    c.day = day;
    c.spent = 0;
  }
  return c;
}

budget_verdict local_budget::reserve(const std::string& key, std::int64_t day, std::int64_t share,
                                     std::int64_t reserve) {
  if (share <= 0)
    return {};
  auto& c = touch(key, day);
  if (c.day > day) // a request from a day already over on this node's clock
    return admit_budget(0, share, 0);
  auto v = admit_budget(c.spent, share, reserve);
  c.spent += v.reserved;
  return v;
}

void local_budget::add(const std::string& key, std::int64_t day, std::int64_t delta) {
  auto& c = touch(key, day);
  if (c.day != day)
    return;
  c.spent = std::max<std::int64_t>(0, c.spent + delta);
}

std::int64_t local_budget::spent(const std::string& key, std::int64_t day) const {
  auto it = counters_.find(key);
  return it == counters_.end() || it->second.day != day ? 0 : it->second.spent;
}

} // namespace parley

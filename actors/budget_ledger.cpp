#include "actors/budget_ledger.hpp"

#include <algorithm>
#include <utility>

namespace parley {

std::string budget_ledger::slot(const std::string& key_id, std::int64_t day) {
  std::string s = key_id;
  s += '\0';
  s += std::to_string(day);
  return s;
}

budget_ledger::returned budget_ledger::unslot(const std::string& slot, std::int64_t left) {
  auto nul = slot.find('\0');
  return {slot.substr(0, nul), std::stoll(slot.substr(nul + 1)), left};
}

std::optional<rate_decision> budget_ledger::take(const std::string& key_id, std::int64_t day,
                                                 std::int64_t budget, std::int64_t reserve) {
  if (reserve <= 0)
    return std::nullopt;
  auto k = slot(key_id, day);
  std::lock_guard<std::mutex> lock{mutex_};
  auto it = leases_.find(k);
  if (it == leases_.end() || it->second.left < reserve)
    return std::nullopt;
  it->second.left -= reserve;
  it->second.used = true;
  rate_decision d;
  d.redis_ok = true; // the tokens are reserved in Redis: settle as such
  d.budget = budget;
  d.spent = it->second.spent_seen;
  d.reserved = reserve;
  return d;
}

std::pair<std::int64_t, std::int64_t> budget_ledger::lease_of(const std::string& key_id,
                                                              std::int64_t day) {
  auto k = slot(key_id, day);
  std::lock_guard<std::mutex> lock{mutex_};
  auto it = leases_.find(k);
  if (it == leases_.end())
    return {0, 0};
  return {it->second.left, it->second.spent_seen};
}

std::int64_t budget_ledger::renew(const std::string& key_id, std::int64_t day, bool allowed,
                                  std::int64_t granted, std::int64_t spent_seen,
                                  std::int64_t reserve, std::int64_t& give_back) {
  give_back = 0;
  reserve = std::max<std::int64_t>(0, reserve);
  auto k = slot(key_id, day);
  std::lock_guard<std::mutex> lock{mutex_};
  auto it = leases_.find(k);
  if (it == leases_.end()) {
    if (!allowed)
      return 0;
    if (leases_.size() >= max_keys_) {
      auto took = std::min(reserve, granted);
      give_back = granted - took;
      return took;
    }
    it = leases_.emplace(std::move(k), lease{}).first;
  }
  auto& l = it->second;
  l.spent_seen = spent_seen;
  if (!allowed)
    return 0;
  auto total = l.left + granted;
  auto took = std::min(reserve, total);
  l.left = total - took;
  l.used = true;
  return took;
}

std::vector<budget_ledger::returned> budget_ledger::sweep(std::int64_t today) {
  std::vector<returned> out;
  std::lock_guard<std::mutex> lock{mutex_};
  for (auto it = leases_.begin(); it != leases_.end();) {
    auto r = unslot(it->first, it->second.left);
    if (it->second.used && r.day >= today) {
      it->second.used = false;
      ++it;
      continue;
    }
    if (r.day < today)
      r.left = 0;
    out.push_back(std::move(r));
    it = leases_.erase(it);
  }
  return out;
}

std::vector<budget_ledger::returned> budget_ledger::take_all() {
  std::vector<returned> out;
  std::lock_guard<std::mutex> lock{mutex_};
  for (auto& [k, l] : leases_)
    out.push_back(unslot(k, l.left));
  leases_.clear();
  return out;
}

bool budget_ledger::has_leases() {
  std::lock_guard<std::mutex> lock{mutex_};
  return !leases_.empty();
}

budget_ledger::queued budget_ledger::add(budget_settlement s) {
  std::lock_guard<std::mutex> lock{mutex_};
  if (settlements_.size() >= max_settlements_) {
    ++dropped_;
    return queued::dropped;
  }
  settlements_.push_back(std::move(s));
  return settlements_.size() == 1 ? queued::first : queued::later;
}

std::vector<budget_settlement> budget_ledger::drain() {
  std::vector<budget_settlement> out;
  std::lock_guard<std::mutex> lock{mutex_};
  out.swap(settlements_);
  return out;
}

std::uint64_t budget_ledger::dropped() {
  std::lock_guard<std::mutex> lock{mutex_};
  return dropped_;
}

} // namespace parley

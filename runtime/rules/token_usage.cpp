#include "runtime/rules/token_usage.hpp"

namespace parley {

token_usage estimate_usage(const std::vector<llm_message>& sent, std::string_view reply) {
  token_usage u;
  for (auto& m : sent)
    u.prompt_tokens += estimate_message_tokens(m.content);
  u.completion_tokens = estimate_message_tokens(reply);
  u.total_tokens = u.prompt_tokens + u.completion_tokens;
  u.known = true;
  return u;
}

bool usage_tally::add(const std::string& user, const std::string& day, const std::string& model,
                      const token_usage& usage, std::int64_t calls) {
  usage_total row;
  row.user_id = user;
  row.day = day;
  row.model = model;
  row.requests = calls;
  if (usage.known) {
    row.prompt_tokens = usage.prompt_tokens;
    row.completion_tokens = usage.completion_tokens;
  }
  return add(row);
}

bool usage_tally::add(const usage_total& row) {
  auto key = std::make_tuple(row.user_id, row.day, row.model);
  auto it = sums_.find(key);
  if (it == sums_.end()) {
    if (sums_.size() >= max_keys_)
      return false;
    it = sums_.emplace(std::move(key), sum{}).first;
  }
  it->second.requests += row.requests;
  it->second.prompt_tokens += row.prompt_tokens;
  it->second.completion_tokens += row.completion_tokens;
  return true;
}

std::vector<usage_total> usage_tally::take() {
  std::vector<usage_total> out;
  out.reserve(sums_.size());
  for (auto& [key, s] : sums_) {
    usage_total row;
    std::tie(row.user_id, row.day, row.model) = key;
    row.requests = s.requests;
    row.prompt_tokens = s.prompt_tokens;
    row.completion_tokens = s.completion_tokens;
    out.push_back(std::move(row));
  }
  sums_.clear();
  return out;
}

} // namespace parley

#include "runtime/rules/context_window.hpp"

#include <algorithm>

namespace parley {

void push_window(message_window& window, message_record m, std::size_t n) {
  window.push_back(std::move(m));
  if (window.size() > n)
    window.erase(window.begin(), window.end() - static_cast<std::ptrdiff_t>(n));
}

std::int64_t estimate_message_tokens(std::string_view content) {
  return static_cast<std::int64_t>((content.size() + 3) / 4) + 3;
}

std::int64_t message_tokens(const message_record& m) {
  return m.tokens > 0 ? m.tokens : estimate_message_tokens(m.content);
}

std::int64_t user_message_tokens(const token_usage& usage, std::int64_t others,
                                 std::string_view content) {
  if (usage.known && usage.prompt_tokens - others > 0)
    return usage.prompt_tokens - others;
  return estimate_message_tokens(content);
}

context_plan plan_context(const std::string& system_prompt, const message_window& window,
                          const message_record& user, std::size_t n, std::int64_t budget) {
  context_plan plan;
  auto most = n > 0 ? std::min(window.size(), n - 1) : std::size_t{0};
  std::int64_t system = system_prompt.empty() ? 0 : estimate_message_tokens(system_prompt);
  std::int64_t used = system + message_tokens(user);
  // The longest suffix that fits: from the newest message back, until one
  // does not.
  std::size_t history = 0;
  std::int64_t history_tokens = 0;
  for (; history < most; ++history) {
    auto t = message_tokens(window[window.size() - 1 - history]);
    if (budget > 0 && used + history_tokens + t > budget)
      break;
    history_tokens += t;
  }
  plan.messages.reserve(history + 2);
  if (!system_prompt.empty())
    plan.messages.push_back({"system", system_prompt});
  for (auto it = window.end() - static_cast<std::ptrdiff_t>(history); it != window.end(); ++it)
    plan.messages.push_back({it->role, it->content});
  plan.messages.push_back({user.role, user.content});
  plan.others = system + history_tokens;
  return plan;
}

std::vector<llm_message> build_context(const std::string& system_prompt,
                                       const message_window& window,
                                       const message_record& user, std::size_t n) {
  return plan_context(system_prompt, window, user, n).messages;
}

std::optional<std::pair<message_record, std::optional<message_record>>>
find_in_window(const message_window& window, const std::string& client_message_id) {
  for (auto it = window.begin(); it != window.end(); ++it) {
    if (it->role != "user" || it->client_message_id != client_message_id)
      continue;
    std::pair<message_record, std::optional<message_record>> hit{*it, std::nullopt};
    auto next = it + 1;
    if (next != window.end() && next->reply_to == it->seq)
      hit.second = *next;
    return hit;
  }
  return std::nullopt;
}

} // namespace parley

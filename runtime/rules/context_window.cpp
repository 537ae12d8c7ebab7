#include "runtime/rules/context_window.hpp"

namespace parley {

void push_window(message_window& window, message_record m, std::size_t n) {
  window.push_back(std::move(m));
  if (window.size() > n)
    window.erase(window.begin(), window.end() - static_cast<std::ptrdiff_t>(n));
}

std::vector<llm_message> build_context(const std::string& system_prompt,
                                       const message_window& window,
                                       const message_record& user, std::size_t n) {
  std::vector<llm_message> out;
  auto history = n > 0 ? std::min(window.size(), n - 1) : std::size_t{0};
  out.reserve(history + 2);
  if (!system_prompt.empty())
    out.push_back({"system", system_prompt});
  for (auto it = window.end() - static_cast<std::ptrdiff_t>(history); it != window.end(); ++it)
    out.push_back({it->role, it->content});
  out.push_back({user.role, user.content});
  return out;
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

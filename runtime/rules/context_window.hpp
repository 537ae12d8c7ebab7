#pragma once
// A session's context window: the rules that bound a session's memory and
// decide what the model sees. Pure functions, tested without actors.

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "storage/records.hpp"

namespace parley {

/// One message as the model sees it (OpenAI's `messages[i]`); the actors'
/// llm_request carries them (actors/vocabulary.hpp).
struct llm_message {
  std::string role;
  std::string content;
};

/// The most recent messages of a session, oldest first. A vector: an empty
/// one allocates nothing (an idle session's footprint counts, bench (d)),
/// and dropping the oldest of at most PARLEY_CONTEXT_MESSAGES is cheap.
using message_window = std::vector<message_record>;

/// Appends `m` and drops the oldest messages beyond `n` (n >= 1).
void push_window(message_window& window, message_record m, std::size_t n);

/// The model's `messages`: the system prompt (if any), then the newest `n`
/// messages of history ending with the new `user` message, in seq order.
std::vector<llm_message> build_context(const std::string& system_prompt,
                                       const message_window& window,
                                       const message_record& user, std::size_t n);

/// The user message with this client id in the window, and its reply if the
/// window holds it.
std::optional<std::pair<message_record, std::optional<message_record>>>
find_in_window(const message_window& window, const std::string& client_message_id);

} // namespace parley

#pragma once
// A session's context window: the rules that bound a session's memory and
// decide what the model sees. Pure functions, tested without actors.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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

/// Tokens of one message by Parley's estimate: one per 4 bytes of content,
/// rounded up, plus 3 for the message itself (API.md section 4).
std::int64_t estimate_message_tokens(std::string_view content);

/// A message's token count for windowing: its own (`tokens`), or the
/// estimate while none is known.
std::int64_t message_tokens(const message_record& m);

/// A user message's count from its call's usage: the prompt's tokens minus
/// those of the rest of the context sent with it (`others`: the system
/// prompt and the history), i.e. the growth it caused; the estimate when the
/// upstream reported no usage or the difference is not positive.
std::int64_t user_message_tokens(const token_usage& usage, std::int64_t others,
                                 std::string_view content);

/// What a turn sends the model.
struct context_plan {
  std::vector<llm_message> messages;
  /// The token counts of the system prompt and history sent (not the new
  /// user message): user_message_tokens' `others`.
  std::int64_t others = 0;
};

/// The model's `messages`: the system prompt (if any), then the longest
/// suffix of history, at most `n` - 1 messages, whose counts fit `budget`
/// together with the system prompt's and the new `user` message's (0: no
/// token budget), then `user`, always. Counts by message_tokens.
context_plan plan_context(const std::string& system_prompt, const message_window& window,
                          const message_record& user, std::size_t n, std::int64_t budget = 0);

/// plan_context's messages without a token budget.
std::vector<llm_message> build_context(const std::string& system_prompt,
                                       const message_window& window,
                                       const message_record& user, std::size_t n);

/// The user message with this client id in the window, and its reply if the
/// window holds it.
std::optional<std::pair<message_record, std::optional<message_record>>>
find_in_window(const message_window& window, const std::string& client_message_id);

} // namespace parley

#pragma once
// OpenAI's stateful API (API.md section 5a) as pure functions: the ids of
// conversations and items, and the bodies of the Conversations routes. A
// conversation is a session (`conv_` + its id); an item is one of its
// messages (`msg_` + session id + `_` + seq). No I/O, safe on any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley::net {

/// One message item of OpenAI's input or a conversation: `{"type":
/// "message"?, "role", "content": str | [{"type": "input_text" |
/// "output_text" | "text", "text"}]}`, reduced to what a session stores.
struct input_item {
  std::string role; ///< "user" or "assistant"
  std::string text; ///< the text parts joined
};

/// `POST /v1/conversations`.
struct create_conversation_body {
  std::vector<input_item> items;
  std::string metadata_json = "{}"; ///< always a JSON object of strings, serialized
};

/// `POST /v1/conversations/{id}` (a metadata update).
struct update_conversation_body {
  std::string metadata_json = "{}";
};

/// `POST /v1/conversations/{id}/items`.
struct append_items_body {
  std::vector<input_item> items; ///< 1 to 20
};

/// `POST /v1/responses`.
struct create_response_body {
  std::optional<std::string> model;
  /// `input` as items (a string is one user item): roles user, assistant,
  /// system and developer.
  std::vector<input_item> input;
  std::optional<std::string> instructions;
  std::string previous_response_id; ///< empty: none
  std::string conversation;         ///< its id; empty: none
  bool store = true;
  bool stream = false;
  std::optional<double> temperature;
  std::optional<std::int64_t> max_output_tokens;
  std::string metadata_json = "{}";
  /// The upstream's call options (`temperature`, `max_tokens`) as a JSON
  /// object's text; "{}" when none.
  std::string call_options = "{}";
};

/// Most items one request may carry, as OpenAI allows.
constexpr std::size_t max_items_per_request = 20;
/// Metadata as OpenAI bounds it: at most 16 string values, keys up to 64
/// characters, values up to 512.
constexpr std::size_t max_metadata_pairs = 16;

/// `conv_` + `session_id`.
std::string conversation_id(std::string_view session_id);
/// The session a conversation id names; none when it cannot name one.
std::optional<std::string> session_of_conversation(std::string_view conversation_id);

/// `msg_` + session id + `_` + seq: unique across conversations.
std::string item_id(std::string_view session_id, std::int64_t seq);
/// The seq an item id of this session names; none when it names no
/// message of this session.
std::optional<std::int64_t> seq_of_item(std::string_view item_id, std::string_view session_id);

/// `resp_` + session id + `_` + the seq of the reply: a stored response is
/// the turn whose reply has that seq.
std::string response_id(std::string_view session_id, std::int64_t seq);
/// The (session id, reply seq) a response id names; none when it cannot
/// name one.
std::optional<std::pair<std::string, std::int64_t>> turn_of_response(std::string_view id);

/// Seconds since the epoch of an RFC 3339 UTC time ("...Z", as stored);
/// 0 when it is not one.
std::int64_t unix_seconds(std::string_view rfc3339);

} // namespace parley::net

#pragma once
// Parsing and validation of API request bodies and query strings (API.md
// sections 2-4). Pure functions: no I/O, safe on any thread. Every failure
// carries a message a person can act on.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "net/http/api_error.hpp"
#include "net/http/openai_items.hpp"
#include "net/http/routes.hpp"

namespace parley::net {

/// Limits of API.md section 2.
constexpr std::size_t max_body_bytes = 64 * 1024;
/// True for the paths whose bodies carry whole histories, the gateway's
/// `/v1/chat/completions` and `/v1/responses`: their body limit is
/// PARLEY_GATEWAY_MAX_BODY_BYTES instead of max_body_bytes, and their
/// messages have no per-content limit.
bool carries_history(std::string_view path);
constexpr std::size_t max_content_bytes = 32 * 1024;
constexpr std::size_t max_client_message_id_chars = 128;
constexpr std::size_t max_feedback_comment_bytes = 4 * 1024;
constexpr std::size_t max_json_depth = 64;

/// A value or the error that prevented it.
template <class T>
struct parsed {
  T value{};
  std::optional<api_error> error;
  explicit operator bool() const { return !error.has_value(); }
};

template <class T>
parsed<T> fail(errc code, std::string message) {
  parsed<T> p;
  p.error = api_error{code, std::move(message)};
  return p;
}

struct create_session_body {
  std::optional<std::string> system_prompt;
  std::optional<std::string> model;
  std::string metadata_json = "{}"; ///< always a JSON object, serialized
  /// The session's own token budget of its context (0: off); -1 (absent):
  /// PARLEY_CONTEXT_TOKENS.
  std::int64_t context_tokens = -1;
};

struct post_message_body {
  std::string content;
  std::string client_message_id; ///< empty when absent
  bool stream = false;
  bool stream_given = false; ///< `stream` was in the body (it then wins over `Accept`)
};

struct feedback_body {
  int rating = 0; ///< -1 or 1
  std::optional<std::string> comment;
};

struct create_key_body {
  std::string user;
  /// Tokens per UTC day for this key: -1 (absent) the node's default, 0
  /// unlimited.
  std::int64_t token_budget_per_day = -1;
  /// The only models the key may name (1-64 names of 1-256 characters);
  /// empty (absent): any.
  std::vector<std::string> models;
};

/// `POST /v1/chat/completions` (OpenAI's Chat Completions request), passed
/// through to the upstream (API.md section 5).
struct chat_message {
  std::string role; ///< system, developer, user, assistant, tool or function
  /// The text of `content` (a string, or its text parts joined); other
  /// parts and fields are in `upstream_body` only. For the echo model.
  std::string content;
};
struct chat_completion_body {
  std::optional<std::string> model;
  std::vector<chat_message> messages;
  bool stream = false;
  /// `stream_options.include_usage`: the client wants the final usage chunk.
  bool include_usage = false;
  /// The request as the upstream gets it: the client's JSON object with
  /// every field and message kept, `stream_options.include_usage` set when
  /// streamed (Parley always asks for usage), `model` as the client sent it
  /// (absent when it sent none: with_model() adds the default).
  std::string upstream_body;
};

/// `body` (a JSON object's compact text, as chat_completion_body's
/// upstream_body) with `"model": model` added as its first member. Call only
/// when the object has no `model`.
std::string with_model(std::string_view body, std::string_view model);

/// `POST /admin/v1/sessions/{id}/migrate`: `{"to": node_id}`.
struct migrate_body {
  std::string to;
};

/// True when a Content-Type names JSON (`application/json`, parameters allowed).
bool is_json_content_type(std::string_view content_type);

parsed<create_session_body> parse_create_session(std::string_view body);
parsed<post_message_body> parse_post_message(std::string_view body);
parsed<feedback_body> parse_feedback(std::string_view body);
parsed<create_key_body> parse_create_key(std::string_view body);
parsed<migrate_body> parse_migrate(std::string_view body);
parsed<chat_completion_body> parse_chat_completion(std::string_view body);
parsed<create_conversation_body> parse_create_conversation(std::string_view body);
parsed<update_conversation_body> parse_update_conversation(std::string_view body);
parsed<append_items_body> parse_append_items(std::string_view body);
parsed<create_response_body> parse_create_response(std::string_view body);

/// A request's parsed body: one alternative per `body_parser`, in its order
/// (monostate for `none`).
using request_body = std::variant<std::monostate, create_session_body, post_message_body,
                                  feedback_body, create_key_body, migrate_body,
                                  chat_completion_body, create_conversation_body,
                                  update_conversation_body, append_items_body,
                                  create_response_body>;

/// Parses `body` as the route table's parser says (`none`: not read).
parsed<request_body> parse_body(body_parser parser, std::string_view body);

/// Decoded query parameters; a repeated key keeps its last value.
using query_map = std::map<std::string, std::string, std::less<>>;
parsed<query_map> parse_query(std::string_view query);

/// An integer query parameter within [lo, hi], `dflt` when absent.
parsed<std::int64_t> query_int(const query_map& q, std::string_view key, std::int64_t dflt,
                               std::int64_t lo, std::int64_t hi);

/// Number of Unicode code points in valid UTF-8 text.
std::size_t utf8_length(std::string_view s);

/// A message `seq` path segment: a positive decimal integer.
std::optional<std::int64_t> parse_seq(std::string_view s);

} // namespace parley::net

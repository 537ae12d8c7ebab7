#pragma once
// Plain records of Parley's domain, as stored in PostgreSQL and as carried by
// actor messages. No behaviour, no dependencies.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace parley {

/// What one model call cost, as the upstream reported it (or as the echo
/// model estimates it). `known` is false when nothing was reported.
struct token_usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t total_tokens = 0;
  bool known = false;
};

/// The most tokens one model call may count (a bound on what an upstream
/// reports, so that no count can overflow a day's sum).
inline constexpr std::int64_t max_call_tokens = 1'000'000'000'000;

/// One message of a session's history.
struct message_record {
  std::int64_t seq = 0;
  std::string role; ///< "user" or "assistant"
  std::string content;
  std::string created_at;       ///< RFC 3339, UTC, microseconds
  std::int64_t reply_to = 0;    ///< assistant only: seq of the user message
  std::string model;            ///< assistant only
  std::string client_message_id; ///< user only; empty when the client sent none
  token_usage usage;             ///< assistant only: the model call's usage
  /// The message's token count (API.md section 4): an assistant message's
  /// completion tokens, a user message's growth of the prompt it caused;
  /// 0: not known (Parley's estimate stands in).
  std::int64_t tokens = 0;
  /// User only, with a client id: the hash of the request that made the
  /// turn when more than its content defines it (an OpenAI response's
  /// Idempotency-Key); a repeat of the id must bring the same. Empty: the
  /// content alone (session turns, and turns stored before schema 8).
  std::string request_hash = {};
};

struct session_record {
  std::string id;
  std::string user_id;
  std::string created_at;
  std::string system_prompt; ///< empty: none
  std::string model;
  std::string metadata_json = "{}";
  std::int64_t message_count = 0;
  std::int64_t last_seq = 0;
  std::int64_t epoch = 0;
  /// The session's own PARLEY_CONTEXT_TOKENS: -1 the node's, 0 off.
  std::int64_t context_tokens = -1;
};

/// What a session actor loads when it activates.
struct activation_record {
  session_record session;
  std::vector<message_record> window; ///< the latest messages, ascending by seq
};

/// One committed turn: the user message and its reply, written together.
/// A stored response's own request options as given (OpenAI's Responses
/// API), kept with its turn; a response whose options are all defaults
/// (`keep` false) has no row and reads back as these defaults.
struct response_options {
  bool keep = false;
  std::string instructions;           ///< empty: none
  std::string metadata_json = "{}";
  std::string call_options = "{}";    ///< {"temperature"?, "max_tokens"?}, as the upstream gets them
  std::int64_t input_before = 0;      ///< replayed input items stored before its user message
};

struct turn_write {
  std::string session_id;
  std::int64_t epoch = 0;
  message_record user;
  message_record reply;
  /// Messages stored before `user` in the same commit (OpenAI's replayed
  /// input items), seqs user.seq - before.size() ... user.seq - 1, in order.
  std::vector<message_record> before = {};
  /// A stored response's options (written with the turn when `keep`).
  response_options options = {};
  /// The session's user, set for a keyed turn (user.request_hash): its
  /// Idempotency-Key is claimed among that user's keys.
  std::string user_id = {};
};

/// Messages appended to a session by its actor (turn_request::append):
/// seqs after_seq + 1.., written only while `epoch` is current and the
/// session's last seq is still `after_seq`.
struct append_write {
  std::string session_id;
  std::int64_t epoch = 0;
  std::int64_t after_seq = 0;
  std::vector<message_record> messages;
};

/// A fork (OpenAI's `previous_response_id` naming a response that is not
/// the latest of its conversation): a new session `new_id` of the same
/// user holding the source's messages up to `upto_seq`.
struct fork_request {
  std::string new_id;
  std::string source_id;
  std::string user_id;
  std::int64_t upto_seq = 0;
  std::string created_at;
  /// The request's Idempotency-Key (empty: none): no fork is made while
  /// the user's key belongs to another session (response_keys).
  std::string idem_key = {};
};

/// What fork_session did.
enum class fork_outcome : std::uint8_t {
  made,      ///< the fork exists now (also made before)
  missing,   ///< the source is not the user's: nothing made
  key_taken, ///< the request's Idempotency-Key is another session's: nothing made
};

/// A stored response: the turn of `session_id` whose reply has `seq`.
struct response_ref {
  std::string session_id;
  std::string user_id;
  std::int64_t seq = 0;
};

enum class commit_outcome : std::uint8_t {
  committed,
  fenced,   ///< the epoch moved on (or the session is gone): nothing written
  conflict, ///< a unique key was hit: the actor's view is stale, nothing written
  /// The turn's Idempotency-Key is another session's (API.md section 5a):
  /// nothing written, and the actor's view is right.
  key_taken,
  unknown,  ///< the connection failed around COMMIT: maybe written
  failed,   ///< PostgreSQL unavailable before anything was written
};

struct api_key_record {
  std::int64_t id = 0;
  std::string user_id;
  std::string prefix;
  /// Tokens (prompt + completion) per UTC day: -1 the node's default
  /// (PARLEY_TOKEN_BUDGET_PER_DAY), 0 unlimited.
  std::int64_t token_budget_per_day = -1;
  /// The only models this key may name; empty: any.
  std::vector<std::string> models;
  std::string created_at; ///< RFC 3339 (listings)
  bool revoked = false;   ///< listings only: a revoked key never authenticates
};

/// A page of sessions, newest first.
struct session_page {
  std::vector<session_record> data;
  std::string next_cursor; ///< empty when this is the last page
};

/// A page of messages, ascending by seq.
struct message_page {
  std::vector<message_record> data;
  std::int64_t next_after = 0; ///< 0 when this is the last page
};

/// A stored response as read back: its turn (the messages seq - 3 .. seq)
/// and its request options.
struct response_record {
  message_page turn;
  response_options options;
};

/// One row of the per-user daily totals: model calls and tokens of `user_id`
/// on one UTC day with one model (session turns and gateway calls together).
/// Also a delta to add to the stored row.
struct usage_total {
  std::string user_id;
  std::string day; ///< YYYY-MM-DD, UTC
  std::string model;
  std::int64_t requests = 0;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};

enum class feedback_outcome : std::uint8_t { stored, no_session, no_message, not_assistant };

} // namespace parley

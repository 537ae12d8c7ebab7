#pragma once
// JSON renderings of OpenAI's stateful API (API.md section 5a): a session
// as a conversation, its messages as items.

#include <string>

#include "actors/vocabulary.hpp"

namespace parley {

/// `{"id": "conv_…", "object": "conversation", "created_at": unix seconds, "metadata"}`.
std::string render_conversation(const session_record& s);
/// `{"id", "object": "conversation.deleted", "deleted": true}`.
std::string render_conversation_deleted(const std::string& conversation_id);
/// `{"object": "list", "data": [item], "first_id", "last_id", "has_more"}`
/// of messages of `session_id`, in the page's order.
std::string render_item_list(const std::string& session_id, const message_page& p);

/// The same list of the messages an append stored (`has_more` false).
std::string render_item_list(const std::string& session_id,
                             const std::vector<message_record>& items);

/// What a Response object says beyond its turn (as the request gave it).
struct response_view {
  std::string id;
  std::string session_id; ///< empty: no conversation (`store: false` without one)
  std::string previous_response_id;
  std::string instructions; ///< empty: null
  std::string metadata_json = "{}";
  std::string call_options = "{}"; ///< temperature, max_tokens
  bool store = true;
  /// The model answering, for the events written before its reply (a stored
  /// turn's comes with `started`: the session's).
  std::string model = {};
};

/// `{"id", "object": "response.deleted", "deleted": true}`.
std::string render_response_deleted(const std::string& response_id);

/// The reply of a `store: false` call as a message (not stored: no seq),
/// created now.
message_record unstored_reply(llm_result&& r);

/// OpenAI's Response object of a completed call: `reply` is the output
/// message (its id `msg_…` when stored), `model` and usage from it.
std::string render_response(const response_view& v, const message_record& reply);

/// The Server-Sent Events of one streamed Response, in order, each `event:`
/// named as its data's `type`, with a rising `sequence_number`.
struct response_stream {
  std::string item_id; ///< the output message's id
  std::string text;    ///< the deltas so far
  std::int64_t sequence = 0;

  /// response.created, response.in_progress, response.output_item.added,
  /// response.content_part.added.
  std::string opening(const response_view& v);
  /// One response.output_text.delta.
  std::string delta(const std::string& piece);
  /// response.output_text.done, response.content_part.done,
  /// response.output_item.done, response.completed (the whole Response).
  std::string closing(const response_view& v, const message_record& reply);
  /// response.failed, its `response.error` saying why.
  std::string failed(const response_view& v, const api_error& e);
};

} // namespace parley

#pragma once
// JSON renderings of Parley's records for the HTTP API (API.md section 4).

#include <string>

#include "actors/messages.hpp"

namespace parley {

std::string render_session(const session_record& s);
std::string render_session_page(const session_page& p);
std::string render_message_page(const message_page& p);
std::string render_turn(const turn_reply& t);
std::string render_created_key(const api_key_record& k, const std::string& secret);
/// A turn as Server-Sent Events: one delta with the reply, then `done`.
std::string render_turn_sse(const turn_reply& t);
/// A failure as one Server-Sent Event `error`.
std::string render_error_sse(const api_error& e);

} // namespace parley

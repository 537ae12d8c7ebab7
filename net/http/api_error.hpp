#pragma once
// The error vocabulary of API.md section 2, shared by every layer.

#include <cstdint>
#include <string>
#include <string_view>

namespace parley {

/// One value per error `code` of API.md section 2. The numeric values cross
/// the cluster inside caf::error, so only ever append.
enum class errc : std::uint8_t {
  none = 0,
  invalid_request,
  unauthorized,
  forbidden,
  not_found,
  method_not_allowed,
  conflict,
  payload_too_large,
  unsupported_media_type,
  rate_limited,
  session_busy,
  upstream_error,
  overloaded,
  upstream_unavailable,
  storage_unavailable,
  upstream_timeout,
  internal,       ///< a broken invariant; answered as 500 `internal_error`
  session_moved,  ///< the actor lost its epoch; answered 503, the client retries
  header_too_large, ///< request line and headers over the limit: 431, code `invalid_request`
  budget_exceeded,  ///< the key's daily token budget is spent: 429 until the next UTC day
  /// A turn continuing a response (turn_request::previous_seq) that is not
  /// its session's latest: nothing was done; the edge forks instead (never
  /// answered as such; 409 `conflict` if it were).
  not_latest,
  /// A transfer coding other than chunked (RFC 9112 section 6.1): 501, code
  /// `invalid_request`.
  not_implemented,
};

/// HTTP status for an error code.
unsigned http_status(errc e);
/// The `code` string of the error body.
std::string_view code_name(errc e);
/// The `type` string of the error body (OpenAI's families).
std::string_view type_name(errc e);
/// True for codes whose answers carry `Retry-After`.
bool has_retry_after(errc e);
/// Parse a code name back (for errors that crossed a text boundary); `none` if unknown.
errc errc_from_code(std::string_view code);

/// An error with the words a person can act on.
struct api_error {
  errc code = errc::internal;
  std::string message;
  /// The request field at fault (OpenAI's `param`, e.g. "messages[2].role");
  /// empty: none (rendered as null).
  std::string param = {};
};

/// `{"error": {"message", "type", "param", "code"}}` for an error (`param`
/// null when the error names no field): every error body Parley writes.
std::string error_body(const api_error& e);

} // namespace parley

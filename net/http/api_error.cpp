#include "net/http/api_error.hpp"

#include <nlohmann/json.hpp>

namespace parley {

namespace {

struct errc_info {
  unsigned status;
  std::string_view code;
  std::string_view type;
};

errc_info info(errc e) {
  switch (e) {
    case errc::none: return {200, "ok", "ok"};
    case errc::invalid_request: return {400, "invalid_request", "invalid_request_error"};
    case errc::unauthorized: return {401, "unauthorized", "authentication_error"};
    case errc::forbidden: return {403, "forbidden", "permission_error"};
    case errc::not_found: return {404, "not_found", "not_found_error"};
    case errc::method_not_allowed: return {405, "method_not_allowed", "invalid_request_error"};
    case errc::conflict: return {409, "conflict", "conflict_error"};
    case errc::payload_too_large: return {413, "payload_too_large", "invalid_request_error"};
    case errc::unsupported_media_type:
      return {415, "unsupported_media_type", "invalid_request_error"};
    case errc::rate_limited: return {429, "rate_limited", "rate_limit_error"};
    case errc::session_busy: return {429, "session_busy", "rate_limit_error"};
    case errc::upstream_error: return {502, "upstream_error", "upstream_error"};
    case errc::overloaded: return {503, "overloaded", "service_unavailable_error"};
    case errc::upstream_unavailable:
      return {503, "upstream_unavailable", "service_unavailable_error"};
    case errc::storage_unavailable:
      return {503, "storage_unavailable", "service_unavailable_error"};
    case errc::upstream_timeout: return {504, "upstream_timeout", "timeout_error"};
    case errc::internal: return {500, "internal_error", "server_error"};
    // A moved session is a transient condition of the cluster: retry soon.
    case errc::session_moved: return {503, "overloaded", "service_unavailable_error"};
    // RFC 6585's status; the code stays one of API.md section 2's.
    case errc::header_too_large: return {431, "invalid_request", "invalid_request_error"};
    // OpenAI's type for a spent quota (its SDKs raise a RateLimitError on 429).
    case errc::budget_exceeded: return {429, "budget_exceeded", "insufficient_quota"};
    case errc::not_latest: return {409, "conflict", "conflict_error"};
    // RFC 9112's status for a transfer coding the server does not know.
    case errc::not_implemented: return {501, "invalid_request", "invalid_request_error"};
  }
  return {500, "internal_error", "server_error"};
}

} // namespace

unsigned http_status(errc e) { return info(e).status; }
std::string_view code_name(errc e) { return info(e).code; }
std::string_view type_name(errc e) { return info(e).type; }

bool has_retry_after(errc e) {
  auto s = http_status(e);
  return s == 429 || s == 503;
}

errc errc_from_code(std::string_view code) {
  for (auto i = 1; i <= static_cast<int>(errc::budget_exceeded); ++i) {
    auto e = static_cast<errc>(i);
    if (code_name(e) == code)
      return e;
  }
  return errc::none;
}

std::string error_body(const api_error& e) {
  nlohmann::json j = {{"error",
                       {{"message", e.message},
                        {"type", std::string{type_name(e.code)}},
                        {"param", e.param.empty() ? nlohmann::json(nullptr)
                                                  : nlohmann::json(e.param)},
                        {"code", std::string{code_name(e.code)}}}}};
  // A message may quote the request (a path, a route id): bytes that are
  // not UTF-8 become U+FFFD instead of making the dump throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace parley

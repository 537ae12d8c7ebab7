#include "mock_state.hpp"

#include <cstdio>

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>

#include "net/http/json_depth.hpp"

namespace mock_llm {
namespace {

// dump() and the copy constructor recurse once per nesting level; a 1 MiB
// body of '[' would overflow the stack, so deeper documents count as not JSON.
constexpr std::size_t max_json_depth = 256;

constexpr std::size_t stream_piece_chars = 4;

std::optional<failure_mode> mode_from_string(std::string_view s) {
  if (s == "normal")
    return failure_mode::normal;
  if (s == "hang")
    return failure_mode::hang;
  if (s == "close")
    return failure_mode::close;
  if (s == "cut_stream")
    return failure_mode::cut_stream;
  if (s == "stall_stream")
    return failure_mode::stall_stream;
  return std::nullopt;
}

std::string_view to_string(failure_mode mode) {
  switch (mode) {
  case failure_mode::normal:
    return "normal";
  case failure_mode::hang:
    return "hang";
  case failure_mode::close:
    return "close";
  case failure_mode::cut_stream:
    return "cut_stream";
  case failure_mode::stall_stream:
    return "stall_stream";
  }
  return "normal";
}

// Reads an integer field within [lo, hi]; sets `error` otherwise.
std::optional<int> int_field(const json& value, std::string_view name, long long lo, long long hi,
                             std::optional<std::string>& error) {
  if (!value.is_number_integer()) {
    error = std::string(name) + " must be an integer";
    return std::nullopt;
  }
  // Unsigned values above LLONG_MAX are out of range anyway.
  if (value.is_number_unsigned() &&
      value.get<unsigned long long>() > static_cast<unsigned long long>(hi)) {
    error = std::string(name) + " is out of range";
    return std::nullopt;
  }
  const auto v = value.get<long long>();
  if (v < lo || v > hi) {
    error = std::string(name) + " must be between " + std::to_string(lo) + " and " +
            std::to_string(hi);
    return std::nullopt;
  }
  return static_cast<int>(v);
}

// The text of a message's content: a string, or the text parts of an array.
std::string content_text(const json& message) {
  if (!message.is_object())
    return {};
  const auto it = message.find("content");
  if (it == message.end())
    return {};
  if (it->is_string())
    return it->get<std::string>();
  std::string text;
  if (it->is_array()) {
    for (const auto& part : *it) {
      if (part.is_object() && part.contains("text") && part["text"].is_string())
        text += part["text"].get<std::string>();
    }
  }
  return text;
}

// Splits into pieces of `size` code points (UTF-8 sequences stay whole).
std::vector<std::string> split_pieces(std::string_view text, std::size_t size) {
  auto is_continuation = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; };
  std::vector<std::string> pieces;
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = begin;
    for (std::size_t points = 0; points < size && end < text.size(); ++points) {
      ++end;
      while (end < text.size() && is_continuation(text[end]))
        ++end;
    }
    pieces.emplace_back(text.substr(begin, end - begin));
    begin = end;
  }
  return pieces;
}

std::string sse_event(const json& chunk) { return "data: " + dump(chunk) + "\n\n"; }

json chunk_document(const chat_request& req, std::uint64_t n, std::int64_t created, json delta,
                    json finish_reason) {
  return {{"id", "chatcmpl-mock-" + std::to_string(n)},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", req.model},
          {"choices", json::array({{{"index", 0},
                                    {"delta", std::move(delta)},
                                    {"finish_reason", std::move(finish_reason)}}})}};
}

} // namespace

std::string default_fail_body() {
  return error_body("injected failure", "server_error", "injected_failure");
}

json to_json(const mock_config& config) {
  return {{"latency_ms", config.latency.count()},
          {"chunk_delay_ms", config.chunk_delay.count()},
          {"stamp_pieces", config.stamp_pieces},
          {"fail_status", config.fail_status},
          {"fail_count", config.fail_count},
          {"retry_after", config.retry_after},
          {"fail_body", config.fail_body},
          {"mode", to_string(config.mode)}};
}

std::optional<std::string> apply_patch(mock_config& config, const json& patch) {
  if (!patch.is_object())
    return "config must be a JSON object";
  constexpr long long max_ms = 3'600'000;
  constexpr long long int_max = std::numeric_limits<int>::max();
  mock_config next = config;
  std::optional<std::string> error;
  for (const auto& [key, value] : patch.items()) {
    if (key == "latency_ms") {
      if (auto v = int_field(value, key, 0, max_ms, error))
        next.latency = std::chrono::milliseconds(*v);
    } else if (key == "chunk_delay_ms") {
      if (auto v = int_field(value, key, 0, max_ms, error))
        next.chunk_delay = std::chrono::milliseconds(*v);
    } else if (key == "stamp_pieces") {
      if (auto v = int_field(value, key, 0, 100000, error))
        next.stamp_pieces = static_cast<int>(*v);
    } else if (key == "fail_status") {
      if (auto v = int_field(value, key, 0, 599, error)) {
        if (*v != 0 && *v < 200)
          error = "fail_status must be 0 or between 200 and 599";
        next.fail_status = *v;
      }
    } else if (key == "fail_count") {
      if (auto v = int_field(value, key, -1, int_max, error))
        next.fail_count = *v;
    } else if (key == "retry_after") {
      if (auto v = int_field(value, key, 0, int_max, error))
        next.retry_after = *v;
    } else if (key == "fail_body") {
      if (value.is_string())
        next.fail_body = value.get<std::string>();
      else if (value.is_structured())
        next.fail_body = dump(value);
      else
        error = "fail_body must be a string or a JSON object";
    } else if (key == "mode") {
      const auto mode = value.is_string() ? mode_from_string(value.get<std::string>())
                                          : std::nullopt;
      if (mode)
        next.mode = *mode;
      else
        error = "mode must be one of normal, hang, close, cut_stream, stall_stream";
    } else {
      error = "unknown config field: " + key;
    }
    if (error)
      return error;
  }
  config = std::move(next);
  return std::nullopt;
}

json parse_json(std::string_view text) {
  if (parley::net::json_depth(text) > max_json_depth)
    return json(json::value_t::discarded);
  return json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_body(std::string_view message, std::string_view type, std::string_view code) {
  return dump({{"error", {{"message", message}, {"type", type}, {"code", code}}}});
}

std::optional<std::string> read_chat_request(const json& body, chat_request& out) {
  if (body.is_discarded())
    return "request body is not valid JSON";
  if (!body.is_object())
    return "request body must be a JSON object";
  out = chat_request{};
  out.model = "mock";
  if (const auto it = body.find("model"); it != body.end()) {
    if (!it->is_string())
      return "model must be a string";
    if (!it->get_ref<const std::string&>().empty())
      out.model = it->get<std::string>();
  }
  std::string last_content;
  if (const auto it = body.find("messages"); it != body.end()) {
    if (!it->is_array())
      return "messages must be an array";
    for (const auto& message : *it) {
      last_content = content_text(message);
      out.prompt_tokens += count_words(last_content);
    }
  }
  if (const auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean())
      return "stream must be a boolean";
    out.stream = it->get<bool>();
  }
  out.reply = "mock: " + last_content;
  return std::nullopt;
}

int count_words(std::string_view text) {
  int words = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (!space && !in_word)
      ++words;
    in_word = !space;
  }
  return words;
}

json completion_document(const chat_request& req, std::uint64_t n, std::int64_t created) {
  const int completion_tokens = count_words(req.reply);
  return {{"id", "chatcmpl-mock-" + std::to_string(n)},
          {"object", "chat.completion"},
          {"created", created},
          {"model", req.model},
          {"choices", json::array({{{"index", 0},
                                    {"message", {{"role", "assistant"}, {"content", req.reply}}},
                                    {"finish_reason", "stop"}}})},
          {"usage",
           {{"prompt_tokens", req.prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", req.prompt_tokens + completion_tokens}}}};
}

std::vector<std::string> stream_events(const chat_request& req, std::uint64_t n,
                                       std::int64_t created, int stamp_pieces) {
  auto pieces = stamp_pieces > 0
                    ? std::vector<std::string>(static_cast<std::size_t>(stamp_pieces),
                                               std::string(stamp_placeholder))
                    : split_pieces(req.reply, stream_piece_chars);
  if (pieces.empty())
    pieces.emplace_back();
  std::vector<std::string> events;
  events.reserve(pieces.size() + 2);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    json delta = i == 0 ? json{{"role", "assistant"}, {"content", pieces[i]}}
                        : json{{"content", pieces[i]}};
    events.push_back(sse_event(chunk_document(req, n, created, std::move(delta), nullptr)));
  }
  events.push_back(sse_event(chunk_document(req, n, created, json::object(), "stop")));
  events.emplace_back("data: [DONE]\n\n");
  return events;
}

void stamp_event(std::string& event, std::int64_t micros) {
  const auto at = event.find(stamp_placeholder.substr(0, 17));
  if (at == std::string::npos)
    return;
  char digits[17];
  std::snprintf(digits, sizeof digits, "%016lld", static_cast<long long>(micros));
  event.replace(at + 1, 16, digits, 16);
}

mock_state::mock_state(mock_config defaults, std::size_t max_records)
    : defaults_(std::move(defaults)), config_(defaults_), max_records_(max_records) {}

std::uint64_t mock_state::record(std::string_view method, std::string_view path,
                                 std::string_view authorization, const json& body,
                                 std::string_view raw_body, std::uint64_t connection) {
  const std::uint64_t n = next_n_++;
  records_.push_back({{"n", n},
                      {"method", method},
                      {"path", path},
                      {"authorization", authorization},
                      {"body", body.is_discarded() ? json(raw_body) : body},
                      {"connection", connection}});
  while (records_.size() > max_records_)
    records_.pop_front();
  return n;
}

json mock_state::records_document() const {
  return {{"data", json(records_)}};
}

failure_kind mock_state::take_failure() {
  if (config_.fail_count == 0)
    return failure_kind::none;
  failure_kind kind = failure_kind::none;
  switch (config_.mode) {
  case failure_mode::normal:
    kind = config_.fail_status > 0 ? failure_kind::status : failure_kind::none;
    break;
  case failure_mode::hang:
    kind = failure_kind::hang;
    break;
  case failure_mode::close:
    kind = failure_kind::close;
    break;
  case failure_mode::cut_stream:
    kind = failure_kind::cut_stream;
    break;
  case failure_mode::stall_stream:
    kind = failure_kind::stall_stream;
    break;
  }
  if (kind != failure_kind::none && config_.fail_count > 0)
    --config_.fail_count;
  return kind;
}

std::shared_ptr<void> mock_state::begin_answer() {
  ++in_flight_;
  peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
  // The state outlives every session (each holds it), so `this` stays valid.
  return std::shared_ptr<void>(this, [](mock_state* s) {
    --s->in_flight_;
    ++s->answered_;
  });
}

json mock_state::stats_document() const {
  return {{"in_flight", in_flight_}, {"peak_in_flight", peak_in_flight_}, {"answered", answered_}};
}

void mock_state::reset_stats() {
  peak_in_flight_ = in_flight_;
  answered_ = 0;
}

} // namespace mock_llm

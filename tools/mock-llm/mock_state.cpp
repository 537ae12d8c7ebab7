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
          {"mode", to_string(config.mode)},
          {"api_key", config.api_key},
          {"stream_script", config.stream_script}};
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
    } else if (key == "api_key") {
      if (value.is_string())
        next.api_key = value.get<std::string>();
      else
        error = "api_key must be a string";
    } else if (key == "stream_script") {
      if (!value.is_array())
        error = "stream_script must be an array of strings";
      next.stream_script.clear();
      for (const auto& e : value.is_array() ? value : json::array()) {
        if (!e.is_string()) {
          error = "stream_script must be an array of strings";
          break;
        }
        next.stream_script.push_back(e.get<std::string>());
      }
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

std::string error_body(std::string_view message, std::string_view type, std::string_view code,
                       std::string_view param) {
  return dump({{"error",
                {{"message", message},
                 {"type", type},
                 {"code", code},
                 {"param", param.empty() ? json(nullptr) : json(param)}}}});
}

namespace {

// Reads an optional integer request field within [lo, hi].
std::optional<request_error> int_request_field(const json& body, const char* name, int lo, int hi,
                                               int& out) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null())
    return std::nullopt;
  std::optional<std::string> error;
  if (auto v = int_field(*it, name, lo, hi, error)) {
    out = *v;
    return std::nullopt;
  }
  return request_error{*error, name};
}

std::optional<request_error> bool_request_field(const json& body, const char* name, bool& out) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null())
    return std::nullopt;
  if (!it->is_boolean())
    return request_error{std::string(name) + " must be a boolean", name};
  out = it->get<bool>();
  return std::nullopt;
}

// The number of image parts in a message's content array.
int image_parts(const json& message) {
  if (!message.is_object() || !message.contains("content") || !message["content"].is_array())
    return 0;
  int images = 0;
  for (const auto& part : message["content"])
    if (part.is_object() && part.value("type", "") == "image_url")
      ++images;
  return images;
}

std::string message_role(const json& message) {
  if (!message.is_object())
    return {};
  const auto it = message.find("role");
  return it != message.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The function `tools` offers under `name` ("" = the first), or null.
const json* find_tool(const json& tools, std::string_view name) {
  for (const auto& tool : tools) {
    const auto& fn = tool["function"];
    if (name.empty() || fn["name"].get_ref<const std::string&>() == name)
      return &fn;
  }
  return nullptr;
}

// Keeps the first `words` words of `text` (and what separates them).
std::string first_words(const std::string& text, int words) {
  int seen = 0;
  bool in_word = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool space = std::isspace(static_cast<unsigned char>(text[i])) != 0;
    if (!space && !in_word && ++seen > words) {
      std::size_t end = i;
      while (end > 0 && std::isspace(static_cast<unsigned char>(text[end - 1])) != 0)
        --end;
      return text.substr(0, end);
    }
    in_word = !space;
  }
  return text;
}

json usage_document(const chat_request& req, const std::vector<choice_answer>& answers) {
  int completion = 0;
  for (const auto& a : answers)
    completion += a.completion_tokens;
  return {{"prompt_tokens", req.prompt_tokens},
          {"completion_tokens", completion},
          {"total_tokens", req.prompt_tokens + completion}};
}

// OpenAI's logprobs of `pieces` (the mock's tokens): piece k has logprob
// -0.01 * (k % 10 + 1); its alternatives "~1", "~2", ... each one lower.
// `first` is the position of pieces[0] in the whole answer.
json logprobs_document(const std::vector<std::string>& pieces, int top, std::size_t first = 0) {
  json content = json::array();
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    const double logprob = -0.01 * static_cast<double>((first + k) % 10 + 1);
    auto bytes = [](const std::string& s) {
      json out = json::array();
      for (unsigned char c : s)
        out.push_back(static_cast<int>(c));
      return out;
    };
    json alternatives = json::array();
    for (int t = 0; t < top; ++t) {
      const std::string token = t == 0 ? pieces[k] : "~" + std::to_string(t);
      alternatives.push_back(
          {{"token", token}, {"logprob", logprob - t}, {"bytes", bytes(token)}});
    }
    content.push_back({{"token", pieces[k]},
                       {"logprob", logprob},
                       {"bytes", bytes(pieces[k])},
                       {"top_logprobs", std::move(alternatives)}});
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

json tool_call_document(const choice_answer& a) {
  return {{"id", a.call_id},
          {"type", "function"},
          {"function", {{"name", a.call->name}, {"arguments", a.call->arguments}}}};
}

json chunk_choice(std::size_t index, json delta, json finish_reason) {
  return {{"index", index},
          {"delta", std::move(delta)},
          {"logprobs", nullptr},
          {"finish_reason", std::move(finish_reason)}};
}

} // namespace

std::optional<request_error> read_chat_request(const json& body, chat_request& out) {
  if (body.is_discarded())
    return request_error{"request body is not valid JSON", ""};
  if (!body.is_object())
    return request_error{"request body must be a JSON object", ""};
  out = chat_request{};
  out.model = "mock";
  if (const auto it = body.find("model"); it != body.end()) {
    if (!it->is_string())
      return request_error{"model must be a string", "model"};
    if (!it->get_ref<const std::string&>().empty())
      out.model = it->get<std::string>();
  }
  std::string last_content;
  std::string last_role;
  int last_images = 0;
  if (const auto it = body.find("messages"); it != body.end()) {
    if (!it->is_array())
      return request_error{"messages must be an array", "messages"};
    for (const auto& message : *it) {
      last_content = content_text(message);
      last_role = message_role(message);
      last_images = image_parts(message);
      out.prompt_tokens += count_words(last_content);
    }
  }
  if (const auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean())
      return request_error{"stream must be a boolean", "stream"};
    out.stream = it->get<bool>();
  }
  if (auto e = int_request_field(body, "n", 1, 128, out.choices))
    return e;
  if (auto e = bool_request_field(body, "logprobs", out.logprobs))
    return e;
  if (auto e = int_request_field(body, "top_logprobs", 0, 20, out.top_logprobs))
    return e;
  if (auto e = int_request_field(body, "max_tokens", 1, std::numeric_limits<int>::max(),
                                 out.max_tokens))
    return e;
  if (auto e = int_request_field(body, "max_completion_tokens", 1,
                                 std::numeric_limits<int>::max(), out.max_tokens))
    return e;
  if (const auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object())
      return request_error{"stream_options must be an object", "stream_options"};
    if (auto e = bool_request_field(*it, "include_usage", out.include_usage))
      return request_error{e->message, "stream_options.include_usage"};
  }

  // tools: an array of {"type":"function","function":{"name":..,"parameters":..}}.
  const json* tool = nullptr;
  if (const auto it = body.find("tools"); it != body.end() && !it->is_null()) {
    if (!it->is_array())
      return request_error{"tools must be an array", "tools"};
    for (const auto& t : *it) {
      if (!t.is_object() || !t.contains("function") || !t["function"].is_object() ||
          !t["function"].contains("name") || !t["function"]["name"].is_string())
        return request_error{"every tool must have a function with a name", "tools"};
    }
    std::string wanted;
    bool none = false;
    if (const auto choice = body.find("tool_choice"); choice != body.end()) {
      if (choice->is_string()) {
        none = *choice == "none";
      } else if (choice->is_object() && choice->contains("function") &&
                 (*choice)["function"].is_object() &&
                 (*choice)["function"].value("name", "") != "") {
        wanted = (*choice)["function"]["name"].get<std::string>();
      }
    }
    if (!none && last_role == "user") {
      tool = find_tool(*it, wanted);
      if (!tool && !wanted.empty())
        return request_error{"tool_choice names no tool of tools: " + wanted, "tool_choice"};
    }
  }
  if (tool) {
    // Function arguments are always a JSON object ({} without a schema).
    json arguments = tool->contains("parameters")
                         ? example_arguments((*tool)["parameters"], last_content)
                         : json::object();
    if (!arguments.is_object())
      arguments = json::object();
    out.call = tool_call_plan{(*tool)["name"].get<std::string>(), dump(arguments)};
  }
  out.reply = "mock: " + last_content;
  if (last_images > 0)
    out.reply += " (images: " + std::to_string(last_images) + ")";
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

json example_arguments(const json& schema, const std::string& text) {
  // Recursion is bounded by the schema's depth, which parse_json bounds.
  if (!schema.is_object())
    return text;
  if (const auto it = schema.find("const"); it != schema.end())
    return *it;
  if (const auto it = schema.find("enum"); it != schema.end() && it->is_array() && !it->empty())
    return it->front();
  for (const char* alternatives : {"anyOf", "oneOf", "allOf"}) {
    if (const auto it = schema.find(alternatives);
        it != schema.end() && it->is_array() && !it->empty())
      return example_arguments(it->front(), text);
  }
  std::string type;
  if (const auto it = schema.find("type"); it != schema.end()) {
    if (it->is_string()) {
      type = it->get<std::string>();
    } else if (it->is_array()) {
      for (const auto& t : *it)
        if (t.is_string() && t != "null") {
          type = t.get<std::string>();
          break;
        }
    }
  }
  if (type.empty() && schema.contains("properties"))
    type = "object";
  if (type == "object") {
    json object = json::object();
    if (const auto it = schema.find("properties"); it != schema.end() && it->is_object())
      for (const auto& [name, property] : it->items())
        object[name] = example_arguments(property, text);
    return object;
  }
  if (type == "array") {
    json array = json::array();
    if (const auto it = schema.find("items"); it != schema.end() && it->is_object())
      array.push_back(example_arguments(*it, text));
    return array;
  }
  if (type == "integer" || type == "number")
    return 1;
  if (type == "boolean")
    return true;
  if (type == "null")
    return nullptr;
  return text;
}

std::vector<choice_answer> answer_choices(const chat_request& req, std::uint64_t n) {
  std::vector<choice_answer> answers(static_cast<std::size_t>(req.choices));
  for (std::size_t i = 0; i < answers.size(); ++i) {
    auto& a = answers[i];
    if (req.call) {
      a.call = req.call;
      a.call_id = "call_mock_" + std::to_string(n) + "_" + std::to_string(i);
      a.finish_reason = "tool_calls";
      a.completion_tokens = 1 + count_words(req.call->arguments);
      continue;
    }
    a.content = i == 0 ? req.reply : "mock#" + std::to_string(i) + req.reply.substr(4);
    a.finish_reason = "stop";
    if (req.max_tokens > 0 && count_words(a.content) > req.max_tokens) {
      a.content = first_words(a.content, req.max_tokens);
      a.finish_reason = "length";
    }
    a.completion_tokens = count_words(a.content);
  }
  return answers;
}

json completion_document(const chat_request& req, std::uint64_t n, std::int64_t created) {
  const auto answers = answer_choices(req, n);
  json choices = json::array();
  for (std::size_t i = 0; i < answers.size(); ++i) {
    const auto& a = answers[i];
    json message = {{"role", "assistant"}};
    if (a.call) {
      message["content"] = nullptr;
      message["tool_calls"] = json::array({tool_call_document(a)});
    } else {
      message["content"] = a.content;
    }
    message["refusal"] = nullptr;
    json logprobs = req.logprobs && !a.call
                        ? logprobs_document(split_pieces(a.content, stream_piece_chars),
                                            req.top_logprobs)
                        : json(nullptr);
    choices.push_back({{"index", i},
                       {"message", std::move(message)},
                       {"logprobs", std::move(logprobs)},
                       {"finish_reason", a.finish_reason}});
  }
  return {{"id", "chatcmpl-mock-" + std::to_string(n)},
          {"object", "chat.completion"},
          {"created", created},
          {"model", req.model},
          {"choices", std::move(choices)},
          {"usage", usage_document(req, answers)}};
}

stream_reply stream_events(const chat_request& req, std::uint64_t n, std::int64_t created,
                           int stamp_pieces) {
  const auto answers = answer_choices(req, n);
  json head = {{"id", "chatcmpl-mock-" + std::to_string(n)},
               {"object", "chat.completion.chunk"},
               {"created", created},
               {"model", req.model}};
  auto event = [&](json choices) {
    json chunk = head;
    chunk["choices"] = std::move(choices);
    if (req.include_usage)
      chunk["usage"] = nullptr;
    return sse_event(chunk);
  };
  // Each choice's deltas, then interleaved: piece k of every choice before piece k + 1.
  std::vector<std::vector<json>> deltas(answers.size());
  std::size_t longest = 0;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    const auto& a = answers[i];
    auto& out = deltas[i];
    if (a.call) {
      out.push_back({{"role", "assistant"},
                     {"content", nullptr},
                     {"tool_calls", json::array({{{"index", 0},
                                                  {"id", a.call_id},
                                                  {"type", "function"},
                                                  {"function", {{"name", a.call->name},
                                                                {"arguments", ""}}}}})}});
      for (auto& piece : split_pieces(a.call->arguments, stream_piece_chars))
        out.push_back({{"tool_calls",
                        json::array({{{"index", 0}, {"function", {{"arguments", piece}}}}})}});
    } else {
      auto pieces = stamp_pieces > 0
                        ? std::vector<std::string>(static_cast<std::size_t>(stamp_pieces),
                                                   std::string(stamp_placeholder))
                        : split_pieces(a.content, stream_piece_chars);
      if (pieces.empty())
        pieces.emplace_back();
      for (std::size_t k = 0; k < pieces.size(); ++k) {
        json delta = k == 0 ? json{{"role", "assistant"}, {"content", pieces[k]}}
                            : json{{"content", pieces[k]}};
        out.push_back(std::move(delta));
      }
    }
    longest = std::max(longest, out.size());
  }
  stream_reply reply;
  for (std::size_t k = 0; k < longest; ++k) {
    for (std::size_t i = 0; i < answers.size(); ++i) {
      if (k >= deltas[i].size())
        continue;
      json choice = chunk_choice(i, std::move(deltas[i][k]), nullptr);
      const auto& a = answers[i];
      if (req.logprobs && !a.call) {
        const auto& piece = choice["delta"]["content"].get_ref<const std::string&>();
        choice["logprobs"] = logprobs_document({piece}, req.top_logprobs, k);
      }
      reply.events.push_back(event(json::array({std::move(choice)})));
    }
  }
  reply.content_events = reply.events.size();
  for (std::size_t i = 0; i < answers.size(); ++i)
    reply.events.push_back(
        event(json::array({chunk_choice(i, json::object(), answers[i].finish_reason)})));
  if (req.include_usage) {
    json chunk = head;
    chunk["choices"] = json::array();
    chunk["usage"] = usage_document(req, answers);
    reply.events.push_back(sse_event(chunk));
  }
  reply.events.emplace_back("data: [DONE]\n\n");
  return reply;
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

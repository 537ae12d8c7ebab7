#include "net/http/api.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "net/http/json_depth.hpp"
#include "net/http/json_text.hpp"
#include "net/http/percent.hpp"

namespace parley::net {

namespace {

using json = nlohmann::json;

/// Parses a body that must be a JSON object; an empty body is `{}` when allowed.
parsed<json> parse_object(std::string_view body, bool empty_ok) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    if (empty_ok)
      return {json::object(), {}};
    return fail<json>(errc::invalid_request, "the request body is empty; send a JSON object");
  }
  if (json_depth(body) > max_json_depth)
    return fail<json>(errc::invalid_request, "the JSON body is nested too deeply");
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded())
    return fail<json>(errc::invalid_request, "the request body is not valid JSON (UTF-8)");
  if (!j.is_object())
    return fail<json>(errc::invalid_request, "the request body must be a JSON object");
  return {std::move(j), {}};
}

/// Compact JSON text; bytes that are not UTF-8 become U+FFFD instead of
/// making the dump throw (parsed bodies are UTF-8 already: a safety net).
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// True when no string in `j`, key or value, at any depth, holds a NUL.
bool free_of_nul(const json& j) {
  auto clean = [](const std::string& s) { return s.find('\0') == std::string::npos; };
  switch (j.type()) {
    case json::value_t::string:
      return clean(j.get_ref<const std::string&>());
    case json::value_t::object:
      for (auto& [k, v] : j.items())
        if (!clean(k) || !free_of_nul(v))
          return false;
      return true;
    case json::value_t::array:
      for (auto& v : j)
        if (!free_of_nul(v))
          return false;
      return true;
    default:
      return true;
  }
}

/// Whether a member of the body object holds a NUL in its key or value; the
/// first such member's name goes to `name`. Bodies that create stored rows are refused whole when any member
/// holds one, stored or not: the client meant something else.
bool nul_member(const json& body, std::string& name) {
  for (auto& [k, v] : body.items())
    if (k.find('\0') != std::string::npos || !free_of_nul(v)) {
      name = k.find('\0') == std::string::npos ? k : std::string{"(a member name)"};
      return true;
    }
  return false;
}

/// PostgreSQL's text holds no NUL, and cutting a string at one would store
/// something other than what was sent: a NUL in a stored field is refused.
template <class T>
parsed<T> nul_error(std::string_view field) {
  return fail<T>(errc::invalid_request, "'" + std::string{field} +
                                          "' must not contain NUL characters (\\u0000)");
}

/// Reads an optional string member; errors name the field.
template <class T>
bool optional_string(const json& j, const char* key, std::optional<std::string>& out,
                     parsed<T>& p) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    return true;
  if (!it->is_string()) {
    p.error = api_error{errc::invalid_request, std::string{"'"} + key + "' must be a string"};
    return false;
  }
  out = it->template get<std::string>();
  return true;
}

} // namespace

bool carries_history(std::string_view path) {
  return path == "/v1/chat/completions" || path == "/v1/responses";
}

bool is_json_content_type(std::string_view ct) {
  auto semi = ct.find(';');
  auto type = ct.substr(0, semi);
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t'))
    type.remove_suffix(1);
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t'))
    type.remove_prefix(1);
  constexpr std::string_view want = "application/json";
  if (type.size() != want.size())
    return false;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(type[i])) != want[i])
      return false;
  return true;
}

std::size_t utf8_length(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80)
      ++n;
  return n;
}

parsed<create_session_body> parse_create_session(std::string_view body) {
  parsed<create_session_body> p;
  auto j = parse_object(body, true);
  if (!j)
    return fail<create_session_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<create_session_body>(name);
  auto& v = p.value;
  if (!optional_string(j.value, "system_prompt", v.system_prompt, p) ||
      !optional_string(j.value, "model", v.model, p))
    return p;
  if (v.system_prompt && v.system_prompt->size() > max_content_bytes)
    return fail<create_session_body>(errc::payload_too_large,
                                     "'system_prompt' is longer than 32 KiB");
  if (v.model && (v.model->empty() || v.model->size() > 128))
    return fail<create_session_body>(errc::invalid_request,
                                     "'model' must be 1 to 128 characters");
  if (auto it = j.value.find("metadata"); it != j.value.end() && !it->is_null()) {
    if (!it->is_object())
      return fail<create_session_body>(errc::invalid_request, "'metadata' must be an object");
    v.metadata_json = dump(*it);
  }
  if (auto it = j.value.find("context_tokens"); it != j.value.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 0 ||
        it->get<std::int64_t>() > 100000000)
      return fail<create_session_body>(errc::invalid_request,
                                       "'context_tokens' must be an integer from 0 (off) to "
                                       "100000000");
    v.context_tokens = it->get<std::int64_t>();
  }
  return p;
}

parsed<post_message_body> parse_post_message(std::string_view body) {
  parsed<post_message_body> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<post_message_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<post_message_body>(name);
  auto it = j.value.find("content");
  if (it == j.value.end() || it->is_null())
    return fail<post_message_body>(errc::invalid_request, "'content' is required");
  if (!it->is_string())
    return fail<post_message_body>(errc::invalid_request, "'content' must be a string");
  p.value.content = it->get<std::string>();
  if (p.value.content.empty())
    return fail<post_message_body>(errc::invalid_request, "'content' must not be empty");
  if (p.value.content.size() > max_content_bytes)
    return fail<post_message_body>(errc::payload_too_large, "'content' is longer than 32 KiB");
  std::optional<std::string> cmid;
  if (!optional_string(j.value, "client_message_id", cmid, p))
    return p;
  if (cmid) {
    auto n = utf8_length(*cmid);
    if (n == 0 || n > max_client_message_id_chars)
      return fail<post_message_body>(errc::invalid_request,
                                     "'client_message_id' must be 1 to 128 characters");
    p.value.client_message_id = std::move(*cmid);
  }
  if (auto s = j.value.find("stream"); s != j.value.end() && !s->is_null()) {
    if (!s->is_boolean())
      return fail<post_message_body>(errc::invalid_request, "'stream' must be a boolean");
    p.value.stream = s->get<bool>();
    p.value.stream_given = true;
  }
  return p;
}

parsed<feedback_body> parse_feedback(std::string_view body) {
  parsed<feedback_body> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<feedback_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<feedback_body>(name);
  auto it = j.value.find("rating");
  if (it == j.value.end() || !it->is_number_integer() ||
      (it->get<std::int64_t>() != 1 && it->get<std::int64_t>() != -1))
    return fail<feedback_body>(errc::invalid_request, "'rating' must be -1 or 1");
  p.value.rating = static_cast<int>(it->get<std::int64_t>());
  if (!optional_string(j.value, "comment", p.value.comment, p))
    return p;
  if (p.value.comment && p.value.comment->size() > max_feedback_comment_bytes)
    return fail<feedback_body>(errc::invalid_request, "'comment' is longer than 4 KiB");
  return p;
}

parsed<create_key_body> parse_create_key(std::string_view body) {
  parsed<create_key_body> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<create_key_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<create_key_body>(name);
  auto it = j.value.find("user");
  if (it == j.value.end() || !it->is_string() || it->get<std::string>().empty())
    return fail<create_key_body>(errc::invalid_request, "'user' must be a non-empty string");
  p.value.user = it->get<std::string>();
  if (utf8_length(p.value.user) > 128)
    return fail<create_key_body>(errc::invalid_request, "'user' must be at most 128 characters");
  if (auto b = j.value.find("token_budget_per_day"); b != j.value.end() && !b->is_null()) {
    if (!b->is_number_integer() || b->get<std::int64_t>() < 0)
      return fail<create_key_body>(errc::invalid_request,
                                   "'token_budget_per_day' must be an integer >= 0 (0: unlimited)");
    p.value.token_budget_per_day = b->get<std::int64_t>();
  }
  if (auto m = j.value.find("models"); m != j.value.end() && !m->is_null()) {
    constexpr const char* what =
      "'models' must be an array of 1 to 64 model names, each 1 to 256 characters";
    if (!m->is_array() || m->empty() || m->size() > 64)
      return fail<create_key_body>(errc::invalid_request, what);
    for (auto& name : *m) {
      if (!name.is_string() || name.get_ref<const std::string&>().empty() ||
          utf8_length(name.get_ref<const std::string&>()) > 256)
        return fail<create_key_body>(errc::invalid_request, what);
      p.value.models.push_back(name.get<std::string>());
    }
  }
  return p;
}

parsed<migrate_body> parse_migrate(std::string_view body) {
  parsed<migrate_body> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<migrate_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<migrate_body>(name);
  auto it = j.value.find("to");
  if (it == j.value.end() || !it->is_string() || it->get<std::string>().empty())
    return fail<migrate_body>(errc::invalid_request, "'to' must be a non-empty node id");
  p.value.to = it->get<std::string>();
  if (p.value.to.size() > 256)
    return fail<migrate_body>(errc::invalid_request, "'to' must be at most 256 characters");
  return p;
}

parsed<chat_completion_body> parse_chat_completion(std::string_view body) {
  using P = chat_completion_body;
  parsed<P> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<P>(j.error->code, j.error->message);
  auto bad = [](std::string param, std::string message) {
    auto f = fail<P>(errc::invalid_request, std::move(message));
    f.error->param = std::move(param);
    return f;
  };
  auto model = j.value.find("model");
  if (model != j.value.end() && !model->is_null() && !model->is_string())
    return bad("model", "'model' must be a string");
  if (model != j.value.end() && model->is_string() && !model->get_ref<const std::string&>().empty())
    p.value.model = model->get<std::string>();
  else if (model != j.value.end())
    j.value.erase(model); // null or "": the default applies, as when absent
  auto msgs = j.value.find("messages");
  if (msgs == j.value.end() || !msgs->is_array() || msgs->empty())
    return bad("messages", "'messages' must be a non-empty array");
  // The gateway passes messages on as they are (API.md section 5): only
  // what every upstream would refuse is refused here, with the field named.
  std::size_t i = 0;
  for (auto& m : *msgs) {
    auto where = "messages[" + std::to_string(i++) + "]";
    if (!m.is_object())
      return bad(where, "'" + where + "' must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return bad(where + ".role", "'" + where + ".role' must be a string");
    auto r = role->get<std::string>();
    if (r != "system" && r != "developer" && r != "user" && r != "assistant" && r != "tool" &&
        r != "function")
      return bad(where + ".role", "'" + where + ".role' must be system, developer, user, "
                                  "assistant, tool or function, not '" + r + "'");
    auto content = m.find("content");
    std::string text;
    if (content == m.end() || content->is_null()) {
      // An assistant message with tool_calls, for one.
    } else if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      std::size_t k = 0;
      for (auto& part : *content) {
        auto at = where + ".content[" + std::to_string(k++) + "]";
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          return bad(at, "'" + at + "' must be an object with a string 'type'");
        if (auto t = part.find("text"); t != part.end() && t->is_string())
          text += t->get<std::string>();
      }
    } else {
      return bad(where + ".content",
                 "'" + where + ".content' must be a string, an array of parts or null");
    }
    p.value.messages.push_back({std::move(r), std::move(text)});
  }
  if (auto st = j.value.find("stream"); st != j.value.end() && !st->is_null()) {
    if (!st->is_boolean())
      return bad("stream", "'stream' must be true or false");
    p.value.stream = st->get<bool>();
  }
  if (auto so = j.value.find("stream_options"); so != j.value.end() && !so->is_null()) {
    if (!so->is_object())
      return bad("stream_options", "'stream_options' must be an object");
    if (auto iu = so->find("include_usage"); iu != so->end() && !iu->is_null()) {
      if (!iu->is_boolean())
        return bad("stream_options.include_usage",
                   "'stream_options.include_usage' must be true or false");
      p.value.include_usage = iu->get<bool>();
    }
  }
  // Streamed, Parley always asks for the usage chunk (for accounting) and
  // relays it only when the client asked; unstreamed, stream_options means
  // nothing to an upstream (and OpenAI refuses it), so it goes.
  if (p.value.stream)
    j.value["stream_options"]["include_usage"] = true;
  else
    j.value.erase("stream_options");
  p.value.upstream_body = dump(j.value);
  return p;
}

// --- OpenAI's stateful API (API.md section 5a) ------------------------------

namespace {

/// `metadata`: an object of at most 16 strings (OpenAI's bounds); `out`
/// keeps it serialized. Absent or null leaves `out` as it is.
template <class T>
bool read_metadata(const json& body, std::string& out, parsed<T>& p) {
  auto it = body.find("metadata");
  if (it == body.end() || it->is_null())
    return true;
  auto bad = [&p](std::string m) {
    p.error = api_error{errc::invalid_request, std::move(m)};
    return false;
  };
  if (!it->is_object())
    return bad("'metadata' must be an object of strings");
  if (it->size() > max_metadata_pairs)
    return bad("'metadata' holds at most 16 pairs");
  for (auto& [k, v] : it->items()) {
    if (k.empty() || utf8_length(k) > 64)
      return bad("'metadata' keys must be 1 to 64 characters");
    if (!v.is_string() || utf8_length(v.template get_ref<const std::string&>()) > 512)
      return bad("'metadata." + k + "' must be a string of at most 512 characters");
  }
  out = dump(*it);
  return true;
}

/// One message item (input_item); errors name it by `where`, in the
/// message and as `param` (the item, or its part or field at fault).
template <class T>
bool read_item(const json& j, const std::string& where, input_item& out, parsed<T>& p,
               bool system_roles = false) {
  auto bad_at = [&p](std::string param, std::string m) {
    p.error = api_error{errc::invalid_request, std::move(m), std::move(param)};
    return false;
  };
  auto bad = [&](const std::string& field, std::string m) {
    return bad_at(field.empty() ? where : where + "." + field, std::move(m));
  };
  if (!j.is_object())
    return bad("", "'" + where + "' must be an object");
  // API.md section 5a: items are text messages. Tool calls, their outputs,
  // reasoning and references are refused whole, never half taken.
  if (auto t = j.find("type"); t != j.end() && !t->is_null() && *t != "message")
    return bad("", "'" + where + "' is " +
                     (t->is_string() ? "a '" + t->get<std::string>() + "' item" : "not a message") +
                     ": only message items with text content are supported here (tool calls and "
                     "their outputs go through POST /v1/chat/completions)");
  auto role = j.find("role");
  if (role == j.end() || !role->is_string())
    return bad("role", "'" + where + ".role' is required");
  out.role = role->get<std::string>();
  bool system = system_roles && (out.role == "system" || out.role == "developer");
  if (!system && out.role != "user" && out.role != "assistant")
    return bad("role", "'" + where + ".role' must be \"user\" or \"assistant\"" +
                         (system_roles ? std::string{", \"system\" or \"developer\""}
                                       : std::string{" (give system text as 'instructions')"}));
  auto content = j.find("content");
  if (content == j.end() || content->is_null())
    return bad("content", "'" + where + ".content' is required");
  out.text.clear();
  if (content->is_string()) {
    out.text = content->get<std::string>();
  } else if (content->is_array()) {
    std::size_t k = 0;
    for (auto& part : *content) {
      auto at = where + ".content[" + std::to_string(k++) + "]";
      auto type = part.is_object() ? part.find("type") : part.end();
      if (!part.is_object() || type == part.end() || !type->is_string())
        return bad_at(at, "'" + at + "' must be an object with a string 'type'");
      if (*type != "input_text" && *type != "output_text" && *type != "text")
        return bad_at(at, "'" + at + "' is a '" + type->get<std::string>() +
                            "' part: only text parts (input_text, output_text) are supported "
                            "here");
      auto text = part.find("text");
      if (text == part.end() || !text->is_string())
        return bad_at(at + ".text", "'" + at + ".text' must be a string");
      out.text += text->get<std::string>();
    }
  } else {
    return bad("content", "'" + where + ".content' must be a string or an array of text parts");
  }
  if (out.text.empty())
    return bad("content", "'" + where + ".content' must not be empty");
  if (out.text.size() > max_content_bytes) {
    p.error = api_error{errc::payload_too_large, "'" + where + ".content' is longer than 32 KiB",
                        where + ".content"};
    return false;
  }
  return true;
}

/// `items`: an array of 1 to 20 message items when `required`, 0 to 20 otherwise.
template <class T>
bool read_items(const json& body, bool required, std::vector<input_item>& out, parsed<T>& p) {
  auto it = body.find("items");
  if (it == body.end() || it->is_null()) {
    if (!required)
      return true;
    p.error = api_error{errc::invalid_request, "'items' is required"};
    return false;
  }
  if (!it->is_array() || it->size() > max_items_per_request ||
      (required && it->empty())) {
    p.error = api_error{errc::invalid_request,
                        std::string{"'items' must be an array of "} + (required ? "1" : "0") +
                          " to 20 message items"};
    return false;
  }
  out.resize(it->size());
  for (std::size_t i = 0; i < it->size(); ++i)
    if (!read_item((*it)[i], "items[" + std::to_string(i) + "]", out[i], p))
      return false;
  return true;
}

} // namespace

parsed<create_conversation_body> parse_create_conversation(std::string_view body) {
  parsed<create_conversation_body> p;
  auto j = parse_object(body, true);
  if (!j)
    return fail<create_conversation_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<create_conversation_body>(name);
  if (!read_items(j.value, false, p.value.items, p))
    return p;
  read_metadata(j.value, p.value.metadata_json, p);
  return p;
}

parsed<update_conversation_body> parse_update_conversation(std::string_view body) {
  parsed<update_conversation_body> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<update_conversation_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<update_conversation_body>(name);
  auto it = j.value.find("metadata");
  if (it == j.value.end())
    return fail<update_conversation_body>(errc::invalid_request, "'metadata' is required");
  read_metadata(j.value, p.value.metadata_json, p);
  return p;
}

parsed<append_items_body> parse_append_items(std::string_view body) {
  parsed<append_items_body> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<append_items_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<append_items_body>(name);
  read_items(j.value, true, p.value.items, p);
  return p;
}

parsed<create_response_body> parse_create_response(std::string_view body) {
  parsed<create_response_body> p;
  auto j = parse_object(body, false);
  if (!j)
    return fail<create_response_body>(j.error->code, j.error->message);
  if (std::string name; nul_member(j.value, name))
    return nul_error<create_response_body>(name);
  auto& b = j.value;
  auto& v = p.value;
  auto bad = [](std::string m) { return fail<create_response_body>(errc::invalid_request, std::move(m)); };
  if (auto st = b.find("store"); st != b.end() && !st->is_null()) {
    if (!st->is_boolean())
      return bad("'store' must be true or false");
    v.store = st->get<bool>();
  }
  if (auto st = b.find("stream"); st != b.end() && !st->is_null()) {
    if (!st->is_boolean())
      return bad("'stream' must be true or false");
    v.stream = st->get<bool>();
  }
  if (!optional_string(b, "model", v.model, p) ||
      !optional_string(b, "instructions", v.instructions, p))
    return p;
  if (v.model && (v.model->empty() || v.model->size() > 128))
    return bad("'model' must be 1 to 128 characters");
  // A stored response is a text turn: tools the model could call would be
  // dropped without a word, so they are refused.
  if (auto t = b.find("tools"); t != b.end() && !t->is_null() && !(t->is_array() && t->empty()))
    return bad("'tools' are not supported on /v1/responses (its turns are text); call tools "
               "through /v1/chat/completions");
  auto in = b.find("input");
  if (in == b.end() || in->is_null())
    return bad("'input' is required");
  if (in->is_string()) {
    if (in->get_ref<const std::string&>().empty())
      return bad("'input' must not be empty");
    v.input.push_back({"user", in->get<std::string>()});
    if (v.input.back().text.size() > max_content_bytes)
      return fail<create_response_body>(errc::payload_too_large, "'input' is longer than 32 KiB");
  } else if (in->is_array() && !in->empty()) {
    v.input.resize(in->size());
    for (std::size_t i = 0; i < in->size(); ++i)
      if (!read_item((*in)[i], "input[" + std::to_string(i) + "]", v.input[i], p, true))
        return p;
  } else {
    return bad("'input' must be a string or a non-empty array of message items");
  }
  std::optional<std::string> prev;
  if (!optional_string(b, "previous_response_id", prev, p))
    return p;
  if (prev) {
    if (prev->empty() || prev->size() > 256)
      return bad("'previous_response_id' must be a response id");
    v.previous_response_id = *prev;
  }
  if (auto cv = b.find("conversation"); cv != b.end() && !cv->is_null()) {
    const json* id = &*cv;
    if (cv->is_object()) {
      auto it = cv->find("id");
      if (it == cv->end())
        return bad("'conversation.id' is required");
      id = &*it;
    }
    if (!id->is_string() || id->get_ref<const std::string&>().empty() ||
        id->get_ref<const std::string&>().size() > 256)
      return bad("'conversation' must be a conversation id or {\"id\": id}");
    v.conversation = id->get<std::string>();
  }
  if (!v.conversation.empty() && !v.previous_response_id.empty())
    return bad("'previous_response_id' and 'conversation' cannot be used together");
  json options = json::object();
  if (auto t = b.find("temperature"); t != b.end() && !t->is_null()) {
    if (!t->is_number() || t->get<double>() < 0 || t->get<double>() > 2)
      return bad("'temperature' must be a number from 0 to 2");
    v.temperature = t->get<double>();
    options["temperature"] = *v.temperature;
  }
  if (auto m = b.find("max_output_tokens"); m != b.end() && !m->is_null()) {
    if (!m->is_number_integer() || m->get<std::int64_t>() < 1 ||
        m->get<std::int64_t>() > 1'000'000'000)
      return bad("'max_output_tokens' must be a positive integer");
    v.max_output_tokens = m->get<std::int64_t>();
    options["max_tokens"] = *v.max_output_tokens;
  }
  v.call_options = dump(options);
  read_metadata(b, v.metadata_json, p);
  return p;
}

std::string with_model(std::string_view body, std::string_view model) {
  std::string out;
  out.reserve(body.size() + model.size() + 12);
  out += "{\"model\":";
  append_json_string(out, model);
  auto rest = body.substr(body.empty() ? 0 : 1); // after '{'
  if (rest.find_first_not_of(" \t\r\n") != std::string_view::npos && rest.front() != '}')
    out += ',';
  out += rest;
  return out;
}

namespace {

template <class T>
parsed<request_body> as_body(parsed<T>&& p) {
  parsed<request_body> out;
  if (p)
    out.value = std::move(p.value);
  else
    out.error = std::move(p.error);
  return out;
}

template <body_parser P, class T>
constexpr bool body_index_is() {
  return std::is_same_v<std::variant_alternative_t<static_cast<std::size_t>(P), request_body>, T>;
}
static_assert(body_index_is<body_parser::none, std::monostate>() &&
                body_index_is<body_parser::create_session, create_session_body>() &&
                body_index_is<body_parser::post_message, post_message_body>() &&
                body_index_is<body_parser::feedback, feedback_body>() &&
                body_index_is<body_parser::create_key, create_key_body>() &&
                body_index_is<body_parser::migrate, migrate_body>() &&
                body_index_is<body_parser::chat_completion, chat_completion_body>() &&
                body_index_is<body_parser::create_conversation, create_conversation_body>() &&
                body_index_is<body_parser::update_conversation, update_conversation_body>() &&
                body_index_is<body_parser::append_items, append_items_body>() &&
                body_index_is<body_parser::create_response, create_response_body>(),
              "request_body's alternatives follow enum body_parser");

} // namespace

parsed<request_body> parse_body(body_parser parser, std::string_view body) {
  switch (parser) {
    case body_parser::none: return {};
    case body_parser::create_session: return as_body(parse_create_session(body));
    case body_parser::post_message: return as_body(parse_post_message(body));
    case body_parser::feedback: return as_body(parse_feedback(body));
    case body_parser::create_key: return as_body(parse_create_key(body));
    case body_parser::migrate: return as_body(parse_migrate(body));
    case body_parser::chat_completion: return as_body(parse_chat_completion(body));
    case body_parser::create_conversation: return as_body(parse_create_conversation(body));
    case body_parser::update_conversation: return as_body(parse_update_conversation(body));
    case body_parser::append_items: return as_body(parse_append_items(body));
    case body_parser::create_response: return as_body(parse_create_response(body));
  }
  return {};
}

parsed<query_map> parse_query(std::string_view query) {
  parsed<query_map> p;
  while (!query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty())
      continue;
    auto eq = pair.find('=');
    std::string k, v;
    if (!percent_decode(pair.substr(0, eq), k, plus::space) ||
        !percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1),
                        v, plus::space))
      return fail<query_map>(errc::invalid_request, "the query string has a bad percent-escape");
    if (!is_clean_text(k, allow_controls::no) || !is_clean_text(v, allow_controls::no))
      return fail<query_map>(errc::invalid_request,
                             "the query string is not valid UTF-8 text (after percent-decoding)");
    p.value[std::move(k)] = std::move(v);
  }
  return p;
}

parsed<std::int64_t> query_int(const query_map& q, std::string_view key, std::int64_t dflt,
                               std::int64_t lo, std::int64_t hi) {
  auto it = q.find(key);
  if (it == q.end())
    return {dflt, {}};
  std::int64_t v = 0;
  auto& s = it->second;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || ptr != s.data() + s.size() || v < lo || v > hi)
    return fail<std::int64_t>(errc::invalid_request,
                              "query parameter '" + std::string{key} + "' must be an integer from " +
                                  std::to_string(lo) + " to " + std::to_string(hi));
  return {v, {}};
}

std::optional<std::int64_t> parse_seq(std::string_view s) {
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || ptr != s.data() + s.size() || v < 1)
    return std::nullopt;
  return v;
}

} // namespace parley::net

#include "actors/edge/openai_render.hpp"

#include <nlohmann/json.hpp>

#include "net/http/clock.hpp"
#include "net/http/json_text.hpp"
#include "net/http/openai_items.hpp"

namespace parley {

namespace {

using json = nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json metadata_json(const std::string& text) {
  json meta = json::parse(text, nullptr, false);
  return meta.is_object() ? meta : json::object();
}

json item_json(const std::string& session_id, const message_record& m) {
  bool user = m.role == "user";
  return {{"type", "message"},
          {"id", net::item_id(session_id, m.seq)},
          {"status", "completed"},
          {"role", m.role},
          {"content", json::array({user ? json{{"type", "input_text"}, {"text", m.content}}
                                        : json{{"type", "output_text"},
                                               {"text", m.content},
                                               {"annotations", json::array()}}})}};
}

/// The Response object; `status` in_progress and failed ones have no output yet.
json response_json(const response_view& v, const message_record& reply, const char* status,
                   bool with_output) {
  json options = json::parse(v.call_options, nullptr, false);
  if (!options.is_object())
    options = json::object();
  auto& u = reply.usage;
  json output_item = {
    {"type", "message"},
    {"id", v.store ? net::item_id(v.session_id, reply.seq) : "msg_" + v.id.substr(5)},
    {"status", "completed"},
    {"role", "assistant"},
    {"content",
     json::array({{{"type", "output_text"}, {"text", reply.content}, {"annotations", json::array()}}})}};
  return json(
    {{"id", v.id},
     {"object", "response"},
     {"created_at", net::unix_seconds(reply.created_at)},
     {"status", status},
     {"error", nullptr},
     {"incomplete_details", nullptr},
     {"instructions", v.instructions.empty() ? json(nullptr) : json(v.instructions)},
     {"max_output_tokens", options.value("max_tokens", json(nullptr))},
     {"model", reply.model},
     {"output", with_output ? json::array({std::move(output_item)}) : json::array()},
     {"parallel_tool_calls", true},
     {"previous_response_id",
      v.previous_response_id.empty() ? json(nullptr) : json(v.previous_response_id)},
     {"conversation", v.session_id.empty() ? json(nullptr)
                                           : json{{"id", net::conversation_id(v.session_id)}}},
     {"store", v.store},
     {"temperature", options.value("temperature", json(nullptr))},
     {"text", {{"format", {{"type", "text"}}}}},
     {"tool_choice", "auto"},
     {"tools", json::array()},
     {"top_p", nullptr},
     {"truncation", "disabled"},
     {"metadata", metadata_json(v.metadata_json)},
     {"usage",
      {{"input_tokens", u.prompt_tokens},
       {"input_tokens_details", {{"cached_tokens", 0}}},
       {"output_tokens", u.completion_tokens},
       {"output_tokens_details", {{"reasoning_tokens", 0}}},
       {"total_tokens", u.total_tokens}}}});
}

std::string sse(const json& data) {
  std::string out = "event: ";
  out += data["type"].get<std::string>();
  out += "\ndata: ";
  out += dump(data);
  out += "\n\n";
  return out;
}

json text_part(const std::string& text) {
  return {{"type", "output_text"}, {"text", text}, {"annotations", json::array()}};
}

} // namespace

namespace {

/// render_response written straight into a string (the same members as
/// response_json): a chained response is on every turn's path, where the
/// DOM cost more than the rest of the edge's work. Only for call options
/// "{}" (none): their numbers are response_json's to write.
std::string render_completed(const response_view& v, const message_record& reply) {
  std::string out;
  out.reserve(768 + reply.content.size() + v.instructions.size() + v.metadata_json.size());
  auto key = [&out](const char* name) {
    out += '"';
    out += name;
    out += "\":";
  };
  auto text = [&](const char* name, std::string_view value) {
    key(name);
    net::append_json_string(out, value);
    out += ',';
  };
  auto text_or_null = [&](const char* name, const std::string& value) {
    if (value.empty()) {
      key(name);
      out += "null,";
    } else {
      text(name, value);
    }
  };
  auto number = [&](const char* name, std::int64_t n) {
    key(name);
    out += std::to_string(n);
    out += ',';
  };
  out += '{';
  if (v.session_id.empty()) {
    out += "\"conversation\":null,";
  } else {
    out += "\"conversation\":{";
    text("id", net::conversation_id(v.session_id));
    out.back() = '}';
    out += ',';
  }
  number("created_at", net::unix_seconds(reply.created_at));
  out += "\"error\":null,";
  text("id", v.id);
  out += "\"incomplete_details\":null,";
  text_or_null("instructions", v.instructions);
  out += "\"max_output_tokens\":null,";
  // Stored metadata is JSON text Parley or PostgreSQL wrote: an object.
  out += "\"metadata\":";
  auto& meta = v.metadata_json;
  out += meta.size() >= 2 && meta.front() == '{' && meta.back() == '}' ? meta : std::string{"{}"};
  out += ',';
  text("model", reply.model);
  out += "\"object\":\"response\",\"output\":[{\"content\":[{\"annotations\":[],";
  text("text", reply.content);
  out += "\"type\":\"output_text\"}],";
  text("id", v.store ? net::item_id(v.session_id, reply.seq) : "msg_" + v.id.substr(5));
  out += "\"role\":\"assistant\",\"status\":\"completed\",\"type\":\"message\"}],"
         "\"parallel_tool_calls\":true,";
  text_or_null("previous_response_id", v.previous_response_id);
  out += "\"status\":\"completed\",\"store\":";
  out += v.store ? "true" : "false";
  out += ",\"temperature\":null,\"text\":{\"format\":{\"type\":\"text\"}},"
         "\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":null,\"truncation\":\"disabled\","
         "\"usage\":{";
  auto& u = reply.usage;
  number("input_tokens", u.prompt_tokens);
  out += "\"input_tokens_details\":{\"cached_tokens\":0},";
  number("output_tokens", u.completion_tokens);
  out += "\"output_tokens_details\":{\"reasoning_tokens\":0},";
  number("total_tokens", u.total_tokens);
  out.back() = '}';
  out += '}';
  return out;
}

} // namespace

std::string render_response(const response_view& v, const message_record& reply) {
  if (v.call_options.empty() || v.call_options == "{}")
    return render_completed(v, reply);
  return dump(response_json(v, reply, "completed", true));
}

std::string response_stream::opening(const response_view& v) {
  message_record pending;
  pending.created_at = now_rfc3339();
  pending.model = v.model;
  auto r = response_json(v, pending, "in_progress", false);
  r["usage"] = nullptr;
  std::string out = sse({{"type", "response.created"}, {"sequence_number", sequence++}, {"response", r}});
  out += sse({{"type", "response.in_progress"}, {"sequence_number", sequence++}, {"response", r}});
  out += sse({{"type", "response.output_item.added"},
              {"sequence_number", sequence++},
              {"output_index", 0},
              {"item",
               {{"id", item_id},
                {"type", "message"},
                {"status", "in_progress"},
                {"role", "assistant"},
                {"content", json::array()}}}});
  out += sse({{"type", "response.content_part.added"},
              {"sequence_number", sequence++},
              {"item_id", item_id},
              {"output_index", 0},
              {"content_index", 0},
              {"part", text_part("")}});
  return out;
}

std::string response_stream::delta(const std::string& piece) {
  text += piece;
  return sse({{"type", "response.output_text.delta"},
              {"sequence_number", sequence++},
              {"item_id", item_id},
              {"output_index", 0},
              {"content_index", 0},
              {"delta", piece},
              {"logprobs", json::array()}});
}

std::string response_stream::closing(const response_view& v, const message_record& reply) {
  auto& full = reply.content;
  std::string out = sse({{"type", "response.output_text.done"},
                         {"sequence_number", sequence++},
                         {"item_id", item_id},
                         {"output_index", 0},
                         {"content_index", 0},
                         {"text", full},
                         {"logprobs", json::array()}});
  out += sse({{"type", "response.content_part.done"},
              {"sequence_number", sequence++},
              {"item_id", item_id},
              {"output_index", 0},
              {"content_index", 0},
              {"part", text_part(full)}});
  auto r = response_json(v, reply, "completed", true);
  out += sse({{"type", "response.output_item.done"},
              {"sequence_number", sequence++},
              {"output_index", 0},
              {"item", r["output"][0]}});
  out += sse({{"type", "response.completed"}, {"sequence_number", sequence++}, {"response", r}});
  return out;
}

std::string response_stream::failed(const response_view& v, const api_error& e) {
  message_record pending;
  pending.created_at = now_rfc3339();
  pending.model = v.model;
  auto r = response_json(v, pending, "failed", false);
  r["usage"] = nullptr;
  r["error"] = {{"code", std::string{code_name(e.code)}}, {"message", e.message}};
  return sse({{"type", "response.failed"}, {"sequence_number", sequence++}, {"response", r}});
}

std::string render_response_deleted(const std::string& response_id) {
  return dump({{"id", response_id}, {"object", "response.deleted"}, {"deleted", true}});
}

std::string render_conversation(const session_record& s) {
  return dump({{"id", net::conversation_id(s.id)},
               {"object", "conversation"},
               {"created_at", net::unix_seconds(s.created_at)},
               {"metadata", metadata_json(s.metadata_json)}});
}

std::string render_conversation_deleted(const std::string& conversation_id) {
  return dump({{"id", conversation_id}, {"object", "conversation.deleted"}, {"deleted", true}});
}

std::string render_item_list(const std::string& session_id, const message_page& p) {
  json data = json::array();
  for (auto& m : p.data)
    data.push_back(item_json(session_id, m));
  auto id_of = [&](const message_record& m) { return json(net::item_id(session_id, m.seq)); };
  return dump({{"object", "list"},
               {"data", std::move(data)},
               {"first_id", p.data.empty() ? json(nullptr) : id_of(p.data.front())},
               {"last_id", p.data.empty() ? json(nullptr) : id_of(p.data.back())},
               {"has_more", p.next_after != 0}});
}

std::string render_item_list(const std::string& session_id,
                             const std::vector<message_record>& items) {
  message_page p;
  p.data = items;
  return render_item_list(session_id, p);
}

message_record unstored_reply(llm_result&& r) {
  message_record m;
  m.role = "assistant";
  m.content = std::move(r.content);
  m.model = std::move(r.model);
  m.usage = r.usage;
  m.created_at = now_rfc3339();
  return m;
}

} // namespace parley

#include "actors/edge/api_render.hpp"

#include <nlohmann/json.hpp>

#include "net/http/json_text.hpp"

namespace parley {

namespace {

using json = nlohmann::json;

// Stored text is valid UTF-8 (input is validated), but a renderer must never
// throw on the request path: replace anything invalid.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// An assistant message's usage; null when none was reported (an upstream
/// that sends none, a message stored before usage was recorded).
json usage_json(const token_usage& u) {
  if (!u.known)
    return nullptr;
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.total_tokens}};
}

json message_json(const message_record& m) {
  json j = {{"seq", m.seq}, {"role", m.role}, {"content", m.content}, {"created_at", m.created_at}};
  if (m.role == "assistant") {
    j["reply_to"] = m.reply_to;
    j["model"] = m.model;
    j["usage"] = usage_json(m.usage);
  } else if (!m.client_message_id.empty())
    j["client_message_id"] = m.client_message_id;
  return j;
}

json session_json(const session_record& s) {
  json meta = json::parse(s.metadata_json, nullptr, false);
  if (meta.is_discarded())
    meta = json::object();
  json j = {{"id", s.id},
            {"object", "session"},
            {"created_at", s.created_at},
            {"system_prompt", s.system_prompt.empty() ? json(nullptr) : json(s.system_prompt)},
            {"model", s.model},
            {"metadata", std::move(meta)},
            {"message_count", s.message_count},
            {"last_seq", s.last_seq}};
  if (s.context_tokens >= 0)
    j["context_tokens"] = s.context_tokens;
  return j;
}

} // namespace

std::string render_session(const session_record& s) { return dump(session_json(s)); }

std::string render_session_page(const session_page& p) {
  json data = json::array();
  for (auto& s : p.data)
    data.push_back(session_json(s));
  return dump({{"object", "list"},
               {"data", std::move(data)},
               {"next_cursor", p.next_cursor.empty() ? json(nullptr) : json(p.next_cursor)}});
}

std::string render_message_page(const message_page& p) {
  json data = json::array();
  for (auto& m : p.data)
    data.push_back(message_json(m));
  return dump({{"object", "list"},
               {"data", std::move(data)},
               {"next_after", p.next_after == 0 ? json(nullptr) : json(p.next_after)}});
}

namespace {

/// One message as message_json renders it (same keys, same order), written
/// straight into `out`: a turn's answer is on every turn's path.
void append_message(std::string& out, const message_record& m) {
  auto field = [&out](const char* name) {
    out += '"';
    out += name;
    out += "\":";
  };
  auto text = [&](const char* name, const std::string& value) {
    field(name);
    net::append_json_string(out, value);
    out += ',';
  };
  out += '{';
  if (m.role != "assistant" && !m.client_message_id.empty())
    text("client_message_id", m.client_message_id);
  text("content", m.content);
  text("created_at", m.created_at);
  if (m.role == "assistant") {
    text("model", m.model);
    field("reply_to");
    out += std::to_string(m.reply_to);
    out += ',';
  }
  text("role", m.role);
  field("seq");
  out += std::to_string(m.seq);
  if (m.role == "assistant") {
    out += ',';
    field("usage");
    if (!m.usage.known) {
      out += "null";
    } else {
      // Keys sorted, as a json object writes them.
      out += "{\"completion_tokens\":";
      out += std::to_string(m.usage.completion_tokens);
      out += ",\"prompt_tokens\":";
      out += std::to_string(m.usage.prompt_tokens);
      out += ",\"total_tokens\":";
      out += std::to_string(m.usage.total_tokens);
      out += '}';
    }
  }
  out += '}';
}

} // namespace

std::string render_turn(const turn_reply& t) {
  std::string out;
  out.reserve(192 + t.user.content.size() + t.reply.content.size());
  out += "{\"reply\":";
  append_message(out, t.reply);
  out += ",\"user_message\":";
  append_message(out, t.user);
  out += '}';
  return out;
}

namespace {

/// A key's public fields: never its secret, nor its hash.
json key_json(const api_key_record& k) {
  return {{"id", k.id},
          {"user", k.user_id},
          {"prefix", k.prefix},
          {"created_at", k.created_at},
          {"revoked", k.revoked},
          {"token_budget_per_day",
           k.token_budget_per_day < 0 ? json(nullptr) : json(k.token_budget_per_day)},
          {"models", k.models.empty() ? json(nullptr) : json(k.models)}};
}

} // namespace

std::string render_created_key(const api_key_record& k, const std::string& secret) {
  auto j = key_json(k);
  j["api_key"] = secret;
  return dump(j);
}

namespace {

/// `{"data": [...]}` of daily totals, each row with `key` (model or user).
std::string usage_rows(const std::vector<usage_total>& rows, const char* key,
                       std::string usage_total::*value) {
  json data = json::array();
  for (auto& r : rows)
    data.push_back({{"date", r.day},
                    {key, r.*value},
                    {"requests", r.requests},
                    {"prompt_tokens", r.prompt_tokens},
                    {"completion_tokens", r.completion_tokens}});
  return dump({{"data", std::move(data)}});
}

} // namespace

std::string render_usage(const std::vector<usage_total>& rows) {
  return usage_rows(rows, "model", &usage_total::model);
}

std::string render_top_usage(const std::vector<usage_total>& rows) {
  return usage_rows(rows, "user", &usage_total::user_id);
}

std::string render_key_list(const std::vector<api_key_record>& keys) {
  json data = json::array();
  for (auto& k : keys)
    data.push_back(key_json(k));
  return dump({{"data", std::move(data)}});
}

std::string render_delta_sse(std::string_view piece) {
  // One per streamed piece: written straight, no JSON document.
  std::string out;
  out.reserve(piece.size() + 36);
  out += "event: delta\ndata: {\"content\":";
  net::append_json_string(out, piece);
  out += "}\n\n";
  return out;
}

std::string render_done_sse(const turn_reply& t) {
  return "event: done\ndata: " + render_turn(t) + "\n\n";
}

std::string render_error_sse(const api_error& e) {
  return "event: error\ndata: " + error_body(e) + "\n\n";
}

std::string render_completion_error_sse(const api_error& e) {
  return "data: " + error_body(e) + "\n\n";
}

// The three below keep their fields in this order (a json object would sort
// them), so they are written out.
std::string render_feedback(const std::string& session_id, std::int64_t seq, int rating) {
  std::string out = "{\"session_id\":";
  net::append_json_string(out, session_id);
  out += ",\"seq\":" + std::to_string(seq) + ",\"rating\":" + std::to_string(rating) + "}";
  return out;
}

std::string render_health(const std::vector<std::string>& failing) {
  if (failing.empty())
    return R"({"status":"ok"})";
  std::string out = R"({"status":"unavailable","failing":[)";
  for (std::size_t i = 0; i < failing.size(); ++i) {
    if (i > 0)
      out += ',';
    net::append_json_string(out, failing[i]);
  }
  return out + "]}";
}

std::string render_ready(bool ready, const std::string& postgres, const std::string& redis,
                         const std::string& cluster, const std::string& actors) {
  std::string out = ready ? R"({"status":"ready","checks":{"postgres":)"
                          : R"({"status":"unavailable","checks":{"postgres":)";
  net::append_json_string(out, postgres);
  out += ",\"redis\":";
  net::append_json_string(out, redis);
  out += ",\"cluster\":";
  net::append_json_string(out, cluster);
  out += ",\"actors\":";
  net::append_json_string(out, actors);
  return out + "}}";
}

std::string render_completion(const std::string& id, std::int64_t created, const llm_result& r) {
  json j = {{"id", id},
            {"object", "chat.completion"},
            {"created", created},
            {"model", r.model},
            {"choices",
             json::array({{{"index", 0},
                           {"message", {{"role", "assistant"}, {"content", r.content}}},
                           {"logprobs", nullptr},
                           {"finish_reason", "stop"}}})}};
  if (r.usage.known)
    j["usage"] = usage_json(r.usage);
  return dump(j);
}

std::string render_relayed_chunk(const std::string& data) {
  std::string out;
  out.reserve(data.size() + 8);
  out += "data: ";
  for (std::size_t at = 0;;) {
    auto nl = data.find('\n', at);
    out.append(data, at, nl == std::string::npos ? std::string::npos : nl - at);
    if (nl == std::string::npos)
      break;
    out += "\ndata: ";
    at = nl + 1;
  }
  out += "\n\n";
  return out;
}

std::vector<std::string> render_completion_as_chunks(const std::string& raw, bool include_usage) {
  std::vector<std::string> out;
  auto whole = json::parse(raw, nullptr, false);
  if (!whole.is_object() || !whole.contains("choices") || !whole["choices"].is_array())
    return out;
  json head = json::object();
  for (auto& [k, v] : whole.items())
    if (k != "choices" && k != "usage" && k != "object")
      head[k] = v;
  head["object"] = "chat.completion.chunk";
  for (auto& choice : whole["choices"]) {
    if (!choice.is_object())
      continue;
    json delta = choice.value("message", json::object());
    if (!delta.is_object())
      delta = json::object();
    if (auto calls = delta.find("tool_calls"); calls != delta.end() && calls->is_array()) {
      int i = 0;
      for (auto& call : *calls)
        if (call.is_object() && !call.contains("index"))
          call["index"] = i++;
    }
    json c = {{"index", choice.value("index", 0)},
              {"delta", std::move(delta)},
              {"logprobs", choice.value("logprobs", json(nullptr))},
              {"finish_reason", choice.value("finish_reason", json(nullptr))}};
    json chunk = head;
    chunk["choices"] = json::array({std::move(c)});
    out.push_back("data: " + dump(chunk) + "\n\n");
  }
  if (include_usage && whole.contains("usage") && whole["usage"].is_object()) {
    json chunk = head;
    chunk["choices"] = json::array();
    chunk["usage"] = whole["usage"];
    out.push_back("data: " + dump(chunk) + "\n\n");
  }
  return out;
}

std::string render_usage_chunk(const std::string& id, std::int64_t created,
                               const std::string& model, const token_usage& usage) {
  return "data: " +
         dump({{"id", id},
               {"object", "chat.completion.chunk"},
               {"created", created},
               {"model", model},
               {"choices", json::array()},
               {"usage", usage_json(usage)}}) +
         "\n\n";
}

std::string render_completion_chunk(const std::string& id, std::int64_t created,
                                    const std::string& model, const std::string* piece,
                                    bool first, bool last) {
  json delta = json::object();
  if (first)
    delta["role"] = "assistant";
  if (piece)
    delta["content"] = *piece;
  json choice = {{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr},
                 {"finish_reason", last ? json("stop") : json(nullptr)}};
  return "data: " +
         dump({{"id", id},
               {"object", "chat.completion.chunk"},
               {"created", created},
               {"model", model},
               {"choices", json::array({std::move(choice)})}}) +
         "\n\n";
}

std::string render_models(const std::vector<std::string>& ids) {
  json data = json::array();
  for (auto& m : ids)
    data.push_back({{"id", m}, {"object", "model"}, {"created", 0}, {"owned_by", "parley"}});
  return dump({{"object", "list"}, {"data", std::move(data)}});
}

std::string render_object(const std::vector<std::pair<std::string, std::string>>& fields) {
  json j = json::object();
  for (auto& [k, v] : fields)
    j[k] = v;
  return dump(j);
}

std::string render_cluster(const std::string& self_id, std::uint64_t view_version,
                           const std::vector<member_info>& members,
                           const std::map<std::string, std::string>& stats) {
  json nodes = json::array();
  for (auto& m : members) {
    json figures = nullptr;
    if (auto it = stats.find(m.id); it != stats.end())
      figures = json::parse(it->second, nullptr, false);
    if (figures.is_discarded())
      figures = nullptr;
    // The member's own figures, asked for this answer, are fresher than its
    // last heartbeat's count: one answer shows one count.
    json sessions_active = m.sessions_active;
    if (figures.is_object())
      if (auto it = figures.find("sessions_active"); it != figures.end() && it->is_number_unsigned())
        sessions_active = *it;
    nodes.push_back({{"id", m.id},
                     {"http", m.http},
                     {"cluster", m.cluster},
                     {"status", to_string(m.status)},
                     {"sessions_active", std::move(sessions_active)},
                     {"self", m.id == self_id},
                     {"stats", std::move(figures)}});
  }
  return dump({{"self", self_id}, {"view_version", view_version}, {"nodes", std::move(nodes)}});
}

std::string render_actors(const std::string& node_id,
                          const std::vector<actor_type_figures>& types) {
  return dump({{"node", node_id}, {"actors", types}});
}

std::string render_location(const session_record& s, const session_location& where) {
  return dump({{"id", s.id},
               {"node", where.node},
               {"state", to_string(where.state)},
               {"user", s.user_id},
               {"message_count", s.message_count},
               {"last_seq", s.last_seq},
               {"epoch", s.epoch}});
}

} // namespace parley

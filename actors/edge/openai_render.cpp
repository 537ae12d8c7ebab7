#include "actors/edge/openai_render.hpp"

#include <nlohmann/json.hpp>

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

} // namespace

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

} // namespace parley

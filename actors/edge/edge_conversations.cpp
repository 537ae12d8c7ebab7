// The edge's Conversations routes (API.md section 5a): a conversation is a
// session (`conv_` + its id), its items are the session's messages, so
// these are the session routes in OpenAI's shapes. Records come straight
// from storage; a conversation created with items writes them in the same
// transaction as its session row, before any session actor can exist.

#include "actors/edge/edge_state.hpp"
#include "actors/edge/openai_render.hpp"
#include "net/http/clock.hpp"
#include "net/http/openai_items.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

api_error not_found_conversation(const call_ptr& c) {
  return {errc::not_found, "conversation '" + c->id + "' not found"};
}

/// The session the call's conversation id names, or nothing after
/// answering 404.
std::optional<std::string> session_of(const call_ptr& c) {
  auto s = net::session_of_conversation(c->id);
  if (!s)
    reply_error(c, not_found_conversation(c));
  return s;
}

/// A storage error, with a session's not_found spoken of as the conversation.
void reply_storage_error(const call_ptr& c, const caf::error& e) {
  auto err = to_api_error(e);
  if (err.code == errc::not_found)
    err = not_found_conversation(c);
  reply_error(c, err);
}

} // namespace

void handle_create_conversation(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  auto& body = body_of<net::create_conversation_body>(c);
  session_record s;
  // With an Idempotency-Key the id derives from the user and the key, so a
  // retry finds the conversation its first attempt made; the request's
  // hash tells a retry from another request reusing the key.
  s.id = c->idempotency_key.empty()
           ? random_hex(16)
           : hash_key("conversation-create\n" + key->user_id + '\n' + c->idempotency_key)
               .substr(0, 32);
  s.user_id = key->user_id;
  s.created_at = now_rfc3339();
  s.model = st.cfg.default_model;
  s.metadata_json = body.metadata_json;
  std::vector<message_record> first;
  first.reserve(body.items.size());
  for (auto& item : body.items) {
    message_record m;
    m.role = item.role;
    m.content = std::move(item.text);
    first.push_back(std::move(m));
  }
  auto& storage = st.storage->for_session(s.id);
  auto answer = [c](session_record& r) { reply(c, 200, render_conversation(r)); };
  auto fail = [c](caf::error& e) { reply_error(c, e); };
  if (c->idempotency_key.empty()) {
    self->request(storage, st.cfg.storage_timeout, new_sess_atom::value, std::move(s),
                  std::move(first))
      .then(answer, fail);
    return;
  }
  std::string request = s.metadata_json;
  for (auto& m : first)
    request += '\n' + m.role + '\n' + std::to_string(m.content.size()) + '\n' + m.content;
  self->request(storage, st.cfg.storage_timeout, new_sess_atom::value, std::move(s),
                std::move(first), hash_key(request))
    .then(answer, fail);
}

void handle_get_conversation(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto session = session_of(c);
  if (!session)
    return;
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, get_sess_atom::value, *session,
                key->user_id)
    .then([c](session_record& r) { reply(c, 200, render_conversation(r)); },
          [c](caf::error& e) { reply_storage_error(c, e); });
}

void handle_update_conversation(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto session = session_of(c);
  if (!session)
    return;
  auto& st = self->state;
  update_metadata_request u{*session, key->user_id,
                            body_of<net::update_conversation_body>(c).metadata_json};
  self->request(st.storage->for_session(*session), st.cfg.storage_timeout, set_meta_atom::value,
                std::move(u))
    .then([c](session_record& r) { reply(c, 200, render_conversation(r)); },
          [c](caf::error& e) { reply_storage_error(c, e); });
}

void handle_delete_conversation(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto session = session_of(c);
  if (!session)
    return;
  auto& st = self->state;
  self->request(st.storage->for_session(*session), st.cfg.storage_timeout, del_sess_atom::value,
                *session, key->user_id)
    .then(
      [self, c, session = *session](bool deleted) {
        if (!deleted)
          return reply_error(c, not_found_conversation(c));
        self->send(route_to(self, session).first, gone_atom::value, session);
        reply(c, 200, render_conversation_deleted(c->id));
      },
      [c](caf::error& e) { reply_storage_error(c, e); });
}

void handle_list_conversation_items(edge_self* self, const call_ptr& c,
                                    const api_key_record* key) {
  auto session = session_of(c);
  if (!session)
    return;
  auto& st = self->state;
  list_messages_request r{*session, key->user_id, 0, c->limit, !c->ascending};
  if (!c->cursor.empty()) {
    auto seq = net::seq_of_item(c->cursor, *session);
    if (!seq)
      return reply_error(c, {errc::invalid_request, "query parameter 'after' is not an item of "
                                                    "conversation '" + c->id + "'"});
    r.after = *seq;
  } else if (r.descending) {
    r.after = INT64_MAX;
  }
  self->request(st.storage->any(), st.cfg.storage_timeout, list_msg_atom::value, std::move(r))
    .then([c, session = *session](message_page& p) {
            reply(c, 200, render_item_list(session, p));
          },
          [c](caf::error& e) { reply_storage_error(c, e); });
}

void handle_append_conversation_items(edge_self* self, const call_ptr& c,
                                      const api_key_record* key) {
  auto session = session_of(c);
  if (!session)
    return;
  // Through the session's actor, its one writer: the items take the next
  // seqs between two turns, never beside one.
  turn_request t;
  t.session_id = *session;
  t.user_id = key->user_id;
  t.request_id = c->request_id;
  for (auto& item : body_of<net::append_items_body>(c).items) {
    message_record m;
    m.role = std::move(item.role);
    m.content = std::move(item.text);
    t.append.push_back(std::move(m));
  }
  request_turn(self, c, std::move(t), [session = *session](const call_ptr& call, turn_reply& r) {
    reply(call, 200, render_item_list(session, r.appended));
  });
}

} // namespace parley

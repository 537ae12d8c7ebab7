// The edge's session routes (a user key checked out): records straight
// from storage, turns through the registry of the session's owner.

#include "actors/edge/api_render.hpp"
#include "actors/edge/edge_state.hpp"
#include "runtime/rules/key_policy.hpp"
#include "runtime/rules/token_budget.hpp"
#include "runtime/rules/token_usage.hpp"
#include "actors/edge/stream_sink.hpp"
#include "net/http/clock.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

api_error not_found_session(const call_ptr& c) {
  return {errc::not_found, "session '" + c->id + "' not found"};
}

/// True exactly once per remote turn: when its answer may still be sent
/// (the ticket leaves the gate then). Always true for a local one.
bool settle(edge_self* self, const std::string& node, std::uint64_t ticket) {
  auto& st = self->state;
  if (node == st.cfg.node_id)
    return true;
  auto n = st.remote.find(node);
  if (n == st.remote.end() || n->second.erase(ticket) == 0)
    return false;
  if (n->second.empty())
    st.remote.erase(n);
  return true;
}

} // namespace

void request_turn(edge_self* self, const call_ptr& c, turn_request t, turn_answer answer,
                  sink_maker make_sink, budget_hold_ptr budget, turn_refusal refused) {
  auto& st = self->state;
  if (!budget)
    budget = c->budget;
  auto admitted = admit(self, c, "turns");
  if (!admitted)
    return;
  auto [registry, node] = route_to(self, t.session_id);
  auto ticket = ++st.next_ticket;
  // The ticket stays where the turn's answer is settled: with the remote
  // turns (answered at once when that node goes down), with the streams
  // (until the sink reports), or with the reply's handlers.
  std::shared_ptr<inflight_gate::ticket> held;
  if (node != st.cfg.node_id) {
    auto via = caf::actor_cast<caf::actor_control_block*>(registry);
    if (st.watched.insert(via).second)
      self->monitor(registry); // at once when it is dead already
    st.remote[node].emplace(ticket, remote_turn{c, std::move(*admitted), via});
  }
  else if (c->stream)
    st.streams.emplace(ticket, std::move(*admitted));
  else
    held = std::make_shared<inflight_gate::ticket>(std::move(*admitted));
  if (c->stream) {
    // The turn's usage settles the key's budget in the sink; without a
    // reply the reservation goes back.
    turn_listener on_reply;
    if (budget)
      on_reply = [budget](const turn_reply& r) { budget->settle(r.reply.usage); };
    sink_target target{c, caf::actor_cast<edge_actor>(self), node, ticket};
    if (refused) {
      target.redirect = true;
      st.stream_refusals.emplace(ticket, std::make_pair(c, std::move(refused)));
    }
    c->sink = make_sink ? make_sink(std::move(target), registry, std::move(t), std::move(on_reply))
                        : spawn_turn_sink(self->home_system(), std::move(target), registry,
                                          std::move(t), st.cfg.turn_timeout,
                                          st.cfg.cancel_on_disconnect, std::move(on_reply));
    return;
  }
  timed_request<turn_reply>(
      self, registry, st.cfg.turn_timeout,
      [self, c, node = node, ticket, held, budget, answer = std::move(answer)](turn_reply& r) {
        // The turn's usage settles the key's budget, whether or not its
        // client still waits; without a reply the reservation goes back.
        if (budget)
          budget->settle(r.reply.usage);
        if (!settle(self, node, ticket))
          return;
        if (held)
          held->reset();
        answer(c, r);
      },
      [self, c, node = node, ticket, held, refused = std::move(refused)](caf::error& e) {
        if (!settle(self, node, ticket))
          return;
        if (held)
          held->reset();
        auto err = to_api_error(e);
        if (refused && refused(c, err))
          return;
        if (err.code == errc::session_busy)
          self->state.metrics->shed("session_busy");
        reply_error(c, err);
      },
      std::move(t));
}

namespace {

void start_turn(edge_self* self, const call_ptr& c, const std::string& user,
                std::vector<std::string> models, budget_hold_ptr budget) {
  auto& msg = body_of<net::post_message_body>(c);
  turn_request t{c->id, user, std::move(msg.content), std::move(msg.client_message_id),
                 c->request_id, 0, caf::actor{}, std::move(models)};
  request_turn(
    self, c, std::move(t),
    [](const call_ptr& call, turn_reply& r) { reply(call, 200, render_turn(r)); }, {},
    std::move(budget));
}

} // namespace

void handle_create_session(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  auto& body = body_of<net::create_session_body>(c);
  session_record s;
  s.id = random_hex(16);
  s.user_id = key->user_id;
  s.created_at = now_rfc3339();
  s.system_prompt = body.system_prompt.value_or("");
  s.model = body.model.value_or(st.cfg.default_model);
  if (!model_allowed(key->models, s.model))
    return reply_error(c, {errc::forbidden, model_refusal(key->models, s.model)});
  s.metadata_json = body.metadata_json;
  s.context_tokens = body.context_tokens;
  auto& storage = st.storage->for_session(s.id);
  self->request(storage, st.cfg.storage_timeout, new_sess_atom::value, std::move(s))
    .then([c](session_record& r) { reply(c, 201, render_session(r)); },
          [c](caf::error& e) { reply_error(c, e); });
}

void handle_list_sessions(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, list_sess_atom::value,
                list_sessions_request{key->user_id, c->limit, c->cursor})
    .then([c](session_page& p) { reply(c, 200, render_session_page(p)); },
          [c](caf::error& e) { reply_error(c, e); });
}

void handle_get_session(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, get_sess_atom::value, c->id,
                key->user_id)
    .then([c](session_record& r) { reply(c, 200, render_session(r)); },
          [c](caf::error& e) { reply_error(c, e); });
}

void handle_delete_session(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  self->request(st.storage->for_session(c->id), st.cfg.storage_timeout, del_sess_atom::value,
                c->id, key->user_id)
    .then(
      [self, c](bool deleted) {
        if (!deleted)
          return reply_error(c, not_found_session(c));
        self->send(route_to(self, c->id).first, gone_atom::value, c->id);
        reply(c, 204, {});
      },
      [c](caf::error& e) { reply_error(c, e); });
}

void handle_post_message(edge_self* self, const call_ptr& c, const api_key_record* key) {
  // The turn's reservation: its new message and a completion allowance (the
  // history the session adds is unknown here; operations.md's bound).
  auto reserve = [c] {
    return budget_reservation(estimate_message_tokens(body_of<net::post_message_body>(c).content),
                              std::nullopt);
  };
  with_rate_limit(self, c, *key, reserve,
                  [self, c, user = key->user_id, models = key->models](budget_hold_ptr budget) {
                    start_turn(self, c, user, models, std::move(budget));
                  });
}

void handle_list_messages(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, list_msg_atom::value,
                list_messages_request{c->id, key->user_id, c->after, c->limit})
    .then([c](message_page& p) { reply(c, 200, render_message_page(p)); },
          [c](caf::error& e) { reply_error(c, e); });
}

void handle_post_feedback(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  auto& fb = body_of<net::feedback_body>(c);
  feedback_request fr{c->id, key->user_id, c->seq, static_cast<std::int32_t>(fb.rating), {}};
  if (fb.comment)
    fr.comment = *fb.comment;
  self->request(st.storage->any(), st.cfg.storage_timeout, feedback_atom::value, std::move(fr))
    .then(
      [c](feedback_outcome o) {
        auto seq = std::to_string(c->seq);
        switch (o) {
          case feedback_outcome::stored:
            return reply(c, 201,
                         render_feedback(c->id, c->seq, body_of<net::feedback_body>(c).rating));
          case feedback_outcome::no_session:
            return reply_error(c, not_found_session(c));
          case feedback_outcome::no_message:
            return reply_error(c, {errc::not_found,
                                   "message " + seq + " not found in session '" + c->id + "'"});
          case feedback_outcome::not_assistant:
            return reply_error(c, {errc::invalid_request, "feedback is for assistant messages; "
                                                          "message " +
                                                            seq + " is a user message"});
        }
      },
      [c](caf::error& e) { reply_error(c, e); });
}

namespace {

/// 503 at once (a stream's sink writes it); the ticket leaves the gate.
void abandon(edge_self* self, const std::string& node, remote_turn& t) {
  t.admitted.reset();
  auto& c = t.call;
  if (c->sink) {
    self->send(c->sink, gone_atom::value);
    return;
  }
  reply_error(c, {errc::session_moved, "node '" + node + "' hosting session '" + c->id +
                                         "' went down; retry with the same "
                                         "client_message_id"});
}

} // namespace

/// Answers the turns waiting on `node`, which went down.
void abandon_turns_on(edge_self* self, const std::string& node) {
  auto& st = self->state;
  auto n = st.remote.find(node);
  if (n == st.remote.end())
    return;
  auto turns = std::move(n->second);
  st.remote.erase(n);
  for (auto& [ticket, t] : turns)
    abandon(self, node, t);
}

void abandon_turns_via(edge_self* self, const caf::actor_control_block* proxy) {
  auto& st = self->state;
  st.watched.erase(proxy);
  std::vector<std::pair<std::string, remote_turn>> lost;
  for (auto n = st.remote.begin(); n != st.remote.end();) {
    auto& turns = n->second;
    for (auto t = turns.begin(); t != turns.end();)
      if (t->second.via == proxy) {
        lost.emplace_back(n->first, std::move(t->second));
        t = turns.erase(t);
      } else {
        ++t;
      }
    n = turns.empty() ? st.remote.erase(n) : std::next(n);
  }
  for (auto& [node, t] : lost)
    abandon(self, node, t);
}

namespace {

/// A stream's in-flight ticket goes; false when it was gone already (its
/// node went down and the request was answered: abandon_turns_on).
bool close_stream(edge_self* self, const std::string& node, std::uint64_t ticket) {
  auto& st = self->state;
  if (node.empty() || node == st.cfg.node_id)
    return st.streams.erase(ticket) > 0;
  return settle(self, node, ticket);
}

} // namespace

/// A sink reported its stream complete.
void stream_finished(edge_self* self, const std::string& node, std::uint64_t ticket) {
  self->state.stream_refusals.erase(ticket);
  close_stream(self, node, ticket);
}

void stream_refused(edge_self* self, const stream_refusal& r) {
  auto& st = self->state;
  auto found = st.stream_refusals.find(r.ticket);
  if (found == st.stream_refusals.end())
    return stream_finished(self, r.node, r.ticket);
  auto [c, refused] = std::move(found->second);
  st.stream_refusals.erase(found);
  if (!close_stream(self, r.node, r.ticket))
    return;
  auto err = to_api_error(r.why);
  if (!refused(c, err))
    reply_error(c, err);
}

} // namespace parley

// The edge's Responses routes (API.md section 5a). A stored response is a
// committed turn of its conversation's session, run by the session's actor
// on the node that owns it (request_turn, as `POST .../messages`): the
// response id is `resp_` + session id + `_` + the reply's seq, so nothing
// beyond the turn is stored. `previous_response_id` naming the latest
// response continues its session; naming an earlier one forks (a new
// session holding the history up to it, copied in one statement). An
// `Idempotency-Key` is the turn's client_message_id; a request that makes a
// new session (no conversation, or a fork) derives the session's id from
// the user and the key, so that a retry finds the same session and the
// same turn. The key is the user's: the turn's commit claims it for its
// session (response_keys), and a repeat that would reach or make another
// session is 409 (the session actor's lookup, or the statement that would
// make the session, refuses it before any model call). `store: false`
// reads the history and calls the model here, writing nothing (its key
// claims nothing).

#include <algorithm>

#include "actors/edge/edge_state.hpp"
#include "actors/edge/openai_render.hpp"
#include "actors/edge/stream_sink.hpp"
#include "net/http/clock.hpp"
#include "net/http/openai_items.hpp"
#include "runtime/rules/context_window.hpp"
#include "runtime/rules/key_policy.hpp"
#include "runtime/rules/token_budget.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

api_error not_found_response(const std::string& id) {
  return {errc::not_found, "response '" + id + "' not found"};
}

const net::create_response_body& body(const call_ptr& c) {
  return body_of<net::create_response_body>(c);
}

/// The session a request makes (a new conversation, a fork): random, or
/// with an Idempotency-Key the same for every attempt of one request.
std::string new_session_id(const std::string& user, const std::string& key, const char* kind) {
  if (key.empty())
    return random_hex(16);
  return hash_key(std::string{kind} + '\n' + user + '\n' + key).substr(0, 32);
}

/// What an Idempotency-Key's repeat must bring again (API.md section 5a):
/// every field of the request that shapes its response or what is stored
/// (model, every input item, instructions, temperature and
/// max_output_tokens, metadata, previous_response_id, conversation), and
/// not how it is delivered (`stream`; a stored response has `store` true).
/// Each field length-prefixed, so that no two requests run together.
std::string request_hash(const net::create_response_body& b) {
  std::string all;
  auto add = [&all](std::string_view field) {
    all += std::to_string(field.size());
    all += ':';
    all += field;
  };
  add(b.model ? "model " + *b.model : std::string{});
  add(b.instructions ? "instructions " + *b.instructions : std::string{});
  add(b.call_options);
  add(b.metadata_json);
  add(b.previous_response_id);
  add(b.conversation);
  for (auto& item : b.input) {
    add(item.role);
    add(item.text);
  }
  return hash_key(all).substr(0, 32);
}

/// The stored response: a turn of `session_id`; with `previous_seq` (and
/// `refused`, which sees its errors first) a turn that must continue that
/// response (turn_request::previous_seq).
void run_stored(edge_self* self, const call_ptr& c, const api_key_record& key,
                const std::string& session_id, std::int64_t previous_seq = 0,
                turn_refusal refused = {}) {
  auto& b = body(c);
  // The last user item is the turn's message, the user and assistant items
  // before it are stored before it in the same commit (a replayed history);
  // system and developer items join the instructions of this call (never
  // stored, like them). handle_create_response checked the order.
  std::string text, instructions = b.instructions.value_or("");
  std::vector<message_record> before;
  for (auto& item : b.input) {
    if (item.role == "user" || item.role == "assistant") {
      if (!text.empty()) {
        message_record m;
        m.role = "user";
        m.content = std::move(text);
        before.push_back(std::move(m));
        text.clear();
      }
      if (item.role == "user") {
        text = item.text;
      } else {
        message_record m;
        m.role = "assistant";
        m.content = item.text;
        before.push_back(std::move(m));
      }
    } else {
      instructions += (instructions.empty() ? "" : "\n\n") + item.text;
    }
  }
  turn_request t{session_id,    key.user_id, std::move(text), c->idempotency_key,
                 c->request_id, 0,           caf::actor{},    key.models};
  t.before = std::move(before);
  t.instructions = std::move(instructions);
  t.call_options = b.call_options;
  t.previous_seq = previous_seq;
  if (b.model) // a continued conversation answers with the model the request names
    t.model = *b.model;
  if (!c->idempotency_key.empty())
    t.request_hash = request_hash(b);
  // What GET /v1/responses/{id} gives back; a response with none of them
  // stores no row.
  t.options.keep = !t.instructions.empty() || b.metadata_json != "{}" || b.call_options != "{}";
  if (t.options.keep) {
    t.options.instructions = t.instructions;
    t.options.metadata_json = b.metadata_json;
    t.options.call_options = b.call_options;
  }
  response_view v{{}, session_id, b.previous_response_id, t.instructions, b.metadata_json,
                  b.call_options, true};
  auto& cfg = self->state.cfg;
  sink_maker streamed;
  if (c->stream)
    streamed = [sys = &self->home_system(), v, timeout = cfg.turn_timeout,
                cancel = cfg.cancel_on_disconnect](sink_target to, registry_actor registry,
                                                   turn_request turn, turn_listener on_reply) {
      return spawn_response_sink(*sys, std::move(to), std::move(registry), std::move(turn), v,
                                 timeout, cancel, std::move(on_reply));
    };
  request_turn(
    self, c, std::move(t),
    [v](const call_ptr& call, turn_reply& r) mutable {
      v.id = net::response_id(v.session_id, r.reply.seq);
      reply(call, 200, render_response(v, r.reply));
    },
    std::move(streamed), {}, std::move(refused));
}

void new_conversation(edge_self* self, const call_ptr& c, const api_key_record& key) {
  auto& st = self->state;
  auto& b = body(c);
  session_record s;
  s.id = new_session_id(key.user_id, c->idempotency_key, "conversation");
  s.user_id = key.user_id;
  s.created_at = now_rfc3339();
  s.model = b.model.value_or(st.cfg.default_model);
  if (!model_allowed(key.models, s.model))
    return reply_error(c, {errc::forbidden, model_refusal(key.models, s.model)});
  auto id = s.id;
  self->request(st.storage->for_session(id), st.cfg.storage_timeout, ensure_atom::value,
                std::move(s), c->idempotency_key)
    .then(
      [self, c, key, id](bool exists) {
        if (!exists)
          return reply_error(c, {errc::conflict, "the Idempotency-Key was used for another "
                                                 "request"});
        run_stored(self, c, key, id);
      },
      [c](caf::error& e) { reply_error(c, e); });
}

/// `previous_response_id`, looked up here: its session when it is the latest
/// response there (or this request's turn is there already: a retry), else
/// a fork.
void continue_from(edge_self* self, const call_ptr& c, const api_key_record& key) {
  auto& st = self->state;
  auto prev_id = body(c).previous_response_id;
  auto prev = net::turn_of_response(prev_id);
  if (!prev)
    return reply_error(c, not_found_response(prev_id));
  auto [session, seq] = *prev;
  self->request(st.storage->any(), st.cfg.storage_timeout, get_sess_atom::value, session,
                key.user_id)
    .then(
      [self, c, key, prev_id, session = session, seq = seq](session_record& s) {
        auto& sst = self->state;
        if (seq > s.last_seq)
          return reply_error(c, not_found_response(prev_id));
        self->request(sst.storage->any(), sst.cfg.storage_timeout, get_resp_atom::value,
                      response_ref{session, key.user_id, seq})
          .then(
            [self, c, key, session, seq, last = s.last_seq](response_record&) {
              if (seq == last)
                return run_stored(self, c, key, session);
              auto fork = [self, c, key, session, seq] {
                auto& fst = self->state;
                fork_request f{new_session_id(key.user_id, c->idempotency_key, "fork"), session,
                               key.user_id, seq, now_rfc3339(), c->idempotency_key};
                auto id = f.new_id;
                self->request(fst.storage->for_session(id), fst.cfg.storage_timeout,
                              fork_atom::value, std::move(f))
                  .then(
                    [self, c, key, id](bool made) {
                      if (!made)
                        return reply_error(c, not_found_response(body(c).previous_response_id));
                      run_stored(self, c, key, id);
                    },
                    [c](caf::error& e) { reply_error(c, e); });
              };
              if (c->idempotency_key.empty())
                return fork();
              // A retry of a request that continued this session: its turn
              // is there (the session actor answers it again). Else a key
              // that is not the fork's: 409, no fork.
              self->request(self->state.storage->for_lookups(), self->state.cfg.storage_timeout,
                            find_cmid_atom::value, session, c->idempotency_key, std::int64_t{0},
                            key.user_id)
                .then(
                  [self, c, key, session, fork](client_id_hit& hit) {
                    if (hit.found)
                      return run_stored(self, c, key, session);
                    if (!hit.key_owner.empty() &&
                        hit.key_owner != new_session_id(key.user_id, c->idempotency_key, "fork"))
                      return reply_error(c, {errc::conflict, "the Idempotency-Key was used for "
                                                             "another request"});
                    fork();
                  },
                  [c](caf::error& e) { reply_error(c, e); });
            },
            [c, prev_id](caf::error& e) {
              auto err = to_api_error(e);
              reply_error(c, err.code == errc::not_found ? not_found_response(prev_id) : err);
            });
      },
      [c, prev_id](caf::error& e) {
        auto err = to_api_error(e);
        reply_error(c, err.code == errc::not_found ? not_found_response(prev_id) : err);
      });
}

/// The chat message of an input item for the upstream.
llm_message chat_message(const net::input_item& item) {
  return {item.role == "developer" ? std::string{"system"} : item.role, item.text};
}

/// A storage error of a `store: false` call: a not_found names what the
/// request named.
void reply_stateless_error(const call_ptr& c, const caf::error& e) {
  auto err = to_api_error(e);
  auto& b = body(c);
  if (err.code == errc::not_found)
    err = b.conversation.empty()
            ? not_found_response(b.previous_response_id)
            : api_error{errc::not_found, "conversation '" + b.conversation + "' not found"};
  reply_error(c, err);
}

/// `store: false`: the same context (the conversation's latest messages, or
/// those up to the previous response), one model call, nothing written.
void stateless(edge_self* self, const call_ptr& c, const api_key_record& key) {
  auto& st = self->state;
  auto& b = body(c);
  auto model = b.model.value_or(st.cfg.default_model);
  if (!model_allowed(key.models, model))
    return reply_error(c, {errc::forbidden, model_refusal(key.models, model)});
  std::string session;
  std::int64_t before = INT64_MAX;
  if (!b.conversation.empty()) {
    auto s = net::session_of_conversation(b.conversation);
    if (!s)
      return reply_error(c, {errc::not_found, "conversation '" + b.conversation + "' not found"});
    session = *s;
  } else if (!b.previous_response_id.empty()) {
    auto prev = net::turn_of_response(b.previous_response_id);
    if (!prev)
      return reply_error(c, not_found_response(b.previous_response_id));
    session = prev->first;
    before = prev->second + 1;
  }
  auto call = [self, c, key, model, session](std::vector<message_record> history) {
    auto& cst = self->state;
    auto& rb = body(c);
    auto admitted = admit(self, c, "requests");
    if (!admitted)
      return;
    llm_request req;
    req.model = model;
    if (rb.instructions)
      req.messages.push_back({"system", *rb.instructions});
    for (auto& m : history)
      req.messages.push_back({m.role, m.content});
    for (auto& item : rb.input)
      req.messages.push_back(chat_message(item));
    req.options = rb.call_options;
    if (c->stream) {
      response_view v{"resp_" + random_hex(16),
                      rb.conversation.empty() ? std::string{} : session,
                      rb.previous_response_id,
                      rb.instructions.value_or(""),
                      rb.metadata_json,
                      rb.call_options,
                      false,
                      model};
      completion_listener on_result = [storage = cst.storage, user = key.user_id,
                                       metrics = cst.metrics, budget = c->budget](const llm_result& r) {
        if (budget)
          budget->settle(r.usage);
        if (storage)
          record_usage(*storage, user, r.model, r.usage, metrics.get());
      };
      auto ticket = ++cst.next_ticket;
      cst.streams.emplace(ticket, std::move(*admitted));
      c->sink = spawn_unstored_response_sink(
        self->home_system(), {c, caf::actor_cast<edge_actor>(self), {}, ticket}, cst.llm,
        std::move(req), std::move(v), cst.cfg.turn_timeout, cst.cfg.cancel_on_disconnect,
        std::move(on_result));
      return;
    }
    auto held = std::make_shared<inflight_gate::ticket>(std::move(*admitted));
    timed_request<llm_result>(
        self, cst.llm, cst.cfg.turn_timeout,
        [self, c, key, session, held](llm_result& r) {
          held->reset();
          auto& s = self->state;
          if (c->budget && r.upstream_status < 400)
            c->budget->settle(r.usage);
          if (s.storage)
            record_usage(*s.storage, key.user_id, r.model, r.usage, s.metrics.get());
          if (r.upstream_status >= 400)
            return reply(c, r.upstream_status, std::move(r.raw));
          auto& bb = body(c);
          auto out = unstored_reply(std::move(r));
          response_view v{"resp_" + random_hex(16), bb.conversation.empty() ? std::string{} : session,
                          bb.previous_response_id, bb.instructions.value_or(""),
                          bb.metadata_json, bb.call_options, false};
          reply(c, 200, render_response(v, out));
        },
        [c, held](caf::error& e) {
          held->reset();
          reply_error(c, e);
        },
        llm_call_atom::value, std::move(req));
  };
  if (session.empty())
    return call({});
  auto history = [self, c, key, session, before, call] {
    auto& hst = self->state;
    list_messages_request r{session, key.user_id, before,
                            static_cast<std::int32_t>(
                              std::min<std::size_t>(hst.cfg.context_messages, 500)),
                            true};
    self->request(hst.storage->any(), hst.cfg.storage_timeout, list_msg_atom::value, std::move(r))
      .then(
        [call](message_page& p) {
          std::reverse(p.data.begin(), p.data.end());
          call(std::move(p.data));
        },
        [c](caf::error& e) { reply_stateless_error(c, e); });
  };
  if (before == INT64_MAX)
    return history();
  // The previous response must be there (not deleted, the user's).
  self->request(st.storage->any(), st.cfg.storage_timeout, get_resp_atom::value,
                response_ref{session, key.user_id, before - 1})
    .then([history](response_record&) { history(); },
          [c](caf::error& e) { reply_stateless_error(c, e); });
}

void start_response(edge_self* self, const call_ptr& c, const api_key_record& key) {
  auto& b = body(c);
  if (!b.store)
    return stateless(self, c, key);
  if (!b.conversation.empty()) {
    auto s = net::session_of_conversation(b.conversation);
    if (!s)
      return reply_error(c, {errc::not_found, "conversation '" + b.conversation + "' not found"});
    return run_stored(self, c, key, *s);
  }
  if (b.previous_response_id.empty())
    return new_conversation(self, c, key);
  // The common case, a chain going on from its latest response, asks the
  // session actor alone: it knows its last seq, so the turn needs no reads
  // here. Anything else (an older response: a fork; a retry whose turn is
  // out of its window) it refuses untouched, and the lookups here decide;
  // for a stream too, before its first byte (its sink hands the refusal
  // back: stream_refused). Only the session can tell which of several
  // continuations sent at once came first.
  auto prev = net::turn_of_response(b.previous_response_id);
  if (!prev || prev->second < 2)
    return reply_error(c, not_found_response(b.previous_response_id));
  run_stored(self, c, key, prev->first, prev->second,
             [self, key](const call_ptr& call, const api_error& err) {
               if (err.code == errc::not_latest) {
                 continue_from(self, call, key);
                 return true;
               }
               if (err.code != errc::not_found)
                 return false;
               reply_error(call, not_found_response(body(call).previous_response_id));
               return true;
             });
}

/// The turn a response id names: its input items (the replayed ones, then
/// the user message) and reply, the response before them in its session
/// (empty: none), and its options. Answers 404 itself.
using turn_found =
  std::function<void(const std::vector<message_record>& input, const message_record& reply,
                     const std::string& previous, const response_options& options)>;
void find_response(edge_self* self, const call_ptr& c, const api_key_record* key,
                   turn_found next) {
  auto& st = self->state;
  auto turn = net::turn_of_response(c->id);
  if (!turn || turn->second < 2)
    return reply_error(c, not_found_response(c->id));
  auto [session, seq] = *turn;
  self->request(st.storage->any(), st.cfg.storage_timeout, get_resp_atom::value,
                response_ref{session, key->user_id, seq})
    .then(
      [c, session = session, seq = seq, next](response_record& r) {
        auto& p = r.turn;
        auto at = [&](std::int64_t s) -> const message_record* {
          for (auto& m : p.data)
            if (m.seq == s)
              return &m;
          return nullptr;
        };
        auto* reply_msg = at(seq);
        auto* user = at(seq - 1);
        if (!reply_msg || !user || reply_msg->role != "assistant" || reply_msg->reply_to != seq - 1)
          return reply_error(c, not_found_response(c->id));
        auto k = r.options.input_before;
        std::vector<message_record> input;
        for (auto s = seq - 1 - k; s < seq; ++s)
          if (auto* m = at(s))
            input.push_back(*m);
        auto* before = at(seq - 2 - k);
        std::string previous;
        if (before && before->role == "assistant" && before->reply_to == seq - 3 - k)
          previous = net::response_id(session, seq - 2 - k);
        next(input, *reply_msg, previous, r.options);
      },
      [c](caf::error& e) {
        auto err = to_api_error(e);
        reply_error(c, err.code == errc::not_found ? not_found_response(c->id) : err);
      });
}

} // namespace

void handle_create_response(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& b = body(c);
  // A stored response's last user or assistant item must be the user's:
  // its turn's user message, the one the model answers.
  auto last = std::find_if(b.input.rbegin(), b.input.rend(), [](const net::input_item& i) {
    return i.role == "user" || i.role == "assistant";
  });
  if (b.store && (last == b.input.rend() || last->role != "user")) {
    auto at = last == b.input.rend()
                ? std::size_t{0}
                : b.input.size() - 1 - static_cast<std::size_t>(last - b.input.rbegin());
    return reply_error(c, {errc::invalid_request,
                           "'input' must end with a user message (the one the model answers); "
                           "earlier user and assistant items are history",
                           "input[" + std::to_string(at) + "]"});
  }
  // A model the key may not name is refused before anything is made (a
  // fork, a conversation), whichever way the request continues.
  if (b.model && !model_allowed(key->models, *b.model))
    return reply_error(c, {errc::forbidden, model_refusal(key->models, *b.model)});
  // The reservation: the input's estimate and a completion allowance.
  auto reserve = [&b] {
    std::int64_t prompt = estimate_message_tokens(b.instructions.value_or(""));
    for (auto& item : b.input)
      prompt += estimate_message_tokens(item.text);
    return budget_reservation(prompt, std::nullopt);
  };
  with_rate_limit(self, c, *key, reserve, [self, c, k = *key](budget_hold_ptr budget) {
    c->budget = std::move(budget);
    start_response(self, c, k);
  });
}

void handle_get_response(edge_self* self, const call_ptr& c, const api_key_record* key) {
  find_response(self, c, key,
                [c](const std::vector<message_record>&, const message_record& reply_msg,
                    const std::string& previous, const response_options& o) {
                  auto turn = net::turn_of_response(c->id);
                  response_view v{c->id,           turn->first,     previous, o.instructions,
                                  o.metadata_json, o.call_options,  true};
                  reply(c, 200, render_response(v, reply_msg));
                });
}

void handle_delete_response(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto& st = self->state;
  auto turn = net::turn_of_response(c->id);
  if (!turn)
    return reply_error(c, not_found_response(c->id));
  self->request(st.storage->for_session(turn->first), st.cfg.storage_timeout,
                del_resp_atom::value, response_ref{turn->first, key->user_id, turn->second})
    .then(
      [c](bool deleted) {
        if (!deleted)
          return reply_error(c, not_found_response(c->id));
        reply(c, 200, render_response_deleted(c->id));
      },
      [c](caf::error& e) { reply_error(c, e); });
}

void handle_list_response_input_items(edge_self* self, const call_ptr& c,
                                      const api_key_record* key) {
  find_response(self, c, key,
                [c](const std::vector<message_record>& input, const message_record&,
                    const std::string&, const response_options&) {
                  auto session = net::turn_of_response(c->id)->first;
                  // The input items in the asked order, after the cursor's.
                  auto items = input;
                  if (!c->ascending)
                    std::reverse(items.begin(), items.end());
                  auto from = items.begin();
                  if (!c->cursor.empty()) {
                    from = std::find_if(items.begin(), items.end(), [&](const message_record& m) {
                      return net::item_id(session, m.seq) == c->cursor;
                    });
                    if (from == items.end())
                      return reply_error(c, {errc::invalid_request,
                                             "query parameter 'after' is not an input item of "
                                             "response '" +
                                               c->id + "'"});
                    ++from;
                  }
                  message_page p;
                  auto limit = c->limit > 0 ? static_cast<std::size_t>(c->limit) : std::size_t{20};
                  for (auto it = from; it != items.end() && p.data.size() < limit; ++it)
                    p.data.push_back(*it);
                  if (!p.data.empty() && from + static_cast<std::ptrdiff_t>(p.data.size()) != items.end())
                    p.next_after = p.data.back().seq;
                  reply(c, 200, render_item_list(session, p));
                });
}

} // namespace parley

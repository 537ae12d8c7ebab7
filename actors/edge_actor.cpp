#include "actors/edge_actor.hpp"

#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/api_render.hpp"
#include "actors/messages.hpp"
#include "storage/clock.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

using clock = std::chrono::steady_clock;
using call_ptr = std::shared_ptr<http_call>;

struct cached_key {
  api_key_record rec;
  clock::time_point expires;
};

struct edge_state {
  edge_config cfg;
  storage_pool_ptr storage;
  owner_lookup owner;
  std::unordered_map<std::string, cached_key> keys; ///< by key hash
  std::size_t inflight = 0;
  bool draining = false;
};

using edge_self = caf::stateful_actor<edge_state>;

constexpr std::size_t key_cache_limit = 100000;

void reply(const call_ptr& c, unsigned status, std::string body,
           std::string content_type = "application/json") {
  net::http_response r;
  r.status = status;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  c->out->send(std::move(r));
}

void reply_error(const call_ptr& c, const api_error& e) {
  net::http_response r;
  r.status = http_status(e.code);
  r.body = error_body(e);
  if (has_retry_after(e.code))
    r.headers.emplace_back("Retry-After", "1");
  c->out->send(std::move(r));
}

void reply_error(const call_ptr& c, const caf::error& e) { reply_error(c, to_api_error(e)); }

api_error not_found_session(const call_ptr& c) {
  return {errc::not_found, "session '" + c->id + "' not found"};
}

/// Authenticates a user key (cache, then storage) and continues with the
/// key's record; answers 401 itself.
template <class F>
void with_key(edge_self* self, const call_ptr& c, F&& next) {
  auto& st = self->state;
  if (c->bearer.empty())
    return reply_error(c, {errc::unauthorized, "missing bearer token (Authorization: Bearer <key>)"});
  auto hash = hash_key(c->bearer);
  auto now = clock::now();
  if (auto it = st.keys.find(hash); it != st.keys.end()) {
    if (it->second.expires > now)
      return next(it->second.rec);
    st.keys.erase(it);
  }
  self->request(st.storage->any(), st.cfg.storage_timeout, find_key_atom::value, hash)
    .then(
      [self, c, hash, next = std::forward<F>(next)](api_key_record& rec) mutable {
        if (rec.id == 0)
          return reply_error(c, {errc::unauthorized, "unknown or revoked API key"});
        auto& s = self->state;
        if (s.keys.size() >= key_cache_limit)
          s.keys.clear();
        s.keys[hash] = cached_key{rec, clock::now() + s.cfg.key_cache_ttl};
        next(rec);
      },
      [c](caf::error& e) { reply_error(c, e); });
}

void handle_admin(edge_self* self, const call_ptr& c) {
  auto& st = self->state;
  auto& storage = st.storage->any();
  auto timeout = st.cfg.storage_timeout;
  switch (c->route) {
    case net::route::create_api_key: {
      auto secret = generate_api_key();
      self->request(storage, timeout, make_key_atom::value, c->create_key.user, hash_key(secret),
                    key_prefix(secret))
        .then([c, secret](api_key_record& k) { reply(c, 201, render_created_key(k, secret)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    }
    case net::route::revoke_api_key:
      self->request(storage, timeout, revoke_atom::value, c->id)
        .then(
          [self, c](std::int32_t n) {
            if (n == 0)
              return reply_error(c, {errc::not_found, "no API key matches '" + c->id + "'"});
            auto& keys = self->state.keys;
            for (auto it = keys.begin(); it != keys.end();)
              if (it->second.rec.prefix == c->id || std::to_string(it->second.rec.id) == c->id)
                it = keys.erase(it);
              else
                ++it;
            reply(c, 204, {});
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    default:
      reply_error(c, {errc::internal, "unexpected admin route"});
  }
}

void handle_turn(edge_self* self, const call_ptr& c, const std::string& user) {
  auto& st = self->state;
  if (st.inflight >= st.cfg.max_inflight)
    return reply_error(c, {errc::overloaded, "this node has too many turns in flight; retry"});
  ++st.inflight;
  turn_request t{c->id, user, std::move(c->post_message.content),
                 std::move(c->post_message.client_message_id), c->request_id};
  auto registry = st.owner(c->id);
  self->request(registry, st.cfg.turn_timeout, std::move(t))
    .then(
      [self, c](turn_reply& r) {
        --self->state.inflight;
        if (c->stream)
          reply(c, 200, render_turn_sse(r), "text/event-stream");
        else
          reply(c, 200, render_turn(r));
      },
      [self, c](caf::error& e) {
        --self->state.inflight;
        auto err = to_api_error(e);
        bool before_turn = err.code == errc::session_busy || err.code == errc::not_found ||
                           err.code == errc::conflict || err.code == errc::overloaded;
        if (c->stream && !before_turn)
          reply(c, 200, render_error_sse(err), "text/event-stream");
        else
          reply_error(c, err);
      });
}

void handle_user(edge_self* self, const call_ptr& c, const api_key_record& key) {
  auto& st = self->state;
  auto timeout = st.cfg.storage_timeout;
  auto& user = key.user_id;
  switch (c->route) {
    case net::route::create_session: {
      session_record s;
      s.id = random_hex(16);
      s.user_id = user;
      s.created_at = now_rfc3339();
      s.system_prompt = c->create_session.system_prompt.value_or("");
      s.model = c->create_session.model.value_or(st.cfg.default_model);
      s.metadata_json = c->create_session.metadata_json;
      auto& storage = st.storage->for_session(s.id);
      self->request(storage, timeout, new_sess_atom::value, std::move(s))
        .then([c](session_record& r) { reply(c, 201, render_session(r)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    }
    case net::route::list_sessions:
      self->request(st.storage->any(), timeout, list_sess_atom::value, user, c->limit, c->cursor)
        .then([c](session_page& p) { reply(c, 200, render_session_page(p)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::get_session:
      self->request(st.storage->any(), timeout, get_sess_atom::value, c->id, user)
        .then([c](session_record& r) { reply(c, 200, render_session(r)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::delete_session:
      self->request(st.storage->for_session(c->id), timeout, del_sess_atom::value, c->id, user)
        .then(
          [self, c](bool deleted) {
            if (!deleted)
              return reply_error(c, not_found_session(c));
            self->send(self->state.owner(c->id), gone_atom::value, c->id);
            reply(c, 204, {});
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::post_message:
      return handle_turn(self, c, user);
    case net::route::list_messages:
      self->request(st.storage->any(), timeout, list_msg_atom::value, c->id, user, c->after,
                    c->limit)
        .then([c](message_page& p) { reply(c, 200, render_message_page(p)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::post_feedback: {
      auto& fb = c->feedback;
      self->request(st.storage->any(), timeout, feedback_atom::value, c->id, user, c->seq,
                    static_cast<std::int32_t>(fb.rating), fb.comment.value_or(""),
                    fb.comment.has_value())
        .then(
          [c](feedback_outcome o) {
            switch (o) {
              case feedback_outcome::stored:
                return reply(c, 201,
                             std::string{"{\"session_id\":\""} + c->id + "\",\"seq\":" +
                               std::to_string(c->seq) + ",\"rating\":" +
                               std::to_string(c->feedback.rating) + "}");
              case feedback_outcome::no_session:
                return reply_error(c, not_found_session(c));
              case feedback_outcome::no_message:
                return reply_error(c, {errc::not_found, "message " + std::to_string(c->seq) +
                                                          " not found in session '" + c->id + "'"});
              case feedback_outcome::not_assistant:
                return reply_error(c, {errc::invalid_request,
                                       "feedback is for assistant messages; message " +
                                         std::to_string(c->seq) + " is a user message"});
            }
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    }
    default:
      reply_error(c, {errc::internal, "unexpected route"});
  }
}

void handle_ready(edge_self* self, const call_ptr& c) {
  auto draining = self->state.draining;
  auto answer = [c, draining](bool pg_ok) {
    bool ready = pg_ok && !draining;
    std::string body = std::string{"{\"status\":\""} + (ready ? "ready" : "unavailable") +
                       "\",\"checks\":{\"postgres\":\"" + (pg_ok ? "ok" : "down") +
                       "\",\"redis\":\"off\",\"cluster\":\"" + (draining ? "draining" : "ok") +
                       "\"}}";
    reply(c, ready ? 200 : 503, std::move(body));
  };
  self->request(self->state.storage->any(), std::chrono::seconds(2), ping_atom::value)
    .then([answer](bool ok) { answer(ok); }, [answer](caf::error&) { answer(false); });
}

caf::behavior edge_actor(edge_self* self, edge_config cfg, storage_pool_ptr storage,
                         owner_lookup owner) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.storage = std::move(storage);
  st.owner = std::move(owner);
  return {
    [self](http_call& call) {
      auto c = std::make_shared<http_call>(std::move(call));
      if (c->route == net::route::readyz)
        return handle_ready(self, c);
      bool admin = c->route == net::route::create_api_key || c->route == net::route::revoke_api_key;
      if (admin && !c->bearer.empty() &&
          constant_time_equal(c->bearer, self->state.cfg.admin_token)) {
        if (c->early_error)
          return reply_error(c, *c->early_error);
        return handle_admin(self, c);
      }
      with_key(self, c, [self, c, admin](const api_key_record& key) {
        if (admin)
          return reply_error(c, {errc::forbidden, "this route needs the admin token"});
        if (c->early_error)
          return reply_error(c, *c->early_error);
        handle_user(self, c, key);
      });
    },
    [self](drain_atom) { self->state.draining = true; },
  };
}

} // namespace

caf::actor spawn_edge_actor(caf::actor_system& sys, const edge_config& cfg,
                            storage_pool_ptr storage, owner_lookup owner) {
  return sys.spawn(edge_actor, cfg, std::move(storage), std::move(owner));
}

} // namespace parley

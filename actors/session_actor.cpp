#include "actors/session_actor.hpp"

#include <deque>

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/context_window.hpp"
#include "actors/messages.hpp"
#include "storage/clock.hpp"

namespace parley {

namespace {

struct pending_turn {
  turn_request req;
  caf::response_promise rp;
};
using turn_ptr = std::shared_ptr<pending_turn>;

enum class phase { inactive, activating, ready, stale };

struct session_state {
  std::string id;
  session_env env;
  caf::actor registry;
  phase ph = phase::inactive;
  session_record rec;
  std::deque<message_record> window;
  std::deque<turn_ptr> queue;
  bool busy = false;
  std::uint64_t received = 0; ///< turns received, compared by the registry
  std::uint64_t activity = 0; ///< bumps on every event; the idle timer checks it
};

using session_self = caf::stateful_actor<session_state>;

void pump(session_self* self);
void activate(session_self* self);

const caf::actor& my_storage(session_self* self) {
  return self->state.env.storage->for_session(self->state.id);
}

void fail_queue(session_self* self, const caf::error& e) {
  for (auto& t : self->state.queue)
    t->rp.deliver(e);
  self->state.queue.clear();
}

/// Asks the registry to let this actor go; it agrees only when every turn it
/// forwarded has arrived here, so no turn can be lost in between.
void request_passivation(session_self* self) {
  self->send(self->state.registry, idle_atom::value, self->state.id, self->state.received);
}

void finish_turn(session_self* self) {
  auto& st = self->state;
  st.busy = false;
  ++st.activity;
  if (!st.queue.empty())
    return pump(self);
  self->delayed_send(self, st.env.cfg->idle, idle_atom::value, st.activity);
}

/// The actor's view may be behind PostgreSQL (a commit whose outcome is
/// unknown): forget it and load the truth again with a fresh epoch.
void reset(session_self* self) {
  auto& st = self->state;
  st.busy = false;
  st.ph = phase::inactive;
  st.window.clear();
  if (!st.queue.empty())
    activate(self);
  else
    request_passivation(self);
}

void become_stale(session_self* self) {
  auto& st = self->state;
  st.busy = false;
  st.ph = phase::stale;
  fail_queue(self, make_error(errc::session_moved,
                              "session '" + st.id + "' moved to another actor; retry"));
  request_passivation(self);
}

void answer_duplicate(session_self* self, const turn_ptr& t, const message_record& user,
                      const std::optional<message_record>& reply) {
  if (user.content != t->req.content)
    t->rp.deliver(make_error(errc::conflict, "client_message_id '" + t->req.client_message_id +
                                               "' was already used with different content"));
  else if (!reply)
    t->rp.deliver(make_error(errc::internal, "a stored turn has no reply"));
  else
    t->rp.deliver(turn_reply{user, *reply});
  finish_turn(self);
}

void commit(session_self* self, turn_ptr t, message_record user, message_record reply) {
  auto& st = self->state;
  turn_write w{st.id, st.rec.epoch, user, reply};
  self->request(my_storage(self), st.env.cfg->storage_timeout, std::move(w))
    .then(
      [self, t, user, reply](commit_outcome o) {
        auto& s = self->state;
        switch (o) {
          case commit_outcome::committed:
            s.rec.last_seq = reply.seq;
            s.rec.message_count += 2;
            push_window(s.window, user, s.env.cfg->window);
            push_window(s.window, reply, s.env.cfg->window);
            t->rp.deliver(turn_reply{user, reply});
            return finish_turn(self);
          case commit_outcome::fenced:
            t->rp.deliver(make_error(errc::session_moved,
                                     "session '" + s.id + "' moved to another actor; retry"));
            return become_stale(self);
          case commit_outcome::failed:
            t->rp.deliver(make_error(errc::storage_unavailable,
                                     "PostgreSQL is unavailable; nothing was stored, retry"));
            return finish_turn(self);
          case commit_outcome::conflict:
          case commit_outcome::unknown:
            t->rp.deliver(make_error(errc::storage_unavailable,
                                     "the turn's commit could not be confirmed; retry with the "
                                     "same client_message_id"));
            return reset(self);
        }
      },
      [self, t](caf::error&) {
        t->rp.deliver(make_error(errc::storage_unavailable,
                                 "PostgreSQL did not answer in time; retry with the same "
                                 "client_message_id"));
        reset(self);
      });
}

void call_model(session_self* self, turn_ptr t) {
  auto& st = self->state;
  message_record user;
  user.seq = st.rec.last_seq + 1;
  user.role = "user";
  user.content = t->req.content;
  user.created_at = now_rfc3339();
  user.client_message_id = t->req.client_message_id;
  llm_request req{st.rec.model, build_context(st.rec.system_prompt, st.window, user,
                                              st.env.cfg->window)};
  auto timeout = st.env.cfg->llm_timeout + std::chrono::seconds(5);
  self->request(st.env.llm, timeout, llm_call_atom::value, std::move(req))
    .then(
      [self, t, user](llm_result& r) {
        message_record reply;
        reply.seq = user.seq + 1;
        reply.role = "assistant";
        reply.content = std::move(r.content);
        reply.created_at = now_rfc3339();
        reply.reply_to = user.seq;
        reply.model = std::move(r.model);
        commit(self, t, user, std::move(reply));
      },
      [self, t](caf::error& e) {
        t->rp.deliver(std::move(e));
        finish_turn(self);
      });
}

void run_turn(session_self* self, turn_ptr t) {
  auto& st = self->state;
  if (t->req.user_id != st.rec.user_id) {
    t->rp.deliver(make_error(errc::not_found, "session '" + st.id + "' not found"));
    return finish_turn(self);
  }
  if (t->req.client_message_id.empty())
    return call_model(self, std::move(t));
  if (auto hit = find_in_window(st.window, t->req.client_message_id); hit && hit->second)
    return answer_duplicate(self, t, hit->first, hit->second);
  self->request(my_storage(self), st.env.cfg->storage_timeout, find_cmid_atom::value, st.id,
                t->req.client_message_id)
    .then(
      [self, t](client_id_hit& hit) {
        if (!hit.found)
          return call_model(self, t);
        std::optional<message_record> reply;
        if (hit.has_reply)
          reply = std::move(hit.reply);
        answer_duplicate(self, t, hit.user, reply);
      },
      [self, t](caf::error& e) {
        t->rp.deliver(std::move(e));
        finish_turn(self);
      });
}

void pump(session_self* self) {
  auto& st = self->state;
  if (st.ph != phase::ready || st.busy || st.queue.empty())
    return;
  st.busy = true;
  auto t = std::move(st.queue.front());
  st.queue.pop_front();
  run_turn(self, std::move(t));
}

void activate(session_self* self) {
  auto& st = self->state;
  st.ph = phase::activating;
  self->request(my_storage(self), st.env.cfg->storage_timeout, activate_atom::value, st.id,
                static_cast<std::int32_t>(st.env.cfg->window))
    .then(
      [self](activation_record& a) {
        auto& s = self->state;
        s.rec = std::move(a.session);
        s.window.assign(a.window.begin(), a.window.end());
        s.ph = phase::ready;
        pump(self);
      },
      [self](caf::error& e) {
        self->state.ph = phase::inactive;
        fail_queue(self, e);
        request_passivation(self);
      });
}

caf::behavior session_actor(session_self* self, std::string id, session_env env,
                            caf::actor registry) {
  auto& st = self->state;
  st.id = std::move(id);
  st.env = std::move(env);
  st.registry = std::move(registry);
  return {
    [self](turn_request& req) -> caf::result<turn_reply> {
      auto& s = self->state;
      ++s.received;
      ++s.activity;
      if (s.ph == phase::stale) {
        request_passivation(self);
        return make_error(errc::session_moved, "session '" + s.id + "' moved; retry");
      }
      if (s.queue.size() >= s.env.cfg->queue_limit)
        return make_error(errc::session_busy,
                          "session '" + s.id + "' already has " +
                            std::to_string(s.env.cfg->queue_limit) +
                            " turns waiting; retry after the Retry-After delay");
      s.queue.push_back(std::make_shared<pending_turn>(
        pending_turn{std::move(req), self->make_response_promise()}));
      if (s.ph == phase::inactive)
        activate(self);
      else
        pump(self);
      return caf::delegated<turn_reply>{};
    },
    [self](idle_atom, std::uint64_t activity) {
      auto& s = self->state;
      if (activity == s.activity && s.queue.empty() && !s.busy)
        request_passivation(self);
    },
    [self](passivate_atom) {
      fail_queue(self, make_error(errc::session_moved, "session was passivated; retry"));
      self->quit();
    },
    [self](gone_atom) {
      fail_queue(self, make_error(errc::not_found,
                                  "session '" + self->state.id + "' was deleted"));
      self->quit();
    },
  };
}

} // namespace

caf::actor spawn_session_actor(caf::event_based_actor* registry, std::string id,
                               const session_env& env) {
  // Linked: when the registry stops (node shutdown), its sessions stop too.
  return registry->spawn<caf::linked>(session_actor, std::move(id), env,
                         caf::actor_cast<caf::actor>(registry));
}

} // namespace parley

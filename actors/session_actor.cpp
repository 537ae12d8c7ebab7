#include "actors/session_actor.hpp"

#include <algorithm>
#include <deque>
#include <unordered_map>
#include <vector>

#include <caf/event_based_actor.hpp>

#include "runtime/rules/context_window.hpp"
#include "runtime/rules/key_policy.hpp"
#include "actors/deadlines.hpp"
#include "actors/instrumented.hpp"
#include "actors/vocabulary.hpp"
#include "net/http/clock.hpp"

namespace parley {

namespace {

struct pending_turn {
  turn_request req;
  caf::response_promise rp;
};
using turn_ptr = std::shared_ptr<pending_turn>;

enum class phase { inactive, activating, ready, stale, moved };

/// How long a session taken over from another node waits for its
/// predecessor to hand over the turns queued there before it runs turns
/// that came to it straight.
constexpr auto predecessor_patience = std::chrono::seconds(10);

struct session_state {
  static inline const char* name = "session";
  std::string id;
  session_env env;
  session_registry_actor registry;
  phase ph = phase::inactive;
  session_record rec;
  message_window window;
  std::vector<turn_ptr> queue; ///< at most PARLEY_SESSION_QUEUE_LIMIT, oldest first
  bool busy = false;
  turn_ptr running; ///< the turn being run, answered by the session's end if it comes first
  std::uint64_t received = 0; ///< turns received, compared by the registry
  /// When the last turn ended; the idle timer (one at a time: idle_armed)
  /// passivates the actor when that is PARLEY_SESSION_IDLE_SECONDS ago.
  caf::actor_clock::time_point idle_since;
  bool idle_armed = false;
  deadline_book deadlines; ///< of the requests a turn makes (actors/deadlines.hpp)
  std::vector<caf::response_promise> ready_waiters; ///< (activate_atom) and handoffs
  // migration
  bool migrating = false;
  caf::response_promise migrate_rp;
  caf::actor migrate_registry; ///< the target node's registry
  std::string migrate_node;
  session_actor successor; ///< the actor on the new node, once moved
  caf::actor sink; ///< the running turn's stream sink, if it is streamed
  // after the move: turns this actor accepted and handed to the successor,
  // answered through it, so it (and a stopping node) stays until they are
  std::unordered_map<std::uint64_t, turn_ptr> relays;
  std::uint64_t next_relay = 0;
  /// The stream sinks of relayed streamed turns, oldest first: the
  /// successor runs them in this order, so its pieces go to the front one.
  std::deque<std::pair<std::uint64_t, caf::actor>> relay_sinks;
  bool quit_when_relayed = false; ///< passivated while relays were pending
  // on the new node, until the predecessor handed over its queue
  caf::actor_addr predecessor;
  bool awaiting_predecessor = false;
  /// Every actor that handed this one the session (the predecessor, and one
  /// that found it already active here): turns they relay did not pass
  /// through the registry, so they do not count for the passivation
  /// handshake. The last few only: handoffs to one actor are rare.
  std::vector<caf::actor_addr> handed_over_by;
  std::vector<turn_ptr> parked; ///< turns that came straight here meanwhile
};

/// The model a turn's call uses: the one its request names, else the
/// session's.
const std::string& turn_model(const session_state& st, const pending_turn& t) {
  return t.req.model.empty() ? st.rec.model : t.req.model;
}

using session_self = instrumented_actor<session_state, session_actor::base>;

void pump(session_self* self);
void activate(session_self* self);
void ship(session_self* self);

const session_store_actor& my_storage(session_self* self) {
  return self->state.env.storage->for_session(self->state.id);
}

void fail_queue(session_self* self, const caf::error& e) {
  for (auto& t : self->state.queue)
    t->rp.deliver(e);
  self->state.queue.clear();
  for (auto& t : self->state.parked)
    t->rp.deliver(e);
  self->state.parked.clear();
}

/// Asks the registry to let this actor go; it agrees only when every turn it
/// forwarded has arrived here, so no turn can be lost in between.
void request_passivation(session_self* self) {
  self->send(self->state.registry, idle_atom::value, self->state.id, self->state.received);
}

/// Sets the idle timer unless one is set (a timer per turn stayed in CAF's
/// clock for the whole idle time: see actors/deadlines.hpp).
template <class Duration>
void arm_idle(session_self* self, Duration after) {
  auto& st = self->state;
  if (st.idle_armed)
    return;
  st.idle_armed = true;
  self->delayed_send(self, after, idle_atom::value);
}

void finish_turn(session_self* self) {
  auto& st = self->state;
  st.busy = false;
  st.running = nullptr;
  st.sink = nullptr;
  if (st.migrating)
    return ship(self);
  if (!st.queue.empty())
    return pump(self);
  st.idle_since = self->clock().now();
  arm_idle(self, st.env.cfg->idle);
}

/// The actor's view may be behind PostgreSQL (a commit whose outcome is
/// unknown): forget it and load the truth again with a fresh epoch.
void reset(session_self* self) {
  auto& st = self->state;
  st.busy = false;
  st.ph = phase::inactive;
  st.window.clear();
  if (st.migrating)
    ship(self); // the successor loads the truth itself
  else if (!st.queue.empty())
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
  if (st.migrating) {
    st.migrating = false;
    st.migrate_rp.deliver(make_error(errc::session_moved,
                                     "session '" + st.id + "' was taken over elsewhere"));
  }
  for (auto& w : st.ready_waiters)
    w.deliver(make_error(errc::session_moved, "session '" + st.id + "' was taken over elsewhere"));
  st.ready_waiters.clear();
  // Not the passivation handshake: that waits for every turn forwarded here,
  // and a count off by one would keep this actor, answering "moved" to every
  // turn, for good. Turns already on their way get "moved; retry".
  self->send(st.registry, stale_atom::value, st.id);
}

/// How long a relayed turn may take: it may wait behind a full queue on the
/// successor (the edge's own safety net is the same).
std::chrono::milliseconds relay_timeout(session_self* self) {
  auto& cfg = *self->state.env.cfg;
  return (cfg.llm_call_timeout + std::chrono::seconds(30)) *
         static_cast<long>(cfg.queue_limit + 1);
}

void relay_done(session_self* self) {
  auto& st = self->state;
  if (st.relays.empty() && st.quit_when_relayed)
    self->quit();
}

/// Answers a relayed turn once (from the successor, or on its loss).
void settle_relay(session_self* self, std::uint64_t n, caf::expected<turn_reply> r) {
  auto& st = self->state;
  auto it = st.relays.find(n);
  if (it == st.relays.end())
    return;
  auto t = std::move(it->second);
  st.relays.erase(it);
  for (auto s = st.relay_sinks.begin(); s != st.relay_sinks.end(); ++s)
    if (s->first == n) {
      st.relay_sinks.erase(s);
      break;
    }
  if (r)
    t->rp.deliver(std::move(*r));
  else
    t->rp.deliver(std::move(r.error()));
  relay_done(self);
}

/// After the move: asks the successor to run a turn this actor accepted and
/// answers its client with the successor's answer. Unlike a delegation, the
/// answer comes back here, so a node that is stopping stays up until every
/// turn it took is answered (a SIGTERM drain waits for its session actors),
/// and the successor can tell the turns handed over from those that came
/// to it straight (it runs these after them).
void relay(session_self* self, turn_ptr t) {
  auto& st = self->state;
  auto n = ++st.next_relay;
  auto req = t->req;
  if (req.sink) {
    // Pieces come here and go on in order with the answer.
    st.relay_sinks.emplace_back(n, req.sink);
    req.sink = caf::actor_cast<caf::actor>(self);
  }
  st.relays.emplace(n, std::move(t));
  timed_request<turn_reply>(
    self, st.successor, relay_timeout(self),
    [self, n](turn_reply& r) { settle_relay(self, n, std::move(r)); },
    [self, n](caf::error& e) { settle_relay(self, n, std::move(e)); }, std::move(req));
}

/// The successor is gone (its node stopped or died): every turn still on
/// its way there is answered as a turn whose outcome is unknown.
void lose_relays(session_self* self) {
  std::vector<std::uint64_t> ns;
  for (auto& r : self->state.relays)
    ns.push_back(r.first);
  for (auto n : ns)
    settle_relay(self, n, make_error(errc::session_moved,
                                     "session '" + self->state.id +
                                       "' moved while the turn was on its way; retry with the "
                                       "same client_message_id"));
}

/// On the new node: turns that came here straight while the predecessor
/// still hands over its queue run after that queue.
void predecessor_done(session_self* self) {
  auto& st = self->state;
  if (!st.awaiting_predecessor)
    return;
  st.awaiting_predecessor = false;
  for (auto& t : st.parked)
    st.queue.push_back(std::move(t));
  st.parked.clear();
  if (st.ph == phase::inactive && !st.queue.empty())
    activate(self);
  else
    pump(self);
}

/// Migration, once no turn runs: hands the session's state to the target
/// registry, which starts its successor there; then every queued turn and
/// every later arrival is relayed to the successor, in order, and the
/// successor is told when the queue is on its way.
void ship(session_self* self) {
  auto& st = self->state;
  handoff_state h;
  h.session = st.rec;
  h.session.id = st.id;
  if (st.ph == phase::ready)
    h.window.assign(st.window.begin(), st.window.end());
  else
    h.session.epoch = 0; // never activated here: the successor loads it
  st.busy = true; // no turn may start while the handoff is on its way
  // Bounded well below a drain's patience: a failed handoff is retried.
  self->request(st.migrate_registry, std::chrono::seconds(5), handoff_atom::value, std::move(h))
    .then(
      [self](caf::actor& successor) {
        auto& s = self->state;
        s.busy = false;
        s.migrating = false;
        s.ph = phase::moved;
        if (s.env.metrics)
          s.env.metrics->session_migrated();
        s.successor = caf::actor_cast<session_actor>(successor);
        self->monitor(successor);
        auto queued = std::move(s.queue);
        s.queue.clear();
        for (auto& t : queued)
          relay(self, std::move(t));
        // Everything queued here is on its way: the successor may now run
        // the turns that reached it straight.
        self->send(s.successor, moved_atom::value);
        s.window.clear();
        self->send(s.registry, moved_atom::value, s.id, s.migrate_registry);
        s.migrate_rp.deliver(s.migrate_node);
      },
      [self](caf::error& e) {
        auto& s = self->state;
        s.busy = false;
        s.migrating = false;
        s.migrate_rp.deliver(std::move(e));
        if (s.ph == phase::inactive && !s.queue.empty())
          activate(self);
        else
          pump(self);
      });
}

/// A repeat of a stored turn's client id: the same request when its content
/// is, and when the stored turn keeps a request hash (an OpenAI response's
/// Idempotency-Key: instructions, options, replayed items, ...), when the
/// hash is the same too. A turn stored without one (a session turn, or one
/// written before the hash was) is compared by its content alone.
bool same_request(const message_record& stored, const turn_request& req) {
  return stored.content == req.content &&
         (stored.request_hash.empty() || stored.request_hash == req.request_hash);
}

/// An Idempotency-Key's repeat that is another request (API.md section 5a).
constexpr const char* key_used_elsewhere = "the Idempotency-Key was used for another request";

void answer_duplicate(session_self* self, const turn_ptr& t, const message_record& user,
                      const std::optional<message_record>& reply) {
  if (!same_request(user, t->req))
    t->rp.deliver(make_error(
      errc::conflict,
      !t->req.request_hash.empty()
        ? std::string{key_used_elsewhere}
        : "client_message_id '" + t->req.client_message_id + "' was already used " +
            (user.content != t->req.content ? "with different content" : "by another request")));
  else if (!reply)
    t->rp.deliver(make_error(errc::internal, "a stored turn has no reply"));
  else
    t->rp.deliver(turn_reply{user, *reply});
  finish_turn(self);
}

/// How a client retries a write whose outcome is unknown: a turn with a
/// client_message_id (an Idempotency-Key) safely with it; one without may
/// have been stored, and a blind retry would store it twice.
const char* retry_turn(const pending_turn& t) {
  return t.req.client_message_id.empty()
           ? "the turn may have been stored: read the session's messages before retrying "
             "(a client_message_id or Idempotency-Key makes a retry safe)"
           : "retry with the same client_message_id (or Idempotency-Key)";
}
constexpr const char* retry_items = "list the conversation's items before retrying";

/// A fenced write's outcome (a turn's or appended items'): `committed` takes
/// the written messages in and answers; the other outcomes are the same for
/// both, with `retry` telling the client how to retry an unconfirmed one.
template <class OnCommitted>
void after_write(session_self* self, const turn_ptr& t, commit_outcome o, const char* retry,
                 OnCommitted committed) {
  auto& s = self->state;
  switch (o) {
    case commit_outcome::committed:
      committed();
      return finish_turn(self);
    case commit_outcome::fenced:
      t->rp.deliver(make_error(errc::session_moved,
                               "session '" + s.id + "' moved to another actor; retry"));
      return become_stale(self);
    case commit_outcome::failed:
      t->rp.deliver(make_error(errc::storage_unavailable,
                               "PostgreSQL is unavailable; nothing was stored, retry"));
      return finish_turn(self);
    case commit_outcome::key_taken:
      // Another session's turn claimed the Idempotency-Key first (a race
      // the lookup before the model call could not see): nothing written,
      // and this actor's view is still right.
      t->rp.deliver(make_error(errc::conflict, key_used_elsewhere));
      return finish_turn(self);
    case commit_outcome::conflict:
    case commit_outcome::unknown:
      t->rp.deliver(make_error(errc::storage_unavailable,
                               std::string{"the write could not be confirmed; "} + retry));
      return reset(self);
  }
}

/// The storage actor did not answer a write in time: its outcome is unknown.
void write_timed_out(session_self* self, const turn_ptr& t, const char* retry) {
  t->rp.deliver(make_error(errc::storage_unavailable,
                           std::string{"PostgreSQL did not answer in time; "} + retry));
  reset(self);
}
void commit(session_self* self, turn_ptr t, message_record user, message_record reply,
            std::vector<message_record> before) {
  auto& st = self->state;
  turn_write w{st.id, st.rec.epoch, user, reply, before, t->req.options};
  if (!user.request_hash.empty())
    w.user_id = st.rec.user_id;
  w.options.input_before = static_cast<std::int64_t>(before.size());
  w.options.keep = w.options.keep || !before.empty();
  timed_request<commit_outcome>(
      self, st.env.storage->for_commits(), st.env.cfg->storage_timeout,
      [self, t, user, reply, before = std::move(before)](commit_outcome o) {
        after_write(self, t, o, retry_turn(*t), [&] {
          auto& s = self->state;
          s.rec.last_seq = reply.seq;
          s.rec.message_count += 2 + static_cast<std::int64_t>(before.size());
          for (auto& m : before)
            push_window(s.window, m, s.env.cfg->window);
          push_window(s.window, user, s.env.cfg->window);
          push_window(s.window, reply, s.env.cfg->window);
          t->rp.deliver(turn_reply{user, reply});
        });
      },
      [self, t](caf::error&) { write_timed_out(self, t, retry_turn(*t)); }, std::move(w));
}

// --- OpenAI's conversation items: messages stored without a model call ----

/// Stores the turn's `append` messages after the last seq, fenced like a
/// commit, and answers them in turn_reply::appended.
void append(session_self* self, turn_ptr t) {
  auto& st = self->state;
  append_write w{st.id, st.rec.epoch, st.rec.last_seq, std::move(t->req.append)};
  auto at = now_rfc3339();
  for (std::size_t i = 0; i < w.messages.size(); ++i) {
    w.messages[i].seq = st.rec.last_seq + 1 + static_cast<std::int64_t>(i);
    w.messages[i].created_at = at;
  }
  auto written = w.messages;
  timed_request<commit_outcome>(
      self, st.env.storage->for_commits(), st.env.cfg->storage_timeout,
      [self, t, written](commit_outcome o) {
        after_write(self, t, o, retry_items, [&] {
          auto& s = self->state;
          s.rec.last_seq = written.back().seq;
          s.rec.message_count += static_cast<std::int64_t>(written.size());
          for (auto& m : written)
            push_window(s.window, m, s.env.cfg->window);
          t->rp.deliver(turn_reply{{}, {}, written});
        });
      },
      [self, t](caf::error&) { write_timed_out(self, t, retry_items); }, append_atom::value,
      std::move(w));
}

void call_model(session_self* self, turn_ptr t) {
  auto& st = self->state;
  // Replayed items take the seqs before the user message's.
  auto now = now_rfc3339();
  auto before = std::move(t->req.before);
  t->req.before.clear();
  auto seq = st.rec.last_seq;
  for (auto& m : before) {
    m.seq = ++seq;
    m.created_at = now;
    m.tokens = estimate_message_tokens(m.content);
  }
  message_record user;
  user.seq = seq + 1;
  user.role = "user";
  user.content = t->req.content;
  user.created_at = now;
  user.client_message_id = t->req.client_message_id;
  if (!user.client_message_id.empty())
    user.request_hash = t->req.request_hash;
  // OpenAI's Responses API: `instructions` stand in for the system prompt
  // in this call only. PARLEY_CONTEXT_TOKENS, or the session's own budget,
  // cuts the history.
  auto& system = t->req.instructions.empty() ? st.rec.system_prompt : t->req.instructions;
  auto budget = st.rec.context_tokens >= 0 ? st.rec.context_tokens : st.env.cfg->context_tokens;
  auto plan = [&] {
    if (before.empty())
      return plan_context(system, st.window, user, st.env.cfg->window, budget);
    auto history = st.window;
    for (auto& m : before)
      push_window(history, m, st.env.cfg->window);
    return plan_context(system, history, user, st.env.cfg->window, budget);
  }();
  auto others = plan.others;
  llm_request req{turn_model(st, *t), std::move(plan.messages), {}, t->req.call_options};
  // Retries and the fallback upstream (after a primary that timed out) all
  // end within llm_call_bound(); the node adds room beyond it.
  auto timeout = st.env.cfg->llm_call_timeout;
  st.sink = t->req.sink;
  // The sink learns the reply's seq before any piece (a Response stream's id).
  if (st.sink)
    send_untyped(self, st.sink, started_atom::value, user.seq + 1, req.model);
  // Streamed: the pieces go from the llm straight to the sink (a hop less
  // per piece), under this actor's identity, so the sink's cancel comes here.
  auto answered =
      [self, t, user, others, before = std::move(before)](llm_result& r) mutable {
        // The counts the window is cut by next time (API.md section 4).
        user.tokens = user_message_tokens(r.usage, others, user.content);
        message_record reply;
        reply.seq = user.seq + 1;
        reply.role = "assistant";
        reply.content = std::move(r.content);
        reply.created_at = now_rfc3339();
        reply.reply_to = user.seq;
        reply.model = std::move(r.model);
        reply.tokens = r.usage.known && r.usage.completion_tokens > 0
                         ? r.usage.completion_tokens
                         : estimate_message_tokens(reply.content);
        reply.usage = r.usage;
        commit(self, t, user, std::move(reply), std::move(before));
      };
  auto failed = [self, t](caf::error& e) {
    t->rp.deliver(std::move(e));
    finish_turn(self);
  };
  if (st.sink)
    timed_request<llm_result>(self, st.env.llm, timeout, std::move(answered), std::move(failed),
                              llm_call_atom::value, std::move(req), st.sink);
  else
    timed_request<llm_result>(self, st.env.llm, timeout, std::move(answered), std::move(failed),
                              llm_call_atom::value, std::move(req));
}

/// Whether the reply with seq `previous` is the session's last message (a
/// turn continuing it needs no fork). The window ends with the last message.
bool continues_latest(const session_state& st, std::int64_t previous) {
  if (previous != st.rec.last_seq || st.window.empty())
    return false;
  auto& last = st.window.back();
  return last.seq == previous && last.role == "assistant" && last.reply_to == previous - 1;
}

void run_turn(session_self* self, turn_ptr t) {
  auto& st = self->state;
  if (t->req.user_id != st.rec.user_id) {
    t->rp.deliver(make_error(errc::not_found, "session '" + st.id + "' not found"));
    return finish_turn(self);
  }
  if (!t->req.append.empty())
    return append(self, std::move(t));
  if (!model_allowed(t->req.models, turn_model(st, *t))) {
    t->rp.deliver(make_error(errc::forbidden, model_refusal(t->req.models, turn_model(st, *t))));
    return finish_turn(self);
  }
  auto& cmid = t->req.client_message_id;
  if (!cmid.empty())
    if (auto hit = find_in_window(st.window, cmid); hit && hit->second)
      return answer_duplicate(self, t, hit->first, hit->second);
  auto previous = t->req.previous_seq;
  if (previous > 0 && !continues_latest(st, previous)) {
    // The edge looks the response up and forks, or finds this turn's retry.
    t->rp.deliver(make_error(errc::not_latest, "response " + std::to_string(previous) +
                                                 " is not the latest of session '" + st.id +
                                                 "'"));
    return finish_turn(self);
  }
  if (cmid.empty() && previous == 0)
    return call_model(self, std::move(t));
  // One batched lookup: the client id's turn, whether the response
  // continued from was deleted, and for an Idempotency-Key (a request hash)
  // the session the user's key belongs to: another's is 409 before any
  // model call (the commit checks again, for races).
  auto keyed = !cmid.empty() && !t->req.request_hash.empty();
  timed_request<client_id_hit>(
      self, st.env.storage->for_lookups(), st.env.cfg->storage_timeout,
      [self, t, previous](client_id_hit& hit) {
        if (!hit.found && hit.gone) {
          t->rp.deliver(make_error(errc::not_found, "response " + std::to_string(previous) +
                                                      " of session '" + self->state.id +
                                                      "' was deleted"));
          return finish_turn(self);
        }
        if (!hit.found && !hit.key_owner.empty() && hit.key_owner != self->state.id) {
          t->rp.deliver(make_error(errc::conflict, key_used_elsewhere));
          return finish_turn(self);
        }
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
      },
      find_cmid_atom::value, st.id, cmid, previous, keyed ? st.rec.user_id : std::string{});
}

void pump(session_self* self) {
  auto& st = self->state;
  if (st.ph != phase::ready || st.busy || st.queue.empty() || st.migrating)
    return;
  st.busy = true;
  auto t = std::move(st.queue.front());
  st.queue.erase(st.queue.begin());
  st.running = t;
  run_turn(self, std::move(t));
}

void became_ready(session_self* self) {
  auto& st = self->state;
  st.ph = phase::ready;
  if (st.env.metrics)
    st.env.metrics->session_activated();
  for (auto& w : st.ready_waiters)
    w.deliver(caf::actor_cast<caf::actor>(self));
  st.ready_waiters.clear();
  if (st.migrating)
    return ship(self);
  pump(self);
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
        became_ready(self);
      },
      [self](caf::error& e) {
        auto& s = self->state;
        s.ph = phase::inactive;
        fail_queue(self, e);
        for (auto& w : s.ready_waiters)
          w.deliver(e);
        s.ready_waiters.clear();
        if (s.migrating) {
          s.migrating = false;
          s.migrate_rp.deliver(e);
        }
        request_passivation(self);
      });
}

/// Takes over a session that another node's actor shipped here: if nothing
/// happened to it since (same epoch and last seq in PostgreSQL), the shipped
/// window is the truth and only the epoch moves on; otherwise a normal
/// activation loads it again.
void adopt(session_self* self, handoff_state h) {
  auto& st = self->state;
  st.ph = phase::activating;
  adopt_request req{st.id, h.session.epoch, h.session.last_seq};
  self->request(my_storage(self), st.env.cfg->storage_timeout, adopt_atom::value, std::move(req))
    .then(
      [self, h = std::move(h)](std::int64_t new_epoch) mutable {
        if (new_epoch == 0)
          return activate(self);
        auto& s = self->state;
        s.rec = std::move(h.session);
        s.rec.epoch = new_epoch;
        s.window.assign(h.window.begin(), h.window.end());
        became_ready(self);
      },
      [self](caf::error&) { activate(self); });
}

session_actor::behavior_type session_behavior(session_self* self, std::string id,
                                              session_env env, session_registry_actor registry) {
  auto& st = self->state;
  st.id = std::move(id);
  st.env = std::move(env);
  st.registry = std::move(registry);
  if (auto m = st.env.metrics) {
    m->session_started();
    self->attach_functor([m] { m->session_stopped(); });
  }
  self->set_down_handler([self](caf::down_msg& dm) {
    if (self->state.successor && dm.source == self->state.successor.address())
      lose_relays(self);
  });
  return {
    [self](turn_request& req) -> caf::result<turn_reply> {
      auto& s = self->state;
      auto from = caf::actor_cast<caf::actor_addr>(self->current_sender());
      // Only turns the registry sent count for the passivation handshake;
      // those the predecessor handed over did not pass through it.
      if (std::find(s.handed_over_by.begin(), s.handed_over_by.end(), from) ==
          s.handed_over_by.end())
        ++s.received;
      if (s.ph == phase::moved) {
        relay(self, std::make_shared<pending_turn>(
                      pending_turn{std::move(req), self->make_response_promise()}));
        return caf::delegated<turn_reply>{};
      }
      if (s.ph == phase::stale)
        return make_error(errc::session_moved, "session '" + s.id + "' moved; retry");
      if (s.queue.size() + s.parked.size() >= s.env.cfg->queue_limit)
        return make_error(errc::session_busy,
                          "session '" + s.id + "' already has " +
                            std::to_string(s.env.cfg->queue_limit) +
                            " turns waiting; retry after the Retry-After delay");
      auto t = std::make_shared<pending_turn>(
        pending_turn{std::move(req), self->make_response_promise()});
      if (s.awaiting_predecessor && from != s.predecessor) {
        s.parked.push_back(std::move(t));
        return caf::delegated<turn_reply>{};
      }
      s.queue.push_back(std::move(t));
      if (s.ph == phase::inactive)
        activate(self);
      else
        pump(self);
      return caf::delegated<turn_reply>{};
    },
    // The running turn's client left and the node cancels on disconnect.
    [self](cancel_atom) {
      auto& s = self->state;
      auto from = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (s.sink && from == s.sink.address())
        self->send(s.env.llm, cancel_atom::value);
      else if (!s.relay_sinks.empty() && from == s.relay_sinks.front().second.address())
        self->send(s.successor, cancel_atom::value);
    },
    [self](delta_atom, std::string& piece) {
      // A piece of a relayed turn's reply, from the successor (this actor's
      // own turns' pieces go from the llm to their sink directly): on to the
      // client's node.
      auto& s = self->state;
      if (s.ph == phase::moved && !s.relay_sinks.empty())
        send_untyped(self, s.relay_sinks.front().second, delta_atom::value, std::move(piece));
      else if (s.sink)
        send_untyped(self, s.sink, delta_atom::value, std::move(piece));
    },
    [self](started_atom, std::int64_t seq, std::string& model) {
      auto& s = self->state;
      if (s.ph == phase::moved && !s.relay_sinks.empty())
        send_untyped(self, s.relay_sinks.front().second, started_atom::value, seq,
                     std::move(model));
      else if (s.sink)
        send_untyped(self, s.sink, started_atom::value, seq, std::move(model));
    },
    // From the predecessor: its queue is handed over (or from the timer set
    // on the handoff, should it never say so).
    [self](moved_atom) { predecessor_done(self); },
    [self](idle_atom) {
      auto& s = self->state;
      s.idle_armed = false;
      if (!s.queue.empty() || s.busy)
        return; // finish_turn arms it again
      auto idle_for = self->clock().now() - s.idle_since;
      if (idle_for >= s.env.cfg->idle)
        request_passivation(self);
      else
        arm_idle(self, s.env.cfg->idle - idle_for);
    },
    [self](deadline_atom) { sweep_deadlines(self); },
    [self](passivate_atom) {
      auto& s = self->state;
      if (s.env.metrics && s.ph != phase::moved)
        s.env.metrics->session_passivated();
      fail_queue(self, make_error(errc::session_moved, "session was passivated; retry"));
      if (!s.relays.empty()) {
        s.quit_when_relayed = true; // the registry no longer sends turns here
        return;
      }
      self->quit();
    },
    [self](migrate_atom, caf::actor& target,
           std::string& node) -> caf::result<std::string> {
      auto& s = self->state;
      if (s.ph == phase::stale || s.ph == phase::moved)
        return make_error(errc::session_moved, "session '" + s.id + "' already moved");
      if (s.migrating)
        return make_error(errc::conflict, "session '" + s.id + "' is already migrating");
      s.migrating = true;
      s.migrate_rp = self->make_response_promise();
      s.migrate_registry = std::move(target);
      s.migrate_node = std::move(node);
      if (!s.busy && s.ph != phase::activating)
        ship(self);
      return caf::delegated<std::string>{};
    },
    [self](handoff_atom, handoff_state& h) -> caf::result<caf::actor> {
      auto& s = self->state;
      // Its relays must not unbalance the handshake, also when this actor
      // is already active and answers at once (a node back from a pause
      // whose session was meanwhile active elsewhere).
      if (s.handed_over_by.size() >= 8)
        s.handed_over_by.erase(s.handed_over_by.begin());
      s.handed_over_by.push_back(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (s.ph == phase::ready)
        return caf::actor_cast<caf::actor>(self);
      // A stale actor is on its way out (its registry forgets it), a moved
      // one is elsewhere: the predecessor tries again and finds a fresh one.
      if (s.ph == phase::stale || s.ph == phase::moved)
        return make_error(errc::session_moved, "session '" + s.id + "' moved; retry");
      if (s.ph == phase::inactive && !s.awaiting_predecessor) {
        s.awaiting_predecessor = true;
        s.predecessor = caf::actor_cast<caf::actor_addr>(self->current_sender());
        self->delayed_send(self, predecessor_patience, moved_atom::value);
      }
      s.ready_waiters.push_back(self->make_response_promise());
      if (s.ph == phase::inactive)
        adopt(self, std::move(h));
      return caf::delegated<caf::actor>{};
    },
    [self](activate_atom) -> caf::result<caf::actor> {
      auto& s = self->state;
      if (s.ph == phase::ready)
        return caf::actor_cast<caf::actor>(self);
      if (s.ph == phase::stale || s.ph == phase::moved)
        return make_error(errc::session_moved, "session '" + s.id + "' moved; retry");
      s.ready_waiters.push_back(self->make_response_promise());
      if (s.ph == phase::inactive)
        activate(self);
      return caf::delegated<caf::actor>{};
    },
    [self](gone_atom) {
      auto& s = self->state;
      auto gone = make_error(errc::not_found, "session '" + s.id + "' was deleted");
      // The running turn is answered too (its stream ends with an error
      // event), and its model call stopped: what it would commit is gone.
      if (s.running && s.running->rp.pending()) {
        s.running->rp.deliver(gone);
        if (s.sink)
          self->send(s.env.llm, cancel_atom::value);
      }
      fail_queue(self, gone);
      self->quit();
    },
  };
}

} // namespace

session_actor spawn_session_actor(caf::local_actor* parent, session_registry_actor registry,
                                  std::string id, const session_env& env) {
  // Linked: when the registry stops (node shutdown), its sessions stop too.
  return parent->spawn<caf::linked>(session_behavior, std::move(id), env, std::move(registry));
}

} // namespace parley

#include "actors/storage_actor.hpp"

#include <algorithm>
#include <unordered_set>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include <caf/send.hpp>

#include "actors/instrumented.hpp"
#include "actors/vocabulary.hpp"
#include "net/http/clock.hpp"
#include "runtime/rules/token_usage.hpp"
#include "runtime/telemetry/log.hpp"
#include "storage/pg_store.hpp"

namespace parley {

namespace {

using clock = std::chrono::steady_clock;
using storage::storage_error;

/// How often the actor looks at its connection, and how long it must have
/// been idle before that look includes a round trip (`SELECT 1`). Without a
/// round trip, a closed connection is still seen (poll); a silent one (a
/// blackholed or hung server) needs the round trip.
constexpr auto tick_interval = std::chrono::seconds(1);
constexpr auto probe_after_idle = std::chrono::seconds(2);
/// After a failure that took long (a connect or statement that timed out:
/// PostgreSQL hung or blackholed), no new connection is tried for this long:
/// calls fail at once with storage_unavailable instead of each waiting out
/// the timeout. A fast failure (connection refused while PostgreSQL
/// restarts) costs nothing to repeat, so the next call simply tries again.
constexpr auto reconnect_pause = std::chrono::seconds(1);
constexpr auto slow_failure = std::chrono::milliseconds(250);

/// Most sessions activated in one transaction.
constexpr std::size_t max_activation_batch = 512;

struct pending_activation {
  std::string id;
  std::int32_t window = 0;
  caf::response_promise rp;
};

/// Most client id lookups in one statement.
constexpr std::size_t max_lookup_batch = 512;

struct pending_lookup {
  std::string id;
  std::string cmid;        ///< empty: only the deletion check
  caf::response_promise rp;
  std::int64_t live_seq = 0; ///< > 0: is the response with this reply seq deleted?
  std::string user = {};     ///< not empty: whose Idempotency-Key `cmid` is
};

struct storage_state {
  static inline const char* name = "storage";
  std::unique_ptr<storage::pg_store> store;
  metrics_ptr metrics;
  log::throttle failures; ///< failed calls' log lines
  std::vector<turn_write> batch;
  std::vector<caf::response_promise> waiting;
  bool flush_scheduled = false;
  /// Activations waiting for the next batch: like turn writes, those that
  /// arrive while one batch runs share the next transaction.
  std::vector<pending_activation> activations;
  bool activations_scheduled = false;
  /// Client id lookups (one before each turn that has a client id) share
  /// one statement the same way.
  std::vector<pending_lookup> lookups;
  bool lookups_scheduled = false;
  clock::time_point last_used;    ///< last round trip on the connection
  clock::time_point next_connect; ///< no connection attempt before this
  /// Gateway usage summed since the last flush, and its bound.
  usage_tally usage{usage_max_keys};
  usage_backlog_ptr backlog;
  bool usage_scheduled = false;

  ~storage_state();
};

bool may_try(const storage_state& st);
void failed(storage_state& st, const storage_error& e, clock::time_point began);

/// Usage that could not be kept: counted and logged (a log line per drop
/// event, not per record).
void usage_dropped(storage_state& st, std::int64_t calls, const char* why) {
  if (calls <= 0)
    return;
  if (st.metrics)
    st.metrics->usage_dropped(static_cast<std::uint64_t>(calls));
  log::warn("gateway usage dropped", {{"calls", std::to_string(calls)}, {"reason", why}});
}

/// Writes the summed gateway usage in one statement. After a failure that
/// wrote nothing (PostgreSQL unreachable, the connection lost before
/// COMMIT, a statement refused or timed out by the server) the rows wait for
/// the next flush, still bounded by the tally's keys; after one that may
/// have written them (lost at COMMIT, cut by the watchdog) they are dropped
/// rather than counted twice.
void flush_usage(storage_state& st) {
  if (st.usage.empty())
    return;
  auto rows = st.usage.take();
  auto keep = [&] {
    std::int64_t lost = 0;
    for (auto& r : rows)
      if (!st.usage.add(r))
        lost += r.requests;
    usage_dropped(st, lost, "too many users and models waiting");
  };
  if (!may_try(st))
    return keep();
  auto began = clock::now();
  try {
    st.store->add_usage(rows);
    st.last_used = clock::now();
  } catch (const storage_error& e) {
    failed(st, e, began);
    using c = storage_error::cause;
    bool maybe_written = e.error_kind() == storage_error::kind::permanent ||
                         e.error_cause() == c::in_doubt || e.error_cause() == c::timed_out;
    if (!maybe_written)
      return keep();
    std::int64_t lost = 0;
    for (auto& r : rows)
      lost += r.requests;
    usage_dropped(st, lost, "adding it failed in a way that may not be retried");
  }
}

storage_state::~storage_state() {
  // A node that stops writes what it summed (best effort).
  try {
    if (store)
      flush_usage(*this);
  } catch (...) {
  }
}

using storage_self = instrumented_actor<storage_state, storage_actor::base>;

caf::error translate(const storage_error& e) {
  // The driver's words stay out of answers (API.md section 2).
  if (e.error_kind() == storage_error::kind::transient)
    return make_error(errc::storage_unavailable, "PostgreSQL is unavailable; retry shortly");
  return make_error(errc::internal, "the request could not be stored or read");
}

/// Whether a call may try PostgreSQL now: not while it is known to be down
/// and the pause after the last failure has not passed.
bool may_try(const storage_state& st) {
  return st.store->connected() || clock::now() >= st.next_connect;
}

/// After a failed call that began at `began`: when PostgreSQL looks
/// unreachable and finding out took long, calls fail at once for a while. An
/// error of one statement (a serialization failure, say) does not count.
void failed(storage_state& st, const storage_error& e, clock::time_point began) {
  using c = storage_error::cause;
  auto why = e.error_cause();
  // The operator's view (the client's answer keeps the driver's words out).
  if (std::int64_t held = 0; st.failures.due(held))
    log::line(log::level::warn, "PostgreSQL call failed")
      .str("kind", e.error_kind() == storage_error::kind::transient ? "transient" : "permanent")
      .str("reason", e.what())
      .num("held_back", held)
      .write();
  bool slow = why == c::timed_out || clock::now() - began >= slow_failure;
  if (why != c::other && slow && !st.store->connected())
    st.next_connect = clock::now() + reconnect_pause;
}

/// Runs a blocking store call. A connection found dead is replaced and the
/// call runs once more: every call run this way either reads or writes in
/// one transaction, and `connection_lost` means that transaction never
/// reached COMMIT. Driver failures become API errors.
template <class F>
auto run(storage_state& st, F&& f) -> decltype(f()) {
  if (!may_try(st))
    throw storage_error(storage_error::kind::transient, "PostgreSQL is down");
  auto began = clock::now();
  try {
    auto r = f();
    st.last_used = clock::now();
    return r;
  } catch (const storage_error& e) {
    if (e.error_cause() != storage_error::cause::connection_lost) {
      failed(st, e, began);
      throw;
    }
  }
  began = clock::now();
  try {
    auto r = f();
    st.last_used = clock::now();
    return r;
  } catch (const storage_error& e) {
    failed(st, e, began);
    throw;
  }
}

template <class F>
auto guarded(storage_state& st, F&& f) -> caf::result<decltype(f())> {
  try {
    return run(st, std::forward<F>(f));
  } catch (const storage_error& e) {
    return translate(e);
  }
}

/// One tick: drops a connection the server closed, probes one that has been
/// idle, and reconnects when due, so that the next call finds a working
/// connection (or fails at once while PostgreSQL is down).
void tick(storage_state& st) {
  auto now = clock::now();
  st.store->check_connection();
  auto began = clock::now();
  try {
    if (st.store->connected()) {
      if (now - st.last_used >= probe_after_idle) {
        run(st, [&] {
          st.store->probe();
          return 0;
        });
      }
    } else if (now >= st.next_connect) {
      st.store->connect();
      st.last_used = clock::now();
    }
  } catch (const storage_error& e) {
    failed(st, e, began);
  }
}

/// Activates the waiting sessions in one transaction (at most
/// max_activation_batch, each id once; the rest wait for the next flush).
/// Runs one batched call, `run_and_answer`, which answers each request of
/// `batch`. A batch is not a request of its own, so the actor's error
/// boundary would answer none of them: on a failure every request of the
/// batch is answered here, with the storage error or with `internal`.
template <class Pending, class F>
void answer_batch(std::vector<Pending>& batch, const char* internal_message,
                  F&& run_and_answer) {
  try {
    run_and_answer();
  } catch (const storage_error& e) {
    auto err = translate(e);
    for (auto& p : batch)
      p.rp.deliver(err);
  } catch (const std::exception&) {
    auto err = make_error(errc::internal, internal_message);
    for (auto& p : batch)
      p.rp.deliver(err);
  }
}

void flush_activations(storage_self* self, storage_state& st) {
  std::vector<pending_activation> batch, later;
  std::unordered_set<std::string> ids;
  std::int32_t window = 0;
  for (auto& a : st.activations) {
    if (batch.size() < max_activation_batch && ids.insert(a.id).second) {
      window = std::max(window, a.window);
      batch.push_back(std::move(a));
    } else {
      later.push_back(std::move(a));
    }
  }
  st.activations = std::move(later);
  if (!st.activations.empty() && !st.activations_scheduled) {
    st.activations_scheduled = true;
    self->send(self, activate_flush_atom::value);
  }
  std::vector<std::string> list;
  list.reserve(batch.size());
  for (auto& a : batch)
    list.push_back(a.id);
  answer_batch(batch, "the session could not be loaded", [&] {
    auto out = run(st, [&] { return st.store->activate_many(list, window); });
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& a = batch[i];
      if (!out[i]) {
        a.rp.deliver(make_error(errc::not_found, "session '" + a.id + "' not found"));
        continue;
      }
      auto& w = out[i]->window;
      if (w.size() > static_cast<std::size_t>(std::max(a.window, 0)))
        w.erase(w.begin(), w.end() - std::max(a.window, 0));
      a.rp.deliver(std::move(*out[i]));
    }
  });
}

/// Runs the waiting client id lookups in one statement (at most
/// max_lookup_batch; the rest wait for the next flush).
void flush_lookups(storage_self* self, storage_state& st) {
  std::vector<pending_lookup> batch;
  if (st.lookups.size() <= max_lookup_batch) {
    batch = std::move(st.lookups);
    st.lookups.clear();
  } else {
    auto cut = st.lookups.begin() + max_lookup_batch;
    batch.assign(std::make_move_iterator(st.lookups.begin()), std::make_move_iterator(cut));
    st.lookups.erase(st.lookups.begin(), cut);
    st.lookups_scheduled = true;
    self->send(self, cmid_flush_atom::value);
  }
  std::vector<storage::client_lookup> keys;
  keys.reserve(batch.size());
  for (auto& l : batch)
    keys.push_back({l.id, l.cmid, l.live_seq, l.user});
  answer_batch(batch, "the request could not be stored or read", [&] {
    auto out = run(st, [&] { return st.store->look_up_client_ids(keys); });
    for (std::size_t i = 0; i < batch.size(); ++i) {
      client_id_hit hit;
      if (auto& r = out[i].turn) {
        hit.found = true;
        hit.user = std::move(r->first);
        if (r->second) {
          hit.has_reply = true;
          hit.reply = std::move(*r->second);
        }
      }
      hit.gone = out[i].gone;
      hit.key_owner = std::move(out[i].key_owner);
      batch[i].rp.deliver(std::move(hit));
    }
  });
}

/// Queues a lookup for the next flush_lookups.
caf::delegated<client_id_hit> look_up(storage_self* self, storage_state& st, pending_lookup l) {
  st.lookups.push_back(std::move(l));
  if (!st.lookups_scheduled) {
    st.lookups_scheduled = true;
    self->send(self, cmid_flush_atom::value);
  }
  return {};
}

storage_actor::behavior_type storage_behavior(storage_self* self, std::string url,
                                              metrics_ptr metrics,
                                              std::chrono::milliseconds pg_timeout,
                                              int usage_shard, usage_backlog_ptr backlog) {
  self->state.store =
    std::make_unique<storage::pg_store>(std::move(url), pg_timeout, usage_shard);
  self->state.metrics = std::move(metrics);
  self->state.backlog = std::move(backlog);
  auto& st = self->state;
  self->send(self, pg_tick_atom::value); // connect now, not on the first request
  return {
    [&st](find_key_atom, const std::string& hash) {
      return guarded(st, [&] { return st.store->find_key(hash).value_or(api_key_record{}); });
    },
    [&st](make_key_atom, const make_key_request& r) {
      return guarded(st, [&] { return st.store->create_key(r.key, r.hash); });
    },
    [&st](usage_of_atom, const std::string& user, std::int32_t days) {
      return guarded(st, [&] { return st.store->usage_of(user, days); });
    },
    [&st](top_usage_atom, std::int32_t limit) {
      return guarded(st, [&] { return st.store->top_usage_today(limit); });
    },
    [&st](list_keys_atom, const list_keys_request& r) {
      return guarded(st, [&] { return st.store->list_keys(r.user, r.limit); });
    },
    [&st](revoke_atom, const std::string& prefix_or_id) {
      return guarded(st,
                     [&] { return static_cast<std::int32_t>(st.store->revoke_key(prefix_or_id)); });
    },
    [&st](new_sess_atom, session_record& s) {
      return guarded(st, [&] {
        st.store->create_session(s);
        return s;
      });
    },
    [&st](new_sess_atom, session_record& s, const std::vector<message_record>& first) {
      return guarded(st, [&] {
        st.store->create_session(s, first);
        s.message_count = s.last_seq = static_cast<std::int64_t>(first.size());
        return s;
      });
    },
    [&st](new_sess_atom, const session_record& s, const std::vector<message_record>& first,
          const std::string& request_hash) -> caf::result<session_record> {
      try {
        if (auto made =
              run(st, [&] { return st.store->create_session_once(s, first, request_hash); }))
          return std::move(*made);
        return make_error(errc::conflict, "the Idempotency-Key was already used with another "
                                          "request");
      } catch (const storage_error& e) {
        return translate(e);
      }
    },
    [&st](append_atom, const append_write& w) -> commit_outcome {
      try {
        return run(st, [&] { return st.store->append_messages(w); });
      } catch (const storage_error& e) {
        return e.error_cause() == storage_error::cause::in_doubt ||
                   e.error_cause() == storage_error::cause::timed_out
                 ? commit_outcome::unknown
                 : commit_outcome::failed;
      }
    },
    [&st](fork_atom, const fork_request& r) -> caf::result<bool> {
      try {
        auto o = run(st, [&] { return st.store->fork_session(r); });
        if (o == fork_outcome::key_taken)
          return make_error(errc::conflict, "the Idempotency-Key was used for another request");
        return o == fork_outcome::made;
      } catch (const storage_error& e) {
        return translate(e);
      }
    },
    [&st](get_resp_atom, const response_ref& r) -> caf::result<response_record> {
      try {
        if (auto v = run(st, [&] { return st.store->response_turn(r); }))
          return std::move(*v);
        return make_error(errc::not_found, "response not found");
      } catch (const storage_error& e) {
        return translate(e);
      }
    },
    [&st](del_resp_atom, const response_ref& r) {
      return guarded(st, [&] { return st.store->delete_response(r); });
    },
    [&st](ensure_atom, const session_record& s, const std::string& idem_key) {
      return guarded(st, [&] { return st.store->ensure_session(s, idem_key); });
    },
    [&st](set_meta_atom, const update_metadata_request& r) -> caf::result<session_record> {
      try {
        if (auto v = run(st, [&] {
              return st.store->update_metadata(r.session_id, r.user_id, r.metadata_json);
            }))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + r.session_id + "' not found");
      } catch (const storage_error& e) {
        return translate(e);
      }
    },
    [&st](get_sess_atom, const std::string& id,
          const std::string& user) -> caf::result<session_record> {
      try {
        if (auto v = run(st, [&] { return st.store->get_session(id, user); }))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + id + "' not found");
      } catch (const storage_error& e) {
        return translate(e);
      }
    },
    [&st](get_sess_atom, const std::string& id) -> caf::result<session_record> {
      try {
        if (auto v = run(st, [&] { return st.store->find_session(id); }))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + id + "' not found");
      } catch (const storage_error& e) {
        return translate(e);
      }
    },
    [&st](adopt_atom, const adopt_request& r) {
      return guarded(st, [&] { return st.store->adopt(r.session_id, r.epoch, r.last_seq); });
    },
    [&st](list_sess_atom, const list_sessions_request& r) {
      return guarded(st, [&] { return st.store->list_sessions(r.user_id, r.limit, r.cursor); });
    },
    [&st](del_sess_atom, const std::string& id, const std::string& user) {
      return guarded(st, [&] { return st.store->delete_session(id, user); });
    },
    [self, &st](activate_atom, std::string& id,
                std::int32_t window) -> caf::result<activation_record> {
      st.activations.push_back({std::move(id), window, self->make_response_promise()});
      if (!st.activations_scheduled) {
        st.activations_scheduled = true;
        self->send(self, activate_flush_atom::value);
      }
      return caf::delegated<activation_record>{};
    },
    [self, &st](activate_flush_atom) {
      st.activations_scheduled = false;
      flush_activations(self, st);
    },
    [&st](list_msg_atom, const list_messages_request& r) -> caf::result<message_page> {
      try {
        if (auto v = run(st, [&] {
              return st.store->list_messages(r.session_id, r.user_id, r.after, r.limit,
                                             r.descending ? storage::page_order::descending
                                                          : storage::page_order::ascending);
            }))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + r.session_id + "' not found");
      } catch (const storage_error& e) {
        return translate(e);
      }
    },
    [self, &st](find_cmid_atom, std::string& id, std::string& cmid, std::int64_t live_seq,
                std::string& user) -> caf::result<client_id_hit> {
      return look_up(self, st,
                     {std::move(id), std::move(cmid), self->make_response_promise(), live_seq,
                      std::move(user)});
    },
    [self, &st](cmid_flush_atom) {
      st.lookups_scheduled = false;
      flush_lookups(self, st);
    },
    [&st](feedback_atom, const feedback_request& r) {
      return guarded(st, [&] {
        std::optional<std::string> c;
        if (r.comment)
          c = *r.comment;
        return st.store->put_feedback(r.session_id, r.user_id, r.seq, r.rating, c);
      });
    },
    [&st](ping_atom) {
      try {
        run(st, [&] {
          st.store->probe();
          return 0;
        });
        return true;
      } catch (const storage_error&) {
        return false;
      }
    },
    [self, &st](usage_atom, const usage_total& row) {
      if (st.backlog)
        st.backlog->queued.fetch_sub(1, std::memory_order_relaxed);
      if (!st.usage.add(row))
        usage_dropped(st, row.requests, "too many users and models waiting");
      if (!st.usage_scheduled) {
        st.usage_scheduled = true;
        self->delayed_send(self, usage_flush_interval, usage_flush_atom::value);
      }
    },
    [self, &st](usage_flush_atom) {
      st.usage_scheduled = false;
      flush_usage(st);
      if (!st.usage.empty()) {
        st.usage_scheduled = true;
        self->delayed_send(self, usage_flush_interval, usage_flush_atom::value);
      }
    },
    [self, &st](pg_tick_atom) {
      tick(st);
      self->delayed_send(self, tick_interval, pg_tick_atom::value);
    },
    [self, &st](turn_write& t) -> caf::result<commit_outcome> {
      st.batch.push_back(std::move(t));
      st.waiting.push_back(self->make_response_promise());
      if (!st.flush_scheduled) {
        st.flush_scheduled = true;
        self->send(self, flush_atom::value);
      }
      return caf::delegated<commit_outcome>{};
    },
    [&st](flush_atom) {
      st.flush_scheduled = false;
      auto batch = std::move(st.batch);
      auto waiting = std::move(st.waiting);
      st.batch.clear();
      st.waiting.clear();
      auto started = std::chrono::steady_clock::now();
      // While PostgreSQL is known to be down nothing is sent: failed.
      bool tried = may_try(st);
      auto out = tried ? st.store->commit_turns(batch)
                       : std::vector<commit_outcome>(batch.size(), commit_outcome::failed);
      if (st.store->connected())
        st.last_used = clock::now();
      else if (clock::now() - started >= slow_failure)
        st.next_connect = clock::now() + reconnect_pause;
      if (st.metrics)
        st.metrics->storage_commit(
          batch.size(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      auto bad = std::count_if(out.begin(), out.end(), [](commit_outcome o) {
        return o == commit_outcome::failed || o == commit_outcome::unknown ||
               o == commit_outcome::conflict;
      });
      if (std::int64_t held = 0; bad > 0 && st.failures.due(held))
        log::line(log::level::warn, "PostgreSQL call failed")
          .str("call", "commit")
          .num("turns_failed", bad)
          .str("reason", tried ? st.store->last_commit_failure()
                               : std::string{"PostgreSQL is down: not tried"})
          .num("held_back", held)
          .write();
      for (std::size_t i = 0; i < waiting.size(); ++i)
        waiting[i].deliver(out[i]);
    },
  };
}

} // namespace

storage_actor spawn_storage_actor(caf::actor_system& sys, const std::string& pg_url,
                                  metrics_ptr metrics, std::chrono::milliseconds pg_timeout,
                                  int usage_shard, usage_backlog_ptr backlog) {
  return sys.spawn<caf::detached>(storage_behavior, pg_url, std::move(metrics), pg_timeout,
                                  usage_shard, std::move(backlog));
}

void record_usage(const storage_pool& pool, const std::string& user_id, const std::string& model,
                  const token_usage& usage, node_metrics* metrics) {
  auto& backlog = pool.backlog();
  if (!backlog ||
      backlog->queued.fetch_add(1, std::memory_order_relaxed) >= backlog->limit) {
    if (backlog)
      backlog->queued.fetch_sub(1, std::memory_order_relaxed);
    if (metrics)
      metrics->usage_dropped(1);
    return;
  }
  usage_total row;
  row.user_id = user_id;
  row.day = now_rfc3339().substr(0, 10);
  row.model = model;
  row.requests = 1;
  if (usage.known) {
    row.prompt_tokens = usage.prompt_tokens;
    row.completion_tokens = usage.completion_tokens;
  }
  caf::anon_send(pool.for_usage(), usage_atom::value, std::move(row));
}

} // namespace parley

#include "actors/storage_actor.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/instrumented.hpp"
#include "actors/messages.hpp"
#include "storage/pg_store.hpp"

namespace parley {

namespace {

struct storage_state {
  static inline const char* name = "storage";
  std::unique_ptr<storage::pg_store> store;
  metrics_ptr metrics;
  std::vector<turn_write> batch;
  std::vector<caf::response_promise> waiting;
  bool flush_scheduled = false;
};

using storage_self = instrumented_actor<storage_state>;

caf::error translate(const storage::storage_error& e) {
  if (e.error_kind() == storage::storage_error::kind::transient)
    return make_error(errc::storage_unavailable,
                      "PostgreSQL is unavailable; retry shortly (" + std::string{e.what()} + ")");
  return make_error(errc::internal, std::string{"storage error: "} + e.what());
}

/// Runs a blocking store call and turns driver failures into API errors.
template <class F>
auto guarded(F&& f) -> caf::result<decltype(f())> {
  try {
    return f();
  } catch (const storage::storage_error& e) {
    return translate(e);
  }
}

caf::behavior storage_actor(storage_self* self, std::string url, metrics_ptr metrics) {
  self->state.store = std::make_unique<storage::pg_store>(std::move(url));
  self->state.metrics = std::move(metrics);
  auto& st = self->state;
  return {
    [&st](find_key_atom, const std::string& hash) {
      return guarded([&] { return st.store->find_key(hash).value_or(api_key_record{}); });
    },
    [&st](make_key_atom, const std::string& user, const std::string& hash,
          const std::string& prefix) {
      return guarded([&] { return st.store->create_key(user, hash, prefix); });
    },
    [&st](revoke_atom, const std::string& prefix_or_id) {
      return guarded([&] { return static_cast<std::int32_t>(st.store->revoke_key(prefix_or_id)); });
    },
    [&st](new_sess_atom, session_record& s) {
      return guarded([&] {
        st.store->create_session(s);
        return s;
      });
    },
    [&st](get_sess_atom, const std::string& id,
          const std::string& user) -> caf::result<session_record> {
      try {
        if (auto v = st.store->get_session(id, user))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + id + "' not found");
      } catch (const storage::storage_error& e) {
        return translate(e);
      }
    },
    [&st](get_sess_atom, const std::string& id) -> caf::result<session_record> {
      try {
        if (auto v = st.store->find_session(id))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + id + "' not found");
      } catch (const storage::storage_error& e) {
        return translate(e);
      }
    },
    [&st](adopt_atom, const std::string& id, std::int64_t epoch, std::int64_t last_seq) {
      return guarded([&] { return st.store->adopt(id, epoch, last_seq); });
    },
    [&st](list_sess_atom, const std::string& user, std::int32_t limit, const std::string& cursor) {
      return guarded([&] { return st.store->list_sessions(user, limit, cursor); });
    },
    [&st](del_sess_atom, const std::string& id, const std::string& user) {
      return guarded([&] { return st.store->delete_session(id, user); });
    },
    [&st](activate_atom, const std::string& id,
          std::int32_t window) -> caf::result<activation_record> {
      try {
        if (auto v = st.store->activate(id, window))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + id + "' not found");
      } catch (const storage::storage_error& e) {
        return translate(e);
      }
    },
    [&st](list_msg_atom, const std::string& id, const std::string& user, std::int64_t after,
          std::int32_t limit) -> caf::result<message_page> {
      try {
        if (auto v = st.store->list_messages(id, user, after, limit))
          return std::move(*v);
        return make_error(errc::not_found, "session '" + id + "' not found");
      } catch (const storage::storage_error& e) {
        return translate(e);
      }
    },
    [&st](find_cmid_atom, const std::string& id, const std::string& cmid) {
      return guarded([&] {
        client_id_hit hit;
        if (auto r = st.store->find_by_client_id(id, cmid)) {
          hit.found = true;
          hit.user = std::move(r->first);
          if (r->second) {
            hit.has_reply = true;
            hit.reply = std::move(*r->second);
          }
        }
        return hit;
      });
    },
    [&st](feedback_atom, const std::string& id, const std::string& user, std::int64_t seq,
          std::int32_t rating, const std::string& comment, bool has_comment) {
      return guarded([&] {
        std::optional<std::string> c;
        if (has_comment)
          c = comment;
        return st.store->put_feedback(id, user, seq, rating, c);
      });
    },
    [&st](ping_atom) { return st.store->ping(); },
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
      auto out = st.store->commit_turns(batch);
      if (st.metrics)
        st.metrics->storage_commit(
          batch.size(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      for (std::size_t i = 0; i < waiting.size(); ++i)
        waiting[i].deliver(out[i]);
    },
  };
}

} // namespace

caf::actor spawn_storage_actor(caf::actor_system& sys, const std::string& pg_url,
                               metrics_ptr metrics) {
  return sys.spawn<caf::detached>(storage_actor, pg_url, std::move(metrics));
}

const caf::actor& storage_pool::for_session(const std::string& session_id) const {
  return actors_[std::hash<std::string>{}(session_id) % actors_.size()];
}

const caf::actor& storage_pool::any() const {
  return actors_[next_.fetch_add(1, std::memory_order_relaxed) % actors_.size()];
}

} // namespace parley

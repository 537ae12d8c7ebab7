#include "actors/supervisor_actor.hpp"

#include <climits>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/instrumented.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

namespace {

constexpr std::int64_t stopped_mark = INT64_MIN;

std::int64_t ns(health_board::clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

} // namespace

health_board::health_board(std::vector<std::string> roles, clock::duration deadline)
  : roles_(std::move(roles)), deadline_(deadline), last_(new std::atomic<std::int64_t>[roles_.size()]) {
  auto now = ns(clock::now());
  for (std::size_t i = 0; i < roles_.size(); ++i)
    last_[i].store(now);
}

void health_board::answered(std::size_t i, clock::time_point at) {
  auto v = ns(at);
  auto cur = last_[i].load();
  // A stopped actor stays stopped, and answers are monotonic.
  while (cur != stopped_mark && cur < v && !last_[i].compare_exchange_weak(cur, v)) {
  }
}

void health_board::stopped(std::size_t i) { last_[i].store(stopped_mark); }

void health_board::postgres(bool ok) { postgres_ok_.store(ok, std::memory_order_relaxed); }

std::vector<std::string> health_board::failing(clock::time_point now) const {
  std::vector<std::string> out;
  auto limit = ns(now) - std::chrono::duration_cast<std::chrono::nanoseconds>(deadline_).count();
  for (std::size_t i = 0; i < roles_.size(); ++i) {
    auto v = last_[i].load();
    if (v == stopped_mark || v < limit)
      out.push_back(roles_[i]);
  }
  return out;
}

std::vector<std::string> roles_of(const std::vector<std::pair<std::string, caf::actor>>& core) {
  std::vector<std::string> roles;
  roles.reserve(core.size());
  for (auto& [role, a] : core)
    roles.push_back(role);
  return roles;
}

namespace {

struct supervisor_state {
  static inline const char* name = "supervisor";
  supervisor_config cfg;
  std::size_t next_storage = 0;
  bool pg_pending = false;
};

using supervisor_self = instrumented_actor<supervisor_state, supervisor_actor::base>;

void check(supervisor_self* self) {
  auto& st = self->state;
  for (std::size_t i = 0; i < st.cfg.core.size(); ++i) {
    // Answers come back whenever the actor gets to them; the board keeps
    // the time of the latest, and the probes compare it with a deadline.
    self->request(st.cfg.core[i].second, st.cfg.interval * 30, health_atom::value)
      .then([self, i](bool) { self->state.cfg.board->answered(i, health_board::clock::now()); },
            [](caf::error&) {});
  }
  if (!st.cfg.storage.empty() && !st.pg_pending) {
    st.pg_pending = true;
    auto& target = st.cfg.storage[st.next_storage++ % st.cfg.storage.size()];
    self->request(target, st.cfg.pg_timeout, ping_atom::value)
      .then(
        [self](bool ok) {
          self->state.pg_pending = false;
          self->state.cfg.board->postgres(ok);
        },
        [self](caf::error&) {
          self->state.pg_pending = false;
          self->state.cfg.board->postgres(false);
        });
  }
  self->delayed_send(self, st.cfg.interval, tick_atom::value);
}

supervisor_actor::behavior_type supervisor(supervisor_self* self, supervisor_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  for (auto& [role, a] : st.cfg.core)
    self->monitor(a);
  self->set_down_handler([self](const caf::down_msg& m) {
    auto& s = self->state;
    for (std::size_t i = 0; i < s.cfg.core.size(); ++i) {
      if (s.cfg.core[i].second.address() != m.source)
        continue;
      s.cfg.board->stopped(i);
      if (s.cfg.on_core_down)
        s.cfg.on_core_down(s.cfg.core[i].first, m.reason);
    }
  });
  self->send(self, tick_atom::value);
  return {
    [self](tick_atom) { check(self); },
  };
}

} // namespace

supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_config cfg) {
  return sys.spawn(supervisor, std::move(cfg));
}

} // namespace parley

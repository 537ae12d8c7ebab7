#include "actors/registry_actor.hpp"

#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/messages.hpp"

namespace parley {

namespace {

struct registry_entry {
  caf::actor actor;
  std::uint64_t forwarded = 0;
};

struct registry_state {
  session_env env;
  std::unordered_map<std::string, registry_entry> sessions;
  std::unordered_map<caf::actor_addr, std::string> by_addr;
};

using registry_self = caf::stateful_actor<registry_state>;

void forget(registry_self* self, std::unordered_map<std::string, registry_entry>::iterator it) {
  self->state.by_addr.erase(it->second.actor.address());
  self->state.sessions.erase(it);
}

caf::behavior registry_actor(registry_self* self, session_env env) {
  self->state.env = std::move(env);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    auto a = st.by_addr.find(dm.source);
    if (a == st.by_addr.end())
      return;
    auto s = st.sessions.find(a->second);
    if (s != st.sessions.end() && s->second.actor.address() == dm.source)
      st.sessions.erase(s);
    st.by_addr.erase(a);
  });
  return {
    [self](turn_request& t) {
      auto& st = self->state;
      auto it = st.sessions.find(t.session_id);
      if (it == st.sessions.end()) {
        auto a = spawn_session_actor(self, t.session_id, st.env);
        self->monitor(a);
        st.by_addr.emplace(a.address(), t.session_id);
        it = st.sessions.emplace(t.session_id, registry_entry{a, 0}).first;
      }
      ++it->second.forwarded;
      return self->delegate(it->second.actor, std::move(t));
    },
    [self](idle_atom, const std::string& id, std::uint64_t received) {
      auto& st = self->state;
      auto it = st.sessions.find(id);
      if (it == st.sessions.end() || it->second.actor.address() != self->current_sender() ||
          it->second.forwarded != received)
        return;
      auto a = it->second.actor;
      forget(self, it);
      self->send(a, passivate_atom::value);
    },
    [self](gone_atom, const std::string& id) {
      auto& st = self->state;
      auto it = st.sessions.find(id);
      if (it == st.sessions.end())
        return;
      auto a = it->second.actor;
      forget(self, it);
      self->send(a, gone_atom::value);
    },
    [self](count_atom) { return static_cast<std::uint64_t>(self->state.sessions.size()); },
  };
}

} // namespace

caf::actor spawn_registry_actor(caf::actor_system& sys, const session_env& env) {
  return sys.spawn(registry_actor, env);
}

} // namespace parley

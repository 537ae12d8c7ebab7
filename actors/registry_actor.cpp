#include "actors/registry_actor.hpp"

#include <unordered_map>
#include <unordered_set>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/cluster_view.hpp"
#include "actors/deadlines.hpp"
#include "actors/instrumented.hpp"
#include "actors/membership_actor.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

namespace {

using clock = std::chrono::steady_clock;

/// How long a node remembers where it moved a session, for turns that were
/// routed with an older view.
constexpr auto tombstone_ttl = std::chrono::seconds(60);
constexpr std::size_t tombstone_sweep_at = 10000;
constexpr std::int32_t max_hops = 2;
constexpr auto migrate_timeout = std::chrono::seconds(60);
constexpr auto retry_every = std::chrono::seconds(1);

struct registry_entry {
  session_actor actor;
  std::uint64_t forwarded = 0;
  bool migrating = false;
};

/// Where a session moved: the CAF node, not the registry handle of the
/// move. That handle dies with its connection, and a message delegated to a
/// dead handle is lost without an error, so a turn sent on would wait for
/// the edge's safety net; the node's registry is looked up in the current
/// view at each use.
struct tombstone {
  caf::node_id node;
  clock::time_point expires;
};

struct registry_state {
  static inline const char* name = "registry";
  session_env env;
  std::string node_id;
  view_ptr view;
  std::unordered_map<std::string, registry_entry> sessions;
  std::unordered_map<caf::actor_addr, std::string> by_addr;
  std::unordered_map<std::string, tombstone> moved;
  /// Session actors that moved away but still answer turns they handed to
  /// their successor; a node that stops waits for them.
  std::unordered_set<caf::actor_addr> departing;
  /// A move failed (target unreachable, timed out): retry on the next tick.
  bool unsettled = false;
  /// Turns sent on to another node's registry, by the proxy they went
  /// through: a message to a dead proxy (its connection closed) is lost
  /// without an error, so when one dies its turns are answered here.
  std::unordered_map<std::uint64_t, std::pair<const caf::actor_control_block*,
                                              caf::typed_response_promise<turn_reply>>>
    sent_on;
  std::uint64_t next_sent = 0;
  std::unordered_set<const caf::actor_control_block*> watched;
  deadline_book deadlines; ///< of the turns sent on (actors/deadlines.hpp)
};

using registry_self = instrumented_actor<registry_state, registry_actor::base>;

/// Another node's registry, from member_info or a message.
registry_actor as_registry(const caf::actor& a) {
  return caf::actor_cast<registry_actor>(a);
}
using entry_iter = std::unordered_map<std::string, registry_entry>::iterator;

void forget(registry_self* self, entry_iter it) {
  self->state.by_addr.erase(it->second.actor.address());
  self->state.sessions.erase(it);
}

entry_iter spawn_entry(registry_self* self, const std::string& id) {
  auto& st = self->state;
  auto a = spawn_session_actor(self, session_registry_actor{self}, id, st.env);
  self->monitor(a);
  st.by_addr.emplace(a.address(), id);
  return st.sessions.emplace(id, registry_entry{a, 0, false}).first;
}

/// Where a recent migration sent `id`, if it is still remembered and that
/// node is still a member not down: its registry as the current view has it.
const member_info* moved_to(registry_self* self, const std::string& id) {
  auto& st = self->state;
  auto it = st.moved.find(id);
  if (it == st.moved.end())
    return nullptr;
  if (it->second.expires >= clock::now() && st.view)
    for (auto& m : st.view->members)
      if (m.status != member_status::down && m.id != st.node_id && m.registry &&
          m.registry.node() == it->second.node)
        return &m;
  st.moved.erase(it);
  return nullptr;
}

void remember_move(registry_self* self, const std::string& id, const caf::node_id& node) {
  auto& moved = self->state.moved;
  auto now = clock::now();
  if (moved.size() >= tombstone_sweep_at)
    for (auto it = moved.begin(); it != moved.end();)
      it = it->second.expires < now ? moved.erase(it) : std::next(it);
  moved[id] = tombstone{node, now + tombstone_ttl};
}

void settle_sent(registry_self* self, std::uint64_t n, caf::expected<turn_reply> r) {
  auto& st = self->state;
  auto it = st.sent_on.find(n);
  if (it == st.sent_on.end())
    return;
  auto rp = std::move(it->second.second);
  st.sent_on.erase(it);
  if (r)
    rp.deliver(std::move(*r));
  else
    rp.deliver(std::move(r.error()));
}

/// Sends a turn on to another node's registry and answers its sender with
/// what comes back, or with session_moved when that registry's proxy dies
/// first (watched by a monitor set once per proxy: at once when it is dead
/// already).
caf::result<turn_reply> send_on(registry_self* self, const registry_actor& to, turn_request t) {
  auto& st = self->state;
  auto proxy = caf::actor_cast<caf::actor_control_block*>(to);
  if (st.watched.insert(proxy).second)
    self->monitor(to);
  auto n = ++st.next_sent;
  auto rp = self->make_response_promise<turn_reply>();
  st.sent_on.emplace(n, std::make_pair(proxy, rp));
  auto& cfg = *st.env.cfg;
  auto bound = (cfg.llm_call_timeout + std::chrono::seconds(30)) *
               static_cast<long>(cfg.queue_limit + 1);
  timed_request<turn_reply>(
    self, to, bound, [self, n](turn_reply& r) { settle_sent(self, n, std::move(r)); },
    [self, n](caf::error& e) { settle_sent(self, n, std::move(e)); }, std::move(t));
  return rp;
}

/// A watched proxy died: the turns sent through it are answered.
void lose_sent(registry_self* self, const caf::actor_control_block* proxy) {
  auto& st = self->state;
  st.watched.erase(proxy);
  std::vector<std::uint64_t> lost;
  for (auto& [n, s] : st.sent_on)
    if (s.first == proxy)
      lost.push_back(n);
  for (auto n : lost)
    settle_sent(self, n, make_error(errc::session_moved,
                                    "the node hosting the session went away while the turn "
                                    "was on its way; retry with the same client_message_id"));
}

/// The owner of `id` in this node's view when it is another node.
const member_info* remote_owner(registry_self* self, const std::string& id) {
  auto& st = self->state;
  if (!st.view)
    return nullptr;
  auto& owner = st.view->owner(id);
  if (owner.id == st.node_id || !owner.registry)
    return nullptr;
  return &owner;
}

/// The member that hosted `id` before the members now leaving left: only
/// when that is a leaving member other than this node. A turn routed here
/// with the new view goes there first, so the session is not activated here
/// (which would fence the turn still running there) before it is handed
/// over with its queue.
const member_info* leaving_host(registry_self* self, const std::string& id) {
  auto& st = self->state;
  if (!st.view)
    return nullptr;
  auto* host = st.view->leaving_owner(id);
  if (!host || host->id == st.node_id || !host->registry)
    return nullptr;
  return host;
}

void pin(registry_self* self, const std::string& id, const std::string& node) {
  if (auto* me = self->state.view ? self->state.view->find(self->state.node_id) : nullptr)
    self->send(caf::actor_cast<membership_actor>(me->membership), pin_atom::value,
               pin_request{id, node, true});
}

/// Ships an active session to `target` (a member's registry). The session
/// actor finishes its running turn first and forwards what is queued.
caf::result<std::string> migrate_active(registry_self* self, entry_iter it,
                                        const member_info& target) {
  if (it->second.migrating)
    return make_error(errc::conflict, "session '" + it->first + "' is already migrating");
  it->second.migrating = true;
  auto rp = self->make_response_promise<std::string>();
  auto id = it->first;
  self->request(it->second.actor, migrate_timeout, migrate_atom::value, target.registry, target.id)
    .then(
      [self, rp, id, node = target.id](std::string&) mutable {
        pin(self, id, node);
        rp.deliver(node);
      },
      [self, rp, id](caf::error& e) mutable {
        if (auto e2 = self->state.sessions.find(id); e2 != self->state.sessions.end())
          e2->second.migrating = false;
        rp.deliver(std::move(e));
      });
  return rp;
}

/// The sender, the actor of `id` here, leaves this node's sessions (moved
/// away or stale); it counts as departing until it stopped. False when it
/// is not that actor.
bool let_go(registry_self* self, const std::string& id) {
  auto& st = self->state;
  auto it = st.sessions.find(id);
  if (it == st.sessions.end() || it->second.actor.address() != self->current_sender())
    return false;
  auto a = it->second.actor;
  forget(self, it);
  st.departing.insert(a.address());
  self->send(a, passivate_atom::value);
  return true;
}

/// Moves every session this node hosts but no longer owns to its owner.
void rebalance(registry_self* self) {
  std::vector<std::pair<entry_iter, const member_info*>> moves;
  for (auto it = self->state.sessions.begin(); it != self->state.sessions.end(); ++it)
    if (!it->second.migrating)
      if (auto* owner = remote_owner(self, it->first))
        moves.emplace_back(it, owner);
  for (auto& [it, owner] : moves) {
    it->second.migrating = true;
    self->request(it->second.actor, migrate_timeout, migrate_atom::value, owner->registry,
                  owner->id)
      .then([](std::string&) {},
            [self, id = it->first](caf::error&) {
              // It stays here for now; the retry tick tries again.
              if (auto e = self->state.sessions.find(id); e != self->state.sessions.end())
                e->second.migrating = false;
              self->state.unsettled = true;
            });
  }
}

registry_actor::behavior_type registry_behavior(registry_self* self, session_env env,
                                                std::string node_id) {
  self->state.env = std::move(env);
  self->state.node_id = std::move(node_id);
  self->delayed_send(self, retry_every, beat_atom::value);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.watched.count(dm.source.get()) > 0)
      return lose_sent(self, dm.source.get());
    if (st.departing.erase(dm.source) > 0)
      return;
    auto a = st.by_addr.find(dm.source);
    if (a == st.by_addr.end())
      return;
    auto s = st.sessions.find(a->second);
    if (s != st.sessions.end() && s->second.actor.address() == dm.source)
      st.sessions.erase(s);
    st.by_addr.erase(a);
  });
  return {
    [self](turn_request& t) -> caf::result<turn_reply> {
      auto& st = self->state;
      auto it = st.sessions.find(t.session_id);
      if (it == st.sessions.end()) {
        if (auto* tomb = moved_to(self, t.session_id); tomb && t.hops < max_hops) {
          ++t.hops;
          return send_on(self, as_registry(tomb->registry), std::move(t));
        }
        if (auto* owner = remote_owner(self, t.session_id); owner && t.hops < max_hops) {
          ++t.hops;
          return send_on(self, as_registry(owner->registry), std::move(t));
        }
        // Straight from an edge (a forwarded turn is served here, so that
        // the leaving node never activates a session anew).
        if (auto* host = leaving_host(self, t.session_id); host && t.hops == 0) {
          ++t.hops;
          return send_on(self, as_registry(host->registry), std::move(t));
        }
        it = spawn_entry(self, t.session_id);
      }
      ++it->second.forwarded;
      self->delegate(it->second.actor, std::move(t));
      return caf::delegated<turn_reply>{};
    },
    [self](view_atom, view_ptr& v) {
      self->state.view = std::move(v);
      rebalance(self);
    },
    [self](deadline_atom) { sweep_deadlines(self); },
    [self](beat_atom) {
      if (self->state.unsettled) {
        self->state.unsettled = false;
        rebalance(self);
      }
      self->delayed_send(self, retry_every, beat_atom::value);
    },
    [self](migrate_atom, const std::string& id,
           const std::string& node) -> caf::result<std::string> {
      auto& st = self->state;
      auto* target = st.view ? st.view->find(node) : nullptr;
      if (!target)
        return make_error(errc::not_found, "node '" + node + "' is not a member of the cluster");
      if (target->status != member_status::up)
        return make_error(errc::invalid_request,
                          "node '" + node + "' is " + to_string(target->status) + ", not up");
      auto it = st.sessions.find(id);
      if (it != st.sessions.end()) {
        if (node == st.node_id)
          return node;
        return migrate_active(self, it, *target);
      }
      if (auto* tomb = moved_to(self, id)) {
        self->delegate(as_registry(tomb->registry), migrate_atom::value, id, node);
        return caf::delegated<std::string>{};
      }
      // Not active here: make it active on the target, then pin it there.
      auto rp = self->make_response_promise<std::string>();
      auto to = as_registry(target->registry);
      self->request(to, migrate_timeout, activate_atom::value, id)
        .then(
          [self, rp, id, node, to](caf::actor&) mutable {
            // Nodes that have not seen the pin yet route here: send them on.
            if (node != self->state.node_id)
              remember_move(self, id, to.node());
            pin(self, id, node);
            rp.deliver(node);
          },
          [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    [self](handoff_atom, handoff_state& h) {
      auto& st = self->state;
      auto id = h.session.id;
      st.moved.erase(id);
      auto it = st.sessions.find(id);
      if (it == st.sessions.end())
        it = spawn_entry(self, id);
      return self->delegate(it->second.actor, handoff_atom::value, std::move(h));
    },
    [self](activate_atom, const std::string& id) {
      auto& st = self->state;
      st.moved.erase(id);
      auto it = st.sessions.find(id);
      if (it == st.sessions.end())
        it = spawn_entry(self, id);
      return self->delegate(it->second.actor, activate_atom::value);
    },
    [self](moved_atom, const std::string& id, caf::actor& to) {
      // After this, nothing more is sent to the old actor: it may go once
      // the turns it forwarded are answered.
      if (let_go(self, id))
        remember_move(self, id, to.node());
    },
    [self](where_atom, const std::string& id) -> caf::result<session_location> {
      auto& st = self->state;
      if (st.sessions.count(id))
        return session_location{st.node_id, session_state::active};
      if (auto* tomb = moved_to(self, id)) {
        self->delegate(as_registry(tomb->registry), where_atom::value, id);
        return caf::delegated<session_location>{};
      }
      return session_location{st.node_id, session_state::passive};
    },
    [self](idle_atom, const std::string& id, std::uint64_t received) {
      auto& st = self->state;
      auto it = st.sessions.find(id);
      if (it == st.sessions.end() || it->second.actor.address() != self->current_sender() ||
          it->second.forwarded != received || it->second.migrating)
        return;
      auto a = it->second.actor;
      forget(self, it);
      self->send(a, passivate_atom::value);
    },
    // It answers the turns already sent to it "moved", then goes.
    [self](stale_atom, const std::string& id) { let_go(self, id); },
    [self](gone_atom, const std::string& id) {
      auto& st = self->state;
      if (auto* tomb = moved_to(self, id))
        self->send(as_registry(tomb->registry), gone_atom::value, id);
      auto it = st.sessions.find(id);
      if (it == st.sessions.end())
        return;
      auto a = it->second.actor;
      forget(self, it);
      self->send(a, gone_atom::value);
    },
    // Departing actors count until they answered what they handed over.
    [self](count_atom) {
      auto& st = self->state;
      return static_cast<std::uint64_t>(st.sessions.size() + st.departing.size());
    },
  };
}

} // namespace

registry_actor spawn_registry_actor(caf::actor_system& sys, const session_env& env,
                                    std::string node_id) {
  return sys.spawn(registry_behavior, env, std::move(node_id));
}

} // namespace parley

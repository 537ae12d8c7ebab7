#include "actors/membership_actor.hpp"

#include <deque>
#include <map>
#include <optional>
#include <set>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>

#include "actors/cluster_view.hpp"
#include "actors/instrumented.hpp"
#include "runtime/telemetry/log.hpp"

namespace parley {

namespace {

using clock = std::chrono::steady_clock;

constexpr std::size_t max_pins = 100000;
constexpr auto dial_every = std::chrono::seconds(1);
constexpr auto dial_timeout = std::chrono::seconds(2);

struct peer {
  member_info info;
  clock::time_point last_seen;
  clock::time_point down_since;
};

/// How long a member stays listed as down before it is forgotten (a node
/// removed for good must not stay "down" in every view forever). Seeds are
/// dialled regardless, so a node that comes back still rejoins.
std::chrono::milliseconds forget_after(const membership_config& cfg) {
  return std::max<std::chrono::milliseconds>(std::chrono::minutes(5), 100 * cfg.failure_detect);
}

struct membership_state {
  static inline const char* name = "membership";
  membership_config cfg;
  member_status status = member_status::up;
  std::uint64_t sessions_active = 0;
  std::map<std::string, peer> peers; ///< every other member ever seen, by id
  std::unordered_map<std::string, std::string> pins;
  std::deque<std::string> pin_order;
  std::vector<view_subscriber_actor> subscribers;
  std::set<std::string> dialing;      ///< addresses with a connect in flight
  std::set<std::string> seeds_tried;  ///< seeds dialled at least once
  std::map<std::string, std::string> seed_node; ///< seed address -> node id reached there
  /// The latest addresses discovery reported (dialled like seeds).
  std::vector<std::string> discovered;
  /// Discovery's first report (only when discovery is on): the node has
  /// joined once these were dialled, as with seeds. Later reports never
  /// make a joined node "joining" again.
  std::optional<std::vector<std::string>> first_discovered;
  std::uint64_t version = 0;
  clock::time_point last_dial;
  clock::time_point last_beat; ///< when beat() last ran
  view_ptr view;
};

using membership_self = instrumented_actor<membership_state, membership_actor::base>;

/// A peer's membership actor, from member_info.
membership_actor as_membership(const caf::actor& a) {
  return caf::actor_cast<membership_actor>(a);
}

member_info self_info(membership_self* self) {
  auto& st = self->state;
  auto m = st.cfg.self;
  m.status = st.status;
  m.sessions_active = st.sessions_active;
  m.membership = caf::actor_cast<caf::actor>(self);
  m.registry = st.cfg.registry;
  return m;
}

/// This node first, then every peer as last seen.
std::vector<member_info> known(membership_self* self) {
  std::vector<member_info> out{self_info(self)};
  for (auto& [id, p] : self->state.peers)
    out.push_back(p.info);
  return out;
}

bool joined(membership_self* self) {
  auto& st = self->state;
  auto tried = [&](const std::vector<std::string>& addrs) {
    for (auto& s : addrs)
      if (s != st.cfg.self.cluster && !st.seeds_tried.count(s))
        return false;
    return true;
  };
  if (st.cfg.discovery && !st.first_discovered)
    return false;
  return tried(st.cfg.seeds) && (!st.first_discovered || tried(*st.first_discovered));
}

/// Builds and hands out a new view. A change of membership drops the pins:
/// explicit migrations hold until the next change, then placement rules.
void publish(membership_self* self, bool membership_changed) {
  auto& st = self->state;
  if (membership_changed) {
    st.pins.clear();
    st.pin_order.clear();
  }
  auto v = std::make_shared<cluster_view>();
  v->self = st.cfg.self.id;
  v->version = ++st.version;
  v->members = known(self);
  v->pins = st.pins;
  v->joined = joined(self);
  v->seal();
  st.view = v;
  for (auto& s : st.subscribers)
    self->send(s, view_atom::value, view_ptr{v});
}

void mark_down(membership_self* self, peer& p) {
  if (p.info.status == member_status::down)
    return;
  log::warn("cluster: member down", {{"member", p.info.id}, {"cluster", p.info.cluster}});
  p.info.status = member_status::down;
  p.info.sessions_active = 0;
  p.down_since = clock::now();
  publish(self, true);
}

/// The proxy behind a handle. Handles compare equal by actor and node, but
/// after a reconnect a node's actors have new proxies: the old ones died with
/// the old connection, and what is sent to them is lost without an error.
const caf::actor_control_block* proxy_of(const caf::actor& a) {
  return caf::actor_cast<caf::actor_control_block*>(a);
}

/// Takes in what a member says about itself (hello, heartbeat). Handles that
/// arrive through a new connection replace the old ones in the view at once.
void learn(membership_self* self, const member_info& m) {
  auto& st = self->state;
  if (m.id.empty() || m.id == st.cfg.self.id || !m.membership)
    return;
  auto [it, fresh] = st.peers.try_emplace(m.id);
  auto& p = it->second;
  if (!fresh && m.incarnation < p.info.incarnation)
    return; // a message of a previous life of that node
  bool new_proxy = proxy_of(p.info.membership) != proxy_of(m.membership);
  bool changed = fresh || new_proxy || p.info.status != m.status ||
                 p.info.incarnation != m.incarnation ||
                 proxy_of(p.info.registry) != proxy_of(m.registry);
  if (fresh || p.info.status != m.status || p.info.incarnation != m.incarnation)
    log::info("cluster: member " + std::string{to_string(m.status)},
              {{"member", m.id}, {"cluster", m.cluster},
               {"incarnation", std::to_string(m.incarnation)}});
  if (fresh || new_proxy)
    self->monitor(m.membership);
  p.info = m;
  p.last_seen = clock::now();
  if (changed)
    publish(self, true);
}

void dial(membership_self* self, const std::string& addr);

/// Dials the members a peer told us of that we have not reached ourselves.
void follow(membership_self* self, const std::vector<member_info>& infos) {
  auto& st = self->state;
  for (auto& m : infos) {
    if (m.id == st.cfg.self.id || m.status == member_status::down || m.cluster.empty())
      continue;
    auto it = st.peers.find(m.id);
    if (it == st.peers.end() || it->second.info.status == member_status::down)
      dial(self, m.cluster);
  }
}

void dial(membership_self* self, const std::string& addr) {
  auto& st = self->state;
  auto colon = addr.rfind(':');
  if (addr == st.cfg.self.cluster || colon == std::string::npos || st.dialing.count(addr))
    return;
  std::string host = addr.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(addr.substr(colon + 1));
  } catch (...) {
    port = 0;
  }
  if (port <= 0 || port > 65535) {
    st.seeds_tried.insert(addr);
    return;
  }
  st.dialing.insert(addr);
  auto done = [self, addr] {
    self->state.dialing.erase(addr);
    bool was_joined = joined(self);
    self->state.seeds_tried.insert(addr);
    if (!was_joined && joined(self))
      publish(self, false);
  };
  auto mm = st.cfg.connector ? st.cfg.connector : self->home_system().middleman().actor_handle();
  self->request(mm, dial_timeout, caf::connect_atom::value, host, static_cast<std::uint16_t>(port))
    .then(
      [self, addr, done](const caf::node_id& nid, caf::strong_actor_ptr& ptr,
                         const std::set<std::string>&) {
        auto remote = caf::actor_cast<caf::actor>(ptr);
        if (!remote || nid == self->home_system().node())
          return done();
        self->request(as_membership(remote), dial_timeout, hello_atom::value, self_info(self),
                      known(self))
          .then(
            [self, addr, done](std::vector<member_info>& infos) {
              if (!infos.empty()) {
                self->state.seed_node[addr] = infos.front().id;
                learn(self, infos.front());
              }
              done();
              follow(self, infos);
            },
            [done](caf::error&) { done(); });
      },
      [done](caf::error&) { done(); });
}

bool seed_connected(membership_self* self, const std::string& seed) {
  auto& st = self->state;
  auto n = st.seed_node.find(seed);
  if (n == st.seed_node.end())
    return false;
  auto p = st.peers.find(n->second);
  return p != st.peers.end() && p->second.info.status != member_status::down;
}

std::chrono::milliseconds beat_interval(const membership_config& cfg) {
  auto b = cfg.failure_detect / 5;
  return std::clamp<std::chrono::milliseconds>(b, std::chrono::milliseconds(50),
                                               std::chrono::milliseconds(1000));
}

void beat(membership_self* self) {
  auto& st = self->state;
  auto now = clock::now();
  auto me = self_info(self);
  // This node itself was stopped (SIGSTOP, a stalled host) for longer than
  // failure detection: not hearing from the others meanwhile says nothing
  // about them. They get a full period from now, as after a start; those
  // really gone are declared down then.
  if (st.last_beat != clock::time_point{} && now - st.last_beat > st.cfg.failure_detect)
    for (auto& [id, p] : st.peers)
      p.last_seen = std::max(p.last_seen, now - beat_interval(st.cfg));
  st.last_beat = now;
  for (auto& [id, p] : st.peers) {
    if (p.info.status == member_status::down)
      continue;
    if (now - p.last_seen > st.cfg.failure_detect) {
      mark_down(self, p);
      continue;
    }
    self->send(as_membership(p.info.membership), heartbeat_atom::value, me);
  }
  bool forgot = false;
  for (auto it = st.peers.begin(); it != st.peers.end();)
    if (it->second.info.status == member_status::down &&
        now - it->second.down_since > forget_after(st.cfg)) {
      it = st.peers.erase(it);
      forgot = true;
    } else
      ++it;
  if (forgot)
    publish(self, false);
  if (now - st.last_dial >= dial_every) {
    st.last_dial = now;
    for (auto& s : st.cfg.seeds)
      if (!seed_connected(self, s))
        dial(self, s);
    for (auto& s : st.discovered)
      if (!seed_connected(self, s))
        dial(self, s);
    for (auto& [id, p] : st.peers)
      if (p.info.status == member_status::down && !p.info.cluster.empty())
        dial(self, p.info.cluster);
  }
  self->request(st.cfg.registry, std::chrono::seconds(1), count_atom::value)
    .then([self](std::uint64_t n) { self->state.sessions_active = n; }, [](caf::error&) {});
  self->delayed_send(self, beat_interval(st.cfg), beat_atom::value);
}

void leave(membership_self* self) {
  auto& st = self->state;
  if (st.status == member_status::leaving)
    return;
  st.status = member_status::leaving;
  auto me = self_info(self);
  for (auto& [id, p] : st.peers)
    if (p.info.status != member_status::down)
      self->send(as_membership(p.info.membership), heartbeat_atom::value, me);
  publish(self, true);
}

std::string local_stats(membership_self* self) {
  auto& f = self->state.cfg.local_stats;
  return f ? f() : std::string{"{}"};
}

using stats_map = std::map<std::string, std::string>;

/// Asks every member not down for its figures; answers with what arrived
/// within stats_timeout (a silent member is simply absent).
caf::result<stats_map> gather_stats(membership_self* self) {
  auto& st = self->state;
  struct gathering {
    stats_map figures;
    std::size_t pending = 0;
    caf::response_promise rp;
  };
  auto g = std::make_shared<gathering>();
  g->figures.emplace(st.cfg.self.id, local_stats(self));
  for (auto& [id, p] : st.peers)
    if (p.info.status != member_status::down && p.info.membership)
      ++g->pending;
  if (g->pending == 0)
    return std::move(g->figures);
  g->rp = self->make_response_promise();
  auto one_done = [g] {
    if (--g->pending == 0)
      g->rp.deliver(std::move(g->figures));
  };
  for (auto& [id, p] : st.peers) {
    if (p.info.status == member_status::down || !p.info.membership)
      continue;
    self->request(as_membership(p.info.membership), st.cfg.stats_timeout, stats_atom::value)
      .then(
        [g, one_done, id = id](std::string& figures) {
          g->figures.emplace(id, std::move(figures));
          one_done();
        },
        [one_done](caf::error&) { one_done(); });
  }
  return caf::delegated<stats_map>{};
}

membership_actor::behavior_type membership_behavior(membership_self* self, membership_config cfg) {
  self->state.cfg = std::move(cfg);
  // Only the death of a member's current proxy says its connection is gone:
  // one replaced by a newer connection's may die later (the edge and the
  // registry answer what was sent through it), and taking that for the
  // member's end would flap it down and up, abandoning turns and moving
  // sessions each time.
  self->set_down_handler([self](caf::down_msg& dm) {
    for (auto& [id, p] : self->state.peers)
      if (p.info.membership && proxy_of(p.info.membership) == dm.source.get())
        return mark_down(self, p);
  });
  publish(self, false);
  self->send(self, beat_atom::value);
  return {
    [self](hello_atom, member_info& from, std::vector<member_info>& theirs) {
      learn(self, from);
      follow(self, theirs);
      return known(self);
    },
    [self](heartbeat_atom, member_info& from) { learn(self, from); },
    [self](beat_atom) { beat(self); },
    [self](view_atom, view_subscriber_actor& sub) {
      self->send(sub, view_atom::value, self->state.view);
      self->state.subscribers.push_back(std::move(sub));
    },
    [self](pin_atom, pin_request& pin) {
      auto& st = self->state;
      auto& session = pin.session;
      auto& node = pin.node;
      if (pin.relay)
        for (auto& [id, p] : st.peers)
          if (p.info.status != member_status::down)
            self->send(as_membership(p.info.membership), pin_atom::value,
                       pin_request{session, node, false});
      if (st.pins.size() >= max_pins) {
        st.pins.erase(st.pin_order.front());
        st.pin_order.pop_front();
      }
      if (st.pins.insert_or_assign(session, node).second)
        st.pin_order.push_back(session);
      publish(self, false);
    },
    [self](discovered_atom, std::vector<std::string>& addrs) {
      auto& st = self->state;
      bool was_joined = joined(self);
      st.discovered = std::move(addrs);
      for (auto& a : st.discovered)
        if (!seed_connected(self, a))
          dial(self, a);
      if (!st.first_discovered)
        st.first_discovered = st.discovered;
      if (!was_joined && joined(self))
        publish(self, false);
    },
    [self](drain_atom) { leave(self); },
    [self](drain_atom, const std::string& node) {
      auto& st = self->state;
      if (node == st.cfg.self.id) {
        leave(self);
        return true;
      }
      auto it = st.peers.find(node);
      if (it == st.peers.end() || it->second.info.status == member_status::down)
        return false;
      self->send(as_membership(it->second.info.membership), drain_atom::value);
      return true;
    },
    [self](cluster_atom) -> caf::result<std::uint64_t, std::vector<member_info>> {
      return {self->state.version, known(self)};
    },
    [self](stats_atom) { return local_stats(self); },
    [self](stats_atom, cluster_atom) { return gather_stats(self); },
  };
}

} // namespace

membership_actor spawn_membership_actor(caf::actor_system& sys, membership_config cfg) {
  return sys.spawn<caf::detached>(membership_behavior, std::move(cfg));
}

} // namespace parley

#include "actors/discovery_actor.hpp"

#include <algorithm>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/instrumented.hpp"
#include "runtime/telemetry/log.hpp"
#include "storage/redis_client.hpp"

namespace parley {

namespace {

struct discovery_state {
  static inline const char* name = "discovery";
  discovery_config cfg;
  std::shared_ptr<storage::redis_client> redis; ///< shared with the exit hook
  bool reached = true; ///< the last call reached Redis (logs only changes)
};

using discovery_self = instrumented_actor<discovery_state, discovery_actor::base>;

/// One registration and read; the other members' addresses, or none when
/// Redis could not be reached.
std::vector<std::string> announce(discovery_self* self, std::chrono::milliseconds ttl) {
  auto& st = self->state;
  try {
    auto all = st.redis->announce_member(st.cfg.key, st.cfg.entry, ttl);
    all.erase(std::remove(all.begin(), all.end(), st.cfg.entry), all.end());
    if (!st.reached)
      log::info("discovery: Redis reachable again", {{"members", std::to_string(all.size())}});
    st.reached = true;
    return all;
  } catch (const storage::redis_error& e) {
    if (st.reached)
      log::warn("discovery: Redis unreachable; known members stay, new ones need a seed",
                {{"error", e.what()}});
    st.reached = false;
    return {};
  }
}

discovery_actor::behavior_type discovery_behavior(discovery_self* self, discovery_config cfg,
                                                  storage::redis_endpoint ep) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  // Discovery is no latency path: a slower Redis than the rate limit's
  // 50 ms budget still serves it.
  storage::redis_options opts;
  opts.connect_timeout = std::chrono::milliseconds(500);
  opts.command_timeout = std::chrono::milliseconds(500);
  opts.reconnect_backoff = st.cfg.interval;
  st.redis = std::make_shared<storage::redis_client>(std::move(ep), opts);
  self->attach_functor([redis = st.redis, key = st.cfg.key, entry = st.cfg.entry] {
    // Leaving on purpose (an exit message): drop the entry at once, on this
    // actor's own thread, bounded by the command timeout; skipped while
    // Redis is away (the entry then expires).
    if (!redis->backing_off())
      try {
        redis->announce_member(key, entry, std::chrono::milliseconds(0));
      } catch (const storage::redis_error&) {
      }
  });
  self->send(self, beat_atom::value);
  return {
    [self](beat_atom) {
      auto& s = self->state;
      self->delayed_send(self, s.cfg.interval, beat_atom::value);
      self->send(s.cfg.membership, discovered_atom::value, announce(self, s.cfg.ttl));
    },
  };
}

} // namespace

std::string discovery_key(const std::string& cluster) {
  return "parley:members:" + cluster;
}

discovery_actor spawn_discovery_actor(caf::actor_system& sys, discovery_config cfg) {
  auto ep = storage::parse_redis_url(cfg.redis_url);
  return sys.spawn<caf::detached>(discovery_behavior, std::move(cfg), std::move(ep));
}

} // namespace parley

#include "actors/ratelimit_actor.hpp"

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/instrumented.hpp"
#include "runtime/rules/local_bucket.hpp"

namespace parley {

namespace {

using steady = std::chrono::steady_clock;

struct ratelimit_state {
  static inline const char* name = "ratelimit";
  ratelimit_config cfg;
  std::unique_ptr<storage::redis_client> redis; ///< null: no Redis configured
  local_bucket local;
  bool redis_ok = false;
  steady::time_point last_op{};

  void note(bool ok) {
    redis_ok = ok;
    last_op = steady::now();
  }

  /// Redis may be asked now: configured and not backing off.
  bool redis_usable() const { return redis && !redis->backing_off(); }
};

using ratelimit_self = instrumented_actor<ratelimit_state, ratelimit_actor::base>;

std::int32_t clamp32(std::int64_t v) {
  return static_cast<std::int32_t>(
    std::clamp<std::int64_t>(v, 0, std::numeric_limits<std::int32_t>::max()));
}

rate_decision from_local(ratelimit_state& st, const std::string& key_id, std::int32_t rate,
                         std::int32_t live_nodes) {
  auto v = st.local.take(key_id, rate, live_nodes, steady::now());
  return {v.allowed, v.limit, v.remaining, v.retry_after_ms, false};
}

rate_decision check(ratelimit_state& st, const std::string& key_id, std::int32_t rate,
                    std::int32_t live_nodes, std::int64_t deadline_ns) {
  if (rate <= 0)
    return {true, 0, 0, 0, st.redis_ok};
  // The caller has already given up on a late answer: do not spend up to a
  // command timeout on it, so a backlog drains at local speed.
  bool late = steady::now().time_since_epoch() >= std::chrono::nanoseconds{deadline_ns};
  if (late || !st.redis_usable())
    return from_local(st, key_id, rate, live_nodes);
  try {
    auto r = st.redis->eval_token_bucket(st.cfg.key_prefix + key_id, rate);
    st.note(true);
    return {r.allowed, rate, clamp32(r.remaining), clamp32(r.retry_after_ms), true};
  } catch (const storage::redis_error&) {
    st.note(false);
    return from_local(st, key_id, rate, live_nodes);
  }
}

ratelimit_actor::behavior_type ratelimit_behavior(ratelimit_self* self, ratelimit_config cfg,
                                                  std::optional<storage::redis_endpoint> ep) {
  auto& st = self->state;
  st.local = local_bucket{cfg.max_local_keys};
  if (ep)
    st.redis = std::make_unique<storage::redis_client>(std::move(*ep), cfg.redis);
  st.cfg = std::move(cfg);
  return {
    [&st](rate_check_atom, const rate_check_request& r) {
      return check(st, r.key_id, r.rate_per_min, r.live_nodes, r.deadline_ns);
    },
    [&st](redis_status_atom) {
      if (st.redis_usable() && steady::now() - st.last_op > st.cfg.status_max_age)
        st.note(st.redis->ping());
      return st.redis_ok;
    },
    [&st](publish_revoked_atom, const std::string& payload) {
      if (!st.redis_usable())
        return;
      try {
        st.redis->publish(revoked_channel, payload);
        st.note(true);
      } catch (const storage::redis_error&) {
        st.note(false);
      }
    },
  };
}

struct listener_state {
  static inline const char* name = "revocation_listener";
  std::unique_ptr<storage::redis_subscriber> sub;
  revocation_target_actor target;
};

using listener_self = instrumented_actor<listener_state, revocation_listener_actor::base>;

// A blocking read loop expressed as messages to itself: each read returns
// within `read_timeout`, and an exit message queued meanwhile runs next.
revocation_listener_actor::behavior_type
revocation_listener(listener_self* self, storage::redis_endpoint ep, revocation_target_actor target,
                    storage::redis_options opts, std::chrono::milliseconds read_timeout) {
  auto& st = self->state;
  st.sub = std::make_unique<storage::redis_subscriber>(std::move(ep), revoked_channel, opts);
  st.target = std::move(target);
  self->monitor(st.target);
  self->set_down_handler([self](const caf::down_msg&) { self->quit(); });
  self->send(self, listen_atom::value);
  return {
    [self, &st, read_timeout](listen_atom) {
      // The next round is queued first, so the loop goes on whatever this
      // one does.
      self->send(self, listen_atom::value);
      if (auto payload = st.sub->next(read_timeout))
        self->send(st.target, key_revoked_atom::value, std::move(*payload));
    },
  };
}

} // namespace

std::int64_t rate_check_deadline(std::chrono::nanoseconds budget) {
  return (steady::now().time_since_epoch() + budget).count();
}

ratelimit_actor spawn_ratelimit_actor(caf::actor_system& sys, ratelimit_config cfg) {
  std::optional<storage::redis_endpoint> ep;
  if (!cfg.redis_url.empty())
    ep = storage::parse_redis_url(cfg.redis_url);
  return sys.spawn<caf::detached>(ratelimit_behavior, std::move(cfg), std::move(ep));
}

revocation_listener_actor spawn_revocation_listener(caf::actor_system& sys,
                                                    const std::string& redis_url,
                                                    revocation_target_actor target,
                                                    storage::redis_options opts,
                                                    std::chrono::milliseconds read_timeout) {
  auto ep = storage::parse_redis_url(redis_url);
  return sys.spawn<caf::detached>(revocation_listener, std::move(ep), std::move(target), opts,
                                  read_timeout);
}

} // namespace parley

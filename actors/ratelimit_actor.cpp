#include "actors/ratelimit_actor.hpp"

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/instrumented.hpp"
#include "runtime/rules/local_bucket.hpp"
#include "runtime/rules/token_budget.hpp"

namespace parley {

namespace {

using steady = std::chrono::steady_clock;

/// Spend to add to one Redis budget counter.
struct pending_spend {
  std::int64_t day = 0;
  std::int64_t delta = 0;
};

/// A rate check waiting for its batch's Redis call.
struct waiting_check {
  rate_check_request req;
  caf::typed_response_promise<rate_decision> rp;
  bool lease = false; ///< a budget-only check that renews its key's lease (Leases)
};

struct ratelimit_state {
  static inline const char* name = "ratelimit";
  ratelimit_config cfg;
  std::unique_ptr<storage::redis_client> redis; ///< null: no Redis configured
  local_bucket local;
  /// This node's spend per key and day (and its local reservations): what
  /// decides while Redis is away.
  local_budget spend;
  /// Settlements not yet in Redis, by counter; at most cfg.max_pending.
  std::unordered_map<std::string, pending_spend> pending;
  bool flush_queued = false;
  /// Rate checks gathered for the next batch (Batches); bounded by the
  /// mailbox they came from, which the edge's in-flight gate bounds.
  std::vector<waiting_check> waiting;
  bool batch_queued = false;
  /// Leases and queued settlements, shared with the edge (cfg.ledger).
  std::shared_ptr<budget_ledger> ledger;
  bool sweep_queued = false;
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

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// The Redis counter of `key_id`'s budget on `day`.
std::string budget_key(const ratelimit_state& st, const std::string& key_id, std::int64_t day) {
  return st.cfg.key_prefix + "budget:" + key_id + ":" + std::to_string(day);
}

/// A counter lives until an hour past the end of its day (on this node's
/// clock), so that a late settlement still finds it and nothing stays.
std::chrono::milliseconds budget_ttl() {
  return std::chrono::seconds{seconds_to_next_utc_day(unix_now()) + 3600};
}

rate_decision from_local(ratelimit_state& st, const rate_check_request& r) {
  rate_decision d;
  d.redis_ok = false;
  auto share = node_budget_share(r.budget, r.live_nodes);
  d.budget = share;
  // The budget first: a key whose day is spent takes no rate token.
  if (share > 0 && st.spend.spent(r.key_id, r.day) >= share) {
    d.allowed = false;
    d.budget_ok = false;
    d.spent = st.spend.spent(r.key_id, r.day);
    return d;
  }
  if (r.rate_per_min > 0) {
    auto v = st.local.take(r.key_id, r.rate_per_min, r.live_nodes, steady::now());
    d.allowed = v.allowed;
    d.limit = v.limit;
    d.remaining = v.remaining;
    d.retry_after_ms = v.retry_after_ms;
    if (!d.allowed)
      return d;
  }
  auto b = st.spend.reserve(r.key_id, r.day, share, r.reserve);
  d.spent = b.spent;
  d.reserved = b.reserved;
  return d;
}

/// At most this many settlements ride on one script call, so that no call
/// does unbounded work while Redis holds every other client.
constexpr std::size_t max_settle_per_call = 64;

/// Pending settlements of today (older ones are dropped: their day is over),
/// at most max_settle_per_call of them.
std::vector<std::pair<std::string, std::int64_t>> settlements(ratelimit_state& st) {
  std::vector<std::pair<std::string, std::int64_t>> out;
  auto today = utc_day(unix_now());
  for (auto it = st.pending.begin(); it != st.pending.end() && out.size() < max_settle_per_call;) {
    if (it->second.day < today) {
      it = st.pending.erase(it);
      continue;
    }
    if (it->second.delta != 0)
      out.emplace_back(it->first, it->second.delta);
    ++it;
  }
  return out;
}

/// Settlements Redis has applied leave the pending map.
void settled(ratelimit_state& st, const std::vector<std::pair<std::string, std::int64_t>>& done) {
  for (auto& [k, delta] : done)
    if (auto it = st.pending.find(k); it != st.pending.end()) {
      it->second.delta -= delta;
      if (it->second.delta == 0)
        st.pending.erase(it);
    }
}

/// The caller has already given up on a late answer: do not spend up to a
/// command timeout on it, so a backlog drains at local speed.
bool late(const rate_check_request& r) {
  return steady::now().time_since_epoch() >= std::chrono::nanoseconds{r.deadline_ns};
}

storage::admission_request admission(const ratelimit_state& st, const rate_check_request& r) {
  storage::admission_request a;
  a.bucket_key = st.cfg.key_prefix + r.key_id;
  a.rate_per_min = std::max(0, r.rate_per_min);
  if (r.budget > 0) {
    a.budget_key = budget_key(st, r.key_id, r.day);
    a.budget = r.budget;
    a.reserve = std::max<std::int64_t>(0, r.reserve);
  }
  a.budget_ttl = budget_ttl();
  return a;
}

rate_decision from_redis(const rate_check_request& r, const storage::admission_reply& x) {
  rate_decision d;
  d.allowed = x.allowed;
  d.limit = std::max(0, r.rate_per_min);
  d.remaining = clamp32(x.remaining);
  d.retry_after_ms = clamp32(x.retry_after_ms);
  d.redis_ok = true;
  d.budget_ok = x.budget_ok;
  d.budget = std::max<std::int64_t>(0, r.budget);
  d.spent = x.spent;
  d.reserved = x.reserved;
  return d;
}

void owe(ratelimit_self* self, const std::string& k, std::int64_t day, std::int64_t delta);

/// What a lease renewal reserves: enough for cfg.lease_calls calls like
/// this one, but no more than a quarter of what was left of the budget
/// divided by the live nodes, and never less than this call's own
/// reservation; so leases shrink to single calls as the budget runs out.
std::int64_t lease_size(const ratelimit_state& st, const rate_check_request& r,
                        std::int64_t spent_seen) {
  auto per_call = std::max<std::int64_t>(1, r.reserve);
  auto left = std::max<std::int64_t>(0, r.budget - spent_seen);
  auto share = left / (4 * std::max<std::int64_t>(1, r.live_nodes));
  return std::max(per_call, std::min(per_call * st.cfg.lease_calls, share));
}

/// A renewal's answer: this call takes its reservation, the rest becomes
/// (or joins) the key's lease.
void renewed(ratelimit_self* self, const rate_check_request& r,
             const storage::admission_reply& x, rate_decision& d) {
  auto& st = self->state;
  std::int64_t back = 0;
  auto took = st.ledger->renew(r.key_id, r.day, x.allowed, x.reserved, x.spent + x.reserved,
                               r.reserve, back);
  owe(self, budget_key(st, r.key_id, r.day), r.day, -back);
  if (!x.allowed)
    return;
  d.reserved = took;
  if (!st.sweep_queued) {
    st.sweep_queued = true;
    self->delayed_send(caf::actor_cast<ratelimit_actor>(self), st.cfg.lease_idle,
                       lease_sweep_atom::value);
  }
}

/// Gives back what leases not used since the last sweep hold.
void sweep(ratelimit_self* self) {
  auto& st = self->state;
  st.sweep_queued = false;
  for (auto& l : st.ledger->sweep(utc_day(unix_now())))
    owe(self, budget_key(st, l.key_id, l.day), l.day, -l.left);
  if (st.ledger->has_leases()) {
    st.sweep_queued = true;
    self->delayed_send(caf::actor_cast<ratelimit_actor>(self), st.cfg.lease_idle,
                       lease_sweep_atom::value);
  }
}

/// Decides up to cfg.max_batch of the waiting checks from `first` on in one
/// script call, which also carries pending settlements; falls back on the
/// local bucket for the late ones and for all of them when Redis fails.
/// Returns where the next call starts.
std::size_t decide_batch(ratelimit_self* self, std::vector<waiting_check>& w, std::size_t first) {
  auto& st = self->state;
  std::vector<std::size_t> asked;
  std::vector<storage::admission_request> batch;
  std::vector<std::string> renewing; // one renewal per key and batch
  auto i = first;
  for (; i < w.size() && batch.size() < st.cfg.max_batch; ++i) {
    auto& c = w[i];
    if (c.lease) {
      // An earlier batch may have renewed the lease since this one queued.
      if (auto d = st.ledger->take(c.req.key_id, c.req.day, c.req.budget, c.req.reserve)) {
        c.rp.deliver(*d);
        continue;
      }
    }
    if (late(c.req) || !st.redis_usable()) {
      c.rp.deliver(from_local(st, c.req));
      continue;
    }
    auto a = admission(st, c.req);
    if (c.lease) {
      if (std::find(renewing.begin(), renewing.end(), a.budget_key) == renewing.end()) {
        renewing.push_back(a.budget_key);
        a.reserve = lease_size(st, c.req, st.ledger->lease_of(c.req.key_id, c.req.day).second);
      } else {
        c.lease = false; // its own reservation, in the same call
      }
    }
    asked.push_back(i);
    batch.push_back(std::move(a));
  }
  if (batch.empty())
    return i;
  // Earlier calls' spend rides on this round trip: no extra one per call.
  batch.front().settle = settlements(st);
  try {
    auto replies = st.redis->admit(batch);
    st.note(true);
    settled(st, batch.front().settle);
    for (std::size_t k = 0; k < asked.size(); ++k) {
      auto& c = w[asked[k]];
      auto d = from_redis(c.req, replies[k]);
      if (c.lease)
        renewed(self, c.req, replies[k], d);
      c.rp.deliver(d);
    }
  } catch (const storage::redis_error&) {
    st.note(false);
    for (auto k : asked)
      w[k].rp.deliver(from_local(st, w[k].req));
  }
  return i;
}

/// A rate check: answered at once when nothing is to be counted, from its
/// key's lease when that holds it, locally when it is late or Redis is
/// away; else gathered into the next batch.
caf::result<rate_decision> check(ratelimit_self* self, rate_check_request& r) {
  auto& st = self->state;
  if (r.rate_per_min <= 0 && r.budget <= 0) {
    rate_decision d;
    d.redis_ok = st.redis_ok;
    return d;
  }
  bool lease = st.redis && st.cfg.lease_calls > 0 && r.rate_per_min <= 0 && r.reserve > 0;
  if (lease)
    if (auto d = st.ledger->take(r.key_id, r.day, r.budget, r.reserve))
      return *d;
  if (late(r) || !st.redis_usable())
    return from_local(st, r);
  auto rp = self->make_response_promise<rate_decision>();
  st.waiting.push_back({std::move(r), rp, lease});
  // The flush queues behind every check already in the mailbox: they all
  // join this batch.
  if (!st.batch_queued) {
    st.batch_queued = true;
    self->send(caf::actor_cast<ratelimit_actor>(self), rate_flush_atom::value);
  }
  return rp;
}

void decide_waiting(ratelimit_self* self) {
  auto& st = self->state;
  st.batch_queued = false;
  auto w = std::move(st.waiting);
  st.waiting.clear();
  for (std::size_t next = 0; next < w.size();)
    next = decide_batch(self, w, next);
}

/// Adds `delta` to the Redis counter `k` of `day` by the pending map, which
/// the next check or a flush of its own carries there.
void owe(ratelimit_self* self, const std::string& k, std::int64_t day, std::int64_t delta) {
  auto& st = self->state;
  if (delta == 0)
    return;
  auto it = st.pending.find(k);
  if (it == st.pending.end()) {
    // Bounded: beyond it a settlement is lost to Redis (this node's own
    // counter still has it), never queued without end.
    if (st.pending.size() >= st.cfg.max_pending)
      return;
    it = st.pending.emplace(k, pending_spend{day, 0}).first;
  }
  it->second.delta += delta;
  // The checks that come within the flush delay carry the settlement
  // themselves; the flush sends only what none carried, so settlements cost
  // at most one script call of their own per delay, however many calls end.
  if (!st.flush_queued) {
    st.flush_queued = true;
    self->delayed_send(caf::actor_cast<ratelimit_actor>(self), st.cfg.settle_delay,
                       budget_flush_atom::value);
  }
}

/// Records a finished call's spend: on this node's counter always (what
/// decides while Redis is away), and for Redis in the pending map, which
/// the next check or a flush of its own carries there.
void settle(ratelimit_self* self, const budget_settlement& s) {
  auto& st = self->state;
  auto actual = std::clamp<std::int64_t>(s.actual, 0, max_call_tokens);
  st.spend.add(s.key_id, s.day, actual - (s.in_redis ? 0 : s.reserved));
  if (!st.redis)
    return;
  owe(self, budget_key(st, s.key_id, s.day), s.day, actual - (s.in_redis ? s.reserved : 0));
}

/// Sends what no check has carried yet; while Redis is away, tries again
/// after its reconnect backoff.
void flush(ratelimit_self* self) {
  auto& st = self->state;
  st.flush_queued = false;
  if (st.pending.empty())
    return;
  if (st.redis_usable()) {
    storage::admission_request a;
    a.budget_ttl = budget_ttl();
    a.settle = settlements(st);
    if (a.settle.empty())
      return;
    try {
      st.redis->admit(a);
      st.note(true);
      settled(st, a.settle);
    } catch (const storage::redis_error&) {
      st.note(false);
    }
  }
  if (!st.pending.empty()) {
    st.flush_queued = true;
    self->delayed_send(caf::actor_cast<ratelimit_actor>(self), st.cfg.redis.reconnect_backoff,
                       budget_flush_atom::value);
  }
}

ratelimit_actor::behavior_type ratelimit_behavior(ratelimit_self* self, ratelimit_config cfg,
                                                  std::optional<storage::redis_endpoint> ep) {
  auto& st = self->state;
  st.local = local_bucket{cfg.max_local_keys};
  st.spend = local_budget{cfg.max_local_keys};
  if (ep)
    st.redis = std::make_unique<storage::redis_client>(std::move(*ep), cfg.redis);
  st.cfg = std::move(cfg);
  st.ledger = st.cfg.ledger ? st.cfg.ledger
                            : std::make_shared<budget_ledger>(st.cfg.max_local_keys);
  // Settlements an earlier incarnation of this actor left in the ledger.
  self->send(caf::actor_cast<ratelimit_actor>(self), settle_batch_atom::value);
  // A node that stops gives its leases back, and sends what it owes, in one
  // last script call (bounded by the command timeout).
  self->set_exit_handler([self, &st](caf::exit_msg& m) {
    auto today = utc_day(unix_now());
    for (auto& s : st.ledger->drain())
      settle(self, s);
    for (auto& l : st.ledger->take_all())
      if (l.day >= today)
        owe(self, budget_key(st, l.key_id, l.day), l.day, -l.left);
    flush(self);
    self->quit(m.reason);
  });
  return {
    [self](rate_check_atom, rate_check_request& r) { return check(self, r); },
    [self](rate_flush_atom) { decide_waiting(self); },
    [self](settle_atom, const budget_settlement& s) { settle(self, s); },
    [self](settle_batch_atom) {
      for (auto& s : self->state.ledger->drain())
        settle(self, s);
    },
    [self](budget_flush_atom) { flush(self); },
    [self](lease_sweep_atom) { sweep(self); },
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

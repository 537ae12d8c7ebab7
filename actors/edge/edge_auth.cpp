// The edge's authentication: the admin token, user keys (cache, then
// storage, one lookup per key at a time), and the per-address budget of
// lookups of unknown keys.

#include <algorithm>

#include "actors/edge/edge_state.hpp"
#include "storage/secrets.hpp"

namespace parley {

void key_cache::forget(const std::string& prefix_or_id) {
  for (auto it = valid.begin(); it != valid.end();)
    if (it->second.rec.prefix == prefix_or_id || std::to_string(it->second.rec.id) == prefix_or_id)
      it = valid.erase(it);
    else
      ++it;
}

bool is_admin_token(edge_self* self, const std::string& bearer) {
  return !bearer.empty() && constant_time_equal(bearer, self->state.cfg.admin_token);
}

void with_key(edge_self* self, const call_ptr& c, key_continuation next) {
  using clock = key_cache::clock;
  auto& st = self->state;
  auto& keys = st.keys;
  if (c->bearer.empty())
    return reply_error(c, {errc::unauthorized, "missing bearer token (Authorization: Bearer <key>)"});
  auto hash = hash_key(c->bearer);
  auto now = clock::now();
  // An expired entry stays until the lookup below answers: a key this node
  // has seen valid is looked up again whatever its address did (a client
  // behind the same address as a flood keeps working).
  bool seen_valid = false;
  if (auto it = keys.valid.find(hash); it != keys.valid.end()) {
    if (it->second.expires > now)
      return next(it->second.rec);
    seen_valid = true;
  }
  if (auto it = keys.unknown.find(hash); it != keys.unknown.end()) {
    if (it->second > now)
      return reply_error(c, {errc::unauthorized, "unknown or revoked API key"});
    keys.unknown.erase(it);
  }
  key_cache::waiter resume = [c, next = std::move(next)](const api_key_record* rec,
                                                         const caf::error* err) {
    if (err)
      return reply_error(c, *err);
    if (rec->id == 0)
      return reply_error(c, {errc::unauthorized, "unknown or revoked API key"});
    next(*rec);
  };
  // Requests with a key whose lookup is under way wait for its answer: a
  // burst on one key (every connection of a client after a restart) costs
  // one query, and one token of its address's bucket.
  if (auto it = keys.pending.find(hash); it != keys.pending.end()) {
    it->second.push_back(std::move(resume));
    return;
  }
  // Any other key costs a query on the connections that commit turns: a
  // flood of random keys from one address is answered here once its
  // bucket is spent. The token is taken before the lookup (so that lookups
  // in flight count too) and given back when the key was valid.
  auto rate = st.cfg.auth_failures_per_min;
  bool charged = !seen_valid && rate > 0;
  if (charged) {
    auto v = keys.lookups_by_peer.take(c->peer, rate, 1, now);
    if (!v.allowed) {
      c->retry_after = std::max(1, (v.retry_after_ms + 999) / 1000);
      return reply_error(c, {errc::rate_limited,
                             "too many unknown API keys from your address; retry after the "
                             "Retry-After seconds with a valid key"});
    }
  }
  keys.pending[hash].push_back(std::move(resume));
  auto peer = c->peer;
  auto resume_all = [self, hash](const api_key_record* rec, const caf::error* err) {
    auto& pending = self->state.keys.pending;
    auto it = pending.find(hash);
    if (it == pending.end())
      return;
    auto waiting = std::move(it->second);
    pending.erase(it);
    for (auto& w : waiting)
      w(rec, err);
  };
  timed_request<api_key_record>(
      self, st.storage->any(), st.cfg.storage_timeout,
      [self, hash, charged, peer, resume_all](api_key_record& rec) {
        auto& s = self->state;
        auto& k = s.keys;
        if (rec.id == 0) {
          k.valid.erase(hash);
          if (k.unknown.size() >= key_cache::limit)
            k.unknown.clear();
          k.unknown[hash] = clock::now() + s.cfg.key_cache_ttl;
        } else {
          if (charged)
            k.lookups_by_peer.give_back(peer, s.cfg.auth_failures_per_min, 1);
          if (k.valid.size() >= key_cache::limit)
            k.valid.clear();
          k.valid[hash] = key_cache::entry{rec, clock::now() + s.cfg.key_cache_ttl};
        }
        resume_all(&rec, nullptr);
      },
      [self, charged, peer, resume_all](caf::error& e) {
        // Not the client's failure: the lookup did not happen.
        if (charged)
          self->state.keys.lookups_by_peer.give_back(peer, self->state.cfg.auth_failures_per_min,
                                                     1);
        resume_all(nullptr, &e);
      },
      find_key_atom::value, hash);
}

} // namespace parley

#pragma once
// The budget ledger: what a node's edge and its ratelimit actor share about
// daily token budgets, so that a budget-only chat request costs no message
// to the ratelimit actor (a detached thread to wake) and no Redis round
// trip (ratelimit_actor.hpp: Leases, Settlements).
//
// - Leases: tokens of a key's day reserved in Redis for this node. The
//   ratelimit actor renews them (renew) and gives back idle ones (sweep,
//   take_all); the edge takes a call's reservation from them (take) in its
//   own turn, under the ledger's lock.
// - Settlements: the spend of finished calls, from whichever thread ended
//   them (budget_hold). They queue here, and the ratelimit actor drains
//   them (drain) on the one message that the first of a batch sends it.
//
// Node-local and thread-safe; each call holds the lock for a map lookup or
// a swap, never while sending a message or doing I/O. Both parts are
// bounded: at most `max_keys` leases, at most `max_settlements` queued (a
// settlement beyond is dropped and counted in dropped()).

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/vocabulary.hpp"

namespace parley {

class budget_ledger {
public:
  explicit budget_ledger(std::size_t max_keys = 100000, std::size_t max_settlements = 100000)
    : max_keys_(max_keys), max_settlements_(max_settlements) {}

  /// A budget-only call's reservation from its key's lease of `day`, when
  /// the lease holds all of `reserve` (> 0): the decision, as the ratelimit
  /// actor would give it (allowed, reserved in Redis). Else nullopt: ask the
  /// ratelimit actor.
  std::optional<rate_decision> take(const std::string& key_id, std::int64_t day,
                                    std::int64_t budget, std::int64_t reserve);

  /// The lease of `key_id` and `day` before a renewal: what it holds and
  /// the counter Redis last reported (0 and 0 when there is none).
  std::pair<std::int64_t, std::int64_t> lease_of(const std::string& key_id, std::int64_t day);

  /// A renewal's answer: Redis reserved `granted` more for the key's lease
  /// (the counter was `spent_seen` after it); the call that asked takes up
  /// to `reserve` of the lease, which this returns. With `allowed` false
  /// only the counter is noted. When the ledger holds `max_keys` leases
  /// already, no new one is made: the call takes what it can and the rest
  /// comes back in `give_back`.
  std::int64_t renew(const std::string& key_id, std::int64_t day, bool allowed,
                     std::int64_t granted, std::int64_t spent_seen, std::int64_t reserve,
                     std::int64_t& give_back);

  /// One lease given back: what it held, of which key and day.
  struct returned {
    std::string key_id;
    std::int64_t day = 0;
    std::int64_t left = 0;
  };
  /// Leases not used since the last sweep, and those of days before
  /// `today` (returned with left 0: their counters expire by themselves),
  /// leave the ledger.
  std::vector<returned> sweep(std::int64_t today);
  /// Every lease leaves the ledger (the node stops).
  std::vector<returned> take_all();
  bool has_leases();

  /// What add did with a settlement.
  enum class queued {
    first,   ///< the queue was empty: tell the ratelimit actor (one message per batch)
    later,   ///< a message for the batch is on its way
    dropped, ///< the queue is full: the settlement is lost (counted in dropped())
  };
  /// Queues a finished call's settlement.
  queued add(budget_settlement s);
  /// The queued settlements, and the queue emptied.
  std::vector<budget_settlement> drain();
  /// Settlements dropped because the queue was full.
  std::uint64_t dropped();

private:
  struct lease {
    std::int64_t left = 0;       ///< reserved in Redis, not yet handed to a call
    std::int64_t spent_seen = 0; ///< the counter, as Redis last reported it
    bool used = true;            ///< handed out since the last sweep
  };
  /// (key id, day) as one string: the key id, a NUL, the day.
  static std::string slot(const std::string& key_id, std::int64_t day);
  static returned unslot(const std::string& slot, std::int64_t left);

  std::mutex mutex_;
  std::size_t max_keys_;
  std::size_t max_settlements_;
  std::unordered_map<std::string, lease> leases_;
  std::vector<budget_settlement> settlements_;
  std::uint64_t dropped_ = 0;
};

} // namespace parley

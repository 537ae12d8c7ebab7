#pragma once
// The node's supervisor: it watches the core actors (edge, registry,
// membership, storage, llm, ratelimit, revocation listener) and keeps the
// health board that /healthz and /readyz read, so the probes tell what is
// really alive instead of that the process runs.
//
/// Protocol: `supervisor_actor` below: none from outside; it pings every core actor with a
/// `health_atom` request each interval (instrumented_actor answers it for
/// every Parley actor, in its mailbox order, so a stuck actor stops
/// answering), asks one storage actor to reach PostgreSQL, and monitors them
/// all. A core actor that stops while the node is not stopping is fatal:
/// `on_core_down` is called (the node logs it and exits non-zero, for its
/// supervisor — systemd, Kubernetes, compose — to restart it).
//
// The supervisor itself is stopped first at shutdown, so the actors that
// the node then stops on purpose are not taken for failures.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/storage_actor.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

/// Core actors are held as `caf::actor`: the ping (health_atom) is in no
/// typed interface but answered by every instrumented actor (instrumented.hpp).
using supervisor_actor = caf::typed_actor<
  /// Internal timer: ping every core actor, check PostgreSQL.
  caf::reacts_to<tick_atom>>;

/// What the probes read: written by the supervisor, read by any thread.
class health_board {
public:
  using clock = std::chrono::steady_clock;

  /// `roles` are the names of the core actors, in the supervisor's order;
  /// an actor that has not answered a ping for `deadline` is failing.
  explicit health_board(std::vector<std::string> roles,
                        clock::duration deadline = std::chrono::seconds(10));

  const std::vector<std::string>& roles() const { return roles_; }

  /// Core actor `i` answered a ping at `at`.
  void answered(std::size_t i, clock::time_point at);
  /// Core actor `i` stopped.
  void stopped(std::size_t i);
  /// The last PostgreSQL check's outcome.
  void postgres(bool ok);
  bool postgres_ok() const { return postgres_ok_.load(std::memory_order_relaxed); }

  /// The roles that stopped or have not answered within the deadline
  /// before `now` (an actor never pinged yet counts from the board's
  /// creation). Empty: every core actor is alive.
  std::vector<std::string> failing(clock::time_point now = clock::now()) const;

private:
  std::vector<std::string> roles_;
  clock::duration deadline_;
  std::unique_ptr<std::atomic<std::int64_t>[]> last_; ///< steady ns; INT64_MIN: stopped
  std::atomic<bool> postgres_ok_{true};
};

using health_ptr = std::shared_ptr<health_board>;

struct supervisor_config {
  /// The core actors with their roles, in the order of the board's roles.
  std::vector<std::pair<std::string, caf::actor>> core;
  /// Storage actors asked in turn whether PostgreSQL answers (ping_atom).
  std::vector<storage_actor> storage;
  health_ptr board;
  std::chrono::milliseconds interval{1000};
  /// Bound of one PostgreSQL check.
  std::chrono::milliseconds pg_timeout{5000};
  /// Called on the supervisor's thread when a core actor stopped.
  std::function<void(const std::string& role, const caf::error& reason)> on_core_down;
};

/// Spawns the supervisor; `cfg.board` must hold `cfg.core`'s roles.
supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_config cfg);

/// The board's roles for `core`.
std::vector<std::string> roles_of(const std::vector<std::pair<std::string, caf::actor>>& core);

} // namespace parley

#pragma once
// The one place where every Parley actor is measured. Actors are written
// against `instrumented_actor<State>` instead of `caf::stateful_actor<State>`
// (function-based spawning infers the class from the self pointer's type),
// and `State::name` names the actor type. `consume` is CAF's per-message
// entry point (scheduled_actor calls it for every mailbox element, also on
// detached actors), so counting there covers every handler, response
// handler and system message without touching them.
//
// Cost per message: two steady_clock reads, a histogram observation and a
// counter increment (lock-free atomics); the depth gauge is touched only
// when the depth changed. bench/RESULTS.md has the measured throughput cost.

#include <chrono>
#include <cstdint>

#include <caf/event_based_actor.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/actor_stats.hpp"

namespace parley {

template <class State>
class instrumented_actor : public caf::stateful_actor<State> {
public:
  using super = caf::stateful_actor<State>;

  explicit instrumented_actor(caf::actor_config& cfg) : super(cfg), probe_(type_probe()) {
    probe_.started();
  }

  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    if (!actor_metrics_enabled())
      return super::consume(x);
    auto t0 = std::chrono::steady_clock::now();
    auto result = super::consume(x);
    std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    // Messages already fetched but not yet handled; the few pushed since
    // this round of the scheduler began are picked up on the next message.
    auto depth = static_cast<std::int64_t>(this->mailbox().queue().total_task_size());
    probe_.handled(dt.count(), depth - depth_);
    depth_ = depth;
    return result;
  }

  bool cleanup(caf::error&& reason, caf::execution_unit* host) override {
    if (!stopped_) {
      stopped_ = true;
      probe_.stopped(depth_);
    }
    return super::cleanup(std::move(reason), host);
  }

private:
  static actor_probe& type_probe() {
    static actor_probe& probe = probe_of(State::name);
    return probe;
  }

  actor_probe& probe_;
  std::int64_t depth_ = 0;
  bool stopped_ = false;
};

} // namespace parley

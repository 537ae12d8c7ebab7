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
#include <exception>
#include <string>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/atom.hpp>
#include <caf/response_promise.hpp>
#include <caf/sec.hpp>

#include "runtime/telemetry/actor_stats.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

/// An instrumented actor with state `State` on top of `Base`: the plain
/// event-based actor, or a typed interface's base for a typed actor
/// (`instrumented_actor<State, some_actor::base>`, as with
/// caf::stateful_actor<State, Base>).
///
/// `(health_atom) -> bool` is answered `true` by every instrumented actor in
/// its mailbox order, without reaching its behaviour: the supervisor's ping.
/// It is deliberately in no typed interface (a typed actor would otherwise
/// have to list it and handle it): the supervisor holds its core actors as
/// untyped handles (`caf::actor_cast<caf::actor>(typed)`), and this shortcut
/// runs before the typed behaviour is matched, so typed actors answer it too.
template <class State, class Base = caf::event_based_actor>
class instrumented_actor : public caf::stateful_actor<State, Base> {
public:
  using super = caf::stateful_actor<State, Base>;

  explicit instrumented_actor(caf::actor_config& cfg) : super(cfg), probe_(type_probe()) {
    probe_.started();
  }

  /// Supervision of one message (docs/architecture.md): a handler that
  /// throws answers its request with an internal error, is counted and
  /// reported (actor_fault), and the actor goes on with its next message.
  /// Handlers keep their state consistent before anything that may throw
  /// (untrusted input is validated first); CAF's own default would stop
  /// the actor for good, leaving a node half-dead.
  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    try {
      return measured_consume(x);
    } catch (const std::exception& e) {
      return on_fault(x, e.what());
    } catch (...) {
      return on_fault(x, "unknown exception");
    }
  }

  bool cleanup(caf::error&& reason, caf::execution_unit* host) override {
    if (!stopped_) {
      stopped_ = true;
      probe_.stopped(depth_);
    }
    return super::cleanup(std::move(reason), host);
  }

private:
  caf::invoke_message_result measured_consume(caf::mailbox_element& x) {
    if (x.mid.is_request() && x.content().match_elements<health_atom>()) {
      caf::response_promise{caf::strong_actor_ptr{this->ctrl()}, x}.deliver(true);
      return caf::invoke_message_result::consumed;
    }
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

  caf::invoke_message_result on_fault(caf::mailbox_element& x, const char* what) noexcept {
    std::string message = "message";
    try {
      auto& content = x.content();
      if (!content.empty() && content.match_element<caf::atom_value>(0))
        message = caf::to_string(content.get_as<caf::atom_value>(0));
      else if (x.mid.is_response())
        message = "response";
    } catch (...) {
    }
    actor_fault(State::name, what, message);
    // A request that its handler did not answer is answered now, so the
    // requester sees an error instead of waiting for its timeout.
    if (x.mid.is_request() && !x.mid.is_answered()) {
      try {
        caf::response_promise{caf::strong_actor_ptr{this->ctrl()}, x}.deliver(caf::make_error(
          caf::sec::runtime_error, std::string{"internal error in "} + State::name));
      } catch (...) {
      }
    }
    return caf::invoke_message_result::consumed;
  }

  static actor_probe& type_probe() {
    static actor_probe& probe = probe_of(State::name);
    return probe;
  }

  actor_probe& probe_;
  std::int64_t depth_ = 0;
  bool stopped_ = false;
};

/// `self->send(dest, xs...)` from a typed actor to a handle that came
/// untyped inside a message (a turn's stream sink, turn_request::sink; the
/// session that sent a stream sink its piece): CAF 0.17 lets a typed actor
/// send() to typed receivers only. As with send(), the message carries
/// `self` as its sender (a stream sink answers a piece with cancel_atom to
/// its sender) and keeps its order behind earlier sends to `dest`.
template <class Self, class... Ts>
void send_untyped(Self* self, const caf::actor& dest, Ts&&... xs) {
  if (dest)
    dest->eq_impl(caf::make_message_id(), self->ctrl(), self->context(), std::forward<Ts>(xs)...);
}

} // namespace parley

#pragma once
// Deadlines of a long-lived actor's requests, kept by the actor itself with
// at most a message or two in CAF's clock at a time.
//
// CAF 0.17 files a request's timeout in its clock and never takes it out
// when the response comes: the entry, and the actor reference it holds,
// stay until the timeout passes (only the actor's end clears them). A turn
// made one such request per hop, with timeouts of 30 s (storage) to an hour
// and a half (the edge's safety net), so a node's memory grew with its turn
// rate, about 650 bytes a turn, hundreds of MiB a minute under load, and the
// clock thread spent a fifth of the node's CPU keeping them sorted. The same
// held for a session's idle timer, set after every turn.
//
// So the hot paths request with caf::infinite and file the deadline here: a
// request that is answered leaves nothing behind, and the book asks for one
// `deadline_atom` message at its earliest deadline. An actor using it keeps
// a `deadline_book deadlines` in its state and handles `deadline_atom` with
// sweep_deadlines(self).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>

#include <caf/actor_clock.hpp>
#include <caf/error.hpp>
#include <caf/sec.hpp>

#include "actors/vocabulary.hpp"

namespace parley {

class deadline_book {
public:
  using time_point = caf::actor_clock::time_point;
  /// What runs when a deadline passes: the request's error handler, given
  /// sec::request_timeout.
  using on_expiry = std::function<void(caf::error&)>;

  /// Files `f` to run at `due` unless the ticket is taken first.
  std::uint64_t add(time_point due, on_expiry f) {
    auto ticket = ++last_;
    by_due_.emplace(std::make_pair(due, ticket), std::move(f));
    due_of_.emplace(ticket, due);
    return ticket;
  }

  /// The answer came: its handler, taken off the book, when in time; null
  /// when the deadline passed first (the handler ran; drop the late answer).
  on_expiry take(std::uint64_t ticket) {
    auto i = due_of_.find(ticket);
    if (i == due_of_.end())
      return {};
    auto node = by_due_.extract(std::make_pair(i->second, ticket));
    due_of_.erase(i);
    return std::move(node.mapped());
  }
  bool settle(std::uint64_t ticket) { return static_cast<bool>(take(ticket)); }

  /// Runs every expiry due by `now`, earliest first.
  void expire(time_point now) {
    while (!by_due_.empty() && by_due_.begin()->first.first <= now) {
      auto node = by_due_.extract(by_due_.begin());
      due_of_.erase(node.key().second);
      caf::error e = caf::make_error(caf::sec::request_timeout);
      node.mapped()(e);
    }
  }

  /// When to send the next deadline message: the earliest deadline, unless
  /// a message already comes by then.
  std::optional<time_point> wake_at() {
    if (by_due_.empty())
      return std::nullopt;
    auto first = by_due_.begin()->first.first;
    if (armed_ && *armed_ <= first)
      return std::nullopt;
    armed_ = first;
    return first;
  }

  /// A deadline message came: whatever it was armed for, look again.
  void woke() { armed_.reset(); }

  std::size_t pending() const { return due_of_.size(); }

private:
  std::uint64_t last_ = 0;
  std::map<std::pair<time_point, std::uint64_t>, on_expiry> by_due_;
  std::unordered_map<std::uint64_t, time_point> due_of_;
  std::optional<time_point> armed_;
};

namespace detail {

template <class Self>
void arm_deadlines(Self* self, deadline_book::time_point now) {
  if (auto at = self->state.deadlines.wake_at())
    self->delayed_send(self, *at - now, deadline_atom::value);
}

} // namespace detail

/// Files `f` for `timeout` from now in `self->state.deadlines`.
template <class Self, class Duration>
std::uint64_t file_deadline(Self* self, Duration timeout, deadline_book::on_expiry f) {
  auto now = self->clock().now();
  auto ticket = self->state.deadlines.add(now + timeout, std::move(f));
  detail::arm_deadlines(self, now);
  return ticket;
}

/// The `deadline_atom` handler.
template <class Self>
void sweep_deadlines(Self* self) {
  auto& book = self->state.deadlines;
  book.woke();
  auto now = self->clock().now();
  book.expire(now);
  detail::arm_deadlines(self, now);
}

/// self->request(dest, timeout, xs...).then(on_value, on_error), with the
/// timeout kept in the actor's book instead of CAF's clock: on_error gets
/// sec::request_timeout when it passes, and a later answer is dropped, as
/// CAF would. `R` is the answer's type (on_value takes R&).
template <class R, class Self, class Handle, class Duration, class OnValue, class OnError,
          class... Ts>
void timed_request(Self* self, const Handle& dest, Duration timeout, OnValue on_value,
                   OnError on_error, Ts&&... xs) {
  // The error handler lives in the book: the deadline or the answer takes it.
  auto ticket = file_deadline(self, timeout, std::move(on_error));
  self->request(dest, caf::infinite, std::forward<Ts>(xs)...)
    .then(
      [self, ticket, on_value = std::move(on_value)](R& r) mutable {
        if (self->state.deadlines.settle(ticket))
          on_value(r);
      },
      [self, ticket](caf::error& e) {
        if (auto handler = self->state.deadlines.take(ticket))
          handler(e);
      });
}

} // namespace parley

#pragma once
// A bound on work in flight, in the spirit of Seastar's `gate`: try_enter()
// hands out a ticket while fewer than `max` are held, and the work is
// counted exactly as long as its ticket lives (move-only; the count drops
// when it is destroyed or reset). Not thread-safe: one owner (the edge
// actor) enters and drops tickets. A ticket may outlive its gate: its
// count is shared. An observer (on_change) hears every new count, for a
// gauge.

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>

namespace parley {

class inflight_gate {
  /// The count a gate and its tickets share.
  struct counter {
    std::size_t n = 0;
    std::function<void(std::size_t)> changed;
    void add(int d) {
      n = d > 0 ? n + 1 : n - 1;
      if (changed)
        changed(n);
    }
  };

public:
  class ticket {
  public:
    ticket() = default;
    ticket(ticket&& other) noexcept : count_(std::move(other.count_)) {}
    ticket& operator=(ticket&& other) noexcept {
      if (this != &other) {
        reset();
        count_ = std::move(other.count_);
      }
      return *this;
    }
    ticket(const ticket&) = delete;
    ticket& operator=(const ticket&) = delete;
    ~ticket() { reset(); }

    /// Leaves the gate now (idempotent).
    void reset() {
      if (count_) {
        count_->add(-1);
        count_.reset();
      }
    }
    /// True while the ticket counts.
    explicit operator bool() const { return count_ != nullptr; }

  private:
    friend class inflight_gate;
    explicit ticket(std::shared_ptr<counter> count) : count_(std::move(count)) {
      count_->add(1);
    }
    std::shared_ptr<counter> count_;
  };

  explicit inflight_gate(std::size_t max = 10000) : max_(max) {}

  /// A ticket, or nothing when `max` are already held.
  std::optional<ticket> try_enter() {
    if (count_->n >= max_)
      return std::nullopt;
    return ticket{count_};
  }

  std::size_t count() const { return count_->n; }
  void set_max(std::size_t max) { max_ = max; }
  /// Calls `f` with the count after every change (from the owner's thread).
  void on_change(std::function<void(std::size_t)> f) { count_->changed = std::move(f); }

private:
  std::shared_ptr<counter> count_ = std::make_shared<counter>();
  std::size_t max_;
};

} // namespace parley

#pragma once
// A bound on work in flight, in the spirit of Seastar's `gate`: try_enter()
// hands out a ticket while fewer than `max` are held, and the work is
// counted exactly as long as its ticket lives (move-only; the count drops
// when it is destroyed or reset). Not thread-safe: one owner (the edge
// actor) enters and drops tickets. A ticket may outlive its gate: its
// count is shared.

#include <cstddef>
#include <memory>
#include <optional>

namespace parley {

class inflight_gate {
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
        --*count_;
        count_.reset();
      }
    }
    /// True while the ticket counts.
    explicit operator bool() const { return count_ != nullptr; }

  private:
    friend class inflight_gate;
    explicit ticket(std::shared_ptr<std::size_t> count) : count_(std::move(count)) {
      ++*count_;
    }
    std::shared_ptr<std::size_t> count_;
  };

  explicit inflight_gate(std::size_t max = 10000) : max_(max) {}

  /// A ticket, or nothing when `max` are already held.
  std::optional<ticket> try_enter() {
    if (*count_ >= max_)
      return std::nullopt;
    return ticket{count_};
  }

  std::size_t count() const { return *count_; }
  void set_max(std::size_t max) { max_ = max; }

private:
  std::shared_ptr<std::size_t> count_ = std::make_shared<std::size_t>(0);
  std::size_t max_;
};

} // namespace parley

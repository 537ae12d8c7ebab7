#pragma once
// The rules of talking to a model upstream, kept pure so they are unit-
// tested without sockets or actors: which failures are worth another
// attempt, how long to wait before it (exponential backoff with full
// jitter, or the upstream's own Retry-After), and the circuit breaker that
// stops calling an upstream that keeps failing.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string_view>

namespace parley {

/// What one attempt came to, from the caller's point of view.
enum class attempt_outcome : std::uint8_t {
  success,       ///< a usable 2xx answer
  connect_error, ///< could not reach it: retry
  broken,        ///< the connection broke mid-exchange: retry
  throttled,     ///< 429: retry after its Retry-After
  server_error,  ///< 5xx: retry
  client_error,  ///< other 4xx or an unreadable answer: do not retry
  timeout,       ///< the attempt's deadline passed: not retried on this upstream (it used
                 ///< the budget), but the fallback gets its own attempt
  local_overload ///< our own connection pool is full: do not retry
};

/// Classifies an HTTP status of a completed exchange.
attempt_outcome classify_status(unsigned http_status);

/// True when another attempt (same or fallback upstream) may help.
bool is_retryable(attempt_outcome o);

/// True when the call should go on to the fallback upstream (if any) once
/// this upstream is done with: the retryable failures, and a timeout (which
/// ends the attempts on its own upstream, but not the call: API.md section 8).
bool tries_the_fallback(attempt_outcome o);

/// The longest a model call over `upstreams` upstreams can take when each
/// upstream starts attempts only within `attempt_timeout` of its first one and
/// each attempt ends by `attempt_timeout`: outer deadlines (the session's, the
/// edge's) must leave at least this much room.
std::chrono::milliseconds call_time_bound(std::chrono::milliseconds attempt_timeout,
                                          std::size_t upstreams);

/// True when the outcome counts against the upstream's circuit.
bool counts_as_failure(attempt_outcome o);

/// Parses a Retry-After header given in seconds (HTTP dates are ignored).
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value);

struct retry_policy {
  int max_attempts = 3; ///< per upstream, the first included
  std::chrono::milliseconds base{200};
  std::chrono::milliseconds cap{5000};
  std::chrono::milliseconds max_retry_after{30000}; ///< longer hints: give up instead

  /// The wait before attempt number `attempt` (1 = the first retry):
  /// Retry-After when the upstream sent one (nullopt if it is longer than
  /// max_retry_after), else a uniform random wait in [0, min(cap, base*2^attempt)).
  std::optional<std::chrono::milliseconds>
  backoff(int attempt, std::optional<std::chrono::milliseconds> retry_after,
          std::mt19937_64& rng) const;
};

/// A circuit breaker for one upstream: closed (calls pass) -> open after
/// `threshold` consecutive failures (calls fail fast) -> half-open after
/// `cooldown` (exactly one probe passes) -> closed on its success, open
/// again on its failure.
class circuit_breaker {
public:
  using clock = std::chrono::steady_clock;
  enum class state : std::uint8_t { closed = 0, open = 1, half_open = 2 };

  circuit_breaker(int threshold, std::chrono::milliseconds cooldown)
    : threshold_(threshold < 1 ? 1 : threshold), cooldown_(cooldown) {}

  /// May a call start now? In half-open, only one probe at a time.
  bool allow(clock::time_point now);
  void on_success();
  void on_failure(clock::time_point now);
  /// A call that was allowed but ended without a verdict on the upstream
  /// (for example our own overload): frees the half-open probe slot.
  void on_abandon();

  state current(clock::time_point now) const;

private:
  int threshold_;
  std::chrono::milliseconds cooldown_;
  int failures_ = 0;
  bool open_ = false;
  bool probing_ = false;
  clock::time_point open_until_{};
};

} // namespace parley

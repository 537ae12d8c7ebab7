#include "runtime/rules/upstream_policy.hpp"

#include <algorithm>
#include <charconv>

namespace parley {

attempt_outcome classify_status(unsigned http_status) {
  if (http_status >= 200 && http_status < 300)
    return attempt_outcome::success;
  if (http_status == 429)
    return attempt_outcome::throttled;
  if (http_status >= 500)
    return attempt_outcome::server_error;
  return attempt_outcome::client_error;
}

bool is_retryable(attempt_outcome o) {
  switch (o) {
    case attempt_outcome::connect_error:
    case attempt_outcome::broken:
    case attempt_outcome::throttled:
    case attempt_outcome::server_error:
      return true;
    default:
      return false;
  }
}

bool tries_the_fallback(attempt_outcome o) {
  return is_retryable(o) || o == attempt_outcome::timeout;
}

std::chrono::milliseconds call_time_bound(std::chrono::milliseconds attempt_timeout,
                                          std::size_t upstreams) {
  // Per upstream: the last attempt starts before one timeout has passed since
  // its first and runs for at most one more.
  return 2 * attempt_timeout * static_cast<std::int64_t>(std::max<std::size_t>(upstreams, 1));
}

bool counts_as_failure(attempt_outcome o) {
  switch (o) {
    case attempt_outcome::connect_error:
    case attempt_outcome::broken:
    case attempt_outcome::server_error:
    case attempt_outcome::timeout:
      return true;
    default:
      // A 429 is the upstream working as designed; a 4xx is our request.
      return false;
  }
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value) {
  while (!value.empty() && value.front() == ' ')
    value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ')
    value.remove_suffix(1);
  if (value.empty())
    return std::nullopt;
  double seconds = 0;
  std::int64_t whole = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), whole);
  if (ec != std::errc{} || end != value.data() + value.size() || whole < 0)
    return std::nullopt;
  seconds = static_cast<double>(std::min<std::int64_t>(whole, 86400));
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

std::optional<std::chrono::milliseconds>
retry_policy::backoff(int attempt, std::optional<std::chrono::milliseconds> retry_after,
                      std::mt19937_64& rng) const {
  if (retry_after) {
    if (*retry_after > max_retry_after)
      return std::nullopt;
    return *retry_after;
  }
  auto ceiling = base.count();
  for (int i = 0; i < attempt && ceiling < cap.count(); ++i)
    ceiling *= 2;
  ceiling = std::min<std::int64_t>(ceiling, cap.count());
  if (ceiling <= 0)
    return std::chrono::milliseconds(0);
  std::uniform_int_distribution<std::int64_t> pick(0, ceiling - 1);
  return std::chrono::milliseconds(pick(rng));
}

bool circuit_breaker::allow(clock::time_point now) {
  if (!open_)
    return true;
  if (now < open_until_ || probing_)
    return false;
  probing_ = true; // half-open: this call is the probe
  return true;
}

void circuit_breaker::on_success() {
  failures_ = 0;
  open_ = false;
  probing_ = false;
}

void circuit_breaker::on_failure(clock::time_point now) {
  ++failures_;
  if (probing_ || failures_ >= threshold_) {
    open_ = true;
    open_until_ = now + cooldown_;
  }
  probing_ = false;
}

void circuit_breaker::on_abandon() { probing_ = false; }

circuit_breaker::state circuit_breaker::current(clock::time_point now) const {
  if (!open_)
    return state::closed;
  return now < open_until_ ? state::open : state::half_open;
}

} // namespace parley

#pragma once
// The llm actor: one per node, the only way to the model. Sessions ask it
// for a completion; it answers with the built-in echo model or through the
// pooled upstream client, whose completions come back as messages (the asio
// thread only ever anon_sends; promises are delivered inside the actor).
//
/// Protocol:
///   (llm_call_atom, llm_request) -> llm_result
///     | upstream_error | upstream_timeout | upstream_unavailable | overloaded
///   (llm_call_atom, llm_request, listener) -> llm_result | (the same errors)
///     streamed: the listener gets (delta_atom, piece) for each piece, in
///     order and before the answer, sent under the caller's identity (the
///     listener's current_sender() is the caller) straight from the upstream
///     connection's thread; the echo model sends its pieces from here
///   (cancel_atom) from a streamed call's caller or listener: abandons its
///     upstream stream (the call then fails)
///   (llm_done_atom, id, status, http_status, body, error, retry_after)   internal
///   (retry_atom, id)                                                      internal
///
/// Resilience (upstream_policy.hpp): connect errors, broken connections,
/// 429 (after its Retry-After) and 5xx are retried with exponential backoff
/// and jitter, up to `retry.max_attempts` per upstream; then the fallback
/// upstream, if configured, gets the call. An attempt that times out
/// (PARLEY_LLM_TIMEOUT_MS bounds one attempt) is not retried on its upstream
/// but goes to the fallback too, which has its own full timeout; 504 only
/// when no upstream is left. Each upstream has a circuit breaker: while it is
/// open its calls skip it at once, and with every circuit open the call fails
/// fast with 503 upstream_unavailable. No new attempt starts on an upstream
/// after PARLEY_LLM_TIMEOUT_MS from its first attempt, so a call ends within
/// llm_call_bound() (twice the timeout per upstream).
/// A streamed call whose pieces already reached the listener is never
/// retried nor sent to the fallback (the client has seen part of a reply):
/// a failure or timeout then ends it with 502 upstream_error.

#include <chrono>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "runtime/telemetry/metrics.hpp"
#include "runtime/rules/upstream_policy.hpp"

namespace parley {
namespace net {
class io_runtime;
}

struct llm_config {
  std::string base_url; ///< empty: the built-in echo model
  std::string fallback_base_url; ///< empty: none
  std::string api_key;
  std::string default_model;
  std::chrono::milliseconds timeout{60000}; ///< one attempt
  std::size_t pool_size = 64;
  std::string ca_file; ///< https upstreams: extra trusted CAs (PEM), beside the system store
  retry_policy retry;
  int breaker_threshold = 5; ///< consecutive failures that open a circuit
  std::chrono::milliseconds breaker_cooldown{10000}; ///< open, before a half-open probe
  metrics_ptr metrics;
};

/// The longest one llm_call_atom request can take with this configuration
/// (every upstream used to its budget): callers' deadlines must exceed it.
std::chrono::milliseconds llm_call_bound(const llm_config& cfg);

/// The model name the echo model reports.
inline constexpr const char* echo_model = "echo";

/// Spawns the llm actor; `io` must outlive it. Throws std::invalid_argument
/// on a bad base URL.
caf::actor spawn_llm_actor(caf::actor_system& sys, net::io_runtime& io, const llm_config& cfg);

} // namespace parley

#pragma once
// The llm actor: one per node, the only way to the model. Sessions ask it
// for a completion; it answers with the built-in echo model or through the
// pooled upstream client, whose completions come back as messages (the asio
// thread only ever anon_sends; promises are delivered inside the actor).
//
/// Protocol: `llm_actor` below; `model_client_actor` is the part a session
/// actor uses.
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
///
/// Gateway calls (llm_request::raw_body, API.md section 5) send the client's
/// request unchanged and relay the answer: llm_result::raw with its
/// upstream_status (an upstream 4xx other than 429 is answered this way, as
/// the client's error: no retry, no fallback), or streamed, every chunk as
/// (chunk_atom, relay_chunk) paced by the listener's writes. An answer, or
/// one event, over max_response_bytes fails with upstream_error, not
/// retried. Every answer's usage fills llm_result::usage; a streaming
/// upstream is always asked for it (stream_options.include_usage).

#include <chrono>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "runtime/telemetry/metrics.hpp"
#include "runtime/rules/upstream_policy.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

/// What a session actor asks of the model (session_actor.hpp): a narrow
/// interface, so a session can be driven against a fake model.
/// Errors of both calls: upstream_error | upstream_timeout |
/// upstream_unavailable | overloaded.
using model_client_actor = caf::typed_actor<
  /// A completion.
  caf::replies_to<llm_call_atom, llm_request>::with<llm_result>,
  /// A streamed completion: the listener gets (delta_atom, std::string piece)
  /// for each piece (a gateway call from an upstream: (chunk_atom,
  /// relay_chunk) for each chunk; the listener must then be on this node),
  /// in order and before the answer, sent under the caller's identity (the
  /// listener's current_sender() is the caller) straight from the upstream
  /// connection's thread; the echo model sends its pieces from the actor.
  caf::replies_to<llm_call_atom, llm_request, caf::actor>::with<llm_result>,
  /// From a streamed call's caller or listener: abandons its upstream
  /// stream (the call then fails).
  caf::reacts_to<cancel_atom>>;

/// The llm actor's whole protocol; an llm_actor handle converts to a
/// model_client_actor implicitly.
using llm_actor = model_client_actor::extend<
  /// Internal: one attempt ended (from the upstream connection's thread).
  caf::reacts_to<llm_done_atom, llm_attempt_done>,
  /// Internal timer: (call id) its backoff passed, try again.
  caf::reacts_to<retry_atom, std::uint64_t>>;
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
  /// An answer, or one event of a stream, at most (PARLEY_LLM_MAX_RESPONSE_BYTES):
  /// beyond it the call fails with upstream_error, not retried.
  std::size_t max_response_bytes = 16 * 1024 * 1024;
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
llm_actor spawn_llm_actor(caf::actor_system& sys, net::io_runtime& io, const llm_config& cfg);

} // namespace parley

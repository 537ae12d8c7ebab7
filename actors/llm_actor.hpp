#pragma once
// The llm actor: one per node, the only way to the model. Sessions ask it
// for a completion; it answers with the built-in echo model or through the
// pooled upstream client, whose completions come back as messages (the asio
// thread only ever anon_sends; promises are delivered inside the actor).
//
/// Protocol:
///   (llm_call_atom, llm_request) -> llm_result
///     | upstream_error | upstream_timeout | overloaded
///   (llm_done_atom, id, status, http_status, body, error)   internal

#include <chrono>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

namespace parley {
namespace net {
class io_runtime;
}

struct llm_config {
  std::string base_url; ///< empty: the built-in echo model
  std::string api_key;
  std::string default_model;
  std::chrono::milliseconds timeout{60000};
  std::size_t pool_size = 64;
};

/// The model name the echo model reports.
inline constexpr const char* echo_model = "echo";

/// Spawns the llm actor; `io` must outlive it. Throws std::invalid_argument
/// on a bad base URL.
caf::actor spawn_llm_actor(caf::actor_system& sys, net::io_runtime& io, const llm_config& cfg);

} // namespace parley

#pragma once
// The one Server-Sent Events sink of the edge, for a session turn (Parley's
// `delta`, `done` and `error` events, API.md) and for the gateway's streamed
// chat completion (OpenAI's chunks, then `data: [DONE]`).
//
// A sink asks for the answer itself, naming itself as the receiver of the
// pieces, so the pieces (delta_atom, string) and the final result come from
// one actor and arrive in order. It writes the stream's head with its first
// byte, each piece as it comes, then the end or an error event, and then
// tells the edge (finished_atom, node, ticket) that the client's answer is
// complete. An error before the first byte is a plain HTTP error when the
// format says so (a turn: errors known before it started; a completion:
// any). With `cancel` on, the first piece after the client left cancels the
// call upstream.
//
/// Protocol:
///   (delta_atom, string)   one piece of the reply
///   (gone_atom)            from the edge: the node hosting the session
///                          went down (a turn only): 503, or an error event
///   (finished_atom)        to itself, after a plain error answer
/// Sends (finished_atom, node, ticket) to the edge exactly once.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

namespace parley {

struct http_call;
struct turn_request;
struct llm_request;

/// Whom a sink answers and reports to.
struct sink_target {
  std::shared_ptr<http_call> call;
  caf::actor edge;
  std::string node;         ///< the node hosting the session ("" for the gateway)
  std::uint64_t ticket = 0; ///< the edge's number for this request
};

/// A streamed turn: asks `registry` for `t` (its `sink` set to the sink).
caf::actor spawn_turn_sink(caf::actor_system& sys, sink_target target, caf::actor registry,
                           turn_request t, std::chrono::milliseconds timeout, bool cancel);

/// A streamed chat completion: asks `llm` for `req` with the sink as the
/// receiver of the pieces.
caf::actor spawn_completion_sink(caf::actor_system& sys, sink_target target, caf::actor llm,
                                 llm_request req, std::chrono::milliseconds timeout, bool cancel);

} // namespace parley

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
/// Protocol: `stream_sink_actor` below. Its answer (the turn_reply or
/// llm_result) comes back as the response to its own request, which a typed
/// actor handles outside its interface. The pieces come from actors that
/// hold the sink as `caf::actor` (turn_request::sink, which crosses the
/// cluster, and the llm actor's listener, which sends from its asio thread
/// with caf::send_as): the interface checks what the sink handles, the wire
/// is (delta_atom, std::string) as before. A gateway completion from an
/// upstream gets (chunk_atom, relay_chunk) instead, always node-local.
/// Sends its edge `sink_report_actor`'s message exactly once.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/llm_actor.hpp"
#include "actors/registry_actor.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

struct http_call;

using stream_sink_actor = caf::typed_actor<
  /// One piece of the reply, in order (from the session actor or, for a
  /// completion, the llm actor).
  caf::reacts_to<delta_atom, std::string>,
  /// (reply seq, model) from the session actor as a streamed turn's model
  /// call starts, before its pieces: a Response stream opens with its id and
  /// the session's model.
  caf::reacts_to<started_atom, std::int64_t, std::string>,
  /// A gateway completion: one upstream chunk, in order, from the llm
  /// actor's connection thread on this node; written to the client as it
  /// came (the usage chunk only when the client asked for it). The chunk's
  /// ticket is dropped once written, which lets the upstream read go on: a
  /// relay holds at most one read of chunks beyond the socket buffers.
  caf::reacts_to<chunk_atom, relay_chunk>,
  /// From the edge: the node hosting the session went down (a turn only):
  /// 503, or an error event.
  caf::reacts_to<gone_atom>,
  /// Internal (to itself, after a plain error answer): report and quit.
  caf::reacts_to<finished_atom>>;

/// A sink's turn the session refused, with not_latest or not_found, before
/// its stream started, when its target asked for such refusals
/// (sink_target::redirect). Node-local.
struct stream_refusal {
  std::string node;         ///< sink_target::node
  std::uint64_t ticket = 0; ///< sink_target::ticket
  caf::error why;
};

/// What a sink tells its edge (edge_actor.hpp's interface includes it).
using sink_report_actor = caf::typed_actor<
  /// (node, ticket) the stream's client has its whole answer.
  caf::reacts_to<finished_atom, std::string, std::uint64_t>,
  /// The session refused the turn before its stream started: the edge
  /// answers the request, or sends it elsewhere (a fork), not the sink.
  caf::reacts_to<refused_atom, stream_refusal>>;

/// Whom a sink answers and reports to.
struct sink_target {
  std::shared_ptr<http_call> call;
  sink_report_actor edge;
  std::string node;         ///< the node hosting the session ("" for the gateway)
  std::uint64_t ticket = 0; ///< the edge's number for this request
  bool redirect = false;    ///< refusals before the stream go to the edge (refused_atom)
};

/// Called once with a completed turn (its usage), in the sink, before the
/// stream's end is written.
using turn_listener = std::function<void(const turn_reply&)>;

/// A streamed turn: asks `registry` for `t` (its `sink` set to the sink);
/// `on_reply` (may be empty) hears the completed turn.
stream_sink_actor spawn_turn_sink(caf::actor_system& sys, sink_target target,
                                  registry_actor registry, turn_request t,
                                  std::chrono::milliseconds timeout, bool cancel,
                                  turn_listener on_reply = {});

struct response_view;
/// A streamed stored Response (OpenAI's Responses API): the turn `t` as
/// OpenAI's semantic events; `v` what the Response object repeats (its id
/// is set once the reply's seq is known).
stream_sink_actor spawn_response_sink(caf::actor_system& sys, sink_target target,
                                      registry_actor registry, turn_request t, response_view v,
                                      std::chrono::milliseconds timeout, bool cancel,
                                      turn_listener on_reply = {});

/// Called once with a completed call's result (its usage), in the sink,
/// before the stream's end is written.
using completion_listener = std::function<void(const llm_result&)>;

/// A streamed chat completion: asks `llm` for `req` with the sink as the
/// receiver of the pieces or chunks; `include_usage`: the client asked for
/// the usage chunk (stream_options.include_usage); `on_result` (may be
/// empty) hears a completed call's result.
stream_sink_actor spawn_completion_sink(caf::actor_system& sys, sink_target target,
                                        llm_actor llm, llm_request req, bool include_usage,
                                        std::chrono::milliseconds timeout, bool cancel,
                                        completion_listener on_result = {});

/// A streamed `store: false` Response: asks `llm` for `req` (a built
/// context, not a raw body) with the sink as the receiver of its pieces;
/// `v.id` is the response's id; `on_result` hears a completed call.
stream_sink_actor spawn_unstored_response_sink(caf::actor_system& sys, sink_target target,
                                               llm_actor llm, llm_request req, response_view v,
                                               std::chrono::milliseconds timeout, bool cancel,
                                               completion_listener on_result);

} // namespace parley

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(parley::stream_refusal)

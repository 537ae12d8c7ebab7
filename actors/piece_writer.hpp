#pragma once
// A node-local shortcut for the pieces of a streamed session turn: the
// stream sink of a turn publishes a piece_writer under its own address, and
// the llm actor, when the listener of a streamed call is such a sink, has the
// upstream connection's thread write each piece to the client through it
// (one post onto the client's strand) instead of sending it to the sink
// actor (a mailbox, a worker's wake-up, then that post). Everything else of
// the stream (its start, the end after the commit, errors) stays the sink's;
// the writer's lock puts the two in one order. A listener on another node, or
// one that is no sink (a session relaying a moved turn), is never found here:
// its pieces go by message as before.

#include <memory>
#include <string_view>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>

namespace parley {

class piece_writer {
public:
  virtual ~piece_writer() = default;
  /// One piece of the reply, in order; any thread (the upstream connection's
  /// strand). `hold` is kept until the piece went to the client's socket or
  /// was dropped (the producer paces its reads by it). Returns true once,
  /// with the piece after which the client is known to be gone and the sink
  /// wants the call cancelled.
  virtual bool piece(std::string_view text, std::shared_ptr<void> hold) = 0;
};

/// Makes `w` the writer of the actor `sink` until withdraw_piece_writer
/// (kept weakly: the writer lives as long as its sink holds it). Thread-safe.
void publish_piece_writer(const caf::actor_addr& sink, std::weak_ptr<piece_writer> w);
/// Thread-safe; idempotent.
void withdraw_piece_writer(const caf::actor_addr& sink);
/// The writer `listener` published in this process, or null. Thread-safe.
std::shared_ptr<piece_writer> find_piece_writer(const caf::actor& listener);

} // namespace parley

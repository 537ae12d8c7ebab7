#include "actors/edge/stream_sink.hpp"

#include <ctime>
#include <mutex>
#include <optional>
#include <utility>

#include <caf/actor_system.hpp>

#include "actors/edge/api_render.hpp"
#include "actors/edge/edge_state.hpp"
#include "actors/edge/openai_render.hpp"
#include "actors/piece_writer.hpp"
#include "net/http/clock.hpp"
#include "net/http/openai_items.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

// A format says what the sink writes; the sink (below) decides when.
//   name                      the actor type (metrics, /admin/v1/actors)
//   result                    the final answer's type
//   ask(self, to, timeout)    the request whose answer is streamed
//   opening(out)              written with the head
//   piece(out, text)          one piece
//   relays(chunk)             whether an upstream chunk goes to the client
//   relay(out, chunk)         writes it (a completion only)
//   plain_result(result)      a result answered as a plain HTTP answer
//                             when nothing was streamed yet (an upstream 4xx)
//   closing(out, result)      the end, after the head (written first if no
//                             piece came)
//   error_event(err)          an error after the head
//   plain_before_start(code)  an error before the head is a plain answer
//   cancel(self)              stops the call when the client left

bool known_before_turn(errc code) {
  return code == errc::session_busy || code == errc::not_found || code == errc::conflict ||
         code == errc::overloaded;
}

struct turn_format {
  static inline const char* name = "stream_sink";
  using result = turn_reply;
  /// A node-local model call writes the pieces (render_piece) itself.
  static constexpr bool direct = true;
  static std::string render_piece(std::string_view text) { return render_delta_sse(text); }
  turn_request req;
  turn_listener on_reply;

  template <class Self>
  auto ask(Self* self, const registry_actor& registry, std::chrono::milliseconds timeout) {
    req.sink = caf::actor_cast<caf::actor>(self);
    return self->request(registry, timeout, std::move(req));
  }
  void opening(net::responder&) {}
  bool started(std::int64_t, std::string&) { return false; }
  void piece(net::responder& out, const std::string& text) { out.write(render_delta_sse(text)); }
  bool relays(const relay_chunk&) { return false; } // a turn's pieces are deltas
  void relay(net::responder&, relay_chunk&) {}
  std::optional<std::pair<unsigned, std::string>> plain_result(result&) { return std::nullopt; }
  void before_closing(result& r) {
    if (on_reply)
      on_reply(r); // the key's budget (edge_sessions.cpp)
  }
  void closing(net::responder& out, result& r) { out.write(render_done_sse(r)); }
  std::string error_event(const api_error& e) { return render_error_sse(e); }
  bool plain_before_start(errc code) { return known_before_turn(code); }
  /// The session actor sent the piece (as caf::actor, maybe from another
  /// node): it stops the model call.
  template <class Self>
  void cancel(Self* self) {
    send_untyped(self, caf::actor_cast<caf::actor>(self->current_sender()), cancel_atom::value);
  }
};

/// A gateway completion. From an upstream, its chunks go to the client as
/// they came (relay); from the echo model (or an upstream that answered
/// whole), Parley renders OpenAI's chunks around the pieces.
struct completion_format {
  static inline const char* name = "gateway_sink";
  using result = llm_result;
  static constexpr bool direct = false;
  llm_request req;
  llm_actor llm;
  bool include_usage = false; ///< the client asked for the usage chunk
  std::string id = "chatcmpl-" + random_hex(12);
  std::int64_t created = static_cast<std::int64_t>(std::time(nullptr));
  std::string model;
  completion_listener on_result;
  bool rendered = false; ///< Parley's first chunk is out (pieces)
  bool relayed = false;  ///< an upstream chunk is out

  template <class Self>
  auto ask(Self* self, const llm_actor& to, std::chrono::milliseconds timeout) {
    llm = to;
    model = req.model;
    return self->request(to, timeout, llm_call_atom::value, std::move(req),
                         caf::actor_cast<caf::actor>(self));
  }
  void opening(net::responder&) {}
  bool started(std::int64_t, std::string&) { return false; }
  void piece(net::responder& out, const std::string& text) {
    open_rendered(out);
    out.write(render_completion_chunk(id, created, model, &text, false, false));
  }
  bool relays(const relay_chunk& ch) { return !ch.usage_only || include_usage; }
  void relay(net::responder& out, relay_chunk& ch) {
    relayed = true;
    out.write(render_relayed_chunk(ch.data), std::move(ch.ticket));
  }
  /// An upstream's 4xx before any chunk: its status and body, unchanged.
  std::optional<std::pair<unsigned, std::string>> plain_result(result& r) {
    if (r.upstream_status < 300 || relayed || rendered)
      return std::nullopt;
    return std::make_pair(static_cast<unsigned>(r.upstream_status), std::move(r.raw));
  }
  /// The first chunk (when no piece came) already names the model used.
  void before_closing(result& r) {
    if (!rendered)
      model = r.model;
    if (on_result && r.upstream_status < 400)
      on_result(r); // the gateway's usage (edge_gateway.cpp)
  }
  void closing(net::responder& out, result& r) {
    if (!relayed && !rendered && !r.raw.empty()) {
      // The upstream answered whole although asked to stream.
      for (auto& chunk : render_completion_as_chunks(r.raw, include_usage))
        out.write(std::move(chunk));
      relayed = true;
    }
    if (!relayed) {
      open_rendered(out);
      out.write(render_completion_chunk(id, created, model, nullptr, false, true));
      if (include_usage && r.usage.known)
        out.write(render_usage_chunk(id, created, model, r.usage));
    }
    out.write("data: [DONE]\n\n");
  }
  std::string error_event(const api_error& e) { return render_completion_error_sse(e); }
  bool plain_before_start(errc) { return true; }
  template <class Self>
  void cancel(Self* self) {
    self->send(llm, cancel_atom::value);
  }

private:
  void open_rendered(net::responder& out) {
    if (rendered)
      return;
    rendered = true;
    out.write(render_completion_chunk(id, created, model, nullptr, true, false));
  }
};

/// A stored Response, streamed (API.md section 5a): OpenAI's semantic
/// events around the turn's pieces, `response.completed` once the turn is
/// committed. The stream opens when the session starts the model call
/// (started: the reply's seq names the response), or with the result (an
/// idempotent retry answered from storage).
struct response_format {
  static inline const char* name = "response_sink";
  using result = turn_reply;
  static constexpr bool direct = false;
  turn_request req;
  response_view view;
  turn_listener on_reply; ///< the key's budget (edge_sessions.cpp)
  response_stream events;
  bool opened = false;

  template <class Self>
  auto ask(Self* self, const registry_actor& registry, std::chrono::milliseconds timeout) {
    req.sink = caf::actor_cast<caf::actor>(self);
    return self->request(registry, timeout, std::move(req));
  }
  void opening(net::responder& out) { open(out); }
  /// True when the stream should start now.
  bool started(std::int64_t seq, std::string& model) {
    if (opened)
      return false;
    view.id = net::response_id(view.session_id, seq);
    view.model = std::move(model);
    events.item_id = net::item_id(view.session_id, seq);
    return true;
  }
  void open(net::responder& out) {
    if (opened)
      return;
    opened = true;
    out.write(events.opening(view));
  }
  void piece(net::responder& out, const std::string& text) {
    open(out);
    if (!text.empty())
      out.write(events.delta(text));
  }
  bool relays(const relay_chunk&) { return false; }
  void relay(net::responder&, relay_chunk&) {}
  std::optional<std::pair<unsigned, std::string>> plain_result(result&) { return std::nullopt; }
  void before_closing(result& r) {
    if (!opened) {
      auto model = r.reply.model;
      started(r.reply.seq, model);
    }
    if (on_reply)
      on_reply(r);
  }
  void closing(net::responder& out, result& r) {
    open(out);
    // An answer from storage (an idempotent retry) came without pieces.
    if (events.text.empty() && !r.reply.content.empty())
      out.write(events.delta(r.reply.content));
    out.write(events.closing(view, r.reply));
  }
  std::string error_event(const api_error& e) { return events.failed(view, e); }
  /// Before the model call started, an error is a plain answer in OpenAI's
  /// error shape.
  bool plain_before_start(errc) { return !opened; }
  template <class Self>
  void cancel(Self* self) {
    send_untyped(self, caf::actor_cast<caf::actor>(self->current_sender()), cancel_atom::value);
  }
};

/// A `store: false` Response, streamed: the same events around a model
/// call of the llm actor (its pieces come as deltas), nothing stored.
struct unstored_response_format {
  static inline const char* name = "response_sink";
  using result = llm_result;
  static constexpr bool direct = false;
  llm_request req;
  llm_actor llm;
  response_view view;
  response_stream events;
  completion_listener on_result;
  bool opened = false;

  template <class Self>
  auto ask(Self* self, const llm_actor& to, std::chrono::milliseconds timeout) {
    llm = to;
    return self->request(to, timeout, llm_call_atom::value, std::move(req),
                         caf::actor_cast<caf::actor>(self));
  }
  void opening(net::responder& out) {
    if (opened)
      return;
    opened = true;
    out.write(events.opening(view));
  }
  bool started(std::int64_t, std::string&) { return false; }
  void piece(net::responder& out, const std::string& text) {
    opening(out);
    if (!text.empty())
      out.write(events.delta(text));
  }
  bool relays(const relay_chunk&) { return false; }
  void relay(net::responder&, relay_chunk&) {}
  /// An upstream's 4xx before anything was written: its status and body.
  std::optional<std::pair<unsigned, std::string>> plain_result(result& r) {
    if (r.upstream_status < 300 || opened)
      return std::nullopt;
    return std::make_pair(static_cast<unsigned>(r.upstream_status), std::move(r.raw));
  }
  void before_closing(result& r) {
    if (on_result && r.upstream_status < 400)
      on_result(r);
  }
  void closing(net::responder& out, result& r) {
    opening(out);
    auto reply = unstored_reply(std::move(r));
    if (events.text.empty() && !reply.content.empty())
      out.write(events.delta(reply.content));
    out.write(events.closing(view, reply));
  }
  std::string error_event(const api_error& e) { return events.failed(view, e); }
  bool plain_before_start(errc) { return !opened; }
  template <class Self>
  void cancel(Self* self) {
    self->send(llm, cancel_atom::value);
  }
};

/// What a sink writes to its client, and the lock that puts its own writes
/// and the pieces a published writer (piece_writer.hpp) takes on an upstream
/// connection's thread in one order: every write to `out` happens under `mu`.
struct sink_output final : piece_writer {
  std::mutex mu;
  net::responder_ptr out;
  net::http_response head; ///< the stream's head, sent with its first byte
  bool started = false;
  bool done = false;
  bool cancel = false; ///< cancel the call when the client is gone
  bool cancel_sent = false;
  /// A published writer's piece as an event (a format without an opening).
  std::string (*render)(std::string_view piece) = nullptr;

  /// Under `mu`: sends the head unless it went; true when it went now.
  bool open() {
    if (started)
      return false;
    started = true;
    out->start_stream(std::move(head));
    return true;
  }
  /// Under `mu`, after a piece: true once, when the client is gone and the
  /// call should be cancelled.
  bool client_gone() {
    if (!cancel || cancel_sent || !out->closed())
      return false;
    cancel_sent = true;
    return true;
  }
  bool piece(std::string_view text, std::shared_ptr<void> hold) override {
    std::lock_guard<std::mutex> lk{mu};
    if (done)
      return false;
    open();
    out->write(render(text), std::move(hold));
    return client_gone();
  }
};

/// The output's lock for one handler; keeps the output (the state goes with
/// the actor, maybe before the lock is let go).
struct held_output {
  explicit held_output(std::shared_ptr<sink_output> o) : w(std::move(o)), lk(w->mu) {}
  std::shared_ptr<sink_output> w;
  std::unique_lock<std::mutex> lk;
};

template <class Format>
struct sink_state {
  static inline const char* name = Format::name;
  Format fmt;
  sink_target to;
  std::shared_ptr<sink_output> w = std::make_shared<sink_output>();
};

template <class Format>
using sink_self = instrumented_actor<sink_state<Format>, stream_sink_actor::base>;

/// `Source`: the registry (a turn) or the llm actor (a completion). Every
/// handler writes under the output's lock (`guard`); the lambdas below assume
/// it held.
template <class Format, class Source>
stream_sink_actor::behavior_type stream_sink(sink_self<Format>* self, sink_target to, Format fmt,
                                             Source source, std::chrono::milliseconds timeout,
                                             bool cancel) {
  auto& output = *self->state.w;
  output.out = to.call->out;
  output.head.status = 200;
  output.head.content_type = "text/event-stream";
  output.head.headers = to.call->headers; // complete once the call reaches its sink
  output.cancel = cancel;
  self->state.to = std::move(to);
  self->state.fmt = std::move(fmt);
  if constexpr (Format::direct) {
    // A node-local llm call writes the pieces itself (piece_writer.hpp).
    output.render = &Format::render_piece;
    publish_piece_writer(self->address(), self->state.w);
    self->attach_functor([addr = self->address()] { withdraw_piece_writer(addr); });
  }
  auto guard = [self] { return held_output{self->state.w}; };
  auto start = [self] {
    auto& st = self->state;
    if (st.w->open())
      st.fmt.opening(*st.w->out);
  };
  auto report = [self] {
    auto& target = self->state.to;
    self->send(target.edge, finished_atom::value, target.node, target.ticket);
    self->quit();
  };
  auto end = [self, report] {
    auto& w = *self->state.w;
    if (w.done)
      return;
    w.done = true;
    w.out->finish();
    report();
  };
  auto fail = [self, start, end](const api_error& err, bool plain_if_not_started) {
    auto& st = self->state;
    if (st.w->done)
      return;
    if (!st.w->started && st.to.redirect &&
        (err.code == errc::not_latest || err.code == errc::not_found)) {
      st.w->done = true;
      self->send(st.to.edge, refused_atom::value,
                 stream_refusal{st.to.node, st.to.ticket, make_error(err.code, err.message)});
      self->quit();
      return;
    }
    if (!st.w->started && (plain_if_not_started || st.fmt.plain_before_start(err.code))) {
      st.w->done = true;
      reply_error(st.to.call, err);
      self->send(caf::actor_cast<stream_sink_actor>(self), finished_atom::value);
      return;
    }
    start();
    st.w->out->write(st.fmt.error_event(err));
    end();
  };
  auto client_gone = [self] {
    auto& st = self->state;
    if (st.w->client_gone())
      st.fmt.cancel(self);
  };
  self->state.fmt.ask(self, source, timeout)
    .then(
      [self, guard, start, end](typename Format::result& r) {
        auto lk = guard();
        auto& st = self->state;
        if (st.w->done)
          return;
        if (!st.w->started) {
          if (auto plain = st.fmt.plain_result(r)) {
            st.w->done = true;
            reply(st.to.call, plain->first, std::move(plain->second));
            self->send(caf::actor_cast<stream_sink_actor>(self), finished_atom::value);
            return;
          }
        }
        st.fmt.before_closing(r);
        start();
        st.fmt.closing(*st.w->out, r);
        end();
      },
      [guard, fail](caf::error& e) {
        auto lk = guard();
        fail(to_api_error(e), false);
      });
  return {
    [self, guard, start, client_gone](delta_atom, std::string& piece) {
      auto lk = guard();
      auto& st = self->state;
      if (st.w->done)
        return;
      start();
      st.fmt.piece(*st.w->out, piece);
      client_gone();
    },
    [self, guard, start](started_atom, std::int64_t seq, std::string& model) {
      auto lk = guard();
      auto& st = self->state;
      if (!st.w->done && st.fmt.started(seq, model))
        start();
    },
    [self, guard, start, client_gone](chunk_atom, relay_chunk& ch) {
      // Dropping `ch` (and its ticket) lets the upstream read go on.
      auto lk = guard();
      auto& st = self->state;
      if (st.w->done || !st.fmt.relays(ch))
        return;
      start();
      st.fmt.relay(*st.w->out, ch);
      client_gone();
    },
    [self, guard, fail](gone_atom) {
      auto lk = guard();
      fail({errc::session_moved, "node '" + self->state.to.node +
                                   "' hosting the session went down; retry with the same "
                                   "client_message_id"},
           true);
    },
    // After a plain error answer: report and go.
    [report](finished_atom) { report(); },
  };
}

} // namespace

stream_sink_actor spawn_turn_sink(caf::actor_system& sys, sink_target target,
                                  registry_actor registry, turn_request t,
                                  std::chrono::milliseconds timeout, bool cancel,
                                  turn_listener on_reply) {
  turn_format fmt;
  fmt.req = std::move(t);
  fmt.on_reply = std::move(on_reply);
  return sys.spawn(stream_sink<turn_format, registry_actor>, std::move(target), std::move(fmt),
                   std::move(registry), timeout, cancel);
}

stream_sink_actor spawn_response_sink(caf::actor_system& sys, sink_target target,
                                      registry_actor registry, turn_request t, response_view v,
                                      std::chrono::milliseconds timeout, bool cancel,
                                      turn_listener on_reply) {
  response_format fmt;
  fmt.req = std::move(t);
  fmt.view = std::move(v);
  fmt.on_reply = std::move(on_reply);
  return sys.spawn(stream_sink<response_format, registry_actor>, std::move(target), std::move(fmt),
                   std::move(registry), timeout, cancel);
}

stream_sink_actor spawn_unstored_response_sink(caf::actor_system& sys, sink_target target,
                                               llm_actor llm, llm_request req, response_view v,
                                               std::chrono::milliseconds timeout, bool cancel,
                                               completion_listener on_result) {
  unstored_response_format fmt;
  fmt.req = std::move(req);
  fmt.events.item_id = "msg_" + v.id.substr(5);
  fmt.view = std::move(v);
  fmt.on_result = std::move(on_result);
  return sys.spawn(stream_sink<unstored_response_format, llm_actor>, std::move(target),
                   std::move(fmt), std::move(llm), timeout, cancel);
}

stream_sink_actor spawn_completion_sink(caf::actor_system& sys, sink_target target,
                                        llm_actor llm, llm_request req, bool include_usage,
                                        std::chrono::milliseconds timeout, bool cancel,
                                        completion_listener on_result) {
  completion_format fmt;
  fmt.req = std::move(req);
  fmt.include_usage = include_usage;
  fmt.on_result = std::move(on_result);
  return sys.spawn(stream_sink<completion_format, llm_actor>, std::move(target), std::move(fmt),
                   std::move(llm), timeout, cancel);
}

} // namespace parley

#include "actors/llm_actor.hpp"
#include "actors/piece_writer.hpp"

#include <algorithm>
#include <atomic>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <nlohmann/json.hpp>

#include "actors/instrumented.hpp"
#include "actors/vocabulary.hpp"
#include "runtime/rules/token_usage.hpp"
#include "runtime/rules/upstream_policy.hpp"
#include "net/http_client.hpp"
#include "net/http/json_text.hpp"
#include "runtime/telemetry/log.hpp"
#include "net/http/openai_chunk.hpp"

namespace parley {

namespace {

using clock = std::chrono::steady_clock;

/// A session turn's pieces written to its client from the upstream's thread
/// and not yet on the client's socket, in bytes, at most (beyond one read).
constexpr std::size_t piece_window = 64 * 1024;

struct upstream {
  std::string label; ///< "primary" or "fallback": the metrics label
  std::shared_ptr<net::http_client> client;
  circuit_breaker breaker;
  log::throttle failures; ///< its failed attempts' log lines
};

/// What a streamed call forwarded to its listener.
struct stream_progress {
  std::string streamed;      ///< the pieces forwarded so far (a session turn's reply)
  std::string model;         ///< the model the upstream named in its chunks
  token_usage usage;         ///< from the usage chunk, once it came
  std::size_t forwarded = 0; ///< pieces or chunks that reached the listener: no retry after one
  bool ended = false;        ///< `[DONE]` or a `finish_reason` came: the answer is whole
  bool choices = false;      ///< some chunk held a choice
  /// Why the stream cannot be taken, from its first bad event on (whatever
  /// follows is dropped); empty: nothing wrong so far.
  std::string fault;
};

/// One model call on its way through attempts, retries and upstreams.
struct call {
  caf::response_promise rp;
  std::string model;
  std::string body;
  bool relay = false;       ///< a gateway call: the answer goes to the client as it is
  std::size_t upstream = 0; ///< index of the upstream being tried
  int attempts = 0;         ///< attempts on that upstream so far
  bool reached_any = false; ///< some upstream's circuit let an attempt through
  clock::time_point started;
  clock::time_point upstream_started; ///< the first attempt on the current upstream
  clock::time_point attempt_started;
  caf::error last; ///< the most recent failure, answered if nothing succeeds
  caf::actor listener; ///< a streamed call: gets (delta_atom, piece) first
  caf::actor caller;   ///< who asked: the pieces are sent under its identity
  /// A streamed call's pieces so far: written on its upstream connection's
  /// strand while an attempt streams, read here only after that attempt's
  /// done message (which the strand sends after its last event).
  std::shared_ptr<stream_progress> progress = std::make_shared<stream_progress>();
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
};

struct llm_state {
  static inline const char* name = "llm";
  llm_config cfg;
  std::vector<upstream> upstreams; ///< empty: the echo model
  std::unordered_map<std::uint64_t, call> calls;
  std::uint64_t next_id = 0;
  std::mt19937_64 rng{std::random_device{}()};
};

using llm_self = instrumented_actor<llm_state, llm_actor::base>;

/// A session turn's request (a gateway call's is the client's own). Streamed,
/// it asks for the usage chunk (API.md section 4).
std::string request_body(const llm_request& req, bool stream) {
  if (!req.raw_body.empty())
    return req.raw_body;
  nlohmann::json msgs = nlohmann::json::array();
  for (auto& m : req.messages)
    msgs.push_back({{"role", m.role}, {"content", m.content}});
  nlohmann::json body = {{"model", req.model}, {"messages", std::move(msgs)}};
  if (!req.options.empty()) {
    auto options = nlohmann::json::parse(req.options, nullptr, false);
    if (options.is_object())
      for (auto& [k, v] : options.items())
        body[k] = v;
  }
  if (stream) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
  }
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// An upstream's counts as Parley keeps them: what it reports is not trusted
/// to be sane (a negative or absurd count must not break a daily sum).
token_usage usage_of(const net::upstream_usage& u) {
  auto sane = [](std::int64_t n) { return std::clamp<std::int64_t>(n, 0, max_call_tokens); };
  token_usage t;
  t.prompt_tokens = sane(u.prompt_tokens);
  t.completion_tokens = sane(u.completion_tokens);
  t.total_tokens = u.total_tokens > 0 ? sane(u.total_tokens) : t.prompt_tokens + t.completion_tokens;
  t.known = true;
  return t;
}

/// Reads one event of a stream into `info`: true when it is a chunk to use.
/// `[DONE]` ends the stream; an event that is not a JSON object (or not
/// UTF-8) and an `error` event are faults, and nothing after a fault is
/// used: a stream is taken whole or not at all.
bool take_event(stream_progress& p, std::string_view data, net::chunk_info& info) {
  if (!p.fault.empty())
    return false;
  switch (net::read_chunk(data, info)) {
    case net::chunk_kind::done:
      p.ended = true;
      return false;
    case net::chunk_kind::malformed:
      p.fault = "it sent a streamed chunk that is not a JSON object in UTF-8";
      return false;
    case net::chunk_kind::chunk:
      break;
  }
  if (info.error) {
    p.fault = "it sent an error event mid-stream";
    return false;
  }
  if (info.model) {
    p.model = std::move(*info.model);
    net::replace_nul(p.model);
  }
  if (info.usage)
    p.usage = usage_of(*info.usage);
  p.choices = p.choices || !info.no_choices;
  p.ended = p.ended || info.finished;
  return true;
}

/// Why a stream that ended cleanly cannot be the answer; empty when it can.
/// A turn's stream must hold a choice, as a whole completion must.
std::string stream_fault(const stream_progress& p, bool relay) {
  if (!p.fault.empty())
    return p.fault;
  if (!p.ended)
    return "its stream ended without [DONE] or a finish_reason (cut short)";
  if (!relay && !p.choices)
    return "its stream held no choice";
  return {};
}

/// One upstream chunk of a session turn's stream: notes its model and usage,
/// and returns its piece of text (added to what was streamed, and counted),
/// if it has one.
std::optional<std::string> next_piece(stream_progress& p, std::string_view data) {
  net::chunk_info info;
  if (!take_event(p, data, info) || !info.piece)
    return std::nullopt;
  net::replace_nul(*info.piece); // stored as the client saw it
  p.streamed += *info.piece;
  ++p.forwarded;
  return std::move(info.piece);
}

/// The `usage` of an answer, when it has one.
void read_usage(const nlohmann::json& j, token_usage& out) {
  auto u = j.find("usage");
  if (u == j.end() || !u->is_object())
    return;
  net::upstream_usage counts;
  auto count = [&u](const char* key, std::int64_t& to) {
    auto v = u->find(key);
    if (v != u->end() && v->is_number_integer() && v->get<std::int64_t>() >= 0)
      to = v->get<std::int64_t>();
  };
  count("prompt_tokens", counts.prompt_tokens);
  count("completion_tokens", counts.completion_tokens);
  count("total_tokens", counts.total_tokens);
  out = usage_of(counts);
}

/// Interprets an upstream answer; sets `err` when it is not a completion. A
/// session turn needs `choices[0].message.content` as text; a relayed one
/// (`relay`) any `choices` array (content may be null beside tool_calls).
llm_result parse_completion(const std::string& body, const std::string& model, bool relay,
                            caf::error& err) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  llm_result r;
  r.model = model;
  if (j.is_object()) {
    auto choices = j.find("choices");
    if (choices != j.end() && choices->is_array() && (relay || !choices->empty())) {
      const nlohmann::json* content = nullptr;
      if (!choices->empty() && (*choices)[0].is_object()) {
        auto& first = (*choices)[0];
        if (auto msg = first.find("message"); msg != first.end() && msg->is_object())
          if (auto c = msg->find("content"); c != msg->end())
            content = &*c;
      }
      if (relay || (content && content->is_string())) {
        if (content && content->is_string())
          r.content = content->get<std::string>();
        if (auto m = j.find("model"); m != j.end() && m->is_string())
          r.model = m->get<std::string>();
        // A session turn stores them (a gateway call the model's name, for
        // usage): U+0000 cannot be stored.
        if (!relay)
          net::replace_nul(r.content);
        net::replace_nul(r.model);
        read_usage(j, r.usage);
        return r;
      }
    }
  }
  err = make_error(errc::upstream_error, "the model upstream sent a response Parley cannot read");
  return r;
}

const char* outcome_label(attempt_outcome o) {
  switch (o) {
    case attempt_outcome::success: return "success";
    case attempt_outcome::connect_error: return "connect_error";
    case attempt_outcome::broken: return "broken";
    case attempt_outcome::throttled: return "throttled";
    case attempt_outcome::server_error: return "server_error";
    case attempt_outcome::client_error: return "client_error";
    case attempt_outcome::timeout: return "timeout";
    case attempt_outcome::local_overload: return "overloaded";
  }
  return "unknown";
}

/// A model call completed: its tokens count once in
/// parley_llm_tokens_total, whoever asked (a session turn, the gateway).
void count_tokens(const llm_state& st, const llm_result& r) {
  if (st.cfg.metrics && r.usage.known)
    st.cfg.metrics->llm_tokens(r.usage.prompt_tokens, r.usage.completion_tokens);
}

void report_circuit(llm_self* self, const upstream& u) {
  if (self->state.cfg.metrics)
    self->state.cfg.metrics->llm_circuit(u.label,
                                         static_cast<int>(u.breaker.current(clock::now())));
}

void attempt(llm_self* self, std::uint64_t id);

/// Starts the next attempt on the first upstream from `c.upstream` on whose
/// circuit lets it through; answers the call when none is left.
void next_upstream(llm_self* self, std::uint64_t id) {
  auto& st = self->state;
  auto it = st.calls.find(id);
  if (it == st.calls.end())
    return;
  auto& c = it->second;
  auto now = clock::now();
  for (; c.upstream < st.upstreams.size(); ++c.upstream, c.attempts = 0) {
    auto& u = st.upstreams[c.upstream];
    bool allowed = u.breaker.allow(now);
    report_circuit(self, u);
    if (allowed) {
      c.reached_any = true;
      return attempt(self, id);
    }
  }
  auto rp = std::move(c.rp);
  auto err = c.reached_any ? std::move(c.last)
                           : make_error(errc::upstream_unavailable,
                                        "the model upstream is failing and its circuit is open; "
                                        "retry later");
  st.calls.erase(it);
  rp.deliver(std::move(err));
}

/// From the connection's thread: the attempt `id` ended.
void report_done(const llm_actor& me, std::uint64_t id, net::fetch_result r) {
  caf::anon_send(me, llm_done_atom::value,
                 llm_attempt_done{id, static_cast<std::int32_t>(r.status), r.http_status,
                                  std::move(r.body), std::move(r.error),
                                  std::move(r.retry_after)});
}

void attempt(llm_self* self, std::uint64_t id) {
  auto& st = self->state;
  auto& c = st.calls.at(id);
  c.attempt_started = clock::now();
  if (c.attempts++ == 0)
    c.upstream_started = c.attempt_started;
  auto me = caf::actor_cast<llm_actor>(self);
  if (c.listener) {
    // Another attempt comes only when nothing reached the listener: it
    // starts the stream afresh (a fault or a model name of the last attempt
    // is not this one's). The last attempt's events are all in: its done
    // message followed them.
    *c.progress = stream_progress{};
    // Streamed: each piece goes from the connection's strand straight to the
    // listener (no hop through this actor: one actor for every stream of
    // the node would be a queue every piece waits in); the done message
    // follows the last piece, so the reply never overtakes a piece.
    net::stream_callbacks cb;
    if (c.relay) {
      // A gateway call: every chunk goes to the sink as it came, paced by
      // the client (the next read waits until the sink wrote this one).
      cb.pace = std::make_shared<net::stream_pace>();
      cb.on_event = [listener = c.listener, caller = c.caller, progress = c.progress,
                     pace = cb.pace](std::string_view data) {
        net::chunk_info info;
        if (!take_event(*progress, data, info))
          return; // [DONE] (the sink writes its own), or a fault: answered at the end
        ++progress->forwarded;
        caf::send_as(caller, listener, chunk_atom::value,
                     relay_chunk{std::string{data}, info.no_choices && info.usage.has_value(),
                                 pace->ticket()});
      };
    } else if (auto writer = find_piece_writer(c.listener)) {
      // A session turn's sink on this node: each piece goes to the client
      // from here (piece_writer.hpp), paced by the client: the upstream read
      // goes on while at most piece_window bytes wait for the client.
      cb.pace = std::make_shared<net::stream_pace>(piece_window);
      cb.on_event = [writer = std::move(writer), listener = c.listener, caller = c.caller,
                     progress = c.progress, pace = cb.pace](std::string_view data) {
        auto piece = next_piece(*progress, data);
        if (!piece)
          return;
        // The client left: the sink's cancel, as the sink would send it.
        auto ticket = pace->ticket(piece->size());
        if (writer->piece(*piece, std::move(ticket)))
          caf::send_as(listener, caller, cancel_atom::value);
      };
    } else {
      cb.on_event = [listener = c.listener, caller = c.caller,
                     progress = c.progress](std::string_view data) {
        if (auto piece = next_piece(*progress, data))
          caf::send_as(caller, listener, delta_atom::value, std::move(*piece));
      };
    }
    cb.on_done = [me, id](net::fetch_result r) { report_done(me, id, std::move(r)); };
    cb.cancel = c.cancel;
    st.upstreams[c.upstream].client->post_json_stream("/chat/completions", c.body, st.cfg.api_key,
                                                      st.cfg.timeout, std::move(cb));
    return;
  }
  st.upstreams[c.upstream].client->post_json(
    "/chat/completions", c.body, st.cfg.api_key, st.cfg.timeout,
    [me, id](net::fetch_result r) { report_done(me, id, std::move(r)); });
}

attempt_outcome outcome_of(net::fetch_status status, unsigned http_status) {
  switch (status) {
    case net::fetch_status::ok: return classify_status(http_status);
    case net::fetch_status::connect_error: return attempt_outcome::connect_error;
    case net::fetch_status::timeout: return attempt_outcome::timeout;
    case net::fetch_status::overloaded: return attempt_outcome::local_overload;
    // As large again on a retry or from the fallback: the request's doing.
    case net::fetch_status::too_large: return attempt_outcome::client_error;
    default: return attempt_outcome::broken;
  }
}

caf::error error_for(attempt_outcome o, unsigned http_status, const std::string& what,
                     std::chrono::milliseconds timeout) {
  switch (o) {
    case attempt_outcome::timeout:
      return make_error(errc::upstream_timeout, "the model upstream did not answer within " +
                                                  std::to_string(timeout.count()) + " ms");
    case attempt_outcome::local_overload:
      return make_error(errc::overloaded, "too many model calls are waiting; retry shortly");
    case attempt_outcome::throttled:
      return make_error(errc::upstream_unavailable,
                        "the model upstream is throttling requests (HTTP 429); retry later");
    case attempt_outcome::connect_error:
    case attempt_outcome::broken:
      return make_error(errc::upstream_error, "cannot reach the model upstream: " + what);
    default:
      return make_error(errc::upstream_error,
                        "the model upstream answered HTTP " + std::to_string(http_status));
  }
}

void on_done(llm_self* self, std::uint64_t id, net::fetch_status status, unsigned http_status,
             const std::string& body, const std::string& what, const std::string& retry_after) {
  auto& st = self->state;
  auto it = st.calls.find(id);
  if (it == st.calls.end())
    return;
  auto& c = it->second;
  auto& u = st.upstreams[c.upstream];
  auto now = clock::now();
  auto o = outcome_of(status, http_status);
  caf::error parse_err;
  std::string fault_what; ///< a stream's fault, for the mid-stream error
  llm_result result;
  if (o == attempt_outcome::success) {
    if (c.listener && body.empty()) {
      // A stream that ended cleanly: its pieces are the reply, if it is whole.
      if (auto fault = stream_fault(*c.progress, c.relay); !fault.empty()) {
        o = attempt_outcome::broken;
        parse_err = make_error(errc::upstream_error, "the model upstream's answer is unusable: " +
                                                       fault);
        fault_what = std::move(fault);
      }
      result.content = c.progress->streamed;
      result.model = c.progress->model.empty() ? c.model : c.progress->model;
      result.usage = c.progress->usage;
    } else {
      // A whole completion (also an upstream that ignored "stream"). One
      // Parley cannot read (an HTML page from a proxy, a body cut short) is
      // the upstream's failure: retried, then the fallback's turn.
      result = parse_completion(body, c.model, c.relay, parse_err);
      if (parse_err)
        o = attempt_outcome::broken;
      else if (c.relay) {
        // Relayed as it came; streamed, the sink turns it into chunks.
        result.raw = body;
        result.upstream_status = http_status;
      }
    }
  }
  if (st.cfg.metrics)
    st.cfg.metrics->llm_attempt(u.label, outcome_label(o),
                                std::chrono::duration<double>(now - c.attempt_started).count());
  if (o == attempt_outcome::success) {
    u.breaker.on_success();
    report_circuit(self, u);
    if (c.listener && c.progress->forwarded == 0 && !result.content.empty() && result.raw.empty())
      caf::send_as(c.caller, c.listener, delta_atom::value, result.content);
    count_tokens(st, result);
    auto rp = std::move(c.rp);
    st.calls.erase(it);
    rp.deliver(std::move(result));
    return;
  }
  if (counts_as_failure(o))
    u.breaker.on_failure(now);
  else
    u.breaker.on_abandon();
  report_circuit(self, u);
  // The operator's view of a failing upstream (not of a request it refused).
  if (std::int64_t held = 0; o != attempt_outcome::client_error && u.failures.due(held))
    log::line(log::level::warn, "model upstream attempt failed")
      .str("upstream", u.label)
      .str("outcome", outcome_label(o))
      .num("http_status", http_status)
      .str("reason", !fault_what.empty() ? fault_what : !what.empty() ? what
                     : parse_err                                 ? "an answer it cannot read"
                                                                 : "")
      .num("held_back", held)
      .write();
  if (c.relay && status == net::fetch_status::ok && http_status >= 400 && http_status < 500 &&
      http_status != 429) {
    // A gateway call the upstream refused (a bad tool message, a context
    // overflow): the client's error, passed on unchanged (API.md section 5).
    result.raw = body;
    result.upstream_status = http_status;
    result.model = c.model;
    auto rp = std::move(c.rp);
    st.calls.erase(it);
    rp.deliver(std::move(result));
    return;
  }
  if (parse_err)
    c.last = std::move(parse_err);
  else if (status == net::fetch_status::too_large)
    c.last = make_error(errc::upstream_error,
                        "the model upstream's answer is larger than this node accepts: " +
                          what);
  else
    c.last = error_for(o, http_status, what, st.cfg.timeout);
  if (c.progress->forwarded > 0) {
    // Pieces already reached the client: neither a retry nor the fallback
    // may start the reply again.
    auto rp = std::move(c.rp);
    st.calls.erase(it);
    rp.deliver(make_error(errc::upstream_error,
                          "the model upstream broke off the reply mid-stream: " +
                            (fault_what.empty() ? what : fault_what)));
    return;
  }
  if (!tries_the_fallback(o)) {
    // Our own overload or a request the upstream refuses: another upstream
    // would not do better.
    auto rp = std::move(c.rp);
    auto err = std::move(c.last);
    st.calls.erase(it);
    rp.deliver(std::move(err));
    return;
  }
  // Each upstream gets one PARLEY_LLM_TIMEOUT_MS to start its attempts in,
  // from its first; a timed-out attempt spent it (API.md section 8).
  bool in_budget = now - c.upstream_started < st.cfg.timeout;
  if (is_retryable(o) && in_budget && c.attempts < st.cfg.retry.max_attempts) {
    if (auto wait = st.cfg.retry.backoff(c.attempts, parse_retry_after(retry_after), st.rng)) {
      self->delayed_send(self, *wait, retry_atom::value, id);
      return;
    }
  }
  // This upstream is done with: the fallback takes over, if any, with its
  // own attempt timeout and budget.
  ++c.upstream;
  c.attempts = 0;
  next_upstream(self, id);
}

/// The echo model streams its answer word by word.
void echo_pieces(const caf::actor& caller, const caf::actor& listener, const std::string& text) {
  std::size_t start = 0;
  while (start < text.size()) {
    auto space = text.find(' ', start);
    auto end = space == std::string::npos ? text.size() : space + 1;
    caf::send_as(caller, listener, delta_atom::value, text.substr(start, end - start));
    start = end;
  }
}

caf::result<llm_result> start_call(llm_self* self, llm_request req, caf::actor listener) {
  auto& s = self->state;
  // Read before make_response_promise(), which takes the sender out of the
  // current message.
  auto caller = caf::actor_cast<caf::actor>(self->current_sender());
  if (req.model.empty())
    req.model = s.cfg.default_model;
  if (s.upstreams.empty()) {
    // The echo model answers with the newest message, unchanged, and
    // reports usage by Parley's estimate (API.md section 4).
    llm_result r;
    r.model = echo_model;
    if (!req.messages.empty())
      r.content = req.messages.back().content;
    r.usage = estimate_usage(req.messages, r.content);
    count_tokens(s, r);
    if (listener)
      echo_pieces(caller, listener, r.content);
    return r;
  }
  auto id = ++s.next_id;
  call c;
  c.rp = self->make_response_promise();
  c.model = req.model;
  c.relay = !req.raw_body.empty();
  c.body = request_body(req, static_cast<bool>(listener));
  c.started = clock::now();
  c.listener = std::move(listener);
  c.caller = std::move(caller);
  s.calls.emplace(id, std::move(c));
  next_upstream(self, id);
  return caf::delegated<llm_result>{};
}

llm_actor::behavior_type llm_behavior(llm_self* self, llm_config cfg,
                                      std::vector<upstream> upstreams) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.upstreams = std::move(upstreams);
  for (auto& u : st.upstreams)
    report_circuit(self, u);
  return {
    [self](llm_call_atom, llm_request& req) -> caf::result<llm_result> {
      return start_call(self, std::move(req), caf::actor{});
    },
    [self](llm_call_atom, llm_request& req, caf::actor& listener) -> caf::result<llm_result> {
      return start_call(self, std::move(req), std::move(listener));
    },
    [self](retry_atom, std::uint64_t id) {
      auto& s = self->state;
      auto it = s.calls.find(id);
      if (it == s.calls.end())
        return;
      // The circuit may have opened meanwhile (other calls failing too), or
      // the wait (a long Retry-After) used up this upstream's budget.
      auto& u = s.upstreams[it->second.upstream];
      auto now = clock::now();
      bool in_budget = now - it->second.upstream_started < s.cfg.timeout;
      bool allowed = in_budget && u.breaker.allow(now);
      report_circuit(self, u);
      if (allowed)
        return attempt(self, id);
      ++it->second.upstream;
      it->second.attempts = 0;
      next_upstream(self, id);
    },
    // The listener's client went away (PARLEY_STREAM_CANCEL_ON_DISCONNECT):
    // close the upstream stream; the call then fails and nothing is stored.
    [self](cancel_atom) {
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      if (!sender)
        return;
      for (auto& [id, c] : self->state.calls)
        if (c.listener && (c.listener == sender || c.caller == sender))
          c.cancel->store(true);
    },
    [self](llm_done_atom, const llm_attempt_done& d) {
      on_done(self, d.id, static_cast<net::fetch_status>(d.status), d.http_status, d.body,
              d.error, d.retry_after);
    },
  };
}

} // namespace

std::chrono::milliseconds llm_call_bound(const llm_config& cfg) {
  std::size_t upstreams = cfg.base_url.empty() ? 0 : cfg.fallback_base_url.empty() ? 1 : 2;
  return call_time_bound(cfg.timeout, upstreams);
}

llm_actor spawn_llm_actor(caf::actor_system& sys, net::io_runtime& io, const llm_config& cfg) {
  // The clients are made here, not in the actor, so that a bad URL or CA
  // file stops the node with a clear message instead of killing an actor.
  std::vector<upstream> upstreams;
  auto add = [&](const char* setting, const std::string& label, const std::string& base_url) {
    std::string err;
    auto url = net::parse_upstream_url(base_url, err);
    if (!url)
      throw std::invalid_argument(std::string{setting} + ": " + err);
    net::client_options opts;
    opts.pool_size = cfg.pool_size;
    opts.ca_file = cfg.ca_file;
    opts.body_limit = cfg.max_response_bytes;
    try {
      upstreams.push_back(
        upstream{label, std::make_shared<net::http_client>(io, std::move(*url), opts),
                 circuit_breaker{cfg.breaker_threshold, cfg.breaker_cooldown},
                 log::throttle{}});
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string{"PARLEY_LLM_CA_FILE: "} + e.what());
    }
  };
  if (!cfg.base_url.empty()) {
    add("PARLEY_LLM_BASE_URL", "primary", cfg.base_url);
    if (!cfg.fallback_base_url.empty())
      add("PARLEY_LLM_FALLBACK_BASE_URL", "fallback", cfg.fallback_base_url);
  }
  return sys.spawn(llm_behavior, cfg, std::move(upstreams));
}

} // namespace parley

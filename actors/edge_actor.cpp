#include "actors/edge_actor.hpp"

#include <algorithm>
#include <ctime>
#include <functional>
#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/api_render.hpp"
#include "actors/cluster_view.hpp"
#include "actors/instrumented.hpp"
#include "actors/local_bucket.hpp"
#include "actors/vocabulary.hpp"
#include "actors/ratelimit_actor.hpp"
#include "storage/clock.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

using clock = std::chrono::steady_clock;
using call_ptr = std::shared_ptr<http_call>;

constexpr std::size_t key_cache_limit = 100000;

/// A request waiting for a key lookup: called with the record (id 0:
/// unknown) or with the error of the lookup.
using key_waiter = std::function<void(const api_key_record*, const caf::error*)>;

struct cached_key {
  api_key_record rec;
  clock::time_point expires;
};

struct edge_state {
  static inline const char* name = "edge";
  edge_config cfg;
  storage_pool_ptr storage;
  caf::actor registry;
  caf::actor membership;
  view_ptr view;
  std::unordered_map<std::string, cached_key> keys; ///< by key hash
  /// Hashes of tokens storage did not know, until their expiry: a client
  /// repeating a bad token costs no query on the connections that commit
  /// turns. Bounded like `keys`.
  std::unordered_map<std::string, clock::time_point> unknown_keys;
  /// Per client address: lookups of keys not in `keys`, which random keys
  /// are (the negative cache cannot stop those). Its LRU bound keeps the
  /// table small under a flood from many addresses.
  local_bucket auth_lookups{key_cache_limit};
  /// Key lookups under way, by key hash: the requests waiting for each.
  /// At most one entry per request in flight.
  std::unordered_map<std::string, std::vector<key_waiter>> key_lookups;
  health_ptr health;
  std::size_t inflight = 0;
  bool draining = false;
  /// Turns sent to another node's registry, by node, until answered; when
  /// that node goes down they are answered 503 at once.
  std::unordered_map<std::string, std::unordered_map<std::uint64_t, call_ptr>> remote;
  std::uint64_t next_ticket = 0;
  caf::actor ratelimit;
  caf::actor llm;
  /// Decides when the ratelimit actor does not answer in time.
  local_bucket fallback{10000};
  metrics_ptr metrics;
};

using edge_self = instrumented_actor<edge_state>;

void reply(const call_ptr& c, unsigned status, std::string body,
           std::string content_type = "application/json") {
  net::http_response r;
  r.status = status;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  r.headers = c->headers;
  c->out->send(std::move(r));
}

void reply_error(const call_ptr& c, const api_error& e) {
  net::http_response r;
  r.status = http_status(e.code);
  r.body = error_body(e);
  r.headers = c->headers;
  if (has_retry_after(e.code))
    r.headers.emplace_back("Retry-After", std::to_string(c->retry_after > 0 ? c->retry_after : 1));
  c->out->send(std::move(r));
}

void reply_error(const call_ptr& c, const caf::error& e) { reply_error(c, to_api_error(e)); }

api_error not_found_session(const call_ptr& c) {
  return {errc::not_found, "session '" + c->id + "' not found"};
}

/// The registry that should get a turn for `session_id`, and its node.
std::pair<caf::actor, std::string> route_to(edge_self* self, const std::string& session_id) {
  auto& st = self->state;
  auto& owner = st.view->owner(session_id);
  if (owner.id == st.cfg.node_id || !owner.registry)
    return {st.registry, st.cfg.node_id};
  return {owner.registry, owner.id};
}

/// Authenticates a user key (cache, then storage) and continues with the
/// key's record; answers 401 itself.
template <class F>
void with_key(edge_self* self, const call_ptr& c, F&& next) {
  auto& st = self->state;
  if (c->bearer.empty())
    return reply_error(c, {errc::unauthorized, "missing bearer token (Authorization: Bearer <key>)"});
  auto hash = hash_key(c->bearer);
  auto now = clock::now();
  // An expired entry stays until the lookup below answers: a key this node
  // has seen valid is looked up again whatever its address did (a client
  // behind the same address as a flood keeps working).
  bool seen_valid = false;
  if (auto it = st.keys.find(hash); it != st.keys.end()) {
    if (it->second.expires > now)
      return next(it->second.rec);
    seen_valid = true;
  }
  if (auto it = st.unknown_keys.find(hash); it != st.unknown_keys.end()) {
    if (it->second > now)
      return reply_error(c, {errc::unauthorized, "unknown or revoked API key"});
    st.unknown_keys.erase(it);
  }
  key_waiter resume = [c, next = std::forward<F>(next)](const api_key_record* rec,
                                                        const caf::error* err) mutable {
    if (err)
      return reply_error(c, *err);
    if (rec->id == 0)
      return reply_error(c, {errc::unauthorized, "unknown or revoked API key"});
    next(*rec);
  };
  // Requests with a key whose lookup is under way wait for its answer: a
  // burst on one key (every connection of a client after a restart) costs
  // one query, and one token of its address's bucket.
  if (auto it = st.key_lookups.find(hash); it != st.key_lookups.end()) {
    it->second.push_back(std::move(resume));
    return;
  }
  // Any other key costs a query on the connections that commit turns: a
  // flood of random keys from one address is answered here once its
  // bucket is spent. The token is taken before the lookup (so that lookups
  // in flight count too) and given back when the key was valid.
  auto rate = st.cfg.auth_failures_per_min;
  bool charged = !seen_valid && rate > 0;
  if (charged) {
    auto v = st.auth_lookups.take(c->peer, rate, 1, now);
    if (!v.allowed) {
      c->retry_after = std::max(1, (v.retry_after_ms + 999) / 1000);
      return reply_error(c, {errc::rate_limited,
                             "too many unknown API keys from your address; retry after the "
                             "Retry-After seconds with a valid key"});
    }
  }
  st.key_lookups[hash].push_back(std::move(resume));
  auto peer = c->peer;
  auto resume_all = [self, hash](const api_key_record* rec, const caf::error* err) {
    auto it = self->state.key_lookups.find(hash);
    if (it == self->state.key_lookups.end())
      return;
    auto waiting = std::move(it->second);
    self->state.key_lookups.erase(it);
    for (auto& w : waiting)
      w(rec, err);
  };
  self->request(st.storage->any(), st.cfg.storage_timeout, find_key_atom::value, hash)
    .then(
      [self, hash, charged, peer, resume_all](api_key_record& rec) {
        auto& s = self->state;
        if (rec.id == 0) {
          s.keys.erase(hash);
          if (s.unknown_keys.size() >= key_cache_limit)
            s.unknown_keys.clear();
          s.unknown_keys[hash] = clock::now() + s.cfg.key_cache_ttl;
        } else {
          if (charged)
            s.auth_lookups.give_back(peer, s.cfg.auth_failures_per_min, 1);
          if (s.keys.size() >= key_cache_limit)
            s.keys.clear();
          s.keys[hash] = cached_key{rec, clock::now() + s.cfg.key_cache_ttl};
        }
        resume_all(&rec, nullptr);
      },
      [self, charged, peer, resume_all](caf::error& e) {
        // Not the client's failure: the lookup did not happen.
        if (charged)
          self->state.auth_lookups.give_back(peer, self->state.cfg.auth_failures_per_min, 1);
        resume_all(nullptr, &e);
      });
}

/// `GET /admin/v1/sessions/{id}` and `POST .../migrate`: both ask the
/// registry of the node that hosts the session, which follows a recent move.
void handle_admin_session(edge_self* self, const call_ptr& c) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, get_sess_atom::value, c->id)
    .then(
      [self, c](session_record& s) {
        auto registry = route_to(self, c->id).first;
        if (c->route == net::route::admin_session) {
          self->request(registry, std::chrono::seconds(10), where_atom::value, c->id)
            .then([c, s](session_location& w) { reply(c, 200, render_location(s, w)); },
                  [c](caf::error& e) { reply_error(c, e); });
          return;
        }
        self->request(registry, std::chrono::seconds(90), migrate_atom::value, c->id,
                      c->migrate.to)
          .then(
            [c](std::string& node) {
              reply(c, 200, render_object({{"id", c->id}, {"node", node}}));
            },
            [c](caf::error& e) { reply_error(c, e); });
      },
      [c](caf::error& e) { reply_error(c, e); });
}

/// Drops a revoked key (by prefix or id) from the key cache.
void forget_key(edge_self* self, const std::string& prefix_or_id) {
  auto& keys = self->state.keys;
  for (auto it = keys.begin(); it != keys.end();)
    if (it->second.rec.prefix == prefix_or_id || std::to_string(it->second.rec.id) == prefix_or_id)
      it = keys.erase(it);
    else
      ++it;
}

/// `GET /dashboard`: the page itself holds no data (it polls the admin API
/// with the token), is never cached, and may load nothing from elsewhere.
void serve_dashboard(edge_self* self, const call_ptr& c) {
  c->headers.emplace_back("Cache-Control", "no-store");
  c->headers.emplace_back("Content-Security-Policy",
                          "default-src 'none'; script-src 'unsafe-inline'; "
                          "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
                          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
  c->headers.emplace_back("X-Content-Type-Options", "nosniff");
  c->headers.emplace_back("Referrer-Policy", "no-referrer");
  reply(c, 200, std::string{self->state.cfg.dashboard_page}, "text/html; charset=utf-8");
}

void handle_admin(edge_self* self, const call_ptr& c) {
  auto& st = self->state;
  auto& storage = st.storage->any();
  auto timeout = st.cfg.storage_timeout;
  switch (c->route) {
    case net::route::create_api_key: {
      auto secret = generate_api_key();
      self->request(storage, timeout, make_key_atom::value, c->create_key.user, hash_key(secret),
                    key_prefix(secret))
        .then([c, secret](api_key_record& k) { reply(c, 201, render_created_key(k, secret)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    }
    case net::route::revoke_api_key:
      self->request(storage, timeout, revoke_atom::value, c->id)
        .then(
          [self, c](std::int32_t n) {
            if (n == 0)
              return reply_error(c, {errc::not_found, "no API key matches '" + c->id + "'"});
            forget_key(self, c->id);
            // Other nodes drop it from their caches at once; without Redis
            // their cache expiry (2 s) bounds how long it still works there.
            if (self->state.ratelimit)
              self->send(self->state.ratelimit, publish_revoked_atom::value, c->id);
            reply(c, 204, {});
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::cluster_info:
      self->request(st.membership, std::chrono::seconds(5), cluster_atom::value)
        .then(
          [self, c](std::uint64_t version, std::vector<member_info>& ms) {
            // Then every member's figures (the membership actor waits at
            // most its stats timeout for each).
            self->request(self->state.membership, std::chrono::seconds(5), stats_atom::value,
                          cluster_atom::value)
              .then(
                [self, c, version, ms](std::map<std::string, std::string>& stats) {
                  reply(c, 200, render_cluster(self->state.cfg.node_id, version, ms, stats));
                },
                [c](caf::error& e) { reply_error(c, e); });
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::admin_actors:
      return reply(c, 200, render_actors(st.cfg.node_id, actor_figures()));
    case net::route::admin_session:
    case net::route::migrate_session:
      return handle_admin_session(self, c);
    case net::route::dashboard:
      return serve_dashboard(self, c);
    case net::route::drain_node:
      self->request(st.membership, std::chrono::seconds(5), drain_atom::value, c->id)
        .then(
          [c](bool known) {
            if (!known)
              return reply_error(c, {errc::not_found,
                                     "node '" + c->id + "' is not an up member of the cluster"});
            reply(c, 202, render_object({{"node", c->id}, {"status", "leaving"}}));
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    default:
      reply_error(c, {errc::internal, "unexpected admin route"});
  }
}

/// True exactly once per turn: when its answer may still be sent.
bool settle(edge_self* self, const std::string& node, std::uint64_t ticket) {
  auto& st = self->state;
  if (node == st.cfg.node_id)
    return true;
  auto n = st.remote.find(node);
  if (n == st.remote.end() || n->second.erase(ticket) == 0)
    return false;
  if (n->second.empty())
    st.remote.erase(n);
  return true;
}

void on_view(edge_self* self, view_ptr v) {
  auto& st = self->state;
  st.view = std::move(v);
  if (auto* me = st.view->find(st.cfg.node_id); me && me->status == member_status::leaving)
    st.draining = true;
  double up = 0, leaving = 0, down = 0;
  for (auto& m : st.view->members)
    (m.status == member_status::up ? up : m.status == member_status::leaving ? leaving : down) += 1;
  st.metrics->cluster_nodes(up, leaving, down);
  for (auto& m : st.view->members) {
    if (m.status != member_status::down)
      continue;
    auto n = st.remote.find(m.id);
    if (n == st.remote.end())
      continue;
    auto calls = std::move(n->second);
    st.remote.erase(n);
    for (auto& [ticket, c] : calls) {
      --st.inflight;
      if (c->sink) {
        self->send(c->sink, gone_atom::value);
        continue;
      }
      reply_error(c, {errc::session_moved, "node '" + m.id + "' hosting session '" + c->id +
                                             "' went down; retry with the same "
                                             "client_message_id"});
    }
  }
}

bool known_before_turn(errc code) {
  return code == errc::session_busy || code == errc::not_found || code == errc::conflict ||
         code == errc::overloaded;
}

/// A streamed turn's sink: it asks for the turn itself, so the reply's
/// pieces and the final turn_reply come from the same session actor and
/// arrive in order; it writes them as Server-Sent Events as they come, then
/// tells the edge it is done. An error known before the turn started (busy,
/// not found, conflict) is a plain HTTP error; a later one an `error` event.
struct sink_state {
  static inline const char* name = "stream_sink";
  call_ptr c;
  bool started = false;
  bool done = false;
  bool cancel = false;      ///< cancel the turn when the client is gone
  bool cancel_sent = false;
};

caf::behavior stream_sink(instrumented_actor<sink_state>* self, call_ptr c, caf::actor edge,
                          caf::actor registry, turn_request t, std::string node,
                          std::uint64_t ticket, std::chrono::milliseconds timeout, bool cancel) {
  self->state.c = std::move(c);
  self->state.cancel = cancel;
  auto start = [self] {
    auto& st = self->state;
    if (st.started)
      return;
    st.started = true;
    net::http_response head;
    head.status = 200;
    head.content_type = "text/event-stream";
    head.headers = st.c->headers;
    st.c->out->start_stream(std::move(head));
  };
  auto end = [self, edge, node, ticket] {
    auto& st = self->state;
    if (st.done)
      return;
    st.done = true;
    st.c->out->finish();
    self->send(edge, finished_atom::value, node, ticket);
    self->quit();
  };
  auto fail = [self, start, end](const api_error& err, bool plain_if_not_started) {
    auto& st = self->state;
    if (st.done)
      return;
    if (!st.started && (plain_if_not_started || known_before_turn(err.code))) {
      st.done = true;
      reply_error(st.c, err);
      self->send(caf::actor_cast<caf::actor>(self), finished_atom::value);
      return;
    }
    start();
    st.c->out->write(render_error_sse(err));
    end();
  };
  t.sink = caf::actor_cast<caf::actor>(self);
  self->request(registry, timeout, std::move(t))
    .then(
      [self, start, end](turn_reply& r) {
        start();
        self->state.c->out->write(render_done_sse(r));
        end();
      },
      [fail](caf::error& e) { fail(to_api_error(e), false); });
  return {
    [self, start](delta_atom, std::string& piece) {
      auto& st = self->state;
      if (st.done)
        return;
      start();
      st.c->out->write(render_delta_sse(piece));
      if (st.cancel && !st.cancel_sent && st.c->out->closed()) {
        // The session actor sent this piece: it stops the model call.
        st.cancel_sent = true;
        self->send(caf::actor_cast<caf::actor>(self->current_sender()), cancel_atom::value);
      }
    },
    // The node hosting the session went down (from the edge).
    [fail, node](gone_atom) {
      fail({errc::session_moved, "node '" + node + "' hosting the session went down; retry with "
                                                   "the same client_message_id"},
           true);
    },
    // After a plain error answer: report and go.
    [self, edge, node, ticket](finished_atom) {
      self->send(edge, finished_atom::value, node, ticket);
      self->quit();
    },
  };
}

void handle_turn(edge_self* self, const call_ptr& c, const std::string& user) {
  auto& st = self->state;
  if (st.inflight >= st.cfg.max_inflight) {
    st.metrics->shed("overloaded");
    return reply_error(c, {errc::overloaded, "this node has too many turns in flight; retry"});
  }
  ++st.inflight;
  turn_request t{c->id, user, std::move(c->post_message.content),
                 std::move(c->post_message.client_message_id), c->request_id, 0, caf::actor{}};
  auto [registry, node] = route_to(self, c->id);
  auto ticket = ++st.next_ticket;
  if (node != st.cfg.node_id)
    st.remote[node].emplace(ticket, c);
  if (c->stream) {
    c->sink = self->spawn(stream_sink, c, caf::actor_cast<caf::actor>(self), registry,
                          std::move(t), node, ticket, st.cfg.turn_timeout,
                          st.cfg.cancel_on_disconnect);
    return;
  }
  self->request(registry, st.cfg.turn_timeout, std::move(t))
    .then(
      [self, c, node = node, ticket](turn_reply& r) {
        if (!settle(self, node, ticket))
          return;
        --self->state.inflight;
        reply(c, 200, render_turn(r));
      },
      [self, c, node = node, ticket](caf::error& e) {
        if (!settle(self, node, ticket))
          return;
        --self->state.inflight;
        auto err = to_api_error(e);
        if (err.code == errc::session_busy)
          self->state.metrics->shed("session_busy");
        reply_error(c, err);
      });
}

/// The stateless gateway's streamed answer: OpenAI chunks as the llm actor
/// sends the pieces (the pieces and the result come from it, in order),
/// then `data: [DONE]`. An error before the first piece is a plain HTTP
/// error in OpenAI's shape; after it, one `data:` line with the error.
struct gateway_sink_state {
  static inline const char* name = "gateway_sink";
  call_ptr c;
  std::string id;
  std::int64_t created = 0;
  std::string model;
  bool started = false;
  bool cancel = false;
  bool cancel_sent = false;
};

caf::behavior gateway_sink(instrumented_actor<gateway_sink_state>* self, call_ptr c,
                           caf::actor edge, caf::actor llm, llm_request req,
                           std::chrono::milliseconds timeout, bool cancel) {
  auto& st = self->state;
  st.c = std::move(c);
  st.cancel = cancel;
  st.id = "chatcmpl-" + random_hex(12);
  st.created = static_cast<std::int64_t>(std::time(nullptr));
  st.model = req.model;
  auto start = [self] {
    auto& s = self->state;
    if (s.started)
      return;
    s.started = true;
    net::http_response head;
    head.content_type = "text/event-stream";
    head.headers = s.c->headers;
    s.c->out->start_stream(std::move(head));
    s.c->out->write(render_completion_chunk(s.id, s.created, s.model, nullptr, true, false));
  };
  auto end = [self, edge] {
    self->state.c->out->finish();
    self->send(edge, finished_atom::value, std::string{}, std::uint64_t{0});
    self->quit();
  };
  self->request(llm, timeout, llm_call_atom::value, std::move(req),
                caf::actor_cast<caf::actor>(self))
    .then(
      [self, start, end](llm_result& r) {
        auto& s = self->state;
        s.model = r.model;
        start();
        s.c->out->write(render_completion_chunk(s.id, s.created, s.model, nullptr, false, true));
        s.c->out->write("data: [DONE]\n\n");
        end();
      },
      [self, edge, end](caf::error& e) {
        auto& s = self->state;
        auto err = to_api_error(e);
        if (!s.started) {
          reply_error(s.c, err);
          self->send(edge, finished_atom::value, std::string{}, std::uint64_t{0});
          return self->quit();
        }
        s.c->out->write("data: " + error_body(err) + "\n\n");
        end();
      });
  return {
    [self, start, llm](delta_atom, std::string& piece) {
      auto& s = self->state;
      start();
      s.c->out->write(render_completion_chunk(s.id, s.created, s.model, &piece, false, false));
      if (s.cancel && !s.cancel_sent && s.c->out->closed()) {
        s.cancel_sent = true;
        self->send(llm, cancel_atom::value);
      }
    },
  };
}

/// `POST /v1/chat/completions`: no session, the same rate limit, in-flight
/// cap, retries, breaker and fallback as a turn (all in the llm actor).
void handle_chat_completion(edge_self* self, const call_ptr& c) {
  auto& st = self->state;
  if (st.inflight >= st.cfg.max_inflight) {
    st.metrics->shed("overloaded");
    return reply_error(c, {errc::overloaded, "this node has too many requests in flight; retry"});
  }
  ++st.inflight;
  llm_request req;
  req.model = c->chat.model.value_or(st.cfg.default_model);
  for (auto& m : c->chat.messages)
    req.messages.push_back({m.role, m.content});
  req.extra_json = c->chat.extra_json;
  if (c->stream) {
    self->spawn(gateway_sink, c, caf::actor_cast<caf::actor>(self), st.llm, std::move(req),
                st.cfg.turn_timeout, st.cfg.cancel_on_disconnect);
    return;
  }
  self->request(st.llm, st.cfg.turn_timeout, llm_call_atom::value, std::move(req))
    .then(
      [self, c](llm_result& r) {
        --self->state.inflight;
        reply(c, 200, render_completion("chatcmpl-" + random_hex(12),
                                        static_cast<std::int64_t>(std::time(nullptr)), r));
      },
      [self, c](caf::error& e) {
        --self->state.inflight;
        reply_error(c, e);
      });
}

/// The cluster-wide rate limit of chat requests: the ratelimit actor asks
/// Redis (or its per-node bucket); if it does not answer within 60 ms the
/// edge's own bucket decides, so no request waits on Redis for longer.
template <class F>
void with_rate_limit(edge_self* self, const call_ptr& c, const api_key_record& key, F&& next) {
  auto& st = self->state;
  auto rate = static_cast<std::int32_t>(st.cfg.rate_limit_per_min);
  if (rate <= 0 || !st.ratelimit)
    return next();
  auto live = st.cfg.redis ? static_cast<std::int32_t>(std::max<std::size_t>(
                               1, st.view->live_ids().size()))
                           : 1;
  // The prefix is random, so clusters with separate databases sharing one
  // Redis do not share buckets; the id keeps it unique within one.
  auto key_id = key.prefix + ":" + std::to_string(key.id);
  auto apply = [self, c, next = std::forward<F>(next)](const rate_decision& d) mutable {
    c->headers.emplace_back("X-RateLimit-Limit", std::to_string(d.limit));
    c->headers.emplace_back("X-RateLimit-Remaining", std::to_string(d.remaining));
    if (d.allowed)
      return next();
    self->state.metrics->rate_limited();
    c->retry_after = std::max(1, (d.retry_after_ms + 999) / 1000);
    reply_error(c, {errc::rate_limited, "rate limit of " + std::to_string(d.limit) +
                                          " chat requests per minute reached for this API key; "
                                          "retry after " +
                                          std::to_string(c->retry_after) + " s"});
  };
  self->request(st.ratelimit, std::chrono::milliseconds(60), rate_check_atom::value, key_id, rate,
                live, rate_check_deadline(std::chrono::milliseconds(40)))
    .then([apply](rate_decision& d) mutable { apply(d); },
          [self, apply, key_id, rate, live](caf::error&) mutable {
            auto v = self->state.fallback.take(key_id, rate, live,
                                               local_bucket::clock::now());
            rate_decision d;
            d.allowed = v.allowed;
            d.limit = v.limit;
            d.remaining = v.remaining;
            d.retry_after_ms = v.retry_after_ms;
            apply(d);
          });
}

void handle_user(edge_self* self, const call_ptr& c, const api_key_record& key) {
  auto& st = self->state;
  auto timeout = st.cfg.storage_timeout;
  auto& user = key.user_id;
  switch (c->route) {
    case net::route::create_session: {
      session_record s;
      s.id = random_hex(16);
      s.user_id = user;
      s.created_at = now_rfc3339();
      s.system_prompt = c->create_session.system_prompt.value_or("");
      s.model = c->create_session.model.value_or(st.cfg.default_model);
      s.metadata_json = c->create_session.metadata_json;
      auto& storage = st.storage->for_session(s.id);
      self->request(storage, timeout, new_sess_atom::value, std::move(s))
        .then([c](session_record& r) { reply(c, 201, render_session(r)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    }
    case net::route::list_sessions:
      self->request(st.storage->any(), timeout, list_sess_atom::value, user, c->limit, c->cursor)
        .then([c](session_page& p) { reply(c, 200, render_session_page(p)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::get_session:
      self->request(st.storage->any(), timeout, get_sess_atom::value, c->id, user)
        .then([c](session_record& r) { reply(c, 200, render_session(r)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::delete_session:
      self->request(st.storage->for_session(c->id), timeout, del_sess_atom::value, c->id, user)
        .then(
          [self, c](bool deleted) {
            if (!deleted)
              return reply_error(c, not_found_session(c));
            self->send(route_to(self, c->id).first, gone_atom::value, c->id);
            reply(c, 204, {});
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::post_message:
      return with_rate_limit(self, c, key,
                             [self, c, user = user] { handle_turn(self, c, user); });
    case net::route::chat_completions:
      return with_rate_limit(self, c, key, [self, c] { handle_chat_completion(self, c); });
    case net::route::list_models: {
      std::vector<std::string> models{st.cfg.default_model};
      return reply(c, 200, render_models(models));
    }
    case net::route::list_messages:
      self->request(st.storage->any(), timeout, list_msg_atom::value, c->id, user, c->after,
                    c->limit)
        .then([c](message_page& p) { reply(c, 200, render_message_page(p)); },
              [c](caf::error& e) { reply_error(c, e); });
      return;
    case net::route::post_feedback: {
      auto& fb = c->feedback;
      feedback_request fr{c->id, user, c->seq, static_cast<std::int32_t>(fb.rating), {}};
      if (fb.comment)
        fr.comment = *fb.comment;
      self->request(st.storage->any(), timeout, feedback_atom::value, std::move(fr))
        .then(
          [c](feedback_outcome o) {
            switch (o) {
              case feedback_outcome::stored:
                return reply(c, 201,
                             std::string{"{\"session_id\":\""} + c->id + "\",\"seq\":" +
                               std::to_string(c->seq) + ",\"rating\":" +
                               std::to_string(c->feedback.rating) + "}");
              case feedback_outcome::no_session:
                return reply_error(c, not_found_session(c));
              case feedback_outcome::no_message:
                return reply_error(c, {errc::not_found, "message " + std::to_string(c->seq) +
                                                          " not found in session '" + c->id + "'"});
              case feedback_outcome::not_assistant:
                return reply_error(c, {errc::invalid_request,
                                       "feedback is for assistant messages; message " +
                                         std::to_string(c->seq) + " is a user message"});
            }
          },
          [c](caf::error& e) { reply_error(c, e); });
      return;
    }
    default:
      reply_error(c, {errc::internal, "unexpected route"});
  }
}

/// `/readyz`: PostgreSQL answers, every core actor answers, the node has
/// joined and is not leaving. PostgreSQL's state is the supervisor's last
/// check (once a second), so a probe costs no round trip. Redis is reported
/// ("ok", "down", or "off" when not configured) but never makes the node
/// unready: chat goes on with per-node limits without it.
void handle_ready(edge_self* self, const call_ptr& c) {
  auto& st = self->state;
  std::string cluster = st.draining ? "draining" : !st.view->joined ? "joining" : "ok";
  bool pg_ok = !st.health || st.health->postgres_ok();
  auto failing = st.health ? st.health->failing() : std::vector<std::string>{};
  auto answer = [c, cluster, pg_ok, failing](const std::string& redis) {
    bool ready = pg_ok && cluster == "ok" && failing.empty();
    std::string body = std::string{"{\"status\":\""} + (ready ? "ready" : "unavailable") +
                       "\",\"checks\":{\"postgres\":\"" + (pg_ok ? "ok" : "down") +
                       "\",\"redis\":\"" + redis + "\",\"cluster\":\"" + cluster +
                       "\",\"actors\":\"" + (failing.empty() ? "ok" : "failing") + "\"}}";
    reply(c, ready ? 200 : 503, std::move(body));
  };
  if (!st.cfg.redis || !st.ratelimit)
    return answer("off");
  self->request(st.ratelimit, std::chrono::milliseconds(500), redis_status_atom::value)
    .then([answer](bool ok) { answer(ok ? "ok" : "down"); },
          [answer](caf::error&) { answer("down"); });
}

bool is_admin_route(net::route r) {
  switch (r) {
    case net::route::create_api_key:
    case net::route::revoke_api_key:
    case net::route::cluster_info:
    case net::route::admin_actors:
    case net::route::admin_session:
    case net::route::migrate_session:
    case net::route::drain_node:
    case net::route::dashboard:
      return true;
    default:
      return false;
  }
}

/// One request from the HTTP layer: readiness, then the admin token or a
/// user key, then the route's handler.
void dispatch(edge_self* self, const call_ptr& c) {
  if (c->route == net::route::readyz)
    return handle_ready(self, c);
  bool admin = is_admin_route(c->route);
  if (c->route == net::route::dashboard && c->bearer.empty())
    return reply_error(c, {errc::unauthorized,
                           "the dashboard needs the admin token: open "
                           "/dashboard?token=<PARLEY_ADMIN_TOKEN> or send "
                           "Authorization: Bearer <PARLEY_ADMIN_TOKEN>"});
  if (admin && !c->bearer.empty() &&
      constant_time_equal(c->bearer, self->state.cfg.admin_token)) {
    if (c->early_error)
      return reply_error(c, *c->early_error);
    return handle_admin(self, c);
  }
  with_key(self, c, [self, c, admin](const api_key_record& key) {
    if (admin)
      return reply_error(c, {errc::forbidden, "this route needs the admin token"});
    if (c->early_error)
      return reply_error(c, *c->early_error);
    handle_user(self, c, key);
  });
}

caf::behavior edge_actor(edge_self* self, edge_config cfg, edge_peers peers) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.storage = std::move(peers.storage);
  st.registry = std::move(peers.registry);
  st.membership = std::move(peers.membership);
  st.ratelimit = std::move(peers.ratelimit);
  st.llm = std::move(peers.llm);
  st.metrics = peers.metrics ? std::move(peers.metrics) : std::make_shared<node_metrics>();
  st.health = std::move(peers.health);
  member_info me;
  me.id = st.cfg.node_id;
  me.status = member_status::up;
  me.registry = st.registry;
  st.view = cluster_view::alone(std::move(me));
  if (st.membership)
    self->send(st.membership, view_atom::value, caf::actor_cast<caf::actor>(self));
  return {
    [self](http_call& call) {
      auto c = std::make_shared<http_call>(std::move(call));
      // An exception here is a broken invariant of Parley, never the
      // client's doing (input was validated on the asio thread): answer
      // this request, log it with its id, and go on serving the others.
      try {
        dispatch(self, c);
      } catch (const std::exception& e) {
        actor_fault(edge_state::name, e.what(), "http_call", c->request_id);
        reply_error(c, {errc::internal, "internal error while handling this request (request id " +
                                          c->request_id + "); it was logged"});
      }
    },
    [self](view_atom, view_ptr& v) { on_view(self, std::move(v)); },
    // A streamed turn ended (its sink answered the client).
    [self](finished_atom, const std::string& node, std::uint64_t ticket) {
      if (node.empty() || settle(self, node, ticket))
        --self->state.inflight;
    },
    [self](drain_atom) { self->state.draining = true; },
    [self](key_revoked_atom, const std::string& prefix_or_id) { forget_key(self, prefix_or_id); },
  };
}

} // namespace

caf::actor spawn_edge_actor(caf::actor_system& sys, const edge_config& cfg, edge_peers peers) {
  return sys.spawn(edge_actor, cfg, std::move(peers));
}

} // namespace parley

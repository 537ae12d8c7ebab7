// The edge's OpenAI gateway (`POST /v1/chat/completions`, `GET /v1/models`)
// and the per-key rate limit of chat requests with its fallback bucket.

#include <algorithm>
#include <ctime>

#include "actors/edge/api_render.hpp"
#include "actors/edge/edge_state.hpp"
#include "actors/edge/stream_sink.hpp"
#include "runtime/rules/key_policy.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

/// No session: the same in-flight cap as a turn, and the same retries,
/// breaker and fallback (all in the llm actor). The client's request goes
/// upstream whole, `model` defaulted; the answer comes back as the upstream
/// gave it (API.md section 5).
void start_completion(edge_self* self, const call_ptr& c, const std::string& user_id) {
  auto& st = self->state;
  auto admitted = admit(self, c, "requests");
  if (!admitted)
    return;
  // A completed call's usage joins the daily totals, off the request path
  // (a storage actor sums and writes it; storage_actor.hpp).
  completion_listener on_result = [storage = st.storage, user_id,
                                   metrics = st.metrics](const llm_result& r) {
    if (storage)
      record_usage(*storage, user_id, r.model, r.usage, metrics.get());
  };
  auto& chat = body_of<net::chat_completion_body>(c);
  llm_request req;
  req.model = chat.model.value_or(st.cfg.default_model);
  for (auto& m : chat.messages)
    req.messages.push_back({std::move(m.role), std::move(m.content)});
  req.raw_body = chat.model ? std::move(chat.upstream_body)
                            : net::with_model(chat.upstream_body, req.model);
  chat.upstream_body.clear();
  if (c->stream) {
    auto ticket = ++st.next_ticket;
    st.streams.emplace(ticket, std::move(*admitted));
    spawn_completion_sink(self->home_system(), {c, caf::actor_cast<edge_actor>(self), {}, ticket},
                          st.llm, std::move(req), chat.include_usage, st.cfg.turn_timeout,
                          st.cfg.cancel_on_disconnect, std::move(on_result));
    return;
  }
  auto held = std::make_shared<inflight_gate::ticket>(std::move(*admitted));
  self->request(st.llm, st.cfg.turn_timeout, llm_call_atom::value, std::move(req))
    .then(
      [c, held, on_result](llm_result& r) {
        held->reset();
        // A completed call's usage counts; an upstream 4xx passed through is
        // the client's error, not a call.
        if (r.upstream_status < 400)
          on_result(r);
        // The upstream's answer (or its 4xx) as it came; the echo model's
        // in OpenAI's shape.
        if (r.upstream_status != 0)
          return reply(c, r.upstream_status, std::move(r.raw));
        reply(c, 200, render_completion("chatcmpl-" + random_hex(12),
                                        static_cast<std::int64_t>(std::time(nullptr)), r));
      },
      [c, held](caf::error& e) {
        held->reset();
        reply_error(c, e);
      });
}

} // namespace

void handle_chat_completions(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto model = body_of<net::chat_completion_body>(c).model.value_or(self->state.cfg.default_model);
  if (!model_allowed(key->models, model))
    return reply_error(c, {errc::forbidden, model_refusal(key->models, model)});
  with_rate_limit(self, c, *key,
                  [self, c, user = key->user_id] { start_completion(self, c, user); });
}

void handle_list_models(edge_self* self, const call_ptr& c, const api_key_record*) {
  std::vector<std::string> models{self->state.cfg.default_model};
  reply(c, 200, render_models(models));
}

/// The cluster-wide rate limit of chat requests: the ratelimit actor asks
/// Redis (or its per-node bucket); if it does not answer within 60 ms the
/// edge's own bucket decides, so no request waits on Redis for longer.
void with_rate_limit(edge_self* self, const call_ptr& c, const api_key_record& key,
                     std::function<void()> next) {
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
  auto apply = [self, c, next = std::move(next)](const rate_decision& d) {
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
  self->request(st.ratelimit, std::chrono::milliseconds(60), rate_check_atom::value,
                rate_check_request{key_id, rate, live,
                                   rate_check_deadline(std::chrono::milliseconds(40))})
    .then([apply](rate_decision& d) { apply(d); },
          [self, apply, key_id, rate, live](caf::error&) {
            // The fallback: this node's own bucket decides.
            auto v = self->state.fallback.take(key_id, rate, live, local_bucket::clock::now());
            rate_decision d;
            d.allowed = v.allowed;
            d.limit = v.limit;
            d.remaining = v.remaining;
            d.retry_after_ms = v.retry_after_ms;
            apply(d);
          });
}

} // namespace parley

// The edge's OpenAI gateway (`POST /v1/chat/completions`, `GET /v1/models`).

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
void start_completion(edge_self* self, const call_ptr& c, const std::string& user_id,
                      budget_hold_ptr budget) {
  auto& st = self->state;
  auto admitted = admit(self, c, "requests");
  if (!admitted)
    return;
  // A completed call's usage joins the daily totals, off the request path
  // (a storage actor sums and writes it; storage_actor.hpp), and settles
  // the key's budget (edge_limits.cpp; a call that ends without a result
  // gives its reservation back when the last copy of `budget` goes).
  completion_listener on_result = [storage = st.storage, user_id, metrics = st.metrics,
                                   budget](const llm_result& r) {
    if (budget)
      budget->settle(r.usage);
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
  timed_request<llm_result>(
      self, st.llm, st.cfg.turn_timeout,
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
      },
      llm_call_atom::value, std::move(req));
}

} // namespace

void handle_chat_completions(edge_self* self, const call_ptr& c, const api_key_record* key) {
  auto model = body_of<net::chat_completion_body>(c).model.value_or(self->state.cfg.default_model);
  if (!model_allowed(key->models, model))
    return reply_error(c, {errc::forbidden, model_refusal(key->models, model)});
  with_rate_limit(self, c, *key, [c] { return completion_reservation(c); },
                  [self, c, user = key->user_id](budget_hold_ptr budget) {
                    start_completion(self, c, user, std::move(budget));
                  });
}

void handle_list_models(edge_self* self, const call_ptr& c, const api_key_record*) {
  std::vector<std::string> models{self->state.cfg.default_model};
  reply(c, 200, render_models(models));
}

} // namespace parley

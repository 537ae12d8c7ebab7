// The edge's limits of chat requests (turns and completions): the per-key
// rate limit with its fallback bucket, and the key's daily token budget
// with the hold that settles a call's spend when it ends.

#include <algorithm>
#include <chrono>

#include <caf/send.hpp>
#include <nlohmann/json.hpp>

#include "actors/edge/edge_state.hpp"
#include "runtime/rules/token_budget.hpp"
#include "runtime/rules/token_usage.hpp"

namespace parley {

namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

api_error budget_refusal(const call_ptr& c, const rate_decision& d) {
  return {errc::budget_exceeded,
          "the daily token budget of this API key is spent (" + std::to_string(d.spent) + " of " +
            std::to_string(d.budget) +
            " tokens used today, UTC); it renews at 00:00 UTC; retry after " +
            std::to_string(c->retry_after) + " s"};
}

/// The completion a request may produce: its max_completion_tokens, else
/// its max_tokens (OpenAI's older name), when one is a non-negative integer,
/// else the default allowance; times `n` (choices) when it names one.
/// `request` is the whole request (chat_completion_body::upstream_body);
/// parsed only when it may name one of them, and only for keys with a budget.
std::int64_t requested_completion(const std::string& request) {
  if (request.find("max_") == std::string::npos && request.find("\"n\"") == std::string::npos)
    return default_completion_allowance;
  auto j = nlohmann::json::parse(request, nullptr, false);
  if (!j.is_object())
    return default_completion_allowance;
  std::int64_t each = default_completion_allowance;
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (auto it = j.find(name); it != j.end() && it->is_number_integer() && *it >= 0)
      each = std::min<std::int64_t>(it->get<std::int64_t>(), max_call_tokens);
  std::int64_t choices = 1;
  if (auto it = j.find("n"); it != j.end() && it->is_number_integer() && *it >= 1)
    choices = std::min<std::int64_t>(it->get<std::int64_t>(), 128);
  return each * choices;
}

} // namespace

std::int64_t completion_reservation(const call_ptr& c) {
  auto& chat = body_of<net::chat_completion_body>(c);
  std::int64_t prompt = 0;
  for (auto& m : chat.messages)
    prompt += estimate_message_tokens(m.content);
  return budget_reservation(prompt, requested_completion(chat.upstream_body));
}

budget_hold::budget_hold(ratelimit_actor rl, std::shared_ptr<budget_ledger> ledger,
                         metrics_ptr metrics, budget_settlement s)
  : rl_(std::move(rl)), ledger_(std::move(ledger)), metrics_(std::move(metrics)),
    s_(std::move(s)) {}

budget_hold::~budget_hold() {
  // Ended without a result (failed, timed out, cancelled): a refund.
  if (!done_.exchange(true))
    send(std::move(s_));
}

void budget_hold::settle(const token_usage& u) {
  if (done_.exchange(true))
    return;
  auto s = s_;
  // A usage the upstream did not report keeps the reservation as the spend.
  s.actual = u.known ? u.prompt_tokens + u.completion_tokens : s.reserved;
  send(std::move(s));
}

void budget_hold::send(budget_settlement s) {
  if (!ledger_)
    return caf::anon_send(rl_, settle_atom::value, std::move(s));
  // The first of a batch tells the ratelimit actor; the others wait in the
  // ledger for the same message.
  switch (ledger_->add(std::move(s))) {
    case budget_ledger::queued::first:
      caf::anon_send(rl_, settle_batch_atom::value);
      break;
    case budget_ledger::queued::later:
      break;
    case budget_ledger::queued::dropped:
      if (metrics_)
        metrics_->budget_settlement_dropped();
      break;
  }
}

/// The cluster-wide rate limit and daily budget of chat requests: the
/// ratelimit actor asks Redis (or its per-node bucket and counters), both in
/// one round trip; if it does not answer within 60 ms the edge's own bucket
/// decides and the budget is not checked (the call's spend still counts),
/// so no request waits on Redis for longer.
void with_rate_limit(edge_self* self, const call_ptr& c, const api_key_record& key,
                     const std::function<std::int64_t()>& reserve,
                     limited_continuation next) {
  auto& st = self->state;
  auto rate = static_cast<std::int32_t>(st.cfg.rate_limit_per_min);
  auto budget = effective_budget(key.token_budget_per_day, st.cfg.token_budget_per_day);
  if ((rate <= 0 && budget <= 0) || !st.ratelimit)
    return next(nullptr);
  auto live = st.cfg.redis ? static_cast<std::int32_t>(std::max<std::size_t>(
                               1, st.view->live_ids().size()))
                           : 1;
  // The prefix is random, so clusters with separate databases sharing one
  // Redis do not share buckets; the id keeps it unique within one.
  auto key_id = key.prefix + ":" + std::to_string(key.id);
  auto day = utc_day(unix_now());
  auto apply = [self, c, rate, key_id, day, next = std::move(next)](const rate_decision& d) {
    if (rate > 0) {
      c->headers.emplace_back("X-RateLimit-Limit", std::to_string(d.limit));
      c->headers.emplace_back("X-RateLimit-Remaining", std::to_string(d.remaining));
    }
    if (!d.budget_ok) {
      self->state.metrics->budget_exceeded();
      c->retry_after = static_cast<int>(seconds_to_next_utc_day(unix_now()));
      return reply_error(c, budget_refusal(c, d));
    }
    if (!d.allowed) {
      self->state.metrics->rate_limited();
      c->retry_after = std::max(1, (d.retry_after_ms + 999) / 1000);
      return reply_error(c, {errc::rate_limited, "rate limit of " + std::to_string(d.limit) +
                                                   " chat requests per minute reached for this "
                                                   "API key; retry after " +
                                                   std::to_string(c->retry_after) + " s"});
    }
    budget_hold_ptr hold;
    if (d.budget > 0)
      hold = std::make_shared<budget_hold>(self->state.ratelimit, self->state.ledger,
                                           self->state.metrics,
                                           budget_settlement{key_id, day, d.reserved, 0,
                                                             d.redis_ok});
    next(std::move(hold));
  };
  rate_check_request req{key_id, rate, live, rate_check_deadline(std::chrono::milliseconds(40))};
  req.budget = budget;
  req.reserve = budget > 0 ? reserve() : 0;
  req.day = day;
  // A budget-only call whose key's lease holds its reservation needs
  // neither the ratelimit actor nor Redis (ratelimit_actor.hpp: Leases).
  if (rate <= 0 && st.ledger)
    if (auto d = st.ledger->take(key_id, day, budget, req.reserve))
      return apply(*d);
  timed_request<rate_decision>(
    self, st.ratelimit, std::chrono::milliseconds(60), [apply](rate_decision& d) { apply(d); },
    [self, apply, key_id, rate, live, budget](caf::error&) {
      // The fallback: this node's own bucket decides.
      auto v = self->state.fallback.take(key_id, rate, live, local_bucket::clock::now());
      rate_decision d;
      d.allowed = v.allowed;
      d.limit = v.limit;
      d.remaining = v.remaining;
      d.retry_after_ms = v.retry_after_ms;
      d.budget = budget;
      apply(d);
    },
    rate_check_atom::value, req);
}

} // namespace parley

#pragma once
// The node's metrics (API.md section 7): one prometheus-cpp registry whose
// families are created once at start-up. Counters, gauges and histograms
// are atomics, so any thread (asio, actors) may update them; `scrape`
// renders the Prometheus text exposition for `GET /metrics`.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace parley {

class node_metrics {
public:
  node_metrics();
  ~node_metrics();
  node_metrics(const node_metrics&) = delete;
  node_metrics& operator=(const node_metrics&) = delete;

  /// A request was read and routed: `parley_http_requests_in_flight` until
  /// its answer is counted by `http_request`.
  void http_started();
  /// One answered HTTP request: `parley_http_requests_total{route,code}` and
  /// `parley_http_request_duration_seconds{route}`.
  void http_request(std::string_view route, unsigned status, double seconds);
  /// `parley_turns_in_flight`: session turns and gateway calls admitted and
  /// not yet answered (what PARLEY_MAX_INFLIGHT caps; the autoscaler's
  /// per-pod load signal, deploy/k8s/hpa.yaml).
  void turns_in_flight(std::size_t n);
  /// A chat request refused by the rate limit: `parley_rate_limited_total`.
  void rate_limited();
  /// A chat request refused because its key's daily token budget is spent:
  /// `parley_budget_exceeded_total`.
  void budget_exceeded();
  /// A finished call's settlement dropped because the node's budget ledger
  /// was full (actors/budget_ledger.hpp): `parley_budget_settlements_dropped_total`.
  void budget_settlement_dropped();
  /// A turn refused by load shedding: `parley_load_shed_total{reason}` with
  /// reason "overloaded" (node in-flight cap) or "session_busy" (session queue).
  void shed(std::string_view reason);
  /// `parley_cluster_nodes{status}` as this node sees the cluster.
  void cluster_nodes(double up, double leaving, double down);

  /// One attempt at a model upstream: `parley_llm_requests_total{upstream,outcome}`
  /// and `parley_llm_latency_seconds{upstream}`.
  void llm_attempt(std::string_view upstream, std::string_view outcome, double seconds);
  /// One completed model call's usage (upstream or echo; session turn or
  /// gateway call): `parley_llm_tokens_total{direction="prompt"|"completion"}`.
  void llm_tokens(std::int64_t prompt, std::int64_t completion);
  /// Gateway calls whose usage was not added to the daily totals (backlog
  /// full, too many keys waiting, PostgreSQL failed while adding it):
  /// `parley_usage_dropped_total`.
  void usage_dropped(std::uint64_t calls);
  /// `parley_llm_circuit_state{upstream}`: 0 closed, 1 open, 2 half-open.
  void llm_circuit(std::string_view upstream, int state);

  /// One group commit: `parley_storage_batch_size` and `parley_storage_commit_seconds`.
  void storage_commit(std::size_t turns, double seconds);
  /// Session actors: `parley_sessions_active` (+1/-1) and the lifecycle
  /// counters `parley_session_activations_total`,
  /// `parley_session_passivations_total`, `parley_session_migrations_total`.
  void session_started();
  void session_stopped();
  void session_activated();
  void session_passivated();
  void session_migrated();

  /// `parley_log_dropped_total`: set to `total`, the log lines lost so far
  /// because the log queue was full.
  void log_lines_dropped(std::uint64_t total);

  /// The Prometheus text format of every metric (these and the actor
  /// figures of runtime/telemetry/actor_stats.hpp).
  std::string scrape() const;

  /// This node's figures as one JSON object, for the per-node "stats" of
  /// `GET /admin/v1/cluster` and the dashboard: uptime, HTTP totals,
  /// sessions, actor types, upstreams, storage, refusals, RSS. Totals are
  /// since start; the dashboard derives rates from successive polls.
  std::string stats_json() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
  std::uint64_t serial_; ///< tells this instance's series apart in per-thread caches
};

using metrics_ptr = std::shared_ptr<node_metrics>;

} // namespace parley

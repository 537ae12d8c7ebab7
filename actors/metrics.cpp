#include "actors/metrics.hpp"

#include <mutex>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace parley {

struct node_metrics::impl {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Counter>& requests =
    prometheus::BuildCounter()
      .Name("parley_http_requests_total")
      .Help("HTTP requests answered, by route and status code")
      .Register(registry);
  prometheus::Family<prometheus::Histogram>& duration =
    prometheus::BuildHistogram()
      .Name("parley_http_request_duration_seconds")
      .Help("Time from a complete request to its answer, by route")
      .Register(registry);
  prometheus::Counter& rate_limited =
    prometheus::BuildCounter()
      .Name("parley_rate_limited_total")
      .Help("Chat requests refused by the per-key rate limit")
      .Register(registry)
      .Add({});
  prometheus::Family<prometheus::Counter>& shed =
    prometheus::BuildCounter()
      .Name("parley_load_shed_total")
      .Help("Turns refused by load shedding: overloaded (node in-flight cap) or "
            "session_busy (session queue full)")
      .Register(registry);
  prometheus::Family<prometheus::Counter>& llm_requests =
    prometheus::BuildCounter()
      .Name("parley_llm_requests_total")
      .Help("Attempts at a model upstream, by upstream and outcome")
      .Register(registry);
  prometheus::Family<prometheus::Histogram>& llm_latency =
    prometheus::BuildHistogram()
      .Name("parley_llm_latency_seconds")
      .Help("Duration of one attempt at a model upstream")
      .Register(registry);
  prometheus::Family<prometheus::Gauge>& llm_circuit =
    prometheus::BuildGauge()
      .Name("parley_llm_circuit_state")
      .Help("Circuit breaker of a model upstream: 0 closed, 1 open, 2 half-open")
      .Register(registry);
  prometheus::Histogram& batch_size =
    prometheus::BuildHistogram()
      .Name("parley_storage_batch_size")
      .Help("Turns written by one group commit")
      .Register(registry)
      .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256});
  prometheus::Histogram& commit_seconds =
    prometheus::BuildHistogram()
      .Name("parley_storage_commit_seconds")
      .Help("Duration of one group commit in PostgreSQL")
      .Register(registry)
      .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                       0.05, 0.1, 0.25, 0.5, 1, 5});
  prometheus::Gauge& sessions_active = prometheus::BuildGauge()
                                         .Name("parley_sessions_active")
                                         .Help("Session actors alive on this node")
                                         .Register(registry)
                                         .Add({});
  prometheus::Counter& activations = prometheus::BuildCounter()
                                       .Name("parley_session_activations_total")
                                       .Help("Sessions activated (loaded with a new epoch)")
                                       .Register(registry)
                                       .Add({});
  prometheus::Counter& passivations = prometheus::BuildCounter()
                                        .Name("parley_session_passivations_total")
                                        .Help("Idle session actors passivated")
                                        .Register(registry)
                                        .Add({});
  prometheus::Counter& migrations = prometheus::BuildCounter()
                                      .Name("parley_session_migrations_total")
                                      .Help("Sessions this node handed to another node")
                                      .Register(registry)
                                      .Add({});
  prometheus::Family<prometheus::Gauge>& nodes =
    prometheus::BuildGauge()
      .Name("parley_cluster_nodes")
      .Help("Cluster members by status, as this node sees them")
      .Register(registry);
  prometheus::Counter& log_dropped =
    prometheus::BuildCounter()
      .Name("parley_log_dropped_total")
      .Help("Log lines lost because the log queue was full (the oldest is overwritten)")
      .Register(registry)
      .Add({});
  std::mutex log_dropped_mu; // two scrapes must not both add the same lines
};

namespace {

// Request latency from sub-millisecond (echo model) to the upstream timeout.
const prometheus::Histogram::BucketBoundaries duration_buckets{
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

} // namespace

node_metrics::node_metrics() : impl_(std::make_unique<impl>()) {
  // Both reasons exist from the start, so a rate() over them is never empty.
  impl_->shed.Add({{"reason", "overloaded"}});
  impl_->shed.Add({{"reason", "session_busy"}});
  cluster_nodes(1, 0, 0);
}

node_metrics::~node_metrics() = default;

void node_metrics::http_request(std::string_view route, unsigned status, double seconds) {
  std::string r{route};
  impl_->requests.Add({{"route", r}, {"code", std::to_string(status)}}).Increment();
  impl_->duration.Add({{"route", r}}, duration_buckets).Observe(seconds);
}

void node_metrics::rate_limited() { impl_->rate_limited.Increment(); }

void node_metrics::shed(std::string_view reason) {
  impl_->shed.Add({{"reason", std::string{reason}}}).Increment();
}

void node_metrics::cluster_nodes(double up, double leaving, double down) {
  impl_->nodes.Add({{"status", "up"}}).Set(up);
  impl_->nodes.Add({{"status", "leaving"}}).Set(leaving);
  impl_->nodes.Add({{"status", "down"}}).Set(down);
}

void node_metrics::llm_attempt(std::string_view upstream, std::string_view outcome,
                               double seconds) {
  std::string u{upstream};
  impl_->llm_requests.Add({{"upstream", u}, {"outcome", std::string{outcome}}}).Increment();
  impl_->llm_latency.Add({{"upstream", u}}, duration_buckets).Observe(seconds);
}

void node_metrics::llm_circuit(std::string_view upstream, int state) {
  impl_->llm_circuit.Add({{"upstream", std::string{upstream}}}).Set(state);
}

void node_metrics::storage_commit(std::size_t turns, double seconds) {
  impl_->batch_size.Observe(static_cast<double>(turns));
  impl_->commit_seconds.Observe(seconds);
}

void node_metrics::log_lines_dropped(std::uint64_t total) {
  std::lock_guard<std::mutex> lk{impl_->log_dropped_mu};
  auto seen = impl_->log_dropped.Value();
  if (static_cast<double>(total) > seen)
    impl_->log_dropped.Increment(static_cast<double>(total) - seen);
}

void node_metrics::session_started() { impl_->sessions_active.Increment(); }
void node_metrics::session_stopped() { impl_->sessions_active.Decrement(); }
void node_metrics::session_activated() { impl_->activations.Increment(); }
void node_metrics::session_passivated() { impl_->passivations.Increment(); }
void node_metrics::session_migrated() { impl_->migrations.Increment(); }

std::string node_metrics::scrape() const {
  return prometheus::TextSerializer{}.Serialize(impl_->registry.Collect());
}

} // namespace parley

#include "runtime/telemetry/metrics.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "runtime/telemetry/actor_stats.hpp"

namespace parley {

struct node_metrics::impl {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  prometheus::Registry registry;
  prometheus::Gauge& in_flight = prometheus::BuildGauge()
                                   .Name("parley_http_requests_in_flight")
                                   .Help("HTTP requests read and not yet answered")
                                   .Register(registry)
                                   .Add({});
  prometheus::Gauge& turns_in_flight = prometheus::BuildGauge()
                                         .Name("parley_turns_in_flight")
                                         .Help("Session turns and gateway calls admitted and "
                                               "not yet answered (capped by PARLEY_MAX_INFLIGHT)")
                                         .Register(registry)
                                         .Add({});
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
  prometheus::Counter& budget_exceeded =
    prometheus::BuildCounter()
      .Name("parley_budget_exceeded_total")
      .Help("Chat requests refused because their key's daily token budget is spent")
      .Register(registry)
      .Add({});
  prometheus::Counter& settlements_dropped =
    prometheus::BuildCounter()
      .Name("parley_budget_settlements_dropped_total")
      .Help("Finished calls whose spend never reached the budget counters: the node's budget "
            "ledger was full")
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
  prometheus::Family<prometheus::Counter>& llm_tokens =
    prometheus::BuildCounter()
      .Name("parley_llm_tokens_total")
      .Help("Tokens of completed model calls (as the upstream reported them, or the echo "
            "model's estimate), by direction: prompt or completion")
      .Register(registry);
  prometheus::Counter& prompt_tokens = llm_tokens.Add({{"direction", "prompt"}});
  prometheus::Counter& completion_tokens = llm_tokens.Add({{"direction", "completion"}});
  prometheus::Counter& usage_dropped =
    prometheus::BuildCounter()
      .Name("parley_usage_dropped_total")
      .Help("Gateway calls whose usage was not added to the daily totals (backlog full or "
            "PostgreSQL failing)")
      .Register(registry)
      .Add({});
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

namespace {
std::atomic<std::uint64_t> next_serial{1};
} // namespace

node_metrics::node_metrics()
  : impl_(std::make_unique<impl>()), serial_(next_serial.fetch_add(1)) {
  // Both reasons exist from the start, so a rate() over them is never empty.
  impl_->shed.Add({{"reason", "overloaded"}});
  impl_->shed.Add({{"reason", "session_busy"}});
  cluster_nodes(1, 0, 0);
}

node_metrics::~node_metrics() = default;

void node_metrics::http_started() { impl_->in_flight.Increment(); }

void node_metrics::http_request(std::string_view route, unsigned status, double seconds) {
  impl_->in_flight.Decrement();
  // Family::Add builds a label map and takes the family's lock; a request
  // finds its two series in a per-thread cache instead (the series live as
  // long as the registry, which outlives every request).
  struct series {
    prometheus::Counter* requests;
    prometheus::Histogram* duration;
  };
  thread_local std::map<std::tuple<std::uint64_t, std::string, unsigned>, series, std::less<>>
    cache;
  auto key = std::make_tuple(serial_, route, status);
  auto it = cache.find(key);
  if (it == cache.end()) {
    std::string r{route};
    series s{&impl_->requests.Add({{"route", r}, {"code", std::to_string(status)}}),
             &impl_->duration.Add({{"route", r}}, duration_buckets)};
    it = cache.emplace(std::make_tuple(serial_, std::move(r), status), s).first;
  }
  it->second.requests->Increment();
  it->second.duration->Observe(seconds);
}

void node_metrics::rate_limited() { impl_->rate_limited.Increment(); }
void node_metrics::budget_exceeded() { impl_->budget_exceeded.Increment(); }
void node_metrics::budget_settlement_dropped() { impl_->settlements_dropped.Increment(); }

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

void node_metrics::llm_tokens(std::int64_t prompt, std::int64_t completion) {
  if (prompt > 0)
    impl_->prompt_tokens.Increment(static_cast<double>(prompt));
  if (completion > 0)
    impl_->completion_tokens.Increment(static_cast<double>(completion));
}

void node_metrics::usage_dropped(std::uint64_t calls) {
  impl_->usage_dropped.Increment(static_cast<double>(calls));
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

void node_metrics::turns_in_flight(std::size_t n) {
  impl_->turns_in_flight.Set(static_cast<double>(n));
}

void node_metrics::session_started() { impl_->sessions_active.Increment(); }
void node_metrics::session_stopped() { impl_->sessions_active.Decrement(); }
void node_metrics::session_activated() { impl_->activations.Increment(); }
void node_metrics::session_passivated() { impl_->passivations.Increment(); }
void node_metrics::session_migrated() { impl_->migrations.Increment(); }

std::string node_metrics::scrape() const {
  auto families = impl_->registry.Collect();
  auto actors = actor_registry().Collect();
  families.insert(families.end(), std::make_move_iterator(actors.begin()),
                  std::make_move_iterator(actors.end()));
  return prometheus::TextSerializer{}.Serialize(families);
}

namespace {

using json = nlohmann::json;

std::vector<std::pair<double, std::uint64_t>>
cumulative(const prometheus::ClientMetric::Histogram& h) {
  std::vector<std::pair<double, std::uint64_t>> out;
  for (auto& b : h.bucket)
    out.emplace_back(b.upper_bound, b.cumulative_count);
  return out;
}

std::string label(const prometheus::ClientMetric& m, const char* name) {
  for (auto& l : m.label)
    if (l.name == name)
      return l.value;
  return {};
}

std::uint64_t whole(double x) { return static_cast<std::uint64_t>(x < 0 ? 0 : x + 0.5); }

/// Resident set size of this process, from /proc/self/statm.
std::uint64_t rss_bytes() {
  unsigned long pages_total = 0, pages_resident = 0;
  if (auto* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%lu %lu", &pages_total, &pages_resident) != 2)
      pages_resident = 0;
    std::fclose(f);
  }
  return static_cast<std::uint64_t>(pages_resident) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

const char* circuit_name(double state) {
  switch (whole(state)) {
    case 1: return "open";
    case 2: return "half_open";
    default: return "closed";
  }
}

} // namespace

std::string node_metrics::stats_json() const {
  std::uint64_t requests = 0, errors_4xx = 0, errors_5xx = 0, shed = 0;
  json storage = json::object();
  // By upstream; families come in any order, so each field has its default.
  struct upstream_figures {
    std::string circuit = "closed";
    std::uint64_t requests = 0;
    std::uint64_t errors = 0;
  };
  std::map<std::string, upstream_figures> llm;
  double sessions = 0, in_flight = 0, rate_limited = 0;
  std::uint64_t prompt_tokens = 0, completion_tokens = 0;
  for (auto& family : impl_->registry.Collect()) {
    for (auto& m : family.metric) {
      if (family.name == "parley_http_requests_total") {
        auto n = whole(m.counter.value);
        auto code = label(m, "code");
        requests += n;
        if (!code.empty() && code[0] == '4')
          errors_4xx += n;
        else if (!code.empty() && code[0] == '5')
          errors_5xx += n;
      } else if (family.name == "parley_http_requests_in_flight") {
        in_flight = m.gauge.value;
      } else if (family.name == "parley_sessions_active") {
        sessions = m.gauge.value;
      } else if (family.name == "parley_llm_tokens_total") {
        (label(m, "direction") == "prompt" ? prompt_tokens : completion_tokens) +=
          whole(m.counter.value);
      } else if (family.name == "parley_rate_limited_total") {
        rate_limited = m.counter.value;
      } else if (family.name == "parley_load_shed_total") {
        shed += whole(m.counter.value);
      } else if (family.name == "parley_llm_requests_total") {
        auto& u = llm[label(m, "upstream")];
        auto n = whole(m.counter.value);
        u.requests += n;
        if (label(m, "outcome") != "success")
          u.errors += n;
      } else if (family.name == "parley_llm_circuit_state") {
        llm[label(m, "upstream")].circuit = circuit_name(m.gauge.value);
      } else if (family.name == "parley_storage_commit_seconds") {
        auto b = cumulative(m.histogram);
        storage["commits"] = m.histogram.sample_count;
        storage["commit_p50_seconds"] = bucket_quantile(b, 0.5);
        storage["commit_p99_seconds"] = bucket_quantile(b, 0.99);
      } else if (family.name == "parley_storage_batch_size") {
        auto n = m.histogram.sample_count;
        storage["batch_mean"] = n == 0 ? 0.0 : m.histogram.sample_sum / static_cast<double>(n);
        storage["batch_p99"] = bucket_quantile(cumulative(m.histogram), 0.99);
      }
    }
  }
  json upstreams = json::array();
  for (auto& [name, u] : llm) {
    json entry = {{"upstream", name},
                  {"circuit", u.circuit},
                  {"requests", u.requests},
                  {"errors", u.errors}};
    upstreams.push_back(std::move(entry));
  }
  std::chrono::duration<double> up = std::chrono::steady_clock::now() - impl_->started;
  json out = {{"uptime_seconds", up.count()},
              {"http",
               {{"requests", requests},
                {"errors_4xx", errors_4xx},
                {"errors_5xx", errors_5xx},
                {"inflight", whole(in_flight)}}},
              {"sessions_active", whole(sessions)},
              {"actors", actor_figures()},
              {"llm", std::move(upstreams)},
              {"storage", std::move(storage)},
              {"rate_limited", whole(rate_limited)},
              {"tokens", {{"prompt", prompt_tokens}, {"completion", completion_tokens}}},
              {"load_shed", shed},
              {"rss_bytes", rss_bytes()}};
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

} // namespace parley

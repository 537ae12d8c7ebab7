#include "runtime/telemetry/actor_stats.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>

#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace parley {

namespace {

std::atomic<bool> enabled{true};
std::atomic<fault_reporter> reporter{nullptr};

// From a few microseconds (a cached lookup) to seconds (a blocking
// PostgreSQL commit in the storage actor's handler).
const prometheus::Histogram::BucketBoundaries processing_buckets{
  1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
  2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5};

struct table {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Gauge>& live =
    prometheus::BuildGauge().Name("parley_actors").Help("Live actors, by actor type").Register(registry);
  prometheus::Family<prometheus::Counter>& messages =
    prometheus::BuildCounter()
      .Name("parley_actor_messages_total")
      .Help("Messages handled, by actor type")
      .Register(registry);
  prometheus::Family<prometheus::Gauge>& depth =
    prometheus::BuildGauge()
      .Name("parley_actor_mailbox_depth")
      .Help("Messages waiting in the mailboxes of the actors of a type (as of each actor's "
            "last handled message)")
      .Register(registry);
  prometheus::Family<prometheus::Histogram>& processing =
    prometheus::BuildHistogram()
      .Name("parley_actor_processing_seconds")
      .Help("Time an actor of a type spent handling one message")
      .Register(registry);
  prometheus::Family<prometheus::Counter>& faults =
    prometheus::BuildCounter()
      .Name("parley_actor_faults_total")
      .Help("Messages whose handler threw, by actor type (the request was answered with an "
            "error and the actor went on)")
      .Register(registry);
  std::mutex mtx;
  std::map<std::string, actor_probe> probes;
};

table& the_table() {
  static table t;
  return t;
}

std::vector<std::pair<double, std::uint64_t>>
cumulative_buckets(const prometheus::ClientMetric::Histogram& h) {
  std::vector<std::pair<double, std::uint64_t>> out;
  out.reserve(h.bucket.size());
  for (auto& b : h.bucket)
    out.emplace_back(b.upper_bound, b.cumulative_count);
  return out;
}

} // namespace

void actor_probe::started() { live_.Increment(); }

void actor_probe::stopped(std::int64_t depth) {
  live_.Decrement();
  if (depth != 0)
    depth_.Decrement(static_cast<double>(depth));
}

void actor_probe::handled(double seconds, std::int64_t depth_change) {
  messages_.Increment();
  processing_.Observe(seconds);
  if (depth_change != 0)
    depth_.Increment(static_cast<double>(depth_change));
}

void to_json(nlohmann::json& j, const actor_type_figures& f) {
  j = {{"type", f.type},
       {"count", f.count},
       {"mailbox_depth", f.mailbox_depth},
       {"messages", f.messages},
       {"processing_p50_seconds", f.processing_p50_seconds},
       {"processing_p99_seconds", f.processing_p99_seconds},
       {"faults", f.faults}};
}

actor_probe& probe_of(const char* type) {
  auto& t = the_table();
  std::lock_guard<std::mutex> guard{t.mtx};
  auto it = t.probes.find(type);
  if (it == t.probes.end()) {
    prometheus::Labels labels{{"actor", type}};
    it = t.probes
           .try_emplace(type, t.live.Add(labels), t.messages.Add(labels), t.depth.Add(labels),
                        t.processing.Add(labels, processing_buckets))
           .first;
  }
  return it->second;
}

void set_fault_reporter(fault_reporter r) { reporter.store(r); }

void actor_fault(const char* type, std::string_view what, std::string_view message,
                 std::string_view request_id) noexcept {
  try {
    auto& t = the_table();
    {
      std::lock_guard<std::mutex> guard{t.mtx};
      t.faults.Add({{"actor", type}}).Increment();
    }
    if (auto r = reporter.load())
      r(type, what, message, request_id);
  } catch (...) {
    // Out of memory while reporting: the count or the line is lost, the
    // actor still goes on.
  }
}

void set_actor_metrics(bool on) { enabled.store(on, std::memory_order_relaxed); }

bool actor_metrics_enabled() noexcept { return enabled.load(std::memory_order_relaxed); }

std::vector<actor_type_figures> actor_figures() {
  auto& t = the_table();
  std::map<std::string, actor_type_figures> by_type;
  auto type_of = [](const prometheus::ClientMetric& m) -> std::string {
    for (auto& l : m.label)
      if (l.name == "actor")
        return l.value;
    return {};
  };
  for (auto& family : t.registry.Collect()) {
    for (auto& m : family.metric) {
      auto& f = by_type[type_of(m)];
      if (family.name == "parley_actors")
        f.count = std::llround(m.gauge.value);
      else if (family.name == "parley_actor_mailbox_depth")
        f.mailbox_depth = std::llround(m.gauge.value);
      else if (family.name == "parley_actor_faults_total")
        f.faults = static_cast<std::uint64_t>(std::llround(m.counter.value));
      else if (family.name == "parley_actor_messages_total")
        f.messages = static_cast<std::uint64_t>(std::llround(m.counter.value));
      else if (family.name == "parley_actor_processing_seconds") {
        auto buckets = cumulative_buckets(m.histogram);
        f.processing_p50_seconds = bucket_quantile(buckets, 0.5);
        f.processing_p99_seconds = bucket_quantile(buckets, 0.99);
      }
    }
  }
  std::vector<actor_type_figures> out;
  out.reserve(by_type.size());
  for (auto& [type, f] : by_type) {
    f.type = type;
    out.push_back(std::move(f));
  }
  return out;
}

const prometheus::Collectable& actor_registry() { return the_table().registry; }

double bucket_quantile(const std::vector<std::pair<double, std::uint64_t>>& cumulative,
                       double q) {
  if (cumulative.empty() || cumulative.back().second == 0)
    return 0;
  auto total = static_cast<double>(cumulative.back().second);
  auto rank = q * total;
  double lower = 0;
  std::uint64_t below = 0;
  for (auto& [upper, count] : cumulative) {
    if (static_cast<double>(count) >= rank && count > below) {
      if (std::isinf(upper))
        return lower;
      auto in_bucket = static_cast<double>(count - below);
      return lower + (upper - lower) * (rank - static_cast<double>(below)) / in_bucket;
    }
    if (!std::isinf(upper))
      lower = upper;
    below = count;
  }
  return lower;
}

} // namespace parley

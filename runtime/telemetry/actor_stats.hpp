#pragma once
// Per actor type figures: live actors, messages handled, mailbox depth and
// processing time. Every Parley actor runs as an `instrumented_actor`
// (actors/instrumented.hpp), whose one `consume` override feeds the probe
// of its type; nothing is counted by hand in handlers. The figures are
// process-wide (one node per process) and exported as
//   parley_actors{actor}                    gauge: live actors
//   parley_actor_messages_total{actor}      counter
//   parley_actor_mailbox_depth{actor}       gauge: messages waiting, summed
//                                           over the type's actors
//   parley_actor_processing_seconds{actor}  histogram
//   parley_actor_faults_total{actor}        counter: handlers that threw
// and as the table of GET /admin/v1/actors.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace prometheus {
class Collectable;
class Counter;
class Gauge;
class Histogram;
} // namespace prometheus

namespace parley {

/// The instruments of one actor type. Updates are lock-free atomics.
class actor_probe {
public:
  actor_probe(prometheus::Gauge& live, prometheus::Counter& messages,
              prometheus::Gauge& depth, prometheus::Histogram& processing)
    : live_(live), messages_(messages), depth_(depth), processing_(processing) {}

  void started();
  /// `depth` is the mailbox depth the actor last reported.
  void stopped(std::int64_t depth);
  /// One message handled in `seconds`; the actor's mailbox depth changed
  /// by `depth_change` since its previous message.
  void handled(double seconds, std::int64_t depth_change);

private:
  prometheus::Gauge& live_;
  prometheus::Counter& messages_;
  prometheus::Gauge& depth_;
  prometheus::Histogram& processing_;
};

/// The figures of one actor type, for GET /admin/v1/actors.
struct actor_type_figures {
  std::string type;
  std::int64_t count = 0;
  std::int64_t mailbox_depth = 0;
  std::uint64_t messages = 0;
  double processing_p50_seconds = 0;
  double processing_p99_seconds = 0;
  std::uint64_t faults = 0; ///< handlers that threw (parley_actor_faults_total)
};

/// {"type", "count", "mailbox_depth", "messages", "processing_p50_seconds",
/// "processing_p99_seconds"}: one entry of GET /admin/v1/actors.
void to_json(nlohmann::json& j, const actor_type_figures& f);

/// The probe of actor type `type` (created on first use; lives forever).
actor_probe& probe_of(const char* type);

/// Instrumentation on (default) or off: `PARLEY_ACTOR_METRICS`. Set once
/// at start-up, before any actor is spawned.
void set_actor_metrics(bool on);
bool actor_metrics_enabled() noexcept;

/// Reports a handler of an actor of type `type` that threw `what` while
/// handling `message` (its first atom, or a short description), for the
/// request `request_id` when known. Thread-safe.
using fault_reporter = void (*)(const char* type, std::string_view what,
                                std::string_view message, std::string_view request_id);

/// Where faults go besides the counter (the node logs them); set once at
/// start-up, before any actor is spawned. Without one they are only counted.
void set_fault_reporter(fault_reporter r);

/// One fault: counted in parley_actor_faults_total{actor} and reported.
/// Never throws.
void actor_fault(const char* type, std::string_view what, std::string_view message,
                 std::string_view request_id = {}) noexcept;

/// Every actor type seen so far, sorted by name.
std::vector<actor_type_figures> actor_figures();

/// The registry holding the actor families, for the /metrics scrape.
const prometheus::Collectable& actor_registry();

/// Prometheus' histogram_quantile over cumulative buckets (upper bound,
/// cumulative count; the last bound may be +Inf): the value below which a
/// fraction `q` of the observations fall, interpolated linearly inside its
/// bucket. 0 when there are no observations; the largest finite bound when
/// the quantile lands in the +Inf bucket.
double bucket_quantile(const std::vector<std::pair<double, std::uint64_t>>& cumulative, double q);

} // namespace parley

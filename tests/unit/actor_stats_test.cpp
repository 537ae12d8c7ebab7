// The shared actor instrumentation (actors/instrumented.hpp) on a real CAF
// actor system, the histogram quantile, and the metrics exposition.

#include <chrono>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include "runtime/telemetry/actor_stats.hpp"
#include "actors/instrumented.hpp"
#include "runtime/telemetry/metrics.hpp"

namespace parley {
namespace {

struct probe_test_state {
  static inline const char* name = "probe_test";
};

using probe_self = instrumented_actor<probe_test_state>;

caf::behavior probe_test_actor(probe_self*) {
  return {
    [](int ms) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      return ms;
    },
  };
}

const actor_type_figures* find(const std::vector<actor_type_figures>& all, const char* type) {
  for (auto& f : all)
    if (f.type == type)
      return &f;
  return nullptr;
}

TEST(actor_stats, every_message_of_an_instrumented_actor_is_counted_and_timed) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  auto before = find(actor_figures(), "probe_test");
  std::uint64_t seen = before ? before->messages : 0;
  {
    auto a = sys.spawn(probe_test_actor);
    caf::scoped_actor self{sys};
    // The first message blocks the actor for 50 ms while nine more queue
    // up behind it: the depth it reports after the first is above zero.
    for (int i = 0; i < 10; ++i)
      self->send(a, i == 0 ? 50 : 0);
    for (int i = 0; i < 10; ++i)
      self->receive([](int) {});
    // The last reply leaves inside the handler, just before the message is
    // counted: give the actor a moment to return.
    std::vector<actor_type_figures> now;
    const actor_type_figures* f = nullptr;
    for (int i = 0; i < 200; ++i) {
      now = actor_figures();
      f = find(now, "probe_test");
      if (f && f->messages == seen + 10)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->count, 1);
    EXPECT_EQ(f->messages, seen + 10);
    EXPECT_EQ(f->mailbox_depth, 0); // all handled
    EXPECT_GT(f->processing_p99_seconds, 0.025);
    EXPECT_LT(f->processing_p50_seconds, 0.01);
    self->send_exit(a, caf::exit_reason::user_shutdown);
  }
  sys.await_all_actors_done();
  auto f = find(actor_figures(), "probe_test");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->count, 0);
}

TEST(actor_stats, switched_off_counts_actors_but_not_messages) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  set_actor_metrics(false);
  auto before = find(actor_figures(), "probe_test");
  std::uint64_t seen = before ? before->messages : 0;
  {
    auto a = sys.spawn(probe_test_actor);
    caf::scoped_actor self{sys};
    self->request(a, caf::infinite, 0).receive([](int) {}, [](caf::error&) {});
    EXPECT_EQ(find(actor_figures(), "probe_test")->count, 1);
    EXPECT_EQ(find(actor_figures(), "probe_test")->messages, seen);
    self->send_exit(a, caf::exit_reason::user_shutdown);
  }
  set_actor_metrics(true);
  sys.await_all_actors_done();
}

TEST(actor_stats, bucket_quantile_interpolates_like_prometheus) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(bucket_quantile({}, 0.5), 0);
  EXPECT_EQ(bucket_quantile({{1, 0}, {inf, 0}}, 0.5), 0);
  // 100 observations: 50 in (0,1], 40 in (1,2], 10 in (2,4].
  std::vector<std::pair<double, std::uint64_t>> b{{1, 50}, {2, 90}, {4, 100}, {inf, 100}};
  EXPECT_DOUBLE_EQ(bucket_quantile(b, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(bucket_quantile(b, 0.25), 0.5);
  EXPECT_DOUBLE_EQ(bucket_quantile(b, 0.7), 1.5);
  EXPECT_DOUBLE_EQ(bucket_quantile(b, 0.95), 3.0);
  // In the +Inf bucket: the largest finite bound.
  std::vector<std::pair<double, std::uint64_t>> over{{1, 1}, {2, 1}, {inf, 10}};
  EXPECT_DOUBLE_EQ(bucket_quantile(over, 0.99), 2.0);
}

TEST(node_metrics, exposition_escapes_label_values_and_types_every_family) {
  node_metrics m;
  m.llm_attempt("http://x/\"q\"\\\n", "success", 0.01);
  m.storage_commit(3, 0.002);
  m.http_started();
  m.http_request("healthz", 200, 0.001);
  auto text = m.scrape();
  EXPECT_NE(text.find(R"(upstream="http://x/\"q\"\\\n")"), std::string::npos) << text;
  for (auto family : {"parley_http_requests_total counter", "parley_sessions_active gauge",
                      "parley_storage_batch_size histogram",
                      "parley_storage_commit_seconds histogram",
                      "parley_llm_latency_seconds histogram"})
    EXPECT_NE(text.find(std::string{"# TYPE "} + family), std::string::npos) << family;
  EXPECT_NE(text.find("parley_storage_commit_seconds_bucket{le=\"+Inf\"} 1"), std::string::npos);
  EXPECT_NE(text.find("parley_storage_batch_size_sum 3"), std::string::npos);
}

} // namespace
} // namespace parley

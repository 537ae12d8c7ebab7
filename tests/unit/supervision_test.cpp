// Supervision on a real CAF actor system: a handler that throws answers its
// request with an error and the actor goes on (instrumented_actor), faults
// are counted and reported, the supervisor's board tells which core actor
// stopped and calls back, and the cluster figures of node_metrics survive
// any order of their families.

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/telemetry/actor_stats.hpp"
#include "actors/instrumented.hpp"
#include "runtime/telemetry/metrics.hpp"
#include "actors/vocabulary.hpp"
#include "actors/supervisor_actor.hpp"

namespace parley {
namespace {

struct faulty_state {
  static inline const char* name = "faulty_test";
  int handled = 0;
};

using faulty_self = instrumented_actor<faulty_state>;

/// Throws on a negative number, answers the count of handled ones otherwise.
caf::behavior faulty_actor(faulty_self* self) {
  return {
    [self](int x) -> int {
      if (x < 0)
        throw std::runtime_error("negative input reached an invariant");
      return ++self->state.handled;
    },
  };
}

std::mutex reported_mtx;
std::vector<std::string> reported;

void remember_fault(const char* type, std::string_view what, std::string_view,
                    std::string_view) {
  std::lock_guard<std::mutex> guard{reported_mtx};
  reported.push_back(std::string{type} + ": " + std::string{what});
}

std::uint64_t faults_of(const char* type) {
  for (auto& f : actor_figures())
    if (f.type == type)
      return f.faults;
  return 0;
}

TEST(supervision, a_throwing_handler_answers_an_error_and_the_actor_goes_on) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  set_fault_reporter(remember_fault);
  auto faults_before = faults_of("faulty_test");
  auto a = sys.spawn(faulty_actor);
  caf::scoped_actor self{sys};
  auto ask = [&](int x) {
    int answer = 0;
    caf::error err;
    self->request(a, std::chrono::seconds(5), x)
      .receive([&](int n) { answer = n; }, [&](caf::error& e) { err = std::move(e); });
    return std::make_pair(answer, err);
  };
  EXPECT_EQ(ask(1).first, 1);
  auto failed = ask(-1);
  EXPECT_EQ(failed.first, 0);
  ASSERT_TRUE(failed.second) << "the request was not answered with an error";
  EXPECT_EQ(failed.second.code(), static_cast<std::uint8_t>(caf::sec::runtime_error));
  EXPECT_EQ(to_api_error(failed.second).code, errc::internal);
  // Still alive, state intact.
  EXPECT_EQ(ask(1).first, 2);
  self->send(a, -5); // a plain message: nobody to answer, the actor goes on
  EXPECT_EQ(ask(1).first, 3);
  EXPECT_EQ(faults_of("faulty_test"), faults_before + 2);
  {
    std::lock_guard<std::mutex> guard{reported_mtx};
    ASSERT_FALSE(reported.empty());
    EXPECT_EQ(reported.back(), "faulty_test: negative input reached an invariant");
  }
  set_fault_reporter(nullptr);
  self->send_exit(a, caf::exit_reason::user_shutdown);
}

TEST(supervision, every_instrumented_actor_answers_the_health_ping) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto a = sys.spawn(faulty_actor);
  caf::scoped_actor self{sys};
  bool ok = false;
  self->request(a, std::chrono::seconds(5), health_atom::value)
    .receive([&](bool b) { ok = b; }, [](caf::error&) {});
  EXPECT_TRUE(ok);
  self->send_exit(a, caf::exit_reason::user_shutdown);
}

TEST(supervision, health_board_names_stopped_and_silent_actors) {
  using namespace std::chrono_literals;
  health_board b{{"edge", "storage-0"}, 10s};
  auto t0 = health_board::clock::now();
  EXPECT_TRUE(b.failing(t0).empty());
  b.answered(0, t0 + 5s);
  EXPECT_EQ(b.failing(t0 + 12s), std::vector<std::string>{"storage-0"});
  b.answered(1, t0 + 11s);
  EXPECT_TRUE(b.failing(t0 + 12s).empty());
  b.stopped(0);
  b.answered(0, t0 + 13s); // a late answer does not revive a stopped actor
  EXPECT_EQ(b.failing(t0 + 13s), std::vector<std::string>{"edge"});
  EXPECT_TRUE(b.postgres_ok());
  b.postgres(false);
  EXPECT_FALSE(b.postgres_ok());
}

TEST(supervision, a_core_actor_that_stops_is_reported_by_the_supervisor) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto a = sys.spawn(faulty_actor);
  auto b = sys.spawn(faulty_actor);
  std::vector<std::pair<std::string, caf::actor>> core{{"first", a}, {"second", b}};
  auto board = std::make_shared<health_board>(roles_of(core));
  std::promise<std::string> down;
  std::atomic<bool> once{false};
  supervisor_config sc;
  sc.core = core;
  sc.board = board;
  sc.interval = std::chrono::milliseconds(50);
  sc.on_core_down = [&](const std::string& role, const caf::error&) {
    if (!once.exchange(true))
      down.set_value(role);
  };
  auto sup = spawn_supervisor(sys, sc);
  caf::anon_send_exit(b, caf::exit_reason::kill);
  auto f = down.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get(), "second");
  EXPECT_EQ(board->failing(), std::vector<std::string>{"second"});
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

// Issue 13, item 2: the per-upstream figures read a null JSON when the
// requests counter came before the circuit gauge, and the membership actor
// stopped on every node that served /admin/v1/cluster.
TEST(node_metrics, stats_json_has_upstream_figures_in_any_family_order) {
  node_metrics m;
  m.llm_attempt("http://primary/v1", "success", 0.01);
  m.llm_attempt("http://primary/v1", "timeout", 2.0);
  m.llm_attempt("http://fallback/v1", "success", 0.02);
  m.llm_circuit("http://fallback/v1", 1);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(m.stats_json()));
  std::map<std::string, nlohmann::json> by;
  for (auto& u : j["llm"])
    by[u["upstream"]] = u;
  ASSERT_EQ(by.size(), 2u) << j.dump();
  EXPECT_EQ(by["http://primary/v1"]["requests"], 2);
  EXPECT_EQ(by["http://primary/v1"]["errors"], 1);
  EXPECT_EQ(by["http://primary/v1"]["circuit"], "closed");
  EXPECT_EQ(by["http://fallback/v1"]["circuit"], "open");
}

} // namespace
} // namespace parley

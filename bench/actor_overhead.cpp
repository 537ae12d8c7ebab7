// actor_overhead: what the shared actor instrumentation (actors/instrumented.hpp)
// costs per message. Two actors bounce one message back and forth on one
// scheduler thread, as plain caf::stateful_actor, as instrumented_actor with
// PARLEY_ACTOR_METRICS off, and with it on; prints ns per message (median of
// runs). Usage: actor_overhead [messages per run, default 1000000] [runs, 5]
// [plain|off|on: one variant only, e.g. under `perf stat -e instructions:u`
// or callgrind, whose counts do not depend on the machine's load]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/instrumented.hpp"

namespace {

using go_atom = caf::atom_constant<caf::atom("go")>;

struct ball_state {
  static inline const char* name = "bench_ball";
  caf::actor done;
};

template <class Self>
caf::behavior player(Self* self) {
  return {
    [self](go_atom, int left, caf::actor& peer, caf::actor& done) {
      if (left == 0)
        return self->send(done, go_atom::value);
      self->send(peer, go_atom::value, left - 1, caf::actor_cast<caf::actor>(self), done);
    },
  };
}

template <class Self>
double run_once(int messages) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 1);
  caf::actor_system sys{cfg};
  auto a = sys.spawn(player<Self>);
  auto b = sys.spawn(player<Self>);
  caf::scoped_actor self{sys};
  auto t0 = std::chrono::steady_clock::now();
  self->send(a, go_atom::value, messages, b, caf::actor_cast<caf::actor>(self));
  self->receive([](go_atom) {});
  std::chrono::duration<double, std::nano> dt = std::chrono::steady_clock::now() - t0;
  self->send_exit(a, caf::exit_reason::user_shutdown);
  self->send_exit(b, caf::exit_reason::user_shutdown);
  return dt.count() / messages;
}

template <class Self>
double median_of(int runs, int messages) {
  std::vector<double> ns;
  for (int i = 0; i < runs; ++i)
    ns.push_back(run_once<Self>(messages));
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
  int messages = argc > 1 ? std::atoi(argv[1]) : 1000000;
  int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  if (messages <= 0 || runs <= 0) {
    std::fprintf(stderr, "usage: actor_overhead [messages > 0] [runs > 0]\n");
    return 2;
  }
  using plain = caf::stateful_actor<ball_state>;
  using instrumented = parley::instrumented_actor<ball_state>;
  if (argc > 3) {
    std::string variant = argv[3];
    parley::set_actor_metrics(variant == "on");
    double ns = variant == "plain" ? median_of<plain>(runs, messages)
                                   : median_of<instrumented>(runs, messages);
    std::printf("%s: %.1f ns per message\n", variant.c_str(), ns);
    return 0;
  }
  auto base = median_of<plain>(runs, messages);
  parley::set_actor_metrics(false);
  auto off = median_of<instrumented>(runs, messages);
  parley::set_actor_metrics(true);
  auto on = median_of<instrumented>(runs, messages);
  std::printf("ns per message (median of %d runs of %d messages, one scheduler thread)\n", runs,
              messages);
  std::printf("plain stateful_actor        %8.1f\n", base);
  std::printf("instrumented, metrics off   %8.1f  (%+.1f)\n", off, off - base);
  std::printf("instrumented, metrics on    %8.1f  (%+.1f)\n", on, on - base);
  return 0;
}

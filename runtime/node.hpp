#pragma once
// A Parley node's life: start-up (migrations, actor system, actors, HTTP),
// serving until SIGTERM/SIGINT, then a graceful stop.

#include "runtime/config.hpp"

namespace parley {

/// Blocks SIGTERM and SIGINT in the calling thread; call first thing in
/// main(), before any thread starts, so that run_node can wait for them.
void block_stop_signals();

/// The exit code of a node whose core actor stopped while it served
/// (EX_SOFTWARE): its supervisor should restart it.
constexpr int core_down_exit_code = 70;

/// Runs a node until SIGTERM or SIGINT; returns the process exit code.
int run_node(const node_config& cfg);

} // namespace parley

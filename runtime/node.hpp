#pragma once
// A Parley node's life: start-up (migrations, actor system, actors, HTTP),
// serving until SIGTERM/SIGINT, then a graceful stop.

#include "runtime/config.hpp"

namespace parley {

/// Blocks SIGTERM and SIGINT in the calling thread; call first thing in
/// main(), before any thread starts, so that run_node can wait for them.
void block_stop_signals();

/// Runs a node until SIGTERM or SIGINT; returns the process exit code.
int run_node(const node_config& cfg);

} // namespace parley

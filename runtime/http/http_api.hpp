#pragma once
// The HTTP side of the edge: turns each request into an `http_call` on the
// asio thread that read it (routing, size and type checks, JSON parsing and
// validation), answers what needs no actor (/healthz, /metrics, unknown
// routes), and sends the rest to the edge actor. Every answer is counted in
// the node's metrics by route and status and, unless turned off, written to
// the access log (one info line per request, when its answer is complete).

#include "runtime/telemetry/metrics.hpp"
#include "actors/edge/edge_actor.hpp"
#include "actors/supervisor_actor.hpp"
#include "net/http_server.hpp"

namespace parley {

enum class access_log { off, on };

/// `/healthz` is answered here from `health` (no actor on its path): 200
/// while every core actor answers the supervisor's pings, else 503 naming
/// the failing ones.
net::request_handler make_http_handler(edge_actor edge, metrics_ptr metrics, access_log access,
                                       health_ptr health);

} // namespace parley

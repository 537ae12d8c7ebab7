#pragma once
// The HTTP side of the edge: turns each request into an `http_call` on the
// asio thread that read it (routing, size and type checks, JSON parsing and
// validation), answers what needs no actor (/healthz, unknown routes), and
// sends the rest to the edge actor.

#include <caf/actor.hpp>

#include "net/http_server.hpp"

namespace parley {

net::request_handler make_http_handler(caf::actor edge);

} // namespace parley

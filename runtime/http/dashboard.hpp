#pragma once
// The operators' dashboard of `GET /dashboard`: runtime/http/dashboard.html,
// embedded into the binary at build time (cmake/embed_text.cmake), and the
// headers it is served with. The edge serves dashboard_response() once the
// admin token checked out; it knows nothing of the page.

#include <string_view>

#include "net/http_server.hpp"

namespace parley {

/// The page: one self-contained HTML document (inline CSS and JS, nothing
/// external). Static storage; valid for the life of the process.
std::string_view dashboard_page();

/// The whole answer: the page, its type, and its security headers (it holds
/// no data, it polls the admin API with the token; it is never cached and
/// may load nothing from elsewhere).
net::http_response dashboard_response();

} // namespace parley

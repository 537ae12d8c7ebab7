#pragma once
// The operators' dashboard of `GET /dashboard`: runtime/http/dashboard.html,
// embedded into the binary at build time (cmake/embed_text.cmake).

#include <string_view>

namespace parley {

/// The page: one self-contained HTML document (inline CSS and JS, nothing
/// external). Static storage; valid for the life of the process.
std::string_view dashboard_page();

} // namespace parley

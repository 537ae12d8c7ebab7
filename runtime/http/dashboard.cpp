#include "runtime/http/dashboard.hpp"

namespace parley {

net::http_response dashboard_response() {
  net::http_response r;
  r.body = std::string{dashboard_page()};
  r.content_type = "text/html; charset=utf-8";
  r.headers = {
    {"Cache-Control", "no-store"},
    {"Content-Security-Policy",
     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
     "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
  };
  return r;
}

} // namespace parley

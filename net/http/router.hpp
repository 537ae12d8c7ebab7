#pragma once
// Maps (method, path) to a row of the route table (net/http/routes.hpp). Pure: no
// I/O, no allocation beyond the captured path parameters.

#include <string>
#include <string_view>

#include "net/http/routes.hpp"

namespace parley::net {

/// The outcome of routing one request.
struct route_match {
  route r = route::not_found;
  std::string id;   ///< `{id}` when the route has one
  std::string seq;  ///< `{seq}` of the feedback route, unparsed
  std::string allow; ///< for method_not_allowed: the `Allow` header value
};

/// Route a request. `path` excludes the query string. A path that matches
/// rows only with other methods is method_not_allowed, with those methods
/// (in the order GET, POST, DELETE) as `allow`.
route_match match_route(std::string_view method, std::string_view path);

/// Human name of a route, used as a metrics label and in logs.
std::string_view route_name(route r);

} // namespace parley::net

#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "net/http/router.hpp"

using parley::net::match_route;
using parley::net::route;

TEST(router, maps_every_route_with_its_parameters) {
  EXPECT_EQ(match_route("GET", "/healthz").r, route::healthz);
  EXPECT_EQ(match_route("GET", "/readyz").r, route::readyz);
  EXPECT_EQ(match_route("GET", "/metrics").r, route::metrics);
  EXPECT_EQ(match_route("POST", "/v1/chat/completions").r, route::chat_completions);
  EXPECT_EQ(match_route("GET", "/v1/models").r, route::list_models);
  EXPECT_EQ(match_route("GET", "/v1/chat/completions").r, route::method_not_allowed);
  EXPECT_EQ(match_route("POST", "/v1/sessions").r, route::create_session);
  EXPECT_EQ(match_route("GET", "/v1/sessions").r, route::list_sessions);
  auto m = match_route("GET", "/v1/sessions/abc");
  EXPECT_EQ(m.r, route::get_session);
  EXPECT_EQ(m.id, "abc");
  EXPECT_EQ(match_route("DELETE", "/v1/sessions/abc").r, route::delete_session);
  EXPECT_EQ(match_route("POST", "/v1/sessions/abc/messages").r, route::post_message);
  EXPECT_EQ(match_route("GET", "/v1/sessions/abc/messages").r, route::list_messages);
  auto f = match_route("POST", "/v1/sessions/abc/messages/7/feedback");
  EXPECT_EQ(f.r, route::post_feedback);
  EXPECT_EQ(f.id, "abc");
  EXPECT_EQ(f.seq, "7");
  EXPECT_EQ(match_route("POST", "/admin/v1/api-keys").r, route::create_api_key);
  auto k = match_route("DELETE", "/admin/v1/api-keys/pk_12345678");
  EXPECT_EQ(k.r, route::revoke_api_key);
  EXPECT_EQ(k.id, "pk_12345678");
  EXPECT_EQ(match_route("GET", "/admin/v1/cluster").r, route::cluster_info);
  EXPECT_EQ(match_route("GET", "/admin/v1/actors").r, route::admin_actors);
  EXPECT_EQ(match_route("POST", "/admin/v1/actors").r, route::method_not_allowed);
  EXPECT_EQ(match_route("GET", "/dashboard").r, route::dashboard);
  EXPECT_EQ(match_route("GET", "/dashboard/x").r, route::not_found);
  auto a = match_route("GET", "/admin/v1/sessions/s1");
  EXPECT_EQ(a.r, route::admin_session);
  EXPECT_EQ(a.id, "s1");
  auto mg = match_route("POST", "/admin/v1/sessions/s1/migrate");
  EXPECT_EQ(mg.r, route::migrate_session);
  EXPECT_EQ(mg.id, "s1");
  auto d = match_route("POST", "/admin/v1/nodes/node-2/drain");
  EXPECT_EQ(d.r, route::drain_node);
  EXPECT_EQ(d.id, "node-2");
  EXPECT_EQ(match_route("GET", "/admin/v1/nodes/node-2/drain").r, route::method_not_allowed);
  EXPECT_EQ(match_route("GET", "/admin/v1/nodes/node-2").r, route::not_found);
}

TEST(router, wrong_method_on_known_path_is_405_with_allow) {
  auto m = match_route("PUT", "/v1/sessions");
  EXPECT_EQ(m.r, route::method_not_allowed);
  EXPECT_EQ(m.allow, "GET, POST");
  EXPECT_EQ(match_route("POST", "/healthz").r, route::method_not_allowed);
  EXPECT_EQ(match_route("GET", "/v1/sessions/a/messages/1/feedback").allow, "POST");
}

TEST(router, unknown_and_malformed_paths_are_404) {
  for (auto p : {"", "/", "v1/sessions", "/v1", "/v1/sessions/", "/v1//sessions",
                 "/v1/sessions/a/b", "/v1/sessions/a/messages/1", "/v2/sessions",
                 "/admin/v1/api-keys/a/b", "/a/b/c/d/e/f/g/h/i/j"})
    EXPECT_EQ(match_route("GET", p).r, route::not_found) << p;
}

namespace {

/// The pattern with each parameter replaced by a sample value.
std::string sample_path(std::string_view pattern, std::string_view id, std::string_view seq) {
  std::string out;
  std::size_t i = 0;
  while (i < pattern.size()) {
    if (pattern.substr(i, 4) == "{id}") {
      out += id;
      i += 4;
    } else if (pattern.substr(i, 5) == "{seq}") {
      out += seq;
      i += 5;
    } else {
      out += pattern[i++];
    }
  }
  return out;
}

} // namespace

TEST(route_table, every_row_is_reachable_by_its_method_and_pattern) {
  using parley::net::method_name;
  using parley::net::route_table;
  for (auto& row : route_table) {
    auto path = sample_path(row.pattern, "x-1", "42");
    auto m = match_route(method_name(row.method), path);
    EXPECT_EQ(m.r, row.id) << row.name << " " << path;
    EXPECT_EQ(parley::net::route_name(row.id), row.name);
    bool has_id = row.pattern.find("{id}") != std::string_view::npos;
    EXPECT_EQ(m.id, has_id ? "x-1" : "") << row.name;
    if (row.pattern.find("{seq}") != std::string_view::npos) {
      EXPECT_EQ(m.seq, "42") << row.name;
    }
    // A session row's subject is the session id.
    if (row.reaches_session) {
      EXPECT_TRUE(has_id) << row.name;
    }
  }
}

TEST(route_table, rows_are_unique_by_method_and_pattern) {
  using parley::net::route_table;
  for (std::size_t i = 0; i < route_table.size(); ++i)
    for (std::size_t j = i + 1; j < route_table.size(); ++j)
      EXPECT_FALSE(route_table[i].method == route_table[j].method &&
                   route_table[i].pattern == route_table[j].pattern)
        << route_table[i].name << " and " << route_table[j].name;
}

TEST(route_table, method_not_allowed_lists_the_tables_methods_for_the_path) {
  using parley::net::http_method;
  using parley::net::method_name;
  using parley::net::route_table;
  for (auto& row : route_table) {
    auto path = sample_path(row.pattern, "x-1", "42");
    // The methods the table has for this path, in the order GET, POST, DELETE.
    std::string expected;
    for (auto mt : {http_method::get, http_method::post, http_method::del})
      for (auto& other : route_table)
        if (other.method == mt && other.pattern == row.pattern) {
          if (!expected.empty())
            expected += ", ";
          expected += method_name(mt);
        }
    for (auto wrong : {"PUT", "PATCH", "HEAD", "OPTIONS"}) {
      auto m = match_route(wrong, path);
      EXPECT_EQ(m.r, route::method_not_allowed) << wrong << " " << path;
      EXPECT_EQ(m.allow, expected) << wrong << " " << path;
    }
  }
  EXPECT_EQ(match_route("PUT", "/v1/sessions/a").allow, "GET, DELETE");
  EXPECT_EQ(match_route("DELETE", "/v1/sessions/a/messages").allow, "GET, POST");
}

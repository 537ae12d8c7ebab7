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

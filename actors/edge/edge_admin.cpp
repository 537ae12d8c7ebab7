// The edge's admin routes (the admin token checked out), readiness and the
// dashboard.

#include <map>
#include <vector>

#include "actors/edge/api_render.hpp"
#include "actors/edge/edge_state.hpp"
#include "storage/secrets.hpp"

namespace parley {

/// `/readyz`: PostgreSQL answers, every core actor answers, the node has
/// joined and is not leaving. PostgreSQL's state is the supervisor's last
/// check (once a second), so a probe costs no round trip. Redis is reported
/// ("ok", "down", or "off" when not configured) but never makes the node
/// unready: chat goes on with per-node limits without it.
void handle_readyz(edge_self* self, const call_ptr& c, const api_key_record*) {
  auto& st = self->state;
  std::string cluster = st.draining ? "draining" : !st.view->joined ? "joining" : "ok";
  bool pg_ok = !st.health || st.health->postgres_ok();
  auto failing = st.health ? st.health->failing() : std::vector<std::string>{};
  auto answer = [c, cluster, pg_ok, failing](const std::string& redis) {
    bool ready = pg_ok && cluster == "ok" && failing.empty();
    reply(c, ready ? 200 : 503,
          render_ready(ready, pg_ok ? "ok" : "down", redis, cluster,
                       failing.empty() ? "ok" : "failing"));
  };
  if (!st.cfg.redis || !st.ratelimit)
    return answer("off");
  self->request(st.ratelimit, std::chrono::milliseconds(500), redis_status_atom::value)
    .then([answer](bool ok) { answer(ok ? "ok" : "down"); },
          [answer](caf::error&) { answer("down"); });
}

/// `GET /dashboard`: the answer runtime/http/dashboard.cpp made (the page and its
/// security headers), after the call's own headers.
void handle_dashboard(edge_self* self, const call_ptr& c, const api_key_record*) {
  auto& page = self->state.cfg.dashboard;
  c->headers.insert(c->headers.end(), page.headers.begin(), page.headers.end());
  reply(c, page.status, page.body, page.content_type);
}

void handle_create_api_key(edge_self* self, const call_ptr& c, const api_key_record*) {
  auto& st = self->state;
  auto secret = generate_api_key();
  auto& body = body_of<net::create_key_body>(c);
  make_key_request req;
  req.key.user_id = body.user;
  req.key.prefix = key_prefix(secret);
  req.key.token_budget_per_day = body.token_budget_per_day;
  req.key.models = body.models;
  req.hash = hash_key(secret);
  self->request(st.storage->any(), st.cfg.storage_timeout, make_key_atom::value, std::move(req))
    .then([c, secret](api_key_record& k) { reply(c, 201, render_created_key(k, secret)); },
          [c](caf::error& e) { reply_error(c, e); });
}

/// `GET /admin/v1/api-keys?user=U&limit=N`: the keys, newest first, without
/// secrets (only their hashes are stored, and those are not shown either).
void handle_list_api_keys(edge_self* self, const call_ptr& c, const api_key_record*) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, list_keys_atom::value,
                list_keys_request{c->user, c->limit})
    .then([c](std::vector<api_key_record>& keys) { reply(c, 200, render_key_list(keys)); },
          [c](caf::error& e) { reply_error(c, e); });
}

void handle_revoke_api_key(edge_self* self, const call_ptr& c, const api_key_record*) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, revoke_atom::value, c->id)
    .then(
      [self, c](std::int32_t n) {
        if (n == 0)
          return reply_error(c, {errc::not_found, "no API key matches '" + c->id + "'"});
        self->state.keys.forget(c->id);
        // Other nodes drop it from their caches at once; without Redis
        // their cache expiry (2 s) bounds how long it still works there.
        if (self->state.ratelimit)
          self->send(self->state.ratelimit, publish_revoked_atom::value, c->id);
        reply(c, 204, {});
      },
      [c](caf::error& e) { reply_error(c, e); });
}

void handle_cluster_info(edge_self* self, const call_ptr& c, const api_key_record*) {
  self->request(self->state.membership, std::chrono::seconds(5), cluster_atom::value)
    .then(
      [self, c](std::uint64_t version, std::vector<member_info>& ms) {
        // Then every member's figures (the membership actor waits at
        // most its stats timeout for each).
        self->request(self->state.membership, std::chrono::seconds(5), stats_atom::value,
                      cluster_atom::value)
          .then(
            [self, c, version, ms](std::map<std::string, std::string>& stats) {
              reply(c, 200, render_cluster(self->state.cfg.node_id, version, ms, stats));
            },
            [c](caf::error& e) { reply_error(c, e); });
      },
      [c](caf::error& e) { reply_error(c, e); });
}

void handle_admin_actors(edge_self* self, const call_ptr& c, const api_key_record*) {
  reply(c, 200, render_actors(self->state.cfg.node_id, actor_figures()));
}

namespace {

/// The admin session routes first read the session (404 when unknown), then
/// ask the registry of the node that hosts it, which follows a recent move.
template <class F>
void with_session_host(edge_self* self, const call_ptr& c, F next) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, get_sess_atom::value, c->id)
    .then([self, c, next](session_record& s) { next(s, route_to(self, c->id).first); },
          [c](caf::error& e) { reply_error(c, e); });
}

} // namespace

void handle_admin_session(edge_self* self, const call_ptr& c, const api_key_record*) {
  with_session_host(self, c, [self, c](session_record& s, const registry_actor& registry) {
    self->request(registry, std::chrono::seconds(10), where_atom::value, c->id)
      .then([c, s](session_location& w) { reply(c, 200, render_location(s, w)); },
            [c](caf::error& e) { reply_error(c, e); });
  });
}

void handle_migrate_session(edge_self* self, const call_ptr& c, const api_key_record*) {
  with_session_host(self, c, [self, c](session_record&, const registry_actor& registry) {
    self->request(registry, std::chrono::seconds(90), migrate_atom::value, c->id,
                  body_of<net::migrate_body>(c).to)
      .then(
        [c](std::string& node) { reply(c, 200, render_object({{"id", c->id}, {"node", node}})); },
        [c](caf::error& e) { reply_error(c, e); });
  });
}

void handle_drain_node(edge_self* self, const call_ptr& c, const api_key_record*) {
  self->request(self->state.membership, std::chrono::seconds(5), drain_atom::value, c->id)
    .then(
      [c](bool known) {
        if (!known)
          return reply_error(c, {errc::not_found,
                                 "node '" + c->id + "' is not an up member of the cluster"});
        reply(c, 202, render_object({{"node", c->id}, {"status", "leaving"}}));
      },
      [c](caf::error& e) { reply_error(c, e); });
}

} // namespace parley

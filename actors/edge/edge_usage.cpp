// The edge's usage routes: `GET /v1/usage` (the caller's own) and
// `GET /admin/v1/usage?user=` (anyone's), from the per-user daily totals
// (no scan of messages; storage/pg_store.hpp usage_of).

#include "actors/edge/api_render.hpp"
#include "actors/edge/edge_state.hpp"

namespace parley {

namespace {

void answer_usage(edge_self* self, const call_ptr& c, const std::string& user) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, usage_of_atom::value, user, c->limit)
    .then([c](std::vector<usage_total>& rows) { reply(c, 200, render_usage(rows)); },
          [c](caf::error& e) { reply_error(c, e); });
}

} // namespace

void handle_usage(edge_self* self, const call_ptr& c, const api_key_record* key) {
  answer_usage(self, c, key->user_id);
}

/// `GET /admin/v1/usage/top?limit=N`: today's users with the most tokens
/// (the dashboard's table).
void handle_top_usage(edge_self* self, const call_ptr& c, const api_key_record*) {
  auto& st = self->state;
  self->request(st.storage->any(), st.cfg.storage_timeout, top_usage_atom::value, c->limit)
    .then([c](std::vector<usage_total>& rows) { reply(c, 200, render_top_usage(rows)); },
          [c](caf::error& e) { reply_error(c, e); });
}

void handle_admin_usage(edge_self* self, const call_ptr& c, const api_key_record*) {
  if (c->user.empty())
    return reply_error(c, {errc::invalid_request, "query parameter 'user' is required"});
  answer_usage(self, c, c->user);
}

} // namespace parley

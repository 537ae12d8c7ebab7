#include "runtime/http/http_api.hpp"

#include <atomic>
#include <cctype>
#include <chrono>

#include <caf/send.hpp>

#include "actors/edge/api_render.hpp"
#include "actors/edge/edge_actor.hpp"
#include "net/http/cursor.hpp"
#include "net/http/json_text.hpp"
#include "runtime/telemetry/log.hpp"

namespace parley {

namespace {

constexpr std::size_t max_id_length = 128;

/// Records the answer of one request: in the metrics when it starts, in the
/// access log (when on) when it ends, which for a streamed answer is finish().
class recorded_responder final : public net::responder {
public:
  recorded_responder(net::responder_ptr inner, metrics_ptr metrics, net::route r,
                     std::chrono::steady_clock::time_point received)
    : inner_(std::move(inner)), metrics_(std::move(metrics)), route_(r), received_(received) {}

  /// Also writes the request's access log line, with these fields.
  void log_access(const net::http_request& req, std::string session) {
    access_ = true;
    method_ = req.method;
    path_ = req.path;
    request_id_ = req.request_id;
    session_ = std::move(session);
  }

  /// A request dropped unanswered gets a 500 from the connection: record it.
  ~recorded_responder() override {
    if (!answered_.exchange(true))
      record_start(500);
    if (!logged_.exchange(true))
      record_end();
  }

  void send(net::http_response r) override {
    auto status = r.status;
    auto bytes = r.body.size();
    inner_->send(std::move(r));
    if (answered_.exchange(true))
      return;
    record_start(status);
    bytes_ = bytes;
    logged_ = true;
    record_end();
  }

  void start_stream(net::http_response head) override {
    auto status = head.status;
    inner_->start_stream(std::move(head));
    if (!answered_.exchange(true))
      record_start(status);
  }
  void write(std::string chunk, std::shared_ptr<void> hold) override {
    bytes_ += chunk.size();
    inner_->write(std::move(chunk), std::move(hold));
  }
  void finish() override {
    inner_->finish();
    if (!logged_.exchange(true))
      record_end();
  }
  bool closed() const override { return inner_->closed(); }

private:
  void record_start(unsigned status) {
    status_ = status;
    metrics_->http_request(
      net::route_name(route_), status,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - received_).count());
  }

  void record_end() {
    if (!access_)
      return;
    log::line l{log::level::info, "access"};
    l.str("request_id", request_id_);
    if (!session_.empty())
      l.str("session", session_);
    l.ms("latency_ms", std::chrono::steady_clock::now() - received_)
      .str("method", method_)
      .str("path", path_)
      .str("route", net::route_name(route_))
      .num("status", status_)
      .num("bytes", static_cast<std::int64_t>(bytes_.load()))
      .write();
  }

  net::responder_ptr inner_;
  metrics_ptr metrics_;
  net::route route_;
  std::chrono::steady_clock::time_point received_;
  bool access_ = false;
  std::string method_, path_, request_id_, session_;
  std::atomic<unsigned> status_{0};
  std::atomic<std::size_t> bytes_{0};
  std::atomic<bool> answered_{false};
  std::atomic<bool> logged_{false};
};

/// Routes whose `{id}` is a session id.
bool names_a_session(net::route r) {
  return net::is_endpoint(r) && net::row_of(r).reaches_session;
}

/// Session ids are made by Parley (hex); anything outside the URL-safe
/// unreserved characters cannot name one, so it is not looked up at all.
bool plausible_session_id(std::string_view id) {
  if (id.empty())
    return false;
  for (unsigned char c : id)
    if (!std::isalnum(c) && c != '-' && c != '_' && c != '.' && c != '~')
      return false;
  return true;
}

void answer_error(const net::responder_ptr& out, const api_error& e,
                  net::header_list headers = {}) {
  net::http_response r;
  r.status = http_status(e.code);
  r.body = error_body(e);
  r.headers = std::move(headers);
  out->send(std::move(r));
}

std::string bearer_token(const std::string& authorization) {
  constexpr std::string_view scheme = "bearer ";
  if (authorization.size() <= scheme.size())
    return {};
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i])
      return {};
  auto token = authorization.substr(scheme.size());
  auto b = token.find_first_not_of(' ');
  return b == std::string::npos ? std::string{} : token.substr(b);
}

template <class T>
bool take(net::parsed<T>&& p, T& out, http_call& call) {
  if (!p) {
    if (!call.early_error)
      call.early_error = std::move(p.error);
    return false;
  }
  out = std::move(p.value);
  return true;
}

/// Fills the call's body and query fields; the first problem becomes its
/// early error.
void parse_inputs(const net::http_request& req, http_call& call) {
  bool has_body = req.body.find_first_not_of(" \t\r\n") != std::string::npos;
  if (has_body && !req.content_type.empty() && !net::is_json_content_type(req.content_type)) {
    call.early_error = api_error{errc::unsupported_media_type,
                                 "the body must be JSON (Content-Type: application/json), not '" +
                                   req.content_type + "'"};
    return;
  }
  if (names_a_session(call.route) &&
      (call.id.size() > max_id_length || !plausible_session_id(call.id))) {
    call.early_error = api_error{errc::not_found, "session not found"};
    return;
  }
  if (call.id.size() > max_id_length) {
    call.early_error = api_error{errc::not_found, "not found: the id in the path is over " +
                                                    std::to_string(max_id_length) +
                                                    " characters"};
    return;
  }
  net::query_map q;
  if (!take(net::parse_query(req.query), q, call))
    return;
  auto& row = net::row_of(call.route);
  if (!take(net::parse_body(row.body, req.body), call.body, call))
    return;
  if (req.idempotency_key && (call.route == net::route::create_response ||
                              call.route == net::route::create_conversation)) {
    auto n = net::utf8_length(*req.idempotency_key);
    if (n == 0 || n > net::max_client_message_id_chars) {
      call.early_error =
        api_error{errc::invalid_request, "the Idempotency-Key header must be 1 to 128 characters"};
      return;
    }
    call.idempotency_key = *req.idempotency_key;
  }
  if (auto* p = std::get_if<net::post_message_body>(&call.body))
    call.stream = p->stream_given ? p->stream
                                  : req.accept.find("text/event-stream") != std::string::npos;
  else if (auto* ch = std::get_if<net::chat_completion_body>(&call.body))
    call.stream = ch->stream;
  else if (auto* rb = std::get_if<net::create_response_body>(&call.body))
    call.stream = rb->stream;
  switch (row.query) {
    case net::query_parser::none:
      break;
    case net::query_parser::session_page: {
      std::int64_t limit = 0;
      if (!take(net::query_int(q, "limit", 20, 1, 100), limit, call))
        return;
      call.limit = static_cast<std::int32_t>(limit);
      if (auto c = q.find("cursor"); c != q.end() && !c->second.empty()) {
        std::string ts, id;
        if (!net::decode_cursor(c->second, ts, id)) {
          call.early_error = api_error{errc::invalid_request, "query parameter 'cursor' is not a "
                                                              "cursor this API returned"};
          return;
        }
        call.cursor = c->second;
      }
      break;
    }
    case net::query_parser::page_token:
      // A browser cannot send a header when opening a page: the token may
      // come as ?token= instead (the page then drops it from the address bar).
      if (auto t = q.find("token"); t != q.end() && call.bearer.empty())
        call.bearer = t->second;
      break;
    case net::query_parser::key_list:
    case net::query_parser::usage_days: {
      std::int64_t limit = 0;
      bool keys = row.query == net::query_parser::key_list;
      if (!take(keys ? net::query_int(q, "limit", 100, 1, 1000) : net::query_int(q, "days", 7, 1, 90),
                limit, call))
        return;
      call.limit = static_cast<std::int32_t>(limit);
      if (auto u = q.find("user"); u != q.end()) {
        if (u->second.empty() || net::utf8_length(u->second) > 128) {
          call.early_error = api_error{errc::invalid_request,
                                      "query parameter 'user' must be 1 to 128 characters"};
          return;
        }
        call.user = u->second;
      }
      break;
    }
    case net::query_parser::top_limit: {
      std::int64_t limit = 0;
      if (!take(net::query_int(q, "limit", 10, 1, 100), limit, call))
        return;
      call.limit = static_cast<std::int32_t>(limit);
      break;
    }
    case net::query_parser::message_page: {
      std::int64_t limit = 0;
      if (!take(net::query_int(q, "limit", 50, 1, 500), limit, call) ||
          !take(net::query_int(q, "after", 0, 0, INT64_MAX), call.after, call))
        return;
      call.limit = static_cast<std::int32_t>(limit);
      break;
    }
    case net::query_parser::item_page: {
      // `after` is an item id, resolved against the conversation by the edge.
      std::int64_t limit = 0;
      if (!take(net::query_int(q, "limit", 20, 1, 100), limit, call))
        return;
      call.limit = static_cast<std::int32_t>(limit);
      if (auto o = q.find("order"); o != q.end() && o->second != "desc") {
        if (o->second != "asc") {
          call.early_error =
            api_error{errc::invalid_request, "query parameter 'order' must be 'asc' or 'desc'"};
          return;
        }
        call.ascending = true;
      }
      if (auto a = q.find("after"); a != q.end() && !a->second.empty()) {
        if (a->second.size() > 256) {
          call.early_error =
            api_error{errc::invalid_request, "query parameter 'after' is not an item id"};
          return;
        }
        call.cursor = a->second;
      }
      break;
    }
  }
}

/// The routes the table gives to this adapter: no actor on their path.
void answer_here(net::route r, const net::responder_ptr& out, node_metrics& metrics,
                 const health_ptr& health) {
  net::http_response res;
  switch (r) {
    case net::route::healthz: {
      auto failing = health ? health->failing() : std::vector<std::string>{};
      res.status = failing.empty() ? 200 : 503;
      res.body = render_health(failing);
      break;
    }
    case net::route::metrics:
      metrics.log_lines_dropped(log::dropped());
      res.body = metrics.scrape();
      res.content_type = "text/plain; version=0.0.4; charset=utf-8";
      break;
    default:
      return answer_error(out, {errc::internal, "no handler for route " +
                                                  std::string{net::route_name(r)}});
  }
  out->send(std::move(res));
}

} // namespace

net::request_handler make_http_handler(edge_actor edge, metrics_ptr metrics, access_log access,
                                       health_ptr health) {
  return [edge, metrics, access, health](net::http_request&& req, net::responder_ptr raw) {
    auto m = net::match_route(req.method, req.path);
    metrics->http_started();
    auto recorded =
      std::make_shared<recorded_responder>(std::move(raw), metrics, m.r, req.received);
    if (access == access_log::on)
      recorded->log_access(req, names_a_session(m.r) ? m.id : std::string{});
    net::responder_ptr out = std::move(recorded);
    if (m.r == net::route::not_found)
      return answer_error(out, {errc::not_found, "no route for " + req.method + " " + req.path});
    if (m.r == net::route::method_not_allowed)
      return answer_error(out,
                          {errc::method_not_allowed, req.method + " is not allowed on " +
                                                       req.path + "; allowed: " + m.allow},
                          {{"Allow", m.allow}});
    if (net::row_of(m.r).by == net::answered_by::http)
      return answer_here(m.r, out, *metrics, health);
    http_call call;
    call.route = m.r;
    call.id = std::move(m.id);
    call.bearer = bearer_token(req.authorization);
    call.request_id = req.request_id;
    call.peer = req.peer;
    if (!m.seq.empty()) { // a route with `{seq}`
      if (auto seq = net::parse_seq(m.seq))
        call.seq = *seq;
      else
        call.early_error = api_error{errc::not_found, "message '" + m.seq + "' not found"};
    }
    if (!call.early_error)
      parse_inputs(req, call);
    call.out = std::move(out);
    caf::anon_send(edge, std::move(call));
  };
}

} // namespace parley

#include "actors/llm_actor.hpp"

#include <stdexcept>
#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/messages.hpp"
#include "net/http_client.hpp"

namespace parley {

namespace {

struct llm_state {
  llm_config cfg;
  std::shared_ptr<net::http_client> client; ///< null: echo model
  std::unordered_map<std::uint64_t, std::pair<caf::response_promise, std::string>> pending;
  std::uint64_t next_id = 0;
};

using llm_self = caf::stateful_actor<llm_state>;

std::string request_body(const llm_request& req) {
  nlohmann::json msgs = nlohmann::json::array();
  for (auto& m : req.messages)
    msgs.push_back({{"role", m.role}, {"content", m.content}});
  return nlohmann::json{{"model", req.model}, {"messages", std::move(msgs)}}.dump();
}

/// Interprets an upstream answer; sets `err` when it is not a completion.
llm_result parse_completion(const std::string& body, const std::string& model, caf::error& err) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  llm_result r;
  r.model = model;
  try {
    if (!j.is_discarded()) {
      auto& content = j.at("choices").at(0).at("message").at("content");
      if (content.is_string()) {
        r.content = content.get<std::string>();
        if (auto m = j.find("model"); m != j.end() && m->is_string())
          r.model = m->get<std::string>();
        return r;
      }
    }
  } catch (const nlohmann::json::exception&) {
  }
  err = make_error(errc::upstream_error, "the model upstream sent a response Parley cannot read");
  return r;
}

caf::behavior llm_actor(llm_self* self, net::io_runtime* io, llm_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  if (!st.cfg.base_url.empty()) {
    std::string err;
    auto url = net::parse_upstream_url(st.cfg.base_url, err);
    if (!url)
      throw std::invalid_argument("PARLEY_LLM_BASE_URL: " + err);
    net::client_options opts;
    opts.pool_size = st.cfg.pool_size;
    st.client = std::make_shared<net::http_client>(*io, std::move(*url), opts);
  }
  return {
    [self, &st](llm_call_atom, llm_request& req) -> caf::result<llm_result> {
      if (req.model.empty())
        req.model = st.cfg.default_model;
      if (!st.client) {
        // The echo model answers with the newest message, unchanged.
        llm_result r;
        r.model = echo_model;
        if (!req.messages.empty())
          r.content = req.messages.back().content;
        return r;
      }
      auto id = ++st.next_id;
      st.pending.emplace(id, std::make_pair(self->make_response_promise(), req.model));
      auto me = caf::actor_cast<caf::actor>(self);
      st.client->post_json("/chat/completions", request_body(req), st.cfg.api_key, st.cfg.timeout,
                           [me, id](net::fetch_result r) {
                             caf::anon_send(me, llm_done_atom::value, id,
                                            static_cast<std::int32_t>(r.status), r.http_status,
                                            std::move(r.body), std::move(r.error));
                           });
      return caf::delegated<llm_result>{};
    },
    [&st](llm_done_atom, std::uint64_t id, std::int32_t status, std::uint32_t http_status,
          const std::string& body, const std::string& what) {
      auto it = st.pending.find(id);
      if (it == st.pending.end())
        return;
      auto rp = std::move(it->second.first);
      auto model = std::move(it->second.second);
      st.pending.erase(it);
      switch (static_cast<net::fetch_status>(status)) {
        case net::fetch_status::ok: {
          if (http_status < 200 || http_status >= 300) {
            rp.deliver(make_error(errc::upstream_error, "the model upstream answered HTTP " +
                                                          std::to_string(http_status)));
            return;
          }
          caf::error err;
          auto r = parse_completion(body, model, err);
          if (err)
            rp.deliver(std::move(err));
          else
            rp.deliver(std::move(r));
          return;
        }
        case net::fetch_status::timeout:
          rp.deliver(make_error(errc::upstream_timeout,
                                "the model upstream did not answer within " +
                                  std::to_string(st.cfg.timeout.count()) + " ms"));
          return;
        case net::fetch_status::overloaded:
          rp.deliver(make_error(errc::overloaded, "too many model calls are waiting; retry shortly"));
          return;
        default:
          rp.deliver(make_error(errc::upstream_error, "cannot reach the model upstream: " + what));
      }
    },
  };
}

} // namespace

caf::actor spawn_llm_actor(caf::actor_system& sys, net::io_runtime& io, const llm_config& cfg) {
  if (!cfg.base_url.empty()) {
    std::string err;
    if (!net::parse_upstream_url(cfg.base_url, err))
      throw std::invalid_argument("PARLEY_LLM_BASE_URL: " + err);
  }
  return sys.spawn(llm_actor, &io, cfg);
}

} // namespace parley

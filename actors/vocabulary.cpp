#include "actors/vocabulary.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/sec.hpp>

namespace parley {

caf::error make_error(errc code, std::string message) {
  return caf::error{static_cast<std::uint8_t>(code), error_category,
                    caf::make_message(std::move(message))};
}

api_error to_api_error(const caf::error& e) {
  if (e.category() == error_category) {
    api_error out{static_cast<errc>(e.code()), {}};
    if (e.context().match_elements<std::string>())
      out.message = e.context().get_as<std::string>(0);
    return out;
  }
  if (e.category() == caf::atom("system")) {
    switch (static_cast<caf::sec>(e.code())) {
      case caf::sec::request_timeout:
        return {errc::overloaded, "the node did not answer in time; retry shortly"};
      case caf::sec::request_receiver_down:
        return {errc::session_moved, "the session moved while the request was on its way; retry"};
      default:
        break;
    }
  }
  return {errc::internal, "internal error"};
}

const char* to_string(member_status s) {
  switch (s) {
    case member_status::up: return "up";
    case member_status::leaving: return "leaving";
    case member_status::down: return "down";
  }
  return "down";
}

const char* to_string(session_state s) {
  return s == session_state::active ? "active" : "passive";
}

bool from_string(const std::string& s, session_state& out) {
  if (s == "active")
    out = session_state::active;
  else if (s == "passive")
    out = session_state::passive;
  else
    return false;
  return true;
}

void register_ratelimit_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<rate_check_request>("parley.rate_check_request");
  cfg.add_message_type<rate_decision>("parley.rate_decision");
  cfg.add_message_type<budget_settlement>("parley.budget_settlement");
}

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<token_usage>("parley.token_usage");
  cfg.add_message_type<usage_total>("parley.usage_total");
  cfg.add_message_type<std::vector<usage_total>>("parley.usage_list");
  cfg.add_message_type<message_record>("parley.message");
  cfg.add_message_type<std::vector<message_record>>("parley.message_list");
  cfg.add_message_type<session_record>("parley.session");
  cfg.add_message_type<activation_record>("parley.activation");
  cfg.add_message_type<turn_write>("parley.turn_write");
  cfg.add_message_type<commit_outcome>("parley.commit_outcome");
  cfg.add_message_type<feedback_outcome>("parley.feedback_outcome");
  cfg.add_message_type<api_key_record>("parley.api_key");
  cfg.add_message_type<session_page>("parley.session_page");
  cfg.add_message_type<message_page>("parley.message_page");
  cfg.add_message_type<response_options>("parley.response_options");
  cfg.add_message_type<response_record>("parley.response_record");
  cfg.add_message_type<turn_request>("parley.turn_request");
  cfg.add_message_type<turn_reply>("parley.turn_reply");
  cfg.add_message_type<llm_message>("parley.llm_message");
  cfg.add_message_type<llm_request>("parley.llm_request");
  cfg.add_message_type<llm_result>("parley.llm_result");
  cfg.add_message_type<client_id_hit>("parley.client_id_hit");
  cfg.add_message_type<member_info>("parley.member");
  cfg.add_message_type<std::vector<member_info>>("parley.member_list");
  cfg.add_message_type<handoff_state>("parley.handoff");
  cfg.add_message_type<session_location>("parley.location");
  cfg.add_message_type<member_status>("parley.member_status");
  cfg.add_message_type<llm_attempt_done>("parley.llm_attempt_done");
  cfg.add_message_type<adopt_request>("parley.adopt_request");
  cfg.add_message_type<feedback_request>("parley.feedback_request");
  cfg.add_message_type<make_key_request>("parley.make_key_request");
  cfg.add_message_type<list_keys_request>("parley.list_keys_request");
  cfg.add_message_type<std::vector<api_key_record>>("parley.api_key_list");
  cfg.add_message_type<list_sessions_request>("parley.list_sessions_request");
  cfg.add_message_type<list_messages_request>("parley.list_messages_request");
  cfg.add_message_type<update_metadata_request>("parley.update_metadata_request");
  cfg.add_message_type<append_write>("parley.append_write");
  cfg.add_message_type<fork_request>("parley.fork_request");
  cfg.add_message_type<response_ref>("parley.response_ref");
  cfg.add_message_type<pin_request>("parley.pin");
  register_ratelimit_types(cfg);
  cfg.add_error_category(error_category, [](std::uint8_t code, caf::atom_value, const caf::message& ctx) {
    std::string s{"parley."};
    s += code_name(static_cast<errc>(code));
    if (ctx.match_elements<std::string>())
      s += ": " + ctx.get_as<std::string>(0);
    return s;
  });
}

} // namespace parley

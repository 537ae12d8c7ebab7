#pragma once
// JSON renderings of Parley's records for the HTTP API (API.md section 4).

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/telemetry/actor_stats.hpp"
#include "actors/vocabulary.hpp"

namespace parley {

std::string render_session(const session_record& s);
std::string render_session_page(const session_page& p);
std::string render_message_page(const message_page& p);
std::string render_turn(const turn_reply& t);
std::string render_created_key(const api_key_record& k, const std::string& secret);
/// `{"data": [key...]}`: id, user, prefix, created_at, revoked,
/// token_budget_per_day (null: the node's default), models (null: any).
std::string render_key_list(const std::vector<api_key_record>& keys);
/// `{"data": [{"date", "model", "requests", "prompt_tokens", "completion_tokens"}...]}`
/// (API.md section 4, usage).
std::string render_usage(const std::vector<usage_total>& rows);
/// `{"data": [{"user", "date", "requests", "prompt_tokens", "completion_tokens"}...]}`.
std::string render_top_usage(const std::vector<usage_total>& rows);
/// OpenAI `chat.completion` (`POST /v1/chat/completions`) of the echo model
/// (an upstream's answer is relayed as it came), with `usage` when known.
std::string render_completion(const std::string& id, std::int64_t created, const llm_result& r);
/// One OpenAI `chat.completion.chunk` as an SSE `data:` line: the first has
/// the role, then one per piece, the last an empty delta with finish_reason.
std::string render_completion_chunk(const std::string& id, std::int64_t created,
                                    const std::string& model, const std::string* piece,
                                    bool first, bool last);
/// An upstream's chunk as the client gets it: its data unchanged as one SSE
/// event (`data: ...`, a line of its own per line of the data).
std::string render_relayed_chunk(const std::string& data);
/// A whole `chat.completion` (an upstream that ignored `stream`) as the
/// chunks of a stream: one per choice with its message as the delta
/// (tool_calls indexed), its logprobs and finish_reason, then the usage
/// chunk when `include_usage` and the answer has usage. Empty when `raw`
/// is no completion.
std::vector<std::string> render_completion_as_chunks(const std::string& raw, bool include_usage);
/// OpenAI's final usage chunk (`choices: []`), for a stream Parley renders.
std::string render_usage_chunk(const std::string& id, std::int64_t created,
                               const std::string& model, const token_usage& usage);
/// `GET /v1/models`.
std::string render_models(const std::vector<std::string>& ids);
/// A flat JSON object of string fields, in the given order.
std::string render_object(const std::vector<std::pair<std::string, std::string>>& fields);
/// `GET /admin/v1/cluster`: this node's view, itself first.
/// `stats` holds the figures each node sent (a JSON object as text, see
/// node_metrics::stats_json); a member missing from it gets "stats": null.
std::string render_cluster(const std::string& self_id, std::uint64_t view_version,
                           const std::vector<member_info>& members,
                           const std::map<std::string, std::string>& stats);
/// `GET /admin/v1/actors`: this node's actor types.
std::string render_actors(const std::string& node_id, const std::vector<actor_type_figures>& types);
/// `GET /admin/v1/sessions/{id}`.
std::string render_location(const session_record& s, const session_location& where);
/// One streamed piece of a reply as the Server-Sent Event `delta`.
std::string render_delta_sse(std::string_view piece);
/// The end of a streamed turn: `done` with the non-streaming body.
std::string render_done_sse(const turn_reply& t);
/// A failure as one Server-Sent Event `error`.
std::string render_error_sse(const api_error& e);
/// A failure in a streamed chat completion: one `data:` line (OpenAI's shape).
std::string render_completion_error_sse(const api_error& e);
/// `POST .../messages/{seq}/feedback` (201).
std::string render_feedback(const std::string& session_id, std::int64_t seq, int rating);
/// `GET /healthz`: `failing` names the core actors that do not answer.
std::string render_health(const std::vector<std::string>& failing);
/// `GET /readyz`: each check's word ("ok", "down", "off", "joining", ...).
std::string render_ready(bool ready, const std::string& postgres, const std::string& redis,
                         const std::string& cluster, const std::string& actors);

} // namespace parley

#pragma once
// The mock's domain: failure-injection config, the request log and the
// OpenAI-shaped documents it answers with. No networking here.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace mock_llm {

using json = nlohmann::ordered_json; ///< keeps keys in the order written

/// What a failing chat request does.
enum class failure_mode { normal, hang, close, cut_stream, stall_stream };

/// The failure a chat request receives, decided by mock_state::take_failure().
enum class failure_kind { none, status, hang, close, cut_stream, stall_stream };

/// The default `fail_body`: an OpenAI error document saying "injected failure".
std::string default_fail_body();

/// Runtime behaviour, changed through /_mock/config.
struct mock_config {
  std::chrono::milliseconds latency{0};
  std::chrono::milliseconds chunk_delay{0};
  /// When > 0, a streamed reply is this many pieces, each carrying the time it
  /// is written (`stamp_placeholder`, filled in by the server): benchmarks
  /// measure per-piece latency from it. 0: the reply text in 4-character pieces.
  int stamp_pieces = 0;
  int fail_status = 0;   ///< HTTP status of injected failures in mode normal; 0 = none
  int fail_count = -1;   ///< failures left: -1 = every request, 0 = none
  int retry_after = 0;   ///< seconds; sent as Retry-After when > 0
  std::string fail_body = default_fail_body(); ///< body of injected failures
  failure_mode mode = failure_mode::normal;
  /// When set, chat requests must carry `Authorization: Bearer <api_key>`;
  /// others get OpenAI's 401 (`invalid_api_key`). Empty: any key or none.
  std::string api_key;
  /// When set, a streamed reply is these events' data, each sent as
  /// `data: <text>`, in order, and nothing else (no finish chunk, no
  /// [DONE] unless listed); the stream then ends cleanly. For upstreams that
  /// misbehave: cut answers, error events, bad chunks.
  std::vector<std::string> stream_script;
};

/// The config as the JSON object /_mock/config shows.
json to_json(const mock_config& config);

/// Applies the fields present in `patch` to `config`. All or nothing: returns
/// an error message (and leaves `config` unchanged) on an unknown field, a
/// wrong type or an out-of-range value.
std::optional<std::string> apply_patch(mock_config& config, const json& patch);

/// Parses untrusted text as JSON. Returns a discarded value (is_discarded())
/// when it is not JSON or nests deeper than the recursive dump() can take.
json parse_json(std::string_view text);

/// Serializes without throwing: invalid UTF-8 is replaced by U+FFFD.
std::string dump(const json& value);

/// `{"error":{"message":..,"type":..,"code":..,"param":..}}`, OpenAI's error
/// shape; `param` is null when empty.
std::string error_body(std::string_view message, std::string_view type = "invalid_request_error",
                       std::string_view code = "invalid_request", std::string_view param = {});

/// A function the request offers in `tools`, and the arguments the mock calls it with.
struct tool_call_plan {
  std::string name;
  std::string arguments; ///< JSON text built from the tool's parameter schema
};

/// The parts of a Chat Completions request the mock uses.
struct chat_request {
  std::string model;   ///< the request's model, or "mock"
  std::string reply;   ///< "mock: " + the last message's text (+ " (images: N)")
  bool stream = false;
  int prompt_tokens = 0;
  int choices = 1;                   ///< `n`
  std::optional<tool_call_plan> call; ///< set when the answer is a tool call
  bool logprobs = false;
  int top_logprobs = 0;
  bool include_usage = false; ///< `stream_options.include_usage`
  int max_tokens = 0;         ///< `max_completion_tokens` or `max_tokens`; 0 = no limit
};

/// Why a request is refused: the message and the field it concerns ("" = none).
struct request_error {
  std::string message;
  std::string param;
};

/// Validates a parsed request body (`parse_json` output). Returns an error
/// when it is not a JSON object or a field the mock uses has the wrong type
/// or range. A missing `messages` counts as an empty conversation.
std::optional<request_error> read_chat_request(const json& body, chat_request& out);

/// Number of whitespace-separated words: the mock's token estimate.
int count_words(std::string_view text);

/// Example arguments for a JSON Schema: strings are `text`, numbers 1,
/// booleans true, an enum its first value, objects every property, arrays one
/// element. Deterministic.
json example_arguments(const json& schema, const std::string& text);

/// One choice of an answer.
struct choice_answer {
  std::string content;         ///< the text (empty for a tool call)
  std::optional<tool_call_plan> call;
  std::string call_id;         ///< `call_mock_<n>_<index>` for a tool call
  std::string finish_reason;   ///< "stop", "length" or "tool_calls"
  int completion_tokens = 0;
};

/// The choices of the answer to request number `n`: choice 0's text is
/// `req.reply`, choice i > 0's starts "mock#i: " instead; texts longer than
/// `max_tokens` words are cut there with finish_reason "length".
std::vector<choice_answer> answer_choices(const chat_request& req, std::uint64_t n);

/// The non-streaming `chat.completion` document for request number `n`.
json completion_document(const chat_request& req, std::uint64_t n, std::int64_t created);

/// The server-sent events of a streamed reply, each a complete `data: ...\n\n` frame.
struct stream_reply {
  std::vector<std::string> events;
  std::size_t content_events = 0; ///< the leading events before the first finish chunk
};

/// The events of a streamed reply: for each choice its pieces (the first
/// carrying the role, a tool call's id and name; choices interleaved), then
/// each choice's finish chunk, with `include_usage` a usage chunk with
/// `choices: []`, then `data: [DONE]`. Always at least one content chunk.
stream_reply stream_events(const chat_request& req, std::uint64_t n, std::int64_t created,
                           int stamp_pieces = 0);

/// The content of each piece of a stamped stream: "T" and 16 digits that the
/// server overwrites, just before writing the piece, with its steady_clock time
/// in microseconds (CLOCK_MONOTONIC on Linux: comparable across processes),
/// then a space.
inline constexpr std::string_view stamp_placeholder = "T################ ";

/// Overwrites the placeholder in `event` (if any) with `micros`, zero-padded.
void stamp_event(std::string& event, std::int64_t micros);

/// Everything the server keeps between requests. Single-threaded: touched only
/// from the one thread that runs the io_context.
class mock_state {
public:
  mock_state(mock_config defaults, std::size_t max_records);

  const mock_config& config() const { return config_; }
  mock_config& config() { return config_; }
  void reset_config() { config_ = defaults_; }

  /// Appends a request to the log (dropping the oldest beyond max_records)
  /// and returns its 1-based number. `body` is the parsed body, or discarded
  /// when the body is not JSON, in which case `raw_body` is logged as a string.
  /// `connection` is the 1-based number of the connection it came on (see
  /// next_connection()), so a client's keep-alive reuse is visible.
  std::uint64_t record(std::string_view method, std::string_view path,
                       std::string_view authorization, const json& body,
                       std::string_view raw_body, std::uint64_t connection);

  /// Numbers an accepted connection: 1, 2, ...
  std::uint64_t next_connection() { return next_connection_++; }

  /// `{"data":[...]}` in arrival order.
  json records_document() const;
  void clear_records() { records_.clear(); }

  /// Decides the failure for the next chat request and counts it down.
  failure_kind take_failure();

  /// Counts a chat request as waiting for its answer (its latency, until the
  /// first byte of the answer is written); the count drops when the returned
  /// token is released. Tracks the peak, so a test sees how many calls a
  /// client had in flight at once.
  std::shared_ptr<void> begin_answer();

  /// `{"in_flight": n, "peak_in_flight": n, "answered": n}`: chat requests
  /// waiting for their answer now, the most at once since start or the last
  /// reset_stats(), and answers begun since then.
  json stats_document() const;
  /// Sets the peak to the current count and `answered` to zero.
  void reset_stats();

private:
  mock_config defaults_;
  mock_config config_;
  std::size_t max_records_;
  std::deque<json> records_;
  std::uint64_t next_n_ = 1;
  std::uint64_t next_connection_ = 1;
  std::uint64_t in_flight_ = 0;
  std::uint64_t peak_in_flight_ = 0;
  std::uint64_t answered_ = 0;
};

} // namespace mock_llm

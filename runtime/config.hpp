#pragma once
// Node configuration: every PARLEY_* setting of API.md section 1 plus
// Parley's extensions, from the environment and an optional KEY=VALUE file
// (environment wins). Pure: parsing never touches the process environment.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/telemetry/log.hpp"

namespace parley {

struct node_config {
  std::string node_id;
  std::string http_host = "127.0.0.1";
  std::uint16_t http_port = 8080;
  std::string cluster_host = "127.0.0.1";
  std::uint16_t cluster_port = 4242;
  std::vector<std::string> seeds;
  /// Mutual TLS on the cluster port (PARLEY_CLUSTER_TLS_*): PEM files, all
  /// three set or none; make_config has checked that they load and chain.
  std::string cluster_tls_cert, cluster_tls_key, cluster_tls_ca;
  bool cluster_tls() const { return !cluster_tls_cert.empty(); }
  std::string pg_url;
  std::string redis_url;
  std::string llm_base_url;
  std::string llm_api_key;
  std::string llm_model;
  std::string llm_fallback_base_url;
  std::string llm_ca_file; ///< PEM CAs trusted for https upstreams, beside the system store
  int stream_cancel_on_disconnect = 0; ///< 1: abandon a streamed turn whose client left
  int actor_metrics = 1; ///< 0: no per-message actor instrumentation
  std::string actor_scheduler = "sharing"; ///< CAF scheduler policy: sharing or stealing
  std::chrono::milliseconds llm_timeout{60000};
  std::string admin_token;
  std::int64_t rate_limit_per_min = 600;
  /// Tokens (prompt + completion) per API key per UTC day, cluster-wide,
  /// for keys without a budget of their own; beyond: 429 `budget_exceeded`.
  /// 0: unlimited.
  std::int64_t token_budget_per_day = 0;
  std::size_t context_messages = 20;
  std::int64_t context_tokens = 0; ///< PARLEY_CONTEXT_TOKENS (0: off)
  std::chrono::seconds session_idle{300};
  std::chrono::milliseconds failure_detect{3000};
  /// Connect timeout and TCP keepalive bound of every PostgreSQL connection,
  /// and the longest a statement may go unanswered.
  std::chrono::milliseconds pg_timeout{5000};
  /// Body limit of the gateway routes, which carry whole histories
  /// (`/v1/chat/completions`, `/v1/responses`); the others keep 64 KiB.
  std::size_t gateway_max_body_bytes = 8 * 1024 * 1024;
  // Extensions.
  /// The largest upstream answer (or one event of a stream) Parley reads;
  /// a larger one is cut with 502 upstream_error.
  std::size_t llm_max_response_bytes = 16 * 1024 * 1024;
  bool dev = false;
  std::size_t pg_pool = 4;
  unsigned http_threads = 2;
  unsigned actor_threads = 0; ///< 0: one per core (std::thread::hardware_concurrency)
  std::size_t max_inflight = 10000;
  std::size_t session_queue_limit = 32;
  std::chrono::milliseconds http_header_timeout{10000};
  std::chrono::milliseconds http_idle_timeout{60000};
  /// Upstream connections per upstream; make_config sets it to max_inflight
  /// unless PARLEY_LLM_POOL_SIZE is given (0 before that: "not set").
  std::size_t llm_pool_size = 0;
  int llm_max_attempts = 3;       ///< per upstream, the first included
  int llm_breaker_threshold = 5;  ///< consecutive failures that open a circuit
  std::chrono::milliseconds llm_breaker_cooldown{10000};
  std::size_t max_connections = 20000;
  /// Open HTTP connections per client address (IPv6: per /64); 0: no cap.
  std::size_t max_connections_per_ip = 1000;
  /// Lookups of unknown API keys per client address and minute, as a token
  /// bucket whose burst equals the rate; beyond: 429 `rate_limited`. 0: off.
  std::int32_t auth_failures_per_min = 60;
  log::level log_level = log::level::info;
  bool access_log = true; ///< one info line per answered HTTP request
};

using settings = std::map<std::string, std::string>;

/// Every setting name Parley reads, in documentation order.
const std::vector<std::string>& known_settings();

/// The settings that hold secrets. Each may instead come from a file: NAME_FILE
/// names a file whose content (one line; its trailing line break dropped) is
/// the value, as container platforms mount secrets. NAME and NAME_FILE both set
/// in the same source is a configuration error.
const std::vector<std::string>& secret_settings();

/// The least length of PARLEY_ADMIN_TOKEN outside development mode.
constexpr std::size_t min_admin_token_chars = 32;

/// True for a token that is still a template's placeholder ("change-me",
/// "replace-me", ... in any case), refused outside development mode.
bool is_placeholder_token(const std::string& token);

/// Reads `KEY=VALUE` lines ('#' comments, blank lines, optional `export `
/// prefix, optional surrounding quotes). False with `err` set on a bad line
/// or an unknown PARLEY_* key.
bool read_config_file(const std::string& path, settings& out, std::string& err);

/// The PARLEY_* variables of the process environment.
settings settings_from_environment();

/// The file descriptors a node with this configuration may hold at once:
/// client connections, the upstream pools (one per upstream), PostgreSQL
/// connections and a reserve for listeners, Redis, cluster peers and logs.
std::size_t descriptors_needed(const node_config& c);

/// Builds the configuration from file values overridden by environment
/// values. On failure returns false and sets `err` to one line that names
/// the bad setting. `hostname` feeds the default node id.
bool make_config(const settings& file, const settings& env, const std::string& hostname,
                 node_config& out, std::string& err);

} // namespace parley

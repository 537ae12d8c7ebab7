#include "runtime/config.hpp"

#include "runtime/cluster_tls.hpp"
#include "storage/pg_conninfo.hpp"
#include "storage/records.hpp"
#include "storage/redis_client.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>

extern char** environ;

namespace parley {

const std::vector<std::string>& known_settings() {
  static const std::vector<std::string> names{
    "PARLEY_NODE_ID", "PARLEY_HTTP_HOST", "PARLEY_HTTP_PORT", "PARLEY_CLUSTER_HOST",
    "PARLEY_CLUSTER_PORT", "PARLEY_SEEDS", "PARLEY_PG_URL", "PARLEY_REDIS_URL",
    "PARLEY_LLM_BASE_URL", "PARLEY_LLM_API_KEY", "PARLEY_LLM_MODEL",
    "PARLEY_LLM_FALLBACK_BASE_URL", "PARLEY_LLM_TIMEOUT_MS", "PARLEY_ADMIN_TOKEN",
    "PARLEY_RATE_LIMIT_PER_MIN", "PARLEY_CONTEXT_MESSAGES", "PARLEY_CONTEXT_TOKENS",
    "PARLEY_SESSION_IDLE_SECONDS",
    "PARLEY_FAILURE_DETECT_MS", "PARLEY_PG_TIMEOUT_MS", "PARLEY_TOKEN_BUDGET_PER_DAY",
    "PARLEY_GATEWAY_MAX_BODY_BYTES",
    "PARLEY_CLUSTER_TLS_CERT", "PARLEY_CLUSTER_TLS_KEY", "PARLEY_CLUSTER_TLS_CA",
    // Extensions.
    "PARLEY_DEV", "PARLEY_PG_POOL", "PARLEY_HTTP_THREADS", "PARLEY_ACTOR_THREADS",
    "PARLEY_MAX_INFLIGHT", "PARLEY_SESSION_QUEUE_LIMIT", "PARLEY_HTTP_HEADER_TIMEOUT_MS",
    "PARLEY_HTTP_IDLE_TIMEOUT_MS", "PARLEY_LLM_POOL_SIZE", "PARLEY_MAX_CONNECTIONS",
    "PARLEY_LOG_LEVEL", "PARLEY_LLM_MAX_ATTEMPTS", "PARLEY_LLM_BREAKER_THRESHOLD",
    "PARLEY_LLM_BREAKER_COOLDOWN_MS", "PARLEY_LLM_CA_FILE", "PARLEY_STREAM_CANCEL_ON_DISCONNECT",
    "PARLEY_ACTOR_METRICS", "PARLEY_ACCESS_LOG", "PARLEY_ACTOR_SCHEDULER",
    "PARLEY_MAX_CONNECTIONS_PER_IP", "PARLEY_AUTH_FAILURES_PER_MIN",
    "PARLEY_LLM_MAX_RESPONSE_BYTES",
    // Secrets from files (secret_settings()), as container platforms mount them.
    "PARLEY_PG_URL_FILE", "PARLEY_REDIS_URL_FILE", "PARLEY_LLM_API_KEY_FILE",
    "PARLEY_ADMIN_TOKEN_FILE"};
  return names;
}

const std::vector<std::string>& secret_settings() {
  static const std::vector<std::string> names{"PARLEY_PG_URL", "PARLEY_REDIS_URL",
                                              "PARLEY_LLM_API_KEY", "PARLEY_ADMIN_TOKEN"};
  return names;
}

bool is_placeholder_token(const std::string& token) {
  std::string t;
  for (char ch : token)
    t += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const char* word : {"change-me", "changeme", "change_me", "replace-me", "placeholder"})
    if (t.find(word) != std::string::npos)
      return true;
  return false;
}

namespace {

/// The longest secret file read (a URL or a token is far shorter).
constexpr std::size_t max_secret_file_bytes = 64 * 1024;

bool is_known(const std::string& k) {
  auto& all = known_settings();
  return std::find(all.begin(), all.end(), k) != all.end();
}

std::string trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r");
  auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string{} : s.substr(b, e - b + 1);
}

/// Reads settings one by one, remembering the first error.
class reader {
public:
  reader(const settings& file, const settings& env) : file_(file), env_(env) {}

  const std::string* raw(const std::string& key) const {
    if (auto it = env_.find(key); it != env_.end())
      return &it->second;
    if (auto it = file_.find(key); it != file_.end())
      return &it->second;
    return nullptr;
  }

  void text(const std::string& key, std::string& out) {
    if (auto v = raw(key))
      out = *v;
  }

  /// A secret: the value of `key`, or the content of the file that
  /// `key`_FILE names. The two are one setting: the environment's pair wins
  /// over the config file's, and setting both (non-empty) in one source is an
  /// error, so a stale variable can never silently override a mounted file.
  /// The file's trailing line break and blanks are dropped; an empty or
  /// multi-line file is an error. Messages name the file, never its content.
  void secret(const std::string& key, std::string& out) {
    const auto file_key = key + "_FILE";
    for (const settings* src : {&env_, &file_}) {
      auto v = src->find(key);
      auto f = src->find(file_key);
      if (v == src->end() && f == src->end())
        continue;
      bool has_value = v != src->end() && !v->second.empty();
      bool has_file = f != src->end() && !f->second.empty();
      if (has_value && has_file)
        return fail(key + " and " + file_key + ": both are set; set one of them");
      if (!has_file) {
        if (v != src->end())
          out = v->second;
        return;
      }
      const auto& path = f->second;
      std::ifstream in{path, std::ios::binary};
      if (!in)
        return fail(file_key + ": cannot read '" + path + "'");
      std::string content(max_secret_file_bytes + 1, '\0');
      in.read(content.data(), static_cast<std::streamsize>(content.size()));
      content.resize(static_cast<std::size_t>(in.gcount()));
      if (content.size() > max_secret_file_bytes)
        return fail(file_key + ": '" + path + "' is larger than " +
                    std::to_string(max_secret_file_bytes / 1024) + " KiB");
      auto end = content.find_last_not_of(" \t\r\n");
      content.resize(end == std::string::npos ? 0 : end + 1);
      if (content.empty())
        return fail(file_key + ": '" + path + "' is empty");
      if (content.find_first_of("\r\n") != std::string::npos)
        return fail(file_key + ": '" + path + "' holds more than one line");
      out = std::move(content);
      return;
    }
  }

  template <class T>
  void integer(const std::string& key, T& out, std::int64_t lo, std::int64_t hi) {
    auto v = raw(key);
    if (!v || v->empty())
      return;
    std::int64_t x = 0;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
    if (ec != std::errc{} || p != v->data() + v->size() || x < lo || x > hi)
      return fail(key + ": expected an integer from " + std::to_string(lo) + " to " +
                  std::to_string(hi) + ", got '" + *v + "'");
    out = static_cast<T>(x);
  }

  template <class Duration>
  void duration(const std::string& key, Duration& out, std::int64_t lo, std::int64_t hi) {
    std::int64_t n = out.count();
    integer(key, n, lo, hi);
    out = Duration{n};
  }

  void flag(const std::string& key, bool& out) {
    auto v = raw(key);
    if (!v || v->empty())
      return;
    if (*v == "1" || *v == "true" || *v == "yes")
      out = true;
    else if (*v == "0" || *v == "false" || *v == "no")
      out = false;
    else
      fail(key + ": expected 1 or 0, got '" + *v + "'");
  }

  void fail(std::string e) {
    if (err.empty())
      err = std::move(e);
  }

  std::string err;

private:
  const settings& file_;
  const settings& env_;
};

/// PARLEY_CLUSTER_TLS_CERT, _KEY and _CA: all three (checked as the cluster
/// port will load them) or none; one or two alone is an error, never a
/// silent fall-back to the plain port.
void read_cluster_tls(reader& r, node_config& c) {
  const std::pair<const char*, std::string*> tls[] = {
    {"PARLEY_CLUSTER_TLS_CERT", &c.cluster_tls_cert},
    {"PARLEY_CLUSTER_TLS_KEY", &c.cluster_tls_key},
    {"PARLEY_CLUSTER_TLS_CA", &c.cluster_tls_ca}};
  std::string set, unset;
  for (auto& [name, value] : tls) {
    r.text(name, *value);
    auto& list = value->empty() ? unset : set;
    list += (list.empty() ? "" : ", ") + std::string{name};
  }
  if (set.empty())
    return;
  if (!unset.empty())
    return r.fail(unset + ": required with " + set +
                  " (mutual TLS on the cluster port takes all three PARLEY_CLUSTER_TLS_* "
                  "settings; none leaves it plain)");
  if (auto e = check_cluster_tls(c.cluster_tls_cert, c.cluster_tls_key, c.cluster_tls_ca);
      !e.empty())
    r.fail(e);
}

bool valid_host_port(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    return false;
  return s.find_first_not_of("0123456789", colon + 1) == std::string::npos;
}

} // namespace

bool read_config_file(const std::string& path, settings& out, std::string& err) {
  std::ifstream in{path};
  if (!in) {
    err = "--config: cannot read '" + path + "'";
    return false;
  }
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = trim(line);
    if (line.empty() || line[0] == '#')
      continue;
    if (line.rfind("export ", 0) == 0)
      line = trim(line.substr(7));
    auto eq = line.find('=');
    if (eq == std::string::npos) {
      err = "--config: " + path + ":" + std::to_string(n) + ": expected KEY=VALUE";
      return false;
    }
    auto key = trim(line.substr(0, eq));
    auto value = trim(line.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front())
      value = value.substr(1, value.size() - 2);
    if (!is_known(key)) {
      err = "--config: " + path + ":" + std::to_string(n) + ": unknown setting '" + key + "'";
      return false;
    }
    out[key] = value;
  }
  return true;
}

settings settings_from_environment() {
  settings s;
  for (char** e = environ; e && *e; ++e) {
    std::string kv{*e};
    if (kv.rfind("PARLEY_", 0) != 0)
      continue;
    auto eq = kv.find('=');
    if (eq != std::string::npos)
      s[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return s;
}

std::size_t descriptors_needed(const node_config& c) {
  std::size_t upstreams = c.llm_base_url.empty() ? 0 : c.llm_fallback_base_url.empty() ? 1 : 2;
  // The reserve: HTTP and cluster listeners, cluster peers, Redis
  // connections, the resolver, log files and the standard streams.
  constexpr std::size_t reserve = 128;
  return c.max_connections + upstreams * c.llm_pool_size + c.pg_pool + reserve;
}

bool make_config(const settings& file, const settings& env, const std::string& hostname,
                 node_config& out, std::string& err) {
  node_config c;
  reader r{file, env};
  r.text("PARLEY_HTTP_HOST", c.http_host);
  r.integer("PARLEY_HTTP_PORT", c.http_port, 0, 65535);
  r.text("PARLEY_CLUSTER_HOST", c.cluster_host);
  r.integer("PARLEY_CLUSTER_PORT", c.cluster_port, 0, 65535);
  c.node_id = "node-" + hostname + "-" + std::to_string(c.http_port);
  r.text("PARLEY_NODE_ID", c.node_id);
  if (c.node_id.empty() || c.node_id.size() > 128)
    r.fail("PARLEY_NODE_ID: must be 1 to 128 characters");
  std::string seeds;
  r.text("PARLEY_SEEDS", seeds);
  for (std::size_t pos = 0; pos <= seeds.size() && !seeds.empty();) {
    auto comma = seeds.find(',', pos);
    auto s = trim(seeds.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (!s.empty()) {
      if (!valid_host_port(s))
        r.fail("PARLEY_SEEDS: expected host:port entries, got '" + s + "'");
      c.seeds.push_back(s);
    }
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  read_cluster_tls(r, c);
  r.secret("PARLEY_PG_URL", c.pg_url);
  if (c.pg_url.empty())
    r.fail("PARLEY_PG_URL: required (a libpq connection string or postgresql:// URI, or "
           "PARLEY_PG_URL_FILE naming a file that holds one)");
  else if (auto why = storage::pg_conninfo_error(c.pg_url); !why.empty())
    r.fail("PARLEY_PG_URL: " + why);
  r.secret("PARLEY_REDIS_URL", c.redis_url);
  if (!c.redis_url.empty()) {
    try {
      storage::parse_redis_url(c.redis_url);
    } catch (const std::invalid_argument& e) {
      r.fail(e.what());
    }
  }
  r.text("PARLEY_LLM_BASE_URL", c.llm_base_url);
  r.secret("PARLEY_LLM_API_KEY", c.llm_api_key);
  r.text("PARLEY_LLM_MODEL", c.llm_model);
  r.text("PARLEY_LLM_FALLBACK_BASE_URL", c.llm_fallback_base_url);
  r.text("PARLEY_LLM_CA_FILE", c.llm_ca_file);
  r.integer("PARLEY_STREAM_CANCEL_ON_DISCONNECT", c.stream_cancel_on_disconnect, 0, 1);
  r.integer("PARLEY_ACTOR_METRICS", c.actor_metrics, 0, 1);
  r.text("PARLEY_ACTOR_SCHEDULER", c.actor_scheduler);
  if (c.actor_scheduler != "sharing" && c.actor_scheduler != "stealing")
    r.fail("PARLEY_ACTOR_SCHEDULER: must be sharing or stealing, not '" + c.actor_scheduler + "'");
  if (!c.llm_ca_file.empty() && !std::ifstream{c.llm_ca_file})
    r.fail("PARLEY_LLM_CA_FILE: cannot read '" + c.llm_ca_file + "'");
  r.duration("PARLEY_LLM_TIMEOUT_MS", c.llm_timeout, 1, 3600000);
  r.secret("PARLEY_ADMIN_TOKEN", c.admin_token);
  r.integer("PARLEY_RATE_LIMIT_PER_MIN", c.rate_limit_per_min, 0, 100000000);
  r.integer("PARLEY_TOKEN_BUDGET_PER_DAY", c.token_budget_per_day, 0, max_call_tokens);
  r.integer("PARLEY_CONTEXT_MESSAGES", c.context_messages, 1, 100000);
  r.integer("PARLEY_CONTEXT_TOKENS", c.context_tokens, 0, 100000000);
  r.duration("PARLEY_SESSION_IDLE_SECONDS", c.session_idle, 1, 86400 * 30);
  r.duration("PARLEY_FAILURE_DETECT_MS", c.failure_detect, 100, 600000);
  r.duration("PARLEY_PG_TIMEOUT_MS", c.pg_timeout, 1000, 600000);
  // No lower than the session routes' 64 KiB; at most 1 GiB.
  r.integer("PARLEY_GATEWAY_MAX_BODY_BYTES", c.gateway_max_body_bytes, 65536, 1073741824);
  r.integer("PARLEY_LLM_MAX_RESPONSE_BYTES", c.llm_max_response_bytes, 65536, 1073741824);
  r.flag("PARLEY_DEV", c.dev);
  r.integer("PARLEY_PG_POOL", c.pg_pool, 1, 256);
  r.integer("PARLEY_HTTP_THREADS", c.http_threads, 1, 256);
  r.integer("PARLEY_ACTOR_THREADS", c.actor_threads, 0, 256);
  r.integer("PARLEY_MAX_INFLIGHT", c.max_inflight, 1, 10000000);
  r.integer("PARLEY_SESSION_QUEUE_LIMIT", c.session_queue_limit, 1, 100000);
  r.duration("PARLEY_HTTP_HEADER_TIMEOUT_MS", c.http_header_timeout, 10, 3600000);
  r.duration("PARLEY_HTTP_IDLE_TIMEOUT_MS", c.http_idle_timeout, 10, 3600000);
  r.integer("PARLEY_LLM_POOL_SIZE", c.llm_pool_size, 1, 100000);
  // As many upstream connections as turns may be in flight, so the pool
  // never caps throughput below PARLEY_MAX_INFLIGHT (API.md section 1).
  // Connections open only as calls need them, so a large pool costs nothing
  // until it is used.
  if (c.llm_pool_size == 0)
    c.llm_pool_size = c.max_inflight;
  r.integer("PARLEY_LLM_MAX_ATTEMPTS", c.llm_max_attempts, 1, 10);
  r.integer("PARLEY_LLM_BREAKER_THRESHOLD", c.llm_breaker_threshold, 1, 1000);
  r.duration("PARLEY_LLM_BREAKER_COOLDOWN_MS", c.llm_breaker_cooldown, 1, 3600000);
  r.integer("PARLEY_MAX_CONNECTIONS", c.max_connections, 1, 10000000);
  r.integer("PARLEY_MAX_CONNECTIONS_PER_IP", c.max_connections_per_ip, 0, 10000000);
  r.integer("PARLEY_AUTH_FAILURES_PER_MIN", c.auth_failures_per_min, 0, 100000000);
  std::string log_level;
  r.text("PARLEY_LOG_LEVEL", log_level);
  if (!log_level.empty()) {
    if (auto lv = log::parse_level(log_level))
      c.log_level = *lv;
    else
      r.fail("PARLEY_LOG_LEVEL: expected debug, info, warn or error, got '" + log_level + "'");
  }
  r.flag("PARLEY_ACCESS_LOG", c.access_log);
  if (c.admin_token.empty() && !c.dev)
    r.fail("PARLEY_ADMIN_TOKEN: required (or set PARLEY_DEV=1 to have one generated)");
  // The messages give the length, never the token.
  if (!c.admin_token.empty() && !c.dev) {
    if (c.admin_token.size() < min_admin_token_chars)
      r.fail("PARLEY_ADMIN_TOKEN: must be at least " + std::to_string(min_admin_token_chars) +
             " characters outside development mode (it has " +
             std::to_string(c.admin_token.size()) + "); generate one with `openssl rand -hex 24`");
    else if (is_placeholder_token(c.admin_token))
      r.fail("PARLEY_ADMIN_TOKEN: still a placeholder (such as the one in "
             "deploy/k8s/secret.yaml); generate one with `openssl rand -hex 24`");
  }
  if (!r.err.empty()) {
    err = r.err;
    return false;
  }
  out = std::move(c);
  return true;
}

} // namespace parley

#include "runtime/node.hpp"

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <memory>
#include <mutex>
#include <thread>

#include <sys/resource.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "runtime/telemetry/actor_stats.hpp"
#include "actors/edge/edge_actor.hpp"
#include "actors/llm_actor.hpp"
#include "actors/discovery_actor.hpp"
#include "actors/membership_actor.hpp"
#include "actors/ratelimit_actor.hpp"
#include "actors/vocabulary.hpp"
#include "actors/registry_actor.hpp"
#include "actors/storage_actor.hpp"
#include "actors/supervisor_actor.hpp"
#include "net/http/api.hpp"
#include "net/http_server.hpp"
#include "net/io_runtime.hpp"
#include "runtime/cluster_tls.hpp"
#include "runtime/http/dashboard.hpp"
#include "runtime/http/http_api.hpp"
#include "runtime/telemetry/log.hpp"
#include "storage/pg_store.hpp"
#include "storage/secrets.hpp"

namespace parley {

namespace {

/// Applies migrations, waiting up to 30 s for PostgreSQL to come up; sets
/// `cluster` to the name of the cluster the database holds (discovery's
/// namespace in Redis).
bool migrate_with_retry(const std::string& url, std::chrono::milliseconds pg_timeout,
                        std::string& cluster) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (int attempt = 1;; ++attempt) {
    try {
      storage::pg_store store{url, pg_timeout};
      auto v = store.migrate();
      cluster = store.cluster_identity();
      log::info("schema ready", {{"schema_version", std::to_string(v)}});
      return true;
    } catch (const storage::storage_error& e) {
      if (e.error_kind() == storage::storage_error::kind::permanent ||
          std::chrono::steady_clock::now() > until) {
        log::error("PARLEY_PG_URL: cannot prepare the database", {{"error", e.what()}});
        return false;
      }
      if (attempt == 1)
        log::warn("waiting for PostgreSQL", {{"error", e.what()}});
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

/// Raises the soft open-file limit to the hard one (every client and
/// upstream connection is a descriptor; the soft default is often 1024) and
/// warns when even the hard limit is below what the settings may open.
void raise_open_file_limit(const node_config& cfg) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
    return;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
      lim = raised;
  }
  auto need = descriptors_needed(cfg);
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < need)
    log::warn("open-file limit below what the configured connections need; raise the hard "
              "limit (ulimit -Hn) or lower PARLEY_MAX_CONNECTIONS or PARLEY_LLM_POOL_SIZE",
              {{"have", std::to_string(lim.rlim_cur)},
               {"need", std::to_string(need)},
               {"max_connections", std::to_string(cfg.max_connections)},
               {"llm_pool_size", std::to_string(cfg.llm_pool_size)}});
}

/// Sets CAF's middleman up for the cluster: its own heartbeat closes a
/// connection to a silent node within PARLEY_FAILURE_DETECT_MS, which every
/// monitor of that node's actors then sees as a down message.
///
/// With PARLEY_CLUSTER_TLS_* it also loads CAF's OpenSSL module with the
/// node's certificate, key and CA: with those set, CAF requires a valid
/// certificate on both ends of every connection it makes or accepts
/// (mutual TLS). Without them the module is not loaded at all: its
/// unconfigured mode is anonymous TLS, which authenticates nobody.
void configure_middleman(caf::actor_system_config& caf_cfg, const node_config& cfg,
                         const cluster_tls_files* tls) {
  caf_cfg.load<caf::io::middleman>();
  auto beat = std::clamp<std::chrono::milliseconds>(cfg.failure_detect / 4,
                                                    std::chrono::milliseconds(50),
                                                    std::chrono::milliseconds(1000));
  caf_cfg.set("middleman.heartbeat-interval", caf::timespan{beat});
  caf_cfg.set("middleman.connection-timeout", caf::timespan{cfg.failure_detect});
  if (tls) {
    caf_cfg.load<caf::openssl::manager>();
    caf_cfg.openssl_certificate = tls->identity();
    caf_cfg.openssl_key = tls->identity();
    caf_cfg.openssl_cafile = tls->ca();
  }
}

/// Applies renewed cluster TLS files (cluster_tls_files::refresh) every
/// `every` on a thread of its own, logging what it took or refused, until
/// destroyed.
class tls_watch {
public:
  tls_watch(cluster_tls_files& files, std::chrono::milliseconds every)
    : thread_([this, &files, every] {
        std::unique_lock<std::mutex> lock{mutex_};
        while (!cv_.wait_for(lock, every, [this] { return stop_; })) {
          std::string what;
          try {
            what = files.refresh();
          } catch (const std::exception& e) {
            what = std::string{"PARLEY_CLUSTER_TLS_CERT: "} + e.what();
          }
          if (what == "applied")
            log::info("cluster port: renewed TLS files applied to new connections");
          else if (!what.empty())
            log::error("cluster port: renewed TLS files refused, keeping the current ones: " +
                       what);
        }
      }) {}
  ~tls_watch() {
    {
      std::lock_guard<std::mutex> lock{mutex_};
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  tls_watch(const tls_watch&) = delete;
  tls_watch& operator=(const tls_watch&) = delete;

private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_; ///< last: starts after the members it uses
};

/// Publishes the membership actor on the cluster port: over mutual TLS
/// when configured, else plain BASP with one warning. It is published
/// untyped, as before its interface was typed: peers reach it through
/// `remote_actor` and the connector's `connect_atom` without naming its
/// interface, so the cluster protocol on the wire stays what it was (the
/// actor still only accepts its membership_actor messages).
caf::expected<std::uint16_t> publish_membership(caf::actor_system& sys,
                                                const membership_actor& typed,
                                                const node_config& cfg) {
  auto membership = caf::actor_cast<caf::actor>(typed);
  if (cfg.cluster_tls()) {
    log::info("cluster port: mutual TLS; only peers with a certificate from the cluster CA "
              "are admitted or dialled",
              {{"cert", cfg.cluster_tls_cert}, {"ca", cfg.cluster_tls_ca}});
    if (!ssl_error_queue_guard_active())
      log::warn("this build does not guard OpenSSL's error queue (runtime/cluster_tls.hpp): a "
                "failed TLS handshake on the cluster port can drop connections between members");
    return caf::openssl::publish(membership, cfg.cluster_port, cfg.cluster_host.c_str(), true);
  }
  log::warn("the cluster port is plain (no PARLEY_CLUSTER_TLS_* settings): any process that "
            "can reach it can join the cluster, be routed turns and drain nodes; keep it "
            "private, or set PARLEY_CLUSTER_TLS_CERT, PARLEY_CLUSTER_TLS_KEY and "
            "PARLEY_CLUSTER_TLS_CA (docs/operations.md)",
            {{"cluster", cfg.cluster_host + ":" + std::to_string(cfg.cluster_port)}});
  return sys.middleman().publish(membership, cfg.cluster_port, cfg.cluster_host.c_str(), true);
}

/// Asks `a` for a count; 0 when it does not answer within a second.
std::uint64_t ask_count(caf::actor_system& sys, const registry_actor& a) {
  caf::scoped_actor s{sys};
  std::uint64_t n = 0;
  s->request(a, std::chrono::seconds(1), count_atom::value)
    .receive([&](std::uint64_t x) { n = x; }, [](caf::error&) {});
  return n;
}

/// How many other members are up, per the membership actor.
std::size_t peers_up(caf::actor_system& sys, const membership_actor& membership,
                     const std::string& self_id) {
  caf::scoped_actor s{sys};
  std::size_t n = 0;
  s->request(membership, std::chrono::seconds(2), cluster_atom::value)
    .receive(
      [&](std::uint64_t, std::vector<member_info>& ms) {
        for (auto& m : ms)
          if (m.id != self_id && m.status == member_status::up)
            ++n;
      },
      [](caf::error&) {});
  return n;
}

/// SIGTERM in a cluster: become "leaving" so that every node routes around
/// this one and its registry hands each active session to its new owner;
/// wait (bounded) until none is left here.
void drain_sessions(caf::actor_system& sys, const membership_actor& membership,
                    const registry_actor& registry, const std::string& self_id,
                    std::chrono::seconds limit) {
  if (peers_up(sys, membership, self_id) == 0)
    return; // nobody to hand sessions to: they re-activate from PostgreSQL later
  caf::anon_send(membership, drain_atom::value);
  auto until = std::chrono::steady_clock::now() + limit;
  std::uint64_t left = 0;
  // Sessions can only go to members that are up; when every other member
  // leaves too (a whole cluster stopping), the rest stay and stop here.
  while ((left = ask_count(sys, registry)) > 0 && std::chrono::steady_clock::now() < until &&
         peers_up(sys, membership, self_id) > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  log::info("sessions handed over", {{"left", std::to_string(left)}});
}

/// The node's long-lived actors, each with its role for the log.
using named_actors = std::vector<std::pair<std::string, caf::actor>>;

/// Stops `actors` and waits (bounded) until they are gone: the llm actor
/// and its upstream client use the asio runtime, which must outlive them.
/// Logs each actor still alive at the limit.
void stop_actors(caf::actor_system& sys, const named_actors& actors, std::chrono::seconds limit) {
  caf::scoped_actor s{sys};
  for (auto& [role, a] : actors) {
    s->monitor(a);
    s->send_exit(a, caf::exit_reason::user_shutdown);
  }
  auto until = std::chrono::steady_clock::now() + limit;
  std::vector<caf::actor_addr> down;
  bool timed_out = false;
  while (down.size() < actors.size() && !timed_out) {
    auto left = until - std::chrono::steady_clock::now();
    if (left <= left.zero())
      break;
    s->receive([&](caf::down_msg& m) { down.push_back(m.source); },
               caf::after(std::chrono::duration_cast<std::chrono::milliseconds>(left)) >>
                 [&] { timed_out = true; });
  }
  for (auto& [role, a] : actors)
    if (std::find(down.begin(), down.end(), a.address()) == down.end())
      log::warn("actor did not stop within " + std::to_string(limit.count()) + " s",
                {{"actor", role}});
}

/// How long the process may take to end after its core actors stopped.
constexpr std::chrono::seconds exit_patience{5};

/// Logs a handler's exception (the actor went on; see instrumented.hpp).
void log_fault(const char* actor, std::string_view what, std::string_view message,
               std::string_view request_id) {
  log::fields f{{"actor", actor}, {"error", std::string{what}}, {"message", std::string{message}}};
  if (!request_id.empty())
    f.emplace_back("request_id", std::string{request_id});
  log::error("exception in actor handler; the request was answered with an error and the "
             "actor goes on",
             f);
}

/// A core actor stopped while the node was serving: the node cannot serve
/// all its routes any more, so it exits non-zero for its supervisor
/// (systemd, Kubernetes, compose) to restart it, rather than live on
/// half-dead (API.md section 8).
[[noreturn]] void core_actor_down(caf::actor_system& sys, const std::string& role,
                                  const caf::error& reason) {
  log::error("core actor stopped unexpectedly; exiting for the supervisor to restart the node",
             {{"actor", role}, {"reason", sys.render(reason)}});
  log::shutdown();
  std::_Exit(core_down_exit_code);
}

int wait_for_stop_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

} // namespace

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A client closing its socket mid-write must never kill the node.
  std::signal(SIGPIPE, SIG_IGN);
}

namespace {

/// The node's life between log::init and log::shutdown.
int serve(node_config cfg) {
  if (cfg.admin_token.empty()) {
    cfg.admin_token = random_hex(24);
    log::warn("development mode: generated an admin token", {{"admin_token", cfg.admin_token}});
  }
  std::string cluster_identity;
  if (!migrate_with_retry(cfg.pg_url, cfg.pg_timeout, cluster_identity))
    return 1;
  raise_open_file_limit(cfg);

  caf::actor_system_config caf_cfg;
  register_types(caf_cfg);
  // One shared queue instead of work stealing: on a few cores shared with
  // PostgreSQL and the upstream, idle stealing workers poll and nap in a loop
  // and take CPU from them (bench/RESULTS.md: +12-24 % durable turns/s).
  caf_cfg.set("scheduler.policy", cfg.actor_scheduler == "stealing" ? caf::atom("stealing")
                                                                     : caf::atom("sharing"));
  // CAF reads vetted copies of the TLS files, never the operator's own.
  std::unique_ptr<cluster_tls_files> tls;
  if (cfg.cluster_tls()) {
    try {
      tls = std::make_unique<cluster_tls_files>(cfg.cluster_tls_cert, cfg.cluster_tls_key,
                                                cfg.cluster_tls_ca);
    } catch (const std::exception& e) {
      log::error(e.what());
      return 1;
    }
  }
  configure_middleman(caf_cfg, cfg, tls.get());
  // One worker per core by default: CAF's own default is at least four,
  // which on a 2-core node only adds wake-ups and context switches
  // (bench/RESULTS.md: 7-14 % less CPU per streamed turn with two).
  auto workers = cfg.actor_threads > 0 ? cfg.actor_threads
                                       : std::max(1u, std::thread::hardware_concurrency());
  caf_cfg.set("scheduler.max-threads", static_cast<std::size_t>(workers));
  caf::actor_system sys{caf_cfg};
  // Renewed TLS files apply within this; it stops before `tls` goes, which
  // outlives the actor system that reads its copies.
  std::unique_ptr<tls_watch> watch;
  if (tls)
    watch = std::make_unique<tls_watch>(*tls, std::chrono::seconds(5));
  net::io_runtime io{cfg.http_threads};

  set_actor_metrics(cfg.actor_metrics == 1);
  set_fault_reporter(log_fault);
  auto metrics = std::make_shared<node_metrics>();
  std::vector<storage_actor> storage_actors;
  // Gateway usage goes to the pool's last actor (storage_pool::for_usage);
  // each connection adds to its own row of the daily totals.
  auto usage = std::make_shared<usage_backlog>(20000);
  for (std::size_t i = 0; i < cfg.pg_pool; ++i)
    storage_actors.push_back(spawn_storage_actor(sys, cfg.pg_url, metrics, cfg.pg_timeout,
                                                 storage::usage_shard_of(cfg.node_id, i),
                                                 i + 1 == cfg.pg_pool ? usage : nullptr));
  auto storage = std::make_shared<const storage_pool>(storage_actors, usage);

  llm_config llm_cfg;
  llm_cfg.base_url = cfg.llm_base_url;
  llm_cfg.api_key = cfg.llm_api_key;
  // With an upstream and no PARLEY_LLM_MODEL, "default" lets OpenAI-compatible
  // servers that serve one model pick it; real providers need the setting.
  llm_cfg.default_model = !cfg.llm_model.empty()     ? cfg.llm_model
                          : cfg.llm_base_url.empty() ? std::string{echo_model}
                                                     : std::string{"default"};
  llm_cfg.timeout = cfg.llm_timeout;
  llm_cfg.pool_size = cfg.llm_pool_size;
  llm_cfg.fallback_base_url = cfg.llm_fallback_base_url;
  llm_cfg.ca_file = cfg.llm_ca_file;
  llm_cfg.max_response_bytes = cfg.llm_max_response_bytes;
  llm_cfg.retry.max_attempts = cfg.llm_max_attempts;
  llm_cfg.breaker_threshold = cfg.llm_breaker_threshold;
  llm_cfg.breaker_cooldown = cfg.llm_breaker_cooldown;
  llm_cfg.metrics = metrics;
  llm_actor llm;
  try {
    llm = spawn_llm_actor(sys, io, llm_cfg);
  } catch (const std::invalid_argument& e) {
    log::error(e.what());
    for (auto& a : storage_actors)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    return 2;
  }

  auto session_cfg = std::make_shared<session_config>();
  session_cfg->window = cfg.context_messages;
  session_cfg->context_tokens = cfg.context_tokens;
  session_cfg->queue_limit = cfg.session_queue_limit;
  session_cfg->idle = cfg.session_idle;
  // The llm actor ends every call within llm_call_bound() (a primary that
  // timed out, then the fallback's own attempts); this deadline must not cut
  // the fallback off, so it leaves room beyond that bound.
  auto llm_bound = llm_call_bound(llm_cfg);
  session_cfg->llm_call_timeout = llm_bound + std::chrono::seconds(10);
  auto registry =
    spawn_registry_actor(sys,
                         session_env{session_cfg,
                                     std::make_shared<const actor_pool<session_store_actor>>(
                                       *storage),
                                     llm, metrics},
                         cfg.node_id);

  membership_config mcfg;
  mcfg.self.id = cfg.node_id;
  mcfg.self.http = cfg.http_host + ":" + std::to_string(cfg.http_port);
  mcfg.self.cluster = cfg.cluster_host + ":" + std::to_string(cfg.cluster_port);
  mcfg.self.incarnation = static_cast<std::uint64_t>(
    std::chrono::system_clock::now().time_since_epoch().count());
  mcfg.seeds = cfg.seeds;
  mcfg.discovery = !cfg.redis_url.empty();
  mcfg.failure_detect = cfg.failure_detect;
  mcfg.registry = caf::actor_cast<caf::actor>(registry);
  mcfg.local_stats = [metrics] { return metrics->stats_json(); };
  mcfg.connector =
    cfg.cluster_tls() ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  auto membership = spawn_membership_actor(sys, mcfg);
  caf::anon_send(membership, view_atom::value, view_subscriber_actor{registry});
  auto published = publish_membership(sys, membership, cfg);
  if (!published) {
    log::error("PARLEY_CLUSTER_PORT: cannot listen on " + mcfg.self.cluster,
               {{"error", sys.render(published.error())}});
    caf::anon_send_exit(membership, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(llm, caf::exit_reason::user_shutdown);
    for (auto& a : storage_actors)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    return 2;
  }

  edge_config edge_cfg;
  edge_cfg.node_id = cfg.node_id;
  edge_cfg.admin_token = cfg.admin_token;
  edge_cfg.dashboard = dashboard_response();
  edge_cfg.default_model = llm_cfg.default_model;
  edge_cfg.context_messages = cfg.context_messages;
  edge_cfg.max_inflight = cfg.max_inflight;
  // A safety net only: every turn ends by itself within the model's and
  // storage's timeouts, even the last one of a full queue.
  edge_cfg.turn_timeout = (llm_bound + std::chrono::seconds(40)) *
                          static_cast<long>(cfg.session_queue_limit + 1);
  edge_cfg.rate_limit_per_min = static_cast<std::int32_t>(cfg.rate_limit_per_min);
  edge_cfg.token_budget_per_day = cfg.token_budget_per_day;
  edge_cfg.auth_failures_per_min = cfg.auth_failures_per_min;
  edge_cfg.redis = !cfg.redis_url.empty();
  edge_cfg.cancel_on_disconnect = cfg.stream_cancel_on_disconnect == 1;
  ratelimit_config rl_cfg;
  rl_cfg.redis_url = cfg.redis_url;
  rl_cfg.ledger = std::make_shared<budget_ledger>(rl_cfg.max_local_keys);
  auto ledger = rl_cfg.ledger;
  auto ratelimit = spawn_ratelimit_actor(sys, rl_cfg);
  // The probes' board, with the roles of the core list below, in its order.
  std::vector<std::string> roles{"edge", "registry", "membership", "llm", "ratelimit"};
  if (!cfg.redis_url.empty()) {
    roles.emplace_back("revocations");
    roles.emplace_back("discovery");
  }
  for (std::size_t i = 0; i < storage_actors.size(); ++i)
    roles.push_back("storage-" + std::to_string(i));
  auto board = std::make_shared<health_board>(std::move(roles));
  auto edge = spawn_edge_actor(
    sys, edge_cfg,
    edge_peers{storage, registry, membership, ratelimit, ledger, metrics, llm, board});
  revocation_listener_actor revocations;
  discovery_actor discovery;
  if (!cfg.redis_url.empty()) {
    revocations = spawn_revocation_listener(sys, cfg.redis_url, edge);
    discovery_config dcfg;
    dcfg.redis_url = cfg.redis_url;
    dcfg.key = discovery_key(cluster_identity);
    dcfg.entry = mcfg.self.cluster;
    // An entry outlives a few missed rounds (a slow Redis call), and a
    // killed node's entry is gone a few seconds after its last round.
    dcfg.interval = std::chrono::seconds(1);
    dcfg.ttl = std::max<std::chrono::milliseconds>(std::chrono::seconds(5), cfg.failure_detect);
    dcfg.membership = membership;
    discovery = spawn_discovery_actor(sys, std::move(dcfg));
  }

  // The core actors, watched by the supervisor; /healthz and /readyz read
  // its board.
  // Untyped: the supervisor's ping (health_atom) is in no typed interface
  // (instrumented.hpp).
  using caf::actor_cast;
  named_actors core{{"edge", actor_cast<caf::actor>(edge)},
                    {"registry", actor_cast<caf::actor>(registry)},
                    {"membership", actor_cast<caf::actor>(membership)},
                    {"llm", actor_cast<caf::actor>(llm)},
                    {"ratelimit", actor_cast<caf::actor>(ratelimit)}};
  if (revocations)
    core.emplace_back("revocations", actor_cast<caf::actor>(revocations));
  if (discovery)
    core.emplace_back("discovery", actor_cast<caf::actor>(discovery));
  for (std::size_t i = 0; i < storage_actors.size(); ++i)
    core.emplace_back("storage-" + std::to_string(i), actor_cast<caf::actor>(storage_actors[i]));
  if (roles_of(core) != board->roles())
    throw std::logic_error("the health board's roles differ from the core actors");
  supervisor_config sup_cfg;
  sup_cfg.core = core;
  sup_cfg.storage = storage_actors;
  sup_cfg.board = board;
  sup_cfg.pg_timeout = cfg.pg_timeout;
  sup_cfg.on_core_down = [&sys](const std::string& role, const caf::error& reason) {
    core_actor_down(sys, role, reason);
  };
  auto supervisor = spawn_supervisor(sys, std::move(sup_cfg));

  net::server_options http_opts;
  http_opts.host = cfg.http_host;
  http_opts.port = cfg.http_port;
  http_opts.node_id = cfg.node_id;
  http_opts.header_timeout = cfg.http_header_timeout;
  http_opts.idle_timeout = cfg.http_idle_timeout;
  http_opts.max_connections = cfg.max_connections;
  http_opts.max_connections_per_ip = cfg.max_connections_per_ip;
  http_opts.body_limit = net::max_body_bytes;
  // The gateway routes carry whole histories (API.md section 1).
  http_opts.body_limit_for = [gateway = cfg.gateway_max_body_bytes](std::string_view path) {
    return net::carries_history(path) ? gateway : net::max_body_bytes;
  };
  // What strangers can make a node hold while large bodies arrive (they are
  // read before the key is checked): 32 of the largest at once.
  http_opts.large_body_budget = 32 * cfg.gateway_max_body_bytes;
  net::http_server server{
    io, http_opts,
    make_http_handler(edge, metrics, cfg.access_log ? access_log::on : access_log::off, board)};
  int rc = 0;
  try {
    server.start();
    log::info("listening on http://" + cfg.http_host + ":" + std::to_string(server.port()),
              {{"http", cfg.http_host + ":" + std::to_string(server.port())},
               {"cluster", mcfg.self.cluster},
               {"model", cfg.llm_base_url.empty() ? "echo (built-in)" : cfg.llm_base_url}});
    auto sig = wait_for_stop_signal();
    log::info("stopping: draining sessions and in-flight requests",
              {{"signal", std::to_string(sig)}});
    caf::anon_send(edge, drain_atom::value);
    drain_sessions(sys, membership, registry, cfg.node_id, std::chrono::seconds(30));
    log::info("stopping HTTP", {{"connections", std::to_string(server.connections())}});
    server.stop(std::chrono::seconds(30));
    if (auto open = server.connections(); open > 0)
      log::warn("HTTP connections still open after 30 s; closing them",
                {{"connections", std::to_string(open)}});
  } catch (const std::exception& e) {
    log::error(std::string{"PARLEY_HTTP_PORT: "} + e.what());
    rc = 2;
  }

  // The supervisor first: the core actors stop on purpose from here on.
  stop_actors(sys, {{"supervisor", caf::actor_cast<caf::actor>(supervisor)}},
              std::chrono::seconds(2));
  stop_actors(sys, core, std::chrono::seconds(10));
  io.stop();
  if (rc == 0)
    log::info("stopped");
  // The actor system's destructor waits for every actor, core or not; one
  // that never ends (seen once after a network partition healed) must not
  // hold a stopping node past its supervisor's grace period.
  std::thread([rc] {
    std::this_thread::sleep_for(exit_patience);
    log::warn("the process did not end within " + std::to_string(exit_patience.count()) +
              " s of stopping (an actor is still running); exiting now");
    log::shutdown();
    std::_Exit(rc);
  }).detach();
  return rc;
}

} // namespace

int run_node(const node_config& cfg) {
  log::init(cfg.node_id, cfg.log_level);
  auto rc = serve(cfg);
  log::shutdown();
  return rc;
}

} // namespace parley

#pragma once
// Integration-test harness: real `parley` and `mock-llm` processes on
// 127.0.0.1 ports below 32768, a scratch PostgreSQL database each, and a
// small blocking HTTP/1.1 client with timeouts on every call.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sys/types.h>

#include "tests/support/scratch_db.hpp"

namespace parley::test {

using json = nlohmann::json;
using headers = std::map<std::string, std::string>;

/// Polls `ok` every 50 ms until it holds or `limit` passed; its last answer.
bool wait_for(const std::function<bool()>& ok, std::chrono::milliseconds limit);

/// A port below 32768 that nothing listens on now; never the same twice in
/// one process. PARLEY_TEST_PORT_RANGE=LO-HI keeps it within LO..HI (people
/// testing side by side on one machine) [20000-31999].
unsigned short free_port();

struct http_result {
  int status = 0; ///< 0: no response (connection failed, closed or timed out)
  headers head;   ///< lower-case names
  std::string body;
  json js() const { return json::parse(body, nullptr, false); }
  std::string header(const std::string& lower_name) const;
  /// The error `code` of an error body, or "".
  std::string code() const;
};

/// One request on a fresh connection (Connection: close).
http_result http(unsigned short port, const std::string& method, const std::string& target,
                 const std::string& body = "", const headers& extra = {},
                 std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// The same, to `host` (an IPv4 address), for nodes outside 127.0.0.1
/// (network namespaces).
http_result http_at(const std::string& host, unsigned short port, const std::string& method,
                    const std::string& target, const std::string& body = "",
                    const headers& extra = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// A keep-alive connection for several requests.
class http_connection {
public:
  explicit http_connection(unsigned short port);
  ~http_connection();
  http_result request(const std::string& method, const std::string& target,
                      const std::string& body = "", const headers& extra = {});
  /// True once the server closed its side (checked without blocking long).
  bool closed_by_peer(std::chrono::milliseconds wait);

private:
  int fd_ = -1;
  std::string buffer_;
};

/// Writes raw bytes, then reads until the peer closes or `timeout` passes.
/// `closed` tells which happened.
std::string raw_exchange(unsigned short port, const std::string& bytes,
                         std::chrono::milliseconds timeout, bool* closed = nullptr);

/// Like raw_exchange, but returns what arrived with each read's time since
/// the request was sent, to see whether an answer streams.
std::vector<std::pair<std::chrono::milliseconds, std::string>>
timed_exchange(unsigned short port, const std::string& bytes, std::chrono::milliseconds timeout);

/// A POST of `body` as raw HTTP/1.1 with a bearer key (Connection: close).
std::string raw_post(const std::string& target, const std::string& key, const std::string& body);

/// The value of one sample of `GET /metrics` on `port`, e.g.
/// `parley_rate_limited_total` (-1 when absent).
double metric(unsigned short port, const std::string& sample);

/// The folder of the log files of the processes tests start (made on first use).
std::string log_dir();

/// `log_dir()/name`, emptied: ports, and so log names, recur across test runs.
std::string fresh_log(const std::string& name);

/// The last `lines` lines of a text file ("" when it cannot be read).
std::string file_tail(const std::string& path, int lines = 40);

/// A child process with its output in a log file; killed and reaped at the end.
class child_process {
public:
  child_process() = default;
  /// With `stdout_path`, standard output goes to that file and only standard
  /// error to the log.
  child_process(const std::string& exe, const std::vector<std::string>& args,
                const std::map<std::string, std::string>& env, const std::string& log_path,
                const std::string& stdout_path = {});
  ~child_process();
  child_process(child_process&&) noexcept;
  child_process& operator=(child_process&&) noexcept;

  pid_t pid() const { return pid_; }
  bool alive();
  /// SIGTERM, then SIGKILL after `grace`; returns the exit status (-1: killed).
  int terminate(std::chrono::milliseconds grace = std::chrono::seconds(20));
  void kill9();
  const std::string& log_path() const { return log_; }
  std::string log_tail(int lines = 40) const;

private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_;
};

/// What a child process run to its end did.
struct process_result {
  int status = -1; ///< its exit code; -1: killed by a signal (or at run_process's deadline)
  std::string out, err;
  std::chrono::milliseconds took{0};
};

/// Runs `exe` (a path, or a name looked up on PATH) with `args`, this
/// process's environment and `env` over it, to its end, capturing stdout and
/// stderr; SIGKILLs it once `timeout` passed.
process_result run_process(const std::string& exe, const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& env = {},
                           std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// The mock OpenAI upstream.
class mock_llm {
public:
  mock_llm();
  std::string base_url() const;
  json requests() const;
  void clear() const;
  void configure(const json& cfg) const;
  void reset() const;
  /// `GET /_mock/stats`: in_flight, peak_in_flight, answered.
  json stats() const;
  unsigned short port() const { return port_; }

private:
  unsigned short port_;
  child_process proc_;
};

/// Upstream mode: true when the environment sets PARLEY_TEST_UPSTREAM=1
/// (ctest runs every integration suite once without and once with it).
/// Then every node the harness starts without its own PARLEY_LLM_BASE_URL
/// gets this process's mock-llm pair as PARLEY_LLM_BASE_URL and
/// PARLEY_LLM_FALLBACK_BASE_URL instead of the built-in echo model; a test
/// that needs the echo model sets PARLEY_LLM_BASE_URL to "" itself.
bool upstream_mode();

/// The mock-llm primary and fallback of upstream mode: started on first use,
/// one pair per test process, stopped by PID at exit. Throws when
/// upstream_mode() is false.
const mock_llm& shared_primary();
const mock_llm& shared_fallback();

/// Cluster TLS mode: true when the environment sets PARLEY_TEST_CLUSTER_TLS=1
/// (ctest runs cluster_it once more so, as `<test>.tls`). Then every node the
/// harness starts without its own PARLEY_CLUSTER_TLS_CERT gets the
/// shared_cluster_tls() settings, so the cluster suites run over mutual TLS.
bool cluster_tls_mode();

/// PARLEY_CLUSTER_TLS_CERT, _KEY and _CA of one member certificate and its CA,
/// made with the openssl CLI in a temporary folder on first use (one per test
/// process) and removed at exit.
const std::map<std::string, std::string>& shared_cluster_tls();

/// The reply content a harness node gives to a turn whose newest message is
/// `content`: the text itself from the echo model, "mock: " + it from the
/// mock upstream.
std::string expected_reply(const std::string& content);

/// The reply model a harness node stores when neither the session nor
/// PARLEY_LLM_MODEL names one: "echo", or "default" (what Parley sends an
/// upstream then; the mock echoes it).
std::string expected_model();

/// One Parley node on a scratch database. In upstream mode (above) it talks
/// to the shared mock-llm pair unless `env` names PARLEY_LLM_BASE_URL.
class parley_node {
public:
  explicit parley_node(const scratch_db& db, std::map<std::string, std::string> env = {});
  ~parley_node();

  void start();
  void restart() { start(); }
  int stop() { return proc_.terminate(); }
  void kill9() { proc_.kill9(); }
  child_process& process() { return proc_; }

  unsigned short port() const { return port_; }
  const std::string& admin_token() const { return token_; }
  const std::string& node_id() const { return node_id_; }

  /// A new user API key.
  std::string create_key(const std::string& user);

  http_result call(const std::string& method, const std::string& target, const std::string& key,
                   const std::string& body = "", headers extra = {}) const;
  /// Creates a session; returns its id.
  std::string create_session(const std::string& key, const json& body = json::object());
  http_result post_message(const std::string& key, const std::string& session, const json& body);
  /// Every message of a session, following next_after.
  json all_messages(const std::string& key, const std::string& session);

  /// An admin call with this node's token.
  http_result admin(const std::string& method, const std::string& target,
                    const json& body = nullptr) const;
  /// The value of one sample of its `GET /metrics` (see test::metric).
  double metric(const std::string& sample) const;
  /// `GET /admin/v1/cluster` (null when it fails).
  json cluster() const;
  /// The node hosting `session` per `GET /admin/v1/sessions/{id}` ("" on failure).
  std::string host_of(const std::string& session) const;

private:
  std::map<std::string, std::string> env_;
  unsigned short port_;
  std::string token_, node_id_;
  std::string log_; ///< one file for all its starts
  child_process proc_;
};

/// Nodes `node-0` .. `node-{n-1}` on one database, each seeded with every
/// cluster address; the constructor waits until all see each other up.
class parley_cluster {
public:
  parley_cluster(const scratch_db& db, int n, std::map<std::string, std::string> env = {});
  parley_node& operator[](int i) { return *nodes_.at(static_cast<std::size_t>(i)); }
  int size() const { return static_cast<int>(nodes_.size()); }
  /// Index of the node with this id, or -1.
  int index_of(const std::string& node_id) const;
  /// Waits until every live node counts `up` members up.
  bool wait_converged(int up, std::chrono::milliseconds limit = std::chrono::seconds(20));

private:
  std::vector<std::unique_ptr<parley_node>> nodes_;
};

/// Sends SIGCONT to every node of a cluster when it goes, so that a test that
/// stops nodes (SIGSTOP) leaves none stopped, whatever fails.
class continue_on_exit {
public:
  explicit continue_on_exit(parley_cluster& c) : c_(c) {}
  continue_on_exit(const continue_on_exit&) = delete;
  continue_on_exit& operator=(const continue_on_exit&) = delete;
  ~continue_on_exit();

private:
  parley_cluster& c_;
};

// -- checks shared by the cluster suites ----------------------------------------

/// Checks a history: seqs 1..n, alternating user/assistant, each reply right
/// after its message (gtest expectations); returns the user contents in order.
std::vector<std::string> check_history(const json& msgs);

/// Posts a turn through `node`, retrying 503/429 (and no answer) with the same
/// body for at most `limit`, as a well-behaved client does. Counts the retries.
http_result post_retrying(parley_node& node, const std::string& key, const std::string& id,
                          const json& body, int* retries = nullptr,
                          std::chrono::milliseconds limit = std::chrono::seconds(20));

/// `node`'s view of member `id` (null when unknown).
json member(const parley_node& node, const std::string& id);

std::int64_t elapsed_ms(std::chrono::steady_clock::time_point since);

/// Fails the current test with the log tail of `node` attached.
std::string describe(const http_result& r);
/// Exit code, time, stdout and stderr of a run, for failure messages.
std::string describe(const process_result& r);

/// Writes all of `s` to the socket `fd` (MSG_NOSIGNAL); false once a send fails.
bool send_all(int fd, const std::string& s);

} // namespace parley::test

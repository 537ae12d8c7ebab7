#pragma once
// A network-namespace lab for cluster tests: every Parley node runs on its own
// "host" (a network namespace) wired to two bridges in a "hub" namespace, so a
// test can cut one host off the cluster network and heal it again, while the
// test itself (entering the hub) and PostgreSQL (running in the hub) stay
// reachable over the service network.
//
//   host i:  lo, clu 10.X.1.(i+1)/24 --veth-- hub: brclu (cluster network)
//                svc 10.X.2.(i+1)/24 --veth-- hub: brsvc 10.X.2.254 (service network)
//
// Hosts reach each other only over the cluster network: their ports on the
// service bridge are isolated from each other (they reach only the hub), so
// cut() is a real partition of node-to-node traffic.
//
// Lab addresses exist only inside the lab: from any other namespace (the
// test's own, say) 10.X.* follows that namespace's routes, possibly into a
// real network or an egress proxy that accepts any connection. Reach them
// from inside: in_hub / in_host below, or exec_prefix().
//
// Nothing is created in the root network namespace: every link and bridge
// lives inside a lab namespace and dies with it. Needs root; unsupported()
// says why a machine cannot run it so a test can GTEST_SKIP().

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace parley::test {

/// Outcome of run_command().
struct command_result {
  int status = -1;  ///< exit code; -1: killed by a signal or timed out
  bool timed_out = false;
  std::string out;  ///< standard output
  std::string err;  ///< standard error (or why the program could not be started)
  bool ok() const { return status == 0; }
};

/// Runs argv (argv[0] is a path, or a name looked up in PATH) with stdin from
/// /dev/null, capturing its output; SIGKILLs it after `timeout`.
command_result run_command(const std::vector<std::string>& argv,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// True if a TCP connection to host:port (IPv4) completes within `timeout`,
/// from the calling thread's network namespace.
bool can_connect(const std::string& host, unsigned short port,
                 std::chrono::milliseconds timeout = std::chrono::seconds(2));

class netns_lab {
public:
  /// Why this machine cannot run the lab (not root, `ip` missing, netns, veth,
  /// bridge or setns refused), or nullopt. Probed once per process (~50 ms).
  static std::optional<std::string> unsupported();

  /// Creates `hosts` (1..200) host namespaces and the hub, wired as above.
  /// X = 1 + pid % 250. Namespaces are named "pl<pid>-<n>-hub" and
  /// "pl<pid>-<n>-h<i>" (n counts labs in this process). First deletes
  /// namespaces (and kills processes inside them) left by earlier labs whose
  /// process is gone. Throws std::runtime_error naming the failing command and
  /// its stderr; whatever was made up to then is deleted again.
  explicit netns_lab(int hosts);
  /// Kills processes still running inside the lab's namespaces (with a note
  /// on stderr; stop yours first) and deletes every namespace it made, which
  /// removes its links and bridges. Never throws.
  ~netns_lab();
  netns_lab(const netns_lab&) = delete;
  netns_lab& operator=(const netns_lab&) = delete;

  int hosts() const { return static_cast<int>(hosts_.size()); }
  std::string cluster_ip(int host) const;
  std::string service_ip(int host) const;
  std::string hub_service_ip() const;
  /// "10.X.2.0/24" (for pg_hba.conf and the like).
  std::string service_subnet() const;

  /// Namespace names, for `ip netns exec`, `ip -n`, /var/run/netns/<name>.
  const std::string& host_ns(int host) const;
  const std::string& hub_ns() const { return hub_; }
  /// "pl<pid>-<n>-": every namespace of this lab starts with it.
  const std::string& prefix() const { return prefix_; }

  /// Path of the `ip` program in use.
  static const std::string& ip_path();
  /// {ip, "netns", "exec", <ns>}: append a command to run it inside host i
  /// (or the hub). `ip netns exec` replaces itself with the command, so the
  /// PID of such a child is the command's.
  std::vector<std::string> exec_prefix(int host) const;
  std::vector<std::string> hub_exec_prefix() const;

  /// Cuts host i off the cluster network: its veth is set down on the hub
  /// side (no frames pass either way) and on the host side (its own cluster
  /// address stays assigned and bindable; its connects to peers fail with
  /// "network unreachable"). Peers' connects to it time out or fail with
  /// "no route to host". The service link stays up. Idempotent.
  void cut(int host);
  /// Undoes cut(). Idempotent.
  void heal(int host);
  bool is_cut(int host) const;

  /// RAII: while alive, the CALLING THREAD is in the given namespace (setns),
  /// so plain sockets (http_at, pqxx) see that namespace; children forked
  /// meanwhile start there too. Restores the thread's namespace on
  /// destruction. Destroy it on the thread that made it, before the lab.
  class in_netns {
  public:
    explicit in_netns(const std::string& ns_name);
    ~in_netns();
    in_netns(const in_netns&) = delete;
    in_netns& operator=(const in_netns&) = delete;

  private:
    int saved_ = -1;
  };
  /// The hub: reaches every service address and hub services (PostgreSQL).
  class in_hub : public in_netns {
  public:
    explicit in_hub(const netns_lab& lab) : in_netns(lab.hub_ns()) {}
  };
  /// Host i: sees the network as a node on that host does.
  class in_host : public in_netns {
  public:
    in_host(const netns_lab& lab, int host) : in_netns(lab.host_ns(host)) {}
  };

private:
  void check(int host) const;
  void ip(const std::vector<std::string>& args) const;
  void teardown() noexcept;

  int x_;
  std::string prefix_, hub_;
  std::vector<std::string> hosts_;
  std::vector<bool> cut_;
  std::vector<std::string> made_;  ///< namespaces created, in order
};

/// A private PostgreSQL server in the lab's hub, listening on
/// hub_service_ip():port only, data in /tmp/pl<pid>-pg-XXXXXX, fsync off,
/// trust authentication for local sockets and the service network. Runs as
/// the `postgres` user when we are root (initdb and postgres refuse root),
/// from the newest /usr/lib/postgresql/<version>/bin.
class netns_postgres {
public:
  /// Why PostgreSQL cannot run here (server binaries or `postgres` user
  /// missing), or nullopt.
  static std::optional<std::string> unsupported();

  /// initdb, start, wait until it accepts connections (throws with the log
  /// tail otherwise). Removes data directories left by dead processes first.
  explicit netns_postgres(const netns_lab& lab, unsigned short port = 5432);
  /// SIGINT (fast shutdown), SIGKILL after 20 s, then removes the directory.
  ~netns_postgres();
  netns_postgres(const netns_postgres&) = delete;
  netns_postgres& operator=(const netns_postgres&) = delete;

  /// "host=10.X.2.254 port=P user=postgres dbname=postgres" (reachable from
  /// the hub and every host; append " dbname=..." to pick another database).
  std::string url() const;
  const std::string& host() const { return host_; }
  unsigned short port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  std::string log_tail(int lines = 30) const;

private:
  void stop() noexcept;

  std::string host_, dir_;
  unsigned short port_;
  pid_t pid_ = -1;
};

} // namespace parley::test

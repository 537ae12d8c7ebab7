#include "tests/integration/netns_lab.hpp"
#include "tests/integration/node_harness.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace parley::test {

namespace {

using clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr const char* netns_dir = "/var/run/netns"; // where `ip netns` keeps its names

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (auto& a : argv)
    s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.pop_back();
  return s;
}

bool executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

/// `name` if it has a slash, else its first executable match in PATH ("" if none).
std::string which(const std::string& name) {
  if (name.find('/') != std::string::npos)
    return name;
  const char* path = std::getenv("PATH");
  std::istringstream dirs{path ? path : "/usr/local/bin:/usr/bin:/bin"};
  std::string d;
  while (std::getline(dirs, d, ':'))
    if (!d.empty() && executable(d + "/" + name))
      return d + "/" + name;
  return {};
}

/// True if `pid` does not exist or is a zombie (killed, not yet reaped).
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0)
    return errno == ESRCH;
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string all;
  std::getline(stat, all);
  auto paren = all.rfind(')'); // the command name may contain spaces and parentheses
  if (!stat.is_open())
    return true; // gone since kill()
  if (paren == std::string::npos || paren + 2 >= all.size())
    return false;
  char state = all[paren + 2];
  return state == 'Z' || state == 'X';
}

struct spawn_options {
  int out_fd = -1; ///< becomes stdout (-1: /dev/null)
  int err_fd = -1; ///< becomes stderr (-1: /dev/null)
  int netns_fd = -1; ///< setns() into this network namespace first
  bool as_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

/// fork + execv. Returns the child's PID, or -1 with `why` set when the child
/// could not get as far as exec (reported through a close-on-exec pipe).
pid_t spawn(const std::vector<std::string>& argv_in, const spawn_options& o, std::string& why) {
  auto exe = which(argv_in.at(0));
  if (exe.empty()) {
    why = argv_in[0] + ": not found in PATH";
    return -1;
  }
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (std::size_t i = 1; i < argv_in.size(); ++i)
    argv.push_back(const_cast<char*>(argv_in[i].c_str()));
  argv.push_back(nullptr);

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    why = std::string{"pipe: "} + std::strerror(errno);
    return -1;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    why = std::string{"fork: "} + std::strerror(errno);
    ::close(report[0]);
    ::close(report[1]);
    return -1;
  }
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    auto fail = [&](int stage) {
      int msg[2] = {stage, errno};
      [[maybe_unused]] auto n = ::write(report[1], msg, sizeof msg);
      ::_exit(127);
    };
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd < 0)
      fail(1);
    if (::dup2(null_fd, 0) < 0 || ::dup2(o.out_fd >= 0 ? o.out_fd : null_fd, 1) < 0 ||
        ::dup2(o.err_fd >= 0 ? o.err_fd : null_fd, 2) < 0)
      fail(1);
    if (o.netns_fd >= 0 && ::setns(o.netns_fd, CLONE_NEWNET) != 0)
      fail(2);
    if (o.as_user) {
      gid_t g = o.gid;
      if (::setgroups(1, &g) != 0 || ::setgid(o.gid) != 0 || ::setuid(o.uid) != 0)
        fail(3);
    }
    if (::chdir("/") != 0)
      fail(4);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGCHLD, SIGHUP, SIGQUIT})
      ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(exe.c_str(), argv.data());
    fail(5);
  }
  ::close(report[1]);
  int msg[2];
  ssize_t n;
  do
    n = ::read(report[0], msg, sizeof msg);
  while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof msg)) {
    static const char* stages[] = {"", "redirect stdio", "setns", "switch user", "chdir /", "exec"};
    why = std::string{"cannot "} + stages[msg[0]] + " for " + exe + ": " + std::strerror(msg[1]);
    int st;
    ::waitpid(pid, &st, 0);
    return -1;
  }
  return pid;
}

command_result run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                   spawn_options o = {}) {
  command_result r;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string{"pipe: "} + std::strerror(errno));
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw std::runtime_error(std::string{"pipe: "} + std::strerror(errno));
  }
  o.out_fd = out[1];
  o.err_fd = err[1];
  std::string why;
  pid_t pid = spawn(argv, o, why);
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    ::close(out[0]);
    ::close(err[0]);
    r.err = why;
    return r;
  }
  auto deadline = clock::now() + timeout;
  pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sink[2] = {&r.out, &r.err};
  int open_fds = 2;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    int k = ::poll(p, 2, static_cast<int>(left.count()));
    if (k < 0 && errno != EINTR)
      break;
    for (int i = 0; i < 2 && k > 0; ++i) {
      if (p[i].fd < 0 || !p[i].revents)
        continue;
      char buf[4096];
      auto got = ::read(p[i].fd, buf, sizeof buf);
      if (got > 0) {
        sink[i]->append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        p[i].fd = -1; // poll ignores negative descriptors
        --open_fds;
      }
    }
  }
  ::close(out[0]);
  ::close(err[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  r.status = !r.timed_out && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (r.timed_out)
    r.err += "\n(killed after " + std::to_string(timeout.count()) + " ms)";
  return r;
}

std::string failure(const std::vector<std::string>& argv, const command_result& r) {
  return "`" + join(argv) + "` failed (" +
         (r.timed_out ? std::string{"timed out"} : "exit " + std::to_string(r.status)) +
         "): " + trim(r.err.empty() ? r.out : r.err);
}

std::string find_ip() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (executable(p))
      return p;
  return which("ip");
}

command_result ip_run(const std::vector<std::string>& args) {
  std::vector<std::string> argv{netns_lab::ip_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, std::chrono::seconds(30));
}

void ip_or_throw(const std::vector<std::string>& args) {
  auto r = ip_run(args);
  if (!r.ok()) {
    std::vector<std::string> argv{netns_lab::ip_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    throw std::runtime_error(failure(argv, r));
  }
}

std::string comm_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/comm"};
  std::string c;
  std::getline(in, c);
  return c.empty() ? "?" : c;
}

/// SIGKILLs every process (other than this one) whose network namespace is `ns`.
void kill_inside(const std::string& ns) {
  auto r = ip_run({"netns", "pids", ns});
  std::istringstream in{r.out};
  long pid;
  while (in >> pid) {
    if (pid <= 1 || pid == ::getpid())
      continue;
    std::cerr << "netns_lab: killing PID " << pid << " (" << comm_of(static_cast<pid_t>(pid))
              << ") still running in namespace " << ns << "\n";
    ::kill(static_cast<pid_t>(pid), SIGKILL);
  }
}

void delete_ns(const std::string& ns) noexcept {
  try {
    kill_inside(ns);
    auto r = ip_run({"netns", "delete", ns});
    if (!r.ok() && ::access((std::string{netns_dir} + "/" + ns).c_str(), F_OK) == 0)
      std::cerr << "netns_lab: " << failure({"ip", "netns", "delete", ns}, r) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "netns_lab: deleting " << ns << ": " << e.what() << "\n";
  }
}

// Prefixes ("pl<pid>-<n>-") of the labs alive in this process.
std::mutex live_mutex;
std::set<std::string> live_prefixes;

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

/// Parses a lab namespace name: "pl<pid>-<n>-hub", "pl<pid>-<n>-h<i>" or
/// "pl<pid>-probe-a|b". Returns the PID (0 if not one of ours) and the lab prefix.
pid_t parse_ns_name(const std::string& name, std::string& prefix) {
  if (name.rfind("pl", 0) != 0)
    return 0;
  auto dash = name.find('-', 2);
  if (dash == std::string::npos || !all_digits(name.substr(2, dash - 2)) || dash - 2 > 9)
    return 0;
  pid_t pid = static_cast<pid_t>(std::stol(name.substr(2, dash - 2)));
  auto rest = name.substr(dash + 1);
  if (rest == "probe-a" || rest == "probe-b") {
    prefix.clear();
    return pid;
  }
  auto dash2 = rest.find('-');
  if (dash2 == std::string::npos || !all_digits(rest.substr(0, dash2)))
    return 0;
  auto tail = rest.substr(dash2 + 1);
  if (tail != "hub" && !(tail.size() > 1 && tail[0] == 'h' && all_digits(tail.substr(1))))
    return 0;
  prefix = name.substr(0, dash + 1 + dash2 + 1);
  return pid;
}

/// Removes /tmp/pl<pid>-pg-* directories of processes that are gone.
void clean_stale_pg_dirs() noexcept try {
  std::error_code ec;
  for (auto& e : fs::directory_iterator{"/tmp", ec}) {
    auto name = e.path().filename().string();
    auto dash = name.find("-pg-");
    if (name.rfind("pl", 0) != 0 || dash == std::string::npos || dash > 11 ||
        !all_digits(name.substr(2, dash - 2)))
      continue;
    auto pid = static_cast<pid_t>(std::stol(name.substr(2, dash - 2)));
    if (pid == ::getpid() || !process_gone(pid))
      continue;
    std::cerr << "netns_postgres: removing stale " << e.path() << "\n";
    std::error_code rm;
    fs::remove_all(e.path(), rm);
  }
} catch (const std::exception& e) {
  std::cerr << "netns_postgres: looking for stale directories in /tmp: " << e.what() << "\n";
}

/// Deletes lab namespaces whose process is gone (or, for this process's PID,
/// that belong to no live lab: a dead process had our PID before).
void clean_stale_namespaces() {
  std::vector<std::string> stale;
  if (DIR* d = ::opendir(netns_dir)) {
    while (auto* e = ::readdir(d)) {
      std::string name = e->d_name, prefix;
      pid_t pid = parse_ns_name(name, prefix);
      if (pid <= 0)
        continue;
      bool is_stale;
      if (pid == ::getpid()) {
        std::lock_guard<std::mutex> lock{live_mutex};
        is_stale = prefix.empty() || !live_prefixes.count(prefix);
      } else {
        is_stale = process_gone(pid);
      }
      if (is_stale)
        stale.push_back(name);
    }
    ::closedir(d);
  }
  for (auto& ns : stale) {
    std::cerr << "netns_lab: deleting stale namespace " << ns << " of a process that is gone\n";
    delete_ns(ns);
  }
  clean_stale_pg_dirs(); // their servers ran in the hubs just deleted
}

std::optional<std::string> probe() {
  if (::geteuid() != 0)
    return "not running as root (euid " + std::to_string(::geteuid()) +
           "): network namespaces, veth pairs and bridges need root";
  if (netns_lab::ip_path().empty())
    return std::string{"the `ip` program (iproute2) is not installed "
                       "(looked in /usr/sbin, /sbin, /usr/bin, /bin and PATH)"};
  auto pid = std::to_string(::getpid());
  std::string a = "pl" + pid + "-probe-a", b = "pl" + pid + "-probe-b";
  delete_ns(a);
  delete_ns(b);
  struct step {
    const char* what;
    std::vector<std::string> args;
  };
  std::vector<step> steps = {
    {"create a network namespace", {"netns", "add", a}},
    {"create a network namespace", {"netns", "add", b}},
    {"bring up loopback in a namespace", {"-n", a, "link", "set", "lo", "up"}},
    {"create a bridge", {"-n", a, "link", "add", "brprobe", "type", "bridge"}},
    {"create a veth pair between namespaces",
     {"-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", b}},
    {"attach a veth to a bridge", {"-n", a, "link", "set", "v0", "master", "brprobe", "up"}},
    {"isolate a bridge port (needs Linux 4.18+)",
     {"-n", a, "link", "set", "v0", "type", "bridge_slave", "isolated", "on"}},
    {"run a command in a namespace (`ip netns exec`)",
     {"netns", "exec", a, netns_lab::ip_path(), "-V"}},
  };
  std::optional<std::string> why;
  for (auto& s : steps) {
    auto r = ip_run(s.args);
    if (!r.ok()) {
      std::vector<std::string> argv{netns_lab::ip_path()};
      argv.insert(argv.end(), s.args.begin(), s.args.end());
      why = std::string{"cannot "} + s.what + ": " + failure(argv, r);
      break;
    }
  }
  if (!why) {
    std::thread t{[&] {
      try {
        netns_lab::in_netns enter{a};
      } catch (const std::exception& e) {
        why = std::string{"cannot enter a network namespace: "} + e.what();
      }
    }};
    t.join();
  }
  delete_ns(a);
  delete_ns(b);
  return why;
}

} // namespace

command_result run_command(const std::vector<std::string>& argv,
                           std::chrono::milliseconds timeout) {
  if (argv.empty())
    throw std::invalid_argument("run_command: empty argv");
  return run(argv, timeout);
}

bool can_connect(const std::string& host, unsigned short port, std::chrono::milliseconds timeout) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
    return false;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return false;
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    ok = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  ::close(fd);
  return ok;
}

// ---------------------------------------------------------------------------
// netns_lab

const std::string& netns_lab::ip_path() {
  static const std::string path = find_ip();
  return path;
}

std::optional<std::string> netns_lab::unsupported() {
  static const std::optional<std::string> why = probe();
  return why;
}

netns_lab::netns_lab(int hosts) {
  if (hosts < 1 || hosts > 200)
    throw std::invalid_argument("netns_lab: hosts must be 1..200, not " + std::to_string(hosts));
  if (auto why = unsupported())
    throw std::runtime_error("netns_lab cannot run here: " + *why);
  static std::atomic<int> labs{0};
  auto pid = ::getpid();
  x_ = 1 + static_cast<int>(pid % 250);
  prefix_ = "pl" + std::to_string(pid) + "-" + std::to_string(labs++) + "-";
  hub_ = prefix_ + "hub";
  for (int i = 0; i < hosts; ++i)
    hosts_.push_back(prefix_ + "h" + std::to_string(i));
  cut_.assign(static_cast<std::size_t>(hosts), false);
  {
    std::lock_guard<std::mutex> lock{live_mutex};
    live_prefixes.insert(prefix_);
  }
  try {
    clean_stale_namespaces();
    auto add_ns = [&](const std::string& ns) {
      ip({"netns", "add", ns});
      made_.push_back(ns);
      ip({"-n", ns, "link", "set", "lo", "up"});
    };
    add_ns(hub_);
    for (auto& h : hosts_)
      add_ns(h);
    ip({"-n", hub_, "link", "add", "brclu", "type", "bridge"});
    ip({"-n", hub_, "link", "add", "brsvc", "type", "bridge"});
    ip({"-n", hub_, "addr", "add", hub_service_ip() + "/24", "dev", "brsvc"});
    ip({"-n", hub_, "link", "set", "brclu", "up"});
    ip({"-n", hub_, "link", "set", "brsvc", "up"});
    for (int i = 0; i < hosts; ++i) {
      auto& h = hosts_[static_cast<std::size_t>(i)];
      auto c = "h" + std::to_string(i) + "clu", s = "h" + std::to_string(i) + "svc";
      ip({"-n", hub_, "link", "add", c, "type", "veth", "peer", "name", "clu", "netns", h});
      ip({"-n", hub_, "link", "add", s, "type", "veth", "peer", "name", "svc", "netns", h});
      ip({"-n", hub_, "link", "set", c, "master", "brclu", "up"});
      ip({"-n", hub_, "link", "set", s, "master", "brsvc", "up"});
      ip({"-n", hub_, "link", "set", s, "type", "bridge_slave", "isolated", "on"});
      ip({"-n", h, "addr", "add", cluster_ip(i) + "/24", "dev", "clu"});
      ip({"-n", h, "addr", "add", service_ip(i) + "/24", "dev", "svc"});
      ip({"-n", h, "link", "set", "clu", "up"});
      ip({"-n", h, "link", "set", "svc", "up"});
    }
  } catch (...) {
    teardown();
    throw;
  }
}

netns_lab::~netns_lab() { teardown(); }

void netns_lab::teardown() noexcept {
  for (auto it = made_.rbegin(); it != made_.rend(); ++it)
    delete_ns(*it);
  made_.clear();
  std::lock_guard<std::mutex> lock{live_mutex};
  live_prefixes.erase(prefix_);
}

void netns_lab::ip(const std::vector<std::string>& args) const { ip_or_throw(args); }

void netns_lab::check(int host) const {
  if (host < 0 || host >= hosts())
    throw std::out_of_range("netns_lab: no host " + std::to_string(host) + " (have " +
                            std::to_string(hosts()) + ")");
}

std::string netns_lab::cluster_ip(int host) const {
  check(host);
  return "10." + std::to_string(x_) + ".1." + std::to_string(host + 1);
}

std::string netns_lab::service_ip(int host) const {
  check(host);
  return "10." + std::to_string(x_) + ".2." + std::to_string(host + 1);
}

std::string netns_lab::hub_service_ip() const { return "10." + std::to_string(x_) + ".2.254"; }

std::string netns_lab::service_subnet() const { return "10." + std::to_string(x_) + ".2.0/24"; }

const std::string& netns_lab::host_ns(int host) const {
  check(host);
  return hosts_[static_cast<std::size_t>(host)];
}

std::vector<std::string> netns_lab::exec_prefix(int host) const {
  return {ip_path(), "netns", "exec", host_ns(host)};
}

std::vector<std::string> netns_lab::hub_exec_prefix() const {
  return {ip_path(), "netns", "exec", hub_};
}

void netns_lab::cut(int host) {
  check(host);
  ip({"-n", hub_, "link", "set", "h" + std::to_string(host) + "clu", "down"});
  ip({"-n", host_ns(host), "link", "set", "clu", "down"});
  cut_[static_cast<std::size_t>(host)] = true;
}

void netns_lab::heal(int host) {
  check(host);
  ip({"-n", host_ns(host), "link", "set", "clu", "up"});
  ip({"-n", hub_, "link", "set", "h" + std::to_string(host) + "clu", "up"});
  cut_[static_cast<std::size_t>(host)] = false;
}

bool netns_lab::is_cut(int host) const {
  check(host);
  return cut_[static_cast<std::size_t>(host)];
}

netns_lab::in_netns::in_netns(const std::string& ns_name) {
  auto self = "/proc/self/task/" + std::to_string(::syscall(SYS_gettid)) + "/ns/net";
  saved_ = ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
  if (saved_ < 0)
    throw std::runtime_error("open " + self + ": " + std::strerror(errno));
  auto path = std::string{netns_dir} + "/" + ns_name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
    auto msg = (fd < 0 ? "open " : "setns ") + path + ": " + std::strerror(errno);
    if (fd >= 0)
      ::close(fd);
    ::close(saved_);
    throw std::runtime_error(msg);
  }
  ::close(fd);
}

netns_lab::in_netns::~in_netns() {
  if (::setns(saved_, CLONE_NEWNET) != 0) {
    // A thread left in a lab namespace would silently break everything after.
    std::cerr << "netns_lab: cannot return to the original network namespace: "
              << std::strerror(errno) << "\n";
    std::abort();
  }
  ::close(saved_);
}

// ---------------------------------------------------------------------------
// netns_postgres

namespace {

/// bin directory of the newest /usr/lib/postgresql/<version>, or "".
std::string pg_bindir() {
  std::string best;
  double best_v = -1;
  std::error_code ec;
  for (auto& e : fs::directory_iterator{"/usr/lib/postgresql", ec}) {
    auto name = e.path().filename().string();
    char* end = nullptr;
    double v = std::strtod(name.c_str(), &end);
    if (end == name.c_str() || *end != '\0')
      continue;
    auto bin = e.path().string() + "/bin";
    if (v > best_v && executable(bin + "/postgres") && executable(bin + "/initdb")) {
      best_v = v;
      best = bin;
    }
  }
  return best;
}

} // namespace

std::optional<std::string> netns_postgres::unsupported() {
  if (pg_bindir().empty())
    return std::string{"PostgreSQL server binaries not found under "
                       "/usr/lib/postgresql/<version>/bin (package postgresql)"};
  if (::geteuid() == 0 && !::getpwnam("postgres"))
    return std::string{"running as root, but there is no `postgres` user to run initdb and "
                       "postgres as (they refuse to run as root)"};
  return std::nullopt;
}

netns_postgres::netns_postgres(const netns_lab& lab, unsigned short port)
  : host_(lab.hub_service_ip()), port_(port) {
  if (auto why = unsupported())
    throw std::runtime_error("netns_postgres cannot run here: " + *why);
  auto bin = pg_bindir();
  clean_stale_pg_dirs();
  std::string tmpl = "/tmp/pl" + std::to_string(::getpid()) + "-pg-XXXXXX";
  if (!::mkdtemp(tmpl.data()))
    throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
  dir_ = tmpl;
  auto hub_path = std::string{netns_dir} + "/" + lab.hub_ns();
  int ns_fd = -1, log_fd = -1;
  try {
    // initdb runs in the hub as well, so that a lab left behind by a killed
    // test takes it down with it.
    ns_fd = ::open(hub_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0)
      throw std::runtime_error("open " + hub_path + ": " + std::strerror(errno));
    spawn_options as;
    as.netns_fd = ns_fd;
    if (::geteuid() == 0) {
      auto* pw = ::getpwnam("postgres");
      as.as_user = true;
      as.uid = pw->pw_uid;
      as.gid = pw->pw_gid;
      if (::chown(dir_.c_str(), as.uid, as.gid) != 0)
        throw std::runtime_error("chown " + dir_ + ": " + std::strerror(errno));
    }
    ::chmod(dir_.c_str(), 0700);
    auto data = dir_ + "/data";
    std::vector<std::string> initdb{bin + "/initdb", "-D",          data,       "-U",
                                    "postgres",      "--auth=trust", "-E",       "UTF8",
                                    "--no-locale",   "--no-sync"};
    auto r = run(initdb, std::chrono::seconds(120), as);
    if (!r.ok())
      throw std::runtime_error(failure(initdb, r) + "\n" + r.out);
    {
      std::ofstream hba{data + "/pg_hba.conf", std::ios::trunc};
      hba << "# written by netns_postgres\n"
          << "local all all trust\n"
          << "host all all 127.0.0.1/32 trust\n"
          << "host all all " << lab.service_subnet() << " trust\n";
      if (!hba)
        throw std::runtime_error("cannot write " + data + "/pg_hba.conf");
    }
    auto log = dir_ + "/server.log";
    log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0)
      throw std::runtime_error("open " + log + ": " + std::strerror(errno));
    as.out_fd = as.err_fd = log_fd;
    std::string why;
    pid_ = spawn({bin + "/postgres", "-D", data, "-p", std::to_string(port_), "-k", dir_, "-c",
                  "listen_addresses=" + host_, "-c", "fsync=off", "-c", "synchronous_commit=off",
                  "-c", "full_page_writes=off", "-c", "max_connections=200"},
                 as, why);
    ::close(std::exchange(log_fd, -1));
    ::close(std::exchange(ns_fd, -1));
    if (pid_ < 0)
      throw std::runtime_error("cannot start postgres: " + why);

    auto deadline = clock::now() + std::chrono::seconds(60);
    for (;;) {
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("postgres exited during start-up:\n" + log_tail());
      }
      std::ifstream pidfile{data + "/postmaster.pid"};
      std::string line, status;
      for (int i = 0; i < 8 && std::getline(pidfile, line); ++i)
        status = line;
      if (trim(status) == "ready") {
        netns_lab::in_hub in{lab};
        if (can_connect(host_, port_, std::chrono::seconds(1)))
          break;
      }
      if (clock::now() > deadline)
        throw std::runtime_error("postgres did not become ready within 60 s:\n" + log_tail());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (...) {
    if (log_fd >= 0)
      ::close(log_fd);
    if (ns_fd >= 0)
      ::close(ns_fd);
    stop();
    throw;
  }
}

netns_postgres::~netns_postgres() { stop(); }

void netns_postgres::stop() noexcept {
  if (pid_ > 0) {
    ::kill(pid_, SIGINT); // fast shutdown
    auto deadline = clock::now() + std::chrono::seconds(20);
    int st;
    bool gone = false;
    while (!gone && clock::now() < deadline) {
      gone = ::waitpid(pid_, &st, WNOHANG) == pid_;
      if (!gone)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!gone) {
      std::cerr << "netns_postgres: PID " << pid_ << " ignored SIGINT for 20 s; SIGKILL\n";
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
    }
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    for (int attempt = 0; attempt < 3; ++attempt) {
      fs::remove_all(dir_, ec);
      std::error_code ignored;
      if (!fs::exists(dir_, ignored))
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::error_code ignored;
    if (fs::exists(dir_, ignored))
      std::cerr << "netns_postgres: could not remove " << dir_ << ": " << ec.message() << "\n";
    dir_.clear();
  }
}

std::string netns_postgres::url() const {
  return "host=" + host_ + " port=" + std::to_string(port_) + " user=postgres dbname=postgres";
}

std::string netns_postgres::log_tail(int lines) const {
  return file_tail(dir_ + "/server.log", lines);
}

} // namespace parley::test

#pragma once
// A private PostgreSQL server for tests that stop and restart it (the shared
// server of scripts/test must never go away under other tests).
//
// initdb into a fresh /tmp directory once, then `postgres` as a direct child
// process (not daemonized, no pg_ctl) on 127.0.0.1 and a free port below
// 32768, stopped by its PID. When the test runs as root, both run as the
// `postgres` user (they refuse root). PR_SET_PDEATHSIG (SIGQUIT: immediate
// shutdown) stops the server if the test process dies first; that signal
// follows the forking THREAD, so start and restart from the test's own thread.

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pqxx/pqxx>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace parley::test {

class pg_server {
public:
  /// initdb, then starts on a free port below 32768; throws if that fails.
  pg_server() {
    bin_ = find_bindir();
    char tmpl[] = "/tmp/parley-pg-XXXXXX";
    if (!mkdtemp(tmpl))
      throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (::geteuid() == 0) {
      auto* pw = ::getpwnam("postgres");
      if (!pw)
        throw std::runtime_error("running as root, but there is no postgres user");
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      if (::chown(dir_.c_str(), uid_, gid_) != 0)
        throw std::runtime_error("chown of " + dir_ + " failed");
    }
    int st = run_and_wait({bin_ + "/initdb", "-D", dir_ + "/data", "-U", "postgres", "--auth=trust",
                           "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"},
                          dir_ + "/initdb.log");
    if (st != 0)
      throw std::runtime_error("initdb failed (" + std::to_string(st) +
                               "): " + slurp(dir_ + "/initdb.log"));
    auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
    auto seed = static_cast<unsigned long>(getpid()) * 104729u + static_cast<unsigned long>(ticks);
    int base = static_cast<int>(seed % 12000);
    for (int i = 0; i < 50 && pid_ <= 0; ++i) {
      int port = 20000 + (base + i * 53) % 12000;
      if (port_is_free(port))
        try_start(port);
    }
    if (pid_ <= 0) {
      auto log = slurp(dir_ + "/server.log");
      remove_dir();
      throw std::runtime_error("could not start postgres on any free port: " + log);
    }
  }

  ~pg_server() {
    stop();
    remove_dir();
  }

  pg_server(const pg_server&) = delete;
  pg_server& operator=(const pg_server&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  /// libpq connection string of its `postgres` database (what scratch_db takes).
  std::string admin_url() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=postgres";
  }
  std::string log_path() const { return dir_ + "/server.log"; }

  /// Fast shutdown (SIGINT: clients are disconnected, work is checkpointed);
  /// waits until the postmaster has exited, SIGQUIT after 30 s, SIGKILL after 10 more.
  void stop() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGINT);
    if (!wait_gone(std::chrono::seconds{30})) {
      ::kill(pid_, SIGQUIT);
      if (!wait_gone(std::chrono::seconds{10})) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
      }
    }
    pid_ = -1;
  }

  /// Starts again on the same port (retrying for up to 20 s).
  void restart() {
    stop();
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{20};
    while (!try_start(port_)) {
      if (std::chrono::steady_clock::now() > until)
        throw std::runtime_error("postgres would not restart on port " + std::to_string(port_) +
                                 ": " + slurp(log_path()));
      std::this_thread::sleep_for(std::chrono::milliseconds{200});
    }
  }

private:
  static std::string find_bindir() {
    std::string best;
    int best_v = -1;
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator{"/usr/lib/postgresql", ec}) {
      auto name = e.path().filename().string();
      int v = std::atoi(name.c_str());
      if (v > best_v && ::access((e.path() / "bin/postgres").c_str(), X_OK) == 0) {
        best_v = v;
        best = (e.path() / "bin").string();
      }
    }
    if (best.empty())
      throw std::runtime_error(
          "PostgreSQL not found under /usr/lib/postgresql (package postgresql)");
    return best;
  }

  static bool port_is_free(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
      return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  }

  static std::string slurp(const std::string& path) {
    std::ifstream in{path};
    std::string s{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
    return s.size() > 2000 ? s.substr(s.size() - 2000) : s;
  }

  static bool accepts(const std::string& conninfo) {
    try {
      pqxx::connection c{conninfo};
      return c.is_open();
    } catch (const std::exception&) {
      return false; // still starting up, or not there
    }
  }

  void remove_dir() {
    std::error_code ec;
    if (!dir_.empty())
      std::filesystem::remove_all(dir_, ec);
  }

  bool wait_gone(std::chrono::seconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      auto r = ::waitpid(pid_, nullptr, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD))
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    return false;
  }

  /// fork + exec of `args` as the postgres user when root, output appended
  /// to `log`; the child's PID (-1 when fork failed).
  pid_t spawn(const std::vector<std::string>& args, const std::string& log, bool pdeath) {
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0 && uid_ != 0)
      (void)::fchown(fd, uid_, gid_);
    pid_t parent = getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec.
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (::chdir(dir_.c_str()) != 0)
        ::_exit(126);
      if (uid_ != 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(gid_) != 0 || ::setuid(uid_) != 0)
          ::_exit(126);
      }
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      // After setuid, which clears the parent-death signal.
      if (pdeath) {
        ::prctl(PR_SET_PDEATHSIG, SIGQUIT);
        if (::getppid() != parent)
          ::_exit(1);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (fd >= 0)
      ::close(fd);
    return pid;
  }

  int run_and_wait(const std::vector<std::string>& args, const std::string& log) {
    pid_t pid = spawn(args, log, false);
    if (pid < 0)
      return -1;
    int st = 0;
    ::waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

  /// Starts postgres on `port` and waits (up to 30 s) until it accepts
  /// connections as our PID; false when it exited (the port was taken).
  bool try_start(int port) {
    pid_t pid = spawn({bin_ + "/postgres", "-D", dir_ + "/data", "-p", std::to_string(port), "-k",
                       dir_, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                       "full_page_writes=off", "-c", "max_connections=200"},
                      log_path(), true);
    if (pid < 0)
      return false;
    auto conninfo = "host=127.0.0.1 port=" + std::to_string(port) +
                    " user=postgres dbname=postgres connect_timeout=2";
    auto pidfile = dir_ + "/data/postmaster.pid";
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{30};
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid)
        return false;
      std::ifstream in{pidfile};
      std::string first;
      std::getline(in, first);
      if (first == std::to_string(pid) && accepts(conninfo)) {
        pid_ = pid;
        port_ = port;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    ::kill(pid, SIGQUIT);
    ::waitpid(pid, nullptr, 0);
    return false;
  }

  std::string bin_, dir_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  int port_ = 0;
  pid_t pid_ = -1;
};

} // namespace parley::test

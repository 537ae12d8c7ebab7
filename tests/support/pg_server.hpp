#pragma once
// A private PostgreSQL server for tests that stop, restart or hang it: its
// own data directory (initdb once), 127.0.0.1 on a port the test chooses
// (below 32768), its unix socket in that directory, stopped by its PID.
//
// The server is a child process of the test (not daemonized): when root, it
// runs as the postgres user (initdb and postgres refuse root), and
// PR_SET_PDEATHSIG kills it if the test process dies first; that signal
// follows the forking THREAD, so start servers from the test's own thread.

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <pwd.h>
#include <stdexcept>
#include <string>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <pqxx/pqxx>

namespace parley::test {

class pg_server {
public:
  /// initdb into a fresh directory, then starts on the first port from
  /// `next_port` that works (a few tries); throws if none does.
  explicit pg_server(const std::function<unsigned short()>& next_port) {
    char tmpl[] = "/tmp/parley-pg-XXXXXX";
    if (!mkdtemp(tmpl))
      throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    bin_ = find_bindir();
    if (::geteuid() == 0) {
      auto* pw = ::getpwnam("postgres");
      if (!pw)
        throw std::runtime_error("no postgres user to run PostgreSQL as");
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      if (::chown(dir_.c_str(), uid_, gid_) != 0)
        throw std::runtime_error("chown of " + dir_ + " failed");
    }
    ::chmod(dir_.c_str(), 0700);
    auto initdb = spawn({bin_ + "/initdb", "-D", dir_ + "/data", "-U", "postgres", "--auth=trust",
                         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"},
                        dir_ + "/initdb.log", false);
    int status = 0;
    ::waitpid(initdb, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw std::runtime_error("initdb failed; see " + dir_ + "/initdb.log");
    for (int i = 0; i < 5 && pid_ <= 0; ++i)
      try_start(next_port(), std::chrono::seconds(30));
    if (pid_ <= 0)
      throw std::runtime_error("PostgreSQL would not start; see " + dir_ + "/server.log");
  }

  ~pg_server() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  pg_server(const pg_server&) = delete;
  pg_server& operator=(const pg_server&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  /// An admin connection string (database postgres).
  std::string url() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=postgres";
  }

  /// Fast shutdown (SIGINT) of our PID; waits until it is gone (SIGKILL
  /// after 30 s).
  void stop() {
    if (pid_ <= 0)
      return;
    resume();
    ::kill(pid_, SIGINT);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{30};
    while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    pid_ = -1;
  }

  /// Starts again on the same port and data directory (retrying while the
  /// port is briefly held).
  void start() {
    if (pid_ > 0)
      return;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{30};
    while (!try_start(port_, std::chrono::seconds(30))) {
      if (std::chrono::steady_clock::now() > until)
        throw std::runtime_error("PostgreSQL would not restart on port " +
                                 std::to_string(port_));
      std::this_thread::sleep_for(std::chrono::milliseconds{200});
    }
  }

  /// SIGSTOP to the postmaster and every backend: connections stay open
  /// and nothing answers (new connections are accepted by the kernel and
  /// then hang).
  void hang() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGSTOP);
    stopped_ = {pid_};
    for (auto child : children()) {
      ::kill(child, SIGSTOP);
      stopped_.push_back(child);
    }
  }

  /// SIGCONT to everything hang() stopped.
  void resume() {
    for (auto it = stopped_.rbegin(); it != stopped_.rend(); ++it)
      ::kill(*it, SIGCONT);
    stopped_.clear();
  }

private:
  static std::string find_bindir() {
    std::string best;
    long best_version = 0;
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
      long v = std::strtol(e.path().filename().c_str(), nullptr, 10);
      auto candidate = e.path().string() + "/bin";
      if (v > best_version && ::access((candidate + "/postgres").c_str(), X_OK) == 0) {
        best = candidate;
        best_version = v;
      }
    }
    if (best.empty())
      throw std::runtime_error("PostgreSQL server binaries not found (package postgresql)");
    return best;
  }

  /// PIDs whose parent is the postmaster.
  std::vector<pid_t> children() const {
    std::vector<pid_t> out;
    DIR* d = ::opendir("/proc");
    if (!d)
      return out;
    while (auto* e = ::readdir(d)) {
      char* end = nullptr;
      long p = std::strtol(e->d_name, &end, 10);
      if (!end || *end || p <= 0)
        continue;
      std::ifstream stat{"/proc/" + std::string{e->d_name} + "/stat"};
      std::string line;
      std::getline(stat, line);
      auto close = line.rfind(')');
      if (close == std::string::npos)
        continue;
      char state = 0;
      long ppid = 0;
      if (std::sscanf(line.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == pid_)
        out.push_back(static_cast<pid_t>(p));
    }
    ::closedir(d);
    return out;
  }

  /// Forks `args` (as the postgres user when root), output to `log`.
  pid_t spawn(const std::vector<std::string>& args, const std::string& log, bool die_with_us) {
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t parent = ::getpid();
    bool drop = ::geteuid() == 0;
    pid_t pid = ::fork();
    if (pid < 0)
      throw std::runtime_error("fork failed");
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec.
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (drop && (::setgid(gid_) != 0 || ::setuid(uid_) != 0))
        ::_exit(126);
      if (die_with_us) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL); // after setuid, which clears it
        if (::getppid() != parent)
          ::_exit(1);
      }
      ::chdir("/");
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return pid;
  }

  /// Starts the server on `port`; true once it accepts connections.
  bool try_start(int port, std::chrono::seconds limit) {
    auto pid = spawn({bin_ + "/postgres", "-D", dir_ + "/data", "-p", std::to_string(port), "-k",
                      dir_, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                      "full_page_writes=off", "-c", "max_connections=100"},
                     dir_ + "/server.log", true);
    auto until = std::chrono::steady_clock::now() + limit;
    std::string url = "host=127.0.0.1 port=" + std::to_string(port) +
                      " user=postgres dbname=postgres connect_timeout=2";
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid)
        return false; // it exited: the port was taken
      try {
        pqxx::connection c{url};
        pqxx::nontransaction n{c};
        // Ours, not another test's server that holds the port.
        if (n.exec("SHOW data_directory")[0][0].as<std::string>() == dir_ + "/data") {
          pid_ = pid;
          port_ = port;
          return true;
        }
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return false;
  }

  std::string dir_, bin_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  int port_ = 0;
  pid_t pid_ = -1;
  std::vector<pid_t> stopped_;
};

} // namespace parley::test

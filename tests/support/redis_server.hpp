#pragma once
// Redis for tests: the shared server named by PARLEY_TEST_REDIS_URL
// (scripts/test starts it), a private server a test can stop, hang and
// restart on the same port, and raw commands for assertions.
//
// A private server is a child process (not daemonized) on 127.0.0.1 and a
// free port below 32768 (outside Linux's ephemeral range), stopped by its PID.
// PR_SET_PDEATHSIG kills it if the test process dies first; that signal
// follows the forking THREAD, so start servers from the test's own thread.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace parley::test {

/// The shared test server's URL; throws when scripts/test did not set it.
inline std::string shared_redis_url() {
  auto* url = std::getenv("PARLEY_TEST_REDIS_URL");
  if (!url || !*url)
    throw std::runtime_error(
      "PARLEY_TEST_REDIS_URL is not set: run the tests through scripts/test");
  return url;
}

/// A key or channel name no other test (or test run) uses.
inline std::string unique_name(const std::string& what) {
  static std::atomic<int> counter{0};
  return "parley:test:" + std::to_string(getpid()) + ":" + what + ":" +
         std::to_string(++counter);
}

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using raw_reply = std::unique_ptr<redisReply, reply_deleter>;

/// Runs one command on a fresh connection (1 s timeouts), after
/// `AUTH password` when `password` is not empty; nullptr when the server
/// cannot be reached.
inline raw_reply raw_command(const std::string& host, int port,
                             const std::vector<std::string>& args,
                             const std::string& password = {}) {
  redisContext* c = redisConnectWithTimeout(host.c_str(), port, timeval{1, 0});
  if (!c || c->err) {
    if (c)
      redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, timeval{1, 0});
  auto run = [c](const std::vector<std::string>& words) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (auto& a : words) {
      argv.push_back(a.c_str());
      lens.push_back(a.size());
    }
    return raw_reply{static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()))};
  };
  if (!password.empty()) {
    auto auth = run({"AUTH", password});
    if (!auth || auth->type == REDIS_REPLY_ERROR) {
      redisFree(c);
      return auth;
    }
  }
  auto r = run(args);
  redisFree(c);
  return r;
}

/// Where a private server may listen: PARLEY_TEST_PRIVATE_PORTS ("LOW-HIGH",
/// so that parallel runs of the suites can keep apart), else 20000-31999.
inline std::pair<int, int> private_port_range() {
  if (auto* r = std::getenv("PARLEY_TEST_PRIVATE_PORTS"); r && *r) {
    int lo = 0, hi = 0;
    if (std::sscanf(r, "%d-%d", &lo, &hi) == 2 && 0 < lo && lo <= hi && hi < 32768)
      return {lo, hi};
    throw std::runtime_error("PARLEY_TEST_PRIVATE_PORTS: expected LOW-HIGH below 32768");
  }
  return {20000, 31999};
}

/// A private redis-server child process.
class redis_server {
public:
  /// Starts on a free port of private_port_range(); throws if none works.
  /// With `password`, the server has `requirepass password` (Redis AUTH).
  explicit redis_server(std::string password = {}) : password_(std::move(password)) {
    char tmpl[] = "/tmp/parley-redis-XXXXXX";
    if (!mkdtemp(tmpl))
      throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    // Start at a spot of its own, so that parallel tests rarely race.
    auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
    auto seed = static_cast<unsigned long>(getpid()) * 7919u + static_cast<unsigned long>(ticks);
    auto [low, high] = private_port_range();
    int span = high - low + 1;
    int base = static_cast<int>(seed % static_cast<unsigned long>(span));
    for (int i = 0; i < 200 && pid_ <= 0; ++i) {
      int port = low + (base + i * 37) % span;
      if (port_is_free(port))
        try_start(port);
    }
    if (pid_ <= 0) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      throw std::runtime_error("could not start redis-server on any free port");
    }
  }

  ~redis_server() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  /// Without credentials (a server with a password then answers NOAUTH).
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  const std::string& password() const { return password_; }

  /// SIGTERM to our PID, waits until it is gone (SIGKILL after 5 s).
  void stop() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGCONT); // a hung (stopped) server cannot act on SIGTERM
    ::kill(pid_, SIGTERM);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{5};
    while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    pid_ = -1;
  }

  /// Starts again on the same port (retrying for a few seconds).
  void restart() {
    stop();
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (!try_start(port_)) {
      if (std::chrono::steady_clock::now() > until)
        throw std::runtime_error("redis-server would not restart on port " +
                                 std::to_string(port_));
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
  }

  /// SIGSTOP: the server keeps its connections and answers nothing.
  void hang() { ::kill(pid_, SIGSTOP); }
  /// SIGCONT after hang().
  void resume() { ::kill(pid_, SIGCONT); }

private:
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

  static std::string find_binary() {
    std::string path = std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin";
    path += ":/usr/bin:/usr/sbin";
    std::size_t start = 0;
    while (start <= path.size()) {
      auto end = path.find(':', start);
      auto dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
      auto candidate = dir + "/redis-server";
      if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0)
        return candidate;
      if (end == std::string::npos)
        break;
      start = end + 1;
    }
    throw std::runtime_error("redis-server not found (package redis-server)");
  }

  /// Forks redis-server on `port` and waits until it answers as our PID.
  bool try_start(int port) {
    static const std::string bin = find_binary();
    std::vector<std::string> args{bin,          "--port",       std::to_string(port),
                                  "--bind",     "127.0.0.1",    "--save",
                                  "",           "--appendonly", "no",
                                  "--daemonize", "no",          "--logfile",
                                  dir_ + "/redis.log", "--dir", dir_};
    if (!password_.empty()) {
      args.push_back("--requirepass");
      args.push_back(password_);
    }
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t parent = getpid();
    pid_t pid = ::fork();
    if (pid < 0)
      return false;
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(1);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{5};
    std::string marker = "process_id:" + std::to_string(pid);
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid)
        return false; // it exited: the port was taken after all
      if (auto r = raw_command("127.0.0.1", port, {"INFO", "server"}, password_);
          r && r->type == REDIS_REPLY_STRING &&
          std::string{r->str, r->len}.find(marker + "\r") != std::string::npos) {
        pid_ = pid;
        port_ = port;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return false;
  }

  std::string password_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

/// A free port below 32768 on which nothing listens (for "Redis is down").
inline int unused_port() {
  for (int port = 31000; port > 20000; port -= 13) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok)
      return port;
  }
  throw std::runtime_error("no free port below 32768");
}

} // namespace parley::test

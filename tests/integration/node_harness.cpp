#include "tests/integration/node_harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iomanip>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

extern char** environ;

namespace parley::test {

namespace {

using clock = std::chrono::steady_clock;

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int connect_to(const std::string& host, unsigned short port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
    return -1;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}


/// Reads more bytes into `buf`; false on close, error or deadline.
bool read_more(int fd, std::string& buf, clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  if (left.count() <= 0)
    return false;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
    return false;
  char tmp[65536];
  auto n = ::recv(fd, tmp, sizeof tmp, 0);
  if (n <= 0)
    return false;
  buf.append(tmp, static_cast<std::size_t>(n));
  return true;
}

/// Parses one response from `buf` (reading more as needed); removes it.
http_result read_response(int fd, std::string& buf, clock::time_point deadline) {
  http_result r;
  std::size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos)
    if (!read_more(fd, buf, deadline))
      return r;
  std::istringstream head{buf.substr(0, end)};
  std::string line;
  std::getline(head, line);
  if (line.size() < 12)
    return r;
  int status = std::atoi(line.c_str() + 9);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos)
      continue;
    auto v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(' '));
    r.head[lower(line.substr(0, colon))] = v;
  }
  buf.erase(0, end + 4);
  if (auto it = r.head.find("content-length"); it != r.head.end()) {
    auto len = static_cast<std::size_t>(std::stoul(it->second));
    while (buf.size() < len)
      if (!read_more(fd, buf, deadline))
        return http_result{};
    r.body = buf.substr(0, len);
    buf.erase(0, len);
  } else if (auto te = r.head.find("transfer-encoding");
             te != r.head.end() && lower(te->second) == "chunked") {
    // Chunked (streamed answers): size line, data, CRLF; a 0 size ends it.
    for (;;) {
      std::size_t eol;
      while ((eol = buf.find("\r\n")) == std::string::npos)
        if (!read_more(fd, buf, deadline))
          return http_result{};
      auto size = static_cast<std::size_t>(std::stoul(buf.substr(0, eol), nullptr, 16));
      while (buf.size() < eol + 2 + size + 2)
        if (!read_more(fd, buf, deadline))
          return http_result{};
      r.body += buf.substr(eol + 2, size);
      buf.erase(0, eol + 2 + size + 2);
      if (size == 0)
        break;
    }
  } else {
    while (read_more(fd, buf, deadline)) {
    }
    r.body = std::move(buf);
    buf.clear();
  }
  r.status = status;
  return r;
}

std::string format_request(const std::string& method, const std::string& target,
                           const std::string& body, const headers& extra, bool keep_alive) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  bool has_type = false;
  for (auto& [k, v] : extra) {
    req += k + ": " + v + "\r\n";
    has_type = has_type || lower(k) == "content-type";
  }
  if (!body.empty() && !has_type)
    req += "Content-Type: application/json\r\n";
  if (!body.empty() || method == "POST")
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += keep_alive ? "" : "Connection: close\r\n";
  return req + "\r\n" + body;
}

std::string random_token() {
  // 48 hex digits: a node outside development mode refuses a token shorter
  // than 32 characters.
  std::mt19937_64 rng{std::random_device{}()};
  std::ostringstream s;
  s << std::hex << std::setfill('0');
  for (int i = 0; i < 3; ++i)
    s << std::setw(16) << rng();
  return s.str();
}

bool wait_until(const std::function<bool()>& ok, std::chrono::milliseconds limit) {
  auto until = clock::now() + limit;
  while (clock::now() < until) {
    if (ok())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ok();
}

} // namespace

bool wait_for(const std::function<bool()>& ok, std::chrono::milliseconds limit) {
  return wait_until(ok, limit);
}

std::string log_dir() {
  std::string d = "it-logs";
  ::mkdir(d.c_str(), 0755);
  return d;
}

std::string fresh_log(const std::string& name) {
  auto path = log_dir() + "/" + name;
  std::ofstream{path, std::ios::trunc};
  return path;
}

namespace {

/// The ports free_port hands out: PARLEY_TEST_PORT_RANGE ("LO-HI", within
/// 1024-32767), so that people testing side by side on one machine keep
/// apart, or 20000-31999.
std::pair<unsigned short, unsigned short> port_range() {
  unsigned lo = 20000, hi = 31999;
  if (auto* r = std::getenv("PARLEY_TEST_PORT_RANGE"); r && *r) {
    unsigned a = 0, b = 0;
    if (std::sscanf(r, "%u-%u", &a, &b) != 2 || a < 1024 || b > 32767 || a > b)
      throw std::runtime_error("PARLEY_TEST_PORT_RANGE: expected LO-HI within 1024-32767");
    lo = a;
    hi = b;
  }
  return {static_cast<unsigned short>(lo), static_cast<unsigned short>(hi)};
}

} // namespace

unsigned short free_port() {
  static std::set<unsigned short> handed_out;
  static const auto range = port_range();
  const unsigned short lo = range.first, hi = range.second;
  static unsigned short next =
    static_cast<unsigned short>(lo + (getpid() * 37) % (hi - lo + 1));
  for (int tries = 0; tries <= hi - lo; ++tries) {
    unsigned short p = next;
    next = static_cast<unsigned short>(next >= hi ? lo : next + 1);
    if (handed_out.count(p))
      continue;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(p);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) {
      handed_out.insert(p);
      return p;
    }
  }
  throw std::runtime_error("no free port below 32768");
}

std::string http_result::header(const std::string& lower_name) const {
  auto it = head.find(lower_name);
  return it == head.end() ? std::string{} : it->second;
}

std::string http_result::code() const {
  auto j = js();
  if (j.is_object() && j.contains("error") && j["error"].is_object())
    return j["error"].value("code", "");
  return {};
}

http_result http(unsigned short port, const std::string& method, const std::string& target,
                 const std::string& body, const headers& extra, std::chrono::milliseconds timeout) {
  return http_at("127.0.0.1", port, method, target, body, extra, timeout);
}

http_result http_at(const std::string& host, unsigned short port, const std::string& method,
                    const std::string& target, const std::string& body, const headers& extra,
                    std::chrono::milliseconds timeout) {
  int fd = connect_to(host, port);
  if (fd < 0)
    return {};
  std::string buf;
  http_result r;
  if (send_all(fd, format_request(method, target, body, extra, false)))
    r = read_response(fd, buf, clock::now() + timeout);
  ::close(fd);
  return r;
}

http_connection::http_connection(unsigned short port) : fd_(connect_to("127.0.0.1", port)) {}
http_connection::~http_connection() {
  if (fd_ >= 0)
    ::close(fd_);
}

http_result http_connection::request(const std::string& method, const std::string& target,
                                     const std::string& body, const headers& extra) {
  if (fd_ < 0 || !send_all(fd_, format_request(method, target, body, extra, true)))
    return {};
  return read_response(fd_, buffer_, clock::now() + std::chrono::seconds(30));
}

bool http_connection::closed_by_peer(std::chrono::milliseconds wait) {
  if (fd_ < 0)
    return true;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0)
    return false;
  char c;
  return ::recv(fd_, &c, 1, MSG_PEEK) == 0;
}

namespace {

/// Sends `bytes`, then hands every read to `on_data` with its time since the
/// send, until the peer closes (returns true) or `timeout` passes.
bool exchange(unsigned short port, const std::string& bytes, std::chrono::milliseconds timeout,
              const std::function<void(std::chrono::milliseconds, std::string_view)>& on_data) {
  int fd = connect_to("127.0.0.1", port);
  if (fd < 0)
    return false;
  send_all(fd, bytes);
  auto start = clock::now();
  auto deadline = start + timeout;
  bool closed = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0)
      break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      break;
    char tmp[4096];
    auto n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) {
      closed = true;
      break;
    }
    on_data(std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - start),
            std::string_view{tmp, static_cast<std::size_t>(n)});
  }
  ::close(fd);
  return closed;
}

} // namespace

std::string raw_exchange(unsigned short port, const std::string& bytes,
                         std::chrono::milliseconds timeout, bool* closed) {
  std::string out;
  bool c = exchange(port, bytes, timeout,
                    [&](std::chrono::milliseconds, std::string_view data) { out += data; });
  if (closed)
    *closed = c;
  return out;
}

std::vector<std::pair<std::chrono::milliseconds, std::string>>
timed_exchange(unsigned short port, const std::string& bytes, std::chrono::milliseconds timeout) {
  std::vector<std::pair<std::chrono::milliseconds, std::string>> out;
  exchange(port, bytes, timeout, [&](std::chrono::milliseconds at, std::string_view data) {
    out.emplace_back(at, std::string{data});
  });
  return out;
}

std::string raw_post(const std::string& target, const std::string& key, const std::string& body) {
  return "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key +
         "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

namespace {

/// fork + execvp of `exe` (looked up on PATH when it has no '/') with this
/// process's environment, `env` over it; its stdout goes to `out_fd` and its
/// stderr to `err_fd`, with every signal unblocked. -1 when fork fails.
pid_t spawn(const std::string& exe, const std::vector<std::string>& args,
            const std::map<std::string, std::string>& env, int out_fd, int err_fd) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv{*e};
    auto key = kv.substr(0, kv.find('='));
    if (!env.count(key))
      envs.push_back(kv);
  }
  for (auto& [k, v] : env)
    envs.push_back(k + "=" + v);
  std::vector<char*> argv{const_cast<char*>(exe.c_str())};
  for (auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : envs)
    envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  // A child forked by the main thread dies with the test process (a test
  // that crashes or is killed by ctest's timeout leaves no node or mock
  // holding its ports). The signal follows the forking thread, not the
  // process, so a child forked by a worker thread, which may end first,
  // does without it.
  const pid_t parent = ::getpid();
  const bool main_thread = parent == static_cast<pid_t>(::syscall(SYS_gettid));
  pid_t pid = ::fork();
  if (pid == 0) {
    if (main_thread) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        _exit(1);
    }
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(exe.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

} // namespace

child_process::child_process(const std::string& exe, const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env,
                             const std::string& log_path, const std::string& stdout_path)
  : log_(log_path) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int out = stdout_path.empty()
              ? fd
              : ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  pid_ = spawn(exe, args, env, out, fd);
  if (out >= 0 && out != fd)
    ::close(out);
  if (fd >= 0)
    ::close(fd);
}

process_result run_process(const std::string& exe, const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& env,
                           std::chrono::milliseconds timeout) {
  process_result r;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    return r;
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return r;
  }
  auto start = clock::now();
  auto deadline = start + timeout;
  pid_t pid = spawn(exe, args, env, out[1], err[1]);
  ::close(out[1]);
  ::close(err[1]);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  for (int open = pid > 0 ? 2 : 0; open > 0;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0 || ::poll(fds, 2, static_cast<int>(left.count())) < 0)
      break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      char buf[4096];
      auto n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else {
        fds[i].fd = -1; // poll skips it from now on
        --open;
      }
    }
  }
  ::close(out[0]);
  ::close(err[0]);
  if (pid > 0) {
    int st = 0;
    bool reaped =
      wait_until([&] { return ::waitpid(pid, &st, WNOHANG) == pid; },
                 std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()));
    if (!reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
    }
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  r.took = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - start);
  return r;
}

child_process::~child_process() {
  if (pid_ > 0)
    terminate(std::chrono::seconds(5));
}

child_process::child_process(child_process&& o) noexcept
  : pid_(std::exchange(o.pid_, -1)), status_(o.status_), log_(std::move(o.log_)) {}

child_process& child_process::operator=(child_process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0)
      terminate(std::chrono::seconds(5));
    pid_ = std::exchange(o.pid_, -1);
    status_ = o.status_;
    log_ = std::move(o.log_);
  }
  return *this;
}

bool child_process::alive() {
  if (pid_ <= 0)
    return false;
  int st = 0;
  auto r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    pid_ = -1;
    return false;
  }
  return true;
}

int child_process::terminate(std::chrono::milliseconds grace) {
  if (pid_ <= 0)
    return status_;
  ::kill(pid_, SIGTERM);
  auto until = clock::now() + grace;
  while (clock::now() < until) {
    if (!alive())
      return status_;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill9();
  return -1;
}

void child_process::kill9() {
  if (pid_ <= 0)
    return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  pid_ = -1;
  status_ = -1;
}

std::string child_process::log_tail(int lines) const { return file_tail(log_, lines); }

std::string file_tail(const std::string& path, int lines) {
  std::ifstream in{path};
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines)
      tail.pop_front();
  }
  std::string out;
  for (auto& l : tail)
    out += l + "\n";
  return out;
}

mock_llm::mock_llm() : port_(free_port()) {
  proc_ = child_process(MOCK_LLM_BIN, {"--host", "127.0.0.1", "--port", std::to_string(port_)}, {},
                        log_dir() + "/mock-" + std::to_string(port_) + ".log");
  if (!wait_until([&] { return http(port_, "GET", "/healthz").status == 200; },
                  std::chrono::seconds(10)))
    throw std::runtime_error("mock-llm did not start:\n" + proc_.log_tail());
}

std::string mock_llm::base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

json mock_llm::requests() const { return http(port_, "GET", "/_mock/requests").js()["data"]; }

void mock_llm::clear() const { http(port_, "DELETE", "/_mock/requests"); }

void mock_llm::configure(const json& cfg) const {
  auto r = http(port_, "POST", "/_mock/config", cfg.dump());
  if (r.status != 200)
    throw std::runtime_error("mock config rejected: " + r.body);
}

void mock_llm::reset() const { http(port_, "DELETE", "/_mock/config"); }

json mock_llm::stats() const { return http(port_, "GET", "/_mock/stats").js(); }

bool upstream_mode() {
  static const bool on = [] {
    const char* v = std::getenv("PARLEY_TEST_UPSTREAM");
    return v && std::string{v} == "1";
  }();
  return on;
}

namespace {

/// The shared pair. Function-local statics: started lazily, and their
/// child_process destructors SIGTERM them by PID when the test process exits.
const mock_llm& shared_mock(int which) {
  if (!upstream_mode())
    throw std::logic_error("the shared mock-llm pair exists only with PARLEY_TEST_UPSTREAM=1");
  static const mock_llm primary;
  static const mock_llm fallback;
  return which == 0 ? primary : fallback;
}

} // namespace

const mock_llm& shared_primary() { return shared_mock(0); }
const mock_llm& shared_fallback() { return shared_mock(1); }

bool cluster_tls_mode() {
  static const bool on = [] {
    const char* v = std::getenv("PARLEY_TEST_CLUSTER_TLS");
    return v && std::string{v} == "1";
  }();
  return on;
}

namespace {

/// A CA and one member certificate in a temporary folder, made with the
/// openssl CLI on first use and removed when the test process exits.
class cluster_tls_files {
public:
  cluster_tls_files() {
    char tmpl[] = "/tmp/parley-it-tls-XXXXXX";
    if (!::mkdtemp(tmpl))
      throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    auto run = [](const std::vector<std::string>& args) {
      auto r = run_process("openssl", args, {}, std::chrono::seconds(60));
      if (r.status != 0)
        throw std::runtime_error("openssl failed: " + describe(r));
    };
    run({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir_ + "/ca.key", "-out",
         dir_ + "/ca.pem", "-days", "2", "-subj", "/CN=parley-it-ca"});
    run({"req", "-newkey", "rsa:2048", "-nodes", "-keyout", dir_ + "/member.key", "-out",
         dir_ + "/member.csr", "-subj", "/CN=member"});
    run({"x509", "-req", "-in", dir_ + "/member.csr", "-CA", dir_ + "/ca.pem", "-CAkey",
         dir_ + "/ca.key", "-CAcreateserial", "-out", dir_ + "/member.pem", "-days", "2"});
    env_ = {{"PARLEY_CLUSTER_TLS_CERT", dir_ + "/member.pem"},
            {"PARLEY_CLUSTER_TLS_KEY", dir_ + "/member.key"},
            {"PARLEY_CLUSTER_TLS_CA", dir_ + "/ca.pem"}};
  }
  ~cluster_tls_files() {
    for (auto f : {"ca.key", "ca.pem", "ca.srl", "member.key", "member.csr", "member.pem"})
      ::unlink((dir_ + "/" + f).c_str());
    ::rmdir(dir_.c_str());
  }
  const std::map<std::string, std::string>& env() const { return env_; }

private:
  std::string dir_;
  std::map<std::string, std::string> env_;
};

} // namespace

const std::map<std::string, std::string>& shared_cluster_tls() {
  static const cluster_tls_files files;
  return files.env();
}

std::string expected_reply(const std::string& content) {
  return upstream_mode() ? "mock: " + content : content;
}

std::string expected_model() { return upstream_mode() ? "default" : "echo"; }

parley_node::parley_node(const scratch_db& db, std::map<std::string, std::string> env)
  : env_(std::move(env)), port_(free_port()), token_(random_token()),
    log_(fresh_log("parley-" + std::to_string(port_) + ".log")) {
  node_id_ = env_.count("PARLEY_NODE_ID") ? env_["PARLEY_NODE_ID"]
                                          : "it-node-" + std::to_string(port_);
  env_["PARLEY_PG_URL"] = db.url();
  env_["PARLEY_HTTP_HOST"] = "127.0.0.1";
  env_["PARLEY_HTTP_PORT"] = std::to_string(port_);
  env_["PARLEY_CLUSTER_HOST"] = "127.0.0.1";
  if (!env_.count("PARLEY_CLUSTER_PORT"))
    env_["PARLEY_CLUSTER_PORT"] = std::to_string(free_port());
  env_["PARLEY_NODE_ID"] = node_id_;
  if (auto f = env_.find("PARLEY_ADMIN_TOKEN_FILE"); f != env_.end()) {
    // The node reads its token from that file: so does the harness.
    std::ifstream in{f->second};
    std::getline(in, token_);
  } else {
    env_["PARLEY_ADMIN_TOKEN"] = token_;
  }
  env_.emplace("PARLEY_LOG_LEVEL", "info");
  // Load tests send far more than the default 600 turns a minute per key;
  // the limits tests set their own rate.
  env_.emplace("PARLEY_RATE_LIMIT_PER_MIN", "0");
  if (cluster_tls_mode() && !env_.count("PARLEY_CLUSTER_TLS_CERT"))
    for (auto& [k, v] : shared_cluster_tls())
      env_.emplace(k, v);
  if (upstream_mode() && !env_.count("PARLEY_LLM_BASE_URL")) {
    env_["PARLEY_LLM_BASE_URL"] = shared_primary().base_url();
    env_.emplace("PARLEY_LLM_FALLBACK_BASE_URL", shared_fallback().base_url());
  }
  start();
}

parley_node::~parley_node() = default;

void parley_node::start() {
  proc_ = child_process(PARLEY_BIN, {}, env_, log_);
  if (!wait_until(
        [&] { return !proc_.alive() || http(port_, "GET", "/readyz").status == 200; },
        std::chrono::seconds(30)) ||
      !proc_.alive())
    throw std::runtime_error("parley did not become ready:\n" + proc_.log_tail());
}

std::string parley_node::create_key(const std::string& user) {
  auto r = http(port_, "POST", "/admin/v1/api-keys", json{{"user", user}}.dump(),
                {{"Authorization", "Bearer " + token_}});
  if (r.status != 201)
    throw std::runtime_error("create key: " + describe(r));
  return r.js()["api_key"];
}

http_result parley_node::call(const std::string& method, const std::string& target,
                              const std::string& key, const std::string& body,
                              headers extra) const {
  if (!key.empty())
    extra["Authorization"] = "Bearer " + key;
  return http(port_, method, target, body, extra);
}

std::string parley_node::create_session(const std::string& key, const json& body) {
  auto r = call("POST", "/v1/sessions", key, body.dump());
  if (r.status != 201)
    throw std::runtime_error("create session: " + describe(r));
  return r.js()["id"];
}

http_result parley_node::post_message(const std::string& key, const std::string& session,
                                      const json& body) {
  return call("POST", "/v1/sessions/" + session + "/messages", key, body.dump());
}

json parley_node::all_messages(const std::string& key, const std::string& session) {
  json all = json::array();
  std::int64_t after = 0;
  for (int page = 0; page < 1000; ++page) {
    auto r = call("GET",
                  "/v1/sessions/" + session + "/messages?limit=500&after=" + std::to_string(after),
                  key);
    if (r.status != 200)
      throw std::runtime_error("list messages: " + describe(r));
    auto j = r.js();
    for (auto& m : j["data"])
      all.push_back(m);
    if (j["next_after"].is_null())
      break;
    after = j["next_after"];
  }
  return all;
}

http_result parley_node::admin(const std::string& method, const std::string& target,
                               const json& body) const {
  return call(method, target, token_, body.is_null() ? std::string{} : body.dump());
}

double metric(unsigned short port, const std::string& sample) {
  auto body = http(port, "GET", "/metrics").body;
  auto at = body.find("\n" + sample + " ");
  if (at == std::string::npos)
    return -1;
  return std::stod(body.substr(at + sample.size() + 2));
}

double parley_node::metric(const std::string& sample) const {
  return test::metric(port_, sample);
}

json parley_node::cluster() const {
  auto r = admin("GET", "/admin/v1/cluster");
  return r.status == 200 ? r.js() : json{};
}

std::string parley_node::host_of(const std::string& session) const {
  auto r = admin("GET", "/admin/v1/sessions/" + session);
  return r.status == 200 ? r.js().value("node", "") : "";
}

parley_cluster::parley_cluster(const scratch_db& db, int n,
                               std::map<std::string, std::string> env) {
  std::vector<unsigned short> ports;
  std::string seeds;
  for (int i = 0; i < n; ++i) {
    ports.push_back(free_port());
    seeds += (i ? "," : "") + std::string{"127.0.0.1:"} + std::to_string(ports.back());
  }
  for (int i = 0; i < n; ++i) {
    auto e = env;
    e["PARLEY_CLUSTER_PORT"] = std::to_string(ports[i]);
    e["PARLEY_SEEDS"] = seeds;
    e["PARLEY_NODE_ID"] = "node-" + std::to_string(i);
    e.emplace("PARLEY_FAILURE_DETECT_MS", "1500");
    nodes_.push_back(std::make_unique<parley_node>(db, e));
  }
  if (!wait_converged(n))
    throw std::runtime_error("the cluster did not converge: " + nodes_[0]->cluster().dump());
}

continue_on_exit::~continue_on_exit() {
  for (int i = 0; i < c_.size(); ++i)
    if (c_[i].process().pid() > 0)
      ::kill(c_[i].process().pid(), SIGCONT);
}

bool parley_cluster::wait_converged(int up, std::chrono::milliseconds limit) {
  return wait_until(
    [&] {
      for (auto& node : nodes_) {
        if (!node->process().alive())
          continue;
        auto c = node->cluster();
        if (!c.is_object())
          return false;
        int n = 0;
        for (auto& m : c["nodes"])
          n += m["status"] == "up";
        if (n != up)
          return false;
      }
      return true;
    },
    limit);
}

int parley_cluster::index_of(const std::string& node_id) const {
  for (std::size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i]->node_id() == node_id)
      return static_cast<int>(i);
  return -1;
}

std::string describe(const http_result& r) {
  return "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 400);
}

std::string describe(const process_result& r) {
  return "exit " + std::to_string(r.status) + " after " + std::to_string(r.took.count()) +
         " ms\nstdout: " + r.out.substr(0, 2000) + "\nstderr: " + r.err.substr(0, 2000);
}

bool send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    auto n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0)
      return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

/// Checks a history: seqs 1..n, alternating user/assistant, each reply right
/// after its message; returns the user contents in order.
std::vector<std::string> check_history(const json& msgs) {
  std::vector<std::string> users;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    EXPECT_EQ(msgs[i]["seq"], i + 1);
    if (i % 2 == 0) {
      EXPECT_EQ(msgs[i]["role"], "user") << "seq " << i + 1;
      users.push_back(msgs[i]["content"]);
    } else {
      EXPECT_EQ(msgs[i]["role"], "assistant") << "seq " << i + 1;
      EXPECT_EQ(msgs[i]["reply_to"], i) << "seq " << i + 1;
    }
  }
  EXPECT_EQ(msgs.size() % 2, 0u);
  return users;
}

/// Posts a turn through `node`, retrying 503/429 with the same client id for
/// at most `limit`, as a well-behaved client does. Counts the retries.
http_result post_retrying(parley_node& node, const std::string& key, const std::string& id,
                          const json& body, int* retries,
                          std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto r = node.post_message(key, id, body);
    bool again = r.status == 503 || r.status == 429 || r.status == 0;
    if (!again || std::chrono::steady_clock::now() > until)
      return r;
    if (retries)
      ++*retries;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}


/// `node`'s view of member `id` (null when unknown).
json member(const parley_node& node, const std::string& id) {
  auto view = node.cluster();
  if (view.is_object())
    for (auto& m : view["nodes"])
      if (m["id"] == id)
        return m;
  return nullptr;
}

std::int64_t elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               since)
    .count();
}


} // namespace parley::test

// Authenticated black-box HTTP fuzzing of a three-node cluster (mock-llm
// upstream and fallback, Redis): valid requests of every route of API.md,
// mutated (invalid UTF-8 and NUL in path, query, header values and body,
// \u0000 escapes, wrong JSON types, huge numbers, truncation, duplicated
// headers), sent over raw sockets with a user key, another user's key, the
// admin token or none. It holds API.md sections 2 and 8 to their word:
// - no answer is a 5xx other than 503 with Retry-After;
// - every error answer whose Content-Type is JSON has the error shape, and
//   its message speaks of the request, not of internals;
// - a request with invalid UTF-8 in its path, query, a header value or its
//   body gets a 4xx; one that would store a string holding a NUL gets
//   neither a 2xx nor a 5xx;
// - the node that answered still serves the next request (probed after each
//   one), and every node still serves a turn (probed every few requests); a
//   node that stopped serving is a failure and is restarted so the run can
//   find the next one;
// - afterwards every node serves a turn, lists three nodes up, answers
//   /healthz 200, and no node logged an error or a crash.
// Deterministic: PARLEY_FUZZ_SEED [20261207] seeds the generator (printed),
// PARLEY_FUZZ_REQUESTS [2500] and PARLEY_FUZZ_SECONDS [150] bound the run
// and PARLEY_FUZZ_MAX_RESTARTS [10] the node restarts
// (bench/fuzz runs a long one). A failure prints each distinct kind once, with
// the request's bytes, the status and the body.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

std::int64_t env_int(const char* name, std::int64_t dflt) {
  auto* v = std::getenv(name);
  return v && *v ? std::strtoll(v, nullptr, 10) : dflt;
}

// ---------------------------------------------------------------------------
// Bytes

/// Length of the well-formed UTF-8 sequence at s[i] (Unicode Table 3-7), 0 if none.
std::size_t utf8_at(std::string_view s, std::size_t i) {
  auto b = [&](std::size_t k) -> unsigned { return static_cast<unsigned char>(s[k]); };
  unsigned c = b(i);
  if (c < 0x80)
    return 1;
  std::size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  unsigned lo = 0x80, hi = 0xBF;
  if (c == 0xE0)
    lo = 0xA0;
  if (c == 0xED)
    hi = 0x9F;
  if (c == 0xF0)
    lo = 0x90;
  if (c == 0xF4)
    hi = 0x8F;
  if (b(i + 1) < lo || b(i + 1) > hi)
    return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF)
      return 0;
  return n;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    auto n = utf8_at(s, i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

/// Printable form of bytes: ASCII as is, the rest as \xNN.
std::string show(std::string_view s, std::size_t max = 700) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '\r')
      out += "\\r";
    else if (c == '\n')
      out += "\\n";
    else if (c >= 0x20 && c < 0x7F && c != '\\')
      out += static_cast<char>(c);
    else {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 0xF];
    }
  }
  if (s.size() > max)
    out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

// ---------------------------------------------------------------------------
// One exchange on a raw socket

struct answer {
  int status = 0;     ///< 0: no answer
  bool closed = false; ///< the server closed the connection (with or without an answer)
  bool timed_out = false;
  std::multimap<std::string, std::string> head; ///< lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = head.find(name);
    return it == head.end() ? std::string{} : it->second;
  }
};

/// Tries to parse a complete response out of `buf`; true when complete.
bool parse_response(const std::string& buf, bool head_request, answer& a) {
  auto end = buf.find("\r\n\r\n");
  if (end == std::string::npos)
    return false;
  if (buf.compare(0, 9, "HTTP/1.1 ") != 0 && buf.compare(0, 9, "HTTP/1.0 ") != 0)
    return false;
  a.status = std::atoi(buf.c_str() + 9);
  a.head.clear();
  std::size_t pos = buf.find("\r\n") + 2;
  while (pos < end) {
    auto eol = buf.find("\r\n", pos);
    auto line = buf.substr(pos, eol - pos);
    pos = eol + 2;
    auto colon = line.find(':');
    if (colon == std::string::npos)
      continue;
    auto name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    a.head.emplace(name, value);
  }
  auto rest = buf.substr(end + 4);
  if (head_request || a.status == 204 || a.status == 304 || a.status / 100 == 1) {
    a.body.clear();
    return true;
  }
  if (a.header("transfer-encoding").find("chunked") != std::string::npos) {
    std::string body;
    std::size_t p = 0;
    for (;;) {
      auto eol = rest.find("\r\n", p);
      if (eol == std::string::npos)
        return false;
      auto size = std::strtoul(rest.substr(p, eol - p).c_str(), nullptr, 16);
      if (size == 0) {
        a.body = std::move(body);
        return rest.find("\r\n", eol + 2) != std::string::npos;
      }
      if (rest.size() < eol + 2 + size + 2)
        return false;
      body += rest.substr(eol + 2, size);
      p = eol + 2 + size + 2;
    }
  }
  auto cl = a.header("content-length");
  if (!cl.empty()) {
    auto n = std::strtoul(cl.c_str(), nullptr, 10);
    if (rest.size() < n)
      return false;
    a.body = rest.substr(0, n);
    return true;
  }
  a.body = rest;
  return false; // until the peer closes
}

answer exchange(unsigned short port, const std::string& bytes, bool head_request,
                std::chrono::milliseconds timeout = 15s) {
  answer a;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0)
      ::close(fd);
    a.closed = true;
    return a;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  for (std::size_t sent = 0; sent < bytes.size();) {
    auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0)
      break; // the server may answer and close before reading everything
    sent += static_cast<std::size_t>(n);
  }
  std::string buf;
  auto deadline = clock_type::now() + timeout;
  bool complete = false;
  while (!complete) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
    if (left.count() <= 0) {
      a.timed_out = true;
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      continue;
    char tmp[8192];
    auto n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) {
      a.closed = true;
      break;
    }
    buf.append(tmp, static_cast<std::size_t>(n));
    complete = parse_response(buf, head_request, a);
  }
  ::close(fd);
  if (!complete && !parse_response(buf, head_request, a) && a.status != 0 && !a.closed)
    a.status = 0;
  if (!complete && a.status == 0 && !buf.empty())
    a.body = buf; // whatever came, for the report
  return a;
}

// ---------------------------------------------------------------------------
// Requests

enum class auth { user, other_user, admin, none, garbage };

/// Stands for the admin token of the node a request goes to.
const std::string admin_placeholder = "ADMIN-TOKEN";

struct request {
  std::string route; ///< template name, for the report
  std::string method, path, query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool send_length = true;
  std::string length_override;
  std::set<std::string> mutations; ///< coarse labels, for grouping failures
  bool stores = false;             ///< a 2xx would store the body's strings

  std::string target() const { return query.empty() ? path : path + "?" + query; }
  /// The request as sent to a node whose admin token is `admin` (every node
  /// of the harness has its own): it replaces the placeholder of world::admin.
  std::string bytes(const std::string& admin = {}) const {
    std::string out = method + " " + target() + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (auto& [k, v] : headers)
      out += k + ": " + v + "\r\n";
    out += "Connection: close\r\n";
    if (send_length)
      out += "Content-Length: " +
             (length_override.empty() ? std::to_string(body.size()) : length_override) + "\r\n";
    out += "\r\n" + body;
    if (!admin.empty())
      for (auto at = out.find(admin_placeholder); at != std::string::npos;
           at = out.find(admin_placeholder, at + admin.size()))
        out.replace(at, admin_placeholder.size(), admin);
    return out;
  }
  /// Invalid UTF-8 in what API.md section 2 names: path, query, a header value, the body.
  std::string invalid_utf8_part() const {
    if (!valid_utf8(path))
      return "path";
    if (!valid_utf8(query))
      return "query";
    for (auto& [k, v] : headers)
      if (!valid_utf8(v))
        return "header " + k;
    // A request whose framing was mutated may carry only part of its body.
    if (!mutations.count("framing") && !valid_utf8(body))
      return "body";
    return {};
  }
};

/// True when a JSON value holds a NUL in a key or a string.
bool json_has_nul(const json& j) {
  if (j.is_string())
    return j.get_ref<const std::string&>().find('\0') != std::string::npos;
  if (j.is_object()) {
    for (auto& [k, v] : j.items())
      if (k.find('\0') != std::string::npos || json_has_nul(v))
        return true;
  } else if (j.is_array()) {
    for (auto& v : j)
      if (json_has_nul(v))
        return true;
  }
  return false;
}

/// What the run knows of the cluster: keys, sessions, ids.
struct world {
  std::string alice, bob;
  std::string admin; ///< admin_placeholder: each node's token replaces it when sent
  std::vector<std::string> sessions; ///< alice's
  std::string bob_session;
  std::vector<std::string> victims; ///< alice's sessions that DELETE may remove
  std::vector<std::string> node_ids;
  std::vector<std::string> spare_key_prefixes; ///< keys of nobody's use, revocable
};

class generator {
public:
  generator(std::uint64_t seed, const world& w) : rng_(seed), w_(w) {}

  std::size_t below(std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }
  bool chance(int percent) { return below(100) < static_cast<std::size_t>(percent); }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }

  request next() {
    auto r = valid();
    int n = 1 + static_cast<int>(below(3));
    if (chance(8))
      n = 0; // some valid ones keep the cluster's real paths busy
    for (int i = 0; i < n; ++i)
      mutate(r);
    return r;
  }

private:
  std::string session() { return pick(w_.sessions); }

  void set_auth(request& r, auth a) {
    switch (a) {
      case auth::user: r.headers.emplace_back("Authorization", "Bearer " + w_.alice); break;
      case auth::other_user: r.headers.emplace_back("Authorization", "Bearer " + w_.bob); break;
      case auth::admin: r.headers.emplace_back("Authorization", "Bearer " + w_.admin); break;
      case auth::garbage: r.headers.emplace_back("Authorization", "Bearer pk_not_a_key"); break;
      case auth::none: break;
    }
  }

  /// One valid request of a route of API.md, with its usual credential.
  request valid() {
    request r;
    auto json_body = [&](const json& j) {
      r.body = j.dump();
      r.headers.emplace_back("Content-Type", "application/json");
    };
    auto user_or_admin = [&](auth usual) {
      auto roll = below(100);
      return roll < 80 ? usual : roll < 88 ? (usual == auth::admin ? auth::user : auth::admin)
           : roll < 93 ? auth::other_user : roll < 97 ? auth::none : auth::garbage;
    };
    auth a = auth::user;
    switch (below(30)) {
      case 0:
      case 1:
        r.route = "create_session";
        r.method = "POST", r.path = "/v1/sessions", r.stores = true;
        json_body({{"system_prompt", "be brief"}, {"model", "mock-model"},
                   {"metadata", {{"team", "fuzz"}, {"n", {1, 2}}}}});
        break;
      case 2:
        r.route = "list_sessions";
        r.method = "GET", r.path = "/v1/sessions", r.query = "limit=5";
        break;
      case 3:
        r.route = "get_session";
        r.method = "GET", r.path = "/v1/sessions/" + (chance(15) ? w_.bob_session : session());
        break;
      case 4:
        r.route = "delete_session";
        r.method = "DELETE", r.path = "/v1/sessions/" + pick(w_.victims);
        break;
      case 5:
      case 6:
      case 7:
        r.route = "post_message";
        r.method = "POST", r.path = "/v1/sessions/" + session() + "/messages", r.stores = true;
        json_body({{"content", "hello " + std::to_string(below(1000))},
                   {"client_message_id", "c-" + std::to_string(below(1u << 30))},
                   {"stream", chance(25)}});
        if (chance(15))
          r.headers.emplace_back("Accept", "text/event-stream");
        break;
      case 8:
        r.route = "list_messages";
        r.method = "GET", r.path = "/v1/sessions/" + session() + "/messages",
        r.query = "after=0&limit=10";
        break;
      case 9:
      case 10:
        r.route = "post_feedback";
        r.method = "POST", r.stores = true;
        r.path = "/v1/sessions/" + session() + "/messages/" + std::to_string(2 * (1 + below(2))) +
                 "/feedback";
        json_body({{"rating", chance(50) ? 1 : -1}, {"comment", "fuzz comment"}});
        break;
      case 11:
        r.route = "usage";
        r.method = "GET", r.path = "/v1/usage", r.query = "days=7";
        break;
      case 12:
      case 13:
        r.route = "chat_completions";
        r.method = "POST", r.path = "/v1/chat/completions";
        json_body({{"model", "mock-model"},
                   {"messages", {{{"role", "system"}, {"content", "s"}},
                                 {{"role", "user"}, {"content", "hi"}}}},
                   {"stream", chance(25)},
                   {"temperature", 0.5}});
        break;
      case 14:
        r.route = "list_models";
        r.method = "GET", r.path = "/v1/models";
        break;
      case 15:
        r.route = "responses";
        r.method = "POST", r.path = "/v1/responses", r.stores = true;
        json_body({{"model", "mock-model"}, {"input", "hi"}, {"instructions", "be brief"},
                   {"store", chance(70)}, {"stream", chance(25)}});
        break;
      case 16:
        r.route = "create_api_key";
        r.method = "POST", r.path = "/admin/v1/api-keys", a = auth::admin, r.stores = true;
        json_body({{"user", "fuzz-" + std::to_string(below(1000))}});
        break;
      case 17:
        r.route = "revoke_api_key";
        r.method = "DELETE", a = auth::admin;
        r.path = "/admin/v1/api-keys/" +
                 (chance(30) && !w_.spare_key_prefixes.empty() ? pick(w_.spare_key_prefixes)
                                                               : std::string{"pk_nosuchkey"});
        break;
      case 18:
        r.route = "list_api_keys";
        r.method = "GET", r.path = "/admin/v1/api-keys", r.query = "user=alice", a = auth::admin;
        break;
      case 19:
        r.route = "cluster";
        r.method = "GET", r.path = "/admin/v1/cluster", a = auth::admin;
        break;
      case 20:
        r.route = "actors";
        r.method = "GET", r.path = "/admin/v1/actors", a = auth::admin;
        break;
      case 21:
        r.route = "admin_session";
        r.method = "GET", r.path = "/admin/v1/sessions/" + session(), a = auth::admin;
        break;
      case 22:
        r.route = "migrate";
        r.method = "POST", r.path = "/admin/v1/sessions/" + session() + "/migrate", a = auth::admin;
        json_body({{"to", pick(w_.node_ids)}});
        break;
      case 23:
        // Never a real node: a drain would change the cluster under test.
        r.route = "drain";
        r.method = "POST", r.path = "/admin/v1/nodes/no-such-node/drain", a = auth::admin;
        break;
      case 24:
        r.route = "dashboard";
        r.method = "GET", r.path = "/dashboard", a = auth::admin;
        if (chance(40)) {
          r.query = "token=" + w_.admin;
          a = auth::none;
        }
        break;
      case 25:
        r.route = "create_conversation";
        r.method = "POST", r.path = "/v1/conversations", r.stores = true;
        json_body({{"items", {{{"role", "user"}, {"content", "fuzz item"}}}},
                   {"metadata", {{"team", "fuzz"}}}});
        break;
      case 26:
        r.route = "list_conversation_items";
        r.method = "GET", r.path = "/v1/conversations/conv_" + session() + "/items",
        r.query = chance(50) ? "limit=5&order=asc" : "limit=3";
        break;
      case 27:
        r.route = "append_conversation_items";
        r.method = "POST", r.path = "/v1/conversations/conv_" + session() + "/items";
        r.stores = true;
        json_body({{"items", {{{"type", "message"}, {"role", "assistant"},
                               {"content", {{{"type", "output_text"}, {"text", "fuzz"}}}}}}}});
        break;
      case 28:
        r.route = "responses_in_conversation";
        r.method = "POST", r.path = "/v1/responses", r.stores = true;
        json_body({{"input", {{{"role", "user"}, {"content", "in a conversation"}}}},
                   {"conversation", {{"id", "conv_" + session()}}},
                   {"metadata", {{"k", "v"}}}});
        break;
      default: {
        static const char* open[] = {"/healthz", "/readyz", "/metrics", "/admin/v1/usage"};
        auto i = below(4);
        r.route = open[i] + 1;
        r.method = "GET", r.path = open[i], a = i == 3 ? auth::admin : auth::none;
        if (i == 3)
          r.query = "user=alice&days=7";
      }
    }
    set_auth(r, user_or_admin(a));
    if (chance(30))
      r.headers.emplace_back("X-Request-Id", "fuzz-" + std::to_string(below(1u << 30)));
    if (chance(20))
      r.headers.emplace_back("Accept", "application/json");
    return r;
  }

  /// Bytes that are not UTF-8 (or are, at the edges), and other awkward text.
  std::string bad_bytes() {
    static const std::vector<std::string> bad = {
      "\xff", "\xfe", "\x80", "\xbf", "\xc3\x28", "\xc0\x80", "\xc1\xbf", "\xe2\x82", "\xe2\x28\xa1",
      "\xed\xa0\x80", "\xed\xbf\xbf", "\xf0\x28\x8c\xbc", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
      "\xe0\x80\xaf", "\xf0\x9f\x98",
    };
    return pick(bad);
  }

  std::size_t pos_in(const std::string& s) { return below(s.size() + 1); }

  /// A position inside the JSON string literals of `body` (npos if none).
  std::size_t string_pos(const std::string& body) {
    std::vector<std::pair<std::size_t, std::size_t>> spans; // [open quote + 1, close quote)
    bool in = false, esc = false;
    std::size_t start = 0;
    for (std::size_t i = 0; i < body.size(); ++i) {
      char c = body[i];
      if (!in) {
        if (c == '"')
          in = true, start = i + 1;
      } else if (esc) {
        esc = false;
      } else if (c == '\\') {
        esc = true;
      } else if (c == '"') {
        in = false;
        spans.emplace_back(start, i);
      }
    }
    if (spans.empty())
      return std::string::npos;
    auto [b, e] = pick(spans);
    // Not inside an escape: only at the start or the end of the literal.
    return chance(50) ? b : e;
  }

  void mutate_header(request& r) {
    static const std::vector<std::string> names = {"Content-Type", "Accept", "X-Request-Id",
                                                   "Authorization", "X-Other"};
    auto name = pick(names);
    auto it = std::find_if(r.headers.begin(), r.headers.end(),
                           [&](auto& h) { return h.first == name; });
    std::string value = it != r.headers.end() ? it->second
                        : name == "Content-Type" ? "application/json"
                        : name == "Accept"       ? "text/event-stream"
                        : name == "X-Request-Id" ? "rid-1"
                                                 : "x";
    std::string label = "header:" + name + ":";
    switch (below(6)) {
      case 0:
      case 1:
        value.insert(chance(60) ? value.size() : pos_in(value), bad_bytes());
        label += "bad-utf8";
        break;
      case 2:
        value.insert(pos_in(value), std::string(1, '\0'));
        label += "nul";
        break;
      case 3:
        value = std::string(100 + below(3000), 'a' + static_cast<char>(below(26)));
        label += "long";
        break;
      case 4: {
        static const std::vector<std::string> odd = {"", "text/plain", "application/jsonx",
          "APPLICATION/JSON; charset=latin1", "application/json;;;", "*/*", "bearer",
          "Bearer ", "Basic YWJjOmRlZg==", "\t", "é", "text/event-stream, application/json"};
        value = pick(odd);
        label += "odd";
        break;
      }
      default:
        // Duplicated: both copies are sent.
        r.headers.emplace_back(name, chance(50) ? value + bad_bytes() : "other");
        r.mutations.insert(label + "duplicated");
        return;
    }
    if (it != r.headers.end())
      it->second = value;
    else
      r.headers.emplace_back(name, value);
    r.mutations.insert(label);
  }

  void mutate_path(request& r) {
    std::vector<std::size_t> slashes;
    for (std::size_t i = 0; i < r.path.size(); ++i)
      if (r.path[i] == '/')
        slashes.push_back(i);
    switch (below(7)) {
      case 0:
      case 1:
      case 2: {
        // Invalid bytes in a segment, mostly the last ones (ids, seqs).
        auto at = chance(60) ? slashes.back() + 1 : pick(slashes) + 1;
        auto seg_end = r.path.find('/', at);
        if (seg_end == std::string::npos)
          seg_end = r.path.size();
        auto where = chance(50) ? seg_end : at + below(seg_end - at + 1);
        r.path.insert(where, bad_bytes());
        r.mutations.insert("path:bad-utf8");
        break;
      }
      case 3:
        r.path.insert(slashes.back() + 1 + below(r.path.size() - slashes.back()), std::string(1, '\0'));
        r.mutations.insert("path:nul");
        break;
      case 4: {
        static const std::vector<std::string> esc = {"%ff", "%00", "%c3%28", "%zz", "%", "%2f", "..",
                                                     "%ed%a0%80"};
        r.path.insert(slashes.back() + 1, pick(esc));
        r.mutations.insert("path:escape");
        break;
      }
      case 5:
        r.path += "/" + std::string(50 + below(400), 'x');
        r.mutations.insert("path:extra-segment");
        break;
      default:
        r.path.insert(slashes.back() + 1, std::string(200 + below(5000), 'a'));
        r.mutations.insert("path:long-segment");
    }
  }

  void mutate_query(request& r) {
    static const std::vector<std::string> params = {
      "limit=99999999999999999999", "limit=-1", "limit=0", "limit=1e3", "after=-5",
      "after=9223372036854775808", "cursor=%ff%fe", "cursor=abc", "cursor=", "days=0",
      "days=91", "user=%00", "token=%ff", "limit=%00", "a=%zz", "limit=5&limit=x", "&&&=",
      "user=alice%c3%28"};
    auto& q = r.query;
    if (chance(50)) {
      q += (q.empty() ? "" : "&") + pick(params);
      r.mutations.insert("query:odd");
    } else {
      q.insert(pos_in(q), chance(80) ? bad_bytes() : std::string(1, '\0'));
      r.mutations.insert("query:bad-bytes");
    }
  }

  void mutate_body(request& r) {
    auto& b = r.body;
    switch (below(12)) {
      case 0:
      case 1: {
        auto p = string_pos(b);
        if (p == std::string::npos)
          return mutate_bytes(r);
        b.insert(p, bad_bytes());
        r.mutations.insert("body:bad-utf8-in-string");
        break;
      }
      case 2:
      case 3: {
        auto p = string_pos(b);
        if (p == std::string::npos)
          return mutate_bytes(r);
        static const std::vector<std::string> esc = {"\\u0000", "\\u0000", "\\ud800", "\\udfff",
                                                     "\\ud83d\\ude00", "\\u0001", "\\uffff"};
        auto e = pick(esc);
        b.insert(p, e);
        r.mutations.insert(e == "\\u0000" ? "body:nul-escape" : "body:escape");
        break;
      }
      case 4: {
        auto p = string_pos(b);
        if (p == std::string::npos)
          return mutate_bytes(r);
        b.insert(p, std::string(1, '\0'));
        r.mutations.insert("body:raw-nul");
        break;
      }
      case 5:
      case 6: {
        // A field of another type.
        auto j = json::parse(b, nullptr, false);
        if (!j.is_object() || j.empty())
          return mutate_bytes(r);
        auto it = j.begin();
        std::advance(it, static_cast<long>(below(j.size())));
        static const std::vector<json> values = {
          json(nullptr), json(true), json(0), json(-1), json(1.5), json::array(), json::object(),
          json("x"), json(""), json::array({1, "a"}), json(std::string(40000, 'y')),
          json({{"nested", {{"deeper", 1}}}}), json(std::string("a\0b", 3))};
        *it = pick(values);
        b = j.dump();
        r.mutations.insert("body:wrong-type");
        break;
      }
      case 7: {
        // Huge or odd numbers, textually.
        static const std::vector<std::string> nums = {
          "1e999", "-1e999", "123456789012345678901234567890", "-0", "1.0", "9223372036854775808",
          "-9223372036854775809", "18446744073709551616", "0x10", "NaN", "Infinity", "1e-400"};
        auto colon = b.find(':');
        if (colon == std::string::npos)
          return mutate_bytes(r);
        auto end = b.find_first_of(",}", colon);
        b.replace(colon + 1, end == std::string::npos ? 0 : end - colon - 1, pick(nums));
        r.mutations.insert("body:number");
        break;
      }
      case 8:
        if (!b.empty())
          b.resize(below(b.size()));
        r.mutations.insert("body:truncated");
        break;
      case 9: {
        auto brace = b.find('{');
        if (brace == std::string::npos)
          return mutate_bytes(r);
        static const std::vector<std::string> dups = {
          "\"content\":5,", "\"content\":\"a\\u0000\",", "\"rating\":2,", "\"user\":[],",
          "\"metadata\":{\"k\\u0000\":1},", "\"to\":\"\\u0000\",", "\"messages\":{},",
          "\"comment\":\"\\u0000\",", "\"system_prompt\":\"x\\u0000\",",
          "\"client_message_id\":\"\\u0000\","};
        b.insert(brace + 1, pick(dups));
        r.mutations.insert("body:duplicate-key");
        break;
      }
      case 10:
        b = std::string(2000 + below(20000), '[') + "1" + std::string(10, ']');
        r.mutations.insert("body:deep");
        break;
      default:
        mutate_bytes(r);
    }
  }

  void mutate_bytes(request& r) {
    auto& b = r.body;
    if (b.empty()) {
      b = "{\"x\":\"" + bad_bytes() + "\"}";
      r.mutations.insert("body:added");
      return;
    }
    switch (below(3)) {
      case 0:
        b[below(b.size())] ^= static_cast<char>(1u << below(8));
        r.mutations.insert("body:bit-flip");
        break;
      case 1:
        b.insert(pos_in(b), std::string(1, static_cast<char>(below(256))));
        r.mutations.insert("body:byte-inserted");
        break;
      default:
        b.erase(below(b.size()), 1 + below(8));
        r.mutations.insert("body:bytes-deleted");
    }
  }

  void mutate(request& r) {
    auto roll = below(100);
    if (roll < 24)
      mutate_path(r);
    else if (roll < 36)
      mutate_query(r);
    else if (roll < 58)
      mutate_header(r);
    else if (roll < 94)
      r.body.empty() && chance(70) ? mutate_path(r) : mutate_body(r);
    else if (roll < 97) {
      static const std::vector<std::string> methods = {"PUT", "PATCH", "get", "HEAD", "OPTIONS",
                                                       "POST", "DELETE", "GET"};
      r.method = pick(methods);
      r.mutations.insert("method");
    } else {
      // Framing: a Content-Length that lies, or none.
      if (chance(50))
        r.send_length = false;
      else
        r.length_override = std::to_string(r.body.size() > 0 ? below(r.body.size()) : 3);
      r.mutations.insert("framing");
    }
  }

  std::mt19937_64 rng_;
  const world& w_;
};

/// Hand-made requests for the defects of issue 13, sent before the random
/// ones so that each is checked on every run, by name.
std::vector<request> known_cases(const world& w) {
  std::vector<request> out;
  auto add = [&](std::string name, std::string method, std::string path, auth a,
                 std::vector<std::pair<std::string, std::string>> headers = {},
                 std::string body = {}, bool stores = false) {
    request r;
    r.route = "known:" + name;
    r.method = std::move(method);
    auto q = path.find('?');
    r.path = path.substr(0, q);
    if (q != std::string::npos)
      r.query = path.substr(q + 1);
    if (a == auth::user)
      r.headers.emplace_back("Authorization", "Bearer " + w.alice);
    else if (a == auth::admin)
      r.headers.emplace_back("Authorization", "Bearer " + w.admin);
    for (auto& h : headers)
      r.headers.push_back(h);
    if (!body.empty() && std::none_of(r.headers.begin(), r.headers.end(),
                                      [](auto& h) { return h.first == "Content-Type"; }))
      r.headers.emplace_back("Content-Type", "application/json");
    r.body = std::move(body);
    r.stores = stores;
    out.push_back(std::move(r));
  };
  auto s = "/v1/sessions/" + w.sessions[0];
  add("feedback-seq-ff", "POST", s + "/messages/\xff/feedback", auth::user, {}, R"({"rating":1})");
  add("content-type-json-ff", "POST", s + "/messages", auth::user,
      {{"Content-Type", "application/json\xff"}}, R"({"content":"x"})");
  add("drain-node-ff", "POST", "/admin/v1/nodes/x\xff/drain", auth::admin);
  add("session-id-ff", "GET", "/v1/sessions/\xff", auth::user);
  add("session-id-c328-messages", "POST", "/v1/sessions/\xc3\x28/messages", auth::user, {},
      R"({"content":"x"})");
  add("admin-session-id-ff", "GET", "/admin/v1/sessions/\xff", auth::admin);
  add("migrate-id-ff", "POST", "/admin/v1/sessions/\xff/migrate", auth::admin, {},
      R"({"to":"node-0"})");
  add("revoke-key-ff", "DELETE", "/admin/v1/api-keys/\xff", auth::admin);
  add("unknown-route-ff", "GET", "/v1/nope\xff", auth::user);
  add("wrong-method-ff", "PUT", "/v1/sessions/\xff", auth::user);
  add("query-cursor-ff", "GET", "/v1/sessions?cursor=\xff", auth::user);
  add("query-limit-ff", "GET", s + "/messages?limit=\xff", auth::user);
  add("x-request-id-ff", "GET", "/v1/models", auth::user, {{"X-Request-Id", "r\xff"}});
  add("accept-ff", "GET", "/v1/sessions", auth::user, {{"Accept", "application/json\xff"}});
  add("authorization-ff", "GET", "/v1/sessions", auth::none,
      {{"Authorization", "Bearer " + w.alice + "\xff"}});
  add("other-header-ff", "GET", "/v1/sessions", auth::user, {{"X-Other", "\xff"}});
  add("body-ff-in-content", "POST", s + "/messages", auth::user, {}, "{\"content\":\"\xff\"}");
  add("healthz-header-ff", "GET", "/healthz", auth::none, {{"X-Request-Id", "\xfe"}});
  add("nul-content", "POST", s + "/messages", auth::user, {}, R"({"content":"a\u0000b"})", true);
  add("nul-client-message-id", "POST", s + "/messages", auth::user, {},
      R"({"content":"x","client_message_id":"c\u0000"})", true);
  add("nul-system-prompt", "POST", "/v1/sessions", auth::user, {},
      R"({"system_prompt":"a\u0000"})", true);
  add("nul-model", "POST", "/v1/sessions", auth::user, {}, R"({"model":"m\u0000"})", true);
  add("nul-metadata-value", "POST", "/v1/sessions", auth::user, {},
      R"({"metadata":{"k":"\u0000"}})", true);
  add("nul-metadata-key", "POST", "/v1/sessions", auth::user, {},
      R"({"metadata":{"k\u0000":1}})", true);
  add("nul-comment", "POST", s + "/messages/2/feedback", auth::user, {},
      R"({"rating":1,"comment":"\u0000"})", true);
  add("nul-api-key-user", "POST", "/admin/v1/api-keys", auth::admin, {},
      R"({"user":"u\u0000"})", true);
  add("nul-migrate-to", "POST", "/admin/v1/sessions/" + w.sessions[1] + "/migrate", auth::admin,
      {}, R"({"to":"\u0000"})");
  add("nul-chat-content", "POST", "/v1/chat/completions", auth::user, {},
      R"({"messages":[{"role":"user","content":"a\u0000"}]})");
  return out;
}

// ---------------------------------------------------------------------------
// Checks

struct failure {
  std::string kind, request, detail;
  int count = 0;
};

class findings {
public:
  void add(const std::string& kind, const request& r, const std::string& detail) {
    std::string key = kind + " | " + r.route;
    auto& f = all_[key];
    if (f.count++ == 0) {
      f.kind = kind;
      std::string muts;
      for (auto& m : r.mutations)
        muts += " " + m;
      f.request = (muts.empty() ? "" : "[mutations:" + muts + "] ") + show(r.bytes());
      f.detail = detail;
      order_.push_back(key);
    }
  }
  void add_plain(const std::string& kind, const std::string& detail) {
    auto& f = all_[kind];
    if (f.count++ == 0) {
      f.kind = kind;
      f.detail = detail;
      order_.push_back(kind);
    }
  }
  bool empty() const { return all_.empty(); }
  std::string report() const {
    std::string out;
    std::map<std::string, int> kinds;
    for (auto& [k, f] : all_)
      kinds[f.kind] += f.count;
    out += "failure kinds:\n";
    for (auto& [k, n] : kinds)
      out += "  " + std::to_string(n) + " x " + k + "\n";
    out += "distinct (kinds | route), first example of each:\n";
    // The first 80 with a request, and every finding of the end of the run.
    std::size_t shown = 0, left_out = 0;
    for (auto& key : order_) {
      auto& f = all_.at(key);
      if (!f.request.empty() && ++shown > 80) {
        ++left_out;
        continue;
      }
      out += "- [" + std::to_string(f.count) + "x] " + key + "\n";
      if (!f.request.empty())
        out += "    request: " + f.request + "\n";
      out += "    " + f.detail + "\n";
    }
    if (left_out > 0)
      out += "... and " + std::to_string(left_out) + " more with a request\n";
    return out;
  }

private:
  std::map<std::string, failure> all_;
  std::vector<std::string> order_;
};

const std::set<std::string> known_codes = {
  "invalid_request", "unauthorized", "forbidden", "not_found", "method_not_allowed", "conflict",
  "payload_too_large", "unsupported_media_type", "rate_limited", "session_busy",
  "budget_exceeded", "upstream_error", "overloaded", "upstream_unavailable",
  "storage_unavailable", "upstream_timeout"};

std::string describe(const answer& a) {
  return "status " + std::to_string(a.status) + (a.closed ? " (closed)" : "") +
         (a.timed_out ? " (timed out)" : "") + ", body: " + show(a.body, 400);
}

/// Every check of one answer: what it broke, "" when nothing.
std::string check(const request& r, const answer& a) {
  std::vector<std::string> broke;
  bool head = r.method == "HEAD";
  auto bad_part = r.invalid_utf8_part();
  if (a.status == 0) {
    // A request whose framing lies may be dropped; any other deserves an answer.
    if (!r.mutations.count("framing"))
      broke.push_back(a.timed_out ? "no answer (timed out)" : "no answer (closed)");
  } else {
    if (a.status >= 500 && !(a.status == 503 && !a.header("retry-after").empty()))
      broke.push_back("5xx " + std::to_string(a.status));
    if (!bad_part.empty() && (a.status < 400 || a.status > 499))
      broke.push_back("invalid UTF-8 in " + bad_part + " not answered 4xx");
    if (a.header("x-parley-node").empty() || a.header("x-request-id").empty())
      broke.push_back("no X-Parley-Node or X-Request-Id");
    if (!valid_utf8(a.header("x-request-id")))
      broke.push_back("X-Request-Id echoed with invalid UTF-8");
    if (r.stores && (a.status / 100 == 2 || a.status >= 500)) {
      // API.md: 400 invalid_request (a 401, 403 or 404 may come first).
      auto j = json::parse(r.body, nullptr, false);
      if (!j.is_discarded() && json_has_nul(j))
        broke.push_back(a.status / 100 == 2 ? "a string holding NUL was accepted"
                                            : "a string holding NUL answered 5xx, not 400");
    }
    if (a.status / 100 != 2 && !head &&
        a.header("content-type").find("application/json") != std::string::npos) {
      auto j = json::parse(a.body, nullptr, false);
      bool shaped = j.is_object() && j.contains("error") && j["error"].is_object();
      for (const char* k : {"message", "type", "code"})
        shaped = shaped && j["error"].contains(k) && j["error"][k].is_string();
      if (!shaped) {
        broke.push_back("error answer without the error shape");
      } else {
        auto code = j["error"]["code"].get<std::string>();
        if (a.status < 500 && !known_codes.count(code))
          broke.push_back("error code '" + code + "' not in API.md");
        auto msg = j["error"]["message"].get<std::string>();
        for (const char* leak : {"exception", "pqxx", "ERROR:", "SQL", "invalid byte sequence",
                                 "syntax error", "what()", "0x00"})
          if (msg.find(leak) != std::string::npos) {
            broke.push_back("error message speaks of internals");
            break;
          }
      }
    }
  }
  std::string out;
  for (auto& b : broke)
    out += (out.empty() ? "" : " + ") + b;
  return out;
}

/// The log lines of a node that tell of an error or a crash.
std::vector<std::string> bad_log_lines(const std::string& path) {
  static const std::vector<std::string> marks = {
    "\"level\":\"error\"", "unhandled", "terminate called", "terminated", "exception",
    "died", "stopped unexpectedly", "Segmentation", "AddressSanitizer", "runtime error:",
    "core dumped", "Aborted"};
  std::vector<std::string> out;
  std::ifstream in{path};
  std::string line;
  while (std::getline(in, line))
    for (auto& m : marks)
      if (line.find(m) != std::string::npos) {
        out.push_back(show(line, 400));
        break;
      }
  return out;
}

} // namespace

TEST(fuzz, mutated_requests_on_every_route_never_hurt_the_cluster) {
  auto seed = static_cast<std::uint64_t>(env_int("PARLEY_FUZZ_SEED", 20261207));
  auto max_requests = env_int("PARLEY_FUZZ_REQUESTS", 2500);
  auto max_seconds = env_int("PARLEY_FUZZ_SECONDS", 150);
  auto max_restarts = env_int("PARLEY_FUZZ_MAX_RESTARTS", 10);
  auto* redis = std::getenv("PARLEY_TEST_REDIS_URL");
  ASSERT_TRUE(redis && *redis) << "PARLEY_TEST_REDIS_URL is not set: run through scripts/test";
  std::printf("fuzz: seed %llu (PARLEY_FUZZ_SEED), up to %lld requests in %lld s\n",
              static_cast<unsigned long long>(seed), static_cast<long long>(max_requests),
              static_cast<long long>(max_seconds));

  scratch_db db;
  mock_llm primary, fallback;
  parley_cluster c{db, 3,
                   {{"PARLEY_LLM_BASE_URL", primary.base_url()},
                    {"PARLEY_LLM_FALLBACK_BASE_URL", fallback.base_url()},
                    {"PARLEY_LLM_MODEL", "mock-model"},
                    {"PARLEY_REDIS_URL", redis}}};

  world w;
  w.admin = admin_placeholder;
  w.alice = c[0].create_key("alice");
  w.bob = c[1].create_key("bob");
  for (int i = 0; i < 6; ++i) {
    auto id = c[i % 3].create_session(w.alice);
    // A turn, so that seqs 1 and 2 exist for feedback.
    auto t = c[i % 3].post_message(w.alice, id, {{"content", "seed turn"}});
    ASSERT_EQ(t.status, 200) << parley::test::describe(t);
    w.sessions.push_back(id);
  }
  for (int i = 0; i < 3; ++i)
    w.victims.push_back(c[i].create_session(w.alice));
  w.bob_session = c[2].create_session(w.bob);
  for (int i = 0; i < 3; ++i) {
    w.node_ids.push_back(c[i].node_id());
    // Spare keys with a user of their own: revoking one hurts nobody.
    auto r = c[i].admin("POST", "/admin/v1/api-keys", {{"user", "spare-" + std::to_string(i)}});
    ASSERT_EQ(r.status, 201);
    w.spare_key_prefixes.push_back(r.js()["api_key"].get<std::string>().substr(0, 11));
  }
  // Sessions the probes post turns to, one per node.
  std::vector<std::string> probe_session;
  for (int i = 0; i < 3; ++i)
    probe_session.push_back(c[i].create_session(w.alice));

  findings found;
  // A 503 (a session being migrated by the fuzzer) is retried, as a client would.
  auto retrying = [](const std::function<http_result()>& call) {
    http_result r;
    for (int attempt = 0; attempt < 20; ++attempt) {
      r = call();
      if (r.status != 503)
        break;
      std::this_thread::sleep_for(100ms);
    }
    return r;
  };
  auto node_serves = [&](int i, bool turn) -> std::string {
    // The probe sessions are none of the fuzzer's: a mutated DELETE cannot remove them.
    auto g = retrying([&] {
      return c[i].call("GET", "/v1/sessions/" + probe_session[static_cast<std::size_t>(i)],
                       w.alice);
    });
    if (g.status != 200)
      return "GET /v1/sessions/{id} -> " + parley::test::describe(g);
    if (turn) {
      auto t = retrying([&] {
        return c[i].post_message(w.alice, probe_session[static_cast<std::size_t>(i)],
                                 {{"content", "probe"}});
      });
      if (t.status != 200)
        return "a turn -> " + parley::test::describe(t);
    }
    return {};
  };
  std::int64_t restarts = 0;
  auto restart = [&](int i) {
    ++restarts;
    auto t0 = clock_type::now();
    c[i].kill9(); // a node with a dead actor may not drain in time
    c[i].restart();
    c.wait_converged(3, 15s);
    std::printf("fuzz: restarted node-%d in %lld ms\n", i,
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         clock_type::now() - t0)
                                         .count()));
  };

  generator gen{seed, w};
  auto start = clock_type::now();
  std::int64_t sent = 0;
  std::map<int, int> statuses;
  auto known = known_cases(w);
  for (; sent < max_requests + static_cast<std::int64_t>(known.size()); ++sent) {
    if (clock_type::now() - start > std::chrono::seconds(max_seconds))
      break;
    auto r = sent < static_cast<std::int64_t>(known.size()) ? known[static_cast<std::size_t>(sent)]
                                                           : gen.next();
    if (sent % 500 == 499)
      std::printf("fuzz: %lld requests after %lld s\n", static_cast<long long>(sent + 1),
                  static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(
                                           clock_type::now() - start)
                                           .count()));
    int node = static_cast<int>(sent % 3);
    // A Content-Length that lies may leave the server waiting for bytes that never come.
    auto a = exchange(c[node].port(), r.bytes(c[node].admin_token()), r.method == "HEAD",
                      r.mutations.count("framing") ? 2s : 15s);
    ++statuses[a.status];
    if (auto broke = check(r, a); !broke.empty())
      found.add(broke, r, describe(a));
    // The node that answered still serves; every 25 requests every node serves a turn.
    std::vector<int> probe = {node};
    bool turn = sent % 25 == 24;
    if (turn)
      probe = {0, 1, 2};
    for (int i : probe) {
      auto why = node_serves(i, turn);
      if (why.empty())
        continue;
      found.add("node stopped serving after this request", r,
                "node-" + std::to_string(i) + ": " + why);
      if (restarts >= max_restarts)
        break;
      restart(i);
    }
    if (restarts >= max_restarts) {
      found.add_plain("run cut short", std::to_string(max_restarts) +
                                         " node restarts (PARLEY_FUZZ_MAX_RESTARTS)");
      ++sent; // this one was sent
      break;
    }
  }
  auto took = std::chrono::duration_cast<std::chrono::seconds>(clock_type::now() - start);
  std::string mix;
  for (auto& [s, n] : statuses)
    mix += " " + std::to_string(s) + ":" + std::to_string(n);
  std::printf("fuzz: %lld requests in %lld s, %lld node restarts; statuses:%s\n",
              static_cast<long long>(sent), static_cast<long long>(took.count()), static_cast<long long>(restarts),
              mix.c_str());

  // Afterwards: every node serves a turn, sees three nodes up, is healthy.
  for (int i = 0; i < 3; ++i) {
    if (!c[i].process().alive()) {
      found.add_plain("node-" + std::to_string(i) + " exited", c[i].process().log_tail(20));
      continue;
    }
    if (auto why = node_serves(i, true); !why.empty())
      found.add_plain("node-" + std::to_string(i) + " serves no turn after the run", why);
    auto cl = c[i].cluster();
    int up = 0;
    if (cl.is_object())
      for (auto& m : cl["nodes"])
        up += m.value("status", "") == "up";
    if (up != 3)
      found.add_plain("node-" + std::to_string(i) + " does not list three nodes up",
                      cl.dump().substr(0, 400));
    auto h = http(c[i].port(), "GET", "/healthz");
    if (h.status != 200)
      found.add_plain("node-" + std::to_string(i) + " /healthz", parley::test::describe(h));
    for (auto& line : bad_log_lines(c[i].process().log_path()))
      found.add_plain("node-" + std::to_string(i) + " logged an error", line);
  }
  // What was stored is still Unicode without NUL.
  for (auto& id : w.sessions) {
    auto r = c[0].call("GET", "/v1/sessions/" + id + "/messages?limit=500", w.alice);
    if (r.status == 404)
      continue; // a mutated request may have deleted it
    if (r.status != 200 || r.js().is_discarded())
      found.add_plain("listing a session's messages fails after the run",
                      parley::test::describe(r));
    else if (json_has_nul(r.js()))
      found.add_plain("a stored message holds a NUL", r.body.substr(0, 300));
  }

  EXPECT_TRUE(found.empty()) << "seed " << seed << ", " << sent << " requests\n"
                             << found.report();
}

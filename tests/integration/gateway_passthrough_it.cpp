// The gateway passes requests and answers through faithfully (API.md section
// 5): whole requests upstream, the upstream's answers (tool calls, every
// choice, usage, its 4xx) back unchanged, streamed chunks relayed as they
// come, the usage chunk only when asked, whole histories within
// PARLEY_GATEWAY_MAX_BODY_BYTES, oversized upstream answers cut. Real
// `parley` processes against mock-llm, and against a scripted upstream of
// this test for what mock-llm cannot say (streamed tool calls, usage chunks).

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

/// An OpenAI-compatible upstream that answers every POST with one scripted
/// answer (status, content type, body pieces written with a pause between
/// them) and records the request bodies. One thread, one connection at a
/// time, Connection: close.
class scripted_upstream {
public:
  struct answer {
    int status = 200;
    std::string content_type = "text/event-stream";
    std::vector<std::string> pieces;
    std::chrono::milliseconds pause{20};
  };

  explicit scripted_upstream(answer a) : port_(free_port()), answer_(std::move(a)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0)
      throw std::runtime_error("scripted upstream: cannot listen on " + std::to_string(port_));
    thread_ = std::thread([this] { serve(); });
  }
  ~scripted_upstream() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }
  /// Bytes of answers written so far.
  std::size_t sent() const { return sent_.load(); }
  /// The JSON bodies received so far.
  std::vector<json> requests() {
    std::lock_guard<std::mutex> lk{mu_};
    return requests_;
  }

private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0)
        continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0)
        continue;
      exchange(c);
      ::close(c);
    }
  }

  void exchange(int c) {
    std::string in;
    char buf[65536];
    std::size_t body_at = std::string::npos, length = 0;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0)
        continue;
      auto n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0)
        return;
      in.append(buf, static_cast<std::size_t>(n));
      if (body_at == std::string::npos && (body_at = in.find("\r\n\r\n")) != std::string::npos) {
        body_at += 4;
        std::string head = in.substr(0, body_at);
        for (auto& ch : head)
          ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        auto cl = head.find("content-length:");
        length = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15));
      }
      if (body_at != std::string::npos && in.size() >= body_at + length)
        break;
    }
    {
      std::lock_guard<std::mutex> lk{mu_};
      requests_.push_back(json::parse(in.substr(body_at == std::string::npos ? in.size() : body_at),
                                      nullptr, false));
    }
    std::size_t total = 0;
    for (auto& piece : answer_.pieces)
      total += piece.size();
    send_all(c, "HTTP/1.1 " + std::to_string(answer_.status) + " X\r\nContent-Type: " +
                  answer_.content_type + "\r\nContent-Length: " + std::to_string(total) +
                  "\r\nConnection: close\r\n\r\n");
    for (auto& piece : answer_.pieces) {
      if (!send_all(c, piece))
        return;
      sent_ += piece.size();
      if (answer_.pause.count() > 0)
        std::this_thread::sleep_for(answer_.pause);
    }
  }

  unsigned short port_;
  answer answer_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> sent_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<json> requests_;
};

/// One SSE event of `j`.
std::string event(const json& j) { return "data: " + j.dump() + "\n\n"; }

/// The `data:` payloads of an SSE body, in order.
std::vector<std::string> data_lines(const std::string& body) {
  std::vector<std::string> out;
  for (auto at = body.find("data: "); at != std::string::npos; at = body.find("data: ", at + 1))
    out.push_back(body.substr(at + 6, body.find('\n', at) - at - 6));
  return out;
}

json chunk(const json& delta, const json& finish = nullptr, int index = 0) {
  return {{"id", "chatcmpl-up-1"},
          {"object", "chat.completion.chunk"},
          {"created", 1700000000},
          {"model", "up-model"},
          {"system_fingerprint", "fp_up"},
          {"choices",
           {{{"index", index},
             {"delta", delta},
             {"logprobs", nullptr},
             {"finish_reason", finish}}}}};
}

const json usage_chunk = {{"id", "chatcmpl-up-1"},
                          {"object", "chat.completion.chunk"},
                          {"created", 1700000000},
                          {"model", "up-model"},
                          {"choices", json::array()},
                          {"usage", {{"prompt_tokens", 31}, {"completion_tokens", 9},
                                     {"total_tokens", 40}}}};

/// A streamed tool call as OpenAI sends it: the call's id and name, its
/// arguments in pieces, finish_reason tool_calls, then the usage chunk.
std::vector<json> tool_call_chunks() {
  return {chunk({{"role", "assistant"}, {"content", nullptr},
                 {"tool_calls", {{{"index", 0}, {"id", "call_abc"}, {"type", "function"},
                                  {"function", {{"name", "get_weather"}, {"arguments", ""}}}}}}}),
          chunk({{"tool_calls", {{{"index", 0}, {"function", {{"arguments", "{\"city\":"}}}}}}}),
          chunk({{"tool_calls", {{{"index", 0}, {"function", {{"arguments", "\"Paris\"}"}}}}}}}),
          chunk({{"tool_calls", {{{"index", 1}, {"id", "call_def"}, {"type", "function"},
                                  {"function", {{"name", "get_time"}, {"arguments", "{}"}}}}}}}),
          chunk(json::object(), "tool_calls"),
          usage_chunk};
}

scripted_upstream::answer sse_answer(const std::vector<json>& chunks) {
  scripted_upstream::answer a;
  for (auto& c : chunks)
    a.pieces.push_back(event(c));
  a.pieces.push_back("data: [DONE]\n\n");
  return a;
}

/// A whole history with every role and field a tool loop uses.
json tool_history() {
  return json::array(
    {{{"role", "developer"}, {"content", "use the tools"}},
     {{"role", "user"},
      {"content", {{{"type", "text"}, {"text", "weather in Paris? see the picture"}},
                   {{"type", "image_url"},
                    {"image_url", {{"url", "data:image/png;base64,iVBORw0KGgo="},
                                   {"detail", "low"}}}}}},
      {"name", "alice"}},
     {{"role", "assistant"},
      {"content", nullptr},
      {"refusal", nullptr},
      {"tool_calls", {{{"id", "call_abc"}, {"type", "function"},
                       {"function", {{"name", "get_weather"},
                                     {"arguments", "{\"city\":\"Paris\"}"}}}}}}},
     {{"role", "tool"}, {"tool_call_id", "call_abc"}, {"content", "18 C, sunny"}}});
}

const json tools = json::array({json::parse(R"({"type": "function", "function": {
  "name": "get_weather",
  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})")});

struct passthrough : ::testing::Test {
  scratch_db db;
};

} // namespace

// A plain tool-call answer (content null), with two choices, logprobs and
// usage, comes back exactly as the upstream gave it; the request reached the
// upstream whole.
TEST_F(passthrough, plain_answers_and_requests_pass_through_unchanged) {
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_LLM_MODEL", "mock-model"}}};
  auto key = node.create_key("alice");
  json answer = {
    {"id", "chatcmpl-upstream-7"},
    {"object", "chat.completion"},
    {"created", 1700000000},
    {"model", "up-model-2024"},
    {"system_fingerprint", "fp_123"},
    {"choices",
     {{{"index", 0},
       {"message", {{"role", "assistant"}, {"content", nullptr}, {"refusal", nullptr},
                    {"tool_calls", {{{"id", "call_1"}, {"type", "function"},
                                     {"function", {{"name", "get_weather"},
                                                   {"arguments", "{\"city\":\"Paris\"}"}}}}}}}},
       {"logprobs", nullptr},
       {"finish_reason", "tool_calls"}},
      {{"index", 1},
       {"message", {{"role", "assistant"}, {"content", "Let me check."}}},
       {"logprobs", {{"content", {{{"token", "Let"}, {"logprob", -0.1}, {"bytes", {76, 101, 116}},
                                   {"top_logprobs", json::array()}}}}}},
       {"finish_reason", "length"}}}},
    {"usage", {{"prompt_tokens", 50}, {"completion_tokens", 12}, {"total_tokens", 62},
               {"completion_tokens_details", {{"reasoning_tokens", 0}}}}}};
  mock.configure({{"fail_status", 200}, {"fail_body", answer}});
  json req = {{"messages", tool_history()},
              {"tools", tools},
              {"tool_choice", "auto"},
              {"parallel_tool_calls", false},
              {"n", 2},
              {"logprobs", true},
              {"top_logprobs", 1},
              {"seed", 42},
              {"stop", {"END"}},
              {"max_completion_tokens", 100},
              {"user", "u-1"},
              {"response_format", {{"type", "text"}}},
              {"x_unknown_vendor_field", {{"keep", {1, "two", nullptr}}}}};
  auto r = node.call("POST", "/v1/chat/completions", key, req.dump());
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js(), answer);
  auto sent = mock.requests().back()["body"];
  auto want = req;
  want["model"] = "mock-model"; // the only field Parley fills in
  EXPECT_EQ(sent, want);
}

// A 300 KiB history is an ordinary request; past the limit, 413; the
// session routes keep their 64 KiB.
TEST_F(passthrough, whole_histories_fit_within_the_gateway_body_limit) {
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_GATEWAY_MAX_BODY_BYTES", "1048576"}}};
  auto key = node.create_key("alice");
  json history = json::array();
  for (int i = 0; i < 150; ++i)
    history.push_back({{"role", i % 2 ? "assistant" : "user"},
                       {"content", std::to_string(i) + ":" + std::string(2048, 'h')}});
  history.push_back({{"role", "user"}, {"content", std::string(40 * 1024, 'q')}});
  json req = {{"messages", history}};
  ASSERT_GT(req.dump().size(), 300u * 1024);
  auto r = node.call("POST", "/v1/chat/completions", key, req.dump());
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(mock.requests().back()["body"]["messages"], history);
  // Streamed too.
  req["stream"] = true;
  auto s = node.call("POST", "/v1/chat/completions", key, req.dump());
  ASSERT_EQ(s.status, 200) << describe(s);
  EXPECT_EQ(data_lines(s.body).back(), "[DONE]");

  json over = {{"messages", {{{"role", "user"}, {"content", std::string(1100 * 1024, 'x')}}}}};
  auto big = node.call("POST", "/v1/chat/completions", key, over.dump());
  EXPECT_EQ(big.status, 413) << describe(big);
  EXPECT_EQ(big.code(), "payload_too_large");
  EXPECT_TRUE(big.js()["error"].contains("param"));
  // Chunked, with no Content-Length: the same limit.
  auto body = over.dump();
  std::string chunked = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        key + "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                        "Connection: close\r\n\r\n";
  for (std::size_t at = 0; at < body.size(); at += 60000) {
    auto part = body.substr(at, 60000);
    char size[16];
    std::snprintf(size, sizeof size, "%zx", part.size());
    chunked += std::string{size} + "\r\n" + part + "\r\n";
  }
  chunked += "0\r\n\r\n";
  auto raw = raw_exchange(node.port(), chunked, 10s);
  EXPECT_EQ(raw.rfind("HTTP/1.1 413", 0), 0u) << raw.substr(0, 300);

  auto session = node.create_session(key);
  auto turn = node.post_message(key, session, {{"content", std::string(70 * 1024, 's')}});
  EXPECT_EQ(turn.status, 413) << describe(turn);
}

// Large bodies are read before any key is checked: a node holds at most 32
// gateway limits of them at once (503 beyond), and gives the room back.
TEST_F(passthrough, large_bodies_being_read_at_once_are_bounded) {
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_GATEWAY_MAX_BODY_BYTES", "1048576"}}};
  auto key = node.create_key("alice");
  auto open_slow_body = [&] {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(node.port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    send_all(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 "application/json\r\nContent-Length: 1000000\r\n\r\n{\"messages\":");
    return fd;
  };
  std::vector<int> fds;
  for (int i = 0; i < 40; ++i)
    fds.push_back(open_slow_body());
  std::this_thread::sleep_for(500ms);
  int refused = 0;
  for (int fd : fds) {
    pollfd p{fd, POLLIN, 0};
    char buf[512];
    if (::poll(&p, 1, 0) > 0) {
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0 && std::string(buf, static_cast<std::size_t>(n)).rfind("HTTP/1.1 503", 0) == 0)
        ++refused;
    }
  }
  EXPECT_EQ(refused, 7) << "33 bodies of 1,000,000 bytes fit in 32 MiB";
  for (int fd : fds)
    ::close(fd);
  // The room is given back: a large body is read again.
  json req = {{"messages", {{{"role", "user"}, {"content", std::string(900 * 1024, 'x')}}}}};
  EXPECT_TRUE(wait_for(
    [&] { return node.call("POST", "/v1/chat/completions", key, req.dump()).status == 200; },
    5s));
}

// An upstream 4xx is the client's error: its status and body unchanged, no
// retry, no fallback. Parley's own 400s name the field at fault.
TEST_F(passthrough, an_upstream_4xx_is_passed_through_once) {
  mock_llm primary, fallback;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", primary.base_url()},
                        {"PARLEY_LLM_FALLBACK_BASE_URL", fallback.base_url()}}};
  auto key = node.create_key("alice");
  json refusal = {{"error", {{"message", "Invalid parameter: messages with role 'tool' must be a "
                                         "response to a preceding message with 'tool_calls'."},
                             {"type", "invalid_request_error"},
                             {"param", "messages.[3].role"},
                             {"code", nullptr}}}};
  primary.configure({{"fail_status", 400}, {"fail_body", refusal}});
  json req = {{"messages", tool_history()}, {"tools", tools}};
  for (bool stream : {false, true}) {
    req["stream"] = stream;
    primary.clear();
    auto r = node.call("POST", "/v1/chat/completions", key, req.dump());
    EXPECT_EQ(r.status, 400) << describe(r);
    EXPECT_EQ(r.js(), refusal) << r.body;
    EXPECT_EQ(primary.requests().size(), 1u) << "no retry";
  }
  EXPECT_EQ(fallback.requests().size(), 0u) << "no fallback";
  // A context overflow too (413 from the upstream).
  primary.configure({{"fail_status", 413}, {"fail_body", refusal}});
  auto big = node.call("POST", "/v1/chat/completions", key, req.dump());
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(big.js(), refusal);
  // A 500 is still Parley's to retry and hand to the fallback.
  primary.configure({{"fail_status", 500}, {"fail_body", refusal}});
  req["stream"] = false;
  auto failed_over = node.call("POST", "/v1/chat/completions", key, req.dump());
  EXPECT_EQ(failed_over.status, 200) << describe(failed_over);
  EXPECT_EQ(fallback.requests().size(), 1u);

  auto bad = node.call("POST", "/v1/chat/completions", key,
                       R"({"messages":[{"role":"user","content":"a"},{"role":"wizard"}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.js()["error"]["param"], "messages[1].role") << bad.body;
  auto unauthorized = node.call("POST", "/v1/chat/completions", "nope", req.dump());
  EXPECT_EQ(unauthorized.status, 401);
  EXPECT_TRUE(unauthorized.js()["error"]["param"].is_null()) << unauthorized.body;
}

// A streamed tool call is relayed chunk by chunk, unchanged and in order;
// the usage chunk reaches the client only when it asked; the upstream was
// always asked for it.
TEST_F(passthrough, streamed_tool_calls_are_relayed_chunk_by_chunk) {
  auto chunks = tool_call_chunks();
  scripted_upstream up{sse_answer(chunks)};
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", up.base_url()}}};
  auto key = node.create_key("alice");
  json req = {{"model", "up-model"}, {"messages", tool_history()}, {"tools", tools},
              {"stream", true}};
  for (bool include_usage : {false, true}) {
    if (include_usage)
      req["stream_options"] = {{"include_usage", true}};
    auto got = timed_exchange(node.port(),
                              raw_post("/v1/chat/completions", key, req.dump()), 20s);
    std::string body;
    for (auto& [at, bytes] : got)
      body += bytes;
    ASSERT_EQ(body.rfind("HTTP/1.1 200", 0), 0u) << body.substr(0, 300);
    ASSERT_GE(got.size(), 2u);
    EXPECT_GE(got.back().first - got.front().first, 60ms)
      << "chunks must reach the client as they arrive";
    auto lines = data_lines(body);
    std::vector<std::string> want;
    for (auto& c : chunks)
      if (include_usage || !c["choices"].empty())
        want.push_back(c.dump());
    want.push_back("[DONE]");
    ASSERT_EQ(lines.size(), want.size()) << body;
    for (std::size_t i = 0; i + 1 < want.size(); ++i)
      EXPECT_EQ(json::parse(lines[i], nullptr, false), json::parse(want[i]))
        << "chunk " << i << ": " << lines[i];
    EXPECT_EQ(lines.back(), "[DONE]");
    auto sent = up.requests().back();
    EXPECT_EQ(sent["stream_options"]["include_usage"], true) << sent.dump();
    EXPECT_EQ(sent["messages"], tool_history());
    EXPECT_EQ(sent["tools"], tools);
  }
}

/// Resident memory of a process, in KiB (-1 when unknown).
long rss_kib(pid_t pid) {
  std::ifstream f{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6));
  return -1;
}

/// `pieces` numbered chunks of about 64 KiB each, then [DONE]; `total`
/// gets their size in bytes.
scripted_upstream::answer big_answer(int pieces, std::size_t& total) {
  scripted_upstream::answer a;
  a.pause = 0ms;
  for (int i = 0; i < pieces; ++i)
    a.pieces.push_back(
      event(chunk({{"content", std::to_string(i) + std::string(64 * 1024, 'p')}})));
  a.pieces.push_back("data: [DONE]\n\n");
  total = 0;
  for (auto& p : a.pieces)
    total += p.size();
  return a;
}

/// A connection to 127.0.0.1:`port` with a small receive buffer (a client
/// that reads slowly), which sent `request`; -1 on failure.
int slow_client(unsigned short port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int small = 64 * 1024;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      !send_all(fd, request)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// What `fd` receives until the peer closes, `until` arrives (when not
/// empty) or `limit` passed; closes `fd`.
std::string read_all(int fd, std::chrono::seconds limit, const std::string& until = "") {
  std::string got;
  std::vector<char> buf(1 << 16);
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0)
      continue;
    auto n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0)
      break;
    got.append(buf.data(), static_cast<std::size_t>(n));
    if (!until.empty() && got.find(until) != std::string::npos)
      break;
  }
  ::close(fd);
  return got;
}

/// A session on a node whose upstream answers `pieces` big pieces
/// (big_answer), and the streamed turn of a client that reads nothing yet.
struct big_session_stream {
  big_session_stream(scratch_db& db, int pieces)
    : up{big_answer(pieces, total)},
      node{db, {{"PARLEY_LLM_BASE_URL", up.base_url()}, {"PARLEY_LLM_TIMEOUT_MS", "120000"}}},
      key{node.create_key("alice")}, session{node.create_session(key)} {}
  /// Sends the turn; the client's socket, or -1.
  int start_slow_client() {
    return slow_client(node.port(), raw_post("/v1/sessions/" + session + "/messages", key,
                                             R"({"content":"long","stream":true})"));
  }
  std::size_t total = 0; ///< the upstream answer's bytes
  scripted_upstream up;
  parley_node node;
  std::string key, session;
};

// A relay reads the upstream only as fast as its client takes the chunks: a
// client that stops reading stops the upstream (at the socket buffers),
// instead of the node buffering the whole answer; then it gets all of it.
TEST_F(passthrough, a_relay_holds_back_the_upstream_for_a_slow_client) {
  constexpr int chunks = 1200; // about 76 MiB
  std::size_t total = 0;
  scripted_upstream up{big_answer(chunks, total)};
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", up.base_url()},
                        {"PARLEY_LLM_TIMEOUT_MS", "120000"}}};
  auto key = node.create_key("alice");
  auto before = rss_kib(node.process().pid());
  auto body = R"({"messages":[{"role":"user","content":"long"}],"stream":true})";
  int fd = slow_client(node.port(), raw_post("/v1/chat/completions", key, body));
  ASSERT_GE(fd, 0);
  // The client reads nothing for a while: the upstream must stall.
  std::this_thread::sleep_for(3s);
  auto sent_while_stalled = up.sent();
  auto during = rss_kib(node.process().pid());
  std::printf("[ relay    ] client stalled 3 s: upstream sent %zu of %zu bytes, node RSS %ld -> "
              "%ld KiB\n",
              sent_while_stalled, total, before, during);
  EXPECT_LT(sent_while_stalled, total / 2)
    << "the upstream went on while the client read nothing: " << sent_while_stalled << " of "
    << total << " bytes";
  EXPECT_LT(during - before, 48 * 1024) << "RSS grew from " << before << " to " << during << " KiB";
  // Now it reads: everything arrives, in order, to the end.
  auto got = read_all(fd, 60s, "data: [DONE]");
  EXPECT_EQ(up.sent(), total);
  EXPECT_NE(got.find("data: [DONE]"), std::string::npos) << got.size() << " bytes";
  EXPECT_NE(got.find("\"content\":\"" + std::to_string(chunks - 1) + "ppp"), std::string::npos);
}

// A session turn's stream is paced by its client too: its pieces go from
// the upstream's thread to the client (no actor in between), and a client
// that stops reading stops the upstream read (beyond a small window and the
// socket buffers) instead of the node queueing the answer; then it gets all
// of it and the turn ends with `done` once committed.
TEST_F(passthrough, a_session_stream_holds_back_the_upstream_for_a_slow_client) {
  constexpr int pieces = 800; // about 50 MiB
  big_session_stream st{db, pieces};
  auto& up = st.up;
  auto& node = st.node;
  auto total = st.total;
  auto before = rss_kib(node.process().pid());
  int fd = st.start_slow_client();
  ASSERT_GE(fd, 0);
  // The client reads nothing for a while: the upstream must stall.
  std::this_thread::sleep_for(3s);
  auto sent_while_stalled = up.sent();
  auto during = rss_kib(node.process().pid());
  std::printf("[ session  ] client stalled 3 s: upstream sent %zu of %zu bytes, node RSS %ld -> "
              "%ld KiB\n",
              sent_while_stalled, total, before, during);
  EXPECT_LT(sent_while_stalled, total / 2)
    << "the upstream went on while the client read nothing: " << sent_while_stalled << " of "
    << total << " bytes";
  // The reply so far is kept for the commit (the pieces read), not the
  // events waiting for the client.
  EXPECT_LT(during - before, 2 * static_cast<long>(sent_while_stalled / 1024) + 48 * 1024)
    << "RSS grew from " << before << " to " << during << " KiB";
  // Now it reads: every piece arrives, in order, then `done`.
  auto got = read_all(fd, 90s);
  EXPECT_EQ(up.sent(), total);
  auto done = got.find("event: done");
  EXPECT_NE(done, std::string::npos) << got.size() << " bytes";
  EXPECT_EQ(got.find("event: error"), std::string::npos);
  std::size_t at = 0;
  for (int i = 0; i < pieces; ++i) {
    auto next = got.find("{\"content\":\"" + std::to_string(i) + "ppp", at);
    ASSERT_NE(next, std::string::npos) << "piece " << i << " missing or out of order";
    ASSERT_LT(next, done) << "piece " << i << " after done";
    at = next + 1;
  }
}

// A client that stops reading for good does not hold its connection and
// the turn forever: a write to it that makes no progress for 30 s ends the
// stream (the connection is closed; the client gets what was sent, then the
// end, no `done`); the turn goes on without it (its upstream read no
// longer waits for the client) and is committed; the node serves on.
TEST_F(passthrough, a_stream_whose_client_stops_reading_is_cut_off_after_30_s) {
  constexpr int pieces = 800; // about 50 MiB
  big_session_stream st{db, pieces};
  auto t0 = std::chrono::steady_clock::now();
  int fd = st.start_slow_client();
  ASSERT_GE(fd, 0);
  std::this_thread::sleep_for(3s);
  auto stalled = st.up.sent();
  EXPECT_LT(stalled, st.total / 2) << "the upstream went on while the client read nothing";
  // Past the write timeout (and its check) the node let the client go: the
  // upstream is read to its end, for the commit, with nobody to pace it.
  ASSERT_TRUE(wait_for([&] { return st.up.sent() == st.total; }, 60s))
    << "upstream sent " << st.up.sent() << " of " << st.total << " bytes";
  auto cut_after = elapsed_ms(t0);
  std::printf("[ session  ] client read nothing: the upstream was let go after %lld ms\n",
              static_cast<long long>(cut_after));
  EXPECT_GE(cut_after, 29000);
  // The client, reading now, gets the start of the stream and then the end
  // of the connection: no `done`.
  auto got = read_all(fd, 30s);
  EXPECT_NE(got.find("event: delta"), std::string::npos);
  EXPECT_EQ(got.find("event: done"), std::string::npos) << got.size() << " bytes";
  // The turn was committed whole; the node serves on.
  ASSERT_TRUE(wait_for(
    [&] { return st.node.all_messages(st.key, st.session).size() == 2; }, 30s));
  auto msgs = st.node.all_messages(st.key, st.session);
  EXPECT_EQ(msgs[1]["role"], "assistant");
  EXPECT_NE(msgs[1]["content"].get<std::string>().find(std::to_string(pieces - 1) + "ppp"),
            std::string::npos);
  EXPECT_EQ(http(st.node.port(), "GET", "/readyz").status, 200);
}

// An upstream that answers a streamed call whole: its answer still reaches
// the client whole, as chunks (tool calls indexed, finish_reason, usage).
TEST_F(passthrough, a_whole_answer_to_a_streamed_call_becomes_chunks) {
  json whole = json::parse(R"({"id": "chatcmpl-w", "object": "chat.completion", "created": 7,
    "model": "up-model", "system_fingerprint": "fp_w",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
                 "message": {"role": "assistant", "content": null,
                             "tool_calls": [{"id": "call_9", "type": "function",
                                             "function": {"name": "f", "arguments": "{}"}}]}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})");
  scripted_upstream::answer a;
  a.content_type = "application/json";
  a.pieces = {whole.dump()};
  scripted_upstream up{a};
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", up.base_url()}}};
  auto key = node.create_key("alice");
  auto r = node.call("POST", "/v1/chat/completions", key,
                     R"({"messages":[{"role":"user","content":"x"}],"stream":true,)"
                     R"("stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << describe(r);
  auto lines = data_lines(r.body);
  ASSERT_EQ(lines.size(), 3u) << r.body;
  auto first = json::parse(lines[0]);
  EXPECT_EQ(first["id"], "chatcmpl-w");
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["system_fingerprint"], "fp_w");
  auto& choice = first["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["delta"]["tool_calls"][0]["index"], 0);
  EXPECT_EQ(choice["delta"]["tool_calls"][0]["id"], "call_9");
  auto usage = json::parse(lines[1]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  EXPECT_EQ(lines[2], "[DONE]");
}

// A failure after the first chunk is one error line, then the stream ends.
TEST_F(passthrough, a_stream_broken_after_its_first_chunk_ends_with_one_error_line) {
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()}}};
  auto key = node.create_key("alice");
  mock.configure({{"mode", "cut_stream"}, {"chunk_delay_ms", 20}});
  json req = {{"messages", {{{"role", "user"}, {"content", "a reply long enough to cut in two"}}}},
              {"stream", true}};
  auto r = node.call("POST", "/v1/chat/completions", key, req.dump());
  ASSERT_EQ(r.status, 200) << describe(r);
  auto lines = data_lines(r.body);
  ASSERT_GE(lines.size(), 2u) << r.body;
  auto last = json::parse(lines.back(), nullptr, false);
  EXPECT_TRUE(last.contains("error")) << r.body;
  EXPECT_TRUE(last["error"].contains("param"));
  EXPECT_EQ(last["error"]["code"], "upstream_error");
  for (std::size_t i = 0; i + 1 < lines.size(); ++i)
    EXPECT_EQ(json::parse(lines[i])["object"], "chat.completion.chunk") << lines[i];
  EXPECT_EQ(mock.requests().size(), 1u) << "never retried after a chunk reached the client";
}

// PARLEY_LLM_MAX_RESPONSE_BYTES: a larger answer, or event, is a 502, not
// retried and never read whole.
TEST_F(passthrough, an_oversized_upstream_answer_is_cut_with_502) {
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_LLM_MAX_RESPONSE_BYTES", "65536"}}};
  auto key = node.create_key("alice");
  json huge = {{"id", "x"}, {"object", "chat.completion"}, {"model", "m"},
               {"choices", {{{"index", 0}, {"message", {{"role", "assistant"},
                                                        {"content", std::string(100000, 'z')}}},
                             {"finish_reason", "stop"}}}}};
  mock.configure({{"fail_status", 200}, {"fail_body", huge}});
  auto r = node.call("POST", "/v1/chat/completions", key,
                     R"({"messages":[{"role":"user","content":"big"}]})");
  EXPECT_EQ(r.status, 502) << describe(r);
  EXPECT_EQ(r.code(), "upstream_error");
  EXPECT_EQ(mock.requests().size(), 1u) << "not retried";
  EXPECT_EQ(r.js()["error"]["message"].get<std::string>().find("PARLEY_"), std::string::npos)
    << "the message speaks of the request, not of a setting: " << r.body;
  // One event over the cap in a stream.
  scripted_upstream up{sse_answer({chunk({{"content", std::string(100000, 'z')}})})};
  parley_node streamed{db, {{"PARLEY_LLM_BASE_URL", up.base_url()},
                            {"PARLEY_LLM_MAX_RESPONSE_BYTES", "65536"}}};
  auto s = streamed.call("POST", "/v1/chat/completions", streamed.create_key("bob"),
                         R"({"messages":[{"role":"user","content":"big"}],"stream":true})");
  EXPECT_EQ(s.status, 502) << describe(s);
  EXPECT_EQ(s.code(), "upstream_error");
  // A bad setting stops the node with a message naming it.
  auto bad = run_process(PARLEY_BIN, {}, {{"PARLEY_PG_URL", "postgresql://127.0.0.1:1/x"},
                                          {"PARLEY_DEV", "1"},
                                          {"PARLEY_LLM_MAX_RESPONSE_BYTES", "lots"}},
                         20s);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE((bad.out + bad.err).find("PARLEY_LLM_MAX_RESPONSE_BYTES"), std::string::npos)
    << describe(bad);
  auto bad2 = run_process(PARLEY_BIN, {}, {{"PARLEY_PG_URL", "postgresql://127.0.0.1:1/x"},
                                           {"PARLEY_DEV", "1"},
                                           {"PARLEY_GATEWAY_MAX_BODY_BYTES", "-5"}},
                          20s);
  EXPECT_NE(bad2.status, 0);
  EXPECT_NE((bad2.out + bad2.err).find("PARLEY_GATEWAY_MAX_BODY_BYTES"), std::string::npos)
    << describe(bad2);
}

// Session turns ask a streaming upstream for usage too; its usage chunk
// (choices: []) does not disturb the stream.
TEST_F(passthrough, session_streams_take_the_usage_chunk_in_their_stride) {
  scripted_upstream up{sse_answer({chunk({{"role", "assistant"}, {"content", "Hel"}}),
                                   chunk({{"content", "lo!"}}), chunk(json::object(), "stop"),
                                   usage_chunk})};
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", up.base_url()}}};
  auto key = node.create_key("alice");
  auto session = node.create_session(key);
  auto r = node.post_message(key, session, {{"content", "hi"}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << describe(r);
  auto at = r.body.find("event: done\ndata: ");
  ASSERT_NE(at, std::string::npos) << r.body;
  auto done = json::parse(r.body.substr(at + 18, r.body.find('\n', at + 18) - at - 18));
  EXPECT_EQ(done["reply"]["content"], "Hello!");
  EXPECT_EQ(r.body.find("event: error"), std::string::npos) << r.body;
  EXPECT_EQ(up.requests().back()["stream_options"]["include_usage"], true);
  // Unstreamed turns ask for no stream options (this upstream's answer to
  // them is no completion; only the request matters here).
  node.post_message(key, session, {{"content", "again"}});
  EXPECT_FALSE(up.requests().back().contains("stream_options"));
}

// Several nodes with a primary and a fallback upstream: every node relays,
// plain and streamed, also when the fallback answers.
TEST_F(passthrough, a_cluster_with_a_fallback_relays_on_every_node) {
  mock_llm primary, fallback;
  parley_cluster cluster{db, 2, {{"PARLEY_LLM_BASE_URL", primary.base_url()},
                                 {"PARLEY_LLM_FALLBACK_BASE_URL", fallback.base_url()},
                                 {"PARLEY_LLM_MODEL", "mock-model"}}};
  auto key = cluster[0].create_key("alice");
  json req = {{"messages", tool_history()}, {"tools", tools}, {"x_extra", 1}};
  for (int i = 0; i < cluster.size(); ++i) {
    for (bool primary_down : {false, true}) {
      if (primary_down)
        primary.configure({{"fail_status", 503}});
      else
        primary.reset();
      for (bool stream : {false, true}) {
        req["stream"] = stream;
        auto r = cluster[i].call("POST", "/v1/chat/completions", key, req.dump());
        ASSERT_EQ(r.status, 200) << "node " << i << " " << describe(r);
        auto& answered = primary_down ? fallback : primary;
        auto sent = answered.requests().back()["body"];
        EXPECT_EQ(sent["messages"], tool_history());
        EXPECT_EQ(sent["x_extra"], 1);
        if (!stream) {
          EXPECT_EQ(r.js()["choices"][0]["message"]["content"], "mock: 18 C, sunny");
          EXPECT_EQ(r.js()["id"].get<std::string>().rfind("chatcmpl-mock-", 0), 0u)
            << "the upstream's id: " << r.body;
          continue;
        }
        auto lines = data_lines(r.body);
        ASSERT_FALSE(lines.empty());
        EXPECT_EQ(lines.back(), "[DONE]");
        std::string text;
        for (std::size_t k = 0; k + 1 < lines.size(); ++k) {
          auto c = json::parse(lines[k]);
          EXPECT_EQ(c["id"].get<std::string>().rfind("chatcmpl-mock-", 0), 0u) << lines[k];
          if (!c["choices"].empty() && c["choices"][0]["delta"].contains("content"))
            text += c["choices"][0]["delta"]["content"].get<std::string>();
        }
        EXPECT_EQ(text, "mock: 18 C, sunny");
      }
    }
  }
}

// Bad bytes, bad JSON and slow clients never crash a node or hold it.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

void expect_alive(parley_node& node, const std::string& after) {
  EXPECT_TRUE(node.process().alive()) << "node died after: " << after << "\n"
                                      << node.process().log_tail();
  EXPECT_EQ(http(node.port(), "GET", "/healthz").status, 200) << after;
}

} // namespace

TEST(robustness, malformed_http_and_json_never_crash_the_node) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_HTTP_HEADER_TIMEOUT_MS", "1000"}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  auto auth = "Authorization: Bearer " + key + "\r\n";
  auto post = [&](const std::string& body, const std::string& extra = "") {
    return "POST /v1/sessions/" + id + "/messages HTTP/1.1\r\nHost: x\r\n" + auth + extra +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  };
  std::string huge_header = "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(100000, 'a') + "\r\n\r\n";
  std::string many_headers = "GET /healthz HTTP/1.1\r\n";
  for (int i = 0; i < 5000; ++i)
    many_headers += "X-H" + std::to_string(i) + ": v\r\n";
  many_headers += "\r\n";
  std::vector<std::pair<std::string, std::string>> cases = {
    {"garbage", "GARBAGE\r\n\r\n"},
    {"binary", std::string("\x00\x01\x02\xff\xfe\r\n\r\n", 9)},
    {"no version", "GET /healthz\r\n\r\n"},
    {"bad version", "GET /healthz HTTP/9.9\r\n\r\n"},
    {"huge header", huge_header},
    {"many headers", many_headers},
    {"short body then close", post("{\"content\":\"x\"}").substr(0, 200) + "\r\nContent-Length: 9999"},
    {"length mismatch", "POST /v1/sessions HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"},
    {"bad chunked", "POST /v1/sessions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n"},
    {"negative length", "POST /v1/sessions HTTP/1.1\r\nContent-Length: -5\r\n\r\n"},
    {"invalid utf-8", post("{\"content\":\"\xc3\x28\xff\"}")},
    {"deep json", post(std::string(10000, '[') + std::string(10000, ']'))},
    {"deep object", post("{\"content\":\"x\",\"m\":" + std::string(5000, '[') + "}")},
    {"nul bytes", post(std::string("{\"content\":\"a\0b\"}", 17))},
    {"json array", post("[1,2,3]")},
    {"huge number", post("{\"content\":1e999999}")},
    {"wrong auth scheme", "GET /v1/sessions HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n"},
  };
  for (auto& [name, bytes] : cases) {
    bool closed = false;
    auto reply = raw_exchange(node.port(), bytes, std::chrono::seconds(3), &closed);
    if (!reply.empty()) {
      EXPECT_EQ(reply.rfind("HTTP/1.1 ", 0), 0u) << name << ": " << reply.substr(0, 80);
    }
    EXPECT_EQ(reply.find(" 500 "), std::string::npos) << name << ": " << reply.substr(0, 200);
    expect_alive(node, name);
  }
  // Nothing of it was stored.
  EXPECT_EQ(node.call("GET", "/v1/sessions/" + id, key).js()["message_count"], 0);
}

TEST(robustness, slow_and_idle_clients_are_cut_off) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_HTTP_HEADER_TIMEOUT_MS", "500"},
                        {"PARLEY_HTTP_IDLE_TIMEOUT_MS", "700"}}};
  bool closed = false;
  auto start = std::chrono::steady_clock::now();
  raw_exchange(node.port(), "GET /heal", std::chrono::seconds(5), &closed);
  EXPECT_TRUE(closed) << "a stalled request line must be dropped";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));

  http_connection keep{node.port()};
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(keep.request("GET", "/healthz").status, 200) << "request " << i << " on one connection";
  EXPECT_TRUE(keep.closed_by_peer(std::chrono::seconds(3))) << "idle keep-alive must close";
  expect_alive(node, "timeouts");
}

// The answer to HEAD is the head alone (RFC 9110 section 9.3.2), with the
// Content-Length the body would have, so the next answer on the connection
// starts where the client expects it; a body after it broke the framing.
TEST(robustness, an_answer_to_head_has_no_body_and_the_connection_stays_in_step) {
  scratch_db db;
  parley_node node{db};
  auto reply = raw_exchange(node.port(),
                            "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            std::chrono::seconds(5));
  auto first_end = reply.find("\r\n\r\n");
  ASSERT_NE(first_end, std::string::npos) << reply;
  auto head = reply.substr(0, first_end);
  EXPECT_EQ(head.rfind("HTTP/1.1 ", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Length: "), std::string::npos) << head;
  auto second = reply.substr(first_end + 4);
  EXPECT_EQ(second.rfind("HTTP/1.1 200 ", 0), 0u)
      << "the GET's answer must follow the HEAD's head at once:\n" << reply;
  EXPECT_NE(second.find("\"status\":\"ok\""), std::string::npos) << second;
  expect_alive(node, "HEAD");
}

// A transfer coding Parley does not decode is 501 (RFC 9112 section 6.1),
// not a body read as if it were plain chunked; a field that may appear once,
// sent twice, is 400 (which one would count is a guess). Neither stores
// anything, and a lone header of each kind still works.
TEST(robustness, unknown_transfer_codings_and_repeated_single_headers_are_refused) {
  scratch_db db;
  parley_node node{db};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  auto auth = "Authorization: Bearer " + key + "\r\n";
  std::string body = R"({"content":"hello"})";
  auto chunked = [&](const std::string& codings) {
    char size[16];
    std::snprintf(size, sizeof size, "%zx", body.size());
    return "POST /v1/sessions/" + id + "/messages HTTP/1.1\r\nHost: x\r\n" + auth +
           "Connection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: " + codings + "\r\n\r\n" +
           size + "\r\n" + body + "\r\n0\r\n\r\n";
  };
  auto plain = [&](const std::string& path, const std::string& extra, const std::string& b) {
    return "POST " + path + " HTTP/1.1\r\nHost: x\r\n" + extra +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(b.size()) +
           "\r\n\r\n" + b;
  };
  auto status_of = [](const std::string& reply) {
    return reply.size() > 12 ? reply.substr(9, 3) : reply;
  };
  struct refused_case {
    std::string name, bytes, status, words;
  };
  std::vector<refused_case> cases = {
    {"gzip, chunked", chunked("gzip, chunked"), "501", "Transfer-Encoding 'gzip, chunked'"},
    {"deflate,chunked", chunked("deflate,chunked"), "501", "is not supported"},
    {"two Authorization headers",
     plain("/v1/sessions/" + id + "/messages", auth + "Authorization: Bearer other\r\n", body),
     "400", "more than one Authorization header"},
    {"two Idempotency-Key headers",
     plain("/v1/responses", auth + "Idempotency-Key: a\r\nIdempotency-Key: b\r\n",
           R"({"input":"hi"})"),
     "400", "more than one Idempotency-Key header"},
    {"two Content-Type headers",
     plain("/v1/sessions/" + id + "/messages", auth + "Content-Type: text/plain\r\n", body),
     "400", "more than one Content-Type header"},
  };
  for (auto& c : cases) {
    auto reply = raw_exchange(node.port(), c.bytes, std::chrono::seconds(5));
    EXPECT_EQ(status_of(reply), c.status) << c.name << ":\n" << reply;
    EXPECT_NE(reply.find(c.words), std::string::npos) << c.name << ":\n" << reply;
    EXPECT_NE(reply.find("\"code\":\"invalid_request\""), std::string::npos) << c.name;
    expect_alive(node, c.name);
  }
  EXPECT_EQ(node.call("GET", "/v1/sessions/" + id, key).js()["message_count"], 0);
  EXPECT_EQ(db.query("SELECT count(*) FROM messages")[0][0].as<int>(), 0);

  // Chunked alone (any case) is read as before.
  auto ok = raw_exchange(node.port(), chunked("Chunked"), std::chrono::seconds(5));
  EXPECT_EQ(status_of(ok), "200") << ok;
  EXPECT_EQ(node.call("GET", "/v1/sessions/" + id, key).js()["message_count"], 2);
}

// A client that writes its whole body before it reads (most do) gets the
// 413 that was answered from the headers: the node shuts its side and reads
// and drops the rest for a while (RFC 9112 section 9.6) instead of closing
// at once, which answered the unread bytes with a reset that failed the
// client's write and lost the answer. The same for a 431.
TEST(robustness, a_refused_request_still_being_sent_gets_its_answer) {
  scratch_db db;
  parley_node node{db};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  auto send_slowly_then_read = [&](const std::string& head, std::size_t body_bytes) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(node.port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    bool sent = send_all(fd, head);
    // The body in pieces, a little at a time, so that the answer comes
    // while the client is still writing (4 MiB: more than the socket
    // buffers hold).
    std::string piece(64 * 1024, 'x');
    for (std::size_t off = 0; sent && off < body_bytes; off += piece.size()) {
      sent = send_all(fd, piece);
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    ::shutdown(fd, SHUT_WR);
    std::string reply;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
      reply.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    return std::make_pair(sent, reply);
  };
  const std::size_t body = 4 * 1024 * 1024;
  auto [sent, reply] = send_slowly_then_read(
    "POST /v1/sessions/" + id + "/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
      key + "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body) +
      "\r\n\r\n",
    body);
  EXPECT_TRUE(sent) << "the node reset the connection while the body was being sent";
  EXPECT_EQ(reply.rfind("HTTP/1.1 413 ", 0), 0u) << reply.substr(0, 200);
  EXPECT_NE(reply.find("payload_too_large"), std::string::npos) << reply.substr(0, 400);

  // Headers over the limit, the rest of them still coming.
  auto [sent_h, reply_h] = send_slowly_then_read(
    "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20 * 1024, 'a'), body);
  EXPECT_TRUE(sent_h) << "the node reset the connection while the headers were being sent";
  EXPECT_EQ(reply_h.rfind("HTTP/1.1 431 ", 0), 0u) << reply_h.substr(0, 200);
  EXPECT_EQ(node.call("GET", "/v1/sessions/" + id, key).js()["message_count"], 0);
  expect_alive(node, "refused while sending");
}

TEST(robustness, sigterm_finishes_in_flight_turns_and_exits_zero) {
  scratch_db db;
  mock_llm mock;
  mock.configure({{"latency_ms", 800}});
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  http_result r;
  std::thread t{[&] { r = node.post_message(key, id, {{"content", "in flight"}}); }};
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(node.stop(), 0);
  t.join();
  EXPECT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(db.query("SELECT count(*) FROM messages")[0][0].as<int>(), 2);
}

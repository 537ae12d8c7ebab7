// net::http_client against real mock-llm processes, over http and over https
// with a private CA made at test time: certificate and host name
// verification, keep-alive reuse, the stale-connection retry, the deadline of
// a queued call, and streaming (incremental delivery, cut streams, hangs,
// error bodies). A scripted server covers the event-stream edge cases the
// mock never sends (CR/CRLF line ends, comments, split lines, multi-line data,
// a close-delimited body).

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "net/http_client.hpp"
#include "net/io_runtime.hpp"
#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;
using parley::net::client_options;
using parley::net::fetch_result;
using parley::net::fetch_status;
using parley::net::http_client;
using parley::net::stream_callbacks;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

long long ms(steady::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

/// A log file of this run, emptied first: ports (and so names) recur across
/// runs, and a stale "listening on" would pass for the new process'.
std::string log_path(const std::string& name) {
  ::mkdir("it-logs", 0755);
  auto path = "it-logs/" + name;
  std::ofstream{path, std::ios::trunc};
  return path;
}

const char* to_string(fetch_status s) {
  switch (s) {
  case fetch_status::ok:
    return "ok";
  case fetch_status::connect_error:
    return "connect_error";
  case fetch_status::timeout:
    return "timeout";
  case fetch_status::io_error:
    return "io_error";
  case fetch_status::overloaded:
    return "overloaded";
  case fetch_status::too_large:
    return "too_large";
  }
  return "?";
}

std::string describe(const fetch_result& r) {
  return std::string{"status="} + to_string(r.status) + " http=" + std::to_string(r.http_status) +
         " events=" + std::to_string(r.events) + " error='" + r.error + "' body='" +
         r.body.substr(0, 300) + "'";
}

/// A private directory, removed at the end.
class scratch_dir {
public:
  scratch_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "parley-upc-XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

/// A private CA and server certificates it signs, made with the openssl CLI
/// (P-256 keys: fast to generate).
class test_pki {
public:
  explicit test_pki(const scratch_dir& dir) : dir_(dir), ca_(dir.file("ca.pem")) {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        " -keyout " +
        dir_.file("ca.key") + " -out " + ca_ +
        " -days 2 -subj '/CN=Parley test CA'"
        " -addext 'basicConstraints=critical,CA:TRUE'"
        " -addext 'keyUsage=critical,keyCertSign,cRLSign'");
  }

  /// The CA certificate (PEM).
  const std::string& ca() const { return ca_; }

  struct leaf {
    std::string cert, key;
  };
  /// A server certificate for the subjectAltName list `san`.
  leaf issue(const std::string& name, const std::string& san) const {
    leaf l{dir_.file(name + ".pem"), dir_.file(name + ".key")};
    auto csr = dir_.file(name + ".csr");
    auto ext = dir_.file(name + ".ext");
    std::ofstream{ext} << "subjectAltName=" << san << "\nbasicConstraints=CA:FALSE\n"
                       << "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n";
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + l.key +
        " -out " + csr + " -subj '/CN=" + name + "'");
    run("openssl x509 -req -in " + csr + " -CA " + ca_ + " -CAkey " + dir_.file("ca.key") +
        " -CAcreateserial -out " + l.cert + " -days 2 -extfile " + ext);
    return l;
  }

private:
  void run(const std::string& cmd) const {
    auto out = dir_.file("openssl.log");
    if (std::system((cmd + " >>" + out + " 2>&1").c_str()) != 0) {
      std::ifstream in{out};
      std::stringstream text;
      text << in.rdbuf();
      throw std::runtime_error("openssl failed (is the openssl CLI installed?): " + cmd + "\n" +
                               text.str());
    }
  }

  const scratch_dir& dir_;
  std::string ca_;
};

enum class scheme { http, https };

struct control_result {
  int status = 0; ///< 0: no answer (see error)
  std::string body;
  std::string error;
};

/// A mock-llm process on 127.0.0.1, plain or TLS, and its control API.
class mock_upstream {
public:
  /// `tls`: certificate and key to serve HTTPS with; `ca` verifies it for
  /// the control calls.
  mock_upstream(std::optional<test_pki::leaf> tls, std::string ca)
    : tls_(std::move(tls)), ca_(std::move(ca)), port_(free_port()) {
    start();
  }

  void start() {
    std::vector<std::string> args{"--host", "127.0.0.1", "--port", std::to_string(port_)};
    if (tls_)
      args.insert(args.end(), {"--tls-cert", tls_->cert, "--tls-key", tls_->key});
    auto log = log_path("upstream-client-mock-" + std::to_string(port_) + "-" +
                        std::to_string(++starts_) + ".log");
    proc_ = child_process(MOCK_LLM_BIN, args, {}, log);
    if (!wait_for([&] { return proc_.log_tail().find("listening on") != std::string::npos; }, 10s))
      throw std::runtime_error("mock-llm did not start:\n" + proc_.log_tail());
  }
  void stop() { proc_.terminate(5s); }

  unsigned short port() const { return port_; }
  /// scheme://host:port, no path (the routes are /v1/...).
  std::string url(const std::string& host = "127.0.0.1") const {
    return std::string{tls_ ? "https" : "http"} + "://" + host + ":" + std::to_string(port_);
  }
  std::string log_tail() const { return proc_.log_tail(); }

  void configure(const json& cfg) const {
    auto r = request(http::verb::post, "/_mock/config", cfg.dump());
    if (r.status != 200)
      throw std::runtime_error("mock config rejected: " + std::to_string(r.status) + " " + r.body +
                               r.error);
  }
  /// The logged chat requests (each with its `connection` number).
  json requests() const {
    auto r = request(http::verb::get, "/_mock/requests", "");
    auto doc = json::parse(r.body, nullptr, false);
    if (r.status != 200 || !doc.is_object())
      throw std::runtime_error("GET /_mock/requests: " + std::to_string(r.status) + r.error);
    return doc["data"];
  }

  /// One request on a fresh connection (verifying the mock's certificate
  /// with the test CA); everything ends within 10 s.
  control_result request(http::verb method, const std::string& target,
                         const std::string& body) const {
    asio::io_context ioc;
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.keep_alive(false);
    req.body() = body;
    req.prepare_payload();
    control_result out;
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    const tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), port_};
    auto exchange = [&](auto& stream, beast::tcp_stream& lowest, auto handshake) {
      lowest.expires_after(10s);
      lowest.async_connect(ep, [&](beast::error_code ec) {
        if (ec) {
          out.error = "connect: " + ec.message();
          return;
        }
        handshake([&](beast::error_code ec2) {
          if (ec2) {
            out.error = "handshake: " + ec2.message();
            return;
          }
          http::async_write(stream, req, [&](beast::error_code ec3, std::size_t) {
            if (ec3) {
              out.error = "write: " + ec3.message();
              return;
            }
            http::async_read(stream, buf, res, [&](beast::error_code ec4, std::size_t) {
              if (ec4) {
                out.error = "read: " + ec4.message();
                return;
              }
              out.status = res.result_int();
              out.body = res.body();
            });
          });
        });
      });
      ioc.run();
    };
    if (tls_) {
      ssl::context ctx{ssl::context::tls_client};
      ctx.load_verify_file(ca_);
      ctx.set_verify_mode(ssl::verify_peer);
      beast::ssl_stream<beast::tcp_stream> s{ioc, ctx};
      exchange(s, beast::get_lowest_layer(s),
               [&](auto done) { s.async_handshake(ssl::stream_base::client, done); });
    } else {
      beast::tcp_stream s{ioc};
      exchange(s, s, [](auto done) { done(beast::error_code{}); });
    }
    return out;
  }

private:
  std::optional<test_pki::leaf> tls_;
  std::string ca_;
  unsigned short port_;
  int starts_ = 0;
  child_process proc_;
};

/// The client under test on its own io_runtime (two threads, like a node's).
class client_under_test {
public:
  client_under_test(const std::string& url, client_options opts = {}) : io_(2) {
    std::string err;
    auto u = parley::net::parse_upstream_url(url, err);
    if (!u)
      throw std::runtime_error("bad url " + url + ": " + err);
    client_ = std::make_unique<http_client>(io_, std::move(*u), std::move(opts));
  }
  ~client_under_test() {
    client_.reset();
    io_.stop();
  }
  http_client& operator*() { return *client_; }
  http_client* operator->() { return client_.get(); }

private:
  parley::net::io_runtime io_;
  std::unique_ptr<http_client> client_;
};

json chat(const std::string& content, bool stream) {
  return {{"model", "gpt-test"},
          {"stream", stream},
          {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
}

/// post_json from the test thread; waits for the callback (never forever).
fetch_result call_json(http_client& c, const json& body, milliseconds timeout) {
  auto done = std::make_shared<std::promise<fetch_result>>();
  auto fut = done->get_future();
  c.post_json("/v1/chat/completions", body.dump(), "sk-test", timeout,
              [done](fetch_result r) { done->set_value(std::move(r)); });
  if (fut.wait_for(timeout + 10s) != std::future_status::ready) {
    ADD_FAILURE() << "post_json never called back";
    fetch_result r;
    r.error = "no callback";
    return r;
  }
  return fut.get();
}

/// What a streamed call delivered, with arrival times.
struct stream_run {
  std::vector<std::string> events;
  std::vector<steady::time_point> event_at;
  steady::time_point started, done_at;
  fetch_result result;
  int done_calls = 0;
  int events_after_done = 0;

  long long first_event_ms() const { return events.empty() ? -1 : ms(event_at.front() - started); }
  long long total_ms() const { return ms(done_at - started); }
  long long span_ms() const { return events.empty() ? 0 : ms(event_at.back() - event_at.front()); }
  /// The concatenated `delta.content` of the chat chunks.
  std::string content() const {
    std::string text;
    for (auto& e : events) {
      auto doc = json::parse(e, nullptr, false);
      if (doc.is_object() && doc["choices"].is_array() && !doc["choices"].empty() &&
          doc["choices"][0]["delta"].contains("content"))
        text += doc["choices"][0]["delta"]["content"].get<std::string>();
    }
    return text;
  }
};

/// post_json_stream from the test thread; waits for on_done (never forever)
/// and a little longer, to catch a second on_done or a late event.
stream_run call_stream(http_client& c, const json& body, milliseconds timeout,
                       const std::string& path = "/v1/chat/completions") {
  struct shared {
    std::mutex m;
    stream_run run;
    std::promise<void> done;
  };
  auto st = std::make_shared<shared>();
  auto fut = st->done.get_future();
  st->run.started = steady::now();
  stream_callbacks cb;
  cb.on_event = [st](std::string_view data) {
    auto now = steady::now();
    std::lock_guard<std::mutex> lock{st->m};
    st->run.events.emplace_back(data);
    st->run.event_at.push_back(now);
    if (st->run.done_calls > 0)
      ++st->run.events_after_done;
  };
  cb.on_done = [st](fetch_result r) {
    auto now = steady::now();
    std::lock_guard<std::mutex> lock{st->m};
    if (st->run.done_calls++ == 0) {
      st->run.result = std::move(r);
      st->run.done_at = now;
      st->done.set_value();
    }
  };
  c.post_json_stream(path, body.dump(), "sk-test", timeout, std::move(cb));
  if (fut.wait_for(timeout + 10s) != std::future_status::ready) {
    ADD_FAILURE() << "post_json_stream never called on_done";
    std::lock_guard<std::mutex> lock{st->m};
    return st->run;
  }
  std::this_thread::sleep_for(50ms);
  std::lock_guard<std::mutex> lock{st->m};
  return st->run;
}

// "mock: one two three" in 4-character pieces: 5 content chunks, the finish
// chunk and [DONE].
const std::string short_prompt = "one two three";
constexpr std::size_t short_prompt_events = 7;

/// One mock upstream per test, plain or TLS (then with a client that trusts
/// the test CA through client_options::ca_file).
class upstream_client : public ::testing::TestWithParam<scheme> {
protected:
  void SetUp() override {
    if (GetParam() == scheme::https) {
      pki_.emplace(dir_);
      mock_.emplace(pki_->issue("server", "IP:127.0.0.1,DNS:localhost"), pki_->ca());
    } else {
      mock_.emplace(std::nullopt, "");
    }
  }
  client_options opts() const {
    client_options o;
    if (pki_)
      o.ca_file = pki_->ca();
    return o;
  }
  mock_upstream& mock() { return *mock_; }

  /// The `connection` numbers of the logged chat requests, in order.
  std::vector<int> connections() {
    std::vector<int> out;
    for (auto& r : mock().requests())
      out.push_back(r["connection"].get<int>());
    return out;
  }

  scratch_dir dir_;
  std::optional<test_pki> pki_;
  std::optional<mock_upstream> mock_;
};

const char* name(scheme s) {
  return s == scheme::https ? "https" : "http";
}

std::string scheme_name(const ::testing::TestParamInfo<scheme>& info) {
  return name(info.param);
}

} // namespace

TEST_P(upstream_client, post_json_round_trip) {
  client_under_test c{mock().url(), opts()};
  auto r = call_json(*c, chat("hello", false), 10s);
  ASSERT_EQ(r.status, fetch_status::ok) << describe(r) << "\n" << mock().log_tail();
  EXPECT_EQ(r.http_status, 200u);
  auto doc = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << r.body;
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "mock: hello");
  EXPECT_EQ(r.events, 0u);
  auto logged = mock().requests();
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0]["authorization"], "Bearer sk-test");
  EXPECT_EQ(logged[0]["path"], "/v1/chat/completions");
}

TEST_P(upstream_client, an_answer_over_the_body_limit_is_too_large_and_not_kept) {
  json big = json::parse(R"({"choices":[{"message":{"content":""}}]})");
  big["choices"][0]["message"]["content"] = std::string(100000, 'z');
  mock().configure({{"fail_status", 200}, {"fail_body", big}});
  auto o = opts();
  o.body_limit = 65536;
  client_under_test c{mock().url(), o};
  for (int i = 0; i < 2; ++i) {
    auto r = call_json(*c, chat("big", false), 10s);
    EXPECT_EQ(r.status, fetch_status::too_large) << describe(r);
    EXPECT_TRUE(r.body.empty());
  }
}

TEST_P(upstream_client, keep_alive_reuses_one_connection_also_after_a_clean_stream) {
  client_under_test c{mock().url(), opts()};
  for (int i = 0; i < 5; ++i) {
    auto r = call_json(*c, chat("call " + std::to_string(i), false), 10s);
    ASSERT_EQ(r.status, fetch_status::ok) << describe(r);
  }
  auto s = call_stream(*c, chat(short_prompt, true), 10s);
  ASSERT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  auto r = call_json(*c, chat("after the stream", false), 10s);
  ASSERT_EQ(r.status, fetch_status::ok) << describe(r);
  auto conns = connections();
  ASSERT_EQ(conns.size(), 7u);
  for (auto n : conns)
    EXPECT_EQ(n, conns[0]) << "every call, the stream included, went over the first connection";
}

TEST_P(upstream_client, a_stale_pooled_connection_after_an_upstream_restart_is_retried) {
  client_under_test c{mock().url(), opts()};
  auto r = call_json(*c, chat("before", false), 10s);
  ASSERT_EQ(r.status, fetch_status::ok) << describe(r);
  mock().stop();
  mock().start(); // same port; the pooled connection now leads nowhere
  r = call_json(*c, chat("after", false), 10s);
  ASSERT_EQ(r.status, fetch_status::ok) << describe(r);
  auto s = call_stream(*c, chat(short_prompt, true), 10s);
  EXPECT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  auto logged = mock().requests();
  ASSERT_EQ(logged.size(), 2u) << "the new process saw the retried call once, then the stream";
  EXPECT_EQ(logged[0]["connection"], logged[1]["connection"]);
}

TEST_P(upstream_client, streaming_delivers_each_event_as_it_arrives) {
  mock().configure({{"chunk_delay_ms", 100}});
  client_under_test c{mock().url(), opts()};
  auto s = call_stream(*c, chat(short_prompt, true), 20s);
  ASSERT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  EXPECT_EQ(s.result.http_status, 200u);
  EXPECT_TRUE(s.result.body.empty());
  EXPECT_EQ(s.done_calls, 1);
  EXPECT_EQ(s.events_after_done, 0);
  ASSERT_EQ(s.events.size(), short_prompt_events);
  EXPECT_EQ(s.result.events, short_prompt_events);
  EXPECT_EQ(s.content(), "mock: " + short_prompt);
  EXPECT_EQ(s.events.back(), "[DONE]");
  auto n = static_cast<long long>(s.events.size());
  EXPECT_GE(s.span_ms(), (n - 1) * 80) << "events arrived together: the body was buffered";
  EXPECT_LT(s.first_event_ms(), s.total_ms() - 400)
      << "the first event must arrive well before the stream ends";
  long long min_gap = 1 << 30;
  for (std::size_t i = 1; i < s.event_at.size(); ++i)
    min_gap = std::min(min_gap, ms(s.event_at[i] - s.event_at[i - 1]));
  std::cout << "[ figures ] " << name(GetParam()) << ": first event after " << s.first_event_ms()
            << " ms, last after " << ms(s.event_at.back() - s.started) << " ms, on_done after "
            << s.total_ms() << " ms, smallest gap " << min_gap << " ms (chunk delay 100 ms)\n";
}

TEST_P(upstream_client, a_cut_stream_ends_with_io_error_after_some_events) {
  mock().configure({{"mode", "cut_stream"}, {"fail_count", 1}, {"chunk_delay_ms", 20}});
  client_under_test c{mock().url(), opts()};
  auto s = call_stream(*c, chat("one two three four five six seven eight", true), 10s);
  EXPECT_EQ(s.result.status, fetch_status::io_error) << describe(s.result);
  EXPECT_GT(s.result.events, 0u);
  EXPECT_EQ(s.result.events, s.events.size());
  EXPECT_EQ(s.done_calls, 1);
  ASSERT_FALSE(s.events.empty());
  EXPECT_NE(s.events.back(), "[DONE]");
  EXPECT_EQ(s.result.http_status, 0u);
  // The broken connection was closed, not pooled: the next call opens another.
  auto r = call_json(*c, chat("next", false), 10s);
  ASSERT_EQ(r.status, fetch_status::ok) << describe(r);
  auto conns = connections();
  ASSERT_EQ(conns.size(), 2u);
  EXPECT_NE(conns[0], conns[1]);
}

TEST_P(upstream_client, a_hanging_upstream_times_out_within_the_bound) {
  mock().configure({{"mode", "hang"}, {"fail_count", 2}});
  client_under_test c{mock().url(), opts()};
  auto s = call_stream(*c, chat("hello", true), 1000ms);
  EXPECT_EQ(s.result.status, fetch_status::timeout) << describe(s.result);
  EXPECT_EQ(s.result.events, 0u);
  EXPECT_GE(s.total_ms(), 950);
  EXPECT_LE(s.total_ms(), 2500);
  EXPECT_EQ(s.done_calls, 1);

  auto started = steady::now();
  auto r = call_json(*c, chat("hello", false), 1000ms);
  auto took = ms(steady::now() - started);
  EXPECT_EQ(r.status, fetch_status::timeout) << describe(r);
  EXPECT_GE(took, 950);
  EXPECT_LE(took, 2500);

  auto ok = call_json(*c, chat("after", false), 10s);
  ASSERT_EQ(ok.status, fetch_status::ok) << describe(ok);
  auto conns = connections();
  ASSERT_EQ(conns.size(), 3u);
  EXPECT_NE(conns[0], conns[1]);
  EXPECT_NE(conns[1], conns[2]) << "a timed-out connection is closed, not pooled";
}

TEST_P(upstream_client, the_deadline_covers_the_whole_stream) {
  mock().configure({{"chunk_delay_ms", 300}});
  client_under_test c{mock().url(), opts()};
  auto s = call_stream(*c, chat(short_prompt, true), 1000ms); // the stream needs 1.8 s
  EXPECT_EQ(s.result.status, fetch_status::timeout) << describe(s.result);
  EXPECT_GE(s.result.events, 2u);
  EXPECT_LE(s.result.events, 5u);
  EXPECT_EQ(s.result.events, s.events.size());
  EXPECT_GE(s.total_ms(), 950);
  EXPECT_LE(s.total_ms(), 2500);
}

TEST_P(upstream_client, an_error_status_delivers_its_body_and_no_events) {
  const std::string body = R"({"error":{"message":"boom","type":"server_error","code":"x"}})";
  mock().configure(
      {{"fail_status", 500}, {"fail_count", 1}, {"fail_body", body}, {"retry_after", 7}});
  client_under_test c{mock().url(), opts()};
  auto s = call_stream(*c, chat("hello", true), 10s);
  ASSERT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  EXPECT_EQ(s.result.http_status, 500u);
  EXPECT_EQ(s.result.body, body);
  EXPECT_EQ(s.result.retry_after, "7");
  EXPECT_EQ(s.result.events, 0u);
  EXPECT_TRUE(s.events.empty());
  EXPECT_EQ(s.done_calls, 1);
  // A complete error answer leaves the connection reusable.
  auto next = call_stream(*c, chat(short_prompt, true), 10s);
  EXPECT_EQ(next.result.status, fetch_status::ok) << describe(next.result);
  EXPECT_EQ(next.events.size(), short_prompt_events);
  auto conns = connections();
  ASSERT_EQ(conns.size(), 2u);
  EXPECT_EQ(conns[0], conns[1]);
}

TEST_P(upstream_client, a_2xx_answer_that_is_no_event_stream_comes_back_as_the_body) {
  client_under_test c{mock().url(), opts()};
  auto s = call_stream(*c, chat("plain", false), 10s);
  ASSERT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  EXPECT_EQ(s.result.http_status, 200u);
  EXPECT_TRUE(s.events.empty());
  auto doc = json::parse(s.result.body, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << s.result.body;
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "mock: plain");
}

TEST_P(upstream_client, a_queued_call_times_out_at_its_own_deadline_and_a_full_queue_overloads) {
  mock().configure({{"mode", "hang"}, {"fail_count", 1}});
  auto o = opts();
  o.pool_size = 1;
  o.queue_limit = 1;
  client_under_test c{mock().url(), o};
  // The only connection hangs for 3 s.
  auto blocked =
      std::async(std::launch::async, [&] { return call_json(*c, chat("a", false), 3s); });
  ASSERT_TRUE(wait_for([&] { return mock().requests().size() == 1; }, 5s));
  auto started = steady::now();
  auto queued =
      std::async(std::launch::async, [&] { return call_json(*c, chat("b", false), 500ms); });
  std::this_thread::sleep_for(100ms);
  auto over = call_json(*c, chat("c", false), 500ms); // the queue (1) is full
  EXPECT_EQ(over.status, fetch_status::overloaded) << describe(over);
  auto q = queued.get();
  auto took = ms(steady::now() - started);
  EXPECT_EQ(q.status, fetch_status::timeout) << describe(q);
  EXPECT_NE(q.error.find("waiting for an upstream connection"), std::string::npos) << q.error;
  EXPECT_GE(took, 450);
  EXPECT_LE(took, 1500) << "the queued call must not wait for the hanging one";
  EXPECT_EQ(blocked.get().status, fetch_status::timeout);
  EXPECT_EQ(mock().requests().size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(schemes, upstream_client, ::testing::Values(scheme::http, scheme::https),
                         scheme_name);

// --- https only: what the certificate checks reject -------------------------

class upstream_client_tls : public ::testing::Test {
protected:
  scratch_dir dir_;
  test_pki pki_{dir_};
};

TEST_F(upstream_client_tls, a_host_name_is_verified_by_its_dns_name_and_sni) {
  mock_upstream mock{pki_.issue("server", "IP:127.0.0.1,DNS:localhost"), pki_.ca()};
  client_options o;
  o.ca_file = pki_.ca();
  client_under_test c{mock.url("localhost"), o};
  auto r = call_json(*c, chat("by name", false), 10s);
  ASSERT_EQ(r.status, fetch_status::ok) << describe(r) << "\n" << mock.log_tail();
  auto s = call_stream(*c, chat(short_prompt, true), 10s);
  EXPECT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  EXPECT_EQ(s.events.size(), short_prompt_events);
}

TEST_F(upstream_client_tls, without_the_private_ca_verification_fails_with_connect_error) {
  mock_upstream mock{pki_.issue("server", "IP:127.0.0.1,DNS:localhost"), pki_.ca()};
  client_under_test c{mock.url(), client_options{}}; // the system store only
  auto started = steady::now();
  auto r = call_json(*c, chat("hello", false), 10s);
  EXPECT_EQ(r.status, fetch_status::connect_error) << describe(r);
  EXPECT_NE(r.error.find("certificate verification failed"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("local issuer"), std::string::npos) << r.error;
  EXPECT_LT(ms(steady::now() - started), 5000);
  auto s = call_stream(*c, chat("hello", true), 10s);
  EXPECT_EQ(s.result.status, fetch_status::connect_error) << describe(s.result);
  EXPECT_EQ(s.result.events, 0u);
  EXPECT_EQ(mock.requests().size(), 0u) << "nothing may be sent to an unverified peer";
  std::cout << "[ figures ] error: " << r.error << "\n";
}

TEST_F(upstream_client_tls, a_certificate_for_another_host_is_rejected) {
  mock_upstream mock{pki_.issue("other", "DNS:other.example"), pki_.ca()};
  client_options o;
  o.ca_file = pki_.ca();
  client_under_test c{mock.url(), o};
  auto r = call_json(*c, chat("hello", false), 10s);
  EXPECT_EQ(r.status, fetch_status::connect_error) << describe(r);
  EXPECT_NE(r.error.find("does not match host '127.0.0.1'"), std::string::npos) << r.error;
}

TEST_F(upstream_client_tls, an_unreadable_ca_file_is_refused_at_construction) {
  client_options o;
  o.ca_file = dir_.file("missing.pem");
  EXPECT_THROW(client_under_test("https://127.0.0.1:1", o), std::invalid_argument);
  // http upstreams never read it.
  EXPECT_NO_THROW(client_under_test("http://127.0.0.1:1", o));
}

TEST(upstream_client_url, schemes_default_ports_and_ipv6) {
  std::string err;
  auto a = parley::net::parse_upstream_url("https://api.example.com/v1/", err);
  ASSERT_TRUE(a) << err;
  EXPECT_EQ(a->scheme, "https");
  EXPECT_EQ(a->host, "api.example.com");
  EXPECT_EQ(a->port, "443");
  EXPECT_EQ(a->base_path, "/v1");
  auto b = parley::net::parse_upstream_url("http://10.0.0.1", err);
  ASSERT_TRUE(b) << err;
  EXPECT_EQ(b->port, "80");
  auto c = parley::net::parse_upstream_url("HTTPS://[::1]:8443/x", err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->scheme, "https");
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, "8443");
  EXPECT_FALSE(parley::net::parse_upstream_url("ftp://x", err));
  EXPECT_FALSE(parley::net::parse_upstream_url("https://x:abc", err));
  EXPECT_FALSE(parley::net::parse_upstream_url("https://[::1", err));
}

// --- event-stream parsing against a scripted server -------------------------

namespace {

/// Accepts one connection on a free port (TLS when given a certificate),
/// reads one request, then writes `head` and each of `pieces` separately with
/// a pause between them (chunked when asked), and ends: plain TCP half-closes;
/// TLS sends close_notify and waits for the client's (ending::clean) or just
/// half-closes the TCP connection (ending::truncated). Everything ends within 20 s.
class scripted_server {
public:
  enum class ending { clean, truncated };

  scripted_server(std::string head, std::vector<std::string> pieces, bool chunked,
                  std::optional<test_pki::leaf> tls = std::nullopt, ending end = ending::clean)
    : port_(free_port()), head_(std::move(head)), pieces_(std::move(pieces)), chunked_(chunked),
      tls_(std::move(tls)), end_(end),
      acceptor_(ioc_, tcp::endpoint{asio::ip::make_address("127.0.0.1"), port_}) {
    thread_ = std::thread([this] { serve(); });
  }
  ~scripted_server() { join(); }
  std::string url() const {
    return std::string{tls_ ? "https" : "http"} + "://127.0.0.1:" + std::to_string(port_);
  }
  /// The Accept header of the request (after the exchange).
  std::string accept() {
    join();
    return accept_;
  }
  /// TLS, ending::clean: whether the client answered close_notify with its own.
  bool close_notify_returned() {
    join();
    return close_notify_returned_;
  }

private:
  using tls_socket = ssl::stream<tcp::socket&>;

  void join() {
    if (thread_.joinable())
      thread_.join();
  }

  std::string frame(const std::string& piece) const {
    if (!chunked_)
      return piece;
    std::ostringstream s;
    s << std::hex << piece.size() << "\r\n" << piece << "\r\n";
    return s.str();
  }

  void serve() {
    out_.push_back(head_);
    for (auto& p : pieces_)
      out_.push_back(frame(p));
    if (chunked_)
      out_.push_back("0\r\n\r\n");
    std::optional<ssl::context> ctx;
    std::optional<tls_socket> secure;
    acceptor_.async_accept(sock_, [&](beast::error_code ec) {
      if (ec)
        return;
      sock_.set_option(tcp::no_delay{true}, ec);
      if (!tls_)
        return respond(sock_);
      ctx.emplace(ssl::context::tls_server);
      ctx->use_certificate_chain_file(tls_->cert);
      ctx->use_private_key_file(tls_->key, ssl::context::pem);
      secure.emplace(sock_, *ctx);
      secure->async_handshake(ssl::stream_base::server, [&](beast::error_code ec2) {
        if (!ec2)
          respond(*secure);
      });
    });
    ioc_.run_for(20s);
  }

  template <class Stream>
  void respond(Stream& s) {
    http::async_read(s, buf_, req_, [this, &s](beast::error_code ec, std::size_t) {
      if (ec)
        return;
      accept_ = std::string{req_[http::field::accept]};
      write_next(s);
    });
  }

  template <class Stream>
  void write_next(Stream& s) {
    if (next_ == out_.size())
      return finish(s);
    asio::async_write(s, asio::buffer(out_[next_++]),
                      [this, &s](beast::error_code ec, std::size_t) {
                        if (ec)
                          return;
                        pause_.expires_after(30ms);
                        pause_.async_wait([this, &s](beast::error_code) { write_next(s); });
                      });
  }

  void finish(tcp::socket&) {
    beast::error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_send, ignored);
  }

  void finish(tls_socket& s) {
    if (end_ == ending::truncated)
      return finish(sock_);
    s.async_shutdown(
        [this](beast::error_code ec) { close_notify_returned_ = !ec || ec == asio::error::eof; });
  }

  unsigned short port_;
  std::string head_;
  std::vector<std::string> pieces_;
  bool chunked_;
  std::optional<test_pki::leaf> tls_;
  ending end_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  tcp::socket sock_{ioc_};
  beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  asio::steady_timer pause_{ioc_};
  std::vector<std::string> out_;
  std::size_t next_ = 0;
  std::string accept_;
  bool close_notify_returned_ = false;
  std::thread thread_;
};

// Each piece reaches the client in a read of its own.
const std::vector<std::string> tricky_events = {
    ": a comment line\r\n",
    "data: first\r", // CR ends the line; its LF comes in the next read
    "\n\r\n",
    "data: multi\ndata:",
    " line\n",
    "\n",
    "event: delta\nid: 7\nretry: 100\ndata:no-space\n\n",
    "data: crlf\r\n\r\n",
    "data\n\n", // a field name alone: an empty data line
    "\n\n",     // blank lines without data: no event
    "da",
    "ta: CR only\r\r",
    "data: {\"json\": \"x\"}\n\n",
    "data: never finished\n", // no blank line before the end: dropped
};
const std::vector<std::string> tricky_expected = {
    "first", "multi\nline", "no-space", "crlf", "", "CR only", "{\"json\": \"x\"}"};

} // namespace

TEST(upstream_client_sse, a_close_delimited_body_with_mixed_line_ends_splits_into_events) {
  scripted_server server{
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
      tricky_events, false};
  client_under_test c{server.url()};
  auto s = call_stream(*c, chat("x", true), 10s);
  ASSERT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  EXPECT_EQ(s.result.http_status, 200u);
  EXPECT_EQ(s.events, tricky_expected);
  EXPECT_EQ(s.result.events, tricky_expected.size());
  EXPECT_EQ(s.done_calls, 1);
  EXPECT_EQ(server.accept(), "text/event-stream");
}

TEST(upstream_client_sse, a_chunked_body_with_events_split_across_chunks_splits_into_events) {
  scripted_server server{"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n",
                         tricky_events, true};
  client_under_test c{server.url()};
  auto s = call_stream(*c, chat("x", true), 10s);
  ASSERT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  EXPECT_EQ(s.events, tricky_expected);
  EXPECT_EQ(s.result.events, tricky_expected.size());
  EXPECT_GE(s.span_ms(), 200) << "events must be delivered as their pieces arrive";
}

TEST(upstream_client_sse, an_event_beyond_the_body_limit_is_too_large) {
  scripted_server server{
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
      {"data: small\n\n", "data: " + std::string(4096, 'x'), "\n\n"},
      false};
  client_options o;
  o.body_limit = 1024;
  client_under_test c{server.url(), o};
  auto s = call_stream(*c, chat("x", true), 10s);
  EXPECT_EQ(s.result.status, fetch_status::too_large) << describe(s.result);
  EXPECT_EQ(s.result.events, 1u);
  EXPECT_EQ(s.events, std::vector<std::string>{"small"});
}

TEST(upstream_client_sse, a_plain_answer_beyond_the_body_limit_is_too_large) {
  for (auto head : {std::string{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                "Content-Length: 4096\r\n\r\n"},
                    std::string{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                "Connection: close\r\n\r\n"}}) {
    scripted_server server{head, {std::string(4096, 'x')}, false};
    client_options o;
    o.body_limit = 1024;
    client_under_test c{server.url(), o};
    auto r = call_json(*c, chat("x", false), 10s);
    EXPECT_EQ(r.status, fetch_status::too_large) << describe(r) << " " << head;
    EXPECT_TRUE(r.body.empty());
  }
}

// A paced stream reads on only once every event it handed on was consumed,
// and ends only then.
TEST(upstream_client_sse, a_paced_stream_waits_for_its_consumer) {
  std::vector<std::string> pieces;
  for (int i = 0; i < 5; ++i)
    pieces.push_back("data: e" + std::to_string(i) + "\n\n");
  scripted_server server{
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
      pieces, false};
  client_under_test c{server.url()};
  auto pace = std::make_shared<parley::net::stream_pace>();
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::string> events;
  std::vector<std::shared_ptr<void>> held;
  bool done = false;
  fetch_result result;
  stream_callbacks cb;
  cb.pace = pace;
  cb.on_event = [&](std::string_view data) {
    std::lock_guard<std::mutex> lk{m};
    events.emplace_back(data);
    held.push_back(pace->ticket());
    cv.notify_all();
  };
  cb.on_done = [&](fetch_result r) {
    std::lock_guard<std::mutex> lk{m};
    result = std::move(r);
    done = true;
    cv.notify_all();
  };
  c->post_json_stream("/chat/completions", chat("x", true).dump(), "", 10s, std::move(cb));
  std::unique_lock<std::mutex> lk{m};
  ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return !events.empty(); }));
  // Held: nothing more is read while the upstream sends the rest (30 ms
  // apart) and ends the stream.
  EXPECT_FALSE(cv.wait_for(lk, 500ms, [&] { return events.size() > 1 || done; }))
      << "read on while an event was held: " << events.size();
  held.clear(); // consumed: the next read takes what arrived meanwhile
  ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return events.size() == pieces.size(); }))
      << events.size();
  EXPECT_FALSE(cv.wait_for(lk, 300ms, [&] { return done; }))
      << "the stream ended before its last events were consumed";
  held.clear();
  ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return done; }));
  EXPECT_EQ(result.status, fetch_status::ok) << describe(result);
}

TEST(upstream_client_sse, a_tls_close_delimited_stream_ends_cleanly_with_close_notify_both_ways) {
  scratch_dir dir;
  test_pki pki{dir};
  scripted_server server{
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
      tricky_events, false, pki.issue("server", "IP:127.0.0.1"), scripted_server::ending::clean};
  client_options o;
  o.ca_file = pki.ca();
  client_under_test c{server.url(), o};
  auto s = call_stream(*c, chat("x", true), 10s);
  ASSERT_EQ(s.result.status, fetch_status::ok) << describe(s.result);
  EXPECT_EQ(s.events, tricky_expected);
  EXPECT_TRUE(server.close_notify_returned())
      << "a connection that may not be reused is shut down with close_notify";
}

TEST(upstream_client_sse, a_tls_close_delimited_body_cut_without_close_notify_is_an_io_error) {
  scratch_dir dir;
  test_pki pki{dir};
  scripted_server server{
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
      tricky_events, false, pki.issue("server", "IP:127.0.0.1"),
      scripted_server::ending::truncated};
  client_options o;
  o.ca_file = pki.ca();
  client_under_test c{server.url(), o};
  auto s = call_stream(*c, chat("x", true), 10s);
  EXPECT_EQ(s.result.status, fetch_status::io_error) << describe(s.result);
  EXPECT_EQ(s.events, tricky_expected) << "what arrived before the cut was delivered";
  EXPECT_EQ(s.result.events, tricky_expected.size());
  EXPECT_NE(s.result.error.find("truncated"), std::string::npos) << s.result.error;
}

// A whole node on an https upstream: PARLEY_LLM_CA_FILE trusts the private
// CA; without it the node refuses the certificate and stores nothing.
TEST_F(upstream_client_tls, a_node_talks_to_an_https_upstream_with_its_ca_file) {
  mock_upstream mock{pki_.issue("server", "IP:127.0.0.1,DNS:localhost"), pki_.ca()};
  scratch_db db;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.url("localhost") + "/v1"},
                        {"PARLEY_LLM_CA_FILE", pki_.ca()}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  auto plain = node.post_message(key, id, {{"content", "over tls"}});
  ASSERT_EQ(plain.status, 200) << parley::test::describe(plain);
  EXPECT_EQ(plain.js()["reply"]["content"], "mock: over tls");
  auto streamed = node.post_message(key, id, {{"content", "streamed over tls"}, {"stream", true}});
  ASSERT_EQ(streamed.status, 200);
  EXPECT_NE(streamed.body.find("event: done"), std::string::npos) << streamed.body;
  EXPECT_EQ(node.all_messages(key, id).size(), 4u);

  parley_node untrusting{db, {{"PARLEY_LLM_BASE_URL", mock.url() + "/v1"},
                              {"PARLEY_LLM_MAX_ATTEMPTS", "1"}}};
  auto key2 = untrusting.create_key("bob");
  auto id2 = untrusting.create_session(key2);
  auto refused = untrusting.post_message(key2, id2, {{"content", "no"}});
  EXPECT_EQ(refused.status, 502);
  EXPECT_NE(refused.body.find("certificate"), std::string::npos) << refused.body;
  EXPECT_EQ(untrusting.all_messages(key2, id2).size(), 0u);
}

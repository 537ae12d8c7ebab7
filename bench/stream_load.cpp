// stream_load: the streaming load client of bench/run (scenario streamscale).
//
// Holds CONNECTIONS keep-alive connections to one Parley node, each sending
// streamed turns (POST /v1/sessions/{id}/messages with "stream": true) one
// after another for DURATION seconds, each on its own sessions (connection i
// takes sessions i, i + CONNECTIONS, ... in turn, so a session has at most one
// turn in flight). The upstream is mock-llm with --stamp-pieces N: every piece
// it writes carries its write time (steady clock, microseconds), so the
// latency Parley adds to a piece is its arrival here minus that stamp. Every
// turn is checked: N pieces, stamps rising (in order), then `event: done`.
//
// Wrk cannot do this: it sees a response only when it is complete.
//
// Output (OUT): the load document of bench/wrk/turn.lua (turns, answers,
// latency histogram of whole turns), read by bench/report.py, plus "pieces":
// count, out-of-order and missing pieces, and the per-piece latency
// histogram; OUT.sessions holds "id sent acked" per session for the check in
// PostgreSQL. One thread: the figures need no locks, and one core of epoll is
// far more than 2,000 streams need.
//
// RAMP_MS (optional, default 0) spreads the connections' first turns evenly
// over that many milliseconds, as users arrive: with 0 every stream starts in
// the same millisecond and, as every answer takes as long, their pieces stay
// in step, bursts of CONNECTIONS pieces at once. Pieces arriving during the
// ramp are counted and checked but their latency is not recorded ("measured"
// is the number recorded).
//
// A piece's arrival is the kernel's receive time of the bytes that carried
// it (SO_TIMESTAMPNS: on loopback, the moment Parley's write reached this
// socket), so the time this process waits for a core before it reads, on a
// machine the mock, Parley and this client share, is not counted as
// Parley's; for a read of several pieces it is the newest bytes' time (a
// piece is never made earlier). The time the client read it is kept as
// well ("read_hist": arrival as this process saw it).
//
// KEY "-" measures the machine without Parley: PORT is mock-llm's, and each
// turn is a streamed POST /v1/chat/completions to it (SESSIONS_FILE names
// the connections' sessions all the same, for the figures), so "added"
// latency is what the kernel and this client add between the mock's write
// and the arrival here: the floor under Parley's figure.
//
// usage: stream_load HOST PORT KEY SESSIONS_FILE OUT DURATION_S CONNECTIONS PIECES RUN_ID
//        [RAMP_MS]

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// A CLOCK_REALTIME time (a kernel receive stamp) on now_us()'s clock.
std::int64_t steady_us_of(const timespec& real) {
  timespec rn{}, sn{};
  clock_gettime(CLOCK_REALTIME, &rn);
  clock_gettime(CLOCK_MONOTONIC, &sn);
  const std::int64_t offset_ns = (std::int64_t{rn.tv_sec} - sn.tv_sec) * 1'000'000'000 +
                                 (rn.tv_nsec - sn.tv_nsec);
  return (std::int64_t{real.tv_sec} * 1'000'000'000 + real.tv_nsec - offset_ns) / 1000;
}

/// A latency histogram as turn.lua keeps it: exact microseconds below 10 ms,
/// four significant digits above.
struct histogram {
  std::map<std::int64_t, std::uint64_t> counts;
  void record(std::int64_t us) {
    if (us < 0)
      us = 0;
    std::int64_t scale = 1;
    while (us >= 10000 * scale)
      scale *= 10;
    ++counts[us - us % scale];
  }
  std::string json() const {
    std::string out = "[";
    for (const auto& [us, n] : counts) {
      if (out.size() > 1)
        out += ',';
      out += "[" + std::to_string(us) + "," + std::to_string(n) + "]";
    }
    return out + "]";
  }
};

struct settings {
  std::string host, port, key, run;
  std::vector<std::string> sessions;
  std::int64_t deadline_us = 0;
  std::int64_t measure_from_us = 0; ///< the ramp's end: piece latencies recorded from here
  int pieces = 0;
};

struct figures {
  histogram turn_latency, piece_latency, piece_read_latency;
  std::map<std::string, std::uint64_t> answers;
  std::uint64_t sent = 0, acked = 0, pieces = 0, measured = 0, out_of_order = 0, missing = 0,
                extra = 0;
  std::uint64_t unstamped_reads = 0; ///< reads the kernel gave no receive time
  std::uint64_t connect_errors = 0, read_errors = 0, write_errors = 0;
  std::vector<std::uint64_t> session_sent, session_acked;
  int open = 0; ///< connections still running
};

/// One client connection: turns one after another on its sessions.
class connection : public std::enable_shared_from_this<connection> {
public:
  connection(net::io_context& io, const settings& s, figures& f, std::vector<std::size_t> mine,
             std::int64_t first_at_us)
      : socket_(io), timer_(io), s_(s), f_(f), mine_(std::move(mine)), first_at_us_(first_at_us) {
    on_chunk_ = [this](std::uint64_t, std::string_view body, boost::system::error_code&) {
      on_body(body);
      return body.size();
    };
  }

  void start(const tcp::resolver::results_type& where) {
    ++f_.open;
    net::async_connect(socket_, where, [self = shared_from_this()](auto ec, const auto&) {
      if (ec) {
        ++self->f_.connect_errors;
        return self->stop();
      }
      self->socket_.set_option(tcp::no_delay(true));
      const int on = 1;
      ::setsockopt(self->socket_.native_handle(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
      const auto wait = self->first_at_us_ - now_us();
      if (wait <= 0)
        return self->next_turn();
      self->timer_.expires_after(std::chrono::microseconds(wait));
      self->timer_.async_wait([self](auto) { self->next_turn(); });
    });
  }

private:
  void next_turn() {
    if (now_us() >= s_.deadline_us)
      return stop();
    session_ = mine_[turn_++ % mine_.size()];
    const std::uint64_t n = ++f_.sent;
    ++f_.session_sent[session_];
    req_ = {};
    req_.method(http::verb::post);
    req_.version(11);
    req_.set(http::field::host, s_.host);
    req_.set(http::field::content_type, "application/json");
    req_.keep_alive(true);
    if (direct()) {
      req_.target("/v1/chat/completions");
      req_.body() = R"({"model":"bench","stream":true,"messages":[{"role":"user","content":)"
                    R"("stream turn )" + std::to_string(n) + "\"}]}";
    } else {
      req_.target("/v1/sessions/" + s_.sessions[session_] + "/messages");
      req_.set(http::field::authorization, "Bearer " + s_.key);
      req_.body() = R"({"content":"stream turn )" + std::to_string(n) +
                    R"(","stream":true,"client_message_id":")" + s_.run + "-" +
                    std::to_string(n) + "\"}";
    }
    req_.prepare_payload();
    started_ = now_us();
    sse_.clear();
    seen_ = 0;
    last_stamp_ = 0;
    done_ = false;
    error_code_.clear();
    parser_.emplace();
    parser_->body_limit(64 * 1024 * 1024);
    parser_->eager(true);
    parser_->on_chunk_body(on_chunk_);
    http::async_write(socket_, req_, [self = shared_from_this()](auto ec, std::size_t) {
      if (ec) {
        ++self->f_.write_errors;
        return self->stop();
      }
      self->read();
    });
  }

  /// Reads with recvmsg to get each read's kernel receive time, and hands
  /// the bytes to the parser.
  void read() {
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](auto ec) {
      if (ec) {
        ++self->f_.read_errors;
        return self->stop();
      }
      self->drain();
    });
  }

  void drain() {
    for (;;) {
      iovec iov{rx_.data(), rx_.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec)) * 2];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const auto n = ::recvmsg(socket_.native_handle(), &msg, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return read();
      if (n <= 0) {
        ++f_.read_errors;
        return stop();
      }
      read_at_ = now_us();
      arrived_ = read_at_;
      bool stamped = false;
      for (auto* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
          timespec ts{};
          std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
          arrived_ = std::min(steady_us_of(ts), read_at_);
          stamped = true;
        }
      }
      if (!stamped)
        ++f_.unstamped_reads; // counted as read: reported, never hidden
      pending_.append(rx_.data(), static_cast<std::size_t>(n));
      while (!pending_.empty() && !parser_->is_done()) {
        boost::system::error_code ec;
        const auto used = parser_->put(net::buffer(pending_.data(), pending_.size()), ec);
        pending_.erase(0, used);
        if (ec == http::error::need_more)
          break;
        if (ec) {
          ++f_.read_errors;
          return stop();
        }
        if (used == 0)
          break;
      }
      if (parser_->is_done()) {
        pending_.clear(); // one turn in flight: nothing follows its answer
        return finish();
      }
    }
  }

  /// Streamed body bytes as they arrive: complete SSE events are taken off
  /// the front of `sse_`.
  void on_body(std::string_view bytes) {
    sse_.append(bytes);
    std::size_t from = 0;
    for (;;) {
      const auto end = sse_.find("\n\n", from);
      if (end == std::string::npos)
        break;
      on_event(std::string_view(sse_).substr(from, end - from));
      from = end + 2;
    }
    sse_.erase(0, from);
  }

  bool direct() const { return s_.key == "-"; }

  void on_event(std::string_view event) {
    if (direct()) {
      // The mock's own events: "data: {chunk}", then "data: [DONE]".
      if (event.rfind("data: [DONE]", 0) == 0)
        done_ = true;
      if (event.rfind("data: {", 0) != 0)
        return;
    } else if (event.rfind("event: done", 0) == 0) {
      done_ = true;
      return;
    }
    if (event.rfind("event: error", 0) == 0) {
      const auto at = event.find("\"code\":\"");
      error_code_ = at == std::string_view::npos
                        ? "error"
                        : std::string(event.substr(at + 8, event.find('"', at + 8) - at - 8));
      return;
    }
    if (!direct() && event.rfind("event: delta", 0) != 0)
      return;
    // Each stamp is "T" and 16 digits; a delta may carry more than one piece.
    for (auto at = event.find('T'); at != std::string_view::npos; at = event.find('T', at + 1)) {
      if (at + 17 > event.size())
        break;
      std::int64_t stamp = 0;
      bool digits = true;
      for (std::size_t i = at + 1; i < at + 17 && digits; ++i) {
        digits = event[i] >= '0' && event[i] <= '9';
        stamp = stamp * 10 + (event[i] - '0');
      }
      if (!digits)
        continue;
      ++seen_;
      ++f_.pieces;
      if (stamp < last_stamp_)
        ++f_.out_of_order;
      last_stamp_ = stamp;
      if (arrived_ >= s_.measure_from_us) {
        ++f_.measured;
        f_.piece_latency.record(arrived_ - stamp);
        f_.piece_read_latency.record(read_at_ - stamp);
      }
    }
  }

  void finish() {
    const auto status = parser_->get().result_int();
    std::string what = std::to_string(status);
    bool ok = false;
    if (status == 200) {
      if (done_ && error_code_.empty()) {
        ok = true;
        if (seen_ < static_cast<std::uint64_t>(s_.pieces))
          f_.missing += s_.pieces - seen_;
        else if (seen_ > static_cast<std::uint64_t>(s_.pieces))
          f_.extra += seen_ - s_.pieces;
      } else {
        what += " stream " + (error_code_.empty() ? std::string("incomplete") : error_code_);
      }
    } else {
      const auto& body = parser_->get().body();
      const auto at = body.find("\"code\":\"");
      what += at == std::string::npos
                  ? " -"
                  : " " + body.substr(at + 8, body.find('"', at + 8) - at - 8);
    }
    ++f_.answers[what];
    if (ok) {
      ++f_.acked;
      ++f_.session_acked[session_];
      f_.turn_latency.record(now_us() - started_);
    }
    if (!parser_->get().keep_alive())
      return stop();
    next_turn();
  }

  void stop() {
    boost::system::error_code ignored;
    socket_.close(ignored);
    --f_.open;
  }

  tcp::socket socket_;
  net::steady_timer timer_;
  const settings& s_;
  figures& f_;
  std::vector<std::size_t> mine_;
  std::int64_t first_at_us_; ///< when the first turn may start (the ramp)
  std::size_t turn_ = 0, session_ = 0;
  http::request<http::string_body> req_;
  std::array<char, 64 * 1024> rx_;
  std::string pending_; ///< read, not yet taken by the parser
  std::int64_t arrived_ = 0, read_at_ = 0; ///< the last read's kernel and user-space times
  std::optional<http::response_parser<http::string_body>> parser_;
  /// The parser's chunk callback (Beast keeps a reference to it).
  std::function<std::size_t(std::uint64_t, std::string_view, boost::system::error_code&)>
      on_chunk_;
  std::string sse_, error_code_;
  std::int64_t started_ = 0, last_stamp_ = 0;
  std::uint64_t seen_ = 0;
  bool done_ = false;
};

} // namespace

int main(int argc, char** argv) {
  if (argc != 10 && argc != 11) {
    std::cerr << "usage: stream_load HOST PORT KEY SESSIONS_FILE OUT DURATION_S CONNECTIONS "
                 "PIECES RUN_ID [RAMP_MS]\n";
    return 2;
  }
  settings s;
  s.host = argv[1];
  s.port = argv[2];
  s.key = argv[3];
  const std::string out = argv[5];
  const long duration_s = std::stol(argv[6]);
  const long conns = std::stol(argv[7]);
  s.pieces = std::stoi(argv[8]);
  s.run = argv[9];
  const long ramp_ms = argc == 11 ? std::stol(argv[10]) : 0;
  {
    std::ifstream in(argv[4]);
    for (std::string line; std::getline(in, line);) {
      const auto id = line.substr(0, line.find_first_of(" \t"));
      if (!id.empty())
        s.sessions.push_back(id);
    }
  }
  if (s.sessions.empty() || conns <= 0 || duration_s <= 0 || ramp_ms < 0 ||
      ramp_ms >= duration_s * 1000) {
    std::cerr << "stream_load: no sessions, a non-positive duration or connection count, or a "
                 "ramp not shorter than the duration\n";
    return 2;
  }
  figures f;
  f.session_sent.assign(s.sessions.size(), 0);
  f.session_acked.assign(s.sessions.size(), 0);

  net::io_context io(1);
  const auto where = tcp::resolver(io).resolve(s.host, s.port);
  const auto started = now_us();
  s.deadline_us = started + duration_s * 1'000'000;
  s.measure_from_us = started + ramp_ms * 1000;
  const auto n = static_cast<std::size_t>(conns);
  for (std::size_t c = 0; c < n && c < s.sessions.size(); ++c) {
    std::vector<std::size_t> mine;
    for (std::size_t i = c; i < s.sessions.size(); i += n)
      mine.push_back(i);
    const auto first_at = started + ramp_ms * 1000 * static_cast<std::int64_t>(c) / conns;
    std::make_shared<connection>(io, s, f, std::move(mine), first_at)->start(where);
  }
  // Turns started before the deadline run to their end (at most a minute
  // more), so every piece sent is counted.
  net::steady_timer limit(io, std::chrono::seconds(duration_s + 60));
  limit.async_wait([&io](auto) { io.stop(); });
  net::steady_timer poll(io);
  std::function<void()> watch = [&] {
    poll.expires_after(std::chrono::milliseconds(100));
    poll.async_wait([&](auto) {
      if (f.open == 0)
        return io.stop();
      watch();
    });
  };
  watch();
  io.run();
  const auto elapsed = now_us() - started;

  std::string answers;
  for (const auto& [k, v] : f.answers)
    answers += (answers.empty() ? "" : ",") + ("\"" + k + "\":" + std::to_string(v));
  std::ofstream o(out);
  o << R"({"duration_us":)" << elapsed << R"(,"requests":)" << f.sent
    << R"(,"socket_errors":{"connect":)" << f.connect_errors << R"(,"read":)" << f.read_errors
    << R"(,"write":)" << f.write_errors << R"(,"timeout":0})"
    << R"(,"threads":[{"answers":{)" << answers << R"(},"totals":{"sent":)" << f.sent
    << R"(,"acked":)" << f.acked << R"(,"overlap":0,"unmatched":0},"hist":{"all":)"
    << f.turn_latency.json() << "}}]"
    << R"(,"pieces":{"expected_per_turn":)" << s.pieces << R"(,"received":)" << f.pieces
    << R"(,"measured":)" << f.measured << R"(,"ramp_ms":)" << ramp_ms
    << R"(,"out_of_order":)" << f.out_of_order << R"(,"missing":)" << f.missing
    << R"(,"extra":)" << f.extra << R"(,"unstamped_reads":)" << f.unstamped_reads << R"(,"hist":)" << f.piece_latency.json()
    << R"(,"read_hist":)" << f.piece_read_latency.json() << "}}\n";
  std::ofstream sessions(out + ".sessions");
  for (std::size_t i = 0; i < s.sessions.size(); ++i)
    sessions << s.sessions[i] << '\t' << f.session_sent[i] << '\t' << f.session_acked[i] << '\n';
  std::cout << "stream_load: " << f.acked << " turns, " << f.pieces << " pieces, "
            << f.out_of_order << " out of order, " << f.missing << " missing in "
            << elapsed / 1e6 << " s\n";
  return 0;
}

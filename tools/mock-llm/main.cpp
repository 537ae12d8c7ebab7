// mock-llm: an OpenAI-compatible mock model upstream for Parley's integration
// tests and benchmarks. Parses the flags, binds (HTTPS with --tls-cert and
// --tls-key), prints the listening line and runs everything on one thread
// until SIGINT or SIGTERM.

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/ssl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/system_error.hpp>

#include "mock_server.hpp"
#include "mock_state.hpp"

namespace {

namespace net = boost::asio;

constexpr int exit_usage = 2;

constexpr std::string_view usage =
    "usage: mock-llm [--host ADDR] [--port N] [--latency-ms N] [--chunk-delay-ms N]\n"
    "                [--stamp-pieces N] [--max-records N] [--tls-cert FILE --tls-key FILE]\n"
    "defaults: --host 127.0.0.1 --port 9000 --latency-ms 0 --chunk-delay-ms 0 --stamp-pieces 0\n"
    "          --max-records 100000 (plain HTTP unless both TLS flags are given)\n"
    "streamed event k is written k * chunk-delay after the first (a fixed timeline)\n";

struct options {
  std::string host = "127.0.0.1";
  std::string tls_cert; ///< PEM certificate chain, leaf first; with tls_key: serve HTTPS
  std::string tls_key;  ///< PEM private key of the leaf
  long long port = 9000;
  long long latency_ms = 0;
  long long chunk_delay_ms = 0;
  long long stamp_pieces = 0;
  long long max_records = 100000;
};

struct numeric_flag {
  std::string_view name;
  long long max;
  long long options::*field;
};

struct string_flag {
  std::string_view name;
  std::string options::*field;
};

constexpr string_flag string_flags[] = {
    {"--host", &options::host},
    {"--tls-cert", &options::tls_cert},
    {"--tls-key", &options::tls_key},
};

constexpr long long max_ms = 3'600'000;
constexpr numeric_flag numeric_flags[] = {
    {"--port", std::numeric_limits<std::uint16_t>::max(), &options::port},
    {"--latency-ms", max_ms, &options::latency_ms},
    {"--chunk-delay-ms", max_ms, &options::chunk_delay_ms},
    {"--stamp-pieces", 100000, &options::stamp_pieces},
    {"--max-records", std::numeric_limits<std::int32_t>::max(), &options::max_records},
};

std::optional<long long> parse_number(std::string_view text, long long max) {
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < 0 || value > max)
    return std::nullopt;
  return value;
}

/// Parses `--flag value` and `--flag=value`. Returns nullopt after printing
/// the problem to stderr.
std::optional<options> parse_options(int argc, char** argv) {
  options opts;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    std::optional<std::string_view> value;
    if (const auto eq = flag.find('='); eq != std::string_view::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    auto bad = [&](std::string_view why) -> std::optional<options> {
      std::cerr << "mock-llm: " << flag << ": " << why << '\n' << usage;
      return std::nullopt;
    };
    const numeric_flag* numeric = nullptr;
    for (const auto& candidate : numeric_flags) {
      if (candidate.name == flag)
        numeric = &candidate;
    }
    const string_flag* text = nullptr;
    for (const auto& candidate : string_flags) {
      if (candidate.name == flag)
        text = &candidate;
    }
    if (!numeric && !text)
      return bad("unknown flag");
    if (!value && i + 1 < argc)
      value = argv[++i];
    if (!value)
      return bad("missing value");

    if (text) {
      opts.*(text->field) = std::string(*value);
      continue;
    }
    const auto number = parse_number(*value, numeric->max);
    if (!number)
      return bad("not a number from 0 to " + std::to_string(numeric->max) + ": " +
                 std::string(*value));
    opts.*(numeric->field) = *number;
  }
  if (opts.tls_cert.empty() != opts.tls_key.empty()) {
    std::cerr << "mock-llm: --tls-cert and --tls-key go together\n" << usage;
    return std::nullopt;
  }
  return opts;
}

/// A TLS 1.2+ server context with the flags' certificate chain and key, or
/// nullopt after printing why it cannot be loaded.
std::optional<net::ssl::context> make_tls_context(const options& opts) {
  net::ssl::context tls{net::ssl::context::tls_server};
  tls.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                  net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                  net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
  for (const auto* file : {&opts.tls_cert, &opts.tls_key}) {
    if (!std::ifstream{*file}) {
      std::cerr << "mock-llm: cannot read " << *file << '\n';
      return std::nullopt;
    }
  }
  boost::system::error_code ec;
  if (tls.use_certificate_chain_file(opts.tls_cert, ec); ec) {
    std::cerr << "mock-llm: --tls-cert " << opts.tls_cert << ": " << ec.message() << '\n';
    return std::nullopt;
  }
  if (tls.use_private_key_file(opts.tls_key, net::ssl::context::pem, ec); ec) {
    std::cerr << "mock-llm: --tls-key " << opts.tls_key << ": " << ec.message() << '\n';
    return std::nullopt;
  }
  if (SSL_CTX_check_private_key(tls.native_handle()) != 1) {
    std::cerr << "mock-llm: --tls-key " << opts.tls_key << " does not belong to --tls-cert "
              << opts.tls_cert << '\n';
    return std::nullopt;
  }
  return tls;
}

} // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    }
  }
  const auto opts = parse_options(argc, argv);
  if (!opts)
    return exit_usage;

  boost::system::error_code ec;
  const auto address = net::ip::make_address(opts->host, ec);
  if (ec) {
    std::cerr << "mock-llm: --host: not an IP address: " << opts->host << '\n';
    return exit_usage;
  }

  mock_llm::mock_config defaults;
  defaults.latency = std::chrono::milliseconds(opts->latency_ms);
  defaults.chunk_delay = std::chrono::milliseconds(opts->chunk_delay_ms);
  defaults.stamp_pieces = static_cast<int>(opts->stamp_pieces);
  auto state =
      std::make_shared<mock_llm::mock_state>(defaults, static_cast<std::size_t>(opts->max_records));

  std::optional<net::ssl::context> tls;
  if (!opts->tls_cert.empty()) {
    tls = make_tls_context(*opts);
    if (!tls)
      return 1;
  }

  net::io_context ioc{1};
  std::optional<mock_llm::mock_server> server;
  try {
    const net::ip::tcp::endpoint endpoint(address, static_cast<std::uint16_t>(opts->port));
    server.emplace(ioc, endpoint, state, tls ? &*tls : nullptr);
  } catch (const boost::system::system_error& e) {
    std::cerr << "mock-llm: cannot listen on " << opts->host << ':' << opts->port << ": "
              << e.code().message() << '\n';
    return 1;
  }

  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int) {
    server->stop();
    ioc.stop();
  });

  server->start();
  const auto bound = server->local_endpoint();
  const std::string host =
      bound.address().is_v6() ? "[" + bound.address().to_string() + "]" : bound.address().to_string();
  std::cout << "mock-llm listening on " << (tls ? "https" : "http") << "://" << host << ':'
            << bound.port() << std::endl;

  ioc.run();
  return 0;
}

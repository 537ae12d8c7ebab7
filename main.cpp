// parley: one node of the Parley chat runtime.
//   parley [serve] [--config FILE]     run a node (settings: PARLEY_* variables)
//   parley ctl [OPTIONS] COMMAND       the operators' command line (runtime/ctl.hpp)
//   parley --list-settings             every PARLEY_* name it reads, one per line
//   parley --help | --version

#include <unistd.h>

#include <cstring>
#include <iostream>
#include <string>

#include "runtime/config.hpp"
#include "runtime/ctl.hpp"
#include "runtime/node.hpp"

namespace {

constexpr const char* usage =
  "usage: parley [serve] [--config FILE]\n"
  "       parley ctl [--url URL] [--token TOKEN] [--json] [--timeout-ms N] COMMAND\n"
  "       parley --list-settings | --help | --version\n"
  "Runs one Parley node. Settings come from PARLEY_* environment variables and,\n"
  "optionally, a KEY=VALUE file; the environment wins. See README.md.\n"
  "`parley ctl` drives the admin API of a running node (`parley ctl --help`).\n"
  "--list-settings prints every PARLEY_* setting name it reads, one per line.\n";

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "ctl") == 0)
    return parley::run_ctl({argv + 2, argv + argc}, parley::settings_from_environment(), std::cout,
                           std::cerr);
  parley::block_stop_signals();
  std::string config_file;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "serve" && i == 1)
      continue;
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    }
    if (a == "--version") {
      std::cout << "parley 0.1.0\n";
      return 0;
    }
    if (a == "--list-settings") {
      for (auto& name : parley::known_settings())
        std::cout << name << '\n';
      return 0;
    }
    if (a == "--config" && i + 1 < argc) {
      config_file = argv[++i];
      continue;
    }
    if (a.rfind("--config=", 0) == 0) {
      config_file = a.substr(9);
      continue;
    }
    std::cerr << "parley: unknown argument '" << a << "'\n" << usage;
    return 2;
  }
  parley::settings file;
  std::string err;
  if (!config_file.empty() && !parley::read_config_file(config_file, file, err)) {
    std::cerr << "parley: " << err << "\n";
    return 2;
  }
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0)
    std::strcpy(host, "localhost");
  parley::node_config cfg;
  if (!parley::make_config(file, parley::settings_from_environment(), host, cfg, err)) {
    std::cerr << "parley: " << err << "\n";
    return 2;
  }
  return parley::run_node(cfg);
}

// The real OpenAI client libraries against Parley's gateway, in the
// production shape: two nodes on PostgreSQL and Redis (scripts/test), a
// mock-llm primary that wants Parley's own upstream key and a second mock as
// fallback, and an operator polling the admin cluster view all along. Each
// library's script (tests/integration/openai: openai 7, the AI SDK 7,
// LangChain 1, installed by scripts/test; PARLEY_TEST_NODE_MODULES names
// them) runs against every node and prints one JSON line of what it saw per
// scenario: plain and streamed completions with usage, tool-call round trips
// plain and streamed, n choices, a 300 KiB history, a bad key's 401.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

const std::string upstream_key = "sk-parley-upstream";

struct library {
  std::string name;
  std::string script;
  std::vector<std::string> scenarios;
  json plain_usage; ///< what the mock counts for the script's plain scenario
};

const std::vector<library>& libraries() {
  static const std::vector<library> all{
      {"openai",
       "openai_sdk.cjs",
       {"plain", "stream", "stream_without_usage", "tools", "tools_stream", "n2", "n2_stream",
        "logprobs", "length", "image", "history", "auth"},
       {{"prompt", 5}, {"completion", 4}, {"total", 9}}},
      {"ai",
       "ai_sdk.cjs",
       {"plain", "stream", "tools", "tools_stream", "history", "auth"},
       {{"prompt", 7}, {"completion", 6}, {"total", 13}}},
      {"langchain",
       "langchain.cjs",
       {"plain", "stream", "tools", "tools_stream", "history", "auth"},
       {{"prompt", 5}, {"completion", 4}, {"total", 9}}},
  };
  return all;
}

/// PARLEY_TEST_NODE_MODULES when it holds every library, else "" and `why`.
std::string node_modules(std::string& why) {
  const char* dir = std::getenv("PARLEY_TEST_NODE_MODULES");
  if (!dir || !*dir) {
    why = "PARLEY_TEST_NODE_MODULES is not set (scripts/test installs the OpenAI client "
          "libraries into var/npm and sets it)";
    return {};
  }
  for (const char* package : {"openai", "ai", "@ai-sdk/openai-compatible", "@langchain/openai",
                              "@langchain/core", "zod"}) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / package / "package.json")) {
      why = std::string("the npm package ") + package + " is missing from " + dir +
            " (scripts/test installs tests/integration/openai/package.json there)";
      return {};
    }
  }
  return dir;
}

/// What one library's script saw, or {"ok": false, "error": ...} when it
/// printed no JSON line.
json run_client(const std::string& modules, const library& lib, unsigned short port,
                const std::string& key, const std::string& only = {}) {
  std::vector<std::string> args{std::string(OPENAI_CLIENTS_DIR) + "/" + lib.script,
                                "http://127.0.0.1:" + std::to_string(port) + "/v1", key,
                                "--model=mock-model"};
  if (!only.empty())
    args.push_back("--only=" + only);
  auto run = run_process("node", args, {{"NODE_PATH", modules}}, 200s);
  const auto at = run.out.rfind("{\"library\"");
  json saw = at == std::string::npos
                 ? json(nullptr)
                 : json::parse(run.out.substr(at, run.out.find('\n', at) - at), nullptr, false);
  if (!saw.is_object())
    return {{"ok", false}, {"scenarios", json::object()}, {"error", describe(run)}};
  saw["exit"] = run.status;
  if (run.status != 0)
    saw["stderr"] = run.err.substr(0, 2000);
  return saw;
}

/// An operator polling `GET /admin/v1/cluster` on every node in turn,
/// every 100 ms, until stopped; counts answers that are not a 200 listing
/// every node up.
class operator_poll {
public:
  explicit operator_poll(parley_cluster& c) : c_(c), thread_([this] { loop(); }) {}
  ~operator_poll() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable())
      thread_.join();
  }
  int polls() const { return polls_; }
  int bad() const { return bad_; }
  std::string last_bad() {
    std::lock_guard lock(mutex_);
    return last_bad_;
  }

private:
  void loop() {
    for (int i = 0; !stop_; ++i) {
      const auto& node = c_[i % c_.size()];
      auto r = node.admin("GET", "/admin/v1/cluster");
      ++polls_;
      int up = 0;
      const auto j = r.js();
      if (r.status == 200 && j.contains("nodes") && j["nodes"].is_array())
        for (const auto& n : j["nodes"])
          up += n.value("status", "") == "up" ? 1 : 0;
      if (up != c_.size()) {
        ++bad_;
        std::lock_guard lock(mutex_);
        last_bad_ = node.node_id() + ": " + describe(r);
      }
      std::this_thread::sleep_for(100ms);
    }
  }

  parley_cluster& c_;
  std::atomic<bool> stop_{false};
  std::atomic<int> polls_{0}, bad_{0};
  std::mutex mutex_;
  std::string last_bad_;
  std::thread thread_;
};

struct clients : ::testing::Test {
  void SetUp() override {
    modules = node_modules(why);
    if (modules.empty())
      GTEST_SKIP() << "skipped: " << why;
    const char* redis = std::getenv("PARLEY_TEST_REDIS_URL");
    ASSERT_TRUE(redis && *redis) << "PARLEY_TEST_REDIS_URL is not set: run through scripts/test";
    for (auto* m : {&primary, &fallback})
      m->configure({{"api_key", upstream_key}});
    cluster = std::make_unique<parley_cluster>(
        db, 2,
        std::map<std::string, std::string>{{"PARLEY_REDIS_URL", redis},
                                           {"PARLEY_LLM_BASE_URL", primary.base_url()},
                                           {"PARLEY_LLM_FALLBACK_BASE_URL", fallback.base_url()},
                                           {"PARLEY_LLM_API_KEY", upstream_key},
                                           {"PARLEY_LLM_MODEL", "mock-model"}});
    key = (*cluster)[0].create_key("client-libraries");
  }

  std::string modules, why;
  scratch_db db;
  mock_llm primary, fallback;
  std::unique_ptr<parley_cluster> cluster;
  std::string key;
};

/// One line per library and node: each scenario's ok or FAIL.
void print_matrix(const std::string& title, const std::vector<std::pair<std::string, json>>& rows) {
  std::printf("[ clients ] %s\n", title.c_str());
  for (const auto& [row, saw] : rows) {
    std::string line;
    for (const auto& [name, s] : saw["scenarios"].items())
      line += " " + name + (s.value("ok", false) ? "=ok" : "=FAIL");
    std::printf("[ clients ] %-24s %s%s\n", row.c_str(), saw.value("version", "?").c_str(),
                line.c_str());
  }
  std::fflush(stdout);
}

} // namespace

TEST_F(clients, every_library_passes_every_scenario_through_every_node) {
  operator_poll op{*cluster};
  std::vector<std::pair<std::string, json>> matrix;
  for (int n = 0; n < cluster->size(); ++n) {
    auto& node = (*cluster)[n];
    for (const auto& lib : libraries()) {
      SCOPED_TRACE(lib.name + " via " + node.node_id());
      auto saw = run_client(modules, lib, node.port(), key);
      matrix.emplace_back(lib.name + " via " + node.node_id(), saw);
      const auto& scenarios = saw["scenarios"];
      for (const auto& scenario : lib.scenarios) {
        ASSERT_TRUE(scenarios.contains(scenario)) << scenario << " missing: " << saw.dump();
        EXPECT_TRUE(scenarios[scenario].value("ok", false))
            << lib.name << " / " << scenario << " via " << node.node_id() << ": "
            << scenarios[scenario].dump();
      }
      EXPECT_EQ(saw.value("exit", -1), 0) << saw.dump();
      // Numbers pass through unchanged: the mock counts words.
      if (scenarios.contains("plain") && scenarios["plain"].value("ok", false)) {
        EXPECT_EQ(scenarios["plain"]["usage"], lib.plain_usage) << lib.name;
      }
      if (scenarios.contains("auth") && scenarios["auth"].value("ok", false)) {
        EXPECT_EQ(scenarios["auth"]["status"], 401) << lib.name;
      }
    }
  }
  op.stop();
  print_matrix("library via node: scenario results", matrix);

  // The whole run went to the primary, with Parley's key, never the client's.
  const auto sent = primary.requests();
  ASSERT_FALSE(sent.empty());
  bool saw_tool_message = false, saw_tools = false;
  for (const auto& r : sent) {
    EXPECT_EQ(r["authorization"], "Bearer " + upstream_key);
    const auto& body = r["body"];
    saw_tools = saw_tools || body.contains("tools");
    for (const auto& m : body.value("messages", json::array()))
      saw_tool_message = saw_tool_message || (m.value("role", "") == "tool" &&
                                              m.contains("tool_call_id"));
  }
  EXPECT_TRUE(saw_tools) << "no request carried tools to the upstream";
  EXPECT_TRUE(saw_tool_message) << "no tool message with its tool_call_id reached the upstream";
  EXPECT_TRUE(fallback.requests().empty());

  EXPECT_GT(op.polls(), 10);
  EXPECT_EQ(op.bad(), 0) << op.last_bad();
}

TEST_F(clients, tool_round_trips_go_on_through_the_fallback_when_the_primary_fails) {
  operator_poll op{*cluster};
  primary.configure({{"fail_status", 500}, {"fail_count", -1}});
  std::vector<std::pair<std::string, json>> matrix;
  auto& node = (*cluster)[1];
  for (const auto& lib : libraries()) {
    SCOPED_TRACE(lib.name);
    auto saw = run_client(modules, lib, node.port(), key, "plain,stream,tools,tools_stream");
    matrix.emplace_back(lib.name + " via " + node.node_id(), saw);
    for (const auto& [name, s] : saw["scenarios"].items())
      EXPECT_TRUE(s.value("ok", false)) << lib.name << " / " << name << ": " << s.dump();
    EXPECT_EQ(saw.value("exit", -1), 0) << saw.dump();
  }
  op.stop();
  print_matrix("primary failing (500): through the fallback", matrix);
  EXPECT_FALSE(fallback.requests().empty());
  EXPECT_EQ(op.bad(), 0) << op.last_bad();
}

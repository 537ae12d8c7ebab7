// The stateless OpenAI-compatible gateway: /v1/chat/completions (plain and
// streamed) and /v1/models, by raw HTTP and by the official `openai` npm
// package (installed by scripts/test; PARLEY_TEST_NODE_MODULES names it).

#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

struct gateway : ::testing::Test {
  scratch_db db;
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_LLM_MODEL", "mock-model"}}};
  std::string key = node.create_key("alice");

  http_result complete(const json& body) {
    return node.call("POST", "/v1/chat/completions", key, body.dump());
  }
};

} // namespace

TEST_F(gateway, completions_in_openai_shape) {
  auto r = complete({{"model", "mock-model"},
                     {"messages", {{{"role", "system"}, {"content", "be brief"}},
                                   {{"role", "user"}, {"content", "hi there"}}}},
                     {"temperature", 0.5},
                     {"max_tokens", 20}});
  ASSERT_EQ(r.status, 200) << describe(r);
  auto j = r.js();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "mock: hi there");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  // The upstream got the messages and the sampling fields unchanged.
  auto sent = mock.requests().back()["body"];
  EXPECT_EQ(sent["messages"].size(), 2u);
  EXPECT_EQ(sent["temperature"], 0.5);
  EXPECT_EQ(sent["max_tokens"], 20);
  EXPECT_EQ(sent["model"], "mock-model");
  // Nothing is stored: the gateway is stateless.
  EXPECT_EQ(db.query("SELECT count(*) FROM messages")[0][0].as<int>(), 0);
}

TEST_F(gateway, streamed_completions_end_with_done) {
  auto r = complete({{"messages", {{{"role", "user"}, {"content", "stream it"}}}}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  std::string text;
  int chunks = 0;
  bool saw_done = false, saw_stop = false;
  for (auto at = r.body.find("data: "); at != std::string::npos; at = r.body.find("data: ", at + 1)) {
    auto line = r.body.substr(at + 6, r.body.find("\n\n", at) - at - 6);
    if (line == "[DONE]") {
      saw_done = true;
      break;
    }
    auto j = json::parse(line);
    EXPECT_EQ(j["object"], "chat.completion.chunk");
    ++chunks;
    auto& choice = j["choices"][0];
    if (choice["delta"].contains("content"))
      text += choice["delta"]["content"].get<std::string>();
    saw_stop = saw_stop || choice["finish_reason"] == "stop";
  }
  EXPECT_TRUE(saw_done) << r.body;
  EXPECT_TRUE(saw_stop);
  EXPECT_GE(chunks, 3);
  EXPECT_EQ(text, "mock: stream it");
}

TEST_F(gateway, models_errors_and_limits) {
  auto m = node.call("GET", "/v1/models", key);
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.js()["object"], "list");
  EXPECT_EQ(m.js()["data"][0]["id"], "mock-model");
  EXPECT_EQ(node.call("GET", "/v1/models", "").status, 401);
  for (auto bad : {json::object(), json{{"messages", json::array()}},
                   json{{"messages", {{{"role", "wizard"}, {"content", "x"}}}}},
                   json{{"messages", {{{"role", "user"}, {"content", 5}}}}},
                   json{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stream", "yes"}}}) {
    auto r = complete(bad);
    EXPECT_EQ(r.status, 400) << bad.dump() << " -> " << describe(r);
    EXPECT_EQ(r.code(), "invalid_request");
    EXPECT_TRUE(r.js()["error"]["message"].is_string());
  }
  // Upstream failures keep OpenAI's error shape.
  mock.configure({{"fail_status", 500}, {"fail_count", -1}});
  auto failed = complete({{"messages", {{{"role", "user"}, {"content", "x"}}}}});
  EXPECT_EQ(failed.status, 502);
  EXPECT_EQ(failed.code(), "upstream_error");
  EXPECT_EQ(failed.js()["error"]["type"].get<std::string>().empty(), false);
}

TEST_F(gateway, the_official_openai_client_works_plain_and_streaming) {
  auto* modules = std::getenv("PARLEY_TEST_NODE_MODULES");
  ASSERT_TRUE(modules && *modules)
    << "PARLEY_TEST_NODE_MODULES is not set: scripts/test installs the openai npm package";
  auto run = run_process(
    "node", {OPENAI_CHECK_SCRIPT, "http://127.0.0.1:" + std::to_string(node.port()) + "/v1", key},
    {{"NODE_PATH", modules}}, std::chrono::seconds(120));
  ASSERT_EQ(run.status, 0) << describe(run);
  auto& out = run.out;
  auto at = out.find("{\"ids\"");
  ASSERT_NE(at, std::string::npos) << describe(run);
  auto j = json::parse(out.substr(at, out.find('\n', at) - at), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << describe(run);
  EXPECT_EQ(j["ids"][0], "mock-model");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["text"], "mock: hello from openai");
  EXPECT_EQ(j["finishPlain"], "stop");
  EXPECT_EQ(j["streamed"], "mock: stream this please");
  EXPECT_GE(j["chunks"], 3);
  EXPECT_EQ(j["finish"], "stop");
  EXPECT_EQ(j["errStatus"], 401);
  EXPECT_EQ(j["errCode"], "unauthorized");
}

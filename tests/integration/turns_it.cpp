// Turn semantics against a real node and the mock upstream: ordering under
// concurrency, the model's context, idempotent retries, queue bound, upstream
// failures, passivation.

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

/// Posts a turn, retrying 429 session_busy with the same client id as a
/// well-behaved client does; bounded in time.
http_result post_with_retry(parley_node& node, const std::string& key, const std::string& id,
                            const json& body) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  http_result r;
  do {
    r = node.post_message(key, id, body);
    if (r.status != 429)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < until);
  return r;
}

} // namespace

TEST(turns, fifty_concurrent_posts_give_a_gapless_history_and_full_context) {
  scratch_db db;
  mock_llm mock;
  mock.configure({{"latency_ms", 20}});
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_CONTEXT_MESSAGES", "200"}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 50; ++i)
    ts.emplace_back([&, i] {
      auto r = post_with_retry(node, key, id,
                               {{"content", "msg-" + std::to_string(i)},
                                {"client_message_id", "c-" + std::to_string(i)}});
      if (r.status == 200)
        ++ok;
      else
        ADD_FAILURE() << describe(r);
    });
  for (auto& t : ts)
    t.join();
  EXPECT_EQ(ok.load(), 50);

  auto msgs = node.all_messages(key, id);
  ASSERT_EQ(msgs.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(msgs[i]["seq"], i + 1);
    EXPECT_EQ(msgs[i]["role"], i % 2 == 0 ? "user" : "assistant");
    if (i % 2 == 1) {
      EXPECT_EQ(msgs[i]["reply_to"], i);
      EXPECT_EQ(msgs[i]["content"], "mock: " + msgs[i - 1]["content"].get<std::string>());
    }
  }
  // Each model call saw every earlier turn, in order, then its own message.
  auto calls = mock.requests();
  ASSERT_EQ(calls.size(), 50u);
  for (std::size_t k = 0; k < calls.size(); ++k) {
    auto& sent = calls[k]["body"]["messages"];
    ASSERT_EQ(sent.size(), 2 * k + 1) << "call " << k;
    for (std::size_t m = 0; m < sent.size(); ++m) {
      EXPECT_EQ(sent[m]["content"], msgs[m]["content"]) << "call " << k << " message " << m;
      EXPECT_EQ(sent[m]["role"], msgs[m]["role"]);
    }
  }
}

TEST(turns, the_model_sees_the_system_prompt_and_the_newest_window) {
  scratch_db db;
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_CONTEXT_MESSAGES", "4"},
                        {"PARLEY_LLM_MODEL", "mock-model"}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key, {{"system_prompt", "You are terse."}});
  for (int i = 1; i <= 6; ++i)
    ASSERT_EQ(node.post_message(key, id, {{"content", "t" + std::to_string(i)}}).status, 200);
  auto calls = mock.requests();
  ASSERT_EQ(calls.size(), 6u);
  auto& last = calls[5]["body"];
  EXPECT_EQ(last["model"], "mock-model");
  auto& m = last["messages"];
  ASSERT_EQ(m.size(), 5u) << m.dump();
  EXPECT_EQ(m[0], (json{{"role", "system"}, {"content", "You are terse."}}));
  EXPECT_EQ(m[1]["content"], "mock: t4");
  EXPECT_EQ(m[2]["content"], "t5");
  EXPECT_EQ(m[3]["content"], "mock: t5");
  EXPECT_EQ(m[4], (json{{"role", "user"}, {"content", "t6"}}));
  EXPECT_EQ(calls[0]["authorization"], "");
}

TEST(turns, idempotent_retries_and_conflicts) {
  scratch_db db;
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_LLM_API_KEY", "sk-upstream"}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  json body{{"content", "once"}, {"client_message_id", "retry-1"}};
  auto first = node.post_message(key, id, body);
  ASSERT_EQ(first.status, 200) << describe(first);
  auto again = node.post_message(key, id, body);
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.js(), first.js());
  EXPECT_EQ(mock.requests().size(), 1u) << "a retry must not call the model again";
  EXPECT_EQ(mock.requests()[0]["authorization"], "Bearer sk-upstream");
  auto conflict = node.post_message(key, id, {{"content", "other"}, {"client_message_id", "retry-1"}});
  EXPECT_EQ(conflict.status, 409);
  EXPECT_EQ(conflict.code(), "conflict");
  // Also after the session left memory: a restart forces a reload.
  node.stop();
  node.restart();
  auto later = node.post_message(key, id, body);
  ASSERT_EQ(later.status, 200);
  EXPECT_EQ(later.js(), first.js());
  EXPECT_EQ(mock.requests().size(), 1u);
  EXPECT_EQ(node.call("GET", "/v1/sessions/" + id, key).js()["message_count"], 2);
}

TEST(turns, upstream_failures_store_nothing_and_leave_no_gap) {
  scratch_db db;
  mock_llm mock;
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()},
                        {"PARLEY_LLM_TIMEOUT_MS", "500"}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  ASSERT_EQ(node.post_message(key, id, {{"content", "a"}}).status, 200);
  mock.configure({{"fail_status", 500}, {"fail_count", -1}});
  auto failed = node.post_message(key, id, {{"content", "b"}});
  EXPECT_EQ(failed.status, 502);
  EXPECT_EQ(failed.code(), "upstream_error");
  mock.configure({{"fail_status", 0}, {"mode", "hang"}, {"fail_count", 1}});
  auto start = std::chrono::steady_clock::now();
  auto hung = node.post_message(key, id, {{"content", "c"}});
  EXPECT_EQ(hung.status, 504);
  EXPECT_EQ(hung.code(), "upstream_timeout");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  mock.reset();
  auto ok = node.post_message(key, id, {{"content", "d"}});
  ASSERT_EQ(ok.status, 200) << describe(ok);
  EXPECT_EQ(ok.js()["user_message"]["seq"], 3);
  auto msgs = node.all_messages(key, id);
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[2]["content"], "d");
}

TEST(turns, a_full_queue_answers_session_busy_and_loses_nothing_accepted) {
  scratch_db db;
  mock_llm mock;
  mock.configure({{"latency_ms", 300}});
  parley_node node{db, {{"PARLEY_LLM_BASE_URL", mock.base_url()}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  std::mutex mu;
  std::vector<http_result> results;
  std::vector<std::thread> ts;
  for (int i = 0; i < 45; ++i)
    ts.emplace_back([&, i] {
      auto r = node.post_message(key, id, {{"content", "q" + std::to_string(i)}});
      std::lock_guard<std::mutex> lk{mu};
      results.push_back(r);
    });
  for (auto& t : ts)
    t.join();
  int ok = 0, busy = 0;
  for (auto& r : results) {
    if (r.status == 200)
      ++ok;
    else if (r.status == 429 && r.code() == "session_busy") {
      ++busy;
      EXPECT_FALSE(r.header("retry-after").empty());
    } else
      ADD_FAILURE() << describe(r);
  }
  EXPECT_GT(busy, 0);
  EXPECT_EQ(ok + busy, 45);
  EXPECT_EQ(node.metric("parley_load_shed_total{reason=\"session_busy\"}"), busy);
  EXPECT_EQ(node.all_messages(key, id).size(), static_cast<std::size_t>(2 * ok));
}

TEST(turns, idle_sessions_passivate_and_reactivate_from_postgres) {
  scratch_db db;
  parley_node node{db, {{"PARLEY_SESSION_IDLE_SECONDS", "1"}}};
  auto key = node.create_key("alice");
  auto id = node.create_session(key);
  ASSERT_EQ(node.post_message(key, id, {{"content", "before"}}).status, 200);
  auto epoch = [&] {
    return db.query("SELECT epoch FROM sessions WHERE id = '" + id + "'")[0][0].as<int>();
  };
  EXPECT_EQ(epoch(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(node.metric("parley_session_passivations_total"), 1);
  EXPECT_EQ(node.metric("parley_sessions_active"), 0);
  auto r = node.post_message(key, id, {{"content", "after"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.js()["user_message"]["seq"], 3);
  EXPECT_EQ(epoch(), 2) << "the session passivated and was activated again";
  EXPECT_EQ(node.metric("parley_session_activations_total"), 2);
}

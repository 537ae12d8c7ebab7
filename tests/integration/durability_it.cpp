// Acknowledged means committed: history survives a graceful restart and a
// SIGKILL under load.

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;

TEST(durability, history_survives_a_restart_unchanged) {
  scratch_db db;
  parley_node node{db};
  auto key = node.create_key("alice");
  auto id = node.create_session(key, {{"system_prompt", "sp"}});
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(node.post_message(key, id, {{"content", "m" + std::to_string(i)}}).status, 200);
  auto before = node.all_messages(key, id);
  EXPECT_EQ(node.stop(), 0) << "SIGTERM exits 0";
  node.restart();
  EXPECT_EQ(node.all_messages(key, id), before);
  auto next = node.post_message(key, id, {{"content", "more"}});
  ASSERT_EQ(next.status, 200);
  EXPECT_EQ(next.js()["user_message"]["seq"], 11);
}

TEST(durability, sigkill_under_load_loses_no_acknowledged_turn) {
  scratch_db db;
  parley_node node{db};
  auto key = node.create_key("alice");
  constexpr int workers = 8;
  std::vector<std::string> sessions;
  for (int i = 0; i < workers; ++i)
    sessions.push_back(node.create_session(key));
  std::mutex mu;
  std::vector<json> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int w = 0; w < workers; ++w)
    ts.emplace_back([&, w] {
      for (int i = 0; i < 100000 && !stop.load(); ++i) {
        auto r = node.post_message(key, sessions[w],
                                   {{"content", "w" + std::to_string(w) + "-" + std::to_string(i)}});
        if (r.status != 200)
          break;
        std::lock_guard<std::mutex> lk{mu};
        acked.push_back(r.js());
      }
    });
  std::this_thread::sleep_for(std::chrono::seconds(3));
  node.kill9();
  stop = true;
  for (auto& t : ts)
    t.join();
  ASSERT_GT(acked.size(), 20u);
  node.restart();
  std::map<std::string, json> by_session;
  for (auto& s : sessions) {
    auto msgs = node.all_messages(key, s);
    for (std::size_t i = 0; i < msgs.size(); ++i)
      EXPECT_EQ(msgs[i]["seq"], i + 1) << "gapless history";
    by_session[s] = msgs;
  }
  for (auto& a : acked) {
    auto user = a["user_message"], reply = a["reply"];
    bool found = false;
    for (auto& [s, msgs] : by_session) {
      auto seq = user["seq"].get<std::size_t>();
      if (seq + 1 <= msgs.size() && msgs[seq - 1] == user) {
        EXPECT_EQ(msgs[seq], reply);
        found = true;
        break;
      }
    }
    EXPECT_TRUE(found) << "acknowledged turn missing: " << a.dump();
  }
}

// record_usage: a gateway call's usage goes fire and forget to the pool's
// usage actor, at most the backlog's limit at a time; beyond, it is dropped
// and counted.

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>

#include "actors/storage_actor.hpp"
#include "actors/vocabulary.hpp"
#include "net/http/clock.hpp"

namespace parley {
namespace {

TEST(usage_backlog, records_go_to_the_usage_actor_until_the_backlog_is_full_then_drop) {
  caf::actor_system_config cfg;
  register_types(cfg);
  caf::actor_system sys{cfg};
  caf::scoped_actor receiver{sys};
  auto backlog = std::make_shared<usage_backlog>(2);
  // The receiver stands in for the storage actor; it never counts a record
  // out (the real one does on receipt), so the backlog fills.
  storage_pool pool{{caf::actor_cast<storage_actor>(receiver)}, backlog};
  auto metrics = std::make_shared<node_metrics>();
  for (int i = 0; i < 5; ++i)
    record_usage(pool, "alice", "gpt", token_usage{10, 4, 14, true}, metrics.get());
  record_usage(pool, "bob", "gpt", token_usage{}, metrics.get());
  EXPECT_EQ(backlog->queued.load(), 2);
  int got = 0;
  for (int i = 0; i < 2; ++i)
    receiver->receive([&](usage_atom, const usage_total& row) {
      ++got;
      EXPECT_EQ(row.user_id, "alice");
      EXPECT_EQ(row.model, "gpt");
      EXPECT_EQ(row.day, now_rfc3339().substr(0, 10));
      EXPECT_EQ(row.requests, 1);
      EXPECT_EQ(row.prompt_tokens, 10);
      EXPECT_EQ(row.completion_tokens, 4);
    });
  EXPECT_EQ(got, 2);
  bool more = false;
  receiver->receive([&](usage_atom, const usage_total&) { more = true; },
                    caf::after(std::chrono::milliseconds(50)) >> [] {});
  EXPECT_FALSE(more);
  EXPECT_NE(metrics->scrape().find("parley_usage_dropped_total 4"), std::string::npos)
      << metrics->scrape();
  // A pool that takes no usage drops every record.
  storage_pool none{{caf::actor_cast<storage_actor>(receiver)}};
  record_usage(none, "alice", "gpt", token_usage{}, metrics.get());
  EXPECT_NE(metrics->scrape().find("parley_usage_dropped_total 5"), std::string::npos);
}

} // namespace
} // namespace parley

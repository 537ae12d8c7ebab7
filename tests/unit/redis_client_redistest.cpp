// redis_client and redis_subscriber against real Redis servers: the token
// bucket script (burst, refill, expiry, independence, atomicity, NOSCRIPT),
// the membership script of discovery,
// pub/sub, and the failure model (fast failure, backoff, reconnect after a
// restart, a hung server bounded by the command timeout).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <openssl/evp.h>

#include "storage/redis_client.hpp"
#include "tests/support/redis_server.hpp"

using namespace std::chrono_literals;
using namespace parley::storage;
using parley::test::raw_command;
using parley::test::redis_server;
using parley::test::shared_redis_url;
using parley::test::unique_name;

namespace {

using steady = std::chrono::steady_clock;

redis_client shared_client() { return redis_client{parse_redis_url(shared_redis_url())}; }

parley::test::raw_reply shared_raw(const std::vector<std::string>& args) {
  auto ep = parse_redis_url(shared_redis_url());
  return raw_command(ep.host, ep.port, args);
}

std::string sha1_hex(const std::string& text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), md, &len, EVP_sha1(), nullptr);
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    static constexpr char hex[] = "0123456789abcdef";
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0xf];
  }
  return out;
}

/// Runs `f` and returns how long it took.
template <class F>
steady::duration timed(F&& f) {
  auto start = steady::now();
  f();
  return steady::now() - start;
}

/// Adds the ACL user `limiter` (password `acl-pw`) that may touch only
/// `parley:*` keys and channels; false when the server refused.
bool add_parley_acl_user(const redis_server& server) {
  auto acl = raw_command("127.0.0.1", server.port(),
                         {"ACL", "SETUSER", "limiter", "on", ">acl-pw", "~parley:*", "&parley:*",
                          "+@all"},
                         server.password());
  return acl && acl->type != REDIS_REPLY_ERROR;
}

} // namespace

TEST(redis_bucket, lets_exactly_the_rate_through_as_a_burst_then_denies) {
  auto c = shared_client();
  auto key = unique_name("burst");
  for (int i = 0; i < 5; ++i) {
    auto r = c.eval_token_bucket(key, 5);
    EXPECT_TRUE(r.allowed) << i;
    EXPECT_EQ(r.remaining, 4 - i);
    EXPECT_EQ(r.retry_after_ms, 0);
  }
  auto denied = c.eval_token_bucket(key, 5);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.remaining, 0);
  // 5 per minute: one token every 12 s, minus the little time spent above.
  EXPECT_GT(denied.retry_after_ms, 10000);
  EXPECT_LE(denied.retry_after_ms, 12000);
}

TEST(redis_bucket, refills_by_the_server_clock) {
  auto c = shared_client();
  auto key = unique_name("refill");
  // 600 per minute: a token every 100 ms. Take the whole burst at once.
  auto all = c.eval_token_bucket(key, 600, 600);
  EXPECT_TRUE(all.allowed);
  EXPECT_EQ(all.remaining, 0);
  auto denied = c.eval_token_bucket(key, 600);
  EXPECT_FALSE(denied.allowed);
  EXPECT_GT(denied.retry_after_ms, 0);
  EXPECT_LE(denied.retry_after_ms, 100);
  std::this_thread::sleep_for(std::chrono::milliseconds{denied.retry_after_ms + 50});
  EXPECT_TRUE(c.eval_token_bucket(key, 600).allowed);
}

TEST(redis_bucket, keys_are_independent) {
  auto c = shared_client();
  auto a = unique_name("a");
  auto b = unique_name("b");
  EXPECT_TRUE(c.eval_token_bucket(a, 3, 3).allowed);
  EXPECT_FALSE(c.eval_token_bucket(a, 3).allowed);
  auto other = c.eval_token_bucket(b, 3);
  EXPECT_TRUE(other.allowed);
  EXPECT_EQ(other.remaining, 2);
}

TEST(redis_bucket, idle_keys_expire_once_the_bucket_would_be_full) {
  auto c = shared_client();
  auto key = unique_name("ttl");
  c.eval_token_bucket(key, 60); // one token per second: full again after 1 s
  auto ttl = shared_raw({"PTTL", key});
  ASSERT_TRUE(ttl);
  ASSERT_EQ(ttl->type, REDIS_REPLY_INTEGER);
  EXPECT_GT(ttl->integer, 0);
  EXPECT_LE(ttl->integer, 1001);
  std::this_thread::sleep_for(1200ms);
  auto exists = shared_raw({"EXISTS", key});
  ASSERT_TRUE(exists);
  EXPECT_EQ(exists->integer, 0);
}

TEST(redis_bucket, survives_a_script_flush) {
  auto c = shared_client();
  auto key = unique_name("flush");
  EXPECT_EQ(c.eval_token_bucket(key, 10).remaining, 9);
  auto sha = sha1_hex(redis_client::token_bucket_script());
  auto flushed = shared_raw({"SCRIPT", "FLUSH"});
  ASSERT_TRUE(flushed);
  auto gone = shared_raw({"SCRIPT", "EXISTS", sha});
  ASSERT_TRUE(gone && gone->type == REDIS_REPLY_ARRAY && gone->elements == 1);
  EXPECT_EQ(gone->element[0]->integer, 0);
  // EVALSHA fails with NOSCRIPT, EVAL runs it and caches it again.
  EXPECT_EQ(c.eval_token_bucket(key, 10).remaining, 8);
  auto back = shared_raw({"SCRIPT", "EXISTS", sha});
  ASSERT_TRUE(back && back->type == REDIS_REPLY_ARRAY && back->elements == 1);
  EXPECT_EQ(back->element[0]->integer, 1);
  EXPECT_EQ(c.eval_token_bucket(key, 10).remaining, 7);
}

TEST(redis_bucket, is_atomic_under_concurrent_clients) {
  // 10 per minute refills one token every 6 s; the hammering below takes far
  // less, so exactly 10 may pass whatever the interleaving.
  constexpr int rate = 10, threads = 8, calls = 40;
  auto key = unique_name("race");
  std::atomic<int> allowed{0}, denied{0}, ready{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      redis_client c{parse_redis_url(shared_redis_url()), {200ms, 1000ms, 500ms}};
      c.ping(); // connect before the start line
      ++ready;
      while (ready.load() < threads)
        std::this_thread::yield();
      for (int i = 0; i < calls; ++i) {
        auto r = c.eval_token_bucket(key, rate);
        ++(r.allowed ? allowed : denied);
      }
    });
  auto took = timed([&] {
    for (auto& t : ts)
      t.join();
  });
  ASSERT_LT(took, 5s) << "too slow for the exactness claim below";
  EXPECT_EQ(allowed.load(), rate);
  EXPECT_EQ(denied.load(), threads * calls - rate);
}

TEST(redis_bucket, rejects_impossible_arguments) {
  auto c = shared_client();
  EXPECT_THROW(c.eval_token_bucket("k", 0), std::invalid_argument);
  EXPECT_THROW(c.eval_token_bucket("k", 5, 0), std::invalid_argument);
  EXPECT_THROW(c.eval_token_bucket("k", 5, 6), std::invalid_argument);
}

TEST(redis_members, entries_are_listed_until_they_expire_or_leave) {
  auto a = shared_client();
  auto b = shared_client();
  auto key = unique_name("members");
  using set = std::vector<std::string>;
  EXPECT_EQ(a.announce_member(key, "10.0.0.1:4242", 300ms), set{"10.0.0.1:4242"});
  auto both = b.announce_member(key, "10.0.0.2:4242", 10s);
  std::sort(both.begin(), both.end());
  EXPECT_EQ(both, (set{"10.0.0.1:4242", "10.0.0.2:4242"}));
  // Announcing again renews, never duplicates.
  EXPECT_EQ(b.announce_member(key, "10.0.0.2:4242", 10s).size(), 2u);
  // a stops announcing: gone once its TTL passed, by Redis's clock.
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(b.announce_member(key, "10.0.0.2:4242", 10s), set{"10.0.0.2:4242"});
  // A zero TTL leaves at once; the set then expires by itself.
  EXPECT_EQ(b.announce_member(key, "10.0.0.2:4242", 0ms), set{});
}

TEST(redis_pubsub, a_subscriber_receives_what_is_published) {
  auto c = shared_client();
  auto channel = unique_name("chan");
  redis_subscriber sub{parse_redis_url(shared_redis_url()), channel};
  EXPECT_FALSE(sub.next(50ms)); // connects and subscribes; nothing yet
  EXPECT_TRUE(sub.subscribed());
  EXPECT_EQ(c.publish(channel, "pk_0123abcd"), 1);
  EXPECT_EQ(c.publish(channel, "second one"), 1);
  EXPECT_EQ(sub.next(1s).value_or("<none>"), "pk_0123abcd");
  EXPECT_EQ(sub.next(1s).value_or("<none>"), "second one");
  EXPECT_EQ(c.publish(unique_name("other"), "x"), 0);
}

TEST(redis_pubsub, a_quiet_channel_returns_after_the_read_timeout) {
  redis_subscriber sub{parse_redis_url(shared_redis_url()), unique_name("quiet")};
  sub.next(50ms);
  std::optional<std::string> got;
  auto took = timed([&] { got = sub.next(200ms); });
  EXPECT_FALSE(got);
  EXPECT_GE(took, 190ms);
  EXPECT_LT(took, 400ms);
  EXPECT_TRUE(sub.subscribed()) << "a read timeout is not an error";
}

TEST(redis_failure, nothing_listening_fails_fast_and_then_backs_off) {
  redis_client c{{"127.0.0.1", static_cast<std::uint16_t>(parley::test::unused_port()), 0}};
  EXPECT_FALSE(c.backing_off());
  auto took = timed([&] { EXPECT_FALSE(c.ping()); });
  EXPECT_LT(took, 100ms);
  EXPECT_TRUE(c.backing_off());
  try {
    c.eval_token_bucket("k", 5);
    ADD_FAILURE() << "no Redis, yet an answer";
  } catch (const redis_error& e) {
    EXPECT_EQ(e.error_kind(), redis_error::kind::unavailable);
    EXPECT_NE(std::string{e.what()}.find("cannot connect"), std::string::npos) << e.what();
  }
  EXPECT_THROW(c.publish("ch", "x"), redis_error);
  std::this_thread::sleep_for(600ms);
  EXPECT_FALSE(c.backing_off()) << "the backoff is 500 ms";
}

TEST(redis_failure, a_stopped_server_fails_within_the_bound_and_a_restarted_one_is_used_again) {
  redis_server server;
  redis_client c{parse_redis_url(server.url()), {200ms, 50ms, 500ms}};
  ASSERT_TRUE(c.ping());
  auto key = unique_name("restart");
  EXPECT_TRUE(c.eval_token_bucket(key, 100).allowed);

  server.stop();
  int failures = 0;
  bool saw_backoff = false;
  for (auto until = steady::now() + 1500ms; steady::now() < until;) {
    auto took = timed([&] {
      try {
        c.eval_token_bucket(key, 100);
        ADD_FAILURE() << "the server is stopped";
      } catch (const redis_error& e) {
        EXPECT_EQ(e.error_kind(), redis_error::kind::unavailable);
        ++failures;
      }
    });
    EXPECT_LT(took, 100ms);
    saw_backoff |= c.backing_off();
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GT(failures, 10);
  EXPECT_TRUE(saw_backoff);

  server.restart();
  bool ok = false;
  for (auto until = steady::now() + 5s; !ok && steady::now() < until;) {
    try {
      ok = c.eval_token_bucket(key, 100).allowed;
    } catch (const redis_error&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  EXPECT_TRUE(ok) << "the same client must reconnect to the restarted server";
  EXPECT_TRUE(c.ping());
}

TEST(redis_failure, a_restart_while_idle_is_invisible) {
  redis_server server;
  redis_client c{parse_redis_url(server.url()), {200ms, 50ms, 500ms}};
  auto key = unique_name("idle");
  EXPECT_TRUE(c.eval_token_bucket(key, 10).allowed);
  server.restart();
  // The old connection is dead; the client reconnects once, at once, instead
  // of failing and backing off. The restarted server starts empty.
  auto r = c.eval_token_bucket(key, 10);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 9);
  EXPECT_FALSE(c.backing_off());
}

TEST(redis_failure, a_hung_server_costs_at_most_the_command_timeout) {
  redis_server server;
  redis_client c{parse_redis_url(server.url()), {200ms, 50ms, 500ms}};
  ASSERT_TRUE(c.ping());
  server.hang();
  try {
    c.publish("ch", "x");
    ADD_FAILURE() << "a hung server answered";
  } catch (const redis_error& e) {
    EXPECT_EQ(e.error_kind(), redis_error::kind::unavailable);
    EXPECT_NE(std::string{e.what()}.find("did not answer within 50 ms"), std::string::npos)
      << e.what();
  }
  EXPECT_TRUE(c.backing_off()) << "a timeout drops the connection";
  std::this_thread::sleep_for(500ms);
  std::vector<steady::duration> took;
  for (auto until = steady::now() + 1200ms; steady::now() < until;) {
    took.push_back(timed([&] { EXPECT_THROW(c.eval_token_bucket("k", 5), redis_error); }));
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_FALSE(took.empty());
  EXPECT_GE(took.front(), 40ms) << "after the backoff, a reconnect waits for its command timeout";
  for (auto t : took)
    EXPECT_LT(t, 100ms);
  server.resume();
  bool ok = false;
  for (auto until = steady::now() + 5s; !ok && steady::now() < until;) {
    ok = c.ping();
    if (!ok)
      std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(ok);
}

TEST(redis_failure, a_subscriber_resubscribes_after_a_restart) {
  redis_server server;
  auto ep = parse_redis_url(server.url());
  redis_subscriber sub{ep, "parley:revoked"};
  redis_client pub{ep};
  sub.next(50ms);
  ASSERT_TRUE(sub.subscribed());
  ASSERT_EQ(pub.publish("parley:revoked", "before"), 1);
  EXPECT_EQ(sub.next(1s).value_or("<none>"), "before");

  server.restart();
  std::optional<std::string> got;
  for (auto until = steady::now() + 5s; !got && steady::now() < until;) {
    auto took = timed([&] { got = sub.next(100ms); });
    // A read, plus at worst one reconnect and SUBSCRIBE.
    EXPECT_LT(took, 100ms + 200ms + 50ms + 100ms);
    if (!got && sub.subscribed()) {
      try {
        pub.publish("parley:revoked", "after");
      } catch (const redis_error&) {
      }
    }
  }
  EXPECT_EQ(got.value_or("<none>"), "after");
}

// Redis AUTH (issue 15): the password form and the ACL form, on the client
// and on the subscriber, again after every reconnect; a wrong or missing
// password fails like an unreachable Redis.
TEST(redis_auth, a_password_and_an_acl_user_authenticate_on_every_connect) {
  redis_server server{"auth-test-requirepass"};
  auto base = "@127.0.0.1:" + std::to_string(server.port());
  ASSERT_TRUE(add_parley_acl_user(server));

  redis_client by_password{parse_redis_url("redis://:auth-test-requirepass" + base + "/2")};
  redis_client by_acl{parse_redis_url("redis://limiter:acl-pw" + base + "/2")};
  EXPECT_TRUE(by_password.ping());
  EXPECT_TRUE(by_acl.ping());
  // Both reach the same bucket, in db 2.
  auto key = "parley:" + unique_name("auth");
  EXPECT_EQ(by_password.eval_token_bucket(key, 5).remaining, 4);
  EXPECT_EQ(by_acl.eval_token_bucket(key, 5).remaining, 3);
  auto in_db2 = raw_command("127.0.0.1", server.port(),
                            {"EVAL", "redis.call('SELECT', 2) return redis.call('EXISTS', KEYS[1])",
                             "1", key},
                            server.password());
  ASSERT_TRUE(in_db2);
  EXPECT_EQ(in_db2->integer, 1);

  // The subscriber authenticates too.
  redis_subscriber sub{parse_redis_url("redis://limiter:acl-pw" + base), "parley:revoked"};
  sub.next(50ms);
  ASSERT_TRUE(sub.subscribed());
  redis_client pub{parse_redis_url("redis://:auth-test-requirepass" + base)};
  EXPECT_EQ(pub.publish("parley:revoked", "pk_1"), 1);
  EXPECT_EQ(sub.next(1s).value_or("<none>"), "pk_1");

  // After a restart (the ACL user made again, as an ACL file would), a new
  // connection authenticates again at once.
  server.restart();
  raw_command("127.0.0.1", server.port(),
              {"ACL", "SETUSER", "limiter", "on", ">acl-pw", "~parley:*", "&parley:*", "+@all"},
              server.password());
  auto r = by_password.eval_token_bucket(key, 5);
  EXPECT_EQ(r.remaining, 4) << "the restarted server starts empty";
  EXPECT_FALSE(by_password.backing_off());
  EXPECT_EQ(by_acl.eval_token_bucket(key, 5).remaining, 3);
}

TEST(redis_auth, a_wrong_or_missing_password_counts_as_unavailable) {
  redis_server server{"auth-test-right"};
  auto port = std::to_string(server.port());
  redis_options fast{200ms, 50ms, 300ms};
  for (std::string url : {"redis://:auth-test-wrong@127.0.0.1:" + port,
                          "redis://nobody:auth-test-right@127.0.0.1:" + port}) {
    redis_client c{parse_redis_url(url), fast};
    EXPECT_FALSE(c.ping()) << url;
    EXPECT_TRUE(c.backing_off()) << "a refused AUTH starts the backoff";
    try {
      c.eval_token_bucket(unique_name("denied"), 5);
      ADD_FAILURE() << "no error";
    } catch (const redis_error& e) {
      EXPECT_EQ(e.error_kind(), redis_error::kind::unavailable);
      std::string what = e.what();
      EXPECT_EQ(what.find("auth-test-"), std::string::npos) << what;
    }
  }
  // Without credentials the server answers NOAUTH to everything.
  redis_client none{parse_redis_url(server.url()), fast};
  EXPECT_FALSE(none.ping());
  EXPECT_THROW(none.eval_token_bucket(unique_name("noauth"), 5), redis_error);
}

// -- the daily budget in the same script (issue 19, item 4) ------------------

namespace {

admission_request budget_call(const std::string& bucket, const std::string& counter,
                              std::int64_t budget, std::int64_t reserve, std::int32_t rate = 0) {
  admission_request a;
  a.bucket_key = bucket;
  a.rate_per_min = rate;
  a.budget_key = counter;
  a.budget = budget;
  a.reserve = reserve;
  a.budget_ttl = 60s;
  return a;
}

/// GET's value, or "" when the key is missing.
std::string shared_text(const std::string& key) {
  auto r = shared_raw({"GET", key});
  return r && r->str ? std::string{r->str, r->len} : std::string{};
}

} // namespace

TEST(redis_budget, reserves_what_is_left_then_refuses_at_the_budget) {
  auto c = shared_client();
  auto counter = unique_name("budget");
  auto r = c.admit(budget_call("", counter, 100, 60));
  EXPECT_TRUE(r.allowed);
  EXPECT_TRUE(r.budget_ok);
  EXPECT_EQ(r.spent, 0);
  EXPECT_EQ(r.reserved, 60);
  r = c.admit(budget_call("", counter, 100, 60)); // a second call at once: the rest
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.spent, 60);
  EXPECT_EQ(r.reserved, 40);
  r = c.admit(budget_call("", counter, 100, 60));
  EXPECT_FALSE(r.allowed);
  EXPECT_FALSE(r.budget_ok);
  EXPECT_EQ(r.spent, 100);
  EXPECT_EQ(r.reserved, 0);
  EXPECT_EQ(shared_text(counter), "100");
  auto ttl = shared_raw({"PTTL", counter})->integer;
  EXPECT_GT(ttl, 50000) << "the counter expires by itself";
  EXPECT_LE(ttl, 60000);
}

// A batch is one script call whose requests are decided in order, each
// seeing what the ones before it took; every request's settlements run
// first.
TEST(redis_budget, a_batch_decides_as_its_requests_one_by_one) {
  auto c = shared_client();
  auto bucket = "parley:" + unique_name("bucket");
  auto counter = unique_name("budget");
  auto other = unique_name("budget");
  std::vector<admission_request> batch{
    budget_call(bucket, counter, 100, 60, 2), budget_call(bucket, counter, 100, 60, 2),
    budget_call(bucket, counter, 100, 60, 2), budget_call(bucket, other, 100, 10, 2)};
  batch[1].settle = {{counter, 5}};
  auto r = c.admit(batch);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_TRUE(r[0].allowed);
  EXPECT_EQ(r[0].spent, 5) << "the settlement of the second request ran first";
  EXPECT_EQ(r[0].reserved, 60);
  EXPECT_TRUE(r[1].allowed);
  EXPECT_EQ(r[1].spent, 65);
  EXPECT_EQ(r[1].reserved, 35);
  EXPECT_EQ(r[1].remaining, 0) << "the bucket's two tokens are gone";
  EXPECT_FALSE(r[2].allowed);
  EXPECT_FALSE(r[2].budget_ok) << "the budget is spent: the bucket is not asked";
  EXPECT_FALSE(r[3].allowed);
  EXPECT_TRUE(r[3].budget_ok);
  EXPECT_GT(r[3].retry_after_ms, 0) << "the bucket denies the fourth";
  EXPECT_EQ(r[3].reserved, 0);
  EXPECT_EQ(shared_text(counter), "100");
  EXPECT_EQ(shared_text(other), "");
  EXPECT_THROW(c.admit(std::vector<admission_request>{}), std::invalid_argument);
}

TEST(redis_budget, settlements_run_first_in_the_same_call) {
  auto c = shared_client();
  auto counter = unique_name("budget");
  ASSERT_EQ(c.admit(budget_call("", counter, 100, 100)).reserved, 100);
  EXPECT_FALSE(c.admit(budget_call("", counter, 100, 10)).allowed);
  // The call spent 30 of its 100: settled by the next call's own round trip.
  auto a = budget_call("", counter, 100, 10);
  a.settle = {{counter, 30 - 100}};
  auto r = c.admit(a);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.spent, 30);
  EXPECT_EQ(r.reserved, 10);
  // A settlement alone (no bucket, no budget), and a counter never below 0.
  auto other = unique_name("budget");
  admission_request only;
  only.budget_ttl = 60s;
  only.settle = {{counter, 5}, {other, -50}};
  EXPECT_TRUE(c.admit(only).allowed);
  EXPECT_EQ(shared_text(counter), "45");
  EXPECT_EQ(shared_text(other), "0");
  EXPECT_GT(shared_raw({"PTTL", other})->integer, 0);
}

TEST(redis_budget, a_spent_budget_takes_no_rate_token_and_a_denied_rate_reserves_nothing) {
  auto c = shared_client();
  auto bucket = unique_name("bucket");
  auto counter = unique_name("budget");
  ASSERT_TRUE(c.admit(budget_call(bucket, counter, 50, 50, 2)).allowed); // 1 of 2 tokens
  auto r = c.admit(budget_call(bucket, counter, 50, 5, 2));
  EXPECT_FALSE(r.budget_ok);
  EXPECT_EQ(c.eval_token_bucket(bucket, 2).remaining, 0)
    << "the refused call left the second token";
  auto counter2 = unique_name("budget");
  r = c.admit(budget_call(bucket, counter2, 50, 5, 2));
  EXPECT_FALSE(r.allowed);
  EXPECT_TRUE(r.budget_ok);
  EXPECT_GT(r.retry_after_ms, 0);
  EXPECT_EQ(r.reserved, 0);
  EXPECT_EQ(shared_raw({"EXISTS", counter2})->integer, 0);
}

TEST(redis_budget, concurrent_calls_never_reserve_more_than_the_budget) {
  auto counter = unique_name("budget");
  std::atomic<std::int64_t> reserved{0};
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      auto c = shared_client();
      for (int i = 0; i < 25; ++i) {
        auto r = c.admit(budget_call("", counter, 1000, 70));
        admitted += r.allowed;
        reserved += r.reserved;
      }
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(reserved.load(), 1000);
  EXPECT_EQ(admitted.load(), 15) << "14 full reservations of 70, then one of the last 20";
  EXPECT_EQ(shared_text(counter), "1000");
}

TEST(redis_budget, arguments_outside_their_ranges_are_refused) {
  auto c = shared_client();
  EXPECT_THROW(c.admit(budget_call("", "", 100, 1)), std::invalid_argument);
  EXPECT_THROW(c.admit(budget_call("", "k", -1, 1)), std::invalid_argument);
  EXPECT_THROW(c.admit(budget_call("", "k", 100, -1)), std::invalid_argument);
  EXPECT_THROW(c.admit(budget_call("b", "k", 100, 1, -1)), std::invalid_argument);
}

TEST(redis_budget, an_acl_user_limited_to_parley_keys_can_check_and_settle) {
  redis_server server{"budget-acl-requirepass"};
  ASSERT_TRUE(add_parley_acl_user(server));
  redis_client c{parse_redis_url("redis://limiter:acl-pw@127.0.0.1:" +
                                 std::to_string(server.port()))};
  auto counter = "parley:" + unique_name("budget");
  // A budget without a bucket, a bucket without a budget, a settlement alone:
  // every key the script is given is one of the user's.
  EXPECT_EQ(c.admit(budget_call("", counter, 100, 30)).reserved, 30);
  EXPECT_TRUE(c.admit(budget_call("parley:" + unique_name("bucket"), "", 0, 0, 5)).allowed);
  admission_request only;
  only.budget_ttl = 60s;
  only.settle = {{counter, -10}};
  EXPECT_NO_THROW(c.admit(only));
  EXPECT_EQ(c.admit(budget_call("", counter, 100, 0)).spent, 20);
}

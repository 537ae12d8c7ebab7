// The session actor's protocol, driven message by message under CAF's test
// coordinator against fakes of its narrow interfaces (tests/support/
// session_fakes.hpp): nothing runs until the test says so, so each
// interleaving (a turn queued behind another, a migration or an activation
// arriving mid-turn, a fenced commit, a cancel) is exact, with no process,
// database or sleep.

#include <chrono>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/session_actor.hpp"
#include "tests/support/session_fakes.hpp"

namespace parley {
namespace {

using namespace std::chrono_literals;
using testing::fake_model;
using testing::fake_registry;
using testing::fake_store;
using testing::model_script;
using testing::registry_script;
using testing::store_script;

caf::actor_system_config& testing_config(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("testing"));
  register_types(cfg);
  return cfg;
}

class SessionProtocol : public ::testing::Test {
protected:
  caf::actor_system_config cfg;
  caf::actor_system sys{testing_config(cfg)};
  caf::scheduler::test_coordinator& sched =
    dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  caf::scoped_actor client{sys};

  std::shared_ptr<store_script> store = std::make_shared<store_script>();
  std::shared_ptr<model_script> model = std::make_shared<model_script>();
  std::shared_ptr<registry_script> registry = std::make_shared<registry_script>();
  session_env env;
  testing::fake_store_actor store_actor;
  testing::fake_model_actor model_actor;
  session_actor session;

  void SetUp() override {
    // The fakes live until the system goes; do not wait for them.
    sys.await_actors_before_shutdown(false);
    store->session.id = "s1";
    store->session.user_id = "u1";
    store->session.model = "m";
    store->session.system_prompt = "be brief";
    auto scfg = std::make_shared<session_config>();
    scfg->window = 4;
    scfg->queue_limit = 2;
    env.cfg = scfg;
    store_actor = sys.spawn(fake_store, store);
    model_actor = sys.spawn(fake_model, model);
    env.storage = std::make_shared<const actor_pool<session_store_actor>>(
      std::vector<session_store_actor>{store_actor});
    env.llm = model_actor;
    env.metrics = nullptr;
    session = spawn_session_actor(client.ptr(), sys.spawn(fake_registry, registry), "s1", env);
    sched.run();
  }

  void TearDown() override {
    client->send_exit(session, caf::exit_reason::user_shutdown);
    sched.run();
  }

  /// The model answers its oldest call; everything that follows runs.
  void answer_model(const std::string& content) {
    client->send(model_actor, testing::answer_atom::value, content);
    sched.run();
  }

  /// PostgreSQL answers the oldest held commit; everything that follows runs.
  void release_commit() {
    client->send(store_actor, testing::release_atom::value);
    sched.run();
  }

  turn_request turn(const std::string& content, const std::string& cmid = {}) {
    turn_request t;
    t.session_id = "s1";
    t.user_id = "u1";
    t.content = content;
    t.client_message_id = cmid;
    return t;
  }

  /// The next message in the client's mailbox: a turn_reply, or the error.
  template <class T = turn_reply>
  caf::expected<T> answer() {
    caf::expected<T> out{caf::make_error(caf::sec::request_timeout)};
    client->receive([&](T& r) { out = std::move(r); },
                    [&](caf::error& e) { out = std::move(e); },
                    caf::after(std::chrono::milliseconds(0)) >> [] {});
    return out;
  }

  bool client_mailbox_empty() { return client->mailbox().empty(); }

  /// A turn from send to answer: the model replies `reply` at once.
  caf::expected<turn_reply> complete_turn(const std::string& content, const std::string& reply) {
    client->send(session, turn(content));
    sched.run();
    answer_model(reply);
    return answer();
  }

  /// `d` passes on the simulated clock; what came due runs.
  void pass(caf::timespan d) {
    sched.advance_time(d);
    sched.run();
  }
};

TEST_F(SessionProtocol, ATurnActivatesCallsTheModelWithTheWindowAndCommitsBeforeAnswering) {
  store->hold_commits = true;
  client->send(session, turn("hello"));
  sched.run();
  ASSERT_EQ(model->calls.size(), 1u);
  auto& msgs = model->calls.front().request.messages;
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].role, "system");
  EXPECT_EQ(msgs[1].content, "hello");
  answer_model("hi there");
  // The model answered but nothing is committed yet: no answer.
  EXPECT_TRUE(client_mailbox_empty());
  ASSERT_EQ(store->commits.size(), 1u);
  EXPECT_EQ(store->commits.front().write.epoch, 1);
  release_commit();
  auto r = answer();
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_EQ(r->user.seq, 1);
  EXPECT_EQ(r->reply.seq, 2);
  EXPECT_EQ(r->reply.content, "hi there");
  EXPECT_EQ(r->reply.reply_to, 1);
  // The model's usage is on the reply, as committed and as answered.
  EXPECT_TRUE(r->reply.usage.known);
  EXPECT_EQ(r->reply.usage.prompt_tokens, 7);
  EXPECT_EQ(r->reply.usage.completion_tokens, 3);
  EXPECT_EQ(r->reply.usage.total_tokens, 10);
  EXPECT_EQ(store->messages.back().usage.total_tokens, 10);
  EXPECT_FALSE(r->user.usage.known);
  EXPECT_EQ(store->messages.size(), 2u);
  EXPECT_EQ(store->calls, (std::vector<std::string>{"activate", "commit"}));
}

TEST_F(SessionProtocol, ATurnQueuedBehindAnotherSeesItsReplyAndAQueueBeyondTheLimitIsBusy) {
  client->send(session, turn("one"));
  sched.run(); // activated, "one" runs
  client->send(session, turn("two"));
  client->send(session, turn("three"));
  client->send(session, turn("four")); // queue_limit 2: beyond the two waiting
  sched.run();
  auto busy = answer();
  ASSERT_FALSE(busy);
  EXPECT_EQ(to_api_error(busy.error()).code, errc::session_busy);
  ASSERT_EQ(model->calls.size(), 1u) << "one turn at a time";
  answer_model("r1");
  EXPECT_EQ(answer()->reply.content, "r1");
  ASSERT_EQ(model->calls.size(), 1u);
  // The second turn's context holds the first turn, in order.
  auto& msgs = model->calls.front().request.messages;
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[1].content, "one");
  EXPECT_EQ(msgs[2].content, "r1");
  EXPECT_EQ(msgs[3].content, "two");
  answer_model("r2");
  EXPECT_EQ(answer()->user.seq, 3);
  answer_model("r3");
  EXPECT_EQ(answer()->reply.seq, 6);
  EXPECT_EQ(store->messages.size(), 6u);
}

TEST_F(SessionProtocol, AMigrationDuringATurnWaitsForItThenShipsTheWindowAndRelaysTheQueue) {
  // The target node's registry: starts the successor (a session actor on
  // the same store) and hands it the shipped state, as registry_actor does.
  auto target_registry = std::make_shared<registry_script>();
  auto target = sys.spawn([&](caf::event_based_actor* self) -> caf::behavior {
    return {[=, this](handoff_atom, handoff_state& h) {
      auto successor =
        spawn_session_actor(self, sys.spawn(fake_registry, target_registry), "s1", env);
      return self->delegate(successor, handoff_atom::value, std::move(h));
    }};
  });
  client->send(session, turn("one"));
  sched.run();
  ASSERT_EQ(model->calls.size(), 1u);
  client->send(session, migrate_atom::value, target, std::string{"node-b"});
  client->send(session, turn("two"));
  sched.run();
  // The running turn finishes here first; nothing is shipped before.
  EXPECT_EQ(store->calls, (std::vector<std::string>{"activate"}));
  answer_model("r1");
  std::vector<std::string> answers;
  for (int i = 0; i < 2; ++i)
    client->receive([&](turn_reply& r) { answers.push_back("turn " + r.reply.content); },
                    [&](std::string& node) { answers.push_back("moved to " + node); },
                    [&](caf::error& e) { answers.push_back(to_string(e)); },
                    caf::after(std::chrono::milliseconds(0)) >> [] {});
  EXPECT_EQ(answers, (std::vector<std::string>{"turn r1", "moved to node-b"}));
  // The successor adopted the shipped window (no reload) with a new epoch,
  // and runs the relayed turn with the first turn in its context.
  EXPECT_EQ(store->calls, (std::vector<std::string>{"activate", "commit", "adopt"}));
  EXPECT_EQ(store->session.epoch, 2);
  ASSERT_EQ(model->calls.size(), 1u);
  EXPECT_EQ(model->calls.front().request.messages.size(), 4u);
  EXPECT_EQ(registry->moved, (std::vector<std::string>{"s1"}));
  answer_model("r2");
  auto r2 = answer();
  ASSERT_TRUE(r2) << to_string(r2.error());
  EXPECT_EQ(r2->reply.content, "r2");
  EXPECT_EQ(r2->reply.seq, 4);
  EXPECT_EQ(store->messages.size(), 4u);
}

TEST_F(SessionProtocol, AnActivationRacingATurnLoadsOnceAndAnswersBoth) {
  client->send(session, activate_atom::value);
  client->send(session, turn("hello"));
  client->send(session, activate_atom::value);
  sched.run();
  EXPECT_EQ(store->calls, (std::vector<std::string>{"activate"}));
  for (int i = 0; i < 2; ++i) {
    auto a = answer<caf::actor>();
    ASSERT_TRUE(a) << to_string(a.error());
    EXPECT_EQ(*a, caf::actor_cast<caf::actor>(session));
  }
  answer_model("hi");
  EXPECT_EQ(answer()->reply.content, "hi");
}

TEST_F(SessionProtocol, AFencedCommitAnswersSessionMovedFailsTheQueueAndLeavesTheRegistry) {
  store->hold_commits = true;
  client->send(session, turn("one"));
  client->send(session, turn("two"));
  sched.run();
  answer_model("r1");
  // Meanwhile another node activated the session: this actor is stale.
  store->bump_epoch();
  release_commit();
  for (int i = 0; i < 2; ++i) {
    auto r = answer();
    ASSERT_FALSE(r);
    EXPECT_EQ(to_api_error(r.error()).code, errc::session_moved);
  }
  EXPECT_TRUE(store->messages.empty()) << "a stale actor never commits";
  EXPECT_EQ(model->started, 1u);
  // Not the passivation handshake, which a miscount would hold for good:
  // the registry forgets a stale actor at once.
  EXPECT_TRUE(registry->idle.empty());
  EXPECT_EQ(registry->stale, (std::vector<std::string>{"s1"}));
  // Turns already on their way are refused too, until it goes.
  client->send(session, turn("three"));
  sched.run();
  auto r = answer();
  ASSERT_FALSE(r);
  EXPECT_EQ(to_api_error(r.error()).code, errc::session_moved);
  // So is a handoff (a predecessor elsewhere shipping the session here): it
  // gets an answer at once and tries again, never waits for one.
  handoff_state h;
  h.session = store->session;
  client->send(session, handoff_atom::value, std::move(h));
  sched.run();
  auto refused = answer<caf::actor>();
  ASSERT_FALSE(refused);
  EXPECT_EQ(to_api_error(refused.error()).code, errc::session_moved);
}

TEST_F(SessionProtocol, ACancelFromTheStreamedTurnsSinkReachesTheModelAndNoOtherSendersDoes) {
  caf::scoped_actor sink{sys};
  auto t = turn("stream me");
  t.sink = caf::actor_cast<caf::actor>(sink.ptr());
  client->send(session, t);
  sched.run();
  ASSERT_EQ(model->calls.size(), 1u);
  EXPECT_EQ(model->calls.front().listener, t.sink) << "pieces go straight to the sink";
  client->send(session, cancel_atom::value); // not the sink: ignored
  sched.run();
  EXPECT_EQ(model->cancels, 0u);
  sink->send(session, cancel_atom::value);
  sched.run();
  EXPECT_EQ(model->cancels, 1u);
}

TEST_F(SessionProtocol, ARepeatedClientMessageIdIsAnsweredFromTheWindowWithoutAModelCall) {
  client->send(session, turn("hello", "c1"));
  sched.run();
  answer_model("hi");
  ASSERT_TRUE(answer());
  client->send(session, turn("hello", "c1"));
  sched.run();
  auto again = answer();
  ASSERT_TRUE(again) << to_string(again.error());
  EXPECT_EQ(again->reply.content, "hi");
  EXPECT_EQ(again->reply.usage.total_tokens, 10) << "the stored usage comes back";
  EXPECT_EQ(model->started, 1u);
  client->send(session, turn("other text", "c1"));
  sched.run();
  auto conflict = answer();
  ASSERT_FALSE(conflict);
  EXPECT_EQ(to_api_error(conflict.error()).code, errc::conflict);
  EXPECT_EQ(store->messages.size(), 2u);
}

// An OpenAI Idempotency-Key is the user's: one that another session holds
// is 409 before any model call when the lookup sees it, and 409 from the
// commit (key_taken) when another session's turn claimed it meanwhile. The
// actor's view is right either way: it stays ready, unfenced, and its next
// turn runs.
TEST_F(SessionProtocol, AnIdempotencyKeyOfAnotherSessionIsAConflictAndTheActorGoesOn) {
  auto keyed = [&](const std::string& content, const std::string& key) {
    auto t = turn(content, key);
    t.request_hash = "hash of " + content;
    return t;
  };
  store->keys_elsewhere = {"K1"};
  client->send(session, keyed("first", "K1"));
  sched.run();
  auto early = answer();
  ASSERT_FALSE(early);
  EXPECT_EQ(to_api_error(early.error()).code, errc::conflict);
  EXPECT_EQ(to_string(early.error()).find("Idempotency-Key") != std::string::npos, true);
  EXPECT_EQ(model->started, 0u) << "no model call for a key another session holds";
  // A session turn's client id is per session: the same id is no conflict.
  client->send(session, turn("plain", "K1"));
  sched.run();
  answer_model("p");
  ASSERT_TRUE(answer());
  EXPECT_EQ(store->messages.size(), 2u);

  // The race: the key is claimed elsewhere after the lookup.
  store->hold_commits = true;
  client->send(session, keyed("second", "K2"));
  sched.run();
  store->keys_elsewhere.push_back("K2");
  answer_model("r2");
  release_commit();
  auto late = answer();
  ASSERT_FALSE(late);
  EXPECT_EQ(to_api_error(late.error()).code, errc::conflict);
  EXPECT_EQ(store->messages.size(), 2u);
  EXPECT_TRUE(registry->stale.empty()) << "a refused key is no fence";
  // The next turn runs on the same activation, after the last commit.
  client->send(session, turn("third"));
  sched.run();
  answer_model("r3");
  release_commit();
  auto next = answer();
  ASSERT_TRUE(next) << to_string(next.error());
  EXPECT_EQ(next->user.seq, 3);
  EXPECT_EQ(store->messages.size(), 4u);
  EXPECT_EQ(std::count(store->calls.begin(), store->calls.end(), "activate"), 1);
}

TEST_F(SessionProtocol, AnIdleSessionAsksToPassivateAndQuitsWhenTheRegistryAgrees) {
  client->send(session, turn("hello"));
  sched.run();
  answer_model("hi");
  ASSERT_TRUE(answer());
  EXPECT_TRUE(registry->idle.empty());
  // PARLEY_SESSION_IDLE_SECONDS pass on the simulated clock.
  sched.trigger_timeouts();
  sched.run();
  EXPECT_EQ(registry->idle, (std::vector<std::uint64_t>{1}));
  client->monitor(session);
  client->send(session, passivate_atom::value);
  sched.run();
  bool down = false;
  client->receive([&](caf::down_msg& dm) { down = dm.source == session.address(); },
                  caf::after(std::chrono::milliseconds(0)) >> [] {});
  EXPECT_TRUE(down);
}

// Nothing a turn leaves in CAF's clock outlives the turn: a timer set is an
// entry there until it fires, even once its request was answered (CAF 0.17
// never cancels a request's timeout), so an idle timer and a storage and a
// model timeout per turn grew a node's memory with its turn rate (about 650
// bytes a turn for up to 300 s) and made the clock thread sort them.
TEST_F(SessionProtocol, ManyTurnsLeaveOneIdleTimerAndTheSessionStillPassivatesWhenIdle) {
  std::size_t after_first = 0;
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(complete_turn("turn " + std::to_string(i), "reply " + std::to_string(i))) << i;
    if (i == 0)
      after_first = sched.clock().schedule().size();
  }
  // The idle timer, the activation's timeout and the deadline messages of
  // the model call and the commit (one each): as many as after one turn.
  EXPECT_LE(after_first, 4u);
  EXPECT_EQ(sched.clock().schedule().size(), after_first);
  EXPECT_TRUE(registry->idle.empty());
  sched.trigger_timeouts();
  sched.run();
  EXPECT_EQ(registry->idle, (std::vector<std::uint64_t>{40}));
}

TEST_F(SessionProtocol, ATurnHalfWayThroughTheIdleTimeDefersPassivationByAWholeIdleTime) {
  const auto idle = std::chrono::duration_cast<caf::timespan>(env.cfg->idle);
  ASSERT_TRUE(complete_turn("first", "one"));
  pass(idle / 2);
  ASSERT_TRUE(complete_turn("second", "two"));
  // The first turn's timer is due: the session was idle for half the time.
  pass(idle / 2);
  EXPECT_TRUE(registry->idle.empty());
  pass(idle / 2 - std::chrono::seconds(1));
  EXPECT_TRUE(registry->idle.empty());
  pass(std::chrono::seconds(1));
  EXPECT_EQ(registry->idle, (std::vector<std::uint64_t>{2}));
}

// The deadlines a turn's requests keep in the actor (actors/deadlines.hpp)
// still end them: a commit PostgreSQL does not answer in storage_timeout
// is storage_unavailable (outcome unknown), not a second earlier, and its
// late answer changes nothing; a model call past llm_call_timeout ends the
// turn and the next one runs.
TEST_F(SessionProtocol, ACommitUnansweredInTheStorageTimeoutIsStorageUnavailableAtItsDeadline) {
  store->hold_commits = true;
  client->send(session, turn("hello"));
  sched.run();
  answer_model("hi");
  ASSERT_EQ(store->commits.size(), 1u);
  pass(env.cfg->storage_timeout - std::chrono::seconds(1));
  EXPECT_TRUE(client_mailbox_empty());
  pass(std::chrono::seconds(1));
  auto r = answer();
  ASSERT_FALSE(r);
  auto err = to_api_error(r.error());
  EXPECT_EQ(err.code, errc::storage_unavailable);
  // Without a client_message_id a retry could store the turn twice: the
  // client is told to look first, not to retry with an id it never sent.
  EXPECT_NE(err.message.find("may have been stored"), std::string::npos) << err.message;
  EXPECT_EQ(err.message.find("retry with the same"), std::string::npos) << err.message;
  release_commit();
  EXPECT_TRUE(client_mailbox_empty());
}

TEST_F(SessionProtocol, AModelCallPastItsTimeoutEndsTheTurnAndTheNextOneRuns) {
  client->send(session, turn("slow"));
  sched.run();
  client->send(session, turn("next"));
  sched.run();
  ASSERT_EQ(model->calls.size(), 1u);
  pass(env.cfg->llm_call_timeout);
  auto r = answer();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), caf::sec::request_timeout);
  // The late answer goes nowhere; the queued turn called the model.
  ASSERT_EQ(model->calls.size(), 2u);
  answer_model("late");
  answer_model("in time");
  auto next = answer();
  ASSERT_TRUE(next) << to_string(next.error());
  EXPECT_EQ(next->user.content, "next");
  EXPECT_EQ(next->reply.content, "in time");
  EXPECT_TRUE(client_mailbox_empty());
}

} // namespace
} // namespace parley

namespace parley {
namespace {

TEST_F(SessionProtocol, AppendedItemsTakeTheNextSeqsAndTheNextTurnSeesThemWithoutAModelCall) {
  client->send(session, turn("one"));
  sched.run();
  auto items = turn("");
  items.append.resize(2);
  items.append[0].role = "user";
  items.append[0].content = "added question";
  items.append[1].role = "assistant";
  items.append[1].content = "added answer";
  client->send(session, items); // queued behind "one": one writer, one thing at a time
  sched.run();
  EXPECT_TRUE(client_mailbox_empty());
  answer_model("r1");
  ASSERT_EQ(answer()->reply.seq, 2);
  auto appended = answer();
  ASSERT_TRUE(appended) << to_string(appended.error());
  ASSERT_EQ(appended->appended.size(), 2u);
  EXPECT_EQ(appended->appended[0].seq, 3);
  EXPECT_EQ(appended->appended[1].seq, 4);
  EXPECT_EQ(appended->appended[1].role, "assistant");
  EXPECT_EQ(model->started, 1u) << "appending calls no model";
  // The next turn's context holds the appended items, after the last seq.
  client->send(session, turn("two"));
  sched.run();
  ASSERT_EQ(model->calls.size(), 1u);
  auto& msgs = model->calls.front().request.messages;
  ASSERT_GE(msgs.size(), 3u);
  EXPECT_EQ(msgs[msgs.size() - 3].content, "added question");
  EXPECT_EQ(msgs[msgs.size() - 2].content, "added answer");
  answer_model("r2");
  EXPECT_EQ(answer()->user.seq, 5);
  EXPECT_EQ(store->messages.size(), 6u);
}

TEST_F(SessionProtocol, AFencedAppendWritesNothingAndTheSessionGoesStale) {
  client->send(session, turn("one"));
  sched.run();
  answer_model("r1");
  ASSERT_TRUE(answer());
  store->bump_epoch(); // another node took the session over
  auto items = turn("");
  items.append.resize(1);
  items.append[0].role = "user";
  items.append[0].content = "late";
  client->send(session, items);
  sched.run();
  auto r = answer();
  ASSERT_FALSE(r);
  EXPECT_EQ(to_api_error(r.error()).code, errc::session_moved);
  EXPECT_EQ(store->messages.size(), 2u);
}

TEST_F(SessionProtocol, InstructionsAndCallOptionsApplyToTheirTurnOnly) {
  auto t = turn("one");
  t.instructions = "speak French";
  t.call_options = R"({"temperature":0.2})";
  client->send(session, t);
  sched.run();
  ASSERT_EQ(model->calls.size(), 1u);
  EXPECT_EQ(model->calls.front().request.messages.front().content, "speak French");
  EXPECT_EQ(model->calls.front().request.options, R"({"temperature":0.2})");
  answer_model("r1");
  ASSERT_TRUE(answer());
  client->send(session, turn("two"));
  sched.run();
  ASSERT_EQ(model->calls.size(), 1u);
  EXPECT_EQ(model->calls.front().request.messages.front().content, "be brief");
  EXPECT_TRUE(model->calls.front().request.options.empty());
}

TEST_F(SessionProtocol, ATurnContinuingTheLatestResponseRunsAnOlderOrDeletedOneDoesNothing) {
  client->send(session, turn("one"));
  sched.run();
  answer_model("r1");
  ASSERT_TRUE(answer());
  // Continuing the latest response (seq 2): one lookup, the model, a commit.
  auto next = turn("two");
  next.previous_seq = 2;
  client->send(session, next);
  sched.run();
  answer_model("r2");
  auto r = answer();
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_EQ(r->reply.seq, 4);
  // Continuing seq 2 again is not the latest any more: nothing happens and
  // the edge is told to fork.
  auto old = turn("three");
  old.previous_seq = 2;
  client->send(session, old);
  sched.run();
  auto refused = answer();
  ASSERT_FALSE(refused);
  EXPECT_EQ(to_api_error(refused.error()).code, errc::not_latest);
  // A user message (seq 3) is no response either.
  old.previous_seq = 3;
  client->send(session, old);
  sched.run();
  refused = answer();
  ASSERT_FALSE(refused);
  EXPECT_EQ(to_api_error(refused.error()).code, errc::not_latest);
  // A deleted latest response is gone.
  store->deleted.push_back(4);
  auto gone = turn("four");
  gone.previous_seq = 4;
  client->send(session, gone);
  sched.run();
  refused = answer();
  ASSERT_FALSE(refused);
  EXPECT_EQ(to_api_error(refused.error()).code, errc::not_found);
  EXPECT_EQ(model->started, 2u);
  EXPECT_EQ(store->messages.size(), 4u);
  // A retry of a stored turn is answered as one, whatever it continued.
  auto first = turn("five", "c5");
  store->deleted.clear();
  first.previous_seq = 4;
  client->send(session, first);
  sched.run();
  answer_model("r5");
  ASSERT_TRUE(answer());
  client->send(session, first);
  sched.run();
  auto again = answer();
  ASSERT_TRUE(again) << to_string(again.error());
  EXPECT_EQ(again->reply.seq, 6);
  EXPECT_EQ(model->started, 3u);
}

} // namespace
} // namespace parley

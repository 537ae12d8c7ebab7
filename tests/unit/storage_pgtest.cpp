// pg_store against a real PostgreSQL (PARLEY_TEST_PG_URL, set by scripts/test):
// migrations, epoch fencing and group commit.

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include "net/http/clock.hpp"
#include "storage/pg_store.hpp"
#include "storage/schema.hpp"
#include "tests/support/scratch_db.hpp"

using namespace parley;
using namespace parley::storage;

namespace {

using parley::test::scratch_db;

session_record new_session(const std::string& id) {
  session_record s;
  s.id = id;
  s.user_id = "alice";
  s.created_at = now_rfc3339();
  s.model = "echo";
  return s;
}

turn_write turn(const std::string& id, std::int64_t epoch, std::int64_t first_seq,
                const std::string& text) {
  turn_write t;
  t.session_id = id;
  t.epoch = epoch;
  t.user = {first_seq, "user", text, now_rfc3339(), 0, "", "", {}};
  t.reply = {first_seq + 1, "assistant", text, now_rfc3339(), first_seq, "echo", "", {}};
  return t;
}

} // namespace

TEST(storage_pg, migrations_are_safe_when_nodes_start_at_once) {
  scratch_db db;
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&] {
      pg_store s{db.url()};
      if (s.migrate() == parley::storage::migrations().back().version)
        ++ok;
    });
  for (auto& t : ts)
    t.join();
  EXPECT_EQ(ok.load(), 4);
  pg_store again{db.url()};
  EXPECT_EQ(again.migrate(), parley::storage::migrations().back().version);
}

TEST(storage_pg, a_stale_epoch_can_never_commit) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("s1"));
  auto first = s.activate("s1", 20);
  ASSERT_TRUE(first);
  auto second = s.activate("s1", 20); // a second actor took over
  ASSERT_TRUE(second);
  EXPECT_EQ(second->session.epoch, first->session.epoch + 1);

  auto stale = s.commit_turns({turn("s1", first->session.epoch, 1, "old")});
  EXPECT_EQ(stale.front(), commit_outcome::fenced);
  auto page = s.list_messages("s1", "alice", 0, 50);
  ASSERT_TRUE(page);
  EXPECT_TRUE(page->data.empty()) << "a fenced turn must write nothing";

  auto current = s.commit_turns({turn("s1", second->session.epoch, 1, "new")});
  EXPECT_EQ(current.front(), commit_outcome::committed);
  auto after = s.get_session("s1", "alice");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->last_seq, 2);
  EXPECT_EQ(after->message_count, 2);
  // A wrong view of last_seq is fenced too.
  EXPECT_EQ(s.commit_turns({turn("s1", second->session.epoch, 1, "again")}).front(),
            commit_outcome::fenced);
}

TEST(storage_pg, activate_many_bumps_each_epoch_once_and_loads_each_window) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  for (auto id : {"m1", "m2", "m3"}) {
    s.create_session(new_session(id));
    auto a = s.activate(id, 20);
    ASSERT_TRUE(a);
  }
  // m1: three turns (six messages); m2: one; m3: none.
  for (std::int64_t seq : {1, 3, 5})
    ASSERT_EQ(s.commit_turns({turn("m1", 1, seq, "m1 turn " + std::to_string(seq))}).front(),
              commit_outcome::committed);
  ASSERT_EQ(s.commit_turns({turn("m2", 1, 1, "m2 turn")}).front(), commit_outcome::committed);

  auto out = s.activate_many({"m1", "missing", "m2", "m3"}, 4);
  ASSERT_EQ(out.size(), 4u);
  ASSERT_TRUE(out[0]);
  EXPECT_FALSE(out[1]) << "a session that does not exist";
  ASSERT_TRUE(out[2]);
  ASSERT_TRUE(out[3]);
  EXPECT_EQ(out[0]->session.id, "m1");
  EXPECT_EQ(out[0]->session.epoch, 2);
  EXPECT_EQ(out[2]->session.epoch, 2);
  EXPECT_EQ(out[3]->session.epoch, 2);
  // The newest four of m1's six messages, ascending.
  ASSERT_EQ(out[0]->window.size(), 4u);
  EXPECT_EQ(out[0]->window.front().seq, 3);
  EXPECT_EQ(out[0]->window.back().seq, 6);
  EXPECT_EQ(out[0]->window[2].content, "m1 turn 5");
  ASSERT_EQ(out[2]->window.size(), 2u);
  EXPECT_EQ(out[2]->window[0].role, "user");
  EXPECT_EQ(out[2]->window[1].role, "assistant");
  EXPECT_TRUE(out[3]->window.empty());
  // The bumped epoch fences the old one.
  EXPECT_EQ(s.commit_turns({turn("m2", 1, 3, "stale")}).front(), commit_outcome::fenced);
  EXPECT_EQ(s.commit_turns({turn("m2", 2, 3, "current")}).front(), commit_outcome::committed);
  EXPECT_TRUE(s.activate_many({}, 20).empty());
}

TEST(storage_pg, group_commit_isolates_fenced_and_conflicting_turns) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  std::vector<turn_write> batch;
  for (int i = 0; i < 5; ++i) {
    auto id = "g" + std::to_string(i);
    s.create_session(new_session(id));
    auto a = s.activate(id, 20);
    batch.push_back(turn(id, a->session.epoch, 1, "t" + std::to_string(i)));
  }
  batch[1].epoch = 99; // fenced
  auto out = s.commit_turns(batch);
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0], commit_outcome::committed);
  EXPECT_EQ(out[1], commit_outcome::fenced);
  EXPECT_EQ(out[4], commit_outcome::committed);

  // A turn whose client id is already used breaks the batch; the others
  // still commit one by one.
  std::vector<turn_write> second;
  for (int i : {0, 2, 3}) {
    auto id = "g" + std::to_string(i);
    auto t = turn(id, 1, 3, "x");
    t.user.client_message_id = "dup";
    second.push_back(t);
  }
  second[1].user.client_message_id = "dup";
  auto base = s.commit_turns({second[1]});
  EXPECT_EQ(base.front(), commit_outcome::committed);
  second[1].user.seq = 5; // passes the fence, then hits the unique client id
  second[1].reply.seq = 6;
  auto out2 = s.commit_turns(second);
  EXPECT_EQ(out2[0], commit_outcome::committed);
  EXPECT_EQ(out2[1], commit_outcome::conflict);
  EXPECT_EQ(out2[2], commit_outcome::committed);
  auto g2 = s.list_messages("g2", "alice", 0, 50);
  ASSERT_TRUE(g2);
  ASSERT_EQ(g2->data.size(), 4u);
  EXPECT_EQ(g2->data[2].client_message_id, "dup");
}

TEST(storage_pg, timestamps_and_client_ids_round_trip_exactly) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("r1"));
  auto a = s.activate("r1", 20);
  auto t = turn("r1", a->session.epoch, 1, "héllo ✓");
  t.user.client_message_id = "cid-1";
  ASSERT_EQ(s.commit_turns({t}).front(), commit_outcome::committed);
  auto hit = s.find_by_client_id("r1", "cid-1");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->first.created_at, t.user.created_at);
  EXPECT_EQ(hit->first.content, "héllo ✓");
  ASSERT_TRUE(hit->second);
  EXPECT_EQ(hit->second->seq, 2);
  EXPECT_EQ(hit->second->created_at, t.reply.created_at);
  EXPECT_FALSE(s.find_by_client_id("r1", "other"));
  // Another user sees nothing of it.
  EXPECT_FALSE(s.list_messages("r1", "bob", 0, 50));
  EXPECT_FALSE(s.get_session("r1", "bob"));
  EXPECT_FALSE(s.delete_session("r1", "bob"));
  EXPECT_EQ(s.put_feedback("r1", "bob", 2, 1, std::nullopt), feedback_outcome::no_session);
  EXPECT_EQ(s.put_feedback("r1", "alice", 1, 1, std::nullopt), feedback_outcome::not_assistant);
  EXPECT_EQ(s.put_feedback("r1", "alice", 9, 1, std::nullopt), feedback_outcome::no_message);
  EXPECT_EQ(s.put_feedback("r1", "alice", 2, -1, std::string{"meh"}), feedback_outcome::stored);
}

TEST(storage_pg, client_id_lookups_of_many_sessions_share_one_statement) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  std::vector<turn_write> ts;
  for (auto id : {"c1", "c2"}) {
    s.create_session(new_session(id));
    auto a = s.activate(id, 20);
    for (std::int64_t k = 0; k < 3; ++k) {
      auto t = turn(id, a->session.epoch, 1 + 2 * k, std::string{id} + "-" + std::to_string(k));
      t.user.client_message_id = "cid-" + std::to_string(k);
      ASSERT_EQ(s.commit_turns({t}).front(), commit_outcome::committed);
      ts.push_back(t);
    }
  }
  auto hits = s.find_by_client_ids(
    {{"c2", "cid-1"}, {"c1", "cid-9"}, {"c1", "cid-0"}, {"nope", "cid-0"}, {"c2", "cid-2"}});
  ASSERT_EQ(hits.size(), 5u);
  ASSERT_TRUE(hits[0]);
  EXPECT_EQ(hits[0]->first.content, "c2-1");
  EXPECT_EQ(hits[0]->first.seq, 3);
  ASSERT_TRUE(hits[0]->second);
  EXPECT_EQ(hits[0]->second->seq, 4);
  EXPECT_EQ(hits[0]->second->reply_to, 3);
  EXPECT_FALSE(hits[1]);
  ASSERT_TRUE(hits[2]);
  EXPECT_EQ(hits[2]->first.content, "c1-0");
  EXPECT_EQ(hits[2]->second->seq, 2);
  EXPECT_FALSE(hits[3]);
  ASSERT_TRUE(hits[4]);
  EXPECT_EQ(hits[4]->first.seq, 5);
  EXPECT_EQ(hits[4]->second->content, ts[5].reply.content);
}

TEST(storage_pg, a_version_1_database_upgrades_and_deleting_a_session_still_deletes_its_messages) {
  scratch_db db;
  {
    // The database of a version-1 node, with a turn and its feedback.
    pqxx::connection c{db.url()};
    pqxx::work w{c};
    w.exec("CREATE TABLE parley_schema_migrations (version integer PRIMARY KEY, name text NOT "
           "NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    w.exec(migrations().front().sql);
    w.exec("INSERT INTO parley_schema_migrations (version, name) VALUES (1, 'v1')");
    // As a version-1 node wrote them (its statements knew only these columns).
    for (std::string id : {"d1", "d2"}) {
      w.exec("INSERT INTO sessions (id, user_id, created_at, model, epoch, last_seq, "
             "message_count) VALUES ('" + id + "', 'alice', now(), 'echo', 1, 2, 2)");
      w.exec("INSERT INTO messages (session_id, seq, role, content, created_at, reply_to, model) "
             "VALUES ('" + id + "', 1, 'user', 'hi', now(), NULL, NULL), ('" + id +
             "', 2, 'assistant', 'hi', now(), 1, 'echo')");
    }
    w.exec("INSERT INTO feedback (session_id, seq, rating) VALUES ('d1', 2, 1)");
    w.commit();
  }
  pg_store s{db.url()};
  EXPECT_EQ(s.migrate(), migrations().back().version);
  pqxx::connection c{db.url()};
  auto count = [&](const std::string& sql) {
    pqxx::nontransaction n{c};
    return n.exec(sql)[0][0].as<int>();
  };
  EXPECT_EQ(count("SELECT count(*) FROM pg_constraint WHERE conname = 'messages_session_id_fkey'"),
            0);
  EXPECT_TRUE(s.delete_session("d1", "alice"));
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE session_id = 'd1'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM feedback"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE session_id = 'd2'"), 2);
  // Also when the session goes by an operator's SQL.
  {
    pqxx::work w{c};
    w.exec("DELETE FROM sessions WHERE id = 'd2'");
    w.commit();
  }
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 0);
  // Turns still commit on the upgraded schema.
  s.create_session(new_session("d3"));
  auto a = s.activate("d3", 20);
  EXPECT_EQ(s.commit_turns({turn("d3", a->session.epoch, 1, "again")}).front(),
            commit_outcome::committed);
}

TEST(storage_pg, one_batch_with_a_stale_and_a_current_actor_of_a_session_writes_only_the_current) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("d1"));
  auto first = s.activate("d1", 20);
  auto second = s.activate("d1", 20); // a newer actor: epoch moved on
  auto out = s.commit_turns({turn("d1", first->session.epoch, 1, "stale"),
                             turn("d1", second->session.epoch, 1, "current")});
  EXPECT_EQ(out[0], commit_outcome::fenced);
  EXPECT_EQ(out[1], commit_outcome::committed);
  auto page = s.list_messages("d1", "alice", 0, 50);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->data.size(), 2u);
  EXPECT_EQ(page->data[0].content, "current");
}

TEST(storage_pg, any_text_survives_the_array_parameters_of_a_group_commit) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  const std::vector<std::string> texts{
    "plain", "a \"quoted\" word", "back\\slash\\", "{braces},commas", "NULL", "",
    "  spaces  ", "line\nbreak\ttab", "héllo ✓ 🚀", "'single' and \\\""};
  std::vector<turn_write> batch;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto id = "a" + std::to_string(i);
    s.create_session(new_session(id));
    auto a = s.activate(id, 20);
    auto t = turn(id, a->session.epoch, 1, texts[i]);
    t.user.client_message_id = i % 2 ? texts[i] + "-id" : "";
    batch.push_back(t);
  }
  for (auto o : s.commit_turns(batch))
    EXPECT_EQ(o, commit_outcome::committed);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto page = s.list_messages("a" + std::to_string(i), "alice", 0, 50);
    ASSERT_TRUE(page);
    ASSERT_EQ(page->data.size(), 2u);
    EXPECT_EQ(page->data[0].content, texts[i]);
    EXPECT_EQ(page->data[1].content, texts[i]);
    EXPECT_EQ(page->data[0].client_message_id, i % 2 ? texts[i] + "-id" : "");
    EXPECT_EQ(page->data[1].reply_to, 1);
  }
}

TEST(storage_pg, session_pages_follow_the_cursor_newest_first) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  for (int i = 0; i < 5; ++i) {
    s.create_session(new_session("p" + std::to_string(i)));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::vector<std::string> seen;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto p = s.list_sessions("alice", 2, cursor);
    for (auto& r : p.data)
      seen.push_back(r.id);
    if (p.next_cursor.empty())
      break;
    cursor = p.next_cursor;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"p4", "p3", "p2", "p1", "p0"}));
}

TEST(storage_pg, an_unreachable_server_is_a_transient_error) {
  pg_store s{"host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2"};
  EXPECT_FALSE(s.ping());
  try {
    s.get_session("x", "y");
    FAIL() << "expected storage_error";
  } catch (const storage_error& e) {
    EXPECT_EQ(e.error_kind(), storage_error::kind::transient);
  }
}

namespace {

/// Terminates the backends of the scratch database that `where` selects
/// (besides the caller's) and waits until they are gone; how many there were.
int kill_backends(const scratch_db& db, const std::string& where = "true") {
  pqxx::connection c{db.url()};
  pqxx::nontransaction n{c};
  const std::string mine = "datname = current_database() AND pid <> pg_backend_pid()";
  auto r = n.exec("SELECT pid FROM pg_stat_activity WHERE " + mine + " AND " + where);
  for (auto row : r)
    n.exec_params("SELECT pg_terminate_backend($1)", row[0].as<int>());
  for (int i = 0; i < 200; ++i) {
    bool left = false;
    for (auto row : r)
      left = left || !n.exec_params("SELECT 1 FROM pg_stat_activity WHERE pid = $1",
                                    row[0].as<int>())
                        .empty();
    if (!left)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return static_cast<int>(r.size());
}

} // namespace

TEST(storage_pg_recovery, a_connection_killed_while_idle_is_replaced_before_a_call_fails) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("k1"));
  // As a restart or pg_terminate_backend does to every connection.
  ASSERT_EQ(kill_backends(db), 1);
  auto got = s.get_session("k1", "alice"); // must not throw
  ASSERT_TRUE(got);
  EXPECT_EQ(got->id, "k1");

  ASSERT_EQ(kill_backends(db), 1);
  s.create_session(new_session("k2")); // a write too
  ASSERT_EQ(kill_backends(db), 1);
  auto a = s.activate("k2", 20);
  ASSERT_TRUE(a);
  ASSERT_EQ(kill_backends(db), 1);
  EXPECT_EQ(s.commit_turns({turn("k2", a->session.epoch, 1, "hi")}).front(),
            commit_outcome::committed);
}

TEST(storage_pg_recovery, a_group_commit_whose_backend_dies_under_it_is_settled_and_written_once) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("d1"));
  auto a = s.activate("d1", 20);
  ASSERT_TRUE(a);

  // Another transaction holds the session row, so the commit's fenced
  // UPDATE waits; then its backend is terminated under it.
  pqxx::connection holder{db.url()};
  pqxx::work hold{holder};
  hold.exec("SELECT 1 FROM sessions WHERE id = 'd1' FOR UPDATE");
  std::vector<commit_outcome> out;
  std::thread writer{[&] { out = s.commit_turns({turn("d1", a->session.epoch, 1, "once")}); }};
  int killed = 0;
  for (int i = 0; i < 250 && killed == 0; ++i) {
    killed = kill_backends(db, "wait_event_type = 'Lock'");
    if (!killed)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(killed, 1) << "the commit never waited for the row lock";
  // The old backend is gone and wrote nothing: the store writes the turn
  // again on a new connection (which waits for the holder as well).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  hold.abort();
  writer.join();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], commit_outcome::committed);
  auto page = s.list_messages("d1", "alice", 0, 50);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->data.size(), 2u) << "written once";
  EXPECT_EQ(page->data[0].content, "once");
  auto after = s.get_session("d1", "alice");
  EXPECT_EQ(after->last_seq, 2);
  EXPECT_EQ(after->message_count, 2);

  // Settling finds a turn that did commit: the same turn again is refused
  // by the fence, and nothing is written twice.
  EXPECT_EQ(s.commit_turns({turn("d1", a->session.epoch, 1, "once")}).front(),
            commit_outcome::fenced);
  EXPECT_EQ(s.list_messages("d1", "alice", 0, 50)->data.size(), 2u);
}

TEST(storage_pg_recovery, a_server_that_does_not_answer_costs_at_most_the_timeout) {
  // A listening socket that accepts (the kernel does) and never answers,
  // like a hung PostgreSQL.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  pg_store s{"host=127.0.0.1 port=" + std::to_string(ntohs(addr.sin_port)) +
               " user=postgres dbname=postgres",
             std::chrono::milliseconds(2000)};
  auto t0 = std::chrono::steady_clock::now();
  try {
    s.get_session("x", "y");
    FAIL() << "expected storage_error";
  } catch (const storage_error& e) {
    EXPECT_EQ(e.error_kind(), storage_error::kind::transient);
    EXPECT_EQ(e.error_cause(), storage_error::cause::cannot_connect);
  }
  // libpq's connect_timeout (2 s here); without it, libpq would wait forever.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  ::close(fd);
}


namespace {

turn_write turn_with_usage(const std::string& id, std::int64_t epoch, std::int64_t first_seq,
                           const std::string& model, std::int64_t prompt,
                           std::int64_t completion) {
  auto t = turn(id, epoch, first_seq, "t" + std::to_string(first_seq));
  t.reply.model = model;
  t.reply.usage = {prompt, completion, prompt + completion, true};
  return t;
}

session_record session_of(const std::string& id, const std::string& user) {
  auto s = new_session(id);
  s.user_id = user;
  return s;
}

} // namespace

TEST(storage_pg, a_group_commit_stores_each_reply_usage_and_adds_the_written_turns_to_the_totals) {
  scratch_db db;
  pg_store s{db.url(), std::chrono::milliseconds(5000), usage_shard_of("node-a", 0)};
  s.migrate();
  for (auto [id, user] : {std::pair{"u1", "alice"}, {"u2", "alice"}, {"u3", "bob"}}) {
    s.create_session(session_of(id, user));
    ASSERT_TRUE(s.activate(id, 20));
  }
  // A batch: two sessions of alice, one of bob, and a stale actor's turn
  // that must not count; then alice with a second model and bob with a turn
  // whose usage is unknown (a session has one turn in a batch at most).
  auto out = s.commit_turns({turn_with_usage("u1", 1, 1, "m1", 10, 2),
                             turn_with_usage("u2", 1, 1, "m1", 20, 4),
                             turn_with_usage("u3", 1, 1, "m1", 5, 1),
                             turn_with_usage("u2", 7, 3, "m1", 1000, 1000)});
  ASSERT_EQ(out, (std::vector<commit_outcome>{commit_outcome::committed, commit_outcome::committed,
                                              commit_outcome::committed, commit_outcome::fenced}));
  out = s.commit_turns(
    {turn_with_usage("u1", 1, 3, "m2", 30, 6), turn("u3", 1, 3, "no usage reported")});
  ASSERT_EQ(out, (std::vector<commit_outcome>{commit_outcome::committed, commit_outcome::committed}));
  // On the replies (and only there), as read back by every path.
  auto page = s.list_messages("u1", "alice", 0, 50);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->data.size(), 4u);
  EXPECT_FALSE(page->data[0].usage.known);
  EXPECT_TRUE(page->data[1].usage.known);
  EXPECT_EQ(page->data[1].usage.prompt_tokens, 10);
  EXPECT_EQ(page->data[1].usage.completion_tokens, 2);
  EXPECT_EQ(page->data[1].usage.total_tokens, 12);
  EXPECT_EQ(page->data[3].usage.prompt_tokens, 30);
  auto window = s.activate_many({"u1"}, 20);
  ASSERT_TRUE(window[0]);
  EXPECT_EQ(window[0]->window[3].usage.total_tokens, 36);
  auto bob = s.list_messages("u3", "bob", 0, 50);
  ASSERT_EQ(bob->data.size(), 4u);
  EXPECT_FALSE(bob->data[3].usage.known) << "unknown usage stays NULL";

  // The totals: per (user, day, model), fenced turns excluded, unknown usage
  // counted as a call without tokens; one row per key in this shard.
  auto alice = s.usage_of("alice", 1);
  ASSERT_EQ(alice.size(), 2u);
  EXPECT_EQ(alice[0].day, now_rfc3339().substr(0, 10));
  EXPECT_EQ(alice[0].model, "m1");
  EXPECT_EQ(alice[0].requests, 2);
  EXPECT_EQ(alice[0].prompt_tokens, 30);
  EXPECT_EQ(alice[0].completion_tokens, 6);
  EXPECT_EQ(alice[1].model, "m2");
  EXPECT_EQ(alice[1].requests, 1);
  auto b = s.usage_of("bob", 7);
  ASSERT_EQ(b.size(), 2u); // "m1" and "echo" (the unknown turn's model)
  EXPECT_EQ(b[0].model, "echo");
  EXPECT_EQ(b[0].requests, 1);
  EXPECT_EQ(b[0].prompt_tokens, 0);
  EXPECT_EQ(b[1].requests, 1);
  EXPECT_EQ(b[1].prompt_tokens, 5);
  pqxx::connection c{db.url()};
  pqxx::nontransaction n{c};
  EXPECT_EQ(n.exec("SELECT count(*) FROM usage_daily")[0][0].as<int>(), 4);
  EXPECT_EQ(n.exec("SELECT count(DISTINCT shard) FROM usage_daily")[0][0].as<int>(), 1);
}

TEST(storage_pg, usage_adds_up_across_batches_stores_and_gateway_rows) {
  scratch_db db;
  pg_store a{db.url(), std::chrono::milliseconds(5000), usage_shard_of("node-a", 0)};
  pg_store b{db.url(), std::chrono::milliseconds(5000), usage_shard_of("node-a", 1)};
  a.migrate();
  a.create_session(session_of("s", "alice"));
  ASSERT_TRUE(a.activate("s", 20));
  for (std::int64_t seq = 1; seq < 20; seq += 2)
    ASSERT_EQ(a.commit_turns({turn_with_usage("s", 1, seq, "m", 3, 1)}).front(),
              commit_outcome::committed);
  // Gateway rows: summed by usage_tally before, so each key once.
  auto today = now_rfc3339().substr(0, 10);
  b.add_usage({usage_total{"alice", today, "m", 5, 50, 10}, usage_total{"carol", today, "m", 1, 1, 1}});
  b.add_usage({usage_total{"alice", today, "m", 1, 2, 3}});
  b.add_usage({});
  auto alice = a.usage_of("alice", 1);
  ASSERT_EQ(alice.size(), 1u);
  EXPECT_EQ(alice[0].requests, 10 + 5 + 1);
  EXPECT_EQ(alice[0].prompt_tokens, 30 + 50 + 2);
  EXPECT_EQ(alice[0].completion_tokens, 10 + 10 + 3);
  EXPECT_EQ(b.usage_of("carol", 90).size(), 1u);
  EXPECT_TRUE(b.usage_of("nobody", 90).empty());
  // Two writers, two rows of one key: neither waits for the other's lock.
  pqxx::connection c{db.url()};
  pqxx::nontransaction n{c};
  EXPECT_EQ(n.exec("SELECT count(*) FROM usage_daily WHERE user_id = 'alice'")[0][0].as<int>(), 2);
  EXPECT_NE(usage_shard_of("node-a", 0), usage_shard_of("node-a", 1));
  // Absurd counts (an upstream's) are bounded, never break the commit.
  a.create_session(session_of("z", "zed"));
  ASSERT_TRUE(a.activate("z", 20));
  auto absurd = turn_with_usage("z", 1, 1, "m", -5, INT64_MAX);
  absurd.reply.usage.total_tokens = INT64_MAX;
  ASSERT_EQ(a.commit_turns({absurd}).front(), commit_outcome::committed);
  ASSERT_EQ(a.commit_turns({turn_with_usage("z", 1, 3, "m", 1, INT64_MAX)}).front(),
            commit_outcome::committed);
  auto zed = a.usage_of("zed", 1);
  ASSERT_EQ(zed.size(), 1u);
  EXPECT_EQ(zed[0].prompt_tokens, 1);
  EXPECT_EQ(zed[0].completion_tokens, 2'000'000'000'000);
  EXPECT_GE(usage_shard_of("x", 100), 0);
  EXPECT_LT(usage_shard_of("x", 100), usage_shards);
}

// --- OpenAI's stateful API (schema version 6) -------------------------------

TEST(storage_pg, a_fork_copies_the_history_up_to_a_response_in_one_statement_once) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("src"));
  auto a = s.activate("src", 20);
  ASSERT_TRUE(a);
  for (std::int64_t seq : {1, 3, 5}) {
    auto t = turn("src", a->session.epoch, seq, "turn " + std::to_string(seq));
    t.user.client_message_id = "c" + std::to_string(seq);
    t.reply.usage = {10, 2, 12, true};
    ASSERT_EQ(s.commit_turns({t}).front(), commit_outcome::committed);
  }
  fork_request f{"fork1", "src", "alice", 4, now_rfc3339()};
  EXPECT_EQ(s.fork_session(f), fork_outcome::made);
  auto forked = s.get_session("fork1", "alice");
  ASSERT_TRUE(forked);
  EXPECT_EQ(forked->last_seq, 4);
  EXPECT_EQ(forked->message_count, 4);
  auto page = s.list_messages("fork1", "alice", 0, 50);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->data.size(), 4u);
  EXPECT_EQ(page->data[3].content, "turn 3");
  EXPECT_EQ(page->data[3].reply_to, 3);
  EXPECT_EQ(page->data[3].usage.total_tokens, 12);
  EXPECT_EQ(page->data[2].client_message_id, "c3");
  // Again (a retry): nothing more is written.
  EXPECT_EQ(s.fork_session(f), fork_outcome::made);
  EXPECT_EQ(s.list_messages("fork1", "alice", 0, 50)->data.size(), 4u);
  // The source is unchanged; another user's source forks nothing.
  EXPECT_EQ(s.get_session("src", "alice")->last_seq, 6);
  EXPECT_EQ(s.fork_session({"fork2", "src", "bob", 2, now_rfc3339()}), fork_outcome::missing);
  EXPECT_FALSE(s.find_session("fork2"));
  // The fork is a session like any other: it activates with its window.
  auto fa = s.activate("fork1", 20);
  ASSERT_TRUE(fa);
  EXPECT_EQ(fa->window.size(), 4u);
}

// An OpenAI response's Idempotency-Key: the hash of its request is stored on
// the user message in the turn's commit and comes back wherever the turn is
// read (a client id lookup, an activation's window, a fork's copy); a turn
// without one reads back none.
TEST(storage_pg, a_keyed_turns_request_hash_is_written_with_it_and_read_back) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("h1"));
  auto a = s.activate("h1", 20);
  ASSERT_TRUE(a);
  auto keyed = turn("h1", a->session.epoch, 1, "q");
  keyed.user.client_message_id = "key-1";
  keyed.user.request_hash = "0123456789abcdef0123456789abcdef";
  auto plain = turn("h1", a->session.epoch, 3, "q");
  plain.user.client_message_id = "cid-2";
  auto out = s.commit_turns({keyed});
  ASSERT_EQ(out.front(), commit_outcome::committed);
  ASSERT_EQ(s.commit_turns({plain}).front(), commit_outcome::committed);
  auto hit = s.find_by_client_id("h1", "key-1");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->first.request_hash, keyed.user.request_hash);
  ASSERT_TRUE(hit->second);
  EXPECT_EQ(hit->second->request_hash, "");
  auto other = s.find_by_client_id("h1", "cid-2");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->first.request_hash, "");
  auto b = s.activate("h1", 20);
  ASSERT_TRUE(b);
  ASSERT_EQ(b->window.size(), 4u);
  EXPECT_EQ(b->window[0].request_hash, keyed.user.request_hash);
  EXPECT_EQ(b->window[2].request_hash, "");
  EXPECT_EQ(s.fork_session({"h1fork", "h1", "alice", 2, now_rfc3339()}), fork_outcome::made);
  auto forked = s.find_by_client_id("h1fork", "key-1");
  ASSERT_TRUE(forked);
  EXPECT_EQ(forked->first.request_hash, keyed.user.request_hash);
}

// An OpenAI response's Idempotency-Key is the user's (API.md section 5a):
// a keyed turn claims it for its session in its own group commit and is
// written only when the key is new or its session's already. A turn
// refused for its key writes nothing, fences nothing else of its batch and
// is reported as such; the lookup before a model call names the key's
// session; no session or fork is made for a key another session holds;
// the claims go with their session.
TEST(storage_pg, an_idempotency_key_is_claimed_for_one_session_in_the_turns_commit) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  std::map<std::string, std::int64_t> epoch;
  for (auto id : {"k1", "k2", "k3", "k4", "k5"}) {
    s.create_session(new_session(id));
    auto a = s.activate(id, 20);
    ASSERT_TRUE(a);
    epoch[id] = a->session.epoch;
  }
  auto keyed = [&](const std::string& id, std::int64_t seq, const std::string& key) {
    auto t = turn(id, epoch[id], seq, id + " " + key);
    t.user.client_message_id = key;
    t.user.request_hash = "hash of " + id + " " + key;
    t.user_id = "alice"; // the session actor sets it for a keyed turn
    t.reply.usage = {10, 2, 12, true};
    return t;
  };
  auto requests = [&] {
    return db.query("SELECT coalesce(sum(requests), 0) FROM usage_daily")[0][0].as<int>();
  };
  ASSERT_EQ(s.commit_turns({keyed("k1", 1, "K")}).front(), commit_outcome::committed);
  ASSERT_EQ(requests(), 1);

  // One batch: the key in another session, a stale turn, a good keyed turn
  // and a good plain one.
  auto stale = turn("k3", epoch["k3"] - 1, 1, "stale");
  auto plain = turn("k5", epoch["k5"], 1, "plain");
  plain.user.client_message_id = "K"; // a session's client id: per session
  auto out = s.commit_turns({keyed("k2", 1, "K"), stale, keyed("k4", 1, "K4"), plain});
  EXPECT_EQ(out, (std::vector<commit_outcome>{commit_outcome::key_taken, commit_outcome::fenced,
                                              commit_outcome::committed,
                                              commit_outcome::committed}));
  EXPECT_EQ(s.list_messages("k2", "alice", 0, 50)->data.size(), 0u);
  EXPECT_EQ(s.get_session("k2", "alice")->last_seq, 0);
  EXPECT_EQ(s.list_messages("k3", "alice", 0, 50)->data.size(), 0u);
  EXPECT_EQ(s.list_messages("k4", "alice", 0, 50)->data.size(), 2u);
  EXPECT_EQ(s.list_messages("k5", "alice", 0, 50)->data.size(), 2u);
  EXPECT_EQ(requests(), 3);
  // The refused turn's session is not fenced: its next turn commits.
  EXPECT_EQ(s.commit_turns({keyed("k2", 1, "K2")}).front(), commit_outcome::committed);
  // One new key twice in a batch: the first turn has it.
  out = s.commit_turns({keyed("k2", 3, "N"), keyed("k4", 3, "N")});
  EXPECT_EQ(out, (std::vector<commit_outcome>{commit_outcome::committed,
                                              commit_outcome::key_taken}));
  EXPECT_EQ(requests(), 5);
  EXPECT_EQ(db.query("SELECT session_id FROM response_keys WHERE user_id = 'alice' "
                     "AND idem_key = 'N'")[0][0].as<std::string>(),
            "k2");
  // Only keyed turns claim: k5's plain client id K left K with k1.
  EXPECT_EQ(db.query("SELECT count(*) FROM response_keys")[0][0].as<int>(), 4);

  // The lookup names the key's session (with the user only).
  auto hits = s.look_up_client_ids(
    {{"k2", "K", 0, "alice"}, {"k1", "K", 0, "alice"}, {"k2", "K", 0, ""}, {"k2", "new", 0, "alice"},
     {"k2", "K", 0, "bob"}});
  ASSERT_EQ(hits.size(), 5u);
  EXPECT_FALSE(hits[0].turn);
  EXPECT_EQ(hits[0].key_owner, "k1");
  ASSERT_TRUE(hits[1].turn);
  EXPECT_EQ(hits[1].key_owner, "k1");
  EXPECT_EQ(hits[2].key_owner, "");
  EXPECT_EQ(hits[3].key_owner, "");
  EXPECT_EQ(hits[4].key_owner, "");

  // No session and no fork for a key held by another session.
  auto d = new_session("derived");
  EXPECT_FALSE(s.ensure_session(d, "K"));
  EXPECT_FALSE(s.find_session("derived"));
  EXPECT_TRUE(s.ensure_session(d, "fresh"));
  EXPECT_TRUE(s.ensure_session(d, "fresh"));
  EXPECT_EQ(s.fork_session({"fk", "k1", "alice", 2, now_rfc3339(), "K4"}),
            fork_outcome::key_taken);
  EXPECT_FALSE(s.find_session("fk"));
  EXPECT_EQ(s.fork_session({"fk", "k1", "alice", 2, now_rfc3339(), "K"}), fork_outcome::key_taken);
  EXPECT_EQ(s.fork_session({"fk", "k1", "alice", 2, now_rfc3339(), "other"}), fork_outcome::made);

  // A deleted session's keys are free again.
  ASSERT_TRUE(s.delete_session("k1", "alice"));
  EXPECT_EQ(db.query("SELECT count(*) FROM response_keys WHERE session_id = 'k1'")[0][0].as<int>(),
            0);
  EXPECT_EQ(s.commit_turns({keyed("k3", 1, "K")}).front(), commit_outcome::committed);
}

// A version-8 database's keyed turns claim their keys as it upgrades: the
// earliest session holding a key keeps it (a fork's copy does not), and a
// session turn's client id claims nothing.
TEST(storage_pg, a_version_8_database_claims_the_keys_of_its_keyed_turns) {
  scratch_db db;
  {
    pqxx::connection c{db.url()};
    pqxx::work w{c};
    w.exec("CREATE TABLE parley_schema_migrations (version integer PRIMARY KEY, name text NOT "
           "NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    for (auto& m : migrations())
      if (m.version <= 8) {
        w.exec(m.sql);
        w.exec_params("INSERT INTO parley_schema_migrations (version, name) VALUES ($1, $2)",
                      m.version, m.name);
      }
    // src holds keyed turn K; fork (made later) a copy of it; plain a session turn.
    for (auto [id, at] : {std::pair{"src", "2026-01-01"}, std::pair{"fork", "2026-01-02"},
                          std::pair{"plain", "2026-01-03"}})
      w.exec("INSERT INTO sessions (id, user_id, created_at, model, epoch, last_seq, "
             "message_count) VALUES ('" + std::string{id} + "', 'alice', '" + at +
             "', 'echo', 1, 2, 2)");
    for (auto id : {"src", "fork"})
      w.exec("INSERT INTO messages (session_id, seq, role, content, created_at, "
             "client_message_id, request_hash) VALUES ('" + std::string{id} +
             "', 1, 'user', 'q', '2026-01-01', 'K', 'h')");
    w.exec("INSERT INTO messages (session_id, seq, role, content, created_at, client_message_id) "
           "VALUES ('plain', 1, 'user', 'q', '2026-01-03', 'C')");
    w.commit();
  }
  pg_store s{db.url()};
  EXPECT_EQ(s.migrate(), migrations().back().version);
  auto rows = db.query("SELECT user_id, idem_key, session_id FROM response_keys");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0].as<std::string>(), "alice");
  EXPECT_EQ(rows[0][1].as<std::string>(), "K");
  EXPECT_EQ(rows[0][2].as<std::string>(), "src");
  EXPECT_EQ(s.look_up_client_ids({{"fork", "K", 0, "alice"}}).front().key_owner, "src");
}

TEST(storage_pg, appended_messages_are_fenced_like_a_turn) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("c1"),
                   {message_record{0, "user", "first", "", 0, "", "", {}},
                    message_record{0, "assistant", "second", "", 0, "", "", {}}});
  auto a = s.activate("c1", 20);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->session.last_seq, 2);
  ASSERT_EQ(a->window.size(), 2u);
  EXPECT_EQ(a->window[1].role, "assistant");
  auto item = [](std::int64_t seq, const std::string& text) {
    return message_record{seq, "user", text, now_rfc3339(), 0, "", "", {}};
  };
  append_write w{"c1", a->session.epoch, 2, {item(3, "third"), item(4, "fourth")}};
  EXPECT_EQ(s.append_messages(w), commit_outcome::committed);
  EXPECT_EQ(s.get_session("c1", "alice")->last_seq, 4);
  // A stale view of the last seq, and a stale epoch, write nothing.
  EXPECT_EQ(s.append_messages(w), commit_outcome::fenced);
  w.after_seq = 4;
  w.epoch = a->session.epoch - 1;
  EXPECT_EQ(s.append_messages(w), commit_outcome::fenced);
  auto page = s.list_messages("c1", "alice", 0, 50);
  ASSERT_EQ(page->data.size(), 4u);
  auto desc = s.list_messages("c1", "alice", 4, 2, page_order::descending);
  ASSERT_EQ(desc->data.size(), 2u);
  EXPECT_EQ(desc->data[0].seq, 3);
  EXPECT_EQ(desc->next_after, 2);
}

TEST(storage_pg, a_turn_with_replayed_messages_writes_them_in_its_commit_or_nothing) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  for (auto id : {"h1", "h2"})
    s.create_session(new_session(id));
  auto e1 = s.activate("h1", 20)->session.epoch;
  auto e2 = s.activate("h2", 20)->session.epoch;
  auto before = [](std::int64_t seq, const std::string& role, const std::string& text) {
    return message_record{seq, role, text, now_rfc3339(), 0, "", "", {}};
  };
  auto t1 = turn("h1", e1, 3, "q2");
  t1.before = {before(1, "user", "q1"), before(2, "assistant", "a1")};
  auto t2 = turn("h2", e2 + 1, 2, "stale");
  t2.before = {before(1, "user", "never")};
  auto t3 = turn("h2", e2, 1, "plain");
  auto out = s.commit_turns({t1, t2, t3});
  EXPECT_EQ(out, (std::vector<commit_outcome>{commit_outcome::committed, commit_outcome::fenced,
                                              commit_outcome::committed}));
  auto h1 = s.list_messages("h1", "alice", 0, 50);
  ASSERT_EQ(h1->data.size(), 4u);
  EXPECT_EQ(h1->data[0].content, "q1");
  EXPECT_EQ(h1->data[1].role, "assistant");
  EXPECT_EQ(h1->data[1].content, "a1");
  EXPECT_EQ(h1->data[2].content, "q2");
  EXPECT_EQ(h1->data[3].reply_to, 3);
  auto r = s.get_session("h1", "alice");
  EXPECT_EQ(r->last_seq, 4);
  EXPECT_EQ(r->message_count, 4);
  // The stale turn wrote none of its messages; the other turn of h2 all.
  auto h2 = s.list_messages("h2", "alice", 0, 50);
  ASSERT_EQ(h2->data.size(), 2u);
  EXPECT_EQ(h2->data[0].content, "plain");
  // Again (a retry after an unknown outcome): fenced, nothing twice.
  EXPECT_EQ(s.commit_turns({t1}).front(), commit_outcome::fenced);
  EXPECT_EQ(s.list_messages("h1", "alice", 0, 50)->data.size(), 4u);
}

TEST(storage_pg, a_deleted_response_is_gone_and_goes_with_its_session) {
  scratch_db db;
  pg_store s{db.url()};
  s.migrate();
  s.create_session(new_session("r1"));
  auto a = s.activate("r1", 20);
  ASSERT_EQ(s.commit_turns({turn("r1", a->session.epoch, 1, "q")}).front(),
            commit_outcome::committed);
  EXPECT_TRUE(s.response_turn({"r1", "alice", 2}));
  EXPECT_FALSE(s.response_turn({"r1", "alice", 1})) << "a user message is no response";
  EXPECT_FALSE(s.response_turn({"r1", "bob", 2}));
  EXPECT_FALSE(s.delete_response({"r1", "bob", 2}));
  EXPECT_FALSE(s.delete_response({"r1", "alice", 1}));
  auto before = s.look_up_client_ids({{"r1", "", 2}});
  EXPECT_FALSE(before[0].gone);
  EXPECT_TRUE(s.delete_response({"r1", "alice", 2}));
  EXPECT_FALSE(s.delete_response({"r1", "alice", 2}));
  EXPECT_FALSE(s.response_turn({"r1", "alice", 2}));
  // The client id lookup tells a turn continuing it, in the same statement.
  auto after = s.look_up_client_ids({{"r1", "", 0}, {"r1", "", 2}, {"r1", "", 4}, {"zz", "", 2}});
  ASSERT_EQ(after.size(), 4u);
  EXPECT_FALSE(after[0].gone);
  EXPECT_TRUE(after[1].gone);
  EXPECT_FALSE(after[1].turn);
  EXPECT_FALSE(after[2].gone);
  EXPECT_FALSE(after[3].gone);
  EXPECT_TRUE(s.delete_session("r1", "alice"));
  pqxx::connection c{db.url()};
  pqxx::nontransaction n{c};
  EXPECT_EQ(n.exec("SELECT count(*) FROM deleted_responses")[0][0].as<int>(), 0);
}

// pg_store against a real PostgreSQL (PARLEY_TEST_PG_URL, set by scripts/test):
// migrations, epoch fencing and group commit.

#include <gtest/gtest.h>

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
    w.commit();
  }
  pg_store s{db.url()};
  for (auto id : {"d1", "d2"}) {
    s.create_session(new_session(id));
    auto a = s.activate(id, 20);
    ASSERT_EQ(s.commit_turns({turn(id, a->session.epoch, 1, "hi")}).front(),
              commit_outcome::committed);
  }
  ASSERT_EQ(s.put_feedback("d1", "alice", 2, 1, std::nullopt), feedback_outcome::stored);
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


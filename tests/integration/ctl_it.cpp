// `parley ctl` against a real two-node cluster: the built binary runs as a
// child process, and its exit code, stdout and stderr are checked against
// what the admin API and the chat API say.

#include <gtest/gtest.h>

#include <signal.h>

#include <sstream>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

struct ctl : ::testing::Test {
  scratch_db db;
  parley_cluster cluster{db, 2};

  std::string url(int node) { return "http://127.0.0.1:" + std::to_string(cluster[node].port()); }

  /// `parley ctl --url <node> --token <its admin token> args...`
  process_result run(const std::vector<std::string>& args, int node = 0) {
    std::vector<std::string> all{"ctl", "--url", url(node), "--token", cluster[node].admin_token()};
    all.insert(all.end(), args.begin(), args.end());
    return run_process(PARLEY_BIN, all, {{"PARLEY_CTL_URL", ""}});
  }

  /// `run` with --json; the parsed stdout (discarded when it is not JSON).
  json run_json(const std::vector<std::string>& args, int node = 0) {
    std::vector<std::string> all{"--json"};
    all.insert(all.end(), args.begin(), args.end());
    auto r = run(all, node);
    EXPECT_EQ(r.status, 0) << describe(r);
    return json::parse(r.out, nullptr, false);
  }
};

/// The `key value` lines of a human-readable answer.
std::map<std::string, std::string> fields(const std::string& out) {
  std::map<std::string, std::string> m;
  std::istringstream in{out};
  std::string key, value;
  while (in >> key && std::getline(in >> std::ws, value))
    m[key] = value;
  return m;
}

/// The table row (split on blanks) whose first cell is `first`; empty if none.
std::vector<std::string> row_of(const std::string& out, const std::string& first) {
  std::istringstream in{out};
  for (std::string line; std::getline(in, line);) {
    std::istringstream cells{line};
    std::vector<std::string> row;
    for (std::string c; cells >> c;)
      row.push_back(c);
    if (!row.empty() && row[0] == first)
      return row;
  }
  return {};
}

} // namespace

TEST_F(ctl, cluster_lists_both_nodes_up_as_a_table_and_as_json) {
  auto r = run({"cluster"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(row_of(r.out, "NODE"),
            (std::vector<std::string>{"NODE", "STATUS", "HTTP", "CLUSTER", "SESSIONS"}));
  for (int i = 0; i < 2; ++i) {
    auto row = row_of(r.out, cluster[i].node_id());
    ASSERT_EQ(row.size(), 5u) << r.out;
    EXPECT_EQ(row[1], "up") << r.out;
  }
  auto j = run_json({"cluster"}, 1);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["self"], cluster[1].node_id());
  ASSERT_EQ(j["nodes"].size(), 2u) << j.dump();
  for (auto& n : j["nodes"])
    EXPECT_EQ(n["status"], "up") << j.dump();

  // Defaults: the node's own PARLEY_HTTP_* settings and admin token, and
  // PARLEY_CTL_URL over them.
  auto port = std::to_string(cluster[1].port());
  auto by_env = run_process(PARLEY_BIN, {"ctl", "--json", "cluster"},
                            {{"PARLEY_CTL_URL", ""},
                             {"PARLEY_HTTP_HOST", "0.0.0.0"},
                             {"PARLEY_HTTP_PORT", port},
                             {"PARLEY_ADMIN_TOKEN", cluster[1].admin_token()}});
  ASSERT_EQ(by_env.status, 0) << describe(by_env);
  EXPECT_EQ(json::parse(by_env.out, nullptr, false).value("self", ""), cluster[1].node_id());
  auto by_url = run_process(PARLEY_BIN, {"ctl", "--json", "cluster"},
                            {{"PARLEY_CTL_URL", url(0)},
                             {"PARLEY_HTTP_PORT", port},
                             {"PARLEY_ADMIN_TOKEN", cluster[0].admin_token()}});
  ASSERT_EQ(by_url.status, 0) << describe(by_url);
  EXPECT_EQ(json::parse(by_url.out, nullptr, false).value("self", ""), cluster[0].node_id());
}

TEST_F(ctl, a_created_key_chats_and_a_revoked_one_gets_401) {
  auto created = run({"key", "create", "alice"});
  ASSERT_EQ(created.status, 0) << describe(created);
  auto f = fields(created.out);
  auto key = f["api_key"], prefix = f["prefix"];
  ASSERT_FALSE(key.empty()) << created.out;
  EXPECT_EQ(f["user"], "alice");
  EXPECT_EQ(key.rfind(prefix, 0), 0u) << created.out;

  // The key works on either node for a whole turn.
  auto session = cluster[1].create_session(key);
  auto turn = cluster[0].post_message(key, session, {{"content", "hello"}});
  ASSERT_EQ(turn.status, 200) << describe(turn);
  EXPECT_EQ(turn.js()["reply"]["seq"], 2);

  auto revoked = run({"key", "revoke", prefix}, 1);
  ASSERT_EQ(revoked.status, 0) << describe(revoked);
  EXPECT_NE(revoked.out.find("revoked API key " + prefix), std::string::npos) << revoked.out;
  for (int i = 0; i < 2; ++i)
    EXPECT_TRUE(wait_for(
        [&] {
          return cluster[i].post_message(key, session, {{"content", "again"}}).status == 401;
        },
        10s))
        << "node " << i << " still accepts the revoked key";

  auto unknown = run({"key", "revoke", "pk_nosuchkey"});
  EXPECT_EQ(unknown.status, 1) << describe(unknown);
  EXPECT_NE(unknown.err.find("parley ctl: 404 not_found: "), std::string::npos)
    << describe(unknown);

  // --json prints the server's answer, secret included.
  auto j = run_json({"key", "create", "bob"});
  EXPECT_EQ(j["user"], "bob");
  EXPECT_TRUE(j["api_key"].is_string()) << j.dump();

  // key list: a table of alice's keys, revoked marked, with no secret.
  auto listed = run({"key", "list", "alice"});
  ASSERT_EQ(listed.status, 0) << describe(listed);
  EXPECT_NE(listed.out.find(prefix), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("true"), std::string::npos) << "revoked: " << listed.out;
  EXPECT_EQ(listed.out.find(key), std::string::npos) << "no secret: " << listed.out;
  EXPECT_EQ(listed.out.find("bob"), std::string::npos) << listed.out;
  auto all = run({"key", "list"});
  ASSERT_EQ(all.status, 0) << describe(all);
  EXPECT_NE(all.out.find("bob"), std::string::npos) << all.out;
}

TEST_F(ctl, session_shows_where_it_lives_and_migrate_moves_it) {
  auto key = cluster[0].create_key("carol");
  auto session = cluster[0].create_session(key);
  ASSERT_EQ(cluster[0].post_message(key, session, {{"content", "one"}}).status, 200);
  auto host = cluster[0].host_of(session);
  ASSERT_FALSE(host.empty());

  auto shown = run({"session", session}, 1);
  ASSERT_EQ(shown.status, 0) << describe(shown);
  auto f = fields(shown.out);
  EXPECT_EQ(f["id"], session);
  EXPECT_EQ(f["node"], host) << shown.out;
  EXPECT_EQ(f["state"], "active") << shown.out;
  EXPECT_EQ(f["message_count"], "2") << shown.out;
  EXPECT_FALSE(f["epoch"].empty()) << shown.out;
  auto j = run_json({"session", session});
  EXPECT_EQ(j["node"], host) << j.dump();
  EXPECT_EQ(j["last_seq"], 2) << j.dump();

  auto other = host == cluster[0].node_id() ? cluster[1].node_id() : cluster[0].node_id();
  auto moved = run({"migrate", session, other}, 1);
  ASSERT_EQ(moved.status, 0) << describe(moved);
  EXPECT_NE(moved.out.find("now lives on " + other), std::string::npos) << moved.out;
  EXPECT_EQ(cluster[0].host_of(session), other);
  EXPECT_EQ(cluster[1].host_of(session), other);
  EXPECT_EQ(fields(run({"session", session}).out)["node"], other);

  auto later = cluster[0].post_message(key, session, {{"content", "two"}});
  ASSERT_EQ(later.status, 200) << describe(later);
  EXPECT_EQ(later.js()["reply"]["seq"], 4);
  EXPECT_EQ(cluster[1].host_of(session), other);
}

TEST_F(ctl, drain_makes_the_node_leaving) {
  auto r = run({"drain", cluster[1].node_id()});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_NE(r.out.find("node " + cluster[1].node_id() + " is leaving"), std::string::npos) << r.out;
  EXPECT_TRUE(wait_for(
      [&] {
        auto row = row_of(run({"cluster"}).out, cluster[1].node_id());
        return row.size() == 5 && row[1] == "leaving";
      },
      15s))
      << cluster[0].cluster().dump();
}

TEST_F(ctl, errors_have_their_exit_codes_and_messages) {
  auto missing = run({"session", "no-such-session"});
  EXPECT_EQ(missing.status, 1) << describe(missing);
  EXPECT_NE(missing.err.find("parley ctl: 404 not_found: "), std::string::npos)
      << describe(missing);
  // With --json the error body goes to stdout as well.
  auto missing_json = run({"--json", "session", "no-such-session"});
  EXPECT_EQ(missing_json.status, 1);
  EXPECT_EQ(json::parse(missing_json.out, nullptr, false)["error"]["code"], "not_found")
      << describe(missing_json);

  auto wrong_token =
      run_process(PARLEY_BIN, {"ctl", "--url", url(0), "--token", "wrong", "cluster"});
  EXPECT_EQ(wrong_token.status, 1) << describe(wrong_token);
  EXPECT_NE(wrong_token.err.find("parley ctl: 401 unauthorized: "), std::string::npos)
      << describe(wrong_token);

  auto no_node = run({"drain", "no-such-node"});
  EXPECT_EQ(no_node.status, 1) << describe(no_node);
  EXPECT_NE(no_node.err.find("parley ctl: 404 not_found: "), std::string::npos)
      << describe(no_node);
  EXPECT_EQ(row_of(run({"cluster"}).out, cluster[1].node_id()).at(1), "up");

  // Nothing listens: refused at once.
  auto nobody =
      run_process(PARLEY_BIN, {"ctl", "--url", "http://127.0.0.1:" + std::to_string(free_port()),
                               "--token", "t", "cluster"});
  EXPECT_EQ(nobody.status, 3) << describe(nobody);
  EXPECT_NE(nobody.err.find("cannot reach"), std::string::npos) << describe(nobody);
  EXPECT_LT(nobody.took, 5s);

  // A stopped node accepts connections but never answers: --timeout-ms ends it.
  ASSERT_EQ(::kill(cluster[1].process().pid(), SIGSTOP), 0);
  auto hung = run({"--timeout-ms", "500", "cluster"}, 1);
  ::kill(cluster[1].process().pid(), SIGCONT);
  EXPECT_EQ(hung.status, 3) << describe(hung);
  EXPECT_NE(hung.err.find("no answer within 500 ms"), std::string::npos) << describe(hung);
  EXPECT_LT(hung.took, 10s);

  for (auto bad : std::vector<std::vector<std::string>>{{},
                                                        {"frobnicate"},
                                                        {"key"},
                                                        {"key", "rotate", "x"},
                                                        {"session"},
                                                        {"migrate", "s"},
                                                        {"drain", "a", "b"},
                                                        {"--timeout-ms", "soon", "cluster"},
                                                        {"--bogus", "cluster"},
                                                        {"--url", "https://127.0.0.1:1", "cluster"},
                                                        {"--url", "ftp://x", "cluster"}}) {
    auto r = run(bad);
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_EQ(r.err.rfind("parley ctl: ", 0), 0u) << describe(r);
    EXPECT_NE(r.err.find("usage: parley ctl"), std::string::npos) << describe(r);
  }
  auto help = run_process(PARLEY_BIN, {"ctl", "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_EQ(help.out.rfind("usage: parley ctl", 0), 0u) << describe(help);
  auto top = run_process(PARLEY_BIN, {"--help"});
  EXPECT_EQ(top.status, 0);
  EXPECT_NE(top.out.find("parley ctl"), std::string::npos) << describe(top);
}

TEST_F(ctl, actors_prints_the_nodes_actor_types) {
  // A table with a line per actor type, or the node's JSON with --json.
  auto r = run({"actors"});
  ASSERT_EQ(r.status, 0) << describe(r);
  for (auto type : {"edge", "registry", "storage", "membership"})
    EXPECT_NE(r.out.find(type), std::string::npos) << type << "\n" << describe(r);
  auto j = json::parse(run({"--json", "actors"}).out, nullptr, false);
  ASSERT_TRUE(j.contains("actors") && j["actors"].is_array()) << j.dump();
  EXPECT_GE(j["actors"].size(), 4u);
  for (auto& a : j["actors"])
    EXPECT_TRUE(a.contains("mailbox_depth") && a.contains("processing_p99_seconds")) << a.dump();
}

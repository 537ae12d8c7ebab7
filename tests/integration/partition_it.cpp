// Nodes as separate hosts: three network namespaces on a cluster network and
// a service network (PostgreSQL, HTTP). One host is cut off the cluster
// network: the others declare it down and take its sessions over from
// PostgreSQL, while it, still reaching PostgreSQL, keeps its stale session
// actors; those can never commit. After the cut heals it rejoins.

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <thread>

#include "tests/integration/netns_lab.hpp"
#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

constexpr unsigned short http_port = 8080;
constexpr unsigned short cluster_port = 4242;
const std::string token = "partition-test-admin-token-0123456789";

/// Upstream mode (node_harness.hpp): the harness's mock-llm pair listens on
/// 127.0.0.1 of the test's own namespace, which no lab host reaches, so here
/// a primary and a fallback run in the hub on its service address, reached
/// by every host. Construct it while the calling thread is in the hub.
class hub_upstreams {
public:
  explicit hub_upstreams(const netns_lab& lab) {
    if (!upstream_mode())
      return;
    const char* names[] = {"PARLEY_LLM_BASE_URL", "PARLEY_LLM_FALLBACK_BASE_URL"};
    for (int i = 0; i < 2; ++i) {
      auto port = static_cast<unsigned short>(9000 + i);
      auto argv = lab.hub_exec_prefix();
      std::vector<std::string> args(argv.begin() + 1, argv.end());
      args.insert(args.end(), {MOCK_LLM_BIN, "--host", lab.hub_service_ip(), "--port",
                               std::to_string(port)});
      procs_.emplace_back(argv.front(), args, std::map<std::string, std::string>{},
                          "it-logs/partition-mock-" + std::to_string(i) + ".log");
      if (!wait_for(
            [&] {
              return http_at(lab.hub_service_ip(), port, "GET", "/healthz", "", {}, 1s).status ==
                     200;
            },
            10s))
        throw std::runtime_error("mock-llm in the hub did not start:\n" +
                                 procs_.back().log_tail());
      env_[names[i]] = "http://" + lab.hub_service_ip() + ":" + std::to_string(port) + "/v1";
    }
  }
  /// The nodes' upstream settings (empty outside upstream mode).
  const std::map<std::string, std::string>& env() const { return env_; }

private:
  std::vector<child_process> procs_;
  std::map<std::string, std::string> env_;
};

class lab_node {
public:
  lab_node(const netns_lab& lab, int i, const std::string& pg_url, const std::string& seeds,
           const std::map<std::string, std::string>& extra_env = {})
    : ip_(lab.service_ip(i)) {
    auto argv = lab.exec_prefix(i);
    argv.push_back(PARLEY_BIN);
    std::vector<std::string> args(argv.begin() + 1, argv.end());
    std::map<std::string, std::string> env{{"PARLEY_NODE_ID", "node-" + std::to_string(i)},
                                           {"PARLEY_HTTP_HOST", ip_},
                                           {"PARLEY_HTTP_PORT", std::to_string(http_port)},
                                           {"PARLEY_CLUSTER_HOST", lab.cluster_ip(i)},
                                           {"PARLEY_CLUSTER_PORT", std::to_string(cluster_port)},
                                           {"PARLEY_SEEDS", seeds},
                                           {"PARLEY_PG_URL", pg_url},
                                           {"PARLEY_ADMIN_TOKEN", token},
                                           {"PARLEY_FAILURE_DETECT_MS", "1000"}};
    env.insert(extra_env.begin(), extra_env.end());
    proc_ = child_process(argv.front(), args, env,
                          "it-logs/partition-node-" + std::to_string(i) + ".log");
  }

  http_result call(const std::string& method, const std::string& target, const std::string& key,
                   const json& body = nullptr) const {
    headers h;
    if (!key.empty())
      h["Authorization"] = "Bearer " + key;
    return http_at(ip_, http_port, method, target, body.is_null() ? "" : body.dump(), h, 10s);
  }
  http_result admin(const std::string& method, const std::string& target,
                    const json& body = nullptr) const {
    return call(method, target, token, body);
  }
  /// How this node sees member `id` ("" when unknown or unreachable).
  std::string status_of(const std::string& id) const {
    auto r = admin("GET", "/admin/v1/cluster");
    auto view = r.js();
    if (r.status == 200)
      for (auto& m : view["nodes"])
        if (m["id"] == id)
          return m["status"];
    return "";
  }
  child_process& process() { return proc_; }

private:
  std::string ip_;
  child_process proc_;
};

} // namespace

TEST(partition, a_cut_off_node_loses_its_sessions_and_its_stale_actors_cannot_commit) {
  if (auto why = netns_lab::unsupported())
    GTEST_SKIP() << "network namespaces unavailable here: " << *why;
  if (auto why = netns_postgres::unsupported())
    GTEST_SKIP() << "PostgreSQL for the lab unavailable here: " << *why;
  ::mkdir("it-logs", 0755);
  netns_lab lab{3};
  netns_postgres pg{lab};
  netns_lab::in_hub hub{lab};
  hub_upstreams upstreams{lab};
  std::string seeds;
  for (int i = 0; i < 3; ++i)
    seeds += (i ? "," : "") + lab.cluster_ip(i) + ":" + std::to_string(cluster_port);
  std::vector<std::unique_ptr<lab_node>> nodes;
  for (int i = 0; i < 3; ++i)
    nodes.push_back(std::make_unique<lab_node>(lab, i, pg.url(), seeds, upstreams.env()));
  auto& n0 = *nodes[0];
  auto& n2 = *nodes[2];
  auto converged = [&] {
    for (auto& n : nodes)
      for (int j = 0; j < 3; ++j)
        if (n->status_of("node-" + std::to_string(j)) != "up")
          return false;
    return true;
  };
  auto views = [&] {
    std::string out;
    for (int i = 0; i < 3; ++i) {
      auto r = nodes[static_cast<std::size_t>(i)]->admin("GET", "/admin/v1/cluster");
      out += "node-" + std::to_string(i) + " (" + lab.service_ip(i) + "): HTTP " +
             std::to_string(r.status) + " " + r.body + "\n";
    }
    return out;
  };
  ASSERT_TRUE(wait_for(converged, 30s)) << views();

  auto k = n0.admin("POST", "/admin/v1/api-keys", {{"user", "alice"}});
  ASSERT_EQ(k.status, 201) << describe(k);
  std::string key = k.js()["api_key"];
  std::string id;
  for (int i = 0; i < 100 && id.empty(); ++i) {
    auto s = n0.call("POST", "/v1/sessions", key, json::object());
    ASSERT_EQ(s.status, 201);
    std::string candidate = s.js()["id"];
    if (n0.admin("GET", "/admin/v1/sessions/" + candidate).js()["node"] == "node-2")
      id = candidate;
  }
  ASSERT_FALSE(id.empty()) << "no session placed on node-2";
  auto post = [&](const lab_node& via, const std::string& content) {
    return via.call("POST", "/v1/sessions/" + id + "/messages", key,
                    {{"content", content}, {"client_message_id", content}});
  };
  ASSERT_EQ(post(n0, "one").status, 200);
  ASSERT_EQ(post(n2, "two").status, 200);
  auto before = n0.admin("GET", "/admin/v1/sessions/" + id).js();
  ASSERT_EQ(before["node"], "node-2");
  ASSERT_EQ(before["state"], "active");

  // Cut node-2 off the cluster network: no RST, only silence.
  lab.cut(2);
  auto cut_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_for([&] { return n0.status_of("node-2") == "down"; }, 3s));
  auto detect_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - cut_at)
                     .count();
  // The others take the session over from PostgreSQL.
  http_result taken;
  ASSERT_TRUE(wait_for([&] { return (taken = post(n0, "three")).status == 200; }, 5s))
    << describe(taken);
  EXPECT_EQ(taken.js()["user_message"]["seq"], 5);
  auto serving_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - cut_at)
                      .count();
  std::printf("[ figures  ] partition: node declared down after %lld ms, its session served "
              "elsewhere after %lld ms\n",
              static_cast<long long>(detect_ms), static_cast<long long>(serving_ms));
  auto now_on = n0.admin("GET", "/admin/v1/sessions/" + id).js();
  EXPECT_NE(now_on["node"], "node-2");
  EXPECT_GT(now_on["epoch"], before["epoch"]);

  // node-2 still believes it hosts the session and still reaches
  // PostgreSQL: its actor's commit is refused by the epoch fence.
  // Each side detects the silence on its own clock: node-2 may learn a
  // moment after node-0 did.
  EXPECT_TRUE(wait_for([&] { return n2.status_of("node-0") == "down"; }, 3s))
    << n2.status_of("node-0");
  auto stale = post(n2, "stale");
  EXPECT_EQ(stale.status, 503) << describe(stale);
  EXPECT_FALSE(stale.header("retry-after").empty());

  // Heal: node-2 rejoins, and whichever way its next turn goes, nothing
  // stale is stored and the history stays gapless.
  lab.heal(2);
  auto after_heal = post(n2, "after-heal");
  EXPECT_TRUE(after_heal.status == 200 || after_heal.status == 503) << describe(after_heal);
  ASSERT_TRUE(wait_for(converged, 20s)) << views();
  for (int i = 0; i < 3; ++i) {
    auto r = post(*nodes[static_cast<std::size_t>(i)], "healed-" + std::to_string(i));
    EXPECT_EQ(r.status, 200) << "via node-" << i << ": " << describe(r);
  }
  auto msgs = n0.call("GET", "/v1/sessions/" + id + "/messages?limit=500", key).js()["data"];
  std::vector<std::string> users;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    EXPECT_EQ(msgs[i]["seq"], i + 1);
    if (msgs[i]["role"] == "user") {
      users.push_back(msgs[i]["content"]);
    } else if (i > 0) {
      EXPECT_EQ(msgs[i]["content"], expected_reply(msgs[i - 1]["content"].get<std::string>()))
        << "seq " << i + 1;
    }
  }
  std::vector<std::string> expected{"one", "two", "three"};
  if (after_heal.status == 200)
    expected.push_back("after-heal");
  for (int i = 0; i < 3; ++i)
    expected.push_back("healed-" + std::to_string(i));
  EXPECT_EQ(users, expected);

  for (auto& n : nodes)
    EXPECT_EQ(n->process().terminate(), 0);
}

// The network-namespace lab itself: hosts reach each other over the cluster
// network and the test reaches them over the service network; cut() and
// heal() partition one host; PostgreSQL runs in the hub; nothing is left
// behind. Skips (with the reason) where namespaces cannot be made.

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <pqxx/pqxx>

#include "tests/integration/netns_lab.hpp"
#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

long long ms_since(clock_type::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t).count();
}

bool eventually(const std::function<bool()>& ok, std::chrono::milliseconds limit) {
  auto until = clock_type::now() + limit;
  while (clock_type::now() < until) {
    if (ok())
      return true;
    std::this_thread::sleep_for(50ms);
  }
  return ok();
}

/// First column of `ip netns list`.
std::set<std::string> namespaces() {
  auto r = run_command({netns_lab::ip_path(), "netns", "list"});
  std::set<std::string> names;
  std::istringstream in{r.out};
  std::string line;
  while (std::getline(in, line))
    if (!line.empty())
      names.insert(line.substr(0, line.find(' ')));
  return names;
}

std::set<std::string> with_prefix(const std::set<std::string>& names, const std::string& p) {
  std::set<std::string> out;
  for (auto& n : names)
    if (n.rfind(p, 0) == 0)
      out.insert(n);
  return out;
}

/// `ip -o link` of the root namespace, one "name" per link (indexes and
/// counters left out).
std::set<std::string> root_links() {
  auto r = run_command({netns_lab::ip_path(), "-o", "link", "show"});
  std::set<std::string> names;
  std::istringstream in{r.out};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f{line};
    std::string index, name;
    f >> index >> name;
    if (!name.empty())
      names.insert(name);
  }
  return names;
}

/// The calling thread's network namespace, e.g. "net:[4026531840]".
std::string thread_netns() {
  char buf[64] = {};
  auto path = "/proc/self/task/" + std::to_string(::syscall(SYS_gettid)) + "/ns/net";
  auto n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string{};
}

/// A mock-llm listening on ip:port inside host `host`, started through
/// exec_prefix(); waits until it answers /healthz there.
child_process start_mock(const netns_lab& lab, int host, const std::string& ip,
                         unsigned short port) {
  ::mkdir("it-logs", 0755);
  auto prefix = lab.exec_prefix(host);
  std::vector<std::string> args(prefix.begin() + 1, prefix.end());
  args.insert(args.end(), {MOCK_LLM_BIN, "--host", ip, "--port", std::to_string(port)});
  child_process p{prefix[0], args, {},
                  "it-logs/netns-mock-" + ip + "-" + std::to_string(port) + ".log"};
  bool up = eventually(
    [&] {
      netns_lab::in_host in{lab, host};
      return http_at(ip, port, "GET", "/healthz", "", {}, 1s).status == 200;
    },
    10s);
  if (!up)
    throw std::runtime_error("mock-llm on " + ip + ":" + std::to_string(port) +
                             " did not start:\n" + p.log_tail());
  return p;
}

/// Whether a TCP connection from host `from` to ip:port completes.
bool reach(const netns_lab& lab, int from, const std::string& ip, unsigned short port,
           std::chrono::milliseconds timeout = 1500ms) {
  netns_lab::in_host in{lab, from};
  return can_connect(ip, port, timeout);
}

class netns : public ::testing::Test {
protected:
  void SetUp() override {
    if (auto why = netns_lab::unsupported())
      GTEST_SKIP() << "network-namespace lab unsupported here: " << *why;
  }
};

constexpr unsigned short mock_port = 9000;

} // namespace

TEST_F(netns, hosts_reach_each_other_and_cut_partitions_one) {
  auto links_before = root_links();
  std::string prefix;
  {
    auto t0 = clock_type::now();
    std::optional<netns_lab> holder{std::in_place, 3};
    auto& lab = *holder;
    auto setup_ms = ms_since(t0);
    prefix = lab.prefix();
    EXPECT_EQ(with_prefix(namespaces(), prefix).size(), 4u);
    std::cout << "[ timing   ] netns_lab{3} set up in " << setup_ms << " ms\n";
    RecordProperty("setup_ms_3_hosts", std::to_string(setup_ms));

    // A server on every host's cluster address, and one on host 0's service address.
    std::vector<child_process> cluster_mocks;
    for (int h = 0; h < lab.hosts(); ++h)
      cluster_mocks.push_back(start_mock(lab, h, lab.cluster_ip(h), mock_port));
    auto service_mock = start_mock(lab, 0, lab.service_ip(0), mock_port);

    // Host 1 reaches host 0's cluster address over HTTP, and back.
    {
      netns_lab::in_host in{lab, 1};
      auto r = http_at(lab.cluster_ip(0), mock_port, "GET", "/healthz", "", {}, 5s);
      EXPECT_EQ(r.status, 200) << describe(r);
    }
    EXPECT_TRUE(reach(lab, 0, lab.cluster_ip(1), mock_port));
    // The test, in the hub, reaches host 0's service address.
    auto own_netns = thread_netns();
    {
      netns_lab::in_hub in{lab};
      EXPECT_NE(thread_netns(), own_netns);
      auto r = http_at(lab.service_ip(0), mock_port, "GET", "/healthz", "", {}, 5s);
      EXPECT_EQ(r.status, 200) << describe(r);
      // The hub has no address on the cluster network.
      EXPECT_FALSE(can_connect(lab.cluster_ip(0), mock_port, 500ms));
    }
    // Hosts cannot talk to each other over the service network.
    EXPECT_FALSE(reach(lab, 1, lab.service_ip(0), mock_port, 1000ms));
    // The test thread is back in its own namespace. (Connecting from there
    // proves nothing: lab addresses follow its default route, and an egress
    // proxy may accept any connection.)
    EXPECT_EQ(thread_netns(), own_netns);

    auto t1 = clock_type::now();
    lab.cut(0);
    std::cout << "[ timing   ] cut(0) in " << ms_since(t1) << " ms\n";
    EXPECT_TRUE(lab.is_cut(0));
    EXPECT_FALSE(reach(lab, 1, lab.cluster_ip(0), mock_port)) << "peer still reaches the cut host";
    EXPECT_FALSE(reach(lab, 2, lab.cluster_ip(0), mock_port)) << "peer still reaches the cut host";
    EXPECT_FALSE(reach(lab, 0, lab.cluster_ip(1), mock_port)) << "cut host still reaches a peer";
    EXPECT_TRUE(reach(lab, 1, lab.cluster_ip(2), mock_port)) << "the other hosts are cut off too";
    {
      netns_lab::in_hub in{lab};
      auto r = http_at(lab.service_ip(0), mock_port, "GET", "/healthz", "", {}, 5s);
      EXPECT_EQ(r.status, 200) << "service link of the cut host is down: " << describe(r);
    }
    // A process started on the cut host can still bind its cluster address
    // (a node restarted during a partition), but nobody else reaches it.
    auto late = start_mock(lab, 0, lab.cluster_ip(0), mock_port + 1);
    EXPECT_FALSE(reach(lab, 1, lab.cluster_ip(0), mock_port + 1));
    lab.cut(0); // idempotent

    auto t2 = clock_type::now();
    lab.heal(0);
    std::cout << "[ timing   ] heal(0) in " << ms_since(t2) << " ms\n";
    EXPECT_FALSE(lab.is_cut(0));
    auto t3 = clock_type::now();
    EXPECT_TRUE(eventually([&] { return reach(lab, 1, lab.cluster_ip(0), mock_port, 500ms); }, 10s));
    std::cout << "[ timing   ] host 1 reached host 0 again " << ms_since(t3)
              << " ms after heal(0)\n";
    EXPECT_TRUE(reach(lab, 0, lab.cluster_ip(1), mock_port));
    EXPECT_TRUE(reach(lab, 2, lab.cluster_ip(0), mock_port + 1));
    {
      netns_lab::in_host in{lab, 1};
      auto r = http_at(lab.cluster_ip(0), mock_port, "GET", "/healthz", "", {}, 5s);
      EXPECT_EQ(r.status, 200) << describe(r);
    }
    lab.heal(0); // idempotent

    late.terminate(5s);
    service_mock.terminate(5s);
    for (auto& m : cluster_mocks)
      m.terminate(5s);
    auto t4 = clock_type::now();
    holder.reset();
    auto teardown_ms = ms_since(t4);
    std::cout << "[ timing   ] netns_lab{3} torn down in " << teardown_ms << " ms\n";
    RecordProperty("teardown_ms_3_hosts", std::to_string(teardown_ms));
  }
  EXPECT_TRUE(with_prefix(namespaces(), prefix).empty());
  EXPECT_EQ(root_links(), links_before);
}

TEST_F(netns, postgres_in_the_hub) {
  if (auto why = netns_postgres::unsupported())
    GTEST_SKIP() << "PostgreSQL unsupported here: " << *why;
  std::string prefix, dir;
  pid_t pid = -1;
  {
    netns_lab lab{2};
    prefix = lab.prefix();
    auto t0 = clock_type::now();
    std::optional<netns_postgres> pg{std::in_place, lab};
    auto start_ms = ms_since(t0);
    std::cout << "[ timing   ] netns_postgres started in " << start_ms << " ms\n";
    RecordProperty("postgres_start_ms", std::to_string(start_ms));
    dir = pg->dir();
    pid = pg->pid();
    EXPECT_LT(pg->port(), 32768);
    EXPECT_EQ(pg->url(), "host=" + lab.hub_service_ip() + " port=" + std::to_string(pg->port()) +
                           " user=postgres dbname=postgres");
    {
      netns_lab::in_hub in{lab};
      pqxx::connection c{pg->url()};
      pqxx::nontransaction n{c};
      EXPECT_EQ(n.exec("SELECT 1")[0][0].as<int>(), 1);
      EXPECT_EQ(n.exec("SELECT current_setting('fsync')")[0][0].as<std::string>(), "off");
    }
    // A node on a host reaches it over the service network, even while cut.
    lab.cut(1);
    {
      netns_lab::in_host in{lab, 1};
      pqxx::connection c{pg->url()};
      pqxx::nontransaction n{c};
      EXPECT_EQ(n.exec("SELECT host(inet_client_addr())")[0][0].as<std::string>(),
                lab.service_ip(1));
    }
    auto t1 = clock_type::now();
    pg.reset();
    std::cout << "[ timing   ] netns_postgres stopped and removed in " << ms_since(t1) << " ms\n";
    EXPECT_TRUE(::kill(pid, 0) != 0 && errno == ESRCH) << "postgres PID " << pid << " survived";
    EXPECT_FALSE(std::filesystem::exists(dir)) << dir;
  }
  EXPECT_TRUE(with_prefix(namespaces(), prefix).empty());
}

TEST_F(netns, leftovers_of_a_dead_run_are_removed) {
  auto links_before = root_links();
  // The PID of a dead process: a child that exited and is not reaped yet (a
  // SIGKILLed test stays a zombie until its parent, e.g. ctest, reaps it).
  pid_t dead = ::fork();
  if (dead == 0)
    ::_exit(0);
  ASSERT_GT(dead, 0);
  ASSERT_TRUE(eventually(
    [&] {
      std::ifstream stat{"/proc/" + std::to_string(dead) + "/stat"};
      std::string all;
      std::getline(stat, all);
      return all.find(") Z") != std::string::npos;
    },
    5s));
  struct reap {
    pid_t pid;
    ~reap() {
      int st;
      ::waitpid(pid, &st, 0);
    }
  } reap_dead{dead};
  auto stale = "pl" + std::to_string(dead) + "-0-hub";
  auto other = "plx" + std::to_string(dead) + "-0-hub"; // not ours: must survive
  ASSERT_TRUE(run_command({netns_lab::ip_path(), "netns", "add", stale}).ok());
  ASSERT_TRUE(run_command({netns_lab::ip_path(), "netns", "add", other}).ok());
  // A process left running in the stale namespace.
  child_process orphan{netns_lab::ip_path(), {"netns", "exec", stale, "sleep", "600"}, {},
                       "/dev/null"};
  ASSERT_TRUE(eventually(
    [&] {
      auto r = run_command({netns_lab::ip_path(), "netns", "pids", stale});
      return r.out.find(std::to_string(orphan.pid())) != std::string::npos;
    },
    5s));

  std::string prefix;
  {
    netns_lab lab{1};
    prefix = lab.prefix();
    auto names = namespaces();
    EXPECT_EQ(names.count(stale), 0u) << "stale namespace survived";
    EXPECT_EQ(names.count(other), 1u) << "a namespace that is not the lab's was deleted";
    EXPECT_TRUE(eventually([&] { return !orphan.alive(); }, 5s))
      << "process in the stale namespace survived";
    EXPECT_EQ(with_prefix(names, prefix).size(), 2u);
  }
  run_command({netns_lab::ip_path(), "netns", "delete", other});
  EXPECT_TRUE(with_prefix(namespaces(), prefix).empty());
  EXPECT_EQ(root_links(), links_before);
}

TEST_F(netns, processes_left_in_the_lab_are_killed) {
  std::string prefix;
  child_process left;
  {
    netns_lab lab{1};
    prefix = lab.prefix();
    auto pre = lab.exec_prefix(0);
    std::vector<std::string> args(pre.begin() + 1, pre.end());
    args.insert(args.end(), {"sleep", "600"});
    left = child_process{pre[0], args, {}, "/dev/null"};
    ASSERT_TRUE(eventually(
      [&] {
        auto r = run_command({netns_lab::ip_path(), "netns", "pids", lab.host_ns(0)});
        return r.out.find(std::to_string(left.pid())) != std::string::npos;
      },
      5s));
  }
  EXPECT_TRUE(eventually([&] { return !left.alive(); }, 5s));
  EXPECT_TRUE(with_prefix(namespaces(), prefix).empty());
}

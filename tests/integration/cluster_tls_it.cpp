// Mutual TLS on the cluster port (API.md sections 1 and 6): nodes with
// certificates from the cluster's CA form a cluster and serve each other's
// sessions; a Parley process without a certificate, one with a certificate
// from another CA, and bare CAF peers (plain BASP, anonymous TLS, another
// CA) never get in. Plain mode logs one warning; a partial or broken TLS
// configuration is a fatal configuration error. The test makes its own CAs
// and certificates with the openssl CLI in a temporary folder.

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/remote_actor.hpp>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;
using namespace std::chrono_literals;

namespace {

/// A temporary folder of PEM files: CAs and certificates they signed.
class pki {
public:
  pki() {
    char tmpl[] = "/tmp/parley-cluster-tls-XXXXXX";
    if (!::mkdtemp(tmpl))
      throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
  }
  ~pki() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  pki(const pki&) = delete;
  pki& operator=(const pki&) = delete;

  /// A self-signed CA `name` (name.pem, name.key).
  void make_ca(const std::string& name) {
    run({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path(name + ".key"), "-out",
         path(name + ".pem"), "-days", "2", "-subj", "/CN=" + name});
  }

  /// A certificate `name` (name.pem, name.key) signed by CA `ca`.
  void make_cert(const std::string& name, const std::string& ca) {
    run({"req", "-newkey", "rsa:2048", "-nodes", "-keyout", path(name + ".key"), "-out",
         path(name + ".csr"), "-subj", "/CN=" + name});
    run({"x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"), "-CAkey",
         path(ca + ".key"), "-CAcreateserial", "-out", path(name + ".pem"), "-days", "2"});
  }

  /// A file holding the concatenation of `parts` (e.g. a CA bundle).
  std::string concat(const std::string& name, const std::vector<std::string>& parts) {
    std::ofstream out{path(name)};
    for (auto& p : parts)
      out << std::ifstream{path(p)}.rdbuf();
    return path(name);
  }

  std::string path(const std::string& file) const { return dir_ + "/" + file; }

  /// The PARLEY_CLUSTER_TLS_* settings of certificate `name` trusting `ca_file`.
  std::map<std::string, std::string> env(const std::string& name, const std::string& ca_file) {
    return {{"PARLEY_CLUSTER_TLS_CERT", path(name + ".pem")},
            {"PARLEY_CLUSTER_TLS_KEY", path(name + ".key")},
            {"PARLEY_CLUSTER_TLS_CA", ca_file}};
  }

private:
  void run(const std::vector<std::string>& args) {
    auto r = run_process("openssl", args, {}, 60s);
    if (r.status != 0)
      throw std::runtime_error("openssl failed: " + describe(r));
  }

  std::string dir_;
};

/// The ids of the members in `node`'s view, whatever their status.
std::set<std::string> member_ids(const parley_node& node) {
  std::set<std::string> ids;
  auto view = node.cluster();
  if (view.is_object())
    for (auto& m : view["nodes"])
      ids.insert(m["id"].get<std::string>());
  return ids;
}

/// `node`'s view of member `id`'s status ("" when unknown).
std::string status_of(const parley_node& node, const std::string& id) {
  auto view = node.cluster();
  if (view.is_object())
    for (auto& m : view["nodes"])
      if (m["id"] == id)
        return m["status"];
  return "";
}

/// Lines of a log file that contain `text`.
int count_lines(const std::string& path, const std::string& text) {
  std::istringstream in{file_tail(path, 1000000)};
  int n = 0;
  for (std::string l; std::getline(in, l);)
    n += l.find(text) != std::string::npos;
  return n;
}

/// A TCP connection to 127.0.0.1:port that sends nothing (-1 on failure).
int silent_connection(unsigned short port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Samples every `nodes`' view for `span`: true when each of them listed
/// each of `ids` as up every time.
bool stays_up(const std::vector<const parley_node*>& nodes, const std::set<std::string>& ids,
              std::chrono::milliseconds span) {
  auto until = std::chrono::steady_clock::now() + span;
  int samples = 0;
  while (std::chrono::steady_clock::now() < until) {
    for (auto* n : nodes)
      for (auto& id : ids)
        if (status_of(*n, id) != "up") {
          ADD_FAILURE() << n->node_id() << " lists " << id << " as '" << status_of(*n, id)
                        << "' after " << samples << " good samples: " << n->cluster().dump();
          return false;
        }
    ++samples;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

constexpr const char* plain_warning = "the cluster port is plain";

/// `n` members node-0, node-1, ... with certificates from `p`'s
/// "cluster-ca" (made here), each seeded with every member's cluster
/// address; their cluster ports go to `cports` when given.
std::vector<std::unique_ptr<parley_node>> tls_members(pki& p, const scratch_db& db, int n,
                                                      std::vector<unsigned short>* cports = nullptr) {
  std::vector<unsigned short> ports;
  std::string seeds;
  for (int i = 0; i < n; ++i) {
    ports.push_back(free_port());
    seeds += (seeds.empty() ? "" : ",") + std::string{"127.0.0.1:"} + std::to_string(ports.back());
  }
  std::vector<std::unique_ptr<parley_node>> nodes;
  for (int i = 0; i < n; ++i) {
    auto id = "node-" + std::to_string(i);
    p.make_cert(id, "cluster-ca");
    auto env = p.env(id, p.path("cluster-ca.pem"));
    env["PARLEY_NODE_ID"] = id;
    env["PARLEY_CLUSTER_PORT"] = std::to_string(ports[static_cast<std::size_t>(i)]);
    env["PARLEY_SEEDS"] = seeds;
    env["PARLEY_FAILURE_DETECT_MS"] = "1500";
    nodes.push_back(std::make_unique<parley_node>(db, env));
  }
  if (cports)
    *cports = ports;
  return nodes;
}

} // namespace

// Two members with certificates from the cluster CA, a Parley process with
// no certificate and one with a certificate from another CA (that trusts
// the cluster CA too), all seeded with every address: the members find each
// other and serve each other's sessions, the strangers are never listed,
// never routed a turn, and cannot drain a member or take a session.
TEST(cluster_tls, members_form_a_cluster_and_strangers_stay_out) {
  pki p;
  p.make_ca("cluster-ca");
  p.make_ca("other-ca");
  p.make_cert("node-0", "cluster-ca");
  p.make_cert("node-1", "cluster-ca");
  p.make_cert("stranger", "other-ca");
  auto both_cas = p.concat("both-cas.pem", {"other-ca.pem", "cluster-ca.pem"});

  scratch_db db, stranger_db;
  std::vector<unsigned short> cports{free_port(), free_port(), free_port(), free_port()};
  std::string seeds;
  for (auto port : cports)
    seeds += (seeds.empty() ? "" : ",") + std::string{"127.0.0.1:"} + std::to_string(port);
  auto env_of = [&](const std::string& id, unsigned short cport,
                    std::map<std::string, std::string> tls) {
    tls["PARLEY_NODE_ID"] = id;
    tls["PARLEY_CLUSTER_PORT"] = std::to_string(cport);
    tls["PARLEY_SEEDS"] = seeds;
    tls["PARLEY_FAILURE_DETECT_MS"] = "1500";
    return tls;
  };
  parley_node n0{db, env_of("node-0", cports[0], p.env("node-0", p.path("cluster-ca.pem")))};
  parley_node n1{db, env_of("node-1", cports[1], p.env("node-1", p.path("cluster-ca.pem")))};
  parley_node plain{stranger_db, env_of("stranger-plain", cports[2], {})};
  parley_node other{stranger_db,
                    env_of("stranger-other-ca", cports[3], p.env("stranger", both_cas))};

  // A TCP connection that never speaks must not hold anything up.
  int silent = silent_connection(cports[0]);
  ASSERT_GE(silent, 0);

  const std::set<std::string> members{"node-0", "node-1"};
  ASSERT_TRUE(wait_for(
      [&] { return status_of(n0, "node-1") == "up" && status_of(n1, "node-0") == "up"; }, 20s))
      << n0.cluster().dump() << "\n"
      << n0.process().log_tail();
  // Every node dials every seed once a second: give the strangers several
  // rounds in both directions, during which the members never lose each
  // other (a stranger's failed handshake once dropped members' connections).
  EXPECT_TRUE(stays_up({&n0, &n1}, members, 4s));
  EXPECT_EQ(member_ids(n0), members) << n0.cluster().dump();
  EXPECT_EQ(member_ids(n1), members) << n1.cluster().dump();
  EXPECT_EQ(member_ids(plain), std::set<std::string>{"stranger-plain"}) << plain.cluster().dump();
  EXPECT_EQ(member_ids(other), std::set<std::string>{"stranger-other-ca"})
      << other.cluster().dump();
  EXPECT_EQ(count_lines(n0.process().log_path(), plain_warning), 0);
  EXPECT_EQ(count_lines(plain.process().log_path(), plain_warning), 1);

  // Turns across nodes: sessions hosted by either member, each posted
  // through both, never placed on a stranger.
  auto key = n0.create_key("alice");
  std::vector<std::string> ids;
  std::set<std::string> hosts;
  for (int i = 0; i < 16; ++i) {
    ids.push_back((i % 2 ? n1 : n0).create_session(key));
    auto host = n0.host_of(ids.back());
    EXPECT_EQ(n1.host_of(ids.back()), host);
    hosts.insert(host);
  }
  EXPECT_EQ(hosts, members) << "16 sessions should land on both members and nowhere else";
  for (int round = 0; round < 2; ++round)
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto& via = (i + round) % 2 ? n1 : n0;
      auto content = "t" + std::to_string(round) + "-" + std::to_string(i);
      auto r = via.post_message(key, ids[i], {{"content", content}});
      ASSERT_EQ(r.status, 200) << describe(r);
      EXPECT_EQ(r.js()["reply"]["content"], expected_reply(content));
      EXPECT_EQ(r.js()["reply"]["seq"], 2 * round + 2);
    }

  // A migration over the TLS connection, then a turn through the other node.
  std::string moved;
  for (auto& id : ids)
    if (n0.host_of(id) == "node-0")
      moved = id;
  ASSERT_FALSE(moved.empty());
  auto m = n1.admin("POST", "/admin/v1/sessions/" + moved + "/migrate", {{"to", "node-1"}});
  ASSERT_EQ(m.status, 200) << describe(m);
  EXPECT_EQ(n0.host_of(moved), "node-1");
  auto r = n0.post_message(key, moved, {{"content", "after the move"}});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.js()["reply"]["seq"], 6);

  // The strangers cannot reach a member to drain it or take a session.
  for (auto* s : {&plain, &other}) {
    EXPECT_EQ(s->admin("POST", "/admin/v1/nodes/node-0/drain").status, 404);
    EXPECT_EQ(s->admin("POST", "/admin/v1/nodes/node-1/drain").status, 404);
    EXPECT_NE(
        s->admin("POST", "/admin/v1/sessions/" + moved + "/migrate", {{"to", s->node_id()}}).status,
        200);
  }
  std::this_thread::sleep_for(1s);
  for (auto* n : {&n0, &n1}) {
    EXPECT_EQ(member_ids(*n), members);
    EXPECT_EQ(status_of(*n, "node-0"), "up");
    EXPECT_EQ(status_of(*n, "node-1"), "up");
    EXPECT_EQ(n->host_of(moved), "node-1");
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto r2 = (i % 2 ? n0 : n1).post_message(key, ids[i], {{"content", "last"}});
    ASSERT_EQ(r2.status, 200) << describe(r2);
  }
  ::close(silent);
  EXPECT_TRUE(n0.process().alive());
  EXPECT_TRUE(n1.process().alive());
}

// A member killed with SIGKILL (its TLS connections end without a TLS
// close) is declared down within the failure-detection bound, and the
// members left keep their connection and serve each other's sessions.
TEST(cluster_tls, a_killed_member_leaves_the_others_connected) {
  pki p;
  p.make_ca("cluster-ca");
  scratch_db db;
  auto nodes = tls_members(p, db, 3);
  const std::set<std::string> all{"node-0", "node-1", "node-2"};
  ASSERT_TRUE(wait_for(
      [&] {
        for (auto& n : nodes)
          for (auto& id : all)
            if (status_of(*n, id) != "up")
              return false;
        return true;
      },
      20s))
      << nodes[0]->cluster().dump();
  auto key = nodes[0]->create_key("alice");
  nodes[2]->kill9();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_for([&] { return status_of(*nodes[0], "node-2") == "down"; }, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms);
  EXPECT_TRUE(stays_up({nodes[0].get(), nodes[1].get()}, {"node-0", "node-1"}, 4s));
  for (int i = 0; i < 8; ++i) {
    auto id = nodes[static_cast<std::size_t>(i % 2)]->create_session(key);
    auto r = nodes[static_cast<std::size_t>(1 - i % 2)]->post_message(key, id, {{"content", "x"}});
    EXPECT_EQ(r.status, 200) << describe(r);
  }
}

namespace {

/// The entries of `dir` whose name starts with `prefix`.
std::vector<std::string> entries(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0)
      out.push_back(e.path().filename().string());
  return out;
}

} // namespace

// A node keeps its cluster identity (the private key too) in private
// copies under TMPDIR, in a directory it holds locked; a node that is
// killed cannot remove them, so the next node to start there removes the
// copies nobody holds locked (the kernel let the killed node's lock go),
// and a node that stops removes its own. Others' live copies stay.
TEST(cluster_tls, a_killed_nodes_key_copies_are_removed_by_the_next_start) {
  pki p;
  p.make_ca("cluster-ca");
  p.make_cert("node-0", "cluster-ca");
  auto tmp = p.path("tmp");
  std::filesystem::create_directory(tmp);
  scratch_db db;
  auto env = p.env("node-0", p.path("cluster-ca.pem"));
  env["TMPDIR"] = tmp;
  auto first = std::make_unique<parley_node>(db, env);
  auto left = entries(tmp, "parley-tls-");
  ASSERT_EQ(left.size(), 1u);
  first->kill9();
  first.reset();
  EXPECT_EQ(entries(tmp, "parley-tls-"), left) << "the killed node's copies are there";
  // A directory of our name that its process holds locked, as a live node
  // does, is not touched, whatever pid its name says (here one that no
  // process of this namespace has, as for a node in another container).
  const std::string live_name = "parley-tls-4194305-live";
  auto alive = tmp + "/" + live_name;
  std::filesystem::create_directory(alive);
  std::ofstream{alive + "/identity.pem"} << "x";
  int held = ::open(alive.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX | LOCK_NB), 0);
  parley_node second{db, env};
  auto now = entries(tmp, "parley-tls-");
  EXPECT_EQ(now.size(), 2u);
  EXPECT_EQ(std::count(now.begin(), now.end(), left.front()), 0) << "the stale copies stayed";
  EXPECT_TRUE(std::filesystem::exists(alive + "/identity.pem"));
  EXPECT_EQ(second.stop(), 0);
  EXPECT_EQ(entries(tmp, "parley-tls-"), std::vector<std::string>{live_name});
  ::close(held);
}

// Below Parley: a bare CAF peer gets no handle on a member's membership
// actor (so it can send it nothing: no hello, no drain, no migration)
// unless it holds a certificate from the cluster CA.
TEST(cluster_tls, only_a_peer_with_a_cluster_certificate_gets_a_handle) {
  pki p;
  p.make_ca("cluster-ca");
  p.make_ca("other-ca");
  p.make_cert("node-0", "cluster-ca");
  p.make_cert("peer", "cluster-ca");
  p.make_cert("stranger", "other-ca");
  auto both_cas = p.concat("both-cas.pem", {"other-ca.pem", "cluster-ca.pem"});
  scratch_db db;
  auto cport = free_port();
  auto env = p.env("node-0", p.path("cluster-ca.pem"));
  env["PARLEY_CLUSTER_PORT"] = std::to_string(cport);
  parley_node node{db, env};

  // Connects as a CAF peer with `tls` settings (none: plain BASP); the
  // error text, or "" when a handle came back. Bounded: a hung handshake
  // counts as refused but fails the bound check below.
  auto try_connect = [&](std::map<std::string, std::string> tls, bool use_tls) {
    caf::actor_system_config cfg;
    cfg.load<caf::io::middleman>();
    if (use_tls) {
      cfg.load<caf::openssl::manager>();
      cfg.openssl_certificate = tls["cert"];
      cfg.openssl_key = tls["key"];
      cfg.openssl_cafile = tls["ca"];
    }
    caf::actor_system sys{cfg};
    auto t0 = std::chrono::steady_clock::now();
    std::string out;
    if (use_tls) {
      auto a = caf::openssl::remote_actor(sys, "127.0.0.1", cport);
      out = a ? "" : sys.render(a.error());
    } else {
      auto a = sys.middleman().remote_actor("127.0.0.1", cport);
      out = a ? "" : sys.render(a.error());
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
    return out;
  };
  auto plain = try_connect({}, false);
  EXPECT_FALSE(plain.empty()) << "a plain BASP peer got a handle";
  auto anonymous = try_connect({}, true);
  EXPECT_FALSE(anonymous.empty()) << "an anonymous TLS peer got a handle";
  auto stranger = try_connect(
      {{"cert", p.path("stranger.pem")}, {"key", p.path("stranger.key")}, {"ca", both_cas}}, true);
  EXPECT_FALSE(stranger.empty()) << "a peer with another CA's certificate got a handle";
  // The control: the same call with a cluster certificate works.
  auto member = try_connect(
      {{"cert", p.path("peer.pem")}, {"key", p.path("peer.key")}, {"ca", p.path("cluster-ca.pem")}},
      true);
  EXPECT_EQ(member, "") << "a peer with a cluster certificate was refused";
  EXPECT_TRUE(node.process().alive()) << node.process().log_tail();
  EXPECT_EQ(status_of(node, node.node_id()), "up");
  EXPECT_EQ(member_ids(node).size(), 1u);
}

// Plain mode still works (the cluster suites run it) and says so once; a
// partial or unusable TLS configuration stops the node at start-up with a
// message that names the setting.
TEST(cluster_tls, plain_mode_warns_once_and_bad_settings_are_fatal) {
  pki p;
  p.make_ca("cluster-ca");
  p.make_ca("other-ca");
  p.make_cert("node-0", "cluster-ca");
  p.make_cert("stranger", "other-ca");
  scratch_db db;
  {
    parley_node node{db};
    EXPECT_EQ(count_lines(node.process().log_path(), plain_warning), 1)
        << node.process().log_tail();
  }

  auto start = [&](std::map<std::string, std::string> tls) {
    tls["PARLEY_PG_URL"] = db.url();
    tls["PARLEY_ADMIN_TOKEN"] = "0123456789abcdef0123456789abcdef";
    tls["PARLEY_HTTP_PORT"] = std::to_string(free_port());
    tls["PARLEY_CLUSTER_PORT"] = std::to_string(free_port());
    return run_process(PARLEY_BIN, {}, tls, 30s);
  };
  auto full = p.env("node-0", p.path("cluster-ca.pem"));
  for (auto missing :
       {"PARLEY_CLUSTER_TLS_CERT", "PARLEY_CLUSTER_TLS_KEY", "PARLEY_CLUSTER_TLS_CA"}) {
    auto env = full;
    env.erase(missing);
    auto r = start(env);
    EXPECT_EQ(r.status, 2) << describe(r);
    EXPECT_NE(r.err.find(missing), std::string::npos) << describe(r);
  }
  struct bad_case {
    std::string setting, file;
  };
  for (auto& [setting, file] :
       std::vector<bad_case>{{"PARLEY_CLUSTER_TLS_CERT", p.path("nope.pem")},
                             {"PARLEY_CLUSTER_TLS_KEY", p.path("cluster-ca.pem")},
                             {"PARLEY_CLUSTER_TLS_KEY", p.path("stranger.key")},
                             {"PARLEY_CLUSTER_TLS_CA", p.path("node-0.key")},
                             {"PARLEY_CLUSTER_TLS_CA", p.path("other-ca.pem")}}) {
    auto env = full;
    env[setting] = file;
    auto r = start(env);
    EXPECT_EQ(r.status, 2) << setting << "=" << file << ": " << describe(r);
    EXPECT_NE(r.err.find(setting), std::string::npos) << describe(r);
  }
}

// Renewing the files of a running node (operations.md: Rotation): a bad set
// (a key that is not the certificate's, a half-written certificate) is
// refused with one error line and never reaches CAF, which would end the
// process at its next cluster connection; the node keeps its identity and
// its cluster. A good set applies to the next connections: its certificate
// is the one the cluster port presents.
TEST(cluster_tls, renewed_files_apply_and_a_bad_set_never_ends_the_node) {
  pki p;
  p.make_ca("cluster-ca");
  for (auto* name : {"other", "renewed"})
    p.make_cert(name, "cluster-ca");
  scratch_db db;
  std::vector<unsigned short> cports;
  auto nodes = tls_members(p, db, 2, &cports);
  auto both_up = [&] {
    for (auto& n : nodes)
      for (auto* id : {"node-0", "node-1"})
        if (status_of(*n, id) != "up")
          return false;
    return true;
  };
  ASSERT_TRUE(wait_for(both_up, 20s)) << nodes[0]->cluster().dump();
  auto& n0 = *nodes[0];
  auto log0 = n0.process().log_path();
  // New cluster connections to and from node-0: node-1 dies and comes back.
  auto reconnect = [&] {
    nodes[1]->kill9();
    EXPECT_TRUE(wait_for([&] { return status_of(n0, "node-1") == "down"; }, 10s));
    nodes[1]->restart();
    EXPECT_TRUE(wait_for(both_up, 20s)) << n0.cluster().dump() << n0.process().log_tail();
  };
  auto copy = [&](const std::string& from, const std::string& to) {
    std::filesystem::copy_file(p.path(from), p.path(to),
                               std::filesystem::copy_options::overwrite_existing);
  };

  copy("other.key", "node-0.key"); // not node-0.pem's key
  ASSERT_TRUE(wait_for([&] { return count_lines(log0, "renewed TLS files refused") == 1; }, 15s))
      << n0.process().log_tail();
  EXPECT_EQ(count_lines(log0, "PARLEY_CLUSTER_TLS_KEY"), 1) << n0.process().log_tail();
  reconnect();
  EXPECT_TRUE(n0.process().alive()) << n0.process().log_tail();

  { // half written: the certificate cut in the middle
    std::string pem;
    {
      std::ifstream in{p.path("renewed.pem")};
      pem.assign(std::istreambuf_iterator<char>{in}, {});
    }
    std::ofstream{p.path("node-0.pem"), std::ios::trunc} << pem.substr(0, pem.size() / 2);
  }
  ASSERT_TRUE(wait_for([&] { return count_lines(log0, "renewed TLS files refused") == 2; }, 15s))
      << n0.process().log_tail();
  reconnect();
  EXPECT_TRUE(n0.process().alive()) << n0.process().log_tail();

  copy("renewed.key", "node-0.key");
  copy("renewed.pem", "node-0.pem");
  ASSERT_TRUE(wait_for([&] { return count_lines(log0, "renewed TLS files applied") >= 1; }, 15s))
      << n0.process().log_tail();
  reconnect();
  auto shown = run_process("openssl",
                           {"s_client", "-connect", "127.0.0.1:" + std::to_string(cports[0]),
                            "-cert", p.path("node-1.pem"), "-key", p.path("node-1.key"),
                            "-CAfile", p.path("cluster-ca.pem")},
                           {}, 10s);
  EXPECT_NE(shown.out.find("CN = renewed"), std::string::npos) << describe(shown);
  EXPECT_TRUE(n0.process().alive()) << n0.process().log_tail();
  auto key = n0.create_key("alice");
  auto id = nodes[1]->create_session(key);
  EXPECT_EQ(n0.post_message(key, id, {{"content", "x"}}).status, 200);
}

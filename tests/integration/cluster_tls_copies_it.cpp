// The private copies of a node's cluster identity (runtime/cluster_tls.hpp)
// when nodes start at the same moment in one TMPDIR: each start removes the
// copies that killed nodes left there, and must never take the copies
// another node is making at that moment. Real certificates (the harness's
// CA and member, made with the openssl CLI), real files.

#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cluster_tls.hpp"
#include "tests/integration/node_harness.hpp"

namespace {

TEST(cluster_tls_copies, nodes_starting_together_never_remove_each_others_copies) {
  const auto& env = parley::test::shared_cluster_tls();
  char tmpl[] = "/tmp/parley-tls-copies-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string tmp = tmpl;
  ASSERT_EQ(::setenv("TMPDIR", tmp.c_str(), 1), 0);
  constexpr int threads = 6, starts = 150;
  std::atomic<int> failed{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> nodes;
  for (int t = 0; t < threads; ++t)
    nodes.emplace_back([&] {
      for (int i = 0; i < starts; ++i) {
        std::string why;
        try {
          parley::cluster_tls_files files{env.at("PARLEY_CLUSTER_TLS_CERT"),
                                          env.at("PARLEY_CLUSTER_TLS_KEY"),
                                          env.at("PARLEY_CLUSTER_TLS_CA")};
          if (!std::filesystem::exists(files.identity()) || !std::filesystem::exists(files.ca()))
            why = "a live node's copies were removed";
        } catch (const std::exception& e) {
          why = e.what();
        }
        if (!why.empty() && failed++ == 0) {
          std::lock_guard<std::mutex> lk{mu};
          first_error = why;
        }
      }
    });
  for (auto& n : nodes)
    n.join();
  ::unsetenv("TMPDIR");
  EXPECT_EQ(failed.load(), 0) << "of " << threads * starts << " starts; the first: "
                              << first_error;
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_empty(tmp, ec)) << "every start removed its own copies";
  std::filesystem::remove_all(tmp, ec);
}

} // namespace

// The operators' dashboard, GET /dashboard, on a real two-node cluster: its
// admin-token check and headers over HTTP, then the page in headless
// Chromium (installed by scripts/test): the rendered DOM shows both nodes
// with the numbers the admin API reports, and a screenshot is kept as a test
// artifact (DASHBOARD_SCREENSHOT, under the build tree).

#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "tests/integration/node_harness.hpp"

using namespace parley::test;

namespace {

namespace fs = std::filesystem;

const std::string dash = "\u2013"; // what the page shows for a missing value

struct dashboard : ::testing::Test {
  scratch_db db;
  parley_cluster cluster{db, 2};

  http_result page(const std::string& query, const headers& extra = {}) {
    return http(cluster[0].port(), "GET", "/dashboard" + query, "", extra);
  }
};

/// `chromium` on PATH, or "".
std::string find_chromium() {
  std::istringstream path{getenv("PATH") ? getenv("PATH") : ""};
  for (std::string dir; std::getline(path, dir, ':');)
    if (!dir.empty() && ::access((dir + "/chromium").c_str(), X_OK) == 0)
      return dir + "/chromium";
  return {};
}

struct browser_run {
  bool exited = false; ///< false: killed after the time limit
  int status = -1;
  std::string out; ///< standard output
  std::string log; ///< the tail of standard error
};

/// Headless Chromium on `url` with `flags`, in a profile directory of its
/// own that is removed afterwards; killed by PID if it runs over a minute.
/// Virtual time lets the page run ~6 s (three polls) in much less.
browser_run run_chromium(const std::string& exe, const std::string& url,
                         std::vector<std::string> flags) {
  auto dir_template = (fs::temp_directory_path() / "parley-chromium-XXXXXX").string();
  if (!::mkdtemp(dir_template.data()))
    return {};
  const std::string dir = dir_template;
  std::vector<std::string> args{"--headless",
                                "--no-sandbox",
                                "--disable-gpu",
                                "--disable-dev-shm-usage",
                                "--hide-scrollbars",
                                "--user-data-dir=" + dir + "/profile",
                                "--virtual-time-budget=6000"};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back(url);
  browser_run run;
  {
    child_process browser{exe, args, {}, dir + "/stderr.log", dir + "/stdout"};
    run.exited = wait_for([&] { return !browser.alive(); }, std::chrono::seconds(60));
    run.status = browser.terminate(std::chrono::seconds(2));
  }
  std::ifstream in{dir + "/stdout"};
  run.out.assign(std::istreambuf_iterator<char>{in}, {});
  run.log = file_tail(dir + "/stderr.log", 15);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return run;
}

/// The DOM of node `id`'s card: from its start to the next card or the end.
std::string card_of(const std::string& dom, const std::string& id) {
  auto at = dom.find("data-node=\"" + id + "\"");
  if (at == std::string::npos)
    return {};
  return dom.substr(at, dom.find("data-node=\"", at + 1) - at);
}

/// The text of the first element with data-field="`field`" in `dom`.
std::string field_text(const std::string& dom, const std::string& field) {
  auto at = dom.find("data-field=\"" + field + "\"");
  if (at == std::string::npos)
    return "(no " + field + ")";
  auto open = dom.find('>', at) + 1;
  return dom.substr(open, dom.find('<', open) - open);
}

/// Sessions on the cluster's nodes, each node hosting at least two; returns
/// how many each hosts per the admin API.
std::map<std::string, int> spread_sessions(parley_cluster& cluster) {
  auto key = cluster[0].create_key("dash-user");
  std::map<std::string, int> hosted;
  auto enough = [&] {
    return hosted.size() == 2 && hosted.begin()->second >= 2 && hosted.rbegin()->second >= 2;
  };
  for (int i = 0; i < 40 && !enough(); ++i) {
    auto s = cluster[0].create_session(key);
    auto r = cluster[0].post_message(key, s, {{"content", "hello " + std::to_string(i)}});
    EXPECT_EQ(r.status, 200) << describe(r);
    ++hosted[cluster[0].host_of(s)];
  }
  return hosted;
}

} // namespace

TEST_F(dashboard, needs_the_admin_token_and_is_self_contained) {
  auto& node = cluster[0];
  auto none = page("");
  EXPECT_EQ(none.status, 401) << describe(none);
  EXPECT_EQ(none.code(), "unauthorized");
  EXPECT_EQ(none.header("content-type"), "application/json");
  EXPECT_NE(none.js()["error"]["message"].get<std::string>().find("?token="), std::string::npos);
  EXPECT_EQ(page("?token=wrong-" + node.admin_token()).code(), "unauthorized");
  EXPECT_EQ(page("", {{"Authorization", "Bearer wrong"}}).code(), "unauthorized");
  // Another node's admin token is not this node's.
  EXPECT_EQ(page("?token=" + cluster[1].admin_token()).status, 401);

  auto user = node.create_key("not-an-admin");
  auto as_user = page("?token=" + user);
  EXPECT_EQ(as_user.status, 403) << describe(as_user);
  EXPECT_EQ(as_user.code(), "forbidden");
  EXPECT_EQ(page("", {{"Authorization", "Bearer " + user}}).code(), "forbidden");

  auto by_query = page("?token=" + node.admin_token(), {{"X-Request-Id", "dash-req-1"}});
  ASSERT_EQ(by_query.status, 200) << describe(by_query);
  EXPECT_EQ(by_query.header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(by_query.header("cache-control"), "no-store");
  auto csp = by_query.header("content-security-policy");
  for (auto directive : {"default-src 'none'", "connect-src 'self'", "img-src data:",
                         "script-src 'unsafe-inline'", "style-src 'unsafe-inline'"})
    EXPECT_NE(csp.find(directive), std::string::npos) << directive << " missing in " << csp;
  EXPECT_EQ(by_query.header("x-request-id"), "dash-req-1");
  EXPECT_EQ(by_query.header("x-parley-node"), node.node_id());
  auto& html = by_query.body;
  EXPECT_EQ(html.rfind("<!doctype html>", 0), 0u) << html.substr(0, 200);
  // Self-contained: no reference to anything elsewhere, and no data of its
  // own (the cluster comes from the admin API at run time).
  for (auto outside : {"http://", "https://", "url(", "@import", "node-0"})
    EXPECT_EQ(html.find(outside), std::string::npos) << outside;
  EXPECT_EQ(html.find(node.admin_token()), std::string::npos);

  auto by_header = page("", {{"Authorization", "Bearer " + node.admin_token()}});
  EXPECT_EQ(by_header.status, 200) << describe(by_header);
  EXPECT_EQ(by_header.body, html);

  auto post = http(node.port(), "POST", "/dashboard?token=" + node.admin_token(), "{}");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.code(), "method_not_allowed");
}

TEST_F(dashboard, chromium_renders_both_nodes_with_live_numbers) {
  auto chromium = find_chromium();
  ASSERT_FALSE(chromium.empty())
      << "chromium is not installed (not on PATH); scripts/test installs it from "
         "scripts/packages.txt";

  auto hosted = spread_sessions(cluster);
  ASSERT_EQ(hosted.size(), 2u);
  // The admin API reports what the registries host (membership heartbeats
  // carry the counts to every node).
  json view;
  ASSERT_TRUE(wait_for(
      [&] {
        view = cluster[0].cluster();
        if (!view.is_object() || view["nodes"].size() != 2)
          return false;
        for (auto& n : view["nodes"])
          if (n["sessions_active"] != hosted[n["id"].get<std::string>()])
            return false;
        return true;
      },
      std::chrono::seconds(15)))
      << view.dump();

  auto url = "http://127.0.0.1:" + std::to_string(cluster[0].port()) +
             "/dashboard?token=" + cluster[0].admin_token();
  auto run = run_chromium(chromium, url, {"--dump-dom"});
  ASSERT_TRUE(run.exited) << "chromium ran over its time limit:\n" << run.log;
  ASSERT_EQ(run.status, 0) << run.log;
  auto& dom = run.out;
  ASSERT_NE(dom.find("</html>"), std::string::npos) << dom.substr(0, 500) << "\n" << run.log;

  for (auto& n : view["nodes"]) {
    auto id = n["id"].get<std::string>();
    auto card = card_of(dom, id);
    ASSERT_FALSE(card.empty()) << "no card for " << id << " in\n" << dom;
    EXPECT_EQ(field_text(card, "id"), id);
    EXPECT_EQ(field_text(card, "status"), "up");
    EXPECT_EQ(field_text(card, "http"), n["http"].get<std::string>());
    EXPECT_EQ(field_text(card, "sessions_active"), std::to_string(hosted[id])) << card;
    EXPECT_GE(hosted[id], 2);
    // Nodes that report their stats get them shown (the page copes without).
    if (n.contains("stats") && n["stats"].is_object()) {
      EXPECT_NE(field_text(card, "rss"), dash) << card;
    }
  }
  auto total = hosted.begin()->second + hosted.rbegin()->second;
  EXPECT_EQ(field_text(dom, "sessions_total"), std::to_string(total));
  // Today's top users by tokens: the one who chatted, with what the usage
  // route counts for them.
  auto top = cluster[0].admin("GET", "/admin/v1/usage/top?limit=10");
  ASSERT_EQ(top.status, 200) << describe(top);
  auto top_rows = top.js()["data"];
  ASSERT_EQ(top_rows.size(), 1u) << top.body;
  auto tokens = top_rows[0]["prompt_tokens"].get<long long>() +
                top_rows[0]["completion_tokens"].get<long long>();
  EXPECT_GT(tokens, 0);
  auto grouped = std::to_string(tokens); // as the page writes numbers: 1,234
  for (auto at = grouped.size(); at > 3; at -= 3)
    grouped.insert(at - 3, ",");
  auto table = dom.find("data-table=\"top_users\"");
  ASSERT_NE(table, std::string::npos) << dom;
  auto rows = dom.substr(table, dom.find("</table>", table) - table);
  EXPECT_NE(rows.find("<td>dash-user</td><td>" + grouped + "</td>"),
            std::string::npos)
      << rows;
  EXPECT_EQ(field_text(dom, "self"), cluster[0].node_id());
  EXPECT_NE(field_text(dom, "updated"), dash);
  auto banner = dom.find("id=\"banner\"");
  ASSERT_NE(banner, std::string::npos);
  EXPECT_NE(dom.substr(banner, dom.find('>', banner) - banner).find("hidden"), std::string::npos)
      << "the error banner shows: " << field_text(dom, "error");
  EXPECT_EQ(dom.find(cluster[0].admin_token()), std::string::npos) << "the token is on the page";

  // The same page as a picture, kept for people to look at.
  const std::string png = DASHBOARD_SCREENSHOT;
  fs::create_directories(fs::path{png}.parent_path());
  fs::remove(png);
  run = run_chromium(chromium, url, {"--screenshot=" + png, "--window-size=1280,1000"});
  ASSERT_TRUE(run.exited) << "chromium ran over its time limit:\n" << run.log;
  std::ifstream shot{png, std::ios::binary};
  std::string magic(8, '\0');
  shot.read(magic.data(), 8);
  EXPECT_EQ(magic, "\x89PNG\r\n\x1a\n") << "no screenshot at " << png << "\n" << run.log;
  EXPECT_GT(fs::exists(png) ? fs::file_size(png) : 0, 10000u);
  RecordProperty("screenshot", png);
  std::cout << "dashboard screenshot: " << png << std::endl;
}

// `parley ctl` without a node: its command line (defaults, requests, usage
// errors) and how it prints answers. tests/integration/ctl_it.cpp runs it
// against real nodes.

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "runtime/ctl.hpp"

using parley::ctl_command;
using parley::parse_ctl;
using parley::render_ctl_answer;
using parley::settings;

namespace {

ctl_command parsed(const std::vector<std::string>& args,
                   const settings& env = {{"PARLEY_ADMIN_TOKEN", "t"}}) {
  ctl_command c;
  std::string err;
  EXPECT_TRUE(parse_ctl(args, env, c, err)) << err;
  return c;
}

std::string usage_error(const std::vector<std::string>& args,
                        const settings& env = {{"PARLEY_ADMIN_TOKEN", "t"}}) {
  ctl_command c;
  std::string err;
  EXPECT_FALSE(parse_ctl(args, env, c, err)) << c.method << " " << c.path;
  return err;
}

std::string rendered(const std::vector<std::string>& args, const std::string& body) {
  std::string text;
  EXPECT_TRUE(render_ctl_answer(parsed(args), body, text)) << body;
  return text;
}

} // namespace

TEST(ctl, url_and_token_default_to_the_node_settings) {
  EXPECT_EQ(parsed({"cluster"}).url, "http://127.0.0.1:8080");
  EXPECT_EQ(parsed({"cluster"}).token, "t");
  settings env{
      {"PARLEY_ADMIN_TOKEN", "t"}, {"PARLEY_HTTP_HOST", "0.0.0.0"}, {"PARLEY_HTTP_PORT", "9000"}};
  EXPECT_EQ(parsed({"cluster"}, env).url, "http://127.0.0.1:9000");
  env["PARLEY_HTTP_HOST"] = "::";
  EXPECT_EQ(parsed({"cluster"}, env).url, "http://[::1]:9000");
  EXPECT_EQ(parsed({"cluster"}, env).endpoint.host, "::1");
  env["PARLEY_HTTP_HOST"] = "10.1.2.3";
  EXPECT_EQ(parsed({"cluster"}, env).url, "http://10.1.2.3:9000");
  env["PARLEY_CTL_URL"] = "http://admin.example:7000/parley";
  auto c = parsed({"cluster"}, env);
  EXPECT_EQ(c.url, "http://admin.example:7000/parley");
  EXPECT_EQ(c.endpoint.base_path, "/parley");
  // Flags win, anywhere on the line, as `--name value` or `--name=value`.
  c = parsed(
      {"cluster", "--url=http://127.0.0.1:1234", "--token", "x", "--json", "--timeout-ms", "250"},
      env);
  EXPECT_EQ(c.url, "http://127.0.0.1:1234");
  EXPECT_EQ(c.endpoint.port, "1234");
  EXPECT_EQ(c.token, "x");
  EXPECT_TRUE(c.json);
  EXPECT_EQ(c.timeout.count(), 250);
  EXPECT_EQ(parsed({"cluster"}).timeout.count(), 5000);
}

TEST(ctl, each_command_makes_its_admin_request) {
  auto c = parsed({"cluster"});
  EXPECT_EQ(c.method + " " + c.path, "GET /admin/v1/cluster");
  c = parsed({"session", "abc123"});
  EXPECT_EQ(c.method + " " + c.path, "GET /admin/v1/sessions/abc123");
  c = parsed({"migrate", "abc123", "node-2"});
  EXPECT_EQ(c.method + " " + c.path, "POST /admin/v1/sessions/abc123/migrate");
  EXPECT_EQ(c.body, R"({"to":"node-2"})");
  c = parsed({"drain", "node-3"});
  EXPECT_EQ(c.method + " " + c.path, "POST /admin/v1/nodes/node-3/drain");
  EXPECT_TRUE(c.body.empty());
  c = parsed({"key", "create", "al\"ice"});
  EXPECT_EQ(c.method + " " + c.path, "POST /admin/v1/api-keys");
  EXPECT_EQ(c.body, R"({"user":"al\"ice"})");
  c = parsed({"key", "revoke", "pk_12345678"});
  EXPECT_EQ(c.method + " " + c.path, "DELETE /admin/v1/api-keys/pk_12345678");
  c = parsed({"actors"});
  EXPECT_EQ(c.method + " " + c.path, "GET /admin/v1/actors");
  c = parsed({"key", "list"});
  EXPECT_EQ(c.method + " " + c.path, "GET /admin/v1/api-keys");
  // An optional operand: a query value, with '&', '=' and '+' escaped.
  c = parsed({"key", "list", "a&b=c+d"});
  EXPECT_EQ(c.method + " " + c.path, "GET /admin/v1/api-keys?user=a%26b%3Dc%2Bd");
  // What a path segment may hold goes as it is; what would change the route
  // is escaped.
  EXPECT_EQ(parsed({"drain", "node@host:1"}).path, "/admin/v1/nodes/node@host:1/drain");
  EXPECT_EQ(parsed({"session", "a/b c?%#"}).path, "/admin/v1/sessions/a%2Fb%20c%3F%25%23");
}

TEST(ctl, usage_errors_say_what_is_wrong) {
  EXPECT_EQ(usage_error({}), "no command given");
  EXPECT_EQ(usage_error({"frobnicate"}), "unknown command 'frobnicate'");
  EXPECT_EQ(usage_error({"key"}), "unknown command 'key'");
  EXPECT_EQ(usage_error({"key", "rotate", "x"}), "unknown command 'key rotate'");
  EXPECT_EQ(usage_error({"session"}), "expected: session ID");
  EXPECT_EQ(usage_error({"session", ""}), "expected: session ID");
  EXPECT_EQ(usage_error({"migrate", "s"}), "expected: migrate ID NODE");
  EXPECT_EQ(usage_error({"key", "create"}), "expected: key create USER");
  EXPECT_EQ(usage_error({"key", "list", "a", "b"}), "too many arguments: key list");
  EXPECT_EQ(usage_error({"drain", "a", "b"}), "too many arguments: drain NODE");
  EXPECT_EQ(usage_error({"cluster", "now"}), "too many arguments: cluster");
  EXPECT_EQ(usage_error({"--verbose", "cluster"}), "unknown option '--verbose'");
  EXPECT_EQ(usage_error({"cluster", "--url"}), "--url needs a value");
  EXPECT_NE(usage_error({"cluster", "--timeout-ms", "0"}).find("--timeout-ms must be"),
            std::string::npos);
  EXPECT_NE(usage_error({"cluster", "--timeout-ms=5s"}).find("--timeout-ms must be"),
            std::string::npos);
  EXPECT_NE(usage_error({"cluster", "--url", "https://a:1"}).find("https is not supported"),
            std::string::npos);
  EXPECT_NE(usage_error({"cluster", "--url", "127.0.0.1:8080"}).find("expected http"),
            std::string::npos);
  EXPECT_NE(usage_error({"cluster", "--url", "http://a:70000"}).find("port must be"),
            std::string::npos);
  EXPECT_EQ(usage_error({"cluster"}, {}), "no admin token: pass --token or set PARLEY_ADMIN_TOKEN");
}

// A node whose token is a mounted file (PARLEY_ADMIN_TOKEN_FILE): `parley ctl`
// beside it reads the same file.
TEST(ctl, the_token_may_come_from_the_file_the_node_reads) {
  auto path = std::string{::testing::TempDir()} + "parley-ctl-token";
  {
    std::ofstream f{path, std::ios::trunc};
    f << "token-from-a-file-0123456789abcdef\n";
  }
  ctl_command cmd;
  std::string err;
  ASSERT_TRUE(parse_ctl({"cluster"}, {{"PARLEY_ADMIN_TOKEN_FILE", path}}, cmd, err)) << err;
  EXPECT_EQ(cmd.token, "token-from-a-file-0123456789abcdef");
  ASSERT_TRUE(parse_ctl({"cluster", "--token", "given"}, {{"PARLEY_ADMIN_TOKEN_FILE", path}}, cmd,
                        err));
  EXPECT_EQ(cmd.token, "given") << "--token wins";
  EXPECT_FALSE(parse_ctl({"cluster"}, {{"PARLEY_ADMIN_TOKEN_FILE", "/nonexistent/token"}}, cmd, err));
  EXPECT_EQ(err, "PARLEY_ADMIN_TOKEN_FILE: cannot read '/nonexistent/token'");
  std::remove(path.c_str());
}

TEST(ctl, answers_print_as_aligned_tables_and_fields) {
  EXPECT_EQ(rendered({"cluster"},
                     R"({"self":"node-1","nodes":[
                        {"id":"node-1","http":"127.0.0.1:8080","cluster":"127.0.0.1:4242",
                         "status":"up","sessions_active":12},
                        {"id":"node-22","http":"127.0.0.1:8081","cluster":"127.0.0.1:4243",
                         "status":"leaving","sessions_active":0}]})"),
            "NODE     STATUS   HTTP            CLUSTER         SESSIONS\n"
            "node-1   up       127.0.0.1:8080  127.0.0.1:4242  12\n"
            "node-22  leaving  127.0.0.1:8081  127.0.0.1:4243  0\n");
  EXPECT_EQ(rendered({"session", "s1"},
                     R"({"epoch":3,"id":"s1","last_seq":4,"message_count":4,"node":"node-2",
                         "state":"active","user":"alice"})"),
            "id             s1\n"
            "node           node-2\n"
            "state          active\n"
            "epoch          3\n"
            "message_count  4\n"
            "last_seq       4\n"
            "user           alice\n");
  EXPECT_EQ(rendered({"migrate", "s1", "node-2"}, R"({"id":"s1","node":"node-2"})"),
            "session s1 now lives on node-2\n");
  EXPECT_EQ(rendered({"drain", "node-3"}, R"({"node":"node-3","status":"leaving"})"),
            "node node-3 is leaving: it hands its sessions to the others\n");
  EXPECT_EQ(rendered({"key", "revoke", "pk_1"}, ""), "revoked API key pk_1\n");
  auto key =
      rendered({"key", "create", "bob"},
               R"({"api_key":"pk_abcd1234secret","id":7,"prefix":"pk_abcd1234","user":"bob"})");
  EXPECT_EQ(key, "user     bob\n"
                 "id       7\n"
                 "prefix   pk_abcd1234\n"
                 "api_key  pk_abcd1234secret\n"
                 "(the api_key is shown only once)\n");
}

TEST(ctl, actors_print_whatever_columns_the_node_sends) {
  EXPECT_EQ(rendered({"actors"}, R"({"node":"n","actors":[
                        {"type":"session","count":3,"latency":{"p50":0.5,"p99":2}},
                        {"type":"edge","count":1,"mailbox_depth":null}]})"),
            "TYPE     COUNT  LATENCY.P50  LATENCY.P99  MAILBOX_DEPTH\n"
            "session  3      0.5          2            -\n"
            "edge     1      -            -            -\n");
  EXPECT_EQ(rendered({"actors"}, R"({"actors":[]})"), "(none)\n");
  // Odd shapes print what there is and never throw.
  EXPECT_EQ(rendered({"cluster"}, R"({"nodes":[1,{"id":"n","status":null}]})"),
            "NODE  STATUS  HTTP  CLUSTER  SESSIONS\n"
            "-     -       -     -        -\n"
            "n     -       -     -        -\n");
  EXPECT_EQ(rendered({"migrate", "s1", "node-2"}, "{}"), "session s1 now lives on node-2\n");
  EXPECT_EQ(rendered({"actors"}, R"({"other":1})"), "{\n  \"other\": 1\n}\n");
}

TEST(ctl, json_passes_the_body_through_and_non_json_is_refused) {
  EXPECT_EQ(rendered({"--json", "cluster"}, R"({"nodes":[]})"), "{\"nodes\":[]}\n");
  EXPECT_EQ(rendered({"--json", "key", "revoke", "pk_1"}, ""), "");
  std::string text;
  EXPECT_FALSE(render_ctl_answer(parsed({"cluster"}), "<html>proxy</html>", text));
  EXPECT_FALSE(render_ctl_answer(parsed({"session", "s"}), "[1,2]", text));
}

#include "runtime/ctl.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <ostream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "net/blocking_fetch.hpp"

namespace parley {

namespace {

// ordered_json keeps the server's key order for the generic tables.
using json = nlohmann::ordered_json;
using row = std::vector<std::string>;

constexpr const char* usage_text =
    "usage: parley ctl [--url http://host:port] [--token TOKEN] [--json] [--timeout-ms N] COMMAND\n"
    "Drives the admin API of any Parley node.\n"
    "\n"
    "commands:\n"
    "  cluster                  the nodes: id, status, HTTP and cluster address, active sessions\n"
    "  session ID               where a session lives: node, active|passive, epoch, counts\n"
    "  migrate ID NODE          move a session to NODE; answers once it lives there\n"
    "  drain NODE               mark NODE leaving: it hands its sessions to the others\n"
    "  key create USER          a new API key for USER (the secret is shown only once)\n"
    "  key revoke PREFIX_OR_ID  revoke an API key on every node\n"
    "  key list [USER]          API keys (all users', or USER's), newest first, no secrets\n"
    "  actors                   the answering node's actors per type (count, mailbox, p50/p99)\n"
    "\n"
    "options:\n"
    "  --url URL        the node to ask [PARLEY_CTL_URL, else\n"
    "                   http://PARLEY_HTTP_HOST:PARLEY_HTTP_PORT, else http://127.0.0.1:8080]\n"
    "  --token TOKEN    the admin token [PARLEY_ADMIN_TOKEN, else the first line of\n"
    "                   the file PARLEY_ADMIN_TOKEN_FILE names]\n"
    "  --json           print the server's JSON instead of tables\n"
    "  --timeout-ms N   give up on the node after N ms [5000]\n"
    "\n"
    "exit codes: 0 done, 1 the node answered an error, 2 usage error,\n"
    "            3 the node is unreachable or did not answer in time\n";

constexpr long long max_timeout_ms = 3600 * 1000;

std::string env_value(const settings& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? std::string{} : it->second;
}

/// PARLEY_CTL_URL, else the node's own listen address from its settings
/// (a wildcard address means this machine).
std::string default_url(const settings& env) {
  if (auto url = env_value(env, "PARLEY_CTL_URL"); !url.empty())
    return url;
  auto host = env_value(env, "PARLEY_HTTP_HOST");
  if (host.empty() || host == "0.0.0.0")
    host = "127.0.0.1";
  else if (host == "::")
    host = "::1";
  if (host.find(':') != std::string::npos)
    host = "[" + host + "]";
  auto port = env_value(env, "PARLEY_HTTP_PORT");
  return "http://" + host + ":" + (port.empty() ? "8080" : port);
}

/// A query parameter's value: only RFC 3986's unreserved characters stay as
/// they are, so '&', '=', '+' and '#' cannot change the query.
std::string query_value(const std::string& s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xf]);
    }
  }
  return out;
}

/// A path segment: what RFC 3986 allows in one stays as it is (Parley's
/// router matches segments without decoding them); '/', '?', '#', '%',
/// blanks and the like are percent-encoded, so they cannot change the route.
std::string segment(const std::string& s) {
  static constexpr std::string_view raw = "-._~!$&'()*+,;=:@";
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || raw.find(static_cast<char>(c)) != std::string_view::npos) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

/// A command and the admin request it makes.
struct command_spec {
  std::string_view name; ///< one or two words
  std::vector<std::string_view> operands;
  std::string_view method;
  /// "{0}" stands for the first operand as a path segment, "{q0}" as a
  /// query parameter's value.
  std::string_view path;
  std::string_view field; ///< the body is {field: last operand}; empty: no body
};

const std::vector<command_spec>& commands() {
  static const std::vector<command_spec> all{
      {"cluster", {}, "GET", "/admin/v1/cluster", ""},
      {"session", {"ID"}, "GET", "/admin/v1/sessions/{0}", ""},
      {"migrate", {"ID", "NODE"}, "POST", "/admin/v1/sessions/{0}/migrate", "to"},
      {"drain", {"NODE"}, "POST", "/admin/v1/nodes/{0}/drain", ""},
      {"key create", {"USER"}, "POST", "/admin/v1/api-keys", "user"},
      {"key revoke", {"PREFIX_OR_ID"}, "DELETE", "/admin/v1/api-keys/{0}", ""},
      {"key list", {}, "GET", "/admin/v1/api-keys", ""},
      {"key list", {"USER"}, "GET", "/admin/v1/api-keys?user={q0}", ""},
      {"actors", {}, "GET", "/admin/v1/actors", ""},
  };
  return all;
}

void build_request(const command_spec& spec, ctl_command& c) {
  c.method = std::string{spec.method};
  c.path = std::string{spec.path};
  if (auto at = c.path.find("{0}"); at != std::string::npos)
    c.path.replace(at, 3, segment(c.operands.front()));
  if (auto at = c.path.find("{q0}"); at != std::string::npos)
    c.path.replace(at, 4, query_value(c.operands.front()));
  if (!spec.field.empty())
    c.body = json{{spec.field, c.operands.back()}}.dump(-1, ' ', false,
                                                        json::error_handler_t::replace);
}

/// The command whose name the first words spell, or null.
const command_spec* find_command(const std::vector<std::string>& words) {
  for (auto& spec : commands()) {
    std::string name = words[0];
    if (spec.name.find(' ') != std::string_view::npos && words.size() > 1)
      name += " " + words[1];
    if (name == spec.name)
      return &spec;
  }
  return nullptr;
}

std::string synopsis(const command_spec& spec) {
  std::string s{spec.name};
  for (auto op : spec.operands)
    s += " " + std::string{op};
  return s;
}

/// Takes the command and its operands from the words that are not options.
bool take_command(const std::vector<std::string>& words, ctl_command& out, std::string& err) {
  if (words.empty()) {
    err = "no command given";
    return false;
  }
  auto* spec = find_command(words);
  if (!spec) {
    err = "unknown command '" + words[0] +
          (words[0] == "key" && words.size() > 1 ? " " + words[1] : "") + "'";
    return false;
  }
  auto first = static_cast<std::size_t>(std::count(spec->name.begin(), spec->name.end(), ' ') + 1);
  out.name = std::string{spec->name};
  out.operands.assign(words.begin() + static_cast<std::ptrdiff_t>(std::min(first, words.size())),
                      words.end());
  // A command with an optional operand has one spec per form.
  for (auto& other : commands())
    if (other.name == spec->name && other.operands.size() == out.operands.size())
      spec = &other;
  bool empty = std::any_of(out.operands.begin(), out.operands.end(),
                           [](const std::string& s) { return s.empty(); });
  if (out.operands.size() != spec->operands.size() || empty) {
    err = (out.operands.size() > spec->operands.size() ? "too many arguments: " : "expected: ") +
          synopsis(*spec);
    return false;
  }
  build_request(*spec, out);
  return true;
}

bool take_url(const std::string& url, ctl_command& out, std::string& err) {
  auto parsed = net::parse_upstream_url(url, err);
  if (!parsed) {
    err = "--url " + url + ": " + err;
    return false;
  }
  if (parsed->scheme != "http") {
    err =
        "--url " + url + ": https is not supported; the admin API is plain HTTP (http://host:port)";
    return false;
  }
  unsigned long port = 0;
  auto [end, ec] =
      std::from_chars(parsed->port.data(), parsed->port.data() + parsed->port.size(), port);
  if (ec != std::errc{} || port == 0 || port > 65535) {
    err = "--url " + url + ": the port must be 1 to 65535";
    return false;
  }
  out.url = url;
  out.endpoint = std::move(*parsed);
  return true;
}

bool take_timeout(const std::string& text, ctl_command& out, std::string& err) {
  long long ms = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
  if (ec != std::errc{} || end != text.data() + text.size() || ms < 1 || ms > max_timeout_ms) {
    err = "--timeout-ms must be a whole number of milliseconds from 1 to " +
          std::to_string(max_timeout_ms) + ", not '" + text + "'";
    return false;
  }
  out.timeout = std::chrono::milliseconds(ms);
  return true;
}

// --- rendering ---

std::string with_newline(const std::string& s) {
  return s.empty() || s.back() == '\n' ? s : s + "\n";
}

std::string cell(const json& v) {
  if (v.is_string())
    return v.get<std::string>();
  return v.is_null() ? "-" : v.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// The cell of `obj[key]`, or `fallback` when there is none.
std::string cell_at(const json& obj, const char* key, const std::string& fallback = "-") {
  return obj.is_object() && obj.contains(key) ? cell(obj.at(key)) : fallback;
}

/// Rows as aligned columns, two spaces apart; the last column is not padded.
std::string columns(const std::vector<row>& rows) {
  std::vector<std::size_t> width;
  for (auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      width.resize(std::max(width.size(), r.size()));
      width[i] = std::max(width[i], r[i].size());
    }
  std::string out;
  for (auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i)
      out += i + 1 < r.size() ? r[i] + std::string(width[i] - r[i].size() + 2, ' ') : r[i];
    out += '\n';
  }
  return out;
}

/// An object's fields as `key value` lines: `first` (where present), then
/// the others in the server's order.
std::string fields(const json& obj, const std::vector<std::string>& first) {
  std::vector<row> rows;
  for (auto& k : first)
    if (obj.contains(k))
      rows.push_back({k, cell(obj.at(k))});
  for (auto& [k, v] : obj.items())
    if (std::find(first.begin(), first.end(), k) == first.end())
      rows.push_back({k, cell(v)});
  return columns(rows);
}

/// Nested objects as `outer.inner` keys, so every value fits in a cell.
void flatten(const json& obj, const std::string& prefix, json& out) {
  for (auto& [k, v] : obj.items()) {
    if (v.is_object())
      flatten(v, prefix + k + ".", out);
    else
      out[prefix + k] = v;
  }
}

std::string upper(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

/// A table of the objects in `items`, one column per key any of them has.
std::string generic_table(const json& items) {
  std::vector<json> flat;
  std::vector<std::string> keys;
  for (auto& item : items) {
    json f = json::object();
    flatten(item.is_object() ? item : json{{"value", item}}, "", f);
    for (auto& [k, v] : f.items())
      if (std::find(keys.begin(), keys.end(), k) == keys.end())
        keys.push_back(k);
    flat.push_back(std::move(f));
  }
  if (flat.empty())
    return "(none)\n";
  std::vector<row> rows{{}};
  for (auto& k : keys)
    rows[0].push_back(upper(k));
  for (auto& f : flat) {
    rows.emplace_back();
    for (auto& k : keys)
      rows.back().push_back(f.contains(k) ? cell(f.at(k)) : "-");
  }
  return columns(rows);
}

std::string cluster_table(const json& body) {
  std::vector<row> rows{{"NODE", "STATUS", "HTTP", "CLUSTER", "SESSIONS"}};
  for (auto& n : body.value("nodes", json::array()))
    rows.push_back({cell_at(n, "id"), cell_at(n, "status"), cell_at(n, "http"),
                    cell_at(n, "cluster"), cell_at(n, "sessions_active")});
  return columns(rows);
}

/// `401 unauthorized: unknown or revoked API key` from an error answer.
std::string describe_error(unsigned status, const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object())
    return std::to_string(status) + " " + cell_at(j["error"], "code", "error") + ": " +
           cell_at(j["error"], "message", "");
  auto first_line = body.substr(0, std::min(body.find('\n'), std::size_t{200}));
  return std::to_string(status) + (first_line.empty() ? "" : ": " + first_line);
}

} // namespace

bool parse_ctl(const std::vector<std::string>& args, const settings& env, ctl_command& out,
               std::string& err) {
  std::string url = default_url(env), timeout = "5000";
  out.token = env_value(env, "PARLEY_ADMIN_TOKEN");
  std::vector<std::string> words;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a.size() < 2 || a[0] != '-') {
      words.push_back(a);
      continue;
    }
    if (a == "--json") {
      out.json = true;
      continue;
    }
    auto eq = a.find('=');
    auto name = a.substr(0, eq);
    std::string* value = name == "--url"          ? &url
                         : name == "--token"      ? &out.token
                         : name == "--timeout-ms" ? &timeout
                                                  : nullptr;
    if (!value) {
      err = "unknown option '" + a + "'";
      return false;
    }
    if (eq != std::string::npos)
      *value = a.substr(eq + 1);
    else if (i + 1 < args.size())
      *value = args[++i];
    else {
      err = name + " needs a value";
      return false;
    }
  }
  if (!take_url(url, out, err) || !take_timeout(timeout, out, err) ||
      !take_command(words, out, err))
    return false;
  if (out.token.empty()) {
    // As the node reads it (runtime/config.hpp), so that `parley ctl` works
    // in a container whose token is a mounted file.
    if (auto path = env_value(env, "PARLEY_ADMIN_TOKEN_FILE"); !path.empty()) {
      std::ifstream in{path};
      std::string line;
      if (!in || !std::getline(in, line)) {
        err = "PARLEY_ADMIN_TOKEN_FILE: cannot read '" + path + "'";
        return false;
      }
      auto end = line.find_last_not_of(" \t\r");
      out.token = end == std::string::npos ? std::string{} : line.substr(0, end + 1);
    }
  }
  if (out.token.empty()) {
    err = "no admin token: pass --token or set PARLEY_ADMIN_TOKEN";
    return false;
  }
  return true;
}

bool render_ctl_answer(const ctl_command& cmd, const std::string& body, std::string& text) {
  if (cmd.json) {
    text = with_newline(body);
    return true;
  }
  if (cmd.name == "key revoke") {
    text = "revoked API key " + cmd.operands[0] + "\n";
    return true;
  }
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object())
    return false;
  if (cmd.name == "cluster")
    text = cluster_table(j);
  else if (cmd.name == "session")
    text = fields(j, {"id", "node", "state", "epoch", "message_count", "last_seq"});
  else if (cmd.name == "migrate")
    text = "session " + cell_at(j, "id", cmd.operands[0]) + " now lives on " +
           cell_at(j, "node", cmd.operands[1]) + "\n";
  else if (cmd.name == "drain")
    text = "node " + cell_at(j, "node", cmd.operands[0]) + " is " +
           cell_at(j, "status", "leaving") + ": it hands its sessions to the others\n";
  else if (cmd.name == "key create")
    text = fields(j, {"user", "id", "prefix", "api_key"}) + "(the api_key is shown only once)\n";
  else if (cmd.name == "key list" && j.contains("data") && j["data"].is_array())
    text = j["data"].empty() ? "no API keys\n" : generic_table(j["data"]);
  else if (j.contains("actors") && j["actors"].is_array())
    text = generic_table(j["actors"]);
  else
    text = j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  return true;
}

int run_ctl(const std::vector<std::string>& args, const settings& env, std::ostream& out,
            std::ostream& err) {
  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    out << usage_text;
    return static_cast<int>(ctl_exit::ok);
  }
  ctl_command cmd;
  std::string why;
  if (!parse_ctl(args, env, cmd, why)) {
    err << "parley ctl: " << why << "\n" << usage_text;
    return static_cast<int>(ctl_exit::usage);
  }
  auto r =
      net::fetch_blocking(cmd.endpoint, {cmd.method, cmd.path, cmd.body, cmd.token}, cmd.timeout);
  if (r.status != net::fetch_status::ok) {
    err << "parley ctl: " << (r.status == net::fetch_status::connect_error ? "cannot reach " : "")
        << cmd.url << ": " << r.error << "\n";
    return static_cast<int>(ctl_exit::unreachable);
  }
  if (r.http_status < 200 || r.http_status >= 300) {
    if (cmd.json)
      out << with_newline(r.body);
    err << "parley ctl: " << describe_error(r.http_status, r.body) << "\n";
    return static_cast<int>(ctl_exit::api_error);
  }
  std::string text;
  if (!render_ctl_answer(cmd, r.body, text)) {
    err << "parley ctl: " << cmd.url << " answered " << r.http_status
        << " with something that is not JSON: " << r.body.substr(0, 200) << "\n";
    return static_cast<int>(ctl_exit::api_error);
  }
  out << text;
  return static_cast<int>(ctl_exit::ok);
}

} // namespace parley

// libFuzzer target over the pure request code of net/: routing, query and
// body validation, error bodies and JSON string escaping. No I/O.
//
// An input is one request in a simple text form (tests/fuzz/corpus has
// examples):
//   line 1          method
//   line 2          target: path, then optionally '?' and the query string
//   next lines      headers, `Name: value`, up to an empty line
//   the rest        body
// Lines end at '\n' (a '\r' before it is dropped). Missing parts are empty.
//
// Invariants, each a crash (abort) with a message when broken:
// - nothing throws out of any net function;
// - every error the validators produce is a 4xx, and its body from
//   error_body() is valid UTF-8 JSON of API.md's error shape that parses back
//   (also for the messages the server builds around request bytes: ids,
//   seqs, paths, Content-Type);
// - no validated value that Parley stores holds a NUL (API.md section 2);
// - append_json_string() writes valid UTF-8 JSON that parses back to its
//   input when that is valid UTF-8; utf8_sequence() agrees with a reference
//   decoder.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/http/api.hpp"
#include "net/http/api_error.hpp"
#include "net/http/json_text.hpp"
#include "net/http/router.hpp"

using namespace parley;
using json = nlohmann::json;

namespace {

struct request {
  std::string_view method, path, query, body;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string_view header(std::string_view lower_name) const {
    std::string_view found;
    for (auto& [k, v] : headers) {
      if (k.size() != lower_name.size())
        continue;
      bool same = true;
      for (std::size_t i = 0; i < k.size() && same; ++i) {
        auto c = static_cast<unsigned char>(k[i]);
        same = (c >= 'A' && c <= 'Z' ? c + 32 : c) == static_cast<unsigned char>(lower_name[i]);
      }
      if (same)
        found = v; // the last one wins, as with a duplicated header
    }
    return found;
  }
};

std::string_view next_line(std::string_view& in) {
  auto nl = in.find('\n');
  auto line = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  return line;
}

request split(std::string_view in) {
  request r;
  r.method = next_line(in);
  auto target = next_line(in);
  auto q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string_view::npos)
    r.query = target.substr(q + 1);
  while (!in.empty()) {
    auto line = next_line(in);
    if (line.empty())
      break;
    auto colon = line.find(':');
    auto name = line.substr(0, colon);
    auto value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    r.headers.emplace_back(name, value);
  }
  r.body = in;
  return r;
}

std::string hex(std::string_view s, std::size_t max = 200) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 0xF];
    }
  }
  if (s.size() > max)
    out += "...";
  return out;
}

[[noreturn]] void broken(const std::string& what, std::string_view detail) {
  std::fprintf(stderr, "\nINVARIANT BROKEN: %s\n  bytes: %s\n", what.c_str(), hex(detail).c_str());
  std::abort();
}

/// Reference UTF-8 decoder (Unicode Table 3-7), written apart from
/// net::utf8_sequence: the length of the well-formed sequence at `s[i]`, 0 if none.
std::size_t ref_sequence(std::string_view s, std::size_t i) {
  auto b = [&](std::size_t k) -> unsigned { return static_cast<unsigned char>(s[k]); };
  unsigned c = b(i);
  std::size_t n;
  std::uint32_t cp;
  if (c < 0x80)
    return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size())
    return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  static constexpr std::uint32_t min_for[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    auto n = ref_sequence(s, i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

/// True when a JSON value holds a NUL in any key or string.
bool json_has_nul(const json& j) {
  if (j.is_string())
    return has_nul(j.get_ref<const std::string&>());
  if (j.is_object()) {
    for (auto& [k, v] : j.items())
      if (has_nul(k) || json_has_nul(v))
        return true;
  } else if (j.is_array()) {
    for (auto& v : j)
      if (json_has_nul(v))
        return true;
  }
  return false;
}

/// Renders an error body and checks it. `client_fault`: the error answers a
/// bad request, so its status must be a 4xx.
void check_error(const api_error& e, bool client_fault, const char* where) {
  if (client_fault) {
    auto s = http_status(e.code);
    if (s < 400 || s > 499)
      broken(std::string{where} + ": a bad request got status " + std::to_string(s),
             e.message);
  }
  if (e.message.empty())
    broken(std::string{where} + ": an error with an empty message", e.message);
  std::string body;
  try {
    body = error_body(e);
  } catch (const std::exception& x) {
    broken(std::string{where} + ": error_body threw: " + x.what(), e.message);
  }
  if (!valid_utf8(body))
    broken(std::string{where} + ": the error body is not valid UTF-8", body);
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("error") || !j["error"].is_object())
    broken(std::string{where} + ": the error body is not {\"error\": {...}}", body);
  auto& err = j["error"];
  for (const char* field : {"message", "type", "code"})
    if (!err.contains(field) || !err[field].is_string())
      broken(std::string{where} + ": the error body lacks a string '" + field + "'", body);
  if (err["code"] != code_name(e.code) || err["type"] != type_name(e.code))
    broken(std::string{where} + ": the error body's code or type is not its errc's", body);
  if (valid_utf8(e.message) && err["message"] != e.message)
    broken(std::string{where} + ": the error body changed a valid UTF-8 message", body);
}

template <class T>
void check_parsed(const net::parsed<T>& p, const char* where) {
  if (!p)
    check_error(*p.error, true, where);
}

void check_no_nul(bool bad, const char* field, std::string_view body) {
  if (bad)
    broken(std::string{"a stored '"} + field + "' was accepted holding a NUL (API.md: 400)", body);
}

void check_json_text(std::string_view s) {
  std::string out;
  try {
    net::append_json_string(out, s);
  } catch (const std::exception& x) {
    broken(std::string{"append_json_string threw: "} + x.what(), s);
  }
  if (!valid_utf8(out))
    broken("append_json_string wrote invalid UTF-8", out);
  auto j = json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.is_string())
    broken("append_json_string wrote no JSON string", out);
  if (valid_utf8(s) && j.get_ref<const std::string&>() != s)
    broken("append_json_string changed valid UTF-8 text", s);
  // utf8_sequence against the reference decoder, at every lead byte.
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80)
      continue;
    auto got = net::utf8_sequence(s.substr(i));
    auto want = ref_sequence(s, i);
    if (got != want)
      broken("utf8_sequence(" + std::to_string(got) + ") disagrees with the reference (" +
               std::to_string(want) + ")",
             s.substr(i, 4));
  }
}

/// Everything one request goes through in net/, in the server's order.
void one_request(const request& r) {
  auto m = net::match_route(r.method, r.path);
  if (net::route_name(m.r) == "unknown")
    broken("match_route returned a route without a name", r.path);
  if (m.r == net::route::method_not_allowed && m.allow.empty())
    broken("a 405 without an Allow value", r.path);
  if (m.id.size() > r.path.size() || m.seq.size() > r.path.size() ||
      (!m.id.empty() && r.path.find(m.id) == std::string_view::npos))
    broken("a path parameter that is not part of the path", r.path);

  std::string method{r.method}, path{r.path};
  // The answers the server builds around request bytes (runtime/http/http_api.cpp,
  // actors/edge/edge_actor.cpp): each must render, whatever the bytes.
  if (m.r == net::route::not_found)
    check_error({errc::not_found, "no route for " + method + " " + path}, true, "unknown route");
  if (m.r == net::route::method_not_allowed)
    check_error({errc::method_not_allowed,
                 method + " is not allowed on " + path + "; allowed: " + m.allow},
                true, "wrong method");
  if (!m.id.empty()) {
    check_error({errc::not_found, "session '" + m.id + "' not found"}, true, "unknown session");
    check_error({errc::not_found, "node '" + m.id + "' is not an up member of the cluster"}, true,
                "unknown node");
    check_error({errc::not_found, "no API key matches '" + m.id + "'"}, true, "unknown key");
  }
  if (m.r == net::route::post_feedback && !net::parse_seq(m.seq))
    check_error({errc::not_found, "message '" + m.seq + "' not found"}, true, "bad seq");

  // Headers: Content-Type decides whether the body is read as JSON.
  auto ct = r.header("content-type");
  bool has_body = r.body.find_first_not_of(" \t\r\n") != std::string_view::npos;
  bool json_ct = net::is_json_content_type(ct);
  if (has_body && !ct.empty() && !json_ct)
    check_error({errc::unsupported_media_type,
                 "the body must be JSON (Content-Type: application/json), not '" +
                   std::string{ct} + "'"},
                true, "content type");
  for (auto& [name, value] : r.headers) {
    check_json_text(name);
    check_json_text(value);
  }

  auto q = net::parse_query(r.query);
  check_parsed(q, "query");
  if (q) {
    for (auto& [k, v] : q.value) {
      check_json_text(k);
      check_json_text(v);
    }
    check_parsed(net::query_int(q.value, "limit", 20, 1, 100), "query limit");
    check_parsed(net::query_int(q.value, "after", 0, 0, INT64_MAX), "query after");
    check_parsed(net::query_int(q.value, "days", 7, 1, 90), "query days");
  }

  // Every body validator runs on every body (more coverage per input than
  // only the one the route picks).
  auto body = r.body;
  auto cs = net::parse_create_session(body);
  check_parsed(cs, "create session");
  if (cs) {
    check_no_nul(cs.value.system_prompt && has_nul(*cs.value.system_prompt), "system_prompt", body);
    check_no_nul(cs.value.model && has_nul(*cs.value.model), "model", body);
    auto meta = json::parse(cs.value.metadata_json, nullptr, false);
    if (meta.is_discarded() || !meta.is_object())
      broken("metadata_json is not a JSON object", cs.value.metadata_json);
    check_no_nul(json_has_nul(meta), "metadata", body);
  }
  auto pm = net::parse_post_message(body);
  check_parsed(pm, "post message");
  if (pm) {
    check_no_nul(has_nul(pm.value.content), "content", body);
    check_no_nul(has_nul(pm.value.client_message_id), "client_message_id", body);
    if (pm.value.content.empty())
      broken("an empty content was accepted", body);
  }
  auto fb = net::parse_feedback(body);
  check_parsed(fb, "feedback");
  if (fb) {
    if (fb.value.rating != 1 && fb.value.rating != -1)
      broken("a rating other than -1 or 1 was accepted", body);
    check_no_nul(fb.value.comment && has_nul(*fb.value.comment), "comment", body);
  }
  auto ck = net::parse_create_key(body);
  check_parsed(ck, "create key");
  if (ck)
    check_no_nul(has_nul(ck.value.user), "user", body);
  check_parsed(net::parse_migrate(body), "migrate");
  auto cc = net::parse_chat_completion(body);
  check_parsed(cc, "chat completion");
  if (cc) {
    auto up = json::parse(cc.value.upstream_body, nullptr, false);
    if (up.is_discarded() || !up.is_object() || !up["messages"].is_array())
      broken("upstream_body is not a JSON object with messages", cc.value.upstream_body);
    if (!cc.value.model &&
        !json::parse(net::with_model(cc.value.upstream_body, "m"), nullptr, false).is_object())
      broken("with_model() made something that is not a JSON object", cc.value.upstream_body);
  }

  check_json_text(r.path);
  check_json_text(r.body.substr(0, 4096));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  try {
    one_request(split(in));
  } catch (const std::exception& x) {
    broken(std::string{"an exception escaped: "} + x.what(), in);
  }
  return 0;
}

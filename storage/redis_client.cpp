#include "storage/redis_client.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/time.h>

#include "net/http/percent.hpp"

namespace parley::storage {

namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The cluster-wide token bucket and daily token budget of API keys, and the
// settlement of earlier calls' spend: one script, so that a batch of chat
// requests costs one round trip however many of these it needs, and each
// batch is one atomic step on the server.
//
// ARGV[1]: n, the number of requests; ARGV[2]: the time to live of a budget
//          counter, in ms.
// For request i (1..n):
//   KEYS[2i-1]: its bucket, a hash {tokens, ts}; ts is Redis time in µs.
//   KEYS[2i]: its key's budget counter of the current UTC day (an integer:
//             tokens spent, plus tokens reserved by calls still running).
//   ARGV[4i-1]: rate per minute, which is also the capacity (burst = rate);
//               0: no bucket (KEYS[2i-1] untouched).
//   ARGV[4i]: cost in tokens of the bucket.
//   ARGV[4i+1]: the day's budget in tokens; 0: no budget (KEYS[2i] untouched).
//   ARGV[4i+2]: the tokens to reserve for this call.
// KEYS[2n+k] (k = 1..): counters to settle first, with deltas ARGV[2+4n+k].
// Returns, for each request in order, {allowed 0|1, whole bucket tokens
// left, ms until `cost` tokens exist, budget_ok 0|1, spent before this
// request, reserved}.
//
// - Settlements run first, so a node's own earlier calls count before its
//   next decision; a counter never goes below 0 (a refund that outlived its
//   day's counter).
// - Requests are decided one after the other, each seeing what the ones
//   before it took: a batch decides exactly as its requests one by one.
// - The budget is read before the bucket is touched: a key whose day is spent
//   takes no rate token. The reservation is made only when both allow.
// - The reservation is what is left of the budget at most, so any call that
//   finds some budget left is admitted, and the calls running at once never
//   reserve more than the budget (operations.md: the overshoot bound).
// - redis.replicate_commands(): Redis 3.2-4.x replicate scripts verbatim and
//   then refuse writes after the non-deterministic TIME; it switches to
//   effects replication. Redis 5+ always does that (7 keeps the call as a
//   no-op that returns true), and the guard covers servers that dropped it.
// - TIME, not the caller's clock: every node then refills by one clock.
// - ts is written with %d because tostring() keeps 14 digits, which would
//   round microseconds since the epoch; tokens keep 17 digits.
// - The epsilon keeps 0.99999999999 from denying what is exactly one token.
// - A time going backwards (failover to a replica) refills nothing.
// - PEXPIRE at the moment the bucket would be full again: a missing key
//   means a full bucket, so idle keys vanish without changing any answer.
constexpr const char* token_bucket_lua = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local n = tonumber(ARGV[1])
local budget_ttl = tonumber(ARGV[2])
for k = 1, #KEYS - 2 * n do
  local key = KEYS[2 * n + k]
  local v = redis.call('INCRBY', key, ARGV[2 + 4 * n + k])
  if v < 0 then redis.call('SET', key, 0) end
  redis.call('PEXPIRE', key, budget_ttl)
end
local now = nil
local out = {}
for i = 1, n do
  local bucket = KEYS[2 * i - 1]
  local counter = KEYS[2 * i]
  local rate = tonumber(ARGV[4 * i - 1])
  local cost = tonumber(ARGV[4 * i])
  local budget = tonumber(ARGV[4 * i + 1])
  local reserve = tonumber(ARGV[4 * i + 2])
  local spent = 0
  local budget_ok = 1
  if budget > 0 then
    spent = tonumber(redis.call('GET', counter) or '0') or 0
    if spent >= budget then budget_ok = 0 end
  end
  local allowed = budget_ok
  local left = 0
  local retry_ms = 0
  local reserved = 0
  if budget_ok == 1 and rate > 0 then
    if now == nil then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    local per_us = rate / 60000000
    local s = redis.call('HMGET', bucket, 'tokens', 'ts')
    local tokens = tonumber(s[1])
    local ts = tonumber(s[2])
    if tokens == nil or ts == nil then
      tokens = rate
      ts = now
    elseif now > ts then
      tokens = math.min(rate, tokens + (now - ts) * per_us)
      ts = now
    else
      tokens = math.min(rate, tokens)
    end
    if tokens + 1e-9 >= cost then
      tokens = math.max(0, tokens - cost)
    else
      allowed = 0
      retry_ms = math.ceil((cost - tokens) / per_us / 1000)
    end
    redis.call('HSET', bucket, 'tokens', string.format('%.17g', tokens), 'ts', string.format('%d', ts))
    redis.call('PEXPIRE', bucket, math.ceil((rate - tokens) / per_us / 1000) + 1)
    left = math.floor(tokens + 1e-9)
  end
  if allowed == 1 and budget > 0 then
    reserved = math.max(0, math.min(reserve, budget - spent))
    redis.call('INCRBY', counter, reserved)
    redis.call('PEXPIRE', counter, budget_ttl)
  end
  local base = 6 * (i - 1)
  out[base + 1] = allowed
  out[base + 2] = left
  out[base + 3] = retry_ms
  out[base + 4] = budget_ok
  out[base + 5] = spent
  out[base + 6] = reserved
end
return out
)lua";

// Cluster membership by registration: every node of one cluster keeps its
// cluster address in one sorted set, scored by when the entry expires.
//
// KEYS[1]: the sorted set.
// ARGV[1]: this node's entry; ARGV[2]: its time to live in ms (0: remove it).
// Returns every entry not expired, this one included.
//
// - TIME, not the caller's clock: entries of every node expire by one clock.
// - Expired entries are dropped on every call, so a node that died without
//   leaving is gone from every answer once its TTL passed.
// - The set itself expires ten TTLs after the last call: a cluster that is
//   gone leaves nothing behind.
constexpr const char* members_lua = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ttl > 0 then
  redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl * 10))
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
)lua";

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

timeval to_timeval(milliseconds d) {
  auto ms = std::max<milliseconds::rep>(d.count(), 1);
  return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>(ms % 1000 * 1000)};
}

// hiredis writes with write(2): a peer that reset the connection raises
// SIGPIPE, which would kill the process unless ignored. Blocking it in the
// thread that owns the connection turns it into a plain EPIPE without
// touching the rest of the process.
void block_sigpipe_in_this_thread() {
  thread_local bool blocked = false;
  if (blocked)
    return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  blocked = true;
}

bool is_error(const redisReply& r) { return r.type == REDIS_REPLY_ERROR; }

std::string reply_text(const redisReply& r) {
  return r.str ? std::string{r.str, r.len} : std::string{};
}

std::string sha1_hex(std::string_view text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(text.data(), text.size(), md, &len, EVP_sha1(), nullptr) != 1)
    throw std::runtime_error("SHA-1 of a Lua script failed");
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0xf];
  }
  return out;
}

/// A Lua script and its SHA-1, for EVALSHA.
struct lua_script {
  const char* text;
  std::string sha = sha1_hex(text);
};

const lua_script& token_bucket_script_ref() {
  static const lua_script s{token_bucket_lua};
  return s;
}

const lua_script& members_script() {
  static const lua_script s{members_lua};
  return s;
}

// -- URL parsing --------------------------------------------------------------

[[noreturn]] void bad_url(const std::string& url, const std::string& why) {
  throw std::invalid_argument("PARLEY_REDIS_URL: " + why +
                              " (expected redis://[[user]:password@]host:port[/db], got '" +
                              redact_url(url) + "')");
}

/// RFC 3986 percent-decoding ('+' stays '+'); nullopt on a broken escape.
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  if (!net::percent_decode(s, out))
    return std::nullopt;
  return out;
}

/// A decimal number of at most `max_digits` digits, nothing else.
std::optional<std::uint32_t> parse_decimal(std::string_view s, std::size_t max_digits) {
  if (s.empty() || s.size() > max_digits)
    return std::nullopt;
  std::uint32_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size())
    return std::nullopt;
  return v;
}

bool valid_host(std::string_view h, bool bracketed) {
  return std::all_of(h.begin(), h.end(), [bracketed](char ch) {
    auto c = static_cast<unsigned char>(ch);
    if (bracketed)
      return std::isxdigit(c) || c == ':' || c == '.';
    return std::isalnum(c) || c == '.' || c == '-' || c == '_';
  });
}

} // namespace

redis_endpoint parse_redis_url(const std::string& url) {
  constexpr std::string_view scheme = "redis://";
  if (url.compare(0, scheme.size(), scheme) != 0)
    bad_url(url, "the scheme must be redis://");
  std::string_view rest{url};
  rest.remove_prefix(scheme.size());
  redis_endpoint ep;
  // Credentials: everything before the last '@', so that a password with an
  // unencoded '@' or '/' still parses. No message below quotes them.
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    auto userinfo = rest.substr(0, at);
    rest.remove_prefix(at + 1);
    auto colon = userinfo.find(':');
    if (colon == std::string_view::npos)
      bad_url(url, "credentials need a password: redis://:password@host or "
                   "redis://user:password@host");
    auto user = percent_decode(userinfo.substr(0, colon));
    auto password = percent_decode(userinfo.substr(colon + 1));
    if (!user || !password)
      bad_url(url, "the credentials hold a broken percent escape");
    if (password->empty())
      bad_url(url, "the password is empty");
    ep.user = std::move(*user);
    ep.password = std::move(*password);
  }
  if (rest.find_first_of("?#") != std::string_view::npos)
    bad_url(url, "query parameters are not supported");

  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  std::string_view host, port;
  bool has_port = false;
  bool bracketed = !authority.empty() && authority.front() == '[';
  if (bracketed) {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      bad_url(url, "an IPv6 host needs a closing ']'");
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':')
      bad_url(url, "unexpected text after the host");
    has_port = !after.empty();
    port = has_port ? after.substr(1) : after;
  } else {
    auto colon = authority.find(':');
    if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos)
      bad_url(url, "an IPv6 host must be written in brackets, e.g. redis://[::1]:6379");
    host = authority.substr(0, colon);
    has_port = colon != std::string_view::npos;
    if (has_port)
      port = authority.substr(colon + 1);
  }
  if (host.empty())
    bad_url(url, "the host is missing");
  if (!valid_host(host, bracketed))
    bad_url(url, "the host '" + std::string{host} + "' contains invalid characters");
  ep.host = std::string{host};

  if (has_port) {
    auto p = parse_decimal(port, 5);
    if (!p || *p < 1 || *p > 65535)
      bad_url(url, "the port must be a number from 1 to 65535");
    ep.port = static_cast<std::uint16_t>(*p);
  }
  if (slash != std::string_view::npos && slash + 1 < rest.size()) {
    auto db = parse_decimal(rest.substr(slash + 1), 9);
    if (!db)
      bad_url(url, "the database must be a non-negative number");
    ep.db = static_cast<int>(*db);
  }
  return ep;
}

std::string redact_url(const std::string& url) {
  auto sep = url.find("://");
  auto start = sep == std::string::npos ? 0 : sep + 3;
  auto at = url.rfind('@');
  if (at == std::string::npos || at < start)
    return url;
  auto colon = url.find(':', start);
  if (colon == std::string::npos || colon > at)
    return url.substr(0, start) + "***" + url.substr(at);
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

// -- the connection -----------------------------------------------------------

namespace detail {

/// One connection and the reconnect policy the client and the subscriber
/// share: an error drops the context and no new connection is attempted
/// before `reconnect_backoff` has passed.
class redis_link {
public:
  redis_link(redis_endpoint ep, redis_options opts) : ep_(std::move(ep)), opts_(opts) {}
  ~redis_link() { close(); }

  /// The open context, connecting first when allowed; nullptr while backing
  /// off or when connecting failed (which starts a backoff).
  redisContext* get() {
    if (ctx_)
      return ctx_;
    if (steady::now() < retry_at_)
      return nullptr;
    block_sigpipe_in_this_thread();
    redisContext* c =
      redisConnectWithTimeout(ep_.host.c_str(), ep_.port, to_timeval(opts_.connect_timeout));
    if (!c || c->err) {
      fail("cannot connect to Redis at " + where() + ": " + (c ? c->errstr : "out of memory"));
      if (c)
        redisFree(c);
      return nullptr;
    }
    if (redisSetTimeout(c, to_timeval(opts_.command_timeout)) != REDIS_OK) {
      fail(std::string{"cannot set the Redis command timeout: "} + c->errstr);
      redisFree(c);
      return nullptr;
    }
    redisEnableKeepAlive(c); // a vanished host shows up without traffic; best effort
    ctx_ = c;
    used_ = false;
    ++generation_;
    // On every (re)connect: a new connection is unauthenticated and on db 0.
    if (!ep_.password.empty() && !authenticate())
      return nullptr;
    if (ep_.db != 0 && !select_db())
      return nullptr;
    return ctx_;
  }

  /// Runs one command. A reply error comes back as the reply; a lost
  /// connection or a timeout drops the context and throws
  /// redis_error(unavailable).
  reply_ptr command(std::initializer_list<std::string_view> args) {
    return command(std::vector<std::string_view>(args));
  }

  /// command() with arguments counted at run time (a script's keys).
  reply_ptr command(const std::vector<std::string_view>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (auto a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    for (int attempt = 0;; ++attempt) {
      auto* c = get();
      if (!c)
        throw redis_error(redis_error::kind::unavailable, last_error_);
      bool was_idle = used_;
      errno = 0;
      void* raw = redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data());
      int err = errno;
      if (raw) {
        used_ = true;
        return reply_ptr{static_cast<redisReply*>(raw)};
      }
      // A connection that served earlier commands and then finds the server
      // gone was closed while idle (a Redis restart): one fresh connect right
      // away makes the restart invisible. A timeout is never retried.
      bool closed = c->err == REDIS_ERR_EOF ||
                    (c->err == REDIS_ERR_IO && (err == ECONNRESET || err == EPIPE));
      bool timed_out = c->err == REDIS_ERR_IO && (err == EAGAIN || err == EWOULDBLOCK);
      std::string why = timed_out ? "Redis at " + where() + " did not answer within " +
                                      std::to_string(opts_.command_timeout.count()) + " ms"
                                  : "Redis at " + where() + " failed: " + c->errstr;
      if (attempt == 0 && was_idle && closed) {
        close();
        continue;
      }
      fail(why);
      throw redis_error(redis_error::kind::unavailable, why);
    }
  }

  /// Drops the connection after a failure and starts the backoff.
  void fail(std::string why) {
    close();
    last_error_ = std::move(why);
    retry_at_ = steady::now() + opts_.reconnect_backoff;
  }

  bool backing_off() const { return !ctx_ && steady::now() < retry_at_; }
  steady::time_point retry_at() const { return retry_at_; }
  /// Counts successful connects: tells a subscriber its SUBSCRIBE is gone.
  std::uint64_t generation() const { return generation_; }
  redisContext* context() const { return ctx_; }

private:
  bool authenticate() {
    try {
      auto r = ep_.user.empty() ? command({"AUTH", ep_.password})
                                : command({"AUTH", ep_.user, ep_.password});
      if (!is_error(*r))
        return true;
      // Redis's reply (WRONGPASS, NOPERM, "called without any password
      // configured") never repeats the password.
      fail("Redis at " + where() + " refused AUTH" +
           (ep_.user.empty() ? std::string{} : " as user '" + ep_.user + "'") + ": " +
           reply_text(*r));
    } catch (const redis_error&) {
      // command() has already dropped the connection and set the backoff.
    }
    return false;
  }

  bool select_db() {
    try {
      auto db = std::to_string(ep_.db);
      auto r = command({"SELECT", db});
      if (!is_error(*r))
        return true;
      fail("Redis refused SELECT " + db + ": " + reply_text(*r));
    } catch (const redis_error&) {
      // command() has already dropped the connection and set the backoff.
    }
    return false;
  }

  void close() {
    if (ctx_)
      redisFree(ctx_);
    ctx_ = nullptr;
  }

  std::string where() const { return ep_.host + ":" + std::to_string(ep_.port); }

  redis_endpoint ep_;
  redis_options opts_;
  redisContext* ctx_ = nullptr;
  steady::time_point retry_at_{};
  std::uint64_t generation_ = 0;
  bool used_ = false; ///< the current context has answered a command
  std::string last_error_ = "Redis is not connected";
};

} // namespace detail

// -- client -------------------------------------------------------------------

redis_client::redis_client(redis_endpoint ep, redis_options opts)
  : link_(std::make_unique<detail::redis_link>(std::move(ep), opts)) {}

redis_client::~redis_client() = default;

const std::string& redis_client::token_bucket_script() {
  static const std::string text = token_bucket_lua;
  return text;
}

bool redis_client::ping() {
  try {
    auto r = link_->command({"PING"});
    return r->type == REDIS_REPLY_STATUS && reply_text(*r) == "PONG";
  } catch (const redis_error&) {
    return false;
  }
}

namespace {

/// Runs `script` with one key by EVALSHA; a script not cached (after a
/// restart, SCRIPT FLUSH or failover) is loaded again by EVAL. Throws
/// redis_error: unavailable, or reply when the script fails.
reply_ptr eval1(detail::redis_link& link, const lua_script& script, const char* what,
                        std::string_view key, std::string_view a1, std::string_view a2) {
  auto r = link.command({"EVALSHA", script.sha, "1", key, a1, a2});
  if (is_error(*r) && reply_text(*r).rfind("NOSCRIPT", 0) == 0)
    r = link.command({"EVAL", script.text, "1", key, a1, a2});
  if (is_error(*r))
    throw redis_error(redis_error::kind::reply, std::string{what} + " failed: " + reply_text(*r));
  return r;
}

} // namespace

bucket_reply redis_client::eval_token_bucket(const std::string& key, std::int32_t rate_per_min,
                                             std::int32_t cost) {
  if (rate_per_min < 1 || cost < 1 || cost > rate_per_min)
    throw std::invalid_argument("eval_token_bucket: need 1 <= cost <= rate_per_min");
  admission_request a;
  a.bucket_key = key;
  a.rate_per_min = rate_per_min;
  a.cost = cost;
  auto r = admit(a);
  return {r.allowed, r.remaining, r.retry_after_ms};
}

admission_reply redis_client::admit(const admission_request& a) {
  return admit(std::vector<admission_request>{a}).front();
}

std::vector<admission_reply> redis_client::admit(const std::vector<admission_request>& batch) {
  if (batch.empty())
    throw std::invalid_argument("admit: an empty batch");
  for (auto& a : batch)
    if (a.rate_per_min < 0 || (a.rate_per_min > 0 && (a.cost < 1 || a.cost > a.rate_per_min)) ||
        a.budget < 0 || a.reserve < 0 || (a.budget > 0 && a.budget_key.empty()))
      throw std::invalid_argument("admit: need rate >= 0, 1 <= cost <= rate, budget >= 0, "
                                  "reserve >= 0, and a budget key with a budget");
  const auto& script = token_bucket_script_ref();
  auto ttl = std::max_element(batch.begin(), batch.end(), [](auto& x, auto& y) {
               return x.budget_ttl < y.budget_ttl;
             })->budget_ttl;
  // Texts that the argument views point into: reserved up front, so that
  // no view dangles.
  std::vector<std::string> text;
  std::size_t settles = 0;
  for (auto& a : batch)
    settles += a.settle.size();
  text.reserve(2 + 4 * batch.size() + settles + 1);
  std::vector<std::string_view> keys, argv;
  text.push_back(std::to_string(batch.size()));
  argv.emplace_back(text.back());
  text.push_back(std::to_string(std::max<std::int64_t>(ttl.count(), 1)));
  argv.emplace_back(text.back());
  for (auto& a : batch) {
    // An unused key is still named, so that KEYS keeps its positions, by a
    // key the call names anyway: an ACL user limited to `~parley:*` may
    // name no other, and the script never touches it.
    std::string_view stand_in = !a.bucket_key.empty()   ? std::string_view{a.bucket_key}
                                : !a.budget_key.empty() ? std::string_view{a.budget_key}
                                : !a.settle.empty()     ? std::string_view{a.settle.front().first}
                                                        : std::string_view{"parley:unused"};
    keys.emplace_back(a.bucket_key.empty() ? stand_in : a.bucket_key);
    keys.emplace_back(a.budget_key.empty() ? stand_in : a.budget_key);
    for (auto v : {std::int64_t{a.rate_per_min}, std::int64_t{a.cost}, a.budget, a.reserve}) {
      text.push_back(std::to_string(v));
      argv.emplace_back(text.back());
    }
  }
  for (auto& a : batch)
    for (auto& s : a.settle) {
      keys.emplace_back(s.first);
      text.push_back(std::to_string(s.second));
      argv.emplace_back(text.back());
    }
  auto nkeys = std::to_string(keys.size());
  auto args = [&](const char* verb, std::string_view body) {
    std::vector<std::string_view> v{verb, body, nkeys};
    v.insert(v.end(), keys.begin(), keys.end());
    v.insert(v.end(), argv.begin(), argv.end());
    return v;
  };
  auto r = link_->command(args("EVALSHA", script.sha));
  if (is_error(*r) && reply_text(*r).rfind("NOSCRIPT", 0) == 0)
    r = link_->command(args("EVAL", script.text));
  if (is_error(*r))
    throw redis_error(redis_error::kind::reply, "token bucket script failed: " + reply_text(*r));
  auto n = 6 * batch.size();
  if (r->type != REDIS_REPLY_ARRAY || r->elements != n ||
      std::any_of(r->element, r->element + n,
                  [](const redisReply* e) { return e->type != REDIS_REPLY_INTEGER; }))
    throw redis_error(redis_error::kind::reply, "token bucket script: unexpected reply");
  std::vector<admission_reply> out(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto* e = r->element + 6 * i;
    out[i].allowed = e[0]->integer == 1;
    out[i].remaining = e[1]->integer;
    out[i].retry_after_ms = e[2]->integer;
    out[i].budget_ok = e[3]->integer == 1;
    out[i].spent = e[4]->integer;
    out[i].reserved = e[5]->integer;
  }
  return out;
}

std::vector<std::string> redis_client::announce_member(const std::string& key,
                                                       const std::string& entry,
                                                       std::chrono::milliseconds ttl) {
  auto r = eval1(*link_, members_script(), "membership script", key, entry,
                 std::to_string(std::max<std::int64_t>(ttl.count(), 0)));
  if (r->type != REDIS_REPLY_ARRAY)
    throw redis_error(redis_error::kind::reply, "membership script: unexpected reply");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < r->elements; ++i)
    if (r->element[i]->type == REDIS_REPLY_STRING)
      out.push_back(reply_text(*r->element[i]));
  return out;
}

std::int64_t redis_client::publish(const std::string& channel, const std::string& payload) {
  auto r = link_->command({"PUBLISH", channel, payload});
  if (r->type != REDIS_REPLY_INTEGER)
    throw redis_error(redis_error::kind::reply, "PUBLISH failed: " + reply_text(*r));
  return r->integer;
}

bool redis_client::backing_off() const { return link_->backing_off(); }

// -- subscriber ---------------------------------------------------------------

redis_subscriber::redis_subscriber(redis_endpoint ep, std::string channel, redis_options opts)
  : link_(std::make_unique<detail::redis_link>(std::move(ep), opts)),
    channel_(std::move(channel)) {}

redis_subscriber::~redis_subscriber() = default;

bool redis_subscriber::subscribed() const {
  return link_->context() && subscribed_generation_ == link_->generation();
}

bool redis_subscriber::ensure_subscribed() {
  if (!link_->get())
    return false;
  if (subscribed_generation_ == link_->generation())
    return true;
  try {
    auto r = link_->command({"SUBSCRIBE", channel_});
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !r->element[0]->str ||
        reply_text(*r->element[0]) != "subscribe") {
      link_->fail("Redis refused SUBSCRIBE " + channel_ + ": " + reply_text(*r));
      return false;
    }
    subscribed_generation_ = link_->generation();
    return true;
  } catch (const redis_error&) {
    return false;
  }
}

std::optional<std::string> redis_subscriber::next(milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  if (!ensure_subscribed()) {
    // Sleep rather than return at once, so that a loop around next() never
    // spins while Redis is away.
    auto retry = link_->retry_at();
    auto wake = retry > steady::now() ? std::min(deadline, retry) : deadline;
    std::this_thread::sleep_until(wake);
    return std::nullopt;
  }
  // Poll the socket ourselves: a hiredis read timeout would leave the
  // context in an error state, and a quiet channel is not an error.
  redisContext* c = link_->context();
  for (;;) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(c, &raw) != REDIS_OK) {
      link_->fail(std::string{"Redis protocol error: "} + c->errstr);
      return std::nullopt;
    }
    if (raw) {
      reply_ptr r{static_cast<redisReply*>(raw)};
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
          reply_text(*r->element[0]) == "message" && reply_text(*r->element[1]) == channel_)
        return reply_text(*r->element[2]);
      continue; // confirmations and anything else a subscriber may see
    }
    auto left = std::chrono::ceil<milliseconds>(deadline - steady::now());
    if (left.count() <= 0)
      return std::nullopt;
    pollfd p{c->fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      link_->fail(std::string{"poll on the Redis connection failed: "} + std::strerror(errno));
      return std::nullopt;
    }
    if (n == 0)
      return std::nullopt;
    if (redisBufferRead(c) != REDIS_OK) {
      link_->fail(std::string{"Redis subscription lost: "} + c->errstr);
      return std::nullopt;
    }
  }
}

} // namespace parley::storage

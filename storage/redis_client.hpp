#pragma once
// Redis through hiredis: the cluster-wide token bucket and daily token
// budget, PUBLISH and a SUBSCRIBE reader. Every call BLOCKS (bounded by the timeouts below): use it
// only from a detached actor that owns the client (ratelimit_actor), never
// from a scheduler or asio thread. Not thread-safe; one object per thread.
//
// Failure model: Redis is optional. Any I/O error or timeout drops the
// connection; the next call reconnects, but at most once per
// `reconnect_backoff`. While backing off, calls fail at once without touching
// the network, so a dead Redis costs callers nothing but a branch.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace parley::storage {

/// The parsed form of PARLEY_REDIS_URL.
struct redis_endpoint {
  std::string host; ///< a name, an IPv4 address, or an IPv6 address without brackets
  std::uint16_t port = 6379;
  int db = 0;
  /// Redis 6 ACL user; empty: `AUTH password` (the default user, requirepass).
  std::string user{};
  /// Sent with AUTH after every connect; empty: no AUTH. A secret: never log it.
  std::string password{};
};

/// Parses `redis://[[user]:password@]host[:port][/db]`; the port defaults to
/// 6379, the db to 0. An IPv6 host is written in brackets
/// (`redis://[::1]:6379`). User and password may be percent-encoded (`%40`
/// for '@'); a password may also hold '@', '/', '?' or '#' as is, since the
/// host starts after the last '@'. Throws std::invalid_argument with a
/// message that names PARLEY_REDIS_URL, says what is wrong (scheme, host,
/// port, db, credentials or query) and shows the URL with its password
/// replaced by `***`.
redis_endpoint parse_redis_url(const std::string& url);

/// `url` with the password of its `scheme://user:password@` part (or the
/// whole part when it has no ':') replaced by `***`: safe to log. A URL
/// without '@' comes back unchanged.
std::string redact_url(const std::string& url);

struct redis_options {
  /// Bounds TCP connect (not name resolution: use an address or /etc/hosts).
  std::chrono::milliseconds connect_timeout{200};
  /// Bounds each command's send and reply.
  std::chrono::milliseconds command_timeout{50};
  /// The least time between two connection attempts.
  std::chrono::milliseconds reconnect_backoff{500};
};

class redis_error : public std::runtime_error {
public:
  enum class kind {
    unavailable, ///< not connected, backing off, I/O error or timeout: fall back
    reply,       ///< Redis answered with an error (busy, read-only, a script bug)
  };
  redis_error(kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  kind error_kind() const { return kind_; }

private:
  kind kind_;
};

/// One token bucket decision made by Redis.
struct bucket_reply {
  bool allowed = false;
  std::int64_t remaining = 0;      ///< whole tokens left after this request
  std::int64_t retry_after_ms = 0; ///< when denied: until `cost` tokens exist; else 0
};

/// One chat request's admission in one round trip (redis_client::admit):
/// the key's token bucket, its daily token budget with a reservation, and
/// the settlement of earlier calls' spend.
struct admission_request {
  std::string bucket_key;        ///< the bucket; unused when rate_per_min is 0
  std::int32_t rate_per_min = 0; ///< 0: no bucket
  std::int32_t cost = 1;         ///< 1 <= cost <= rate_per_min when there is a bucket
  std::string budget_key;        ///< the key's counter of this UTC day; needed with a budget
  std::int64_t budget = 0;       ///< tokens per day; 0: no budget
  std::int64_t reserve = 0;      ///< tokens to reserve for this call (>= 0)
  /// Time to live of the budget counters written (this one and `settle`'s):
  /// past the end of their day, so that they vanish by themselves.
  std::chrono::milliseconds budget_ttl{1};
  /// (counter, delta) added first: earlier calls' spend less their
  /// reservations. A counter never drops below 0.
  std::vector<std::pair<std::string, std::int64_t>> settle{};
};

/// What Redis decided (redis_client::admit).
struct admission_reply {
  bool allowed = false;            ///< both the bucket and the budget allow
  std::int64_t remaining = 0;      ///< whole bucket tokens left
  std::int64_t retry_after_ms = 0; ///< when the bucket denied: until `cost` tokens exist
  bool budget_ok = true;           ///< false: the day's budget is spent (bucket untouched)
  std::int64_t spent = 0;          ///< the counter before this call (spent + reserved)
  std::int64_t reserved = 0;       ///< what this call reserved: min(reserve, budget - spent)
};

namespace detail {
class redis_link;
}

/// Commands over one connection, (re)opened on demand.
class redis_client {
public:
  /// Does not connect yet; the first call does.
  explicit redis_client(redis_endpoint ep, redis_options opts = {});
  ~redis_client();
  redis_client(const redis_client&) = delete;
  redis_client& operator=(const redis_client&) = delete;

  /// A PING round trip; false when Redis cannot be reached (never throws).
  bool ping();

  /// Takes `cost` tokens from the bucket at `key`, atomically and in one
  /// round trip (a Lua script, by SHA with a fallback to its text after
  /// NOSCRIPT). The bucket holds up to `rate_per_min` tokens (burst = rate)
  /// and refills rate/60 tokens per second by Redis's clock, so every node
  /// sees the same time. An idle key expires once it would be full again.
  /// Requires 1 <= cost <= rate_per_min (std::invalid_argument otherwise).
  /// Throws redis_error.
  bucket_reply eval_token_bucket(const std::string& key, std::int32_t rate_per_min,
                                 std::int32_t cost = 1);

  /// Settles `a.settle`, then decides a chat request (Redis: one EVALSHA,
  /// NOSCRIPT falls back to the text, as above): with a budget, a counter
  /// already at or over it refuses (budget_ok = false) without touching the
  /// bucket; else the bucket takes `cost` (as eval_token_bucket); when both
  /// allow, min(reserve, budget - spent) is added to the counter. Throws
  /// std::invalid_argument on arguments outside their ranges, redis_error.
  admission_reply admit(const admission_request& a);

  /// admit() for several requests in one script call (one round trip):
  /// every request's `settle` runs first, then the requests are decided in
  /// order, each seeing what the ones before it took, exactly as if they
  /// came one by one. Counters live for the longest `budget_ttl` given.
  /// One reply per request, in order. Throws as admit(), and
  /// std::invalid_argument on an empty batch.
  std::vector<admission_reply> admit(const std::vector<admission_request>& batch);

  /// Registers `entry` in the membership set at `key` until `ttl` from now
  /// (Redis's clock; a zero ttl removes it), drops the expired entries and
  /// returns every entry left, in one round trip (a Lua script). Discovery
  /// calls it once per interval with a ttl of a few intervals. Throws
  /// redis_error.
  std::vector<std::string> announce_member(const std::string& key, const std::string& entry,
                                           std::chrono::milliseconds ttl);

  /// PUBLISH; the number of subscribers that received it. Throws redis_error.
  std::int64_t publish(const std::string& channel, const std::string& payload);

  /// True while a reconnect is not yet allowed: every call fails at once.
  bool backing_off() const;

  /// The text of the token bucket and budget script (for tests and operators).
  static const std::string& token_bucket_script();

private:
  std::unique_ptr<detail::redis_link> link_;
};

/// A SUBSCRIBE to one channel on its own connection, re-subscribed after
/// every reconnect. Messages published while it is disconnected are lost
/// (Redis pub/sub keeps nothing), so use it for hints that have a slower
/// fallback (such as the edge's key cache expiry), not for facts.
class redis_subscriber {
public:
  redis_subscriber(redis_endpoint ep, std::string channel, redis_options opts = {});
  ~redis_subscriber();
  redis_subscriber(const redis_subscriber&) = delete;
  redis_subscriber& operator=(const redis_subscriber&) = delete;

  /// The next payload published on the channel, or nullopt when none came
  /// within `timeout` or Redis is unreachable. Connects and subscribes first
  /// if needed. Never throws, never spins: it returns after about `timeout`
  /// (plus connect_timeout + command_timeout when it had to reconnect), so a
  /// loop around it can check for shutdown between calls.
  std::optional<std::string> next(std::chrono::milliseconds timeout);

  /// True when the current connection holds the subscription.
  bool subscribed() const;

private:
  bool ensure_subscribed();

  std::unique_ptr<detail::redis_link> link_;
  std::string channel_;
  std::uint64_t subscribed_generation_ = 0; ///< link generation the SUBSCRIBE ran on
};

} // namespace parley::storage

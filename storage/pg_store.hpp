#pragma once
// Parley's repository over one libpqxx connection. Every call BLOCKS: use it
// only from a detached actor that owns the store (storage_actor), never from
// a scheduler or asio thread. Not thread-safe.
//
// Errors: driver exceptions are translated into storage_error, whose kind
// tells the caller whether a retry can help. A broken connection is dropped
// and re-opened on the next call.
//
// Timeouts (PARLEY_PG_TIMEOUT_MS): connecting, a dead peer (TCP keepalive,
// tcp_user_timeout) and each call's statements are bounded by `timeout`. The
// server cancels a statement after `timeout` (statement_timeout); a server
// that does not even answer that (hung, blackholed) has the connection cut
// by the store's watchdog thread one second later.

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "storage/records.hpp"

#include <pqxx/connection>

namespace parley::storage {

class storage_error : public std::runtime_error {
public:
  enum class kind { transient, permanent };
  /// What a transient error means for the call that raised it.
  enum class cause {
    other,
    /// No connection could be opened (refused, timed out, starting up).
    cannot_connect,
    /// The connection was found broken before the call's work could have
    /// been committed (nothing happened): the call may run again on a new
    /// connection.
    connection_lost,
    /// PostgreSQL did not answer within the timeout: the connection was cut.
    timed_out,
    /// The connection broke around COMMIT: the work may or may not be stored.
    in_doubt,
  };
  storage_error(kind k, const std::string& what, cause c = cause::other)
    : std::runtime_error(what), kind_(k), cause_(c) {}
  kind error_kind() const { return kind_; }
  cause error_cause() const { return cause_; }

private:
  kind kind_;
  cause cause_;
};

/// Shards of the daily usage totals (usage_daily.shard, a smallint: 0 ..
/// usage_shards - 1). A key has a row only in the shards that wrote it, so
/// a wide range costs nothing and keeps nodes apart.
inline constexpr int usage_shards = 32768;

/// The shard of a node's `index`-th storage connection: the connections of
/// one node never share one, those of different nodes almost never (two
/// nodes that did would only wait for each other's row lock now and then).
int usage_shard_of(const std::string& node_id, std::size_t index);

/// The order of a page of messages.
enum class page_order : std::uint8_t { ascending, descending };

/// One client id lookup (look_up_client_ids): a session's client message
/// id (empty: none), and a response whose deletion to check (0: none).
struct client_lookup {
  std::string session_id;
  std::string client_message_id;
  std::int64_t live_seq = 0;
  /// Not empty: the client id is this user's Idempotency-Key; the answer
  /// says which session it belongs to.
  std::string user_id = {};
};

/// Its answer: the user message with that client id and its reply, if
/// stored, and whether the response `live_seq` was deleted.
struct client_lookup_result {
  std::optional<std::pair<message_record, std::optional<message_record>>> turn;
  bool gone = false;
  /// With client_lookup::user_id: the session the key belongs to (empty:
  /// none yet).
  std::string key_owner = {};
};

class pg_store {
public:
  /// Does not connect yet; the first call does. `url` gets the libpq
  /// timeout parameters for `timeout` (with_pg_timeouts) that it lacks.
  /// `usage_shard` (usage_shard_of) is the row of the daily totals this
  /// store adds to; a row is only ever written by one store at a time.
  explicit pg_store(std::string url,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(5000),
                    int usage_shard = 0);
  ~pg_store();
  pg_store(const pg_store&) = delete;
  pg_store& operator=(const pg_store&) = delete;

  /// Connects now and applies migrations; returns the schema version.
  int migrate();

  /// Names the cluster this database holds, the same on every node that
  /// uses it and different for every other database: its name and the time
  /// its schema was first created (microseconds). Call after migrate().
  /// Throws storage_error.
  std::string cluster_identity();

  /// A trivial round trip; false when PostgreSQL cannot be reached.
  bool ping();
  /// The same round trip; throws storage_error (with its cause) instead.
  void probe();

  /// True while a connection is open (it may still have died unnoticed).
  bool connected() const { return conn_ != nullptr; }
  /// The driver's words for the last commit_turns() failure, for the log
  /// (never for an answer); empty when none failed yet.
  const std::string& last_commit_failure() const { return last_commit_failure_; }

  /// Drops the connection if PostgreSQL closed it (a restart, an
  /// administrator's kill) while it was idle; costs no round trip.
  void check_connection();

  /// Opens a connection now if there is none; throws storage_error.
  void connect();

  // API keys
  /// A new key of `k.user_id` with `k.prefix`, its budget and models;
  /// returns it with its id and creation time.
  api_key_record create_key(const api_key_record& k, const std::string& key_hash);
  std::optional<api_key_record> find_key(const std::string& key_hash);
  /// Keys newest first, revoked ones included: of `user`, or of everyone
  /// when it is empty; at most `limit`.
  std::vector<api_key_record> list_keys(const std::string& user, int limit);
  /// Revokes by numeric id or by prefix; the number of keys that matched.
  int revoke_key(const std::string& prefix_or_id);

  // Sessions
  void create_session(const session_record& s);
  /// A session with its first messages (seq 1.. in the given order; role
  /// and content only) in one transaction and one statement for them.
  void create_session(const session_record& s, const std::vector<message_record>& first);
  /// create_session(s, first) once per id: a session made with an
  /// Idempotency-Key, whose id derives from the key. The session as it is
  /// when it exists now as `s.user_id`'s, made with the same `request_hash`
  /// (by this call or an earlier one); nullopt when the id is taken by
  /// another request (another hash, or a session made without one).
  std::optional<session_record> create_session_once(const session_record& s,
                                                    const std::vector<message_record>& first,
                                                    const std::string& request_hash);
  /// A fork: a new session `r.new_id` of `r.user_id` with the source's
  /// settings and its messages up to `r.upto_seq`, copied by one INSERT ...
  /// SELECT in the transaction that makes the session. True when the fork
  /// exists now (also made before: then nothing is written); false when the
  /// source is not the user's. With `r.idem_key`, nothing is made while the
  /// user's key belongs to another session (key_taken).
  fork_outcome fork_session(const fork_request& r);
  /// The messages seq - 3 .. seq of `r.user_id`'s session and the
  /// response's options when the reply `r.seq` is a stored response that
  /// was not deleted; nullopt otherwise.
  std::optional<response_record> response_turn(const response_ref& r);
  /// Marks the response deleted; false when there is no such response
  /// (also one deleted already, or another user's).
  bool delete_response(const response_ref& r);
  /// create_session() unless a session with its id exists; true when it
  /// exists now as `s.user_id`'s. With an `idem_key`, nothing is made
  /// while the user's key belongs to another session (then false, unless
  /// the session exists already).
  bool ensure_session(const session_record& s, const std::string& idem_key = {});
  /// Sets the metadata of `user`'s session `id`; the session as it now is,
  /// nullopt when there is none.
  std::optional<session_record> update_metadata(const std::string& id, const std::string& user,
                                                const std::string& metadata_json);
  std::optional<session_record> get_session(const std::string& id, const std::string& user);
  session_page list_sessions(const std::string& user, int limit, const std::string& cursor);
  bool delete_session(const std::string& id, const std::string& user);

  /// Any user's session (admin views); nullopt if there is none.
  std::optional<session_record> find_session(const std::string& id);

  /// Migration: takes a session over from an actor that shipped its state,
  /// bumping the epoch only if it is still `epoch` with `last_seq` stored,
  /// i.e. nothing happened since the state was shipped. Returns the new
  /// epoch, or 0 when the state is outdated (then activate from scratch).
  std::int64_t adopt(const std::string& id, std::int64_t epoch, std::int64_t last_seq);

  /// Bumps the epoch and loads the newest `window` messages; nullopt if the
  /// session does not exist.
  std::optional<activation_record> activate(const std::string& id, int window);

  /// activate() for many sessions in one transaction and one commit: two
  /// statements (array parameters) whatever their number, so a burst of
  /// activations (a node's first second, a failover) costs one fsync per
  /// batch instead of one per session. `ids` must be distinct; the answer
  /// holds one entry per id, in order, each with at most `window` messages.
  std::vector<std::optional<activation_record>> activate_many(const std::vector<std::string>& ids,
                                                              int window);

  /// nullopt when the session does not exist or belongs to someone else.
  /// Ascending: seqs above `after`; descending: seqs below it, newest first.
  /// `next_after` is the last seq of the page when more follow, else 0.
  std::optional<message_page> list_messages(const std::string& id, const std::string& user,
                                            std::int64_t after, int limit,
                                            page_order order = page_order::ascending);

  /// The user message with this client id and its reply, if stored.
  std::optional<std::pair<message_record, std::optional<message_record>>>
  find_by_client_id(const std::string& session_id, const std::string& client_message_id);
  /// find_by_client_id() for many (session id, client id) pairs in one
  /// statement; one entry per pair, in order.
  std::vector<std::optional<std::pair<message_record, std::optional<message_record>>>>
  find_by_client_ids(const std::vector<std::pair<std::string, std::string>>& keys);
  /// find_by_client_ids() that also tells, for each lookup with a
  /// `live_seq`, whether that response was deleted (DELETE
  /// /v1/responses/{id}); one statement for all, in order.
  std::vector<client_lookup_result> look_up_client_ids(const std::vector<client_lookup>& keys);

  feedback_outcome put_feedback(const std::string& id, const std::string& user, std::int64_t seq,
                                int rating, const std::optional<std::string>& comment);

  /// Group commit: writes every turn whose epoch is current in ONE
  /// statement (one round trip, one transaction); one outcome per turn, in
  /// order. A batch that hits a unique key is retried turn by turn so that
  /// one bad turn cannot fail the others. When the connection breaks under
  /// the statement, a new connection settles what it can: a turn stored
  /// exactly as sent is `committed`; when the old backend is gone, a turn
  /// not stored was rolled back and is written once more; anything else
  /// stays `unknown`. Never reports a turn committed that is not, and never
  /// writes one twice (the fence and the unique keys).
  std::vector<commit_outcome> commit_turns(const std::vector<turn_write>& turns);

  /// Appends `w.messages` (role and content; seqs w.after_seq + 1.., times
  /// given) in one statement when `w.epoch` is current and the last seq is
  /// still `w.after_seq`: committed, fenced (nothing written) or conflict.
  commit_outcome append_messages(const append_write& w);
  // The group commit also adds each written turn (its reply's usage) to the
  // daily totals of the session's user, the reply's UTC day and its model.

  /// Adds `rows` (each key at most once, as usage_tally::take gives them)
  /// to the daily totals in one statement and transaction. Throws
  /// storage_error: the rows may have been added only when its cause is
  /// `in_doubt` or `timed_out` (or it is permanent, a bug).
  void add_usage(const std::vector<usage_total>& rows);

  /// `user`'s daily totals of the last `days` UTC days (today included),
  /// ascending by day, then model.
  std::vector<usage_total> usage_of(const std::string& user, int days);

  /// Today's (UTC) `limit` users with the most tokens, every model summed
  /// (`model` empty), most first.
  std::vector<usage_total> top_usage_today(int limit);

private:
  class watchdog;

  pqxx::connection& conn();
  void drop_connection();
  std::vector<commit_outcome> commit_batch(const std::vector<turn_write>& turns, bool resolve);
  /// After the connection to `backend` broke under a batch of `turns`.
  std::vector<commit_outcome> resolve_in_doubt(const std::vector<turn_write>& turns, int backend);
  template <class F>
  auto guarded(F&& f, std::chrono::milliseconds bound) -> decltype(f());
  template <class F>
  auto guarded(F&& f) -> decltype(f()) {
    return guarded(std::forward<F>(f), timeout_);
  }

  std::string url_;
  std::chrono::milliseconds timeout_;
  short usage_shard_ = 0;
  std::unique_ptr<pqxx::connection> conn_;
  bool commit_prepared_ = false; ///< the commit statement is prepared on conn_
  std::string last_commit_failure_;
  bool client_ids_prepared_ = false; ///< so is the client id lookup
  std::unique_ptr<watchdog> watchdog_;
};

} // namespace parley::storage

#pragma once
// Parley's repository over one libpqxx connection. Every call BLOCKS: use it
// only from a detached actor that owns the store (storage_actor), never from
// a scheduler or asio thread. Not thread-safe.
//
// Errors: driver exceptions are translated into storage_error, whose kind
// tells the caller whether a retry can help. A broken connection is dropped
// and re-opened on the next call.

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
  storage_error(kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  kind error_kind() const { return kind_; }

private:
  kind kind_;
};

class pg_store {
public:
  /// Does not connect yet; the first call does.
  explicit pg_store(std::string url);
  ~pg_store();
  pg_store(const pg_store&) = delete;
  pg_store& operator=(const pg_store&) = delete;

  /// Connects now and applies migrations; returns the schema version.
  int migrate();

  /// A trivial round trip; false when PostgreSQL cannot be reached.
  bool ping();

  // API keys
  api_key_record create_key(const std::string& user, const std::string& key_hash,
                            const std::string& prefix);
  std::optional<api_key_record> find_key(const std::string& key_hash);
  /// Revokes by numeric id or by prefix; the number of keys that matched.
  int revoke_key(const std::string& prefix_or_id);

  // Sessions
  void create_session(const session_record& s);
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

  /// nullopt when the session does not exist or belongs to someone else.
  std::optional<message_page> list_messages(const std::string& id, const std::string& user,
                                            std::int64_t after, int limit);

  /// The user message with this client id and its reply, if stored.
  std::optional<std::pair<message_record, std::optional<message_record>>>
  find_by_client_id(const std::string& session_id, const std::string& client_message_id);

  feedback_outcome put_feedback(const std::string& id, const std::string& user, std::int64_t seq,
                                int rating, const std::optional<std::string>& comment);

  /// Group commit: writes every turn whose epoch is current in ONE
  /// statement (one round trip, one transaction); one outcome per turn, in
  /// order. A batch that hits a unique key is retried turn by turn so that
  /// one bad turn cannot fail the others.
  std::vector<commit_outcome> commit_turns(const std::vector<turn_write>& turns);

private:
  pqxx::connection& conn();
  void drop_connection();
  template <class F>
  auto guarded(F&& f) -> decltype(f());

  std::string url_;
  std::unique_ptr<pqxx::connection> conn_;
  bool commit_prepared_ = false; ///< the commit statement is prepared on conn_
};

/// Encodes and decodes the opaque cursor of session listings.
std::string encode_cursor(const std::string& created_at, const std::string& id);
bool decode_cursor(const std::string& cursor, std::string& created_at, std::string& id);

} // namespace parley::storage

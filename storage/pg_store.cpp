#include "storage/pg_store.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>

#include <poll.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "net/http/cursor.hpp"
#include "storage/pg_array.hpp"
#include "storage/pg_conninfo.hpp"
#include "storage/schema.hpp"

namespace parley::storage {

namespace {

// Timestamps leave PostgreSQL in exactly the format now_rfc3339() writes.
#define PARLEY_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

constexpr const char* session_columns =
  "id, user_id, " PARLEY_TS("created_at") ", system_prompt, model, metadata::text, "
  "message_count, last_seq, epoch, coalesce(context_tokens, -1)";

constexpr const char* message_columns =
  "seq, role, content, " PARLEY_TS("created_at") ", reply_to, model, client_message_id, "
  "prompt_tokens, completion_tokens, total_tokens, tokens, request_hash";

// A key as api_key_record reads it (read_key).
constexpr const char* key_columns =
  "id, user_id, prefix, coalesce(token_budget_per_day, -1), coalesce(models::text, '[]'), " PARLEY_TS(
    "created_at") ", revoked_at IS NOT NULL";
const std::string sql_insert_key =
  std::string{"INSERT INTO api_keys (user_id, prefix, key_hash, token_budget_per_day, models) "
              "VALUES ($1, $2, $3, nullif($4::bigint, -1), $5::jsonb) RETURNING "} +
  key_columns;
const std::string sql_find_key = std::string{"SELECT "} + key_columns +
                                 " FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";
const std::string sql_list_keys_of = std::string{"SELECT "} + key_columns +
                                     " FROM api_keys WHERE user_id = $1 ORDER BY id DESC LIMIT $2";
const std::string sql_list_keys = std::string{"SELECT "} + key_columns +
                                  " FROM api_keys ORDER BY id DESC LIMIT $1";
const std::string sql_revoke_key =
  "WITH hit AS (SELECT id FROM api_keys WHERE id::text = $1 OR prefix = $1) "
  "UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()) FROM hit "
  "WHERE k.id = hit.id RETURNING k.id";
const std::string sql_insert_session =
  "INSERT INTO sessions (id, user_id, created_at, system_prompt, model, metadata, "
  "context_tokens) VALUES ($1, $2, $3::timestamptz, $4, $5, $6::jsonb, nullif($7::bigint, -1))";
// A conversation created with items: the session row says how many, and
// the messages come from the arrays of roles and contents ($7, $8) in one
// statement, seq = their position. Only the session's creator writes here,
// before any actor can hold it.
const std::string sql_insert_session_with_messages =
  "WITH s AS (INSERT INTO sessions (id, user_id, created_at, system_prompt, model, metadata, "
  "last_seq, message_count) VALUES ($1, $2, $3::timestamptz, $4, $5, $6::jsonb, "
  "cardinality($7::text[]), cardinality($7::text[])) RETURNING id, created_at) "
  "INSERT INTO messages (session_id, seq, role, content, created_at) "
  "SELECT s.id, m.seq, m.role, m.content, s.created_at FROM s, "
  "unnest($7::text[], $8::text[]) WITH ORDINALITY AS m(role, content, seq)";
// The same once per id, with the request's hash ($9); nothing when the id
// exists (then the caller compares the hash that made it).
const std::string sql_insert_session_with_messages_once =
  "WITH s AS (INSERT INTO sessions (id, user_id, created_at, system_prompt, model, metadata, "
  "last_seq, message_count, request_hash) VALUES ($1, $2, $3::timestamptz, $4, $5, $6::jsonb, "
  "cardinality($7::text[]), cardinality($7::text[]), $9) ON CONFLICT (id) DO NOTHING "
  "RETURNING id, created_at) "
  "INSERT INTO messages (session_id, seq, role, content, created_at) "
  "SELECT s.id, m.seq, m.role, m.content, s.created_at FROM s, "
  "unnest($7::text[], $8::text[]) WITH ORDINALITY AS m(role, content, seq)";
const std::string sql_session_made_by =
  std::string{"SELECT "} + session_columns +
  ", request_hash IS NOT DISTINCT FROM $3 FROM sessions WHERE id = $1 AND user_id = $2";
const std::string sql_update_metadata =
  std::string{"UPDATE sessions SET metadata = $3::jsonb, updated_at = now() "
              "WHERE id = $1 AND user_id = $2 RETURNING "} +
  session_columns;
// Appended messages (OpenAI's conversation items), fenced like a turn: the
// session row moves on only while the writer's epoch is current and nothing
// was written since the writer's last seq ($3); seqs follow it in order.
const std::string sql_append_messages =
  "WITH s AS (UPDATE sessions SET last_seq = last_seq + cardinality($4::text[]), "
  "message_count = message_count + cardinality($4::text[]), updated_at = now() "
  "WHERE id = $1 AND epoch = $2 AND last_seq = $3 RETURNING id) "
  "INSERT INTO messages (session_id, seq, role, content, created_at) "
  "SELECT s.id, $3 + m.n, m.role, m.content, m.at::timestamptz FROM s, "
  "unnest($4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS m(role, content, at, n)";
// A fork: the session row from the source's (same user), then its messages
// up to $4, all in one statement; nothing when the fork exists already.
const std::string sql_fork_session =
  "WITH src AS (SELECT system_prompt, model, metadata, context_tokens FROM sessions "
  "WHERE id = $2 AND user_id = $3), s AS (INSERT INTO sessions (id, user_id, created_at, "
  "system_prompt, model, metadata, context_tokens, last_seq, message_count) SELECT $1, $3, "
  "$5::timestamptz, system_prompt, model, metadata, context_tokens, $4, $4 FROM src "
  "WHERE NOT EXISTS (SELECT 1 FROM response_keys WHERE user_id = $3 AND idem_key = $6 "
  "AND session_id <> $1) ON CONFLICT (id) DO NOTHING RETURNING id) "
  "INSERT INTO messages (session_id, seq, role, content, created_at, reply_to, model, "
  "client_message_id, prompt_tokens, completion_tokens, total_tokens, tokens, request_hash) "
  "SELECT s.id, m.seq, m.role, m.content, m.created_at, m.reply_to, m.model, "
  "m.client_message_id, m.prompt_tokens, m.completion_tokens, m.total_tokens, m.tokens, "
  "m.request_hash "
  "FROM s JOIN messages m ON m.session_id = $2 AND m.seq <= $4";
// A session made for a keyed request (a new conversation of OpenAI's
// Responses API): never while the user's key ($8; NULL: none) belongs to
// another session.
const std::string sql_insert_session_if_absent =
  "INSERT INTO sessions (id, user_id, created_at, system_prompt, model, metadata, "
  "context_tokens) SELECT $1, $2, $3::timestamptz, $4, $5, $6::jsonb, nullif($7::bigint, -1) "
  "WHERE NOT EXISTS (SELECT 1 FROM response_keys WHERE user_id = $2 AND idem_key = $8 "
  "AND session_id <> $1) ON CONFLICT (id) DO NOTHING";
const std::string sql_key_elsewhere =
  "SELECT 1 FROM response_keys WHERE user_id = $1 AND idem_key = $2 AND session_id <> $3";
const std::string sql_response_gone =
  "SELECT 1 FROM deleted_responses WHERE session_id = $1 AND seq = $2";
const std::string sql_delete_response =
  "INSERT INTO deleted_responses (session_id, seq) SELECT m.session_id, m.seq FROM messages m "
  "JOIN sessions s ON s.id = m.session_id WHERE s.id = $1 AND s.user_id = $2 AND m.seq = $3 "
  "AND m.role = 'assistant' AND m.reply_to = $3 - 1 ON CONFLICT DO NOTHING";
// A response's options; the call options as the upstream got them.
const std::string sql_response_options =
  "SELECT instructions, metadata::text, json_strip_nulls(json_build_object('temperature', "
  "temperature, 'max_tokens', max_output_tokens))::text, input_before FROM response_options "
  "WHERE session_id = $1 AND seq = $2";
const std::string sql_get_session =
  std::string{"SELECT "} + session_columns + " FROM sessions WHERE id = $1 AND user_id = $2";
const std::string sql_list_sessions_first =
  std::string{"SELECT "} + session_columns +
  " FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";
const std::string sql_list_sessions_after =
  std::string{"SELECT "} + session_columns +
  " FROM sessions WHERE user_id = $1 AND (created_at, id) < ($3::timestamptz, $4) "
  "ORDER BY created_at DESC, id DESC LIMIT $2";
const std::string sql_delete_session = "DELETE FROM sessions WHERE id = $1 AND user_id = $2";
const std::string sql_activate =
  std::string{"UPDATE sessions SET epoch = epoch + 1 WHERE id = $1 RETURNING "} + session_columns;
const std::string sql_activate_many =
  std::string{"UPDATE sessions SET epoch = epoch + 1 WHERE id = ANY($1::text[]) RETURNING "} +
  session_columns;
// The newest $2 messages of each session of $1 (the id first, then
// message_columns), one index scan per session.
const std::string sql_windows = std::string{"SELECT s.id, m.* FROM unnest($1::text[]) AS s(id) "
                                            "CROSS JOIN LATERAL (SELECT "} +
                                message_columns +
                                " FROM messages WHERE session_id = s.id ORDER BY seq DESC "
                                "LIMIT $2) AS m";
const std::string sql_adopt = "UPDATE sessions SET epoch = epoch + 1 WHERE id = $1 AND epoch = $2 "
                              "AND last_seq = $3 RETURNING epoch";
const std::string sql_find_session =
  std::string{"SELECT "} + session_columns + " FROM sessions WHERE id = $1";
const std::string sql_window = std::string{"SELECT "} + message_columns +
                               " FROM messages WHERE session_id = $1 ORDER BY seq DESC LIMIT $2";
const std::string sql_session_owned = "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2";
const std::string sql_list_messages =
  std::string{"SELECT "} + message_columns +
  " FROM messages WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
const std::string sql_list_messages_desc =
  std::string{"SELECT "} + message_columns +
  " FROM messages WHERE session_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";
// For each (session, client id) pair of $1 and $2 (1-based position i):
// the user message with that client id and its reply, the user message
// first. Two index probes a pair, whatever the length of the session's
// history: the user message through messages_client_id, its reply (seq =
// reply_to + 1, API.md) through the primary key. The LIMITs keep both
// lookups nested loops over the pairs: a prepared statement's generic plan
// is made once per connection, maybe while the table is still empty, and a
// hash join over a sequential scan of messages would stay with it.
// The same statement answers, for each pair with a reply seq in $3 (0:
// none), whether that response was deleted (kind 1, one primary key probe
// of deleted_responses), and for each pair with a user in $4 (NULL: none;
// the client id is an OpenAI Idempotency-Key) the session that key belongs
// to (kind 2, one primary key probe of response_keys), so a turn pays no
// round trip of its own for either. Rows: position, kind (0 a message),
// the key's session, then message_columns (NULL but for kind 0).
const char* const client_ids_statement = "parley_find_client_ids";
const std::string sql_find_client_ids =
  std::string{R"sql(WITH q AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY
    AS q(session_id, cmid, live, user_id, i))
SELECT q.i, 0, NULL::text, m.*
  FROM q
  CROSS JOIN LATERAL (SELECT seq FROM messages WHERE session_id = q.session_id
                         AND client_message_id = q.cmid LIMIT 1) u
  CROSS JOIN LATERAL (SELECT )sql"} +
  message_columns + R"sql( FROM messages
     WHERE session_id = q.session_id AND seq IN (u.seq, u.seq + 1)
       AND (seq = u.seq OR reply_to = u.seq) LIMIT 2) m
UNION ALL
SELECT q.i, 1, NULL::text, m.*
  FROM q JOIN deleted_responses d ON d.session_id = q.session_id AND d.seq = q.live
  LEFT JOIN LATERAL (SELECT )sql" +
  message_columns + R"sql( FROM messages WHERE false) m ON true
UNION ALL
SELECT q.i, 2, k.session_id, m.*
  FROM q
  CROSS JOIN LATERAL (SELECT session_id FROM response_keys
                       WHERE user_id = q.user_id AND idem_key = q.cmid LIMIT 1) k
  LEFT JOIN LATERAL (SELECT )sql" +
  message_columns + R"sql( FROM messages WHERE false) m ON true
 ORDER BY 1, 2, 4)sql";
const std::string sql_message_role =
  "SELECT role FROM messages WHERE session_id = $1 AND seq = $2";
const std::string sql_upsert_feedback =
  "INSERT INTO feedback (session_id, seq, rating, comment) VALUES ($1, $2, $3, $4) "
  "ON CONFLICT (session_id, seq) DO UPDATE SET rating = EXCLUDED.rating, "
  "comment = EXCLUDED.comment, created_at = now()";
// The fence: a turn commits only while its actor's epoch is the session's
// current one and the actor's view of last_seq is right. The row lock this
// UPDATE takes orders it against a concurrent activation's epoch bump.
// A whole group commit in one statement (one round trip, one implicit
// transaction): the fenced UPDATE of every turn's session, then both
// messages of exactly the turns whose fence held (joined on session, epoch
// and seq, so a stale actor's turn in the same batch writes nothing).
// The same statement adds the written turns to the daily usage totals, summed
// per (user, UTC day of the reply, model) first (one row per key and batch;
// ON CONFLICT may touch a row once per statement), in this connection's
// shard: a turn is counted exactly when it is written, in the same
// transaction, with no statement or round trip of its own.
// A turn may carry messages stored before its user message (OpenAI's
// replayed input items): $17 says how many (its first seq is user_seq -
// that), and their rows come flattened in $18..$22, each with its turn's
// position in the batch (1-based), written only with their turn; so do a
// response's options ($24..$28), when it has any. $29: each user message's
// request hash (NULL: none); $30: the session's user of a turn with one.
// A turn with a request hash (an OpenAI response's Idempotency-Key, its
// client id) claims the key for its session in the same statement, among
// the user's keys (response_keys, schema 9), before its fence: it is
// written only when the key is new or its session's already. ON CONFLICT
// may touch a row once per statement, so each (user, key) is claimed once
// (the batch's first turn with it); the others compare the claimed row. A
// turn whose key is another session's writes nothing and fences nothing
// else. No join with sessions for it: the user comes with the turn, and a
// key claimed by a turn whose fence then fails stays its session's, where
// the retry of that turn finds it.
// Returns the position (1-based) of every turn written (true) and of every
// turn refused for its key (false); any other turn was fenced.
const char* const commit_statement = "parley_commit_turns";
const std::string sql_commit_turns = R"sql(
WITH t AS (
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::timestamptz[],
                       $6::text[], $7::bigint[], $8::text[], $9::timestamptz[], $10::text[],
                       $11::bigint[], $12::bigint[], $13::bigint[], $15::bigint[], $16::bigint[],
                       $17::bigint[], $29::text[], $30::text[])
    WITH ORDINALITY
    AS t(session_id, epoch, user_seq, user_content, user_at, cmid, reply_seq, reply_content,
         reply_at, model, prompt_tokens, completion_tokens, total_tokens, user_tokens,
         reply_tokens, before_n, request_hash, key_user, i)
), claim AS (
  INSERT INTO response_keys AS k (user_id, idem_key, session_id)
  SELECT DISTINCT ON (t.key_user, t.cmid) t.key_user, t.cmid, t.session_id
    FROM t
   WHERE t.request_hash IS NOT NULL AND t.cmid IS NOT NULL AND t.key_user IS NOT NULL
   ORDER BY t.key_user, t.cmid, t.i
  ON CONFLICT (user_id, idem_key) DO UPDATE SET session_id = k.session_id
  RETURNING k.user_id, k.idem_key, k.session_id
), fenced AS (
  UPDATE sessions s
     SET last_seq = t.reply_seq, message_count = s.message_count + 2 + t.before_n,
         updated_at = now()
    FROM t
   WHERE s.id = t.session_id AND s.epoch = t.epoch AND s.last_seq = t.user_seq - t.before_n - 1
     AND (t.request_hash IS NULL OR t.cmid IS NULL OR t.key_user IS NULL OR
          EXISTS (SELECT 1 FROM claim c WHERE c.user_id = t.key_user AND c.idem_key = t.cmid
                                          AND c.session_id = t.session_id))
  RETURNING t.i, s.user_id
), written AS (
  SELECT t.*, f.user_id FROM t JOIN fenced f USING (i)
), ins AS (
  INSERT INTO messages (session_id, seq, role, content, created_at, reply_to, model,
                        client_message_id, prompt_tokens, completion_tokens, total_tokens,
                        tokens, request_hash)
  SELECT w.session_id, b.seq, b.role, b.content, b.at, NULL::bigint, NULL::text, NULL::text,
         NULL::bigint, NULL::bigint, NULL::bigint, b.tokens, NULL::text
    FROM unnest($18::bigint[], $19::bigint[], $20::text[], $21::text[], $22::timestamptz[],
                $23::bigint[]) AS b(turn, seq, role, content, at, tokens)
    JOIN written w ON w.i = b.turn
  UNION ALL
  SELECT session_id, user_seq, 'user', user_content, user_at, NULL, NULL, cmid, NULL, NULL, NULL,
         user_tokens, request_hash
    FROM written
  UNION ALL
  SELECT session_id, reply_seq, 'assistant', reply_content, reply_at, user_seq, model, NULL,
         prompt_tokens, completion_tokens, total_tokens, reply_tokens, NULL
    FROM written
), opts AS (
  INSERT INTO response_options (session_id, seq, instructions, metadata, temperature,
                                max_output_tokens, input_before)
  SELECT w.session_id, w.reply_seq, o.instructions, o.metadata::jsonb,
         (o.options::jsonb ->> 'temperature')::float8, (o.options::jsonb ->> 'max_tokens')::bigint,
         o.before_n
    FROM unnest($24::bigint[], $25::text[], $26::text[], $27::text[], $28::integer[])
      AS o(turn, instructions, metadata, options, before_n)
    JOIN written w ON w.i = o.turn
), totals AS (
  INSERT INTO usage_daily AS u (user_id, day, model, shard, requests, prompt_tokens,
                                completion_tokens)
  SELECT user_id, (reply_at AT TIME ZONE 'UTC')::date, model, $14::smallint, count(*),
         coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0)
    FROM written
   GROUP BY 1, 2, 3
  ON CONFLICT (user_id, day, model, shard) DO UPDATE
    SET requests = u.requests + EXCLUDED.requests,
        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens
)
SELECT i, true FROM fenced
UNION ALL
SELECT t.i, false
  FROM t JOIN claim c ON c.user_id = t.key_user AND c.idem_key = t.cmid
                     AND c.session_id <> t.session_id
 WHERE t.request_hash IS NOT NULL
)sql";

// Rows of the daily totals (usage_tally's sums: each key once) added to
// this connection's shard in one statement.
const std::string sql_add_usage = R"sql(
INSERT INTO usage_daily AS u (user_id, day, model, shard, requests, prompt_tokens,
                              completion_tokens)
SELECT user_id, day, model, $7::smallint, requests, prompt_tokens, completion_tokens
  FROM unnest($1::text[], $2::date[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
    AS r(user_id, day, model, requests, prompt_tokens, completion_tokens)
ON CONFLICT (user_id, day, model, shard) DO UPDATE
  SET requests = u.requests + EXCLUDED.requests,
      prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
      completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens
)sql";

// A user's totals per day and model over the last $2 UTC days (today
// included), the shards summed; the primary key's range.
const std::string sql_usage_of = R"sql(
SELECT to_char(day, 'YYYY-MM-DD'), model, sum(requests)::bigint, sum(prompt_tokens)::bigint,
       sum(completion_tokens)::bigint
  FROM usage_daily
 WHERE user_id = $1 AND day > (now() AT TIME ZONE 'UTC')::date - $2::int
 GROUP BY day, model
 ORDER BY day, model
)sql";

// The users with the most tokens (prompt + completion) today (UTC), the
// shards and models summed; today's rows only (usage_daily_by_day).
const std::string sql_top_usage = R"sql(
SELECT user_id, to_char(day, 'YYYY-MM-DD'), sum(requests)::bigint, sum(prompt_tokens)::bigint,
       sum(completion_tokens)::bigint
  FROM usage_daily
 WHERE day = (now() AT TIME ZONE 'UTC')::date
 GROUP BY user_id, day
 ORDER BY sum(prompt_tokens) + sum(completion_tokens) DESC, user_id
 LIMIT $1
)sql";

// After a group commit's connection broke: is a turn's user message stored,
// exactly as this batch wrote it (its microsecond timestamp tells it apart
// from any other writer's), and is the backend that ran the batch still alive
// (its statement may still commit) or gone (it committed or rolled back).
const std::string sql_turn_stored =
  "SELECT 1 FROM messages WHERE session_id = $1 AND seq = $2 AND role = 'user' "
  "AND content = $3 AND created_at = $4::timestamptz";
const std::string sql_backend_alive = "SELECT 1 FROM pg_stat_activity WHERE pid = $1";

/// A token count as stored: what an upstream reports is not trusted to be
/// sane, and one absurd count (negative, or near bigint's end, where the
/// daily sum would overflow) must not break a group commit.
std::int64_t sane_tokens(std::int64_t n) {
  return std::clamp<std::int64_t>(n, 0, max_call_tokens);
}

std::optional<std::string> nonempty(const std::string& s) {
  if (s.empty())
    return std::nullopt;
  return s;
}

api_key_record read_key(const pqxx::row& r) {
  api_key_record k;
  k.id = r[0].as<std::int64_t>();
  k.user_id = r[1].as<std::string>();
  k.prefix = r[2].as<std::string>();
  k.token_budget_per_day = r[3].as<std::int64_t>();
  auto models = nlohmann::json::parse(r[4].as<std::string>(), nullptr, false);
  if (models.is_array())
    for (auto& m : models)
      if (m.is_string())
        k.models.push_back(m.get<std::string>());
  k.created_at = r[5].as<std::string>();
  k.revoked = r[6].as<bool>();
  return k;
}

session_record read_session(const pqxx::row& r) {
  session_record s;
  s.id = r[0].as<std::string>();
  s.user_id = r[1].as<std::string>();
  s.created_at = r[2].as<std::string>();
  s.system_prompt = r[3].is_null() ? std::string{} : r[3].as<std::string>();
  s.model = r[4].as<std::string>();
  s.metadata_json = r[5].as<std::string>();
  s.message_count = r[6].as<std::int64_t>();
  s.last_seq = r[7].as<std::int64_t>();
  s.epoch = r[8].as<std::int64_t>();
  s.context_tokens = r[9].as<std::int64_t>();
  return s;
}

/// The message_columns of `r`, starting at column `at`.
message_record read_message(const pqxx::row& r, pqxx::row::size_type at = 0) {
  message_record m;
  m.seq = r[at].as<std::int64_t>();
  m.role = r[at + 1].as<std::string>();
  m.content = r[at + 2].as<std::string>();
  m.created_at = r[at + 3].as<std::string>();
  m.reply_to = r[at + 4].is_null() ? 0 : r[at + 4].as<std::int64_t>();
  m.model = r[at + 5].is_null() ? std::string{} : r[at + 5].as<std::string>();
  m.client_message_id = r[at + 6].is_null() ? std::string{} : r[at + 6].as<std::string>();
  if (!r[at + 7].is_null()) {
    m.usage.prompt_tokens = r[at + 7].as<std::int64_t>();
    m.usage.completion_tokens = r[at + 8].is_null() ? 0 : r[at + 8].as<std::int64_t>();
    m.usage.total_tokens = r[at + 9].is_null() ? 0 : r[at + 9].as<std::int64_t>();
    m.usage.known = true;
  }
  m.tokens = r[at + 10].is_null() ? 0 : r[at + 10].as<std::int64_t>();
  m.request_hash = r[at + 11].is_null() ? std::string{} : r[at + 11].as<std::string>();
  return m;
}

/// The server ended the session under the statement (shutdown, restart,
/// pg_terminate_backend: 57P01..57P03) or the connection failed (08): the
/// connection is gone, whatever became of the statement.
bool is_session_gone(const pqxx::sql_error& e) {
  auto state = e.sqlstate();
  return state.compare(0, 3, "57P") == 0 || state.compare(0, 2, "08") == 0;
}

bool is_transient(const pqxx::sql_error& e) {
  auto state = e.sqlstate();
  // 08 connection, 40 serialization/deadlock, 53 resources, 57 operator
  // intervention (shutdown, statement timeout): a retry may succeed.
  return state.size() >= 2 && (state.compare(0, 2, "08") == 0 || state.compare(0, 2, "40") == 0 ||
                               state.compare(0, 2, "53") == 0 || state.compare(0, 2, "57") == 0);
}

} // namespace

/// Cuts the store's connection (shutdown(2) on its socket) when a call runs
/// past its deadline, so that a PostgreSQL that stopped answering (hung,
/// blackholed) fails the call instead of holding it for TCP's minutes. The
/// socket is shut down, never closed: its owner closes it after disarm().
class pg_store::watchdog {
public:
  watchdog() : thread_([this] { run(); }) {}
  ~watchdog() {
    {
      std::lock_guard<std::mutex> lk{m_};
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  void arm(int fd, std::chrono::steady_clock::time_point deadline) {
    {
      std::lock_guard<std::mutex> lk{m_};
      fd_ = fd;
      deadline_ = deadline;
      armed_ = fd >= 0;
      fired_ = false;
    }
    cv_.notify_all();
  }

  /// True when the deadline had passed and the connection was cut.
  bool disarm() {
    std::lock_guard<std::mutex> lk{m_};
    armed_ = false;
    return std::exchange(fired_, false);
  }

private:
  void run() {
    std::unique_lock<std::mutex> lk{m_};
    while (!stop_) {
      if (!armed_) {
        cv_.wait(lk);
      } else if (std::chrono::steady_clock::now() >= deadline_) {
        ::shutdown(fd_, SHUT_RDWR);
        fired_ = true;
        armed_ = false;
      } else {
        cv_.wait_until(lk, deadline_);
      }
    }
  }

  std::mutex m_;
  std::condition_variable cv_;
  int fd_ = -1;
  std::chrono::steady_clock::time_point deadline_;
  bool armed_ = false, fired_ = false, stop_ = false;
  std::thread thread_; ///< last: starts once the members above exist
};

namespace {

/// The watchdog's grace beyond the statement timeout: the server cancels a
/// slow statement itself (a clean error; the connection stays); only one
/// that does not answer at all gets its connection cut.
constexpr std::chrono::milliseconds cut_grace{1000};

/// Migrations at start-up may wait for another node's (advisory lock) and
/// build indexes: they keep the longer statement timeout they always had.
constexpr std::chrono::milliseconds migration_timeout{30000};

} // namespace

int usage_shard_of(const std::string& node_id, std::size_t index) {
  // FNV-1a: the same on every build and platform.
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char ch : node_id) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return static_cast<int>((h + index) % usage_shards);
}

pg_store::pg_store(std::string url, std::chrono::milliseconds timeout, int usage_shard)
  : url_(with_pg_timeouts(url, timeout)), timeout_(timeout),
    usage_shard_(static_cast<short>(std::clamp(usage_shard, 0, usage_shards - 1))),
    watchdog_(std::make_unique<watchdog>()) {}
pg_store::~pg_store() = default;

void pg_store::check_connection() {
  if (!conn_)
    return;
  int fd = conn_->sock();
  if (fd < 0 || !conn_->is_open())
    return drop_connection();
  // An idle connection has nothing to read unless the server is closing it
  // (a restart or pg_terminate_backend sends a FATAL message, then EOF), or,
  // rarely, reports a changed parameter: either way a new connection is the
  // safe answer.
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) != 0)
    drop_connection();
}

pqxx::connection& pg_store::conn() {
  if (!conn_) {
    try {
      auto c = std::make_unique<pqxx::connection>(url_);
      // A query that hangs must not hold the store (and its actor) long.
      pqxx::nontransaction n{*c};
      n.exec("SET statement_timeout = " + std::to_string(timeout_.count()));
      n.commit();
      // The store's named statements (the group commit, the client id
      // lookup) take arrays whose length the planner sees in a custom plan,
      // so PostgreSQL would plan them again on every call (a custom plan
      // always looks cheaper than the generic one for a short array): plan
      // them once per connection. Their SQL is written for the generic plan;
      // one-off statements are planned per call either way. PostgreSQL
      // before 12 has no such setting and keeps planning per call.
      try {
        pqxx::nontransaction g{*c};
        g.exec("SET plan_cache_mode = force_generic_plan");
      } catch (const pqxx::sql_error&) {
      }
      conn_ = std::move(c);
    } catch (const pqxx::sql_error& e) {
      // Refused by the server: a wrong database, user or password is not
      // something a retry fixes (a server starting up or shutting down is).
      auto st = e.sqlstate();
      bool transient = st.empty() || st.compare(0, 2, "57") == 0 || st.compare(0, 2, "08") == 0 ||
                       st.compare(0, 2, "53") == 0;
      throw storage_error(transient ? storage_error::kind::transient
                                    : storage_error::kind::permanent,
                          std::string{"cannot connect to PostgreSQL: "} + e.what(),
                          storage_error::cause::cannot_connect);
    } catch (const std::exception& e) {
      throw storage_error(storage_error::kind::transient,
                          std::string{"cannot connect to PostgreSQL: "} + e.what(),
                          storage_error::cause::cannot_connect);
    }
  }
  return *conn_;
}

void pg_store::connect() {
  check_connection();
  conn();
}

void pg_store::drop_connection() {
  conn_.reset();
  commit_prepared_ = false;
  client_ids_prepared_ = false;
}

template <class F>
auto pg_store::guarded(F&& f, std::chrono::milliseconds bound) -> decltype(f()) {
  check_connection();
  auto& c = conn(); // throws storage_error itself
  bool cut = false;
  try {
    struct armed {
      watchdog& w;
      bool& cut;
      ~armed() { cut = w.disarm(); }
    } guard{*watchdog_, cut};
    watchdog_->arm(c.sock(), std::chrono::steady_clock::now() + bound + cut_grace);
    return f();
  } catch (const pqxx::in_doubt_error& e) {
    drop_connection();
    throw storage_error(storage_error::kind::transient, e.what(),
                        storage_error::cause::in_doubt);
  } catch (const pqxx::broken_connection& e) {
    drop_connection();
    if (cut)
      throw storage_error(storage_error::kind::transient,
                          "PostgreSQL did not answer within " + std::to_string(bound.count()) +
                            " ms",
                          storage_error::cause::timed_out);
    throw storage_error(storage_error::kind::transient,
                        std::string{"PostgreSQL connection failed: "} + e.what(),
                        storage_error::cause::connection_lost);
  } catch (const pqxx::sql_error& e) {
    if (is_session_gone(e)) {
      // Ended before COMMIT: nothing was committed. Ended at COMMIT (the
      // FATAL may come after the commit itself): in doubt.
      drop_connection();
      throw storage_error(storage_error::kind::transient, e.what(),
                          e.query() == "COMMIT" ? storage_error::cause::in_doubt
                                                : storage_error::cause::connection_lost);
    }
    if (is_transient(e)) {
      drop_connection();
      throw storage_error(storage_error::kind::transient, e.what());
    }
    throw storage_error(storage_error::kind::permanent, e.what());
  } catch (const storage_error&) {
    throw;
  } catch (const std::exception& e) {
    // libpqxx reports some uses of a dead connection as plain failures.
    bool lost = !conn_ || !conn_->is_open();
    drop_connection();
    auto why = cut    ? storage_error::cause::timed_out
               : lost ? storage_error::cause::connection_lost
                      : storage_error::cause::other;
    throw storage_error(storage_error::kind::transient, e.what(), why);
  }
}

std::string pg_store::cluster_identity() {
  return guarded(
    [&] {
      pqxx::nontransaction n{conn()};
      auto r = n.exec(
        "SELECT current_database() || ':' || "
        "(extract(epoch FROM applied_at) * 1000000)::bigint::text "
        "FROM parley_schema_migrations WHERE version = 1");
      if (r.empty())
        throw storage_error(storage_error::kind::permanent, "the schema is not created yet");
      return r[0][0].as<std::string>();
    },
    timeout_);
}

int pg_store::migrate() {
  try {
    return guarded(
      [&] {
        pqxx::nontransaction{conn()}.exec("SET statement_timeout = " +
                                          std::to_string(migration_timeout.count()));
        int v = storage::migrate(conn());
        pqxx::nontransaction{conn()}.exec("SET statement_timeout = " +
                                          std::to_string(timeout_.count()));
        return v;
      },
      migration_timeout);
  } catch (const storage_error&) {
    drop_connection(); // never keep the migrations' statement timeout
    throw;
  }
}

void pg_store::probe() {
  guarded([&] {
    pqxx::nontransaction n{conn()};
    n.exec("SELECT 1");
    return 0;
  });
}

bool pg_store::ping() {
  try {
    probe();
    return true;
  } catch (const storage_error&) {
    return false;
  }
}

api_key_record pg_store::create_key(const api_key_record& k, const std::string& key_hash) {
  return guarded([&] {
    nlohmann::json models = k.models;
    pqxx::work w{conn()};
    auto r = w.exec_params(sql_insert_key, k.user_id, k.prefix, key_hash, k.token_budget_per_day,
                           k.models.empty() ? std::optional<std::string>{}
                                            : std::optional<std::string>{models.dump(
                                                -1, ' ', false,
                                                nlohmann::json::error_handler_t::replace)});
    w.commit();
    return read_key(r[0]);
  });
}

std::optional<api_key_record> pg_store::find_key(const std::string& key_hash) {
  return guarded([&]() -> std::optional<api_key_record> {
    pqxx::nontransaction n{conn()};
    auto r = n.exec_params(sql_find_key, key_hash);
    if (r.empty())
      return std::nullopt;
    return read_key(r[0]);
  });
}

std::vector<api_key_record> pg_store::list_keys(const std::string& user, int limit) {
  return guarded([&] {
    pqxx::nontransaction n{conn()};
    auto r = user.empty() ? n.exec_params(sql_list_keys, limit)
                          : n.exec_params(sql_list_keys_of, user, limit);
    std::vector<api_key_record> out;
    out.reserve(r.size());
    for (const auto& row : r)
      out.push_back(read_key(row));
    return out;
  });
}

int pg_store::revoke_key(const std::string& prefix_or_id) {
  return guarded([&] {
    pqxx::work w{conn()};
    auto r = w.exec_params(sql_revoke_key, prefix_or_id);
    w.commit();
    return static_cast<int>(r.size());
  });
}

void pg_store::create_session(const session_record& s) {
  guarded([&] {
    pqxx::work w{conn()};
    w.exec_params(sql_insert_session, s.id, s.user_id, s.created_at, nonempty(s.system_prompt), s.model,
                  s.metadata_json, s.context_tokens);
    w.commit();
    return 0;
  });
}

void pg_store::create_session(const session_record& s, const std::vector<message_record>& first) {
  if (first.empty())
    return create_session(s);
  guarded([&] {
    pg_array roles, contents;
    for (auto& m : first) {
      roles.add(m.role);
      contents.add(m.content);
    }
    pqxx::work w{conn()};
    w.exec_params(sql_insert_session_with_messages, s.id, s.user_id, s.created_at,
                  nonempty(s.system_prompt), s.model, s.metadata_json, roles.str(),
                  contents.str());
    w.commit();
    return 0;
  });
}

std::optional<session_record>
pg_store::create_session_once(const session_record& s, const std::vector<message_record>& first,
                              const std::string& request_hash) {
  return guarded([&]() -> std::optional<session_record> {
    pg_array roles, contents;
    for (auto& m : first) {
      roles.add(m.role);
      contents.add(m.content);
    }
    pqxx::work w{conn()};
    w.exec_params(sql_insert_session_with_messages_once, s.id, s.user_id, s.created_at,
                  nonempty(s.system_prompt), s.model, s.metadata_json, roles.str(),
                  contents.str(), request_hash);
    auto r = w.exec_params(sql_session_made_by, s.id, s.user_id, request_hash);
    w.commit();
    if (r.empty() || !r[0][10].as<bool>())
      return std::nullopt;
    return read_session(r[0]);
  });
}

commit_outcome pg_store::append_messages(const append_write& w) {
  return guarded([&] {
    pg_array roles, contents, times;
    for (auto& m : w.messages) {
      roles.add(m.role);
      contents.add(m.content);
      times.add(m.created_at);
    }
    try {
      pqxx::work t{conn()};
      auto r = t.exec_params(sql_append_messages, w.session_id, w.epoch, w.after_seq, roles.str(),
                             contents.str(), times.str());
      if (r.affected_rows() == 0)
        return commit_outcome::fenced;
      t.commit();
      return commit_outcome::committed;
    } catch (const pqxx::unique_violation&) {
      return commit_outcome::conflict;
    }
  });
}

std::optional<response_record> pg_store::response_turn(const response_ref& r) {
  return guarded([&]() -> std::optional<response_record> {
    pqxx::read_transaction t{conn()};
    if (r.seq < 2 || t.exec_params(sql_session_owned, r.session_id, r.user_id).empty() ||
        !t.exec_params(sql_response_gone, r.session_id, r.seq).empty())
      return std::nullopt;
    response_record out;
    auto options = t.exec_params(sql_response_options, r.session_id, r.seq);
    if (!options.empty()) {
      auto row = options[0];
      auto& o = out.options;
      o.keep = true;
      o.instructions = row[0].is_null() ? std::string{} : row[0].as<std::string>();
      o.metadata_json = row[1].is_null() ? std::string{"{}"} : row[1].as<std::string>();
      o.call_options = row[2].as<std::string>();
      o.input_before = std::max<std::int64_t>(row[3].as<std::int64_t>(), 0);
    }
    // The turn, its replayed input items and the message before them.
    auto first = std::max<std::int64_t>(r.seq - 3 - out.options.input_before, 0);
    auto rows = t.exec_params(sql_list_messages, r.session_id, first, r.seq - first);
    auto& page = out.turn;
    for (auto row : rows)
      page.data.push_back(read_message(row));
    t.commit();
    if (page.data.empty() || page.data.back().seq != r.seq ||
        page.data.back().role != "assistant" || page.data.back().reply_to != r.seq - 1)
      return std::nullopt;
    return out;
  });
}

bool pg_store::delete_response(const response_ref& r) {
  return guarded([&] {
    pqxx::work w{conn()};
    auto res = w.exec_params(sql_delete_response, r.session_id, r.user_id, r.seq);
    w.commit();
    return res.affected_rows() > 0;
  });
}

fork_outcome pg_store::fork_session(const fork_request& r) {
  return guarded([&] {
    pqxx::work w{conn()};
    w.exec_params(sql_fork_session, r.new_id, r.source_id, r.user_id, r.upto_seq, r.created_at,
                  nonempty(r.idem_key));
    auto exists = w.exec_params(sql_session_owned, r.new_id, r.user_id);
    auto out = fork_outcome::made;
    if (exists.empty())
      out = !r.idem_key.empty() &&
                !w.exec_params(sql_key_elsewhere, r.user_id, r.idem_key, r.new_id).empty()
              ? fork_outcome::key_taken
              : fork_outcome::missing;
    w.commit();
    return out;
  });
}

bool pg_store::ensure_session(const session_record& s, const std::string& idem_key) {
  return guarded([&] {
    pqxx::work w{conn()};
    w.exec_params(sql_insert_session_if_absent, s.id, s.user_id, s.created_at,
                  nonempty(s.system_prompt), s.model, s.metadata_json, s.context_tokens,
                  nonempty(idem_key));
    auto exists = w.exec_params(sql_session_owned, s.id, s.user_id);
    w.commit();
    return !exists.empty();
  });
}

std::optional<session_record> pg_store::update_metadata(const std::string& id,
                                                        const std::string& user,
                                                        const std::string& metadata_json) {
  return guarded([&]() -> std::optional<session_record> {
    pqxx::work w{conn()};
    auto r = w.exec_params(sql_update_metadata, id, user, metadata_json);
    w.commit();
    if (r.empty())
      return std::nullopt;
    return read_session(r[0]);
  });
}

std::optional<session_record> pg_store::get_session(const std::string& id,
                                                    const std::string& user) {
  return guarded([&]() -> std::optional<session_record> {
    pqxx::nontransaction n{conn()};
    auto r = n.exec_params(sql_get_session, id, user);
    if (r.empty())
      return std::nullopt;
    return read_session(r[0]);
  });
}

session_page pg_store::list_sessions(const std::string& user, int limit,
                                     const std::string& cursor) {
  return guarded([&] {
    pqxx::nontransaction n{conn()};
    pqxx::result r;
    if (cursor.empty())
      r = n.exec_params(sql_list_sessions_first, user, limit + 1);
    else {
      std::string ts, id;
      net::decode_cursor(cursor, ts, id);
      r = n.exec_params(sql_list_sessions_after, user, limit + 1, ts, id);
    }
    session_page page;
    for (auto row : r) {
      if (static_cast<int>(page.data.size()) == limit) {
        auto& last = page.data.back();
        page.next_cursor = net::encode_cursor(last.created_at, last.id);
        break;
      }
      page.data.push_back(read_session(row));
    }
    return page;
  });
}

std::optional<session_record> pg_store::find_session(const std::string& id) {
  return guarded([&]() -> std::optional<session_record> {
    pqxx::nontransaction n{conn()};
    auto r = n.exec_params(sql_find_session, id);
    if (r.empty())
      return std::nullopt;
    return read_session(r[0]);
  });
}

std::int64_t pg_store::adopt(const std::string& id, std::int64_t epoch, std::int64_t last_seq) {
  return guarded([&]() -> std::int64_t {
    pqxx::work w{conn()};
    auto r = w.exec_params(sql_adopt, id, epoch, last_seq);
    w.commit();
    return r.empty() ? 0 : r[0][0].as<std::int64_t>();
  });
}

bool pg_store::delete_session(const std::string& id, const std::string& user) {
  return guarded([&] {
    pqxx::work w{conn()};
    auto r = w.exec_params(sql_delete_session, id, user);
    w.commit();
    return r.affected_rows() > 0;
  });
}

std::optional<activation_record> pg_store::activate(const std::string& id, int window) {
  return guarded([&]() -> std::optional<activation_record> {
    pqxx::work w{conn()};
    auto r = w.exec_params(sql_activate, id);
    if (r.empty())
      return std::nullopt;
    activation_record a;
    a.session = read_session(r[0]);
    auto m = w.exec_params(sql_window, id, window);
    a.window.reserve(m.size());
    for (auto it = m.rbegin(); it != m.rend(); ++it)
      a.window.push_back(read_message(*it));
    w.commit();
    return a;
  });
}

std::vector<std::optional<activation_record>>
pg_store::activate_many(const std::vector<std::string>& ids, int window) {
  return guarded([&]() -> std::vector<std::optional<activation_record>> {
    std::vector<std::optional<activation_record>> out(ids.size());
    if (ids.empty())
      return out;
    std::unordered_map<std::string, std::size_t> index;
    index.reserve(ids.size());
    pg_array list;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      index.emplace(ids[i], i);
      list.add(ids[i]);
    }
    pqxx::work w{conn()};
    auto sessions = w.exec_params(sql_activate_many, list.str());
    for (auto row : sessions) {
      auto s = read_session(row);
      auto at = index.find(s.id);
      if (at != index.end())
        out[at->second] = activation_record{std::move(s), {}};
    }
    if (!sessions.empty()) {
      auto rows = w.exec_params(sql_windows, list.str(), window);
      // Newest first per session: reversed below into ascending order.
      for (auto row : rows) {
        auto at = index.find(row[0].as<std::string>());
        if (at == index.end() || !out[at->second])
          continue;
        pqxx::row message = row.slice(1, row.size());
        out[at->second]->window.push_back(read_message(message));
      }
      for (auto& a : out)
        if (a)
          std::reverse(a->window.begin(), a->window.end());
    }
    w.commit();
    return out;
  });
}

std::optional<message_page> pg_store::list_messages(const std::string& id, const std::string& user,
                                                    std::int64_t after, int limit,
                                                    page_order order) {
  return guarded([&]() -> std::optional<message_page> {
    pqxx::read_transaction t{conn()};
    if (t.exec_params(sql_session_owned, id, user).empty())
      return std::nullopt;
    auto r = t.exec_params(order == page_order::ascending ? sql_list_messages
                                                          : sql_list_messages_desc,
                           id, after, limit + 1);
    message_page page;
    for (auto row : r) {
      if (static_cast<int>(page.data.size()) == limit) {
        page.next_after = page.data.back().seq;
        break;
      }
      page.data.push_back(read_message(row));
    }
    t.commit();
    return page;
  });
}

std::optional<std::pair<message_record, std::optional<message_record>>>
pg_store::find_by_client_id(const std::string& session_id, const std::string& client_message_id) {
  return std::move(find_by_client_ids({{session_id, client_message_id}}).front());
}

std::vector<std::optional<std::pair<message_record, std::optional<message_record>>>>
pg_store::find_by_client_ids(const std::vector<std::pair<std::string, std::string>>& keys) {
  std::vector<client_lookup> lookups;
  lookups.reserve(keys.size());
  for (auto& k : keys)
    lookups.push_back({k.first, k.second, 0});
  auto found = look_up_client_ids(lookups);
  std::vector<std::optional<std::pair<message_record, std::optional<message_record>>>> out;
  out.reserve(found.size());
  for (auto& f : found)
    out.push_back(std::move(f.turn));
  return out;
}

std::vector<client_lookup_result>
pg_store::look_up_client_ids(const std::vector<client_lookup>& keys) {
  return guarded([&] {
    std::vector<client_lookup_result> out(keys.size());
    if (keys.empty())
      return out;
    auto& c = conn();
    if (!client_ids_prepared_) {
      c.prepare(client_ids_statement, sql_find_client_ids);
      client_ids_prepared_ = true;
    }
    pg_array sessions, cmids, live, users;
    for (auto& k : keys) {
      sessions.add(k.session_id);
      cmids.add(k.client_message_id);
      live.add(k.live_seq);
      if (k.user_id.empty() || k.client_message_id.empty())
        users.add_null();
      else
        users.add(k.user_id);
    }
    pqxx::nontransaction n{c};
    auto r = n.exec_prepared(client_ids_statement, sessions.str(), cmids.str(), live.str(),
                             users.str());
    for (const auto& row : r) {
      auto at = row[0].as<std::size_t>();
      if (at < 1 || at > out.size())
        continue;
      auto& slot = out[at - 1];
      auto kind = row[1].as<int>();
      if (kind == 1) {
        slot.gone = true;
        continue;
      }
      if (kind == 2) {
        slot.key_owner = row[2].as<std::string>();
        continue;
      }
      auto m = read_message(row, 3);
      if (!slot.turn)
        slot.turn.emplace(std::move(m), std::nullopt);
      else if (!slot.turn->second)
        slot.turn->second = std::move(m);
    }
    return out;
  });
}

feedback_outcome pg_store::put_feedback(const std::string& id, const std::string& user,
                                        std::int64_t seq, int rating,
                                        const std::optional<std::string>& comment) {
  return guarded([&] {
    pqxx::work w{conn()};
    if (w.exec_params(sql_session_owned, id, user).empty())
      return feedback_outcome::no_session;
    auto role = w.exec_params(sql_message_role, id, seq);
    if (role.empty())
      return feedback_outcome::no_message;
    if (role[0][0].as<std::string>() != "assistant")
      return feedback_outcome::not_assistant;
    w.exec_params(sql_upsert_feedback, id, seq, rating, comment);
    w.commit();
    return feedback_outcome::stored;
  });
}

void pg_store::add_usage(const std::vector<usage_total>& rows) {
  if (rows.empty())
    return;
  pg_array user, day, model, requests, prompt, completion;
  for (auto& r : rows) {
    user.add(r.user_id);
    day.add(r.day);
    model.add(r.model);
    requests.add(r.requests);
    prompt.add(sane_tokens(r.prompt_tokens));
    completion.add(sane_tokens(r.completion_tokens));
  }
  // An explicit transaction, so that a connection lost before COMMIT says
  // nothing was added (connection_lost) and one lost at COMMIT says maybe
  // (in_doubt): the caller keeps the rows for another try only when it may.
  guarded([&] {
    pqxx::work w{conn()};
    w.exec_params(sql_add_usage, user.str(), day.str(), model.str(), requests.str(), prompt.str(),
                  completion.str(), usage_shard_);
    w.commit();
    return 0;
  });
}

std::vector<usage_total> pg_store::top_usage_today(int limit) {
  return guarded([&] {
    pqxx::nontransaction n{conn()};
    std::vector<usage_total> out;
    for (auto row : n.exec_params(sql_top_usage, limit)) {
      usage_total u;
      u.user_id = row[0].as<std::string>();
      u.day = row[1].as<std::string>();
      u.requests = row[2].as<std::int64_t>();
      u.prompt_tokens = row[3].as<std::int64_t>();
      u.completion_tokens = row[4].as<std::int64_t>();
      out.push_back(std::move(u));
    }
    return out;
  });
}

std::vector<usage_total> pg_store::usage_of(const std::string& user, int days) {
  return guarded([&] {
    pqxx::nontransaction n{conn()};
    std::vector<usage_total> out;
    for (auto row : n.exec_params(sql_usage_of, user, days)) {
      usage_total u;
      u.user_id = user;
      u.day = row[0].as<std::string>();
      u.model = row[1].as<std::string>();
      u.requests = row[2].as<std::int64_t>();
      u.prompt_tokens = row[3].as<std::int64_t>();
      u.completion_tokens = row[4].as<std::int64_t>();
      out.push_back(std::move(u));
    }
    return out;
  });
}

std::vector<commit_outcome> pg_store::commit_turns(const std::vector<turn_write>& turns) {
  return commit_batch(turns, true);
}

std::vector<commit_outcome> pg_store::resolve_in_doubt(const std::vector<turn_write>& turns,
                                                       int backend) {
  std::vector<commit_outcome> out(turns.size(), commit_outcome::unknown);
  std::vector<turn_write> not_stored;
  std::vector<std::size_t> where;
  try {
    bool gone = guarded([&] {
      pqxx::nontransaction n{conn()};
      // A backend sends its FATAL message before it exits: give one that
      // is on its way out a moment (bounded) to be gone.
      bool alive = backend > 0;
      for (int i = 0; alive && i < 20; ++i) {
        alive = !n.exec_params(sql_backend_alive, backend).empty();
        if (alive)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      for (std::size_t i = 0; i < turns.size(); ++i) {
        auto& t = turns[i];
        if (!n.exec_params(sql_turn_stored, t.session_id, t.user.seq, t.user.content,
                           t.user.created_at)
               .empty())
          out[i] = commit_outcome::committed;
        else if (!alive) {
          not_stored.push_back(t);
          where.push_back(i);
        }
      }
      return !alive;
    });
    if (!gone || not_stored.empty())
      return out;
  } catch (const storage_error&) {
    return out; // still in doubt
  }
  // The backend that ran the batch is gone and these turns are not stored:
  // its transaction rolled back, so they are written again (once; the fence
  // refuses them if anything else happened to their sessions meanwhile).
  auto again = commit_batch(not_stored, false);
  for (std::size_t k = 0; k < where.size(); ++k)
    out[where[k]] = again[k];
  return out;
}

std::vector<commit_outcome> pg_store::commit_batch(const std::vector<turn_write>& turns,
                                                   bool resolve) {
  std::vector<commit_outcome> out(turns.size(), commit_outcome::failed);
  pqxx::connection* c = nullptr;
  try {
    check_connection();
    c = &conn();
    if (!commit_prepared_) {
      c->prepare(commit_statement, sql_commit_turns);
      commit_prepared_ = true;
    }
  } catch (const std::exception& e) {
    last_commit_failure_ = e.what();
    drop_connection(); // nothing was sent: failed
    return out;
  }
  pg_array session, epoch, user_seq, user_content, user_at, cmid, reply_seq, reply_content,
    reply_at, model, prompt, completion, total, user_tokens, reply_tokens, before_n, request_hash,
    key_user;
  pg_array before_turn, before_seq, before_role, before_content, before_at, before_tokens;
  pg_array opt_turn, opt_instructions, opt_metadata, opt_options, opt_before;
  std::int64_t position = 0;
  for (auto& t : turns) {
    ++position;
    if (auto& o = t.options; o.keep) {
      opt_turn.add(position);
      if (o.instructions.empty())
        opt_instructions.add_null();
      else
        opt_instructions.add(o.instructions);
      opt_metadata.add(o.metadata_json);
      opt_options.add(o.call_options.empty() ? std::string{"{}"} : o.call_options);
      opt_before.add(o.input_before);
    }
    before_n.add(static_cast<std::int64_t>(t.before.size()));
    for (auto& m : t.before) {
      before_turn.add(position);
      before_seq.add(m.seq);
      before_role.add(m.role);
      before_content.add(m.content);
      before_at.add(m.created_at);
      if (m.tokens > 0)
        before_tokens.add(sane_tokens(m.tokens));
      else
        before_tokens.add_null();
    }
    session.add(t.session_id);
    epoch.add(t.epoch);
    user_seq.add(t.user.seq);
    user_content.add(t.user.content);
    user_at.add(t.user.created_at);
    if (t.user.client_message_id.empty())
      cmid.add_null();
    else
      cmid.add(t.user.client_message_id);
    if (t.user.request_hash.empty())
      request_hash.add_null();
    else
      request_hash.add(t.user.request_hash);
    if (t.user_id.empty())
      key_user.add_null();
    else
      key_user.add(t.user_id);
    reply_seq.add(t.reply.seq);
    reply_content.add(t.reply.content);
    reply_at.add(t.reply.created_at);
    model.add(t.reply.model);
    auto count = [](pg_array& a, std::int64_t n) {
      if (n > 0)
        a.add(sane_tokens(n));
      else
        a.add_null();
    };
    count(user_tokens, t.user.tokens);
    count(reply_tokens, t.reply.tokens);
    if (t.reply.usage.known) {
      prompt.add(sane_tokens(t.reply.usage.prompt_tokens));
      completion.add(sane_tokens(t.reply.usage.completion_tokens));
      total.add(sane_tokens(t.reply.usage.total_tokens));
    } else {
      prompt.add_null();
      completion.add_null();
      total.add_null();
    }
  }
  bool cut = false, in_doubt = false;
  try {
    struct armed {
      watchdog& w;
      bool& cut;
      ~armed() { cut = w.disarm(); }
    } guard{*watchdog_, cut};
    watchdog_->arm(c->sock(), std::chrono::steady_clock::now() + timeout_ + cut_grace);
    pqxx::nontransaction n{*c};
    auto rows = n.exec_prepared(commit_statement, session.str(), epoch.str(), user_seq.str(),
                                user_content.str(), user_at.str(), cmid.str(), reply_seq.str(),
                                reply_content.str(), reply_at.str(), model.str(),
                                prompt.str(), completion.str(), total.str(), usage_shard_,
                                user_tokens.str(), reply_tokens.str(), before_n.str(),
                                before_turn.str(), before_seq.str(), before_role.str(),
                                before_content.str(), before_at.str(), before_tokens.str(),
                                opt_turn.str(), opt_instructions.str(), opt_metadata.str(),
                                opt_options.str(), opt_before.str(), request_hash.str(),
                                key_user.str());
    out.assign(turns.size(), commit_outcome::fenced);
    for (const auto& r : rows) {
      auto at = r[0].as<std::int64_t>();
      if (at >= 1 && at <= static_cast<std::int64_t>(turns.size()))
        out[static_cast<std::size_t>(at - 1)] =
          r[1].as<bool>() ? commit_outcome::committed : commit_outcome::key_taken;
    }
    return out;
  } catch (const pqxx::sql_error& e) {
    last_commit_failure_ = e.what();
    if (is_session_gone(e)) {
      // The server ended the session: the statement's implicit transaction
      // may have committed just before (its FATAL can follow the rows).
      in_doubt = true;
    } else if (is_transient(e)) {
      drop_connection();
      return out; // rolled back: failed
    } else if (turns.size() == 1) {
      out[0] = commit_outcome::conflict;
      return out;
    }
  } catch (const std::exception& e) {
    last_commit_failure_ = e.what();
    in_doubt = true;
  }
  if (in_doubt) {
    // The connection broke (or was cut): the statement may have committed
    // before it went. Unless a new connection can tell, the outcome stays
    // unknown; a cut one means a server in trouble: no second try then.
    int backend = c->backendpid();
    drop_connection();
    if (resolve && !cut)
      return resolve_in_doubt(turns, backend);
    out.assign(turns.size(), commit_outcome::unknown);
    return out;
  }
  // One turn broke the statement (a unique key): nothing of the batch was
  // written; commit each on its own so the others go through.
  for (std::size_t i = 0; i < turns.size(); ++i)
    out[i] = commit_batch(std::vector<turn_write>{turns[i]}, resolve).front();
  return out;
}

} // namespace parley::storage

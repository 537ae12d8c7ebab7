#include "storage/schema.hpp"

#include <pqxx/pqxx>

namespace parley::storage {

namespace {

// Any constant works; it only has to be the same on every node.
constexpr const char* lock_sql = "SELECT pg_advisory_xact_lock(7021700905)";

constexpr const char* bootstrap_sql = R"sql(
CREATE TABLE IF NOT EXISTS parley_schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
))sql";

constexpr const char* v1_sql = R"sql(
CREATE TABLE api_keys (
  id          bigserial PRIMARY KEY,
  user_id     text NOT NULL,
  prefix      text NOT NULL,
  key_hash    text NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);

CREATE TABLE sessions (
  id            text PRIMARY KEY,
  user_id       text NOT NULL,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  system_prompt text,
  model         text NOT NULL,
  metadata      jsonb NOT NULL DEFAULT '{}',
  epoch         bigint NOT NULL DEFAULT 0,
  last_seq      bigint NOT NULL DEFAULT 0,
  message_count bigint NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at DESC, id DESC);

CREATE TABLE messages (
  session_id        text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  seq               bigint NOT NULL,
  role              text NOT NULL CHECK (role IN ('user', 'assistant')),
  content           text NOT NULL,
  created_at        timestamptz NOT NULL,
  reply_to          bigint,
  model             text,
  client_message_id text,
  PRIMARY KEY (session_id, seq)
);
CREATE UNIQUE INDEX messages_client_id ON messages (session_id, client_message_id)
  WHERE client_message_id IS NOT NULL;

CREATE TABLE feedback (
  session_id text NOT NULL,
  seq        bigint NOT NULL,
  rating     smallint NOT NULL CHECK (rating IN (-1, 1)),
  comment    text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (session_id, seq),
  FOREIGN KEY (session_id, seq) REFERENCES messages (session_id, seq) ON DELETE CASCADE
);
)sql";

// The turn path's write volume. A turn inserts two messages; with a foreign
// key on messages.session_id each insert ran a trigger that looked the session
// row up again and locked it FOR KEY SHARE (a WAL record of its own), although
// the same statement has just updated and locked that row (the epoch fence:
// a message is only ever written for a session row the writer holds). The
// cascade it gave stays, as a trigger on DELETE of sessions: whoever deletes
// a session (a node of any version, an operator's SQL) deletes its messages
// in the same transaction. The DELETE of the session row waits for a turn
// commit holding the row, and a commit after it finds no row (fenced), so no
// message outlives its session. fillfactor leaves room on each sessions page
// so that the per-turn UPDATE (no indexed column changes) stays a HOT update.
constexpr const char* v2_sql = R"sql(
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_session_id_fkey;
CREATE OR REPLACE FUNCTION parley_delete_session_messages() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM messages WHERE session_id = OLD.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER sessions_delete_messages AFTER DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION parley_delete_session_messages();
ALTER TABLE sessions SET (fillfactor = 70);
)sql";

// Usage of model calls (API.md section 4). Each assistant message keeps its
// call's usage (NULL: none reported, or written before this version; added
// without a default, so no existing row is rewritten). The daily totals are
// per user, UTC day and model, in rows per writer (`shard`): every storage
// connection adds to its own row, so two connections committing turns of
// one user never wait for each other's row lock (which a commit holds until
// its fsync); readers (usage, budgets) sum the shards of a key (one per
// connection that wrote it that day) through the primary key. Only counters change, so updates stay HOT.
constexpr const char* v3_sql = R"sql(
ALTER TABLE messages ADD COLUMN prompt_tokens bigint,
                     ADD COLUMN completion_tokens bigint,
                     ADD COLUMN total_tokens bigint;
CREATE TABLE usage_daily (
  user_id           text NOT NULL,
  day               date NOT NULL,
  model             text NOT NULL,
  shard             smallint NOT NULL,
  requests          bigint NOT NULL DEFAULT 0,
  prompt_tokens     bigint NOT NULL DEFAULT 0,
  completion_tokens bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, day, model, shard)
) WITH (fillfactor = 70);
)sql";

// Key policy (API.md section 3): a key's own daily token budget (NULL: the
// node's default) and the models it may name (NULL: any), as a JSON array.
// Listing a user's keys reads api_keys_by_user.
constexpr const char* v4_sql = R"sql(
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS token_budget_per_day bigint
  CHECK (token_budget_per_day >= 0);
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS models jsonb;
CREATE INDEX IF NOT EXISTS api_keys_by_user ON api_keys (user_id, id DESC);
)sql";

// Token windows (API.md sections 1 and 4): each message's token count
// (NULL: not known; Parley's estimate stands in) and a session's own
// context budget (NULL: the node's PARLEY_CONTEXT_TOKENS). Added without a
// default, so no existing row is rewritten. The dashboard's top users of a
// day read usage_daily_by_day.
constexpr const char* v5_sql = R"sql(
ALTER TABLE messages ADD COLUMN IF NOT EXISTS tokens bigint;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS context_tokens bigint
  CHECK (context_tokens >= 0);
CREATE INDEX IF NOT EXISTS usage_daily_by_day ON usage_daily (day);
)sql";

// OpenAI's Responses API (API.md section 5a): a stored response is a turn
// (its reply's seq), so only a deleted one needs a row. Independent of
// version 5 (token counts): its own table and its own trigger, which
// removes the rows of a deleted session like messages' trigger (v2).
constexpr const char* v6_sql = R"sql(
CREATE TABLE IF NOT EXISTS deleted_responses (
  session_id text NOT NULL,
  seq        bigint NOT NULL,
  deleted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (session_id, seq)
);
CREATE OR REPLACE FUNCTION parley_delete_session_responses() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM deleted_responses WHERE session_id = OLD.id;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS sessions_delete_responses ON sessions;
CREATE TRIGGER sessions_delete_responses AFTER DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION parley_delete_session_responses();
)sql";

// OpenAI's Responses API, continued (API.md section 5a). A conversation
// made with an Idempotency-Key keeps the hash of its request, so a repeat
// with another body is told apart (NULL: made without a key). A stored
// response's own request options, as given (instructions, metadata,
// temperature, max_output_tokens), and how many replayed input items came
// before its user message, written in the turn's commit; a response
// without any has no row. Rows go with their session by their own trigger,
// like deleted_responses (v6). Both additive: no existing row is rewritten.
constexpr const char* v7_sql = R"sql(
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS request_hash text;
CREATE TABLE IF NOT EXISTS response_options (
  session_id        text NOT NULL,
  seq               bigint NOT NULL,
  instructions      text,
  metadata          jsonb,
  temperature       double precision,
  max_output_tokens bigint,
  input_before      integer NOT NULL DEFAULT 0,
  PRIMARY KEY (session_id, seq)
);
CREATE OR REPLACE FUNCTION parley_delete_session_response_options() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM response_options WHERE session_id = OLD.id;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS sessions_delete_response_options ON sessions;
CREATE TRIGGER sessions_delete_response_options AFTER DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION parley_delete_session_response_options();
)sql";

// OpenAI's Responses API, idempotency (API.md section 5a): a turn made with
// an Idempotency-Key keeps the hash of its whole request on its user
// message, written in the turn's commit, so that a repeat of the key with
// another body (instructions, options, replayed items, ...) is told apart
// from a retry (NULL: the content alone defines the turn: session turns,
// and turns written before this version). Additive: no row is rewritten.
constexpr const char* v8_sql = R"sql(
ALTER TABLE messages ADD COLUMN IF NOT EXISTS request_hash text;
)sql";

// OpenAI's Responses API, idempotency across sessions (API.md section 5a):
// an Idempotency-Key is the user's, not one session's, so a keyed turn
// claims its key for its session in the turn's commit (one row per user and
// key) and a repeat that would make or reach another session is refused.
// Only keyed Responses turns (a request hash) claim: a session turn's
// client_message_id stays per session (API.md section 4). Rows go with
// their session by their own trigger, like response_options (v7); the
// keyed turns stored before this version claim their keys here (the first
// session that stored one keeps it).
constexpr const char* v9_sql = R"sql(
CREATE TABLE IF NOT EXISTS response_keys (
  user_id    text NOT NULL,
  idem_key   text NOT NULL,
  session_id text NOT NULL,
  PRIMARY KEY (user_id, idem_key)
);
CREATE INDEX IF NOT EXISTS response_keys_by_session ON response_keys (session_id);
INSERT INTO response_keys (user_id, idem_key, session_id)
SELECT DISTINCT ON (s.user_id, m.client_message_id) s.user_id, m.client_message_id, m.session_id
  FROM messages m JOIN sessions s ON s.id = m.session_id
 WHERE m.request_hash IS NOT NULL AND m.client_message_id IS NOT NULL
 ORDER BY s.user_id, m.client_message_id, s.created_at, m.session_id
ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION parley_delete_session_response_keys() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM response_keys WHERE session_id = OLD.id;
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS sessions_delete_response_keys ON sessions;
CREATE TRIGGER sessions_delete_response_keys AFTER DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION parley_delete_session_response_keys();
)sql";

} // namespace

const std::vector<migration>& migrations() {
  static const std::vector<migration> all{
    {1, "sessions, messages, api keys, feedback", v1_sql},
    {2, "messages: cascade by trigger instead of a foreign key; sessions fillfactor", v2_sql},
    {3, "usage: on assistant messages, daily totals per user and model", v3_sql},
    {4, "api keys: daily token budget and model allowlist", v4_sql},
    {5, "token counts of messages, a session's context budget", v5_sql},
    {6, "responses: deleted responses", v6_sql},
    {7, "responses: request options; conversations: idempotency hash", v7_sql},
    {8, "responses: idempotency hash of a keyed turn's request", v8_sql},
    {9, "responses: idempotency keys per user", v9_sql},
  };
  return all;
}

int migrate(pqxx::connection& c) {
  pqxx::work w{c};
  w.exec(lock_sql);
  w.exec(bootstrap_sql);
  auto r = w.exec("SELECT coalesce(max(version), 0) FROM parley_schema_migrations");
  int current = r[0][0].as<int>();
  for (auto& m : migrations()) {
    if (m.version <= current)
      continue;
    w.exec(m.sql);
    w.exec_params("INSERT INTO parley_schema_migrations (version, name) VALUES ($1, $2)",
                  m.version, m.name);
    current = m.version;
  }
  w.commit();
  return current;
}

} // namespace parley::storage

// PARLEY_PG_TIMEOUT_MS as libpq parameters (storage/pg_conninfo.hpp): added in
// the string's own syntax, never overriding what the operator set.

#include <gtest/gtest.h>

#include <libpq-fe.h>

#include <map>

#include "storage/pg_conninfo.hpp"

using parley::storage::pg_conninfo_error;
using parley::storage::with_pg_timeouts;
using namespace std::chrono_literals;

namespace {

/// What libpq itself reads from `conninfo` (key=value or URI): every
/// parameter that has a value.
std::map<std::string, std::string> parsed(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (!opts) {
    std::string e = err ? err : "?";
    PQfreemem(err);
    throw std::runtime_error("libpq rejects '" + conninfo + "': " + e);
  }
  std::map<std::string, std::string> out;
  for (auto* o = opts; o->keyword; ++o)
    if (o->val)
      out[o->keyword] = o->val;
  PQconninfoFree(opts);
  return out;
}

} // namespace

TEST(pg_conninfo, adds_every_bound_to_a_keyword_string) {
  auto p = parsed(with_pg_timeouts("host=127.0.0.1 port=5432 user=postgres dbname=parley", 5000ms));
  EXPECT_EQ(p["host"], "127.0.0.1");
  EXPECT_EQ(p["dbname"], "parley");
  EXPECT_EQ(p["connect_timeout"], "5");
  EXPECT_EQ(p["keepalives"], "1");
  EXPECT_EQ(p["keepalives_idle"], "2");
  EXPECT_EQ(p["keepalives_interval"], "1");
  EXPECT_EQ(p["keepalives_count"], "3");
  EXPECT_EQ(p["tcp_user_timeout"], "5000");
  // A dead idle peer is noticed within the bound.
  EXPECT_LE(std::stoi(p["keepalives_idle"]) +
              std::stoi(p["keepalives_interval"]) * std::stoi(p["keepalives_count"]),
            5);
}

TEST(pg_conninfo, adds_every_bound_to_a_uri) {
  auto plain = with_pg_timeouts("postgresql://postgres@127.0.0.1:5432/parley", 5000ms);
  auto p = parsed(plain);
  EXPECT_EQ(p["dbname"], "parley");
  EXPECT_EQ(p["port"], "5432");
  EXPECT_EQ(p["connect_timeout"], "5");
  EXPECT_EQ(p["tcp_user_timeout"], "5000");
  EXPECT_EQ(p["keepalives"], "1");

  auto q = parsed(with_pg_timeouts("postgres://u:pw@db.example:6432/x?sslmode=disable", 3000ms));
  EXPECT_EQ(q["sslmode"], "disable");
  EXPECT_EQ(q["password"], "pw");
  EXPECT_EQ(q["connect_timeout"], "3");
  EXPECT_EQ(q["tcp_user_timeout"], "3000");

  auto trailing = parsed(with_pg_timeouts("postgresql:///parley?host=/run/pg&", 5000ms));
  EXPECT_EQ(trailing["host"], "/run/pg");
  EXPECT_EQ(trailing["keepalives_count"], "3");
}

TEST(pg_conninfo, never_overrides_what_the_url_sets) {
  auto k = parsed(with_pg_timeouts(
    "host=h connect_timeout = 11 keepalives_idle='7' application_name='a b\\' c'", 5000ms));
  EXPECT_EQ(k["connect_timeout"], "11");
  EXPECT_EQ(k["keepalives_idle"], "7");
  EXPECT_EQ(k["application_name"], "a b' c");
  EXPECT_EQ(k["keepalives_interval"], "1"); // the ones not set are still added
  EXPECT_EQ(k["tcp_user_timeout"], "5000");

  auto u = parsed(with_pg_timeouts(
    "postgresql://h/db?tcp_user_timeout=900&keepalives=0&connect_timeout=30", 5000ms));
  EXPECT_EQ(u["tcp_user_timeout"], "900");
  EXPECT_EQ(u["keepalives"], "0");
  EXPECT_EQ(u["connect_timeout"], "30");
  EXPECT_EQ(u["keepalives_idle"], "2");
}

TEST(pg_conninfo, rounds_to_libpq_seconds) {
  auto p = parsed(with_pg_timeouts("host=h", 1000ms));
  EXPECT_EQ(p["connect_timeout"], "2"); // libpq's least
  EXPECT_EQ(p["tcp_user_timeout"], "1000");
  EXPECT_EQ(p["keepalives_idle"], "1");
  auto q = parsed(with_pg_timeouts("host=h", 4500ms));
  EXPECT_EQ(q["connect_timeout"], "5"); // rounded up
  auto r = parsed(with_pg_timeouts("host=h", 60000ms));
  EXPECT_LE(std::stoi(r["keepalives_idle"]) +
              std::stoi(r["keepalives_interval"]) * std::stoi(r["keepalives_count"]),
            60);
  EXPECT_GE(std::stoi(r["keepalives_idle"]), 10);
  // An empty string (all from the environment) is still a valid conninfo.
  EXPECT_EQ(parsed(with_pg_timeouts("", 5000ms))["connect_timeout"], "5");
}

// Issue 15 item 3: what the operator writes reaches libpq unchanged, TLS
// verification included (docs/operations.md: sslmode=verify-full).
TEST(pg_conninfo, tls_and_other_options_pass_through) {
  auto u = parsed(with_pg_timeouts("postgresql://parley:p%40ss@db.internal:5432/parley"
                                   "?sslmode=verify-full&sslrootcert=/etc/parley/pg-ca.pem"
                                   "&application_name=parley&target_session_attrs=read-write",
                                   5000ms));
  EXPECT_EQ(u["sslmode"], "verify-full");
  EXPECT_EQ(u["sslrootcert"], "/etc/parley/pg-ca.pem");
  EXPECT_EQ(u["application_name"], "parley");
  EXPECT_EQ(u["target_session_attrs"], "read-write");
  EXPECT_EQ(u["password"], "p@ss");
  EXPECT_EQ(u["host"], "db.internal");
  EXPECT_EQ(u["connect_timeout"], "5");
  EXPECT_EQ(u["keepalives"], "1");

  auto k = parsed(with_pg_timeouts("host=db.internal dbname=parley sslmode=verify-full "
                                   "sslrootcert='/etc/parley/pg ca.pem' sslcert=/c.pem sslkey=/k.pem",
                                   8000ms));
  EXPECT_EQ(k["sslmode"], "verify-full");
  EXPECT_EQ(k["sslrootcert"], "/etc/parley/pg ca.pem");
  EXPECT_EQ(k["sslcert"], "/c.pem");
  EXPECT_EQ(k["sslkey"], "/k.pem");
  EXPECT_EQ(k["connect_timeout"], "8");
  EXPECT_EQ(k["tcp_user_timeout"], "8000");
}

TEST(pg_conninfo, parse_errors_are_found_without_showing_a_password) {
  EXPECT_EQ(pg_conninfo_error("host=h dbname=x sslmode=verify-full"), "");
  EXPECT_EQ(pg_conninfo_error("postgresql://u:pw@h/x?sslmode=require"), "");
  EXPECT_EQ(pg_conninfo_error(""), "");

  auto typo = pg_conninfo_error("host=h sslrootcrt=/ca.pem");
  EXPECT_NE(typo, "");
  EXPECT_NE(typo.find("sslrootcrt"), std::string::npos) << "libpq's reason is given: " << typo;

  for (std::string bad : {"host=h password=hunter2secret bogus=1", "host=h hunter2secret",
                          "postgresql://u:hunter2secret@h/x?bogus=1",
                          "postgresql://u:hunter2secret%zz@h/x"}) {
    auto why = pg_conninfo_error(bad);
    EXPECT_NE(why, "") << bad;
    EXPECT_EQ(why.find("hunter2"), std::string::npos) << why;
  }
}

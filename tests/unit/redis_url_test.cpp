// PARLEY_REDIS_URL parsing: what is accepted, and that every rejection names
// the setting and the bad value.

#include <gtest/gtest.h>

#include "storage/redis_client.hpp"

using parley::storage::parse_redis_url;

TEST(redis_url, parses_host_port_and_db) {
  auto ep = parse_redis_url("redis://127.0.0.1:6380/2");
  EXPECT_EQ(ep.host, "127.0.0.1");
  EXPECT_EQ(ep.port, 6380);
  EXPECT_EQ(ep.db, 2);
  auto named = parse_redis_url("redis://cache-1.internal:26379");
  EXPECT_EQ(named.host, "cache-1.internal");
  EXPECT_EQ(named.port, 26379);
  EXPECT_EQ(named.db, 0);
}

TEST(redis_url, port_and_db_have_defaults) {
  auto ep = parse_redis_url("redis://cache");
  EXPECT_EQ(ep.host, "cache");
  EXPECT_EQ(ep.port, 6379);
  EXPECT_EQ(ep.db, 0);
  EXPECT_EQ(parse_redis_url("redis://cache:7000/").db, 0);
  EXPECT_EQ(parse_redis_url("redis://cache/3").db, 3);
}

TEST(redis_url, ipv6_hosts_are_bracketed) {
  auto ep = parse_redis_url("redis://[::1]:7000/1");
  EXPECT_EQ(ep.host, "::1");
  EXPECT_EQ(ep.port, 7000);
  EXPECT_EQ(ep.db, 1);
  EXPECT_EQ(parse_redis_url("redis://[fe80::1]").port, 6379);
}

TEST(redis_url, bad_urls_are_rejected_naming_the_setting) {
  for (std::string url :
       {"", "redis:/h:1", "http://h:6379", "rediss://h:6379", "redis://", "redis://:6379",
        "redis://h:", "redis://h:0", "redis://h:65536", "redis://h:123456", "redis://h:6x",
        "redis://h:-1", "redis://h:1/x", "redis://h:1/-1", "redis://h:1/2/3",
        "redis://h:1?db=2", "redis://h:1#x", "redis://::1:6379",
        "redis://[::1", "redis://[::1]x", "redis://[]:1", "redis://h o:1", "redis://h\n:1"}) {
    try {
      parse_redis_url(url);
      ADD_FAILURE() << "accepted '" << url << "'";
    } catch (const std::invalid_argument& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("PARLEY_REDIS_URL"), std::string::npos) << what;
      EXPECT_NE(what.find("'" + url + "'"), std::string::npos) << what;
    }
  }
}

TEST(redis_url, the_message_says_what_is_wrong) {
  auto message = [](const std::string& url) {
    try {
      parse_redis_url(url);
    } catch (const std::invalid_argument& e) {
      return std::string{e.what()};
    }
    return std::string{};
  };
  EXPECT_NE(message("http://h:1").find("scheme"), std::string::npos);
  EXPECT_NE(message("redis://h:99999").find("port"), std::string::npos);
  EXPECT_NE(message("redis://h:1/x").find("database"), std::string::npos);
  EXPECT_NE(message("redis://u@h:1").find("credentials"), std::string::npos);
  EXPECT_NE(message("redis://u:@h:1").find("password"), std::string::npos);
  EXPECT_NE(message("redis://:1").find("host"), std::string::npos);
}

// API.md section 1: redis://:password@host:port/db (requirepass) and
// redis://user:password@host:port/db (ACL).
TEST(redis_url, takes_a_password_and_an_acl_user) {
  auto plain = parse_redis_url("redis://127.0.0.1:6380/2");
  EXPECT_TRUE(plain.user.empty());
  EXPECT_TRUE(plain.password.empty());

  auto pass = parse_redis_url("redis://:s3cret@cache:6380/2");
  EXPECT_EQ(pass.user, "");
  EXPECT_EQ(pass.password, "s3cret");
  EXPECT_EQ(pass.host, "cache");
  EXPECT_EQ(pass.port, 6380);
  EXPECT_EQ(pass.db, 2);

  auto acl = parse_redis_url("redis://parley:pw@[::1]:7000/1");
  EXPECT_EQ(acl.user, "parley");
  EXPECT_EQ(acl.password, "pw");
  EXPECT_EQ(acl.host, "::1");
  EXPECT_EQ(acl.port, 7000);
  EXPECT_EQ(acl.db, 1);

  // Percent escapes, and characters a generated password may hold as is:
  // the host starts after the last '@'.
  auto enc = parse_redis_url("redis://us%3Aer:p%40ss%2Fw%25rd@cache");
  EXPECT_EQ(enc.user, "us:er");
  EXPECT_EQ(enc.password, "p@ss/w%rd");
  auto raw = parse_redis_url("redis://:a@b/c?d#e:f@cache:7001/3");
  EXPECT_EQ(raw.password, "a@b/c?d#e:f");
  EXPECT_EQ(raw.host, "cache");
  EXPECT_EQ(raw.port, 7001);
  EXPECT_EQ(raw.db, 3);
}

TEST(redis_url, no_error_shows_the_password) {
  for (std::string url :
       {"redis://:hunter2-secret@h:0", "redis://u:hunter2-secret@h:1/x", "redis://hunter2-secret@h",
        "redis://:hunter2-secret%zz@h", "redis://u:hunter2-secret@h:1?db=2",
        "redis://:hunter2-secret@", "redis://:hunter2-secret@h o", "rediss://:hunter2-secret@h"}) {
    try {
      parse_redis_url(url);
      ADD_FAILURE() << "accepted a bad URL";
    } catch (const std::invalid_argument& e) {
      std::string what = e.what();
      EXPECT_EQ(what.find("hunter2"), std::string::npos) << what;
      EXPECT_NE(what.find("PARLEY_REDIS_URL"), std::string::npos) << what;
      EXPECT_NE(what.find("***"), std::string::npos) << what;
    }
  }
}

TEST(redis_url, redact_url_hides_only_the_password) {
  using parley::storage::redact_url;
  EXPECT_EQ(redact_url("redis://:pw@h:1/2"), "redis://:***@h:1/2");
  EXPECT_EQ(redact_url("redis://user:pw@h:1"), "redis://user:***@h:1");
  EXPECT_EQ(redact_url("redis://pw@h"), "redis://***@h");
  EXPECT_EQ(redact_url("redis://:p@w@h"), "redis://:***@h");
  EXPECT_EQ(redact_url("redis://h:1/2"), "redis://h:1/2");
  EXPECT_EQ(redact_url("postgresql://u:pw@db/x"), "postgresql://u:***@db/x");
}

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
        "redis://user:pw@h:1", "redis://h:1?db=2", "redis://h:1#x", "redis://::1:6379",
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
  EXPECT_NE(message("redis://u:p@h:1").find("credentials"), std::string::npos);
  EXPECT_NE(message("redis://:1").find("host"), std::string::npos);
}

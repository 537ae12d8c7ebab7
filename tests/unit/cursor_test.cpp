#include "net/http/cursor.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace parley::net {
namespace {

TEST(cursor, encodes_and_rejects_junk) {
  auto c = encode_cursor("2026-11-23T10:00:00.123456Z", "abc");
  std::string ts, id;
  ASSERT_TRUE(decode_cursor(c, ts, id));
  EXPECT_EQ(ts, "2026-11-23T10:00:00.123456Z");
  EXPECT_EQ(id, "abc");
  std::vector<std::string> bad{"", "zz", "abc", "00", "0g",
                               encode_cursor("2026-11-23 10:00", "x"),
                               encode_cursor("2026-11-23T10:00:00.123456Z", ""),
                               std::string(514, '0')};
  for (auto& b : bad)
    EXPECT_FALSE(decode_cursor(b, ts, id)) << b;
}

} // namespace
} // namespace parley::net

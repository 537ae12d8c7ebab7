// Log lines without a logger: their JSON text, escaping, times, numbers and
// the level names PARLEY_LOG_LEVEL takes.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/telemetry/log.hpp"

using namespace parley;
using namespace std::chrono_literals;

namespace {

// 2026-11-23T10:00:00Z
const std::chrono::system_clock::time_point t0{std::chrono::seconds{1795428000}};

log::line at(std::chrono::system_clock::duration since_t0, std::string_view msg = "m") {
  return log::line{log::level::info, msg, t0 + since_t0, "n1"};
}

/// The decoded value of `s` after a round trip through a line's JSON.
std::string round_trip(std::string_view s) {
  auto j = nlohmann::json::parse(at(0s).str("v", s).text());
  return j.at("v").get<std::string>();
}

} // namespace

TEST(log_line, starts_with_time_level_node_msg_then_fields_in_order) {
  auto text = log::line{log::level::warn, "turn done", t0 + 123456us, "node-1"}
                .str("request_id", "r-1")
                .str("session", "s-1")
                .ms("latency_ms", 1234567ns)
                .num("status", 200)
                .text();
  EXPECT_EQ(text, R"({"time":"2026-11-23T10:00:00.123Z","level":"warn","node":"node-1",)"
                  R"("msg":"turn done","request_id":"r-1","session":"s-1","latency_ms":1.234,)"
                  R"("status":200})");
}

TEST(log_line, times_are_utc_with_milliseconds_also_across_seconds) {
  auto time_of = [](std::chrono::system_clock::duration d) {
    return nlohmann::json::parse(at(d).text()).at("time").get<std::string>();
  };
  EXPECT_EQ(time_of(0ms), "2026-11-23T10:00:00.000Z");
  EXPECT_EQ(time_of(999999us), "2026-11-23T10:00:00.999Z");
  EXPECT_EQ(time_of(1s), "2026-11-23T10:00:01.000Z");
  EXPECT_EQ(time_of(14h + 5min + 7s + 30ms), "2026-11-24T00:05:07.030Z");
  EXPECT_EQ(time_of(0ms), "2026-11-23T10:00:00.000Z");
}

TEST(log_line, numbers_and_milliseconds) {
  auto j = nlohmann::json::parse(at(0s)
                                   .num("zero", 0)
                                   .num("negative", -42)
                                   .num("big", INT64_MAX)
                                   .ms("none", 0ns)
                                   .ms("sub_us", 999ns)
                                   .ms("long", 2500s)
                                   .ms("clock_went_back", -5ms)
                                   .text());
  EXPECT_EQ(j["zero"], 0);
  EXPECT_EQ(j["negative"], -42);
  EXPECT_EQ(j["big"], INT64_MAX);
  EXPECT_EQ(j["none"], 0.0);
  EXPECT_EQ(j["sub_us"], 0.0);
  EXPECT_EQ(j["long"], 2500000.0);
  EXPECT_EQ(j["clock_went_back"], 0.0);
}

TEST(log_line, quotes_backslashes_and_control_characters_are_escaped) {
  std::string odd = "say \"hi\" \\ back\nslash\ttab\r\b\f";
  odd += '\0';
  odd += "\x01\x1f\x7f end";
  auto text = at(0s).str("v", odd).text();
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_NE(text.find(R"(say \"hi\" \\ back\nslash\ttab\r\b\f\u0000\u0001\u001f\u007f end)"),
            std::string::npos)
    << text;
  EXPECT_EQ(round_trip(odd), odd);
}

TEST(log_line, valid_utf8_stays_and_invalid_bytes_become_replacement_characters) {
  const std::string valid = "caf\xc3\xa9 \xe6\xbc\xa2 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";
  EXPECT_EQ(round_trip(valid), valid);
  const std::string fffd = "\xef\xbf\xbd";
  struct tc {
    std::string in, out;
  } cases[] = {
    {"a\xff!", "a" + fffd + "!"},                    // never a UTF-8 byte
    {"\x80", fffd},                                  // lone continuation byte
    {"end \xc3", "end " + fffd},                     // sequence cut at the end
    {"\xc3(", fffd + "("},                           // continuation missing
    {"\xc0\xaf", fffd + fffd},                       // overlong '/'
    {"\xe0\x80\xaf", fffd + fffd + fffd},            // overlong, three bytes
    {"\xed\xa0\x80", fffd + fffd + fffd},            // UTF-16 surrogate
    {"\xf4\x90\x80\x80", fffd + fffd + fffd + fffd}, // past U+10FFFF
    {"\xf0\x9f\x98", fffd + fffd + fffd},            // four-byte sequence cut
  };
  for (auto& c : cases)
    EXPECT_EQ(round_trip(c.in), c.out) << at(0s).str("v", c.in).text();
}

TEST(log_line, keys_and_msg_are_escaped_too) {
  auto j = nlohmann::json::parse(
    log::line{log::level::error, "bad \"msg\"\n", t0, "node \"q\""}.str("k\"ey", "v").text());
  EXPECT_EQ(j["msg"], "bad \"msg\"\n");
  EXPECT_EQ(j["node"], "node \"q\"");
  EXPECT_EQ(j["k\"ey"], "v");
  EXPECT_EQ(j["level"], "error");
}

TEST(log_line, a_line_below_the_level_is_not_built) {
  // Without init the level is info.
  EXPECT_FALSE(log::enabled(log::level::debug));
  EXPECT_TRUE(log::enabled(log::level::info));
  EXPECT_TRUE(log::enabled(log::level::error));
  EXPECT_EQ(log::line(log::level::debug, "hidden").str("a", "b").num("c", 1).text(), "");
  EXPECT_NE(log::line(log::level::info, "shown").text(), "");
}

TEST(log_level, parses_the_four_names_only) {
  EXPECT_EQ(log::parse_level("debug"), log::level::debug);
  EXPECT_EQ(log::parse_level("info"), log::level::info);
  EXPECT_EQ(log::parse_level("warn"), log::level::warn);
  EXPECT_EQ(log::parse_level("error"), log::level::error);
  for (auto bad : {"", "INFO", "warning", "err", "trace", "info "})
    EXPECT_EQ(log::parse_level(bad), std::nullopt) << bad;
}

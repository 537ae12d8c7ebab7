// The streamed chunk reader of the upstream client's hot path: what it takes
// from a chunk, and what it refuses.

#include <gtest/gtest.h>

#include "net/http/openai_chunk.hpp"

namespace parley::net {
namespace {

struct read_out {
  bool ok;
  std::string piece;
  std::string model;
};

read_out read(std::string_view data) {
  read_out r{false, "unchanged", "unchanged"};
  r.ok = chunk_piece(data, r.piece, r.model);
  return r;
}

TEST(openai_chunk, a_content_chunk_gives_its_piece_and_model) {
  auto r = read(R"({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-x",)"
                R"("choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},)"
                R"("finish_reason":null}]})");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.piece, "Hel");
  EXPECT_EQ(r.model, "gpt-x");
  // Keys in any order, escapes decoded.
  r = read(R"({"choices":[{"delta":{"content":"a\"b\n\u00e9"},"index":0}],"model":"m2"})");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.piece, "a\"b\n\xc3\xa9");
  EXPECT_EQ(r.model, "m2");
}

TEST(openai_chunk, chunks_without_content_give_no_piece_but_keep_the_model) {
  auto r = read(R"({"model":"gpt-x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.piece, "unchanged");
  EXPECT_EQ(r.model, "gpt-x");
  for (auto data : {R"({"choices":[{"delta":{"content":null}}]})",
                    R"({"choices":[{"delta":{"content":""}}]})",
                    R"({"choices":[]})", R"({"usage":{"prompt_tokens":3}})",
                    R"({"choices":[{"delta":{"content":7}}]})"}) {
    r = read(data);
    EXPECT_FALSE(r.ok) << data;
    EXPECT_EQ(r.piece, "unchanged") << data;
    EXPECT_EQ(r.model, "unchanged") << data;
  }
}

TEST(openai_chunk, content_anywhere_else_is_not_the_piece) {
  for (auto data : {R"({"content":"top"})", R"({"choices":[{"message":{"content":"whole"}}]})",
                    R"({"choices":[{"delta":{}},{"delta":{"content":"second choice"}}]})",
                    R"({"choices":{"delta":{"content":"not an array"}}})",
                    R"({"choices":[{"delta":{"x":{"content":"deeper"}}}]})",
                    R"({"x":{"model":"nested"},"choices":[[{"delta":{"content":"in array"}}]]})"}) {
    auto r = read(data);
    EXPECT_FALSE(r.ok) << data;
    EXPECT_EQ(r.piece, "unchanged") << data;
    EXPECT_EQ(r.model, "unchanged") << data;
  }
}

TEST(openai_chunk, done_and_text_that_is_not_json_are_skipped) {
  for (auto data : {"[DONE]", "", "not json", R"({"choices":[{"delta":{"content":"cut)",
                    R"({"model":"m","choices":[{"delta":{"content":"x"}}]} trailing)", "[1,2]"}) {
    auto r = read(data);
    EXPECT_FALSE(r.ok) << data;
    EXPECT_EQ(r.piece, "unchanged") << data;
    EXPECT_EQ(r.model, "unchanged") << data;
  }
}

} // namespace
} // namespace parley::net

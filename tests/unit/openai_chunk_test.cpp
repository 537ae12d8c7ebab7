// The streamed chunk reader of the upstream client's hot path: what it takes
// from a chunk, and what it refuses.

#include <gtest/gtest.h>

#include "net/http/openai_chunk.hpp"

namespace parley::net {
namespace {

struct read_out {
  bool ok;
  chunk_kind kind;
  chunk_info info;
};

read_out read(std::string_view data) {
  read_out r{false, chunk_kind::malformed, {}};
  r.info.model = "unchanged";
  r.kind = read_chunk(data, r.info);
  r.ok = r.kind == chunk_kind::chunk;
  return r;
}

TEST(openai_chunk, a_content_chunk_gives_its_piece_and_model) {
  auto r = read(R"({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-x",)"
                R"("choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},)"
                R"("finish_reason":null}]})");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.info.piece, "Hel");
  EXPECT_EQ(r.info.model, "gpt-x");
  EXPECT_FALSE(r.info.usage);
  EXPECT_FALSE(r.info.no_choices);
  // Keys in any order, escapes decoded.
  r = read(R"({"choices":[{"delta":{"content":"a\"b\n\u00e9"},"index":0}],"model":"m2"})");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.info.piece, "a\"b\n\xc3\xa9");
  EXPECT_EQ(r.info.model, "m2");
}

TEST(openai_chunk, chunks_without_content_give_no_piece_but_keep_the_model) {
  auto r = read(R"({"model":"gpt-x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})");
  ASSERT_TRUE(r.ok);
  EXPECT_FALSE(r.info.piece);
  EXPECT_EQ(r.info.model, "gpt-x");
  EXPECT_FALSE(r.info.no_choices);
  for (auto data : {R"({"choices":[{"delta":{"content":null}}]})",
                    R"({"choices":[{"delta":{"content":""}}]})",
                    R"({"choices":[{"delta":{"content":7}}]})",
                    R"({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1",)"
                    R"("function":{"name":"f","arguments":"{\"a\":"}}]}}]})"}) {
    r = read(data);
    ASSERT_TRUE(r.ok) << data;
    EXPECT_FALSE(r.info.piece) << data;
    EXPECT_FALSE(r.info.model) << data;
    EXPECT_FALSE(r.info.no_choices) << data;
  }
}

TEST(openai_chunk, the_usage_chunk_gives_its_counts_and_no_choices) {
  auto r = read(R"({"id":"c1","object":"chat.completion.chunk","model":"gpt-x","choices":[],)"
                R"("usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,)"
                R"("prompt_tokens_details":{"cached_tokens":3}}})");
  ASSERT_TRUE(r.ok);
  EXPECT_FALSE(r.info.piece);
  EXPECT_EQ(r.info.model, "gpt-x");
  EXPECT_TRUE(r.info.no_choices);
  ASSERT_TRUE(r.info.usage);
  EXPECT_EQ(r.info.usage->prompt_tokens, 12);
  EXPECT_EQ(r.info.usage->completion_tokens, 5);
  EXPECT_EQ(r.info.usage->total_tokens, 17);
  // Without choices at all, with usage null, or counts that are not counts.
  r = read(R"({"usage":{"prompt_tokens":3}})");
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.info.no_choices);
  ASSERT_TRUE(r.info.usage);
  EXPECT_EQ(r.info.usage->prompt_tokens, 3);
  EXPECT_EQ(r.info.usage->total_tokens, 0);
  r = read(R"({"choices":[{"delta":{"content":"x"}}],"usage":null})");
  ASSERT_TRUE(r.ok);
  EXPECT_FALSE(r.info.usage);
  EXPECT_EQ(r.info.piece, "x");
  r = read(R"({"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":1.5,)"
           R"("total_tokens":"7","x":{"prompt_tokens":9}}})");
  ASSERT_TRUE(r.ok);
  ASSERT_TRUE(r.info.usage);
  EXPECT_EQ(r.info.usage->prompt_tokens, 0);
  EXPECT_EQ(r.info.usage->completion_tokens, 0);
  EXPECT_EQ(r.info.usage->total_tokens, 0);
  // A usage object elsewhere is not the chunk's.
  r = read(R"({"choices":[{"delta":{},"usage":{"prompt_tokens":4}}]})");
  ASSERT_TRUE(r.ok);
  EXPECT_FALSE(r.info.usage);
}

TEST(openai_chunk, content_anywhere_else_is_not_the_piece) {
  for (auto data : {R"({"content":"top"})", R"({"choices":[{"message":{"content":"whole"}}]})",
                    R"({"choices":[{"delta":{}},{"delta":{"content":"second choice"}}]})",
                    R"({"choices":{"delta":{"content":"not an array"}}})",
                    R"({"choices":[{"delta":{"x":{"content":"deeper"}}}]})",
                    R"({"x":{"model":"nested"},"choices":[[{"delta":{"content":"in array"}}]]})"}) {
    auto r = read(data);
    ASSERT_TRUE(r.ok) << data;
    EXPECT_FALSE(r.info.piece) << data;
    EXPECT_FALSE(r.info.model) << data;
  }
}

TEST(openai_chunk, done_ends_and_text_that_is_not_a_json_object_in_utf8_is_malformed) {
  auto done = read("[DONE]");
  EXPECT_EQ(done.kind, chunk_kind::done);
  EXPECT_EQ(done.info.model, "unchanged");
  for (auto data : {"", "not json", R"({"choices":[{"delta":{"content":"cut)",
                    R"({"model":"m","choices":[{"delta":{"content":"x"}}]} trailing)", "[1,2]",
                    "\"text\"", "7", "{\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}",
                    R"({"choices":[{"delta":{"content":"\ud83d"}}]})"}) {
    auto r = read(data);
    EXPECT_EQ(r.kind, chunk_kind::malformed) << data;
    EXPECT_EQ(r.info.model, "unchanged") << data;
    EXPECT_FALSE(r.info.piece) << data;
  }
}

TEST(openai_chunk, a_finish_reason_of_any_choice_ends_the_answer_and_an_error_is_flagged) {
  auto r = read(R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})");
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.info.finished);
  EXPECT_FALSE(r.info.error);
  r = read(R"({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},)"
           R"({"index":1,"delta":{},"finish_reason":"length"}]})");
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.info.finished);
  for (auto data : {R"({"choices":[{"delta":{"content":"a"},"finish_reason":null}]})",
                    R"({"finish_reason":"stop","choices":[]})",
                    R"({"choices":[{"delta":{"finish_reason":"stop"}}]})"}) {
    r = read(data);
    ASSERT_TRUE(r.ok) << data;
    EXPECT_FALSE(r.info.finished) << data;
  }
  for (auto data : {R"({"error":{"message":"overloaded","type":"server_error"}})",
                    R"({"error":"boom"})", R"({"id":"x","error":null})"}) {
    r = read(data);
    ASSERT_TRUE(r.ok) << data;
    EXPECT_TRUE(r.info.error) << data;
  }
  r = read(R"({"choices":[{"delta":{"content":"error"}}],"x":{"error":1}})");
  ASSERT_TRUE(r.ok);
  EXPECT_FALSE(r.info.error);
}

} // namespace
} // namespace parley::net

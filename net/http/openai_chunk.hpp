#pragma once
// One chunk of an OpenAI-style streamed answer (`chat.completion.chunk`), read
// without building a JSON document: it runs for every chunk of every stream.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace parley::net {

/// Token counts as an upstream reports them (`usage`).
struct upstream_usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t total_tokens = 0;
};

/// What Parley takes from one streamed chunk.
struct chunk_info {
  /// `choices[0].delta.content` when it is a non-empty string.
  std::optional<std::string> piece;
  /// The top-level `model` when it is a string.
  std::optional<std::string> model;
  /// The top-level `usage` object when it has any of the three counts (a
  /// count that is not a non-negative integer is left 0).
  std::optional<upstream_usage> usage;
  /// True when `choices` is absent or an empty array: the final usage
  /// chunk of `stream_options.include_usage` (API.md section 5).
  bool no_choices = true;
};

/// Reads one chunk's `data`. Returns false for `[DONE]`, text that is not
/// one JSON object, and leaves `out` as it was then; true otherwise (a
/// chunk of any shape: its fields are read where they are as above).
/// Pure, thread-safe.
bool read_chunk(std::string_view data, chunk_info& out);

} // namespace parley::net

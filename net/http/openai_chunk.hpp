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
  /// A choice's `finish_reason` is a string: the answer is whole.
  bool finished = false;
  /// The chunk has a top-level `error`: the upstream failed mid-stream.
  bool error = false;
};

/// What one event of a stream is.
enum class chunk_kind {
  chunk,     ///< a JSON object: read into chunk_info
  done,      ///< `[DONE]`: the stream's end
  malformed, ///< anything else: not JSON (or not UTF-8), not an object
};

/// Reads one chunk's `data` into `out` (a chunk of any shape: its fields are
/// read where they are as above); `out` is left as it was for `[DONE]` and
/// for a malformed event. Pure, thread-safe.
chunk_kind read_chunk(std::string_view data, chunk_info& out);

} // namespace parley::net

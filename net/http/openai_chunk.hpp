#pragma once
// One chunk of an OpenAI-style streamed answer (`chat.completion.chunk`), read
// without building a JSON document: it runs for every piece of every stream.

#include <string>
#include <string_view>

namespace parley::net {

/// The content piece of one streamed chunk's `data` (`choices[0].delta.content`)
/// and its top-level `model`: returns true and sets `piece` when the chunk
/// carries non-empty content; sets `model` whenever the chunk names one (even
/// without content). `[DONE]`, text that is not JSON, and chunks of any other
/// shape return false and leave `piece` alone. Pure, thread-safe.
bool chunk_piece(std::string_view data, std::string& piece, std::string& model);

} // namespace parley::net

#pragma once
// Placement: which node owns a session. Rendezvous (highest random weight)
// hashing over the live members: every node computes the same owner with no
// lookup, and a membership change moves only the sessions whose owner left
// or whose new top-scoring node joined.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace parley {

/// A stable 64-bit weight of (node, session); the same on every platform.
std::uint64_t placement_weight(std::string_view node_id, std::string_view session_id);

/// The owner of `session_id` among `members` (empty string when there are
/// none). Ties, practically impossible, go to the smaller node id.
std::string place(std::string_view session_id, const std::vector<std::string>& members);

} // namespace parley

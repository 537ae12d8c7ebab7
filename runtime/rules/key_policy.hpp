#pragma once
// What an API key may do beyond authenticating (API.md section 3): the
// models it may name. Pure; used by the edge (gateway calls, new sessions)
// and by the session actor (turns, where the session's model is known).

#include <string>
#include <vector>

namespace parley {

/// True when `allowed` is empty (any model) or names `model` exactly.
bool model_allowed(const std::vector<std::string>& allowed, const std::string& model);

/// The `403 forbidden` message for a refused model: names it and the
/// models the key may use.
std::string model_refusal(const std::vector<std::string>& allowed, const std::string& model);

} // namespace parley

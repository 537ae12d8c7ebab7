#include "runtime/rules/key_policy.hpp"

#include <algorithm>

namespace parley {

bool model_allowed(const std::vector<std::string>& allowed, const std::string& model) {
  return allowed.empty() || std::find(allowed.begin(), allowed.end(), model) != allowed.end();
}

std::string model_refusal(const std::vector<std::string>& allowed, const std::string& model) {
  std::string names;
  for (auto& m : allowed)
    names += (names.empty() ? "'" : ", '") + m + "'";
  return "this API key may not use model '" + model + "'; it may use " + names;
}

} // namespace parley

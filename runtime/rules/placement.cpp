#include "runtime/rules/placement.hpp"

namespace parley {

namespace {

std::uint64_t fnv1a(std::string_view s, std::uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// splitmix64's finalizer: spreads FNV's weak low bits over the whole word.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

} // namespace

std::uint64_t placement_weight(std::string_view node_id, std::string_view session_id) {
  auto h = fnv1a(node_id, 0xcbf29ce484222325ULL);
  h = fnv1a("\x1f", h);
  return mix(fnv1a(session_id, h));
}

std::string place(std::string_view session_id, const std::vector<std::string>& members) {
  const std::string* best = nullptr;
  std::uint64_t best_w = 0;
  for (auto& m : members) {
    auto w = placement_weight(m, session_id);
    if (!best || w > best_w || (w == best_w && m < *best)) {
      best = &m;
      best_w = w;
    }
  }
  return best ? *best : std::string{};
}

} // namespace parley

#include "runtime/log.hpp"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "storage/clock.hpp"

namespace parley::log {

namespace {

std::string node_id_;
level min_level_ = level::info;

const char* name(level lv) {
  switch (lv) {
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
  }
  return "info";
}

} // namespace

void init(std::string node_id, std::string_view min_level) {
  node_id_ = std::move(node_id);
  for (auto lv : {level::debug, level::info, level::warn, level::error})
    if (min_level == name(lv))
      min_level_ = lv;
}

void write(level lv, std::string_view msg, const fields& extra) {
  if (lv < min_level_)
    return;
  nlohmann::json j = {{"time", now_rfc3339()}, {"level", name(lv)}, {"node", node_id_},
                      {"msg", msg}};
  for (auto& [k, v] : extra)
    j[k] = v;
  auto line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  auto n = ::write(STDERR_FILENO, line.data(), line.size());
  (void) n;
}

} // namespace parley::log

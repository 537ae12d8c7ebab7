#include "actors/piece_writer.hpp"

#include <mutex>
#include <unordered_map>
#include <utility>

namespace parley {

namespace {

// One table per process: a sink and the llm actor that streams to it run in
// the same actor system whenever the shortcut applies, and actor addresses
// name their node, so sinks of several systems in one process never meet.
struct writer_table {
  std::mutex mu;
  std::unordered_map<caf::actor_addr, std::weak_ptr<piece_writer>> by_sink;
};

writer_table& table() {
  static writer_table t;
  return t;
}

} // namespace

void publish_piece_writer(const caf::actor_addr& sink, std::weak_ptr<piece_writer> w) {
  auto& t = table();
  std::lock_guard<std::mutex> lk{t.mu};
  t.by_sink[sink] = std::move(w);
}

void withdraw_piece_writer(const caf::actor_addr& sink) {
  auto& t = table();
  std::lock_guard<std::mutex> lk{t.mu};
  t.by_sink.erase(sink);
}

std::shared_ptr<piece_writer> find_piece_writer(const caf::actor& listener) {
  if (!listener)
    return nullptr;
  auto& t = table();
  std::lock_guard<std::mutex> lk{t.mu};
  auto it = t.by_sink.find(listener.address());
  return it == t.by_sink.end() ? nullptr : it->second.lock();
}

} // namespace parley

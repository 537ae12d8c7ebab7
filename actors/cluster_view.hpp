#pragma once
// A node's picture of the cluster at one moment: the members with their
// status, and the sessions pinned to a node by an explicit migration. The
// membership actor builds a new immutable view on every change and hands it
// to the edge and the registry, which route with it.

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>

#include "actors/vocabulary.hpp"

namespace parley {

struct cluster_view {
  std::string self;
  std::uint64_t version = 0;
  /// False until every seed was dialled once: /readyz waits for it.
  bool joined = true;
  std::vector<member_info> members; ///< every known member, this node included
  /// Sessions moved by `migrate`, kept until the next membership change.
  std::unordered_map<std::string, std::string> pins;

  const member_info* find(const std::string& node_id) const;
  /// Ids of the members placement may choose: those with status "up".
  const std::vector<std::string>& live_ids() const { return live_; }
  /// The node that hosts `session_id`: its pin when that member is up,
  /// otherwise the rendezvous owner among the up members; this node when
  /// none is up (a lone node that is leaving still serves).
  const member_info& owner(const std::string& session_id) const;
  /// The rendezvous owner of `session_id` among the members up or leaving,
  /// when that is a leaving member (it still hosts the session until it
  /// handed it over); otherwise null.
  const member_info* leaving_owner(const std::string& session_id) const;

  /// A view of one node alone (start-up, and single-node deployments).
  static std::shared_ptr<const cluster_view> alone(member_info self);

  /// Builds the derived index; call once after filling the fields.
  void seal() { index(); }

private:
  std::vector<std::string> live_;
  std::vector<std::string> present_; ///< up or leaving
  bool any_leaving_ = false;
  void index();
};

// view_ptr: declared in vocabulary.hpp

} // namespace parley

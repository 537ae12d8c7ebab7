#include "actors/cluster_view.hpp"

#include "runtime/rules/placement.hpp"

namespace parley {

const member_info* cluster_view::find(const std::string& node_id) const {
  for (auto& m : members)
    if (m.id == node_id)
      return &m;
  return nullptr;
}

void cluster_view::index() {
  live_.clear();
  present_.clear();
  any_leaving_ = false;
  for (auto& m : members) {
    if (m.status == member_status::up)
      live_.push_back(m.id);
    if (m.status == member_status::up || m.status == member_status::leaving)
      present_.push_back(m.id);
    any_leaving_ = any_leaving_ || m.status == member_status::leaving;
  }
}

const member_info* cluster_view::leaving_owner(const std::string& session_id) const {
  if (!any_leaving_)
    return nullptr;
  auto* m = find(place(session_id, present_));
  return m && m->status == member_status::leaving ? m : nullptr;
}

const member_info& cluster_view::owner(const std::string& session_id) const {
  if (auto p = pins.find(session_id); p != pins.end())
    if (auto* m = find(p->second); m && m->status == member_status::up)
      return *m;
  if (!live_.empty())
    if (auto* m = find(place(session_id, live_)))
      return *m;
  return *find(self);
}

view_ptr cluster_view::alone(member_info self) {
  auto v = std::make_shared<cluster_view>();
  v->self = self.id;
  v->members.push_back(std::move(self));
  v->seal();
  return v;
}

} // namespace parley

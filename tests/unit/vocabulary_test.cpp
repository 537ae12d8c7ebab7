// The vocabulary's wire forms that must not change: a session's location
// travels between registries with its state as a name ("active",
// "passive"), as it did when the state was a string.

#include <string>
#include <vector>

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <gtest/gtest.h>

#include "actors/vocabulary.hpp"

namespace parley {
namespace {

/// session_location as it was: two strings.
struct location_as_strings {
  std::string node;
  std::string state;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, location_as_strings& x) {
  return f(x.node, x.state);
}

template <class T>
std::vector<char> bytes_of(T x) {
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  EXPECT_FALSE(sink(x));
  return buf;
}

TEST(vocabulary, a_session_location_keeps_its_state_name_on_the_wire) {
  for (auto state : {session_state::active, session_state::passive}) {
    session_location loc{"node-1", state};
    auto buf = bytes_of(loc);
    EXPECT_EQ(buf, bytes_of(location_as_strings{"node-1", to_string(state)}));
    session_location back{"", state == session_state::active ? session_state::passive
                                                              : session_state::active};
    caf::binary_deserializer source{nullptr, buf};
    EXPECT_FALSE(source(back));
    EXPECT_EQ(back.node, "node-1");
    EXPECT_EQ(back.state, state);
  }
}

TEST(vocabulary, a_session_location_with_an_unknown_state_does_not_load) {
  auto buf = bytes_of(location_as_strings{"node-1", "sleeping"});
  session_location back;
  caf::binary_deserializer source{nullptr, buf};
  EXPECT_TRUE(source(back));
}

} // namespace
} // namespace parley

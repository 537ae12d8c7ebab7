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

TEST(vocabulary, a_handoff_window_and_a_model_answer_carry_usage_across_the_cluster) {
  handoff_state h;
  h.session.id = "s1";
  message_record user;
  user.seq = 1;
  user.role = "user";
  user.content = "hi";
  message_record reply;
  reply.seq = 2;
  reply.role = "assistant";
  reply.content = "hello";
  reply.usage = {12, 5, 17, true};
  h.window = {user, reply};
  auto buf = bytes_of(h);
  handoff_state back;
  caf::binary_deserializer source{nullptr, buf};
  EXPECT_FALSE(source(back));
  ASSERT_EQ(back.window.size(), 2u);
  EXPECT_FALSE(back.window[0].usage.known);
  EXPECT_TRUE(back.window[1].usage.known);
  EXPECT_EQ(back.window[1].usage.prompt_tokens, 12);
  EXPECT_EQ(back.window[1].usage.completion_tokens, 5);
  EXPECT_EQ(back.window[1].usage.total_tokens, 17);

  llm_result r{"text", "m", {3, 4, 7, true}};
  auto rbuf = bytes_of(r);
  llm_result rback;
  caf::binary_deserializer rsource{nullptr, rbuf};
  EXPECT_FALSE(rsource(rback));
  EXPECT_EQ(rback.usage.total_tokens, 7);
  EXPECT_TRUE(rback.usage.known);
}

} // namespace
} // namespace parley

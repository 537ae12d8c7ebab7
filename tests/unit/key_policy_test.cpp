// The key policy's pure rules: which models a key may name, and how a
// refusal reads.

#include <gtest/gtest.h>

#include "runtime/rules/key_policy.hpp"

using parley::model_allowed;
using parley::model_refusal;

TEST(key_policy, no_list_allows_any_model_and_a_list_only_its_names) {
  EXPECT_TRUE(model_allowed({}, "anything"));
  EXPECT_TRUE(model_allowed({"gpt-a", "gpt-b"}, "gpt-b"));
  EXPECT_FALSE(model_allowed({"gpt-a", "gpt-b"}, "gpt-c"));
  EXPECT_FALSE(model_allowed({"gpt-a"}, "GPT-A")) << "names match exactly";
  EXPECT_FALSE(model_allowed({"gpt-a"}, ""));
}

TEST(key_policy, a_refusal_names_the_model_and_what_the_key_may_use) {
  EXPECT_EQ(model_refusal({"gpt-a", "gpt-b"}, "gpt-c"),
            "this API key may not use model 'gpt-c'; it may use 'gpt-a', 'gpt-b'");
}

#pragma once
// JSON text written directly into a string, for the hot paths (a turn's
// answer, a log line) where building an nlohmann DOM first costs more than
// the rest of the work.

#include <cstddef>
#include <string>
#include <string_view>

namespace parley::net {

/// Length of the valid UTF-8 sequence at the start of `s`, or 0 when it is
/// not one (overlong forms, surrogates and code points past U+10FFFF are not).
std::size_t utf8_sequence(std::string_view s);

/// True when `s` is valid UTF-8 holding no NUL (U+0000) and, with
/// `controls` false, no other C0 control character but tab: the text that
/// Parley accepts in stored strings, paths, queries and header values.
enum class allow_controls { yes, no };
bool is_clean_text(std::string_view s, allow_controls controls = allow_controls::yes);

/// Replaces every NUL (U+0000) in `s` with U+FFFD: text from outside (a
/// model's answer) that PostgreSQL can store.
void replace_nul(std::string& s);

/// Appends `s` as a JSON string: quotes and backslashes escaped, control
/// characters as \n-style or \u00XX escapes, invalid UTF-8 as U+FFFD.
void append_json_string(std::string& out, std::string_view s);

} // namespace parley::net

#include "net/http/openai_chunk.hpp"

#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

namespace parley::net {

namespace {

/// Reads one streamed chunk without building a JSON document (it runs for
/// every chunk of every stream): keeps the top-level `model`,
/// `choices[0].delta.content`, the `usage` counts and whether `choices`
/// holds anything, as the parser passes them.
class chunk_reader {
public:
  using json = nlohmann::json;

  bool null() {
    if (path_.size() == 1 && path_[0].key == "error")
      error = true;
    return value();
  }
  bool boolean(bool) { return value(); }
  bool number_integer(json::number_integer_t n) {
    if (n >= 0)
      count(static_cast<std::int64_t>(n));
    return value();
  }
  bool number_unsigned(json::number_unsigned_t n) {
    if (n <= static_cast<json::number_unsigned_t>(INT64_MAX))
      count(static_cast<std::int64_t>(n));
    return value();
  }
  bool number_float(json::number_float_t, const json::string_t&) { return value(); }
  bool binary(json::binary_t&) { return value(); }
  bool string(json::string_t& s) {
    if (at_finish_reason())
      finished = true;
    if (path_.size() == 1 && path_[0].key == "error")
      error = true;
    if (at_model())
      model = std::move(s);
    else if (at_content())
      content = std::move(s);
    return value();
  }
  bool start_object(std::size_t) {
    if (path_.size() == 1 && path_[0].key == "error")
      error = true;
    if (path_.size() == 1 && path_[0].key == "usage" && !usage)
      usage = upstream_usage{};
    if (path_.size() == 1 && path_[0].key == "choices")
      has_choice = true; // `choices` is an object, not an array: not empty either
    if (path_.size() == 2 && path_[1].array && path_[0].key == "choices")
      has_choice = true;
    path_.push_back({false, {}, 0});
    return true;
  }
  bool key(json::string_t& k) {
    path_.back().key = std::move(k);
    return true;
  }
  bool end_object() {
    path_.pop_back();
    if (path_.empty())
      top_object = true;
    return value();
  }
  bool start_array(std::size_t) {
    if (path_.size() == 2 && path_[1].array && path_[0].key == "choices")
      has_choice = true;
    path_.push_back({true, {}, 0});
    return true;
  }
  bool end_array() {
    path_.pop_back();
    return value();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }

  std::optional<std::string> model;
  std::optional<std::string> content;
  std::optional<upstream_usage> usage;
  bool has_choice = false;
  bool finished = false;
  bool error = false;
  bool top_object = false;

private:
  struct frame {
    bool array;
    std::string key;   ///< an object's current key
    std::size_t index; ///< an array's current element
  };

  /// A count of the top-level `usage` object.
  void count(std::int64_t n) {
    if (path_.size() != 2 || path_[0].array || path_[0].key != "usage" || path_[1].array || !usage)
      return;
    auto& k = path_[1].key;
    if (k == "prompt_tokens")
      usage->prompt_tokens = n;
    else if (k == "completion_tokens")
      usage->completion_tokens = n;
    else if (k == "total_tokens")
      usage->total_tokens = n;
  }

  /// A value ended: an array moves on to its next element.
  bool value() {
    if (path_.size() == 2 && path_[1].array && path_[0].key == "choices")
      has_choice = true;
    if (!path_.empty() && path_.back().array)
      ++path_.back().index;
    return true;
  }
  bool at_model() const { return path_.size() == 1 && path_[0].key == "model"; }
  /// `choices[i].finish_reason`, any choice.
  bool at_finish_reason() const {
    return path_.size() == 3 && !path_[0].array && path_[0].key == "choices" && path_[1].array &&
           !path_[2].array && path_[2].key == "finish_reason";
  }
  bool at_content() const {
    return path_.size() == 4 && !path_[0].array && path_[0].key == "choices" && path_[1].array &&
           path_[1].index == 0 && !path_[2].array && path_[2].key == "delta" &&
           !path_[3].array && path_[3].key == "content";
  }

  std::vector<frame> path_;
};

} // namespace

chunk_kind read_chunk(std::string_view data, chunk_info& out) {
  if (data == "[DONE]")
    return chunk_kind::done;
  chunk_reader r;
  if (!nlohmann::json::sax_parse(data, &r) || !r.top_object)
    return chunk_kind::malformed;
  chunk_info info;
  if (r.content && !r.content->empty())
    info.piece = std::move(r.content);
  info.model = std::move(r.model);
  info.usage = r.usage;
  info.no_choices = !r.has_choice;
  info.finished = r.finished;
  info.error = r.error;
  out = std::move(info);
  return chunk_kind::chunk;
}

} // namespace parley::net

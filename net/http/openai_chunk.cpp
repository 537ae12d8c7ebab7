#include "net/http/openai_chunk.hpp"

#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

namespace parley::net {

namespace {

/// Reads one streamed chunk without building a JSON document (it runs for
/// every piece of every stream): keeps the top-level `model` and
/// `choices[0].delta.content` as the parser passes them.
class chunk_reader {
public:
  using json = nlohmann::json;

  bool null() { return value(); }
  bool boolean(bool) { return value(); }
  bool number_integer(json::number_integer_t) { return value(); }
  bool number_unsigned(json::number_unsigned_t) { return value(); }
  bool number_float(json::number_float_t, const json::string_t&) { return value(); }
  bool binary(json::binary_t&) { return value(); }
  bool string(json::string_t& s) {
    if (at_model())
      model = std::move(s);
    else if (at_content())
      content = std::move(s);
    return value();
  }
  bool start_object(std::size_t) {
    path_.push_back({false, {}, 0});
    return true;
  }
  bool key(json::string_t& k) {
    path_.back().key = std::move(k);
    return true;
  }
  bool end_object() {
    path_.pop_back();
    return value();
  }
  bool start_array(std::size_t) {
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

private:
  struct frame {
    bool array;
    std::string key;   ///< an object's current key
    std::size_t index; ///< an array's current element
  };

  /// A value ended: an array moves on to its next element.
  bool value() {
    if (!path_.empty() && path_.back().array)
      ++path_.back().index;
    return true;
  }
  bool at_model() const { return path_.size() == 1 && path_[0].key == "model"; }
  bool at_content() const {
    return path_.size() == 4 && !path_[0].array && path_[0].key == "choices" && path_[1].array &&
           path_[1].index == 0 && !path_[2].array && path_[2].key == "delta" &&
           !path_[3].array && path_[3].key == "content";
  }

  std::vector<frame> path_;
};

} // namespace

bool chunk_piece(std::string_view data, std::string& piece, std::string& model) {
  if (data == "[DONE]")
    return false;
  chunk_reader r;
  if (!nlohmann::json::sax_parse(data, &r))
    return false; // not JSON: skipped
  if (r.model)
    model = std::move(*r.model);
  if (!r.content || r.content->empty())
    return false;
  piece = std::move(*r.content);
  return true;
}

} // namespace parley::net

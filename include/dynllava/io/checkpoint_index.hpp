// SPDX-License-Identifier: Apache-2.0
/// @file checkpoint_index.hpp
/// @brief A linear-time validating parser of `model.safetensors.index.json` (untrusted JSON).
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dynllava::io {

/// Largest index file accepted (a 400B-parameter model's index is a few MB).
inline constexpr std::uint64_t max_index_bytes = 64ull << 20;

/// One `weight_map` entry: a tensor and the shard file that stores it.
struct index_entry {
  std::string tensor;
  std::string file;  ///< a plain file name in the index's folder
};

/// True when `f` names a file directly in a folder: not empty, no `/`, not `.` or `..`, no NUL.
/// The file itself may be a symbolic link (the Hugging Face hub cache links every file).
inline bool is_plain_file_name(std::string_view f) noexcept {
  return !f.empty() && f != "." && f != ".." && f.find('/') == std::string_view::npos &&
         f.find('\0') == std::string_view::npos;
}

namespace detail {

/// SAX handler keeping `weight_map` only; other top-level members (e.g. `metadata`) are skipped
/// but may nest at most `max_depth` levels.
class index_sax {
 public:
  using json = nlohmann::json;
  static constexpr int max_depth = 16;

  explicit index_sax(std::string_view where) : where_(where) {}

  bool null() { return value(false, "null"); }
  bool boolean(bool) { return value(false, "boolean"); }
  bool number_integer(json::number_integer_t) { return value(false, "number"); }
  bool number_unsigned(json::number_unsigned_t) { return value(false, "number"); }
  bool number_float(json::number_float_t, const json::string_t&) { return value(false, "number"); }
  bool binary(json::binary_t&) { return value(false, "binary"); }
  bool string(json::string_t& s) {
    value(false, "string");
    if (depth_ == 2 && in_map_) {
      DYNLLAVA_EXPECTS(is_plain_file_name(s),
                       "checkpoint: {}: weight_map[{}] = {} must be a file name in the "
                       "checkpoint folder (no folder, no .., no absolute path)",
                       where_, quote_untrusted(key_), quote_untrusted(s));
      entries_.push_back({std::move(key_), std::move(s)});
    }
    return true;
  }
  bool start_object(std::size_t) {
    value(true, "object");
    if (++depth_ == 2 && key_ == "weight_map") {
      DYNLLAVA_EXPECTS(!seen_map_, "checkpoint: {}: weight_map is listed twice", where_);
      seen_map_ = in_map_ = true;
    }
    return true;
  }
  bool key(json::string_t& k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() {
    if (--depth_ == 1) in_map_ = false;
    return true;
  }
  bool start_array(std::size_t) {
    value(true, "array");
    ++depth_;
    return true;
  }
  bool end_array() {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t byte, const std::string&, const nlohmann::detail::exception& e) {
    DYNLLAVA_FAIL("checkpoint: {} is not valid JSON (byte {}: {})", where_, byte,
                  quote_untrusted(e.what()));
  }

  /// The entries sorted by tensor name. @throws dynllava::error when a name is listed twice or
  /// there is no weight_map.
  std::vector<index_entry> take() {
    DYNLLAVA_EXPECTS(seen_map_, "checkpoint: {} has no weight_map object", where_);
    std::sort(entries_.begin(), entries_.end(),
              [](const index_entry& a, const index_entry& b) { return a.tensor < b.tensor; });
    const auto dup = std::adjacent_find(
        entries_.begin(), entries_.end(),
        [](const index_entry& a, const index_entry& b) { return a.tensor == b.tensor; });
    DYNLLAVA_EXPECTS(dup == entries_.end(),
                     "checkpoint: {}: weight_map lists tensor {} twice ({} and {})", where_,
                     dup == entries_.end() ? "" : quote_untrusted(dup->tensor),
                     dup == entries_.end() ? "" : quote_untrusted(dup->file),
                     dup == entries_.end() ? "" : quote_untrusted(std::next(dup)->file));
    return std::move(entries_);
  }

 private:
  /// Checks a value about to be read at depth_ (`container`: an object or array).
  bool value(bool container, const char* kind) {
    DYNLLAVA_EXPECTS(depth_ > 0 || std::string_view(kind) == "object",
                     "checkpoint: {} must be a JSON object, got {}", where_, kind);
    DYNLLAVA_EXPECTS(!(depth_ == 1 && key_ == "weight_map") || std::string_view(kind) == "object",
                     "checkpoint: {} has no weight_map object (got {})", where_, kind);
    DYNLLAVA_EXPECTS(!(depth_ == 2 && in_map_) || std::string_view(kind) == "string",
                     "checkpoint: {}: weight_map[{}] must be a file name, got {}", where_,
                     quote_untrusted(key_), kind);
    DYNLLAVA_EXPECTS(!container || depth_ < max_depth, "checkpoint: {} nests deeper than {} levels",
                     where_, max_depth);
    return true;
  }

  std::string_view where_;
  int depth_ = 0;
  std::string key_;
  bool in_map_ = false;
  bool seen_map_ = false;
  std::vector<index_entry> entries_;
};

}  // namespace detail

/// @brief Parses an index's JSON text: `{"weight_map": {"tensor": "file", ...}, ...}`.
/// Linear in the text's size; every file must be a plain file name (is_plain_file_name).
/// @param where the index file, already quoted for messages (quote_untrusted).
/// @return the entries sorted by tensor name. @throws dynllava::error at the first defect
///         (running out of memory included).
inline std::vector<index_entry> parse_checkpoint_index(std::string_view json,
                                                       std::string_view where) {
  DYNLLAVA_EXPECTS(json.size() <= max_index_bytes,
                   "checkpoint: {} holds {} bytes, more than the {}-byte limit of an index", where,
                   json.size(), max_index_bytes);
  try {
    detail::index_sax sax(where);
    const bool ok = nlohmann::json::sax_parse(json.begin(), json.end(), &sax);
    DYNLLAVA_EXPECTS(ok, "checkpoint: {} is not valid JSON", where);
    return sax.take();
  } catch (const std::bad_alloc&) {
    DYNLLAVA_FAIL("checkpoint: {}: out of memory while parsing the {}-byte index", where,
                  json.size());
  } catch (const nlohmann::json::exception& e) {
    DYNLLAVA_FAIL("checkpoint: {} is not valid JSON ({})", where, quote_untrusted(e.what()));
  }
}

}  // namespace dynllava::io

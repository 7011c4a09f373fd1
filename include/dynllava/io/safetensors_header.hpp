// SPDX-License-Identifier: Apache-2.0
/// @file safetensors_header.hpp
/// @brief The safetensors header: dtypes, tensor entries, and a linear-time validating parser.
///
/// The header is untrusted JSON: `{"name": {"dtype", "shape", "data_offsets": [begin, end]},
/// "__metadata__": {"key": "value", ...}}`. It is parsed with nlohmann's SAX interface straight
/// into `tensor_info`s (no DOM): time is linear in the header's size and memory a small multiple
/// of it (every kept byte comes from the text; a shape keeps at most `max_rank` extents). The
/// format nests three levels; deeper input is refused at its first bracket. Running out of
/// memory while parsing is a `dynllava::error`, not a crash.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dynllava::io {

/// Element type of a stored tensor.
enum class dtype : std::uint8_t {
  f64,
  f32,
  f16,
  bf16,
  i64,
  i32,
  i16,
  i8,
  u64,
  u32,
  u16,
  u8,
  boolean,
  f8_e4m3,
  f8_e5m2
};

/// Bytes per element.
constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
    case dtype::f64:
    case dtype::i64:
    case dtype::u64:
      return 8;
    case dtype::f32:
    case dtype::i32:
    case dtype::u32:
      return 4;
    case dtype::f16:
    case dtype::bf16:
    case dtype::i16:
    case dtype::u16:
      return 2;
    default:
      return 1;
  }
}

/// The safetensors name of a dtype ("F32", "BF16", ...).
constexpr std::string_view to_string(dtype t) noexcept {
  constexpr std::string_view names[] = {"F64", "F32", "F16",  "BF16",    "I64",
                                        "I32", "I16", "I8",   "U64",     "U32",
                                        "U16", "U8",  "BOOL", "F8_E4M3", "F8_E5M2"};
  return names[static_cast<std::size_t>(t)];
}

/// Parses a safetensors dtype name; nullopt when unknown.
inline std::optional<dtype> parse_dtype(std::string_view s) noexcept {
  for (int i = 0; i <= static_cast<int>(dtype::f8_e5m2); ++i) {
    if (to_string(static_cast<dtype>(i)) == s) return static_cast<dtype>(i);
  }
  return std::nullopt;
}

/// Most dimensions a tensor may have (the models use at most 4; the limit bounds parse memory).
inline constexpr std::size_t max_rank = 16;

/// One tensor's entry in a safetensors header.
struct tensor_info {
  std::string name;
  io::dtype type = dtype::f32;
  std::vector<std::int64_t> shape;  ///< row-major extents, at most max_rank
  std::uint64_t begin = 0;          ///< byte offset in the data buffer
  std::uint64_t end = 0;            ///< one past the last byte

  std::uint64_t elements() const noexcept {
    std::uint64_t n = 1;
    for (auto d : shape) n *= static_cast<std::uint64_t>(d);
    return n;
  }
};

/// Formats a shape as "[a, b, c]".
template <class Shape>
std::string shape_string(const Shape& shape) {
  std::string s = "[";
  bool first = true;
  for (const auto d : shape) {
    s += (first ? "" : ", ") + std::to_string(d);
    first = false;
  }
  return s + "]";
}

/// A parsed header: tensors sorted by name, each validated against the data buffer.
struct safetensors_header {
  std::vector<tensor_info> tensors;
  std::map<std::string, std::string> metadata;  ///< `__metadata__` (empty when absent)
};

namespace detail {

/// JSON kind of a SAX event, for messages.
enum class json_kind { object, array, string, integer, unsigned_integer, floating, boolean, null };

inline const char* kind_name(json_kind k) noexcept {
  switch (k) {
    case json_kind::object:
      return "object";
    case json_kind::array:
      return "array";
    case json_kind::string:
      return "string";
    case json_kind::boolean:
      return "boolean";
    case json_kind::null:
      return "null";
    default:
      return "number";
  }
}

/// SAX handler building the tensor entries; throws dynllava::error at the first defect.
class safetensors_sax {
 public:
  using json = nlohmann::json;

  safetensors_sax(std::uint64_t data_size, std::string_view where)
      : data_size_(data_size), where_(where) {}

  bool null() { return scalar(json_kind::null, "null"); }
  bool boolean(bool v) { return scalar(json_kind::boolean, v ? "true" : "false"); }
  bool number_integer(json::number_integer_t v) {
    return scalar(json_kind::integer, std::to_string(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    value(json_kind::unsigned_integer);
    if (depth_ == 3) array_value(v);
    return true;
  }
  bool number_float(json::number_float_t, const json::string_t& text) {
    return scalar(json_kind::floating, text);
  }
  bool string(json::string_t& s) {
    if (depth_ == 3) return scalar(json_kind::string, quote_untrusted(s));
    value(json_kind::string);
    if (depth_ == 2 && in_metadata_) {
      // try_emplace leaves key_ alone when the key is already there
      const bool inserted = out_.metadata.try_emplace(std::move(key_), std::move(s)).second;
      DYNLLAVA_EXPECTS(inserted, "safetensors: {}: __metadata__ lists key {} twice", where_,
                       quote_untrusted(key_));
    } else if (depth_ == 2) {  // the dtype (value() checked the field)
      const auto parsed = parse_dtype(s);
      DYNLLAVA_EXPECTS(parsed.has_value(), "safetensors: {}: tensor {} has unknown dtype {}",
                       where_, quote_untrusted(cur_.name), quote_untrusted(s));
      cur_.type = *parsed;
      has_dtype_ = true;
    }
    return true;
  }
  bool binary(json::binary_t&) { return scalar(json_kind::string, "binary"); }
  bool start_object(std::size_t) {
    value(json_kind::object);
    ++depth_;
    if (depth_ == 2) {
      in_metadata_ = key_ == "__metadata__";
      if (in_metadata_) {
        DYNLLAVA_EXPECTS(!seen_metadata_, "safetensors: {}: __metadata__ is listed twice", where_);
        seen_metadata_ = true;
      } else {
        cur_ = tensor_info{};
        cur_.name = std::move(key_);
        has_dtype_ = false;
        shape_state_ = offsets_count_ = 0;
      }
    }
    return true;
  }
  bool key(json::string_t& k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() {
    if (depth_ == 2 && !in_metadata_) finish_entry();
    if (depth_ == 1) finish_header();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) {
    value(json_kind::array);
    ++depth_;
    if (field_ == "shape") shape_state_ = 1;
    return true;
  }
  bool end_array() {
    if (depth_ == 3 && field_ == "shape") shape_state_ = 2;
    --depth_;
    return true;
  }
  bool parse_error(std::size_t byte, const std::string&, const nlohmann::detail::exception& e) {
    DYNLLAVA_FAIL("safetensors: {}: the header is not valid JSON (byte {}: {})", where_, byte,
                  quote_untrusted(e.what()));
  }

  safetensors_header take() { return std::move(out_); }

 private:
  bool scalar(json_kind k, const std::string& text) {
    value(k);
    if (depth_ == 3) {
      if (field_ == "shape") {
        DYNLLAVA_FAIL(
            "safetensors: {}: tensor {} has a shape entry that is not a non-negative integer "
            "({}: {})",
            where_, quote_untrusted(cur_.name), kind_name(k),
            text.size() <= 40 ? text : text.substr(0, 40) + "...");
      }
      DYNLLAVA_FAIL(
          "safetensors: {}: tensor {} needs data_offsets [begin, end] of non-negative integers "
          "(got a {})",
          where_, quote_untrusted(cur_.name), kind_name(k));
    }
    return true;
  }

  /// Checks that a value of kind `k` may appear where the parser is (depth_ before entering).
  void value(json_kind k) {
    switch (depth_) {
      case 0:
        DYNLLAVA_EXPECTS(k == json_kind::object,
                         "safetensors: {}: the header must be a JSON object, got {}", where_,
                         kind_name(k));
        return;
      case 1:
        if (key_ == "__metadata__") {
          DYNLLAVA_EXPECTS(k == json_kind::object,
                           "safetensors: {}: __metadata__ must be an object", where_);
        } else {
          DYNLLAVA_EXPECTS(k == json_kind::object, "safetensors: {}: entry {} must be an object",
                           where_, quote_untrusted(key_));
        }
        return;
      case 2:
        if (in_metadata_) {
          DYNLLAVA_EXPECTS(k == json_kind::string,
                           "safetensors: {}: __metadata__[{}] must be a string, got {}", where_,
                           quote_untrusted(key_), kind_name(k));
          return;
        }
        field_ = key_;
        if (field_ == "dtype") {
          DYNLLAVA_EXPECTS(!has_dtype_ && k == json_kind::string,
                           "safetensors: {}: tensor {} has no string dtype", where_,
                           quote_untrusted(cur_.name));
        } else if (field_ == "shape" || field_ == "data_offsets") {
          const bool twice = field_ == "shape" ? shape_state_ != 0 : offsets_count_ != 0;
          DYNLLAVA_EXPECTS(k == json_kind::array && !twice,
                           "safetensors: {}: tensor {} needs one {} array", where_,
                           quote_untrusted(cur_.name), field_);
          if (field_ == "data_offsets") offsets_count_ = 1;  // seen, no value yet
        } else {
          DYNLLAVA_FAIL("safetensors: {}: tensor {} has an unknown field {}", where_,
                        quote_untrusted(cur_.name), quote_untrusted(field_));
        }
        return;
      default:  // 3: inside shape or data_offsets, which hold numbers only
        DYNLLAVA_EXPECTS(k != json_kind::object && k != json_kind::array,
                         "safetensors: {}: the header nests deeper than the format allows "
                         "(tensor {})",
                         where_, quote_untrusted(cur_.name));
    }
  }

  void array_value(std::uint64_t v) {
    const std::string name = quote_untrusted(cur_.name);
    if (field_ == "shape") {
      DYNLLAVA_EXPECTS(cur_.shape.size() < max_rank,
                       "safetensors: {}: tensor {} has more than {} dimensions", where_, name,
                       max_rank);
      DYNLLAVA_EXPECTS(v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
                       "safetensors: {}: tensor {} has a shape entry {} beyond int64", where_, name,
                       v);
      cur_.shape.push_back(static_cast<std::int64_t>(v));
      return;
    }
    DYNLLAVA_EXPECTS(offsets_count_ <= 2,
                     "safetensors: {}: tensor {} needs data_offsets [begin, end] of non-negative "
                     "integers (got more than two)",
                     where_, name);
    (offsets_count_ == 1 ? cur_.begin : cur_.end) = v;
    ++offsets_count_;
  }

  void finish_entry() {
    const std::string name = quote_untrusted(cur_.name);
    DYNLLAVA_EXPECTS(has_dtype_, "safetensors: {}: tensor {} has no string dtype", where_, name);
    DYNLLAVA_EXPECTS(shape_state_ == 2, "safetensors: {}: tensor {} has no shape array", where_,
                     name);
    DYNLLAVA_EXPECTS(offsets_count_ == 3,
                     "safetensors: {}: tensor {} needs data_offsets [begin, end] of non-negative "
                     "integers",
                     where_, name);
    std::uint64_t elements = 1;
    for (const auto d : cur_.shape) {
      const auto v = static_cast<std::uint64_t>(d);
      DYNLLAVA_EXPECTS(v == 0 || elements <= std::numeric_limits<std::uint64_t>::max() / 8 / v,
                       "safetensors: {}: tensor {} has an impossibly large shape {}", where_, name,
                       shape_string(cur_.shape));
      elements *= v;
    }
    DYNLLAVA_EXPECTS(cur_.begin <= cur_.end,
                     "safetensors: {}: tensor {} has data_offsets [{}, {}] with begin > end",
                     where_, name, cur_.begin, cur_.end);
    DYNLLAVA_EXPECTS(cur_.end <= data_size_,
                     "safetensors: {}: tensor {} ends at byte {} but the data buffer holds {} "
                     "bytes (truncated file?)",
                     where_, name, cur_.end, data_size_);
    const std::uint64_t bytes = elements * size_of(cur_.type);
    DYNLLAVA_EXPECTS(cur_.end - cur_.begin == bytes,
                     "safetensors: {}: tensor {} ({} {}) needs {} bytes, its offsets span {}",
                     where_, name, to_string(cur_.type), shape_string(cur_.shape), bytes,
                     cur_.end - cur_.begin);
    out_.tensors.push_back(std::move(cur_));
  }

  /// Names unique, buffer covered exactly (no overlap, no hole); O(n log n).
  void finish_header() {
    auto& ts = out_.tensors;
    std::sort(ts.begin(), ts.end(),
              [](const tensor_info& a, const tensor_info& b) { return a.name < b.name; });
    const auto dup = std::adjacent_find(
        ts.begin(), ts.end(),
        [](const tensor_info& a, const tensor_info& b) { return a.name == b.name; });
    DYNLLAVA_EXPECTS(dup == ts.end(), "safetensors: {}: tensor {} is listed twice", where_,
                     dup == ts.end() ? "" : quote_untrusted(dup->name));
    std::vector<const tensor_info*> by_offset;
    by_offset.reserve(ts.size());
    for (const auto& t : ts) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const tensor_info* a, const tensor_info* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::uint64_t expected = 0;
    const tensor_info* prev = nullptr;
    for (const tensor_info* t : by_offset) {
      DYNLLAVA_EXPECTS(t->begin >= expected,
                       "safetensors: {}: tensors {} and {} overlap (bytes [{}, {}) and [{}, {}))",
                       where_, prev ? quote_untrusted(prev->name) : "", quote_untrusted(t->name),
                       prev ? prev->begin : 0, prev ? prev->end : 0, t->begin, t->end);
      DYNLLAVA_EXPECTS(t->begin == expected,
                       "safetensors: {}: bytes [{}, {}) of the data buffer belong to no tensor",
                       where_, expected, t->begin);
      expected = t->end;
      prev = t;
    }
    DYNLLAVA_EXPECTS(expected == data_size_,
                     "safetensors: {}: the data buffer holds {} bytes but the tensors cover {}",
                     where_, data_size_, expected);
  }

  std::uint64_t data_size_;
  std::string_view where_;
  safetensors_header out_;
  int depth_ = 0;      ///< containers entered
  std::string key_;    ///< the last key read
  std::string field_;  ///< the entry field being read (depth 3)
  bool in_metadata_ = false;
  bool seen_metadata_ = false;
  tensor_info cur_;
  bool has_dtype_ = false;
  int shape_state_ = 0;    ///< 0 none, 1 open, 2 closed
  int offsets_count_ = 0;  ///< 0 none, then 1 + values read
};

}  // namespace detail

/// @brief Parses and validates a safetensors header against a data buffer of `data_size` bytes.
/// @param where the file, already quoted for messages (quote_untrusted).
/// @throws dynllava::error naming the file and the tensor at the first defect, including
///         running out of memory.
inline safetensors_header parse_safetensors_header(std::string_view json, std::uint64_t data_size,
                                                   std::string_view where) {
  DYNLLAVA_EXPECTS(json.find('\0') == std::string_view::npos,
                   "safetensors: {}: the header contains NUL bytes", where);
  try {
    detail::safetensors_sax sax(data_size, where);
    const bool ok = nlohmann::json::sax_parse(json.begin(), json.end(), &sax);
    DYNLLAVA_EXPECTS(ok, "safetensors: {}: the header is not valid JSON", where);
    return sax.take();
  } catch (const std::bad_alloc&) {
    DYNLLAVA_FAIL("safetensors: {}: out of memory while parsing the {}-byte header", where,
                  json.size());
  } catch (const nlohmann::json::exception& e) {
    DYNLLAVA_FAIL("safetensors: {}: the header is not valid JSON ({})", where,
                  quote_untrusted(e.what()));
  }
}

}  // namespace dynllava::io

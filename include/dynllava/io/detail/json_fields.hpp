// SPDX-License-Identifier: Apache-2.0
/// @file json_fields.hpp
/// @brief Typed, range-checked reads of the fields of one JSON object, whose errors name the file
/// and the field's JSON path (`config.json: text_config.num_attention_heads must be a positive
/// integer, got "8"`). Used by the configuration readers.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/io/json_document.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace dynllava::io::detail {

/// @brief The fields of one JSON object of a file. `null` is treated as absent only where a
/// reader says so (`*_or_null`); elsewhere it is a type error, as for transformers' strict
/// configs.
class json_fields {
 public:
  using json = nlohmann::json;

  /// @param obj must outlive this view. @param path the object's JSON path ("" = top level).
  json_fields(const json& obj, std::string_view file, std::string path)
      : obj_(obj), file_(file), path_(std::move(path)) {
    DYNLLAVA_EXPECTS(obj.is_object(), "{}: {} must be a JSON object, got {}", file_, where(),
                     describe_json(obj));
  }

  [[nodiscard]] std::string_view file() const noexcept { return file_; }
  /// JSON path of `key` in this object (`text_config.hidden_size`).
  [[nodiscard]] std::string path_of(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  /// The value of `key`, or nullptr when absent.
  [[nodiscard]] const json* find(std::string_view key) const {
    const auto it = obj_.find(key);
    return it == obj_.end() ? nullptr : &*it;
  }
  /// The value of `key`, or nullptr when absent or null.
  [[nodiscard]] const json* find_non_null(std::string_view key) const {
    const json* v = find(key);
    return v != nullptr && !v->is_null() ? v : nullptr;
  }
  [[nodiscard]] bool has(std::string_view key) const { return find_non_null(key) != nullptr; }
  /// The value of `key`, or a null value when absent (for error messages).
  [[nodiscard]] const json& value_or_null(std::string_view key) const {
    static const json null_value;
    const json* v = find(key);
    return v != nullptr ? *v : null_value;
  }

  /// @throws dynllava::error: "<file>: <path> must be <what>, got <value>".
  [[noreturn]] void fail(std::string_view key, std::string_view what, const json& got) const {
    DYNLLAVA_FAIL("{}: {} must be {}, got {}", file_, path_of(key), what, describe_json(got));
  }
  /// @throws dynllava::error: "<file>: <path> <message>".
  [[noreturn]] void fail(std::string_view key, std::string_view message) const {
    DYNLLAVA_FAIL("{}: {} {}", file_, path_of(key), message);
  }

  /// An integer in `[lo, hi]`; `def` when absent (required when `def` is empty).
  [[nodiscard]] std::int64_t integer(std::string_view key, std::int64_t lo, std::int64_t hi,
                                     std::optional<std::int64_t> def = std::nullopt) const {
    const json* v = find(key);
    if (v == nullptr) {
      if (!def) missing(key, range_text(lo, hi));
      return *def;
    }
    return integer_value(key, *v, lo, hi);
  }
  /// An integer in `[lo, hi]`, or empty when absent or null.
  [[nodiscard]] std::optional<std::int64_t> integer_or_null(std::string_view key, std::int64_t lo,
                                                            std::int64_t hi) const {
    const json* v = find_non_null(key);
    if (v == nullptr) return std::nullopt;
    return integer_value(key, *v, lo, hi);
  }
  /// A size: an integer in `[1, index_t max]`.
  [[nodiscard]] index_t positive(std::string_view key,
                                 std::optional<index_t> def = std::nullopt) const {
    return static_cast<index_t>(integer(key, 1, std::numeric_limits<index_t>::max(),
                                        def ? std::optional<std::int64_t>(*def) : std::nullopt));
  }
  /// Checks `v` (the value of `key`) is an integer in `[lo, hi]`.
  [[nodiscard]] std::int64_t integer_value(std::string_view key, const json& v, std::int64_t lo,
                                           std::int64_t hi) const {
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (hi >= 0 && u <= static_cast<std::uint64_t>(hi) && static_cast<std::int64_t>(u) >= lo) {
        return static_cast<std::int64_t>(u);
      }
    } else if (v.is_number_integer()) {
      const auto i = v.get<std::int64_t>();
      if (i >= lo && i <= hi) return i;
    }
    fail(key, range_text(lo, hi), v);
  }

  /// A finite number (integer or float) in `[lo, hi]` (`lo_open`: `(lo, hi]`).
  [[nodiscard]] double number(std::string_view key, double lo, double hi, bool lo_open,
                              std::optional<double> def = std::nullopt) const {
    const json* v = find(key);
    const std::string what =
        fmt::format("a finite number in {}{}, {}]", lo_open ? "(" : "[", lo, hi);
    if (v == nullptr) {
      if (!def) missing(key, what);
      return *def;
    }
    if (v->is_number()) {
      const double d = v->get<double>();
      if (std::isfinite(d) && (lo_open ? d > lo : d >= lo) && d <= hi) return d;
    }
    fail(key, what, *v);
  }

  /// A string; `def` when absent (required when `def` is empty); null only when `null_ok`
  /// (then `def`).
  [[nodiscard]] std::string string(std::string_view key,
                                   std::optional<std::string> def = std::nullopt,
                                   bool null_ok = false) const {
    const json* v = find(key);
    if (v == nullptr || (null_ok && v->is_null())) {
      if (!def) missing(key, "a string");
      return *def;
    }
    if (!v->is_string()) fail(key, "a string", *v);
    return v->get<std::string>();
  }
  /// A boolean; `def` when absent (required when `def` is empty).
  [[nodiscard]] bool boolean(std::string_view key, std::optional<bool> def = std::nullopt) const {
    const json* v = find(key);
    if (v == nullptr) {
      if (!def) missing(key, "true or false");
      return *def;
    }
    if (!v->is_boolean()) fail(key, "true or false", *v);
    return v->get<bool>();
  }
  /// The object under `key`, or empty when absent or null.
  [[nodiscard]] std::optional<json_fields> object_or_null(std::string_view key) const {
    const json* v = find_non_null(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_object()) fail(key, "a JSON object", *v);
    return json_fields(*v, file_, path_of(key));
  }

 private:
  [[noreturn]] void missing(std::string_view key, std::string_view what) const {
    DYNLLAVA_FAIL("{}: {} is missing (expected {})", file_, path_of(key), what);
  }
  [[nodiscard]] std::string where() const {
    return path_.empty() ? std::string("the top level") : path_;
  }
  [[nodiscard]] static std::string range_text(std::int64_t lo, std::int64_t hi) {
    if (lo == 1 && hi == std::numeric_limits<index_t>::max()) return "a positive integer";
    if (lo == 0 && hi == std::numeric_limits<index_t>::max()) return "a non-negative integer";
    return fmt::format("an integer in [{}, {}]", lo, hi);
  }

  const json& obj_;
  std::string_view file_;
  std::string path_;
};

}  // namespace dynllava::io::detail

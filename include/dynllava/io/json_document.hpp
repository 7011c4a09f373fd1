// SPDX-License-Identifier: Apache-2.0
/// @file json_document.hpp
/// @brief Reading small untrusted JSON documents (model `config.json` files) with hard limits:
/// a size cap on the file, a nesting-depth cap, a cap on the number of values, no duplicate keys,
/// linear time, and running out of memory reported as `dynllava::error`.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <vector>

namespace dynllava::io {

/// Limits on a JSON document. The defaults are far above what a model configuration holds (a
/// LLaVA `config.json` is a few KB with a few hundred values, nested 3 deep).
struct json_limits {
  std::size_t max_bytes = std::size_t{16} << 20;  ///< size of the file or text
  std::size_t max_depth = 32;                     ///< nested arrays and objects
  std::size_t max_values = 65536;                 ///< values of any kind (bounds the DOM's memory)
};

/// @brief A short, safe description of a JSON value for error messages: `null`, `true`, a
/// number, a quoted string (`quote_untrusted`), a short array of scalars as `[a, b]`, else `an
/// array of N values` or `an object`.
[[nodiscard]] inline std::string describe_json(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::string:
      return quote_untrusted(v.get_ref<const std::string&>(), 40);
    case nlohmann::json::value_t::array: {
      bool small = v.size() <= 4;
      for (const auto& e : v) small = small && !e.is_structured();
      if (!small) return fmt::format("an array of {} values", v.size());
      std::string out = "[";
      for (const auto& e : v) out += (out.size() > 1 ? ", " : "") + describe_json(e);
      return out + "]";
    }
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::discarded:
      return "nothing";
    default:
      return v.dump();  // null, booleans, numbers: short and ASCII
  }
}

namespace detail {

/// SAX pass that checks the limits and duplicate keys without building anything; each value is
/// seen once and each key hashed once, so the pass is linear in the text.
class json_limit_checker {
 public:
  using json = nlohmann::json;
  json_limit_checker(std::string_view label, const json_limits& limits)
      : label_(label), limits_(limits) {}

  bool null() { return value(); }
  bool boolean(bool) { return value(); }
  bool number_integer(json::number_integer_t) { return value(); }
  bool number_unsigned(json::number_unsigned_t) { return value(); }
  bool number_float(json::number_float_t, const json::string_t&) { return value(); }
  bool string(json::string_t&) { return value(); }
  bool binary(json::binary_t&) { return value(); }
  bool start_object(std::size_t) { return open(true); }
  bool start_array(std::size_t) { return open(false); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    frame& f = frames_.back();
    if (!f.keys.insert(k).second) {
      message_ = fmt::format("{}: duplicate key {} in {}", label_, quote_untrusted(k), path());
      return false;
    }
    f.key = k;
    return true;
  }
  bool parse_error(std::size_t position, const std::string& last_token,
                   const nlohmann::detail::exception&) {
    message_ = fmt::format("{}: not valid JSON: syntax error at byte {} near {}", label_, position,
                           quote_untrusted(last_token, 24));
    return false;
  }

  /// The reason the pass stopped (empty when it did not).
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

 private:
  struct frame {
    bool object = false;
    std::unordered_set<std::string> keys;  // keys seen so far (objects)
    std::string key;                       // the current key (objects)
    std::size_t count = 0;                 // elements seen so far (arrays)
  };

  bool value() {
    if (++values_ > limits_.max_values) {
      message_ = fmt::format("{}: more than {} JSON values", label_, limits_.max_values);
      return false;
    }
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().count;
    return true;
  }
  bool open(bool object) {
    if (!value()) return false;
    if (frames_.size() + 1 > limits_.max_depth) {
      message_ = fmt::format("{}: JSON nested deeper than {} levels at {}", label_,
                             limits_.max_depth, path());
      return false;
    }
    frames_.emplace_back().object = object;
    return true;
  }
  bool close() {
    frames_.pop_back();
    return true;
  }
  /// JSON path of the innermost open container, e.g. `text_config.rope_parameters` or `a[3]`.
  [[nodiscard]] std::string path() const {
    std::string p;
    for (std::size_t i = 0; i + 1 < frames_.size(); ++i) {
      const frame& f = frames_[i];
      if (f.object) {
        if (!p.empty()) p += '.';
        append_untrusted(p, f.key, 40);
      } else {
        p += fmt::format("[{}]", f.count - 1);
      }
    }
    return p.empty() ? std::string("the top-level object") : p;
  }

  std::string_view label_;
  json_limits limits_;
  std::size_t values_ = 0;
  std::vector<frame> frames_;
  std::string message_;
};

}  // namespace detail

/// @brief Parses `text` as one JSON document within `limits`.
/// @param label names the document in errors (e.g. `config.json`).
/// @throws dynllava::error naming `label` for text over the size cap, invalid JSON (the byte
/// offset and the nearby text, escaped; a raw NUL byte anywhere), trailing data, nesting deeper or
/// more values than the limits allow, a key repeated within one object, or running out of memory.
[[nodiscard]] inline nlohmann::json parse_json_document(std::string_view text,
                                                        std::string_view label,
                                                        const json_limits& limits = {}) {
  DYNLLAVA_EXPECTS(text.size() <= limits.max_bytes, "{}: {} bytes is over the {}-byte limit", label,
                   text.size(), limits.max_bytes);
  // nlohmann's lexer takes a NUL byte for the end of the input, which would accept anything
  // after one; raw NUL is never valid JSON (inside strings it must be written \u0000).
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    DYNLLAVA_FAIL("{}: not valid JSON: a NUL byte at byte {}", label, nul);
  }
  try {
    // Pass 1: limits and duplicate keys, nothing built. Pass 2 (only when pass 1 accepted the
    // text) builds the document; nlohmann's parser is iterative and linear without a callback.
    detail::json_limit_checker checker(label, limits);
    const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &checker,
                                              nlohmann::json::input_format_t::json, true);
    if (!ok) {
      DYNLLAVA_FAIL("{}", checker.message().empty() ? fmt::format("{}: not valid JSON", label)
                                                    : checker.message());
    }
    nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    DYNLLAVA_EXPECTS(!doc.is_discarded(), "{}: not valid JSON", label);
    return doc;
  } catch (const std::bad_alloc&) {
    DYNLLAVA_FAIL("{}: out of memory while parsing {} bytes of JSON", label, text.size());
  } catch (const nlohmann::json::exception& e) {
    DYNLLAVA_FAIL("{}: not valid JSON ({})", label, quote_untrusted(e.what(), 120));
  }
}

/// @brief Reads a whole regular file of at most `max_bytes` bytes.
/// @throws dynllava::error naming `label` when the file is missing, is a directory or another
/// non-regular file, is larger than `max_bytes`, or cannot be read completely.
[[nodiscard]] inline std::string read_small_file(const std::filesystem::path& path,
                                                 std::string_view label, std::size_t max_bytes) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  DYNLLAVA_EXPECTS(!ec || ec == std::errc::no_such_file_or_directory,
                   "{}: cannot inspect the file ({})", label, ec.message());
  DYNLLAVA_EXPECTS(st.type() != std::filesystem::file_type::not_found, "{}: no such file", label);
  DYNLLAVA_EXPECTS(st.type() != std::filesystem::file_type::directory,
                   "{}: is a directory, not a file", label);
  DYNLLAVA_EXPECTS(st.type() == std::filesystem::file_type::regular, "{}: not a regular file",
                   label);
  const auto size = std::filesystem::file_size(path, ec);
  DYNLLAVA_EXPECTS(!ec, "{}: cannot read its size ({})", label, ec.message());
  DYNLLAVA_EXPECTS(size <= max_bytes, "{}: {} bytes is over the {}-byte limit", label, size,
                   max_bytes);
  std::ifstream in(path, std::ios::binary);
  DYNLLAVA_EXPECTS(in.good(), "{}: cannot open the file", label);
  try {
    std::string text(static_cast<std::size_t>(size), '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    DYNLLAVA_EXPECTS(static_cast<std::uintmax_t>(in.gcount()) == size,
                     "{}: read {} of {} bytes (the file changed or is unreadable)", label,
                     in.gcount(), size);
    return text;
  } catch (const std::bad_alloc&) {
    DYNLLAVA_FAIL("{}: out of memory reading {} bytes", label, size);
  }
}

}  // namespace dynllava::io

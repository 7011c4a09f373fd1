// SPDX-License-Identifier: Apache-2.0
/// @file llava_test_support.hpp
/// @brief The tokenizer fixture and its reference values, shared by the LLaVA support tests.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <tokenizer.hpp>

namespace dynllava::llava::test {

inline std::string fixture(const std::string& name) {
  return std::string(DYNLLAVA_FIXTURE_DIR) + "/tokenizer/" + name;
}

/// The tiny LLaMA-style model (500 pieces), loaded once.
inline const tokenizer& tiny_tokenizer() {
  static const tokenizer tok = tokenizer::load(fixture("tokenizer.model"));
  return tok;
}

/// tests/fixtures/tokenizer/reference.json, written by tools/tokenizer_reference.py.
inline const nlohmann::json& reference() {
  static const nlohmann::json j = [] {
    std::ifstream in(fixture("reference.json"));
    return nlohmann::json::parse(in);
  }();
  return j;
}

/// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
inline bool is_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80             ? 1
              : (c & 0xE0) == 0xC0 ? 2
              : (c & 0xF0) == 0xE0 ? 3
              : (c & 0xF8) == 0xF0 ? 4
                                   : 0;
    if (len == 0 || i + static_cast<std::size_t>(len) > s.size()) return false;
    std::uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
    for (int k = 1; k < len; ++k) {
      const auto t = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((t & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (t & 0x3Fu);
    }
    static constexpr std::uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += static_cast<std::size_t>(len);
  }
  return true;
}

}  // namespace dynllava::llava::test

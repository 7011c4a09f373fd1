// SPDX-License-Identifier: Apache-2.0
/// @file utf8.cpp
/// @brief `classify_utf8` and `is_valid_utf8`.
#include "utf8.hpp"

#include <algorithm>

namespace dynllava::llava::detail {
namespace {

bool is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }

/// Length a lead byte announces (1-4), 0 for a byte that cannot start a character.
int announced_length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 0;
}

constexpr char32_t min_code_point[5] = {0, 0, 0x80, 0x800, 0x10000};

bool valid_code_point(char32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

/// The code point of `len` bytes from `s` whose missing trailing bytes all equal `fill`.
char32_t code_point(std::string_view s, int len, unsigned char fill) {
  const auto byte = [&](int i) {
    return static_cast<unsigned char>(
        i < static_cast<int>(s.size()) ? s[static_cast<std::size_t>(i)] : static_cast<char>(fill));
  };
  static constexpr unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  char32_t c = byte(0) & lead_mask[len];
  for (int i = 1; i < len; ++i) c = (c << 6) | (byte(i) & 0x3Fu);
  return c;
}

}  // namespace

utf8_verdict classify_utf8(std::string_view s, int& len) {
  const auto lead = static_cast<unsigned char>(s[0]);
  len = announced_length(lead);
  if (len == 1) return utf8_verdict::valid;
  if (len == 0) return utf8_verdict::invalid;
  const int have = std::min<int>(len, static_cast<int>(s.size()));
  for (int i = 1; i < have; ++i) {
    if (!is_trail(static_cast<unsigned char>(s[static_cast<std::size_t>(i)]))) {
      return utf8_verdict::invalid;
    }
  }
  if (have == len) {
    const char32_t c = code_point(s, len, 0);
    // A literal U+FFFD counts as valid, as in SentencePiece.
    return c >= min_code_point[len] && valid_code_point(c) ? utf8_verdict::valid
                                                           : utf8_verdict::invalid;
  }
  // Missing trailing bytes: the code points reachable form [lo, hi]; some must be valid.
  const char32_t lo = std::max(code_point(s, len, 0x80), min_code_point[len]);
  const char32_t hi = std::min<char32_t>(code_point(s, len, 0xBF), 0x10FFFF);
  if (lo > hi) return utf8_verdict::invalid;
  if (lo >= 0xD800 && hi <= 0xDFFF) return utf8_verdict::invalid;
  return utf8_verdict::incomplete;
}

bool is_valid_utf8(std::string_view s) {
  while (!s.empty()) {
    int len = 0;
    if (classify_utf8(s, len) != utf8_verdict::valid) return false;
    s.remove_prefix(static_cast<std::size_t>(len));
  }
  return true;
}

}  // namespace dynllava::llava::detail

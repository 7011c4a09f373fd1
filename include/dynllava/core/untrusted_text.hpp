// SPDX-License-Identifier: Apache-2.0
/// @file untrusted_text.hpp
/// @brief Prints strings read from files (tensor names, dtypes, metadata keys, file names) safely
/// in error messages: quoted, escaped and length-capped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dynllava {

/// Bytes of an untrusted string printed before it is cut (see quote_untrusted).
inline constexpr std::size_t untrusted_print_limit = 200;

namespace detail {

/// Length of the well-formed UTF-8 sequence starting at `s[i]` (no overlongs, no surrogates,
/// at most U+10FFFF), or 0 when the bytes there are not one.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) noexcept {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const auto cont = [&](std::size_t k) { return i + k < s.size() && (b(k) & 0xc0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xe0 && b(1) < 0xa0) return 0;   // overlong
    if (c == 0xed && b(1) >= 0xa0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xf0 && b(1) < 0x90) return 0;   // overlong
    if (c == 0xf4 && b(1) >= 0x90) return 0;  // beyond U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace detail

/// @brief Appends `s` to `out` escaped as `quote_untrusted` does (without the quotes), stopping
/// at a character boundary once `max_bytes` bytes of `s` were used. @return bytes of `s` used.
inline std::size_t append_untrusted(std::string& out, std::string_view s, std::size_t max_bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::size_t i = 0;
  while (i < s.size() && i < max_bytes) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = detail::utf8_sequence(s, i);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (n == 0 || c < 0x20 || c == 0x7f) {  // not UTF-8, C0 control, DEL
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else if (c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0) {  // C1 control
      out += "\\xc2\\x";
      out += hex[static_cast<unsigned char>(s[i + 1]) >> 4];
      out += hex[static_cast<unsigned char>(s[i + 1]) & 0xf];
      i += 2;
      continue;
    } else {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return i;
}

/// @brief `s` in double quotes with `"` and `\` backslash-escaped, control characters (C0 with
/// NUL, DEL, C1) and bytes that are not well-formed UTF-8 written as `\xNN`; well-formed UTF-8
/// is kept. Strings longer than `max_bytes` bytes are cut at a character boundary and marked:
/// `"first 200 bytes"...(N bytes)`. For names, keys, values and paths from untrusted files inside
/// error messages: an embedded NUL or control character cannot cut or forge the message.
inline std::string quote_untrusted(std::string_view s,
                                   std::size_t max_bytes = untrusted_print_limit) {
  std::string out = "\"";
  const std::size_t used = append_untrusted(out, s, max_bytes);
  out += '"';
  if (used < s.size()) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

}  // namespace dynllava

// SPDX-License-Identifier: Apache-2.0
/// @file text_stream.cpp
/// @brief The streaming decoder, with SentencePiece's UTF-8 rules for byte pieces.
#include "text_stream.hpp"

#include <dynllava/core/error.hpp>

#include <algorithm>
#include <string_view>

namespace dynllava::llava {
namespace {

constexpr std::string_view replacement = "\xEF\xBF\xBD";   // U+FFFD
constexpr std::string_view space_symbol = "\xE2\x96\x81";  // "▁"

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

enum class verdict { valid, invalid, incomplete };

/// SentencePiece's `IsValidDecodeUTF8` at the start of `s` (the character is `len` bytes when
/// valid), or `incomplete` when `s` is a proper prefix of some valid character.
verdict classify(std::string_view s, int& len) {
  const auto lead = static_cast<unsigned char>(s[0]);
  len = announced_length(lead);
  if (len == 1) return verdict::valid;
  if (len == 0) return verdict::invalid;
  const int have = std::min<int>(len, static_cast<int>(s.size()));
  for (int i = 1; i < have; ++i) {
    if (!is_trail(static_cast<unsigned char>(s[static_cast<std::size_t>(i)]))) {
      return verdict::invalid;
    }
  }
  if (have == len) {
    const char32_t c = code_point(s, len, 0);
    // A literal U+FFFD counts as valid, as in SentencePiece.
    return c >= min_code_point[len] && valid_code_point(c) ? verdict::valid : verdict::invalid;
  }
  // Missing trailing bytes: the code points reachable form [lo, hi]; some must be valid.
  const char32_t lo = std::max(code_point(s, len, 0x80), min_code_point[len]);
  const char32_t hi = std::min<char32_t>(code_point(s, len, 0xBF), 0x10FFFF);
  if (lo > hi) return verdict::invalid;
  if (lo >= 0xD800 && hi <= 0xDFFF) return verdict::invalid;
  return verdict::incomplete;
}

}  // namespace

void text_stream::drain(std::string& out, bool run_ends) {
  std::size_t pos = 0;
  while (pos < held_.size()) {
    int len = 0;
    const auto v = classify(std::string_view(held_).substr(pos), len);
    if (v == verdict::incomplete && !run_ends) break;
    if (v == verdict::valid) {
      out.append(held_, pos, static_cast<std::size_t>(len));
      pos += static_cast<std::size_t>(len);
    } else {
      out += replacement;
      pos += 1;
    }
  }
  held_.erase(0, pos);
}

std::string text_stream::push(std::int32_t id) {
  DYNLLAVA_EXPECTS(!ended_, "text_stream::push: id {} after EOS", id);
  const token_kind kind = tok_->kind(id);  // checks the range
  std::string out;
  if (id == tok_->eos_id()) {
    drain(out, true);
    ended_ = true;
  } else if (kind == token_kind::byte) {
    held_.push_back(static_cast<char>(tok_->byte_value(id)));
    drain(out, false);
  } else if (kind != token_kind::control && kind != token_kind::unknown) {
    drain(out, true);  // a text piece ends the run of byte pieces
    emitted_ = emitted_ || !out.empty();
    if (start_ws_seen_ || emitted_) at_start_ = false;
    std::string_view piece = tok_->piece(id);
    start_ws_seen_ = false;
    if (at_start_ && tok_->adds_dummy_prefix() && piece.starts_with(space_symbol)) {
      piece.remove_prefix(space_symbol.size());
      start_ws_seen_ = true;
    }
    while (!piece.empty()) {
      const auto at = piece.find(space_symbol);
      out.append(piece.substr(0, at));
      if (at == std::string_view::npos) break;
      out.push_back(' ');
      piece.remove_prefix(at + space_symbol.size());
    }
  }
  emitted_ = emitted_ || !out.empty();
  return out;
}

std::string text_stream::finish() {
  std::string out;
  drain(out, true);
  emitted_ = emitted_ || !out.empty();
  return out;
}

}  // namespace dynllava::llava

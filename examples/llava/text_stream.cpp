// SPDX-License-Identifier: Apache-2.0
/// @file text_stream.cpp
/// @brief The streaming decoder, with SentencePiece's UTF-8 rules for byte pieces.
#include "text_stream.hpp"

#include <dynllava/core/error.hpp>

#include "utf8.hpp"

#include <algorithm>
#include <string_view>

namespace dynllava::llava {
namespace {

constexpr std::string_view replacement = "\xEF\xBF\xBD";   // U+FFFD
constexpr std::string_view space_symbol = "\xE2\x96\x81";  // "▁"

}  // namespace

void text_stream::drain(std::string& out, bool run_ends) {
  std::size_t pos = 0;
  while (pos < held_.size()) {
    int len = 0;
    const auto v = detail::classify_utf8(std::string_view(held_).substr(pos), len);
    if (v == detail::utf8_verdict::incomplete && !run_ends) break;
    if (v == detail::utf8_verdict::valid) {
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

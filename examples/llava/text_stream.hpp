// SPDX-License-Identifier: Apache-2.0
/// @file text_stream.hpp
/// @brief Streaming detokenisation: generated ids in, complete UTF-8 text out.
#pragma once

#include "tokenizer.hpp"

#include <cstdint>
#include <string>

namespace dynllava::llava {

/// Turns generated ids into text as they come, emitting only complete UTF-8 characters.
///
/// The concatenation of everything `push` and `finish` return equals SentencePiece's decoding
/// of the ids up to EOS with the special ids left out (what LLaVA prints with
/// `skip_special_tokens=True`): "▁" becomes a space, the leading "▁" of the first piece is
/// dropped (the dummy prefix), byte pieces `<0xNN>` are gathered until they complete a
/// character, and bytes that cannot be part of a valid UTF-8 character become U+FFFD, one per
/// byte, as soon as that is certain (never dropped). Control pieces other than EOS (BOS) and the
/// unknown piece produce no text and do not interrupt a run of byte pieces. EOS ends the stream.
/// Holds a reference to `tok`, which must outlive it.
class text_stream {
 public:
  explicit text_stream(const tokenizer& tok) noexcept : tok_(&tok) {}

  /// Feeds one generated id; returns the text it completes (often empty for a byte piece).
  /// EOS flushes what is held and ends the stream.
  /// @throws dynllava::error for an id outside the vocabulary or a push after EOS.
  std::string push(std::int32_t id);
  /// Ends the stream without EOS (e.g. at the token limit): held bytes become U+FFFD.
  std::string finish();
  /// Whether EOS was pushed.
  [[nodiscard]] bool ended() const noexcept { return ended_; }

 private:
  /// Emits the complete characters of `held_` (all of them, invalid ones as U+FFFD, when
  /// `run_ends`), keeping a possible prefix of a valid character otherwise.
  void drain(std::string& out, bool run_ends);

  const tokenizer* tok_;
  std::string held_;            // bytes of the current run of byte pieces not yet emitted
  bool at_start_ = true;        // SentencePiece's is_bos_ws
  bool start_ws_seen_ = false;  // the previous piece gave up its leading "▁"
  bool emitted_ = false;        // any text emitted so far
  bool ended_ = false;
};

}  // namespace dynllava::llava

// SPDX-License-Identifier: Apache-2.0
/// @file answer_stream.hpp
/// @brief `answer_stream`: one answer's generated ids turned into text as they come, written
/// to a stream (flushed per token) when one is given, and kept per token for the Figure-6 view.
#pragma once

#include "text_stream.hpp"
#include "tokenizer.hpp"

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace dynllava::llava {

class answer_stream {
 public:
  /// @param out where the text goes as it completes (not owned; null: only collected)
  answer_stream(const tokenizer& tok, std::ostream* out) : tok_(&tok), text_(tok), out_(out) {}

  /// Feeds one generated id (ids after EOS are ignored; an id beyond the tokenizer's vocabulary
  /// gives no text).
  void push(std::int32_t id);
  /// Ends the answer (held bytes of an unfinished character become U+FFFD).
  void finish();

  /// The whole answer so far.
  [[nodiscard]] const std::string& text() const noexcept { return answer_; }
  /// The text each pushed id completed, `[ids]` (the last gets what `finish` flushed).
  [[nodiscard]] const std::vector<std::string>& pieces() const noexcept { return pieces_; }

 private:
  void emit(const std::string& s);

  const tokenizer* tok_;
  text_stream text_;
  std::ostream* out_;
  std::string answer_;
  std::vector<std::string> pieces_;
};

}  // namespace dynllava::llava

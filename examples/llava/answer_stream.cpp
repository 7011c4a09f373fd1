// SPDX-License-Identifier: Apache-2.0
#include "answer_stream.hpp"

namespace dynllava::llava {

void answer_stream::push(std::int32_t id) {
  if (text_.ended()) return;
  if (id < 0 || id >= tok_->vocab_size()) {
    // The model's vocabulary may be padded beyond the tokenizer's (LLaVA checkpoints often
    // are): such an id has no text.
    pieces_.emplace_back();
    return;
  }
  pieces_.push_back(text_.push(id));
  emit(pieces_.back());
}

void answer_stream::finish() {
  if (text_.ended()) return;
  const std::string rest = text_.finish();
  if (!pieces_.empty()) pieces_.back() += rest;  // nothing is held before the first id
  emit(rest);
}

void answer_stream::emit(const std::string& s) {
  answer_ += s;
  if (out_ != nullptr && !s.empty()) {
    // A sampled token may decode to control bytes (NUL, ESC, ...): the terminal gets them
    // visible as \xNN, never raw; line breaks and tabs pass. `answer()` keeps the text as is.
    std::string shown;
    for (const char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) {
        constexpr char hex[] = "0123456789abcdef";
        shown += "\\x";
        shown += hex[u >> 4];
        shown += hex[u & 15];
      } else {
        shown += c;
      }
    }
    *out_ << shown;
    out_->flush();
  }
}

}  // namespace dynllava::llava

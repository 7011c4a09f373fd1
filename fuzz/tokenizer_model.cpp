// SPDX-License-Identifier: Apache-2.0
/// @file tokenizer_model.cpp
/// @brief libFuzzer target: bytes as a SentencePiece `tokenizer.model`.
///
/// Every input must either load or fail with `dynllava::error`; a model that loads must encode,
/// tokenise a LLaVA prompt, decode and stream it without crashing, and the stream must emit
/// whole UTF-8 that adds up to SentencePiece's decoding (a trap otherwise).
#include <dynllava/core/error.hpp>

#include "check_message.hpp"

#include <conversation.hpp>
#include <cstddef>
#include <cstdint>
#include <prompt_tokens.hpp>
#include <string>
#include <string_view>
#include <text_stream.hpp>
#include <tokenizer.hpp>
#include <utf8.hpp>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dynllava::llava;
  try {
    const auto tok =
        tokenizer::from_memory(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    conversation conv;
    conv.add_user("What is in the image? Café 🙂 12", 1);
    conv.add_assistant("A bus.");
    conv.add_user("  and\nthen ");
    const auto ids = tokenize_prompt(tok, conv.prompt());
    std::vector<std::int32_t> text_ids;
    for (auto id : ids) {
      if (id >= 0) text_ids.push_back(id);
    }
    (void)tok.decode(text_ids);
    // The stream emits whole UTF-8 only, and all of it is SentencePiece's decoding of the ids
    // without special pieces.
    std::vector<std::int32_t> kept;
    for (auto id : text_ids) {
      const auto k = tok.kind(id);
      if (k != token_kind::control && k != token_kind::unknown) kept.push_back(id);
    }
    text_stream stream(tok);
    std::string streamed;
    for (auto id : kept) {
      const auto chunk = stream.push(id);
      if (!detail::is_valid_utf8(chunk)) __builtin_trap();
      streamed += chunk;
    }
    const auto rest = stream.finish();
    if (!detail::is_valid_utf8(rest)) __builtin_trap();
    if (streamed + rest != tok.decode(kept)) __builtin_trap();
  } catch (const dynllava::error& e) {
    dynllava::fuzz::check_message(e.what());
    // A clear error is the expected outcome for a malformed model.
  }
  return 0;
}

// SPDX-License-Identifier: Apache-2.0
/// @file tokenizer_model.cpp
/// @brief libFuzzer target: bytes as a SentencePiece `tokenizer.model`.
///
/// Every input must either load or fail with `dynllava::error`; a model that loads must encode,
/// tokenise a LLaVA prompt, decode and stream without crashing.
#include <dynllava/core/error.hpp>

#include <conversation.hpp>
#include <cstddef>
#include <cstdint>
#include <prompt_tokens.hpp>
#include <string_view>
#include <text_stream.hpp>
#include <tokenizer.hpp>

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
    text_stream stream(tok);
    for (auto id : text_ids) {
      if (stream.ended()) break;
      (void)stream.push(id);
    }
    (void)stream.finish();
  } catch (const dynllava::error&) {
    // A clear error is the expected outcome for a malformed model.
  }
  return 0;
}

// SPDX-License-Identifier: Apache-2.0
/// @file test_text_stream.cpp
/// @brief Streaming decoding equals SentencePiece's decoding and emits only whole characters.
#include <dynllava/core/error.hpp>

#include "llava_test_support.hpp"

#include <doctest/doctest.h>

#include <random>
#include <text_stream.hpp>

using namespace dynllava::llava;
using dynllava::llava::test::is_utf8;
using dynllava::llava::test::reference;
using dynllava::llava::test::tiny_tokenizer;

namespace {

std::int32_t byte_id(std::uint8_t b) {
  return *tiny_tokenizer().find_piece(fmt::format("<0x{:02X}>", b));
}

/// Streams `ids`, checking every returned chunk is whole UTF-8; returns the whole text.
std::string stream(const std::vector<std::int32_t>& ids, bool finish = true) {
  text_stream s(tiny_tokenizer());
  std::string text;
  for (auto id : ids) {
    if (s.ended()) break;
    const auto chunk = s.push(id);
    CHECK(is_utf8(chunk));
    text += chunk;
  }
  if (finish && !s.ended()) text += s.finish();
  return text;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("text_stream: the reference decodings, one id at a time") {
    for (const auto& c : reference()["decode"]) {
      CHECK(stream(c["ids"].get<std::vector<std::int32_t>>()) == c["text"].get<std::string>());
    }
  }

  TEST_CASE("text_stream: a character split over byte pieces appears when complete") {
    text_stream s(tiny_tokenizer());
    CHECK(s.push(*tiny_tokenizer().find_piece("\xE2\x96\x81The")) == "The");  // leading ▁ dropped
    CHECK(s.push(*tiny_tokenizer().find_piece("\xE2\x96\x81")) == " ");
    CHECK(s.push(byte_id(0xF0)).empty());
    CHECK(s.push(byte_id(0x9F)).empty());
    CHECK(s.push(byte_id(0x9A)).empty());
    CHECK(s.push(byte_id(0x8C)) == "\xF0\x9F\x9A\x8C");  // U+1F68C bus
    CHECK(s.push(1).empty());                            // BOS: no text
    CHECK(s.push(0).empty());                            // unknown: skipped as LLaVA does
    CHECK(s.push(2).empty());                            // EOS
    CHECK(s.ended());
    CHECK_THROWS_WITH_AS(s.push(5), doctest::Contains("after EOS"), dynllava::error);
  }

  TEST_CASE("text_stream: invalid bytes become U+FFFD, one per byte, never dropped") {
    const std::string fffd = "\xEF\xBF\xBD";
    text_stream s(tiny_tokenizer());
    CHECK(s.push(byte_id(0x80)) == fffd);  // a lone trail byte is invalid at once
    CHECK(s.push(byte_id(0xE4)).empty());
    CHECK(s.push(byte_id(0x41)) == fffd + "A");  // the lead byte fails when 'A' arrives
    CHECK(s.push(byte_id(0xED)).empty());
    CHECK(s.push(byte_id(0xA0)) == fffd + fffd);  // a surrogate can never complete
    CHECK(s.push(byte_id(0xE4)).empty());
    CHECK(s.push(byte_id(0xB8)).empty());
    CHECK(s.finish() == fffd + fffd);                                 // cut short at the end
    CHECK(stream({byte_id(0xF0), byte_id(0x9F), 2}) == fffd + fffd);  // EOS flushes
    CHECK(stream({byte_id(0xC3), *tiny_tokenizer().find_piece("\xE2\x96\x81The")}) ==
          fffd + " The");
    CHECK_THROWS_AS(text_stream(tiny_tokenizer()).push(500), dynllava::error);
  }

  TEST_CASE("text_stream: random id sequences equal SentencePiece's decoding") {
    const auto& tok = tiny_tokenizer();
    std::mt19937 rng(7);
    std::uniform_int_distribution<std::int32_t> any(0, tok.vocab_size() - 1);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_int_distribution<int> coin(0, 9);
    // Bytes of real multi-byte characters, so that many runs complete.
    const std::string utf8 = "é東🙂\xEF\xBF\xBD";
    for (int trial = 0; trial < 2000; ++trial) {
      std::vector<std::int32_t> ids;
      const int n = 1 + trial % 24;
      for (int i = 0; i < n; ++i) {
        const int c = coin(rng);
        if (c < 4) {
          ids.push_back(any(rng));
        } else if (c < 6) {
          ids.push_back(byte_id(static_cast<std::uint8_t>(byte(rng))));
        } else {
          const auto start = static_cast<std::size_t>(byte(rng)) % utf8.size();
          for (std::size_t k = start; k < utf8.size() && k < start + 4; ++k) {
            ids.push_back(byte_id(static_cast<std::uint8_t>(utf8[k])));
          }
        }
      }
      // What LLaVA prints: up to EOS, special ids left out, then SentencePiece's decoding.
      std::vector<std::int32_t> kept;
      for (auto id : ids) {
        if (id == tok.eos_id()) break;
        const auto k = tok.kind(id);
        if (k != token_kind::control && k != token_kind::unknown) kept.push_back(id);
      }
      CAPTURE(ids);
      CHECK(stream(ids) == tok.decode(kept));
    }
  }
}

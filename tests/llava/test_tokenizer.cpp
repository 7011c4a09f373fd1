// SPDX-License-Identifier: Apache-2.0
/// @file test_tokenizer.cpp
/// @brief The SentencePiece wrapper against python sentencepiece, and its errors.
#include <dynllava/core/error.hpp>

#include "llava_test_support.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <text_stream.hpp>

namespace fs = std::filesystem;
using namespace dynllava::llava;
using dynllava::llava::test::fixture;
using dynllava::llava::test::reference;
using dynllava::llava::test::tiny_legacy_tokenizer;
using dynllava::llava::test::tiny_tokenizer;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The message of the dynllava::error `f` throws ("" when it throws nothing).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dynllava::error& e) {
    return e.what();
  }
  return "";
}

/// A scratch folder of this test, removed at the end.
struct scratch {
  fs::path dir = fs::temp_directory_path() /
                 ("dynllava_tok_" + std::to_string(reinterpret_cast<std::uintptr_t>(this)));
  scratch() { fs::create_directories(dir); }
  ~scratch() { fs::remove_all(dir); }
  fs::path write(const std::string& name, const std::string& bytes) const {
    std::ofstream(dir / name, std::ios::binary) << bytes;
    return dir / name;
  }
};

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("tokenizer: the tiny model follows LLaMA's conventions") {
    const auto& tok = tiny_tokenizer();
    CHECK(tok.vocab_size() == reference()["vocab_size"].get<int>());
    CHECK(tok.vocab_size() == 500);
    CHECK(tok.bos_id() == 1);
    CHECK(tok.eos_id() == 2);
    CHECK(tok.unk_id() == 0);
    CHECK(tok.adds_dummy_prefix());
    CHECK(tok.piece(1) == "<s>");
    CHECK(tok.piece(2) == "</s>");
    CHECK(tok.kind(0) == token_kind::unknown);
    CHECK(tok.kind(2) == token_kind::control);
    const auto newline = tok.find_piece("<0x0A>");
    REQUIRE(newline.has_value());
    CHECK(*newline == 13);
    CHECK(tok.kind(*newline) == token_kind::byte);
    CHECK(tok.byte_value(*newline) == 0x0A);
    CHECK_FALSE(tok.find_piece("no such piece").has_value());
    CHECK_THROWS_AS((void)tok.piece(500), dynllava::error);
    CHECK_THROWS_AS((void)tok.kind(-1), dynllava::error);
    CHECK_THROWS_AS((void)tok.byte_value(2), dynllava::error);
  }

  TEST_CASE("tokenizer: encode and decode match python sentencepiece") {
    const auto& tok = tiny_tokenizer();
    for (const auto& c : reference()["encode"]) {
      const auto text = c["text"].get<std::string>();
      CAPTURE(text);
      CHECK(tok.encode(text) == c["ids"].get<std::vector<std::int32_t>>());
      CHECK(tok.encode_with_special_tokens(text) ==
            c["with_special_tokens"].get<std::vector<std::int32_t>>());
      CHECK(tiny_legacy_tokenizer().encode_with_special_tokens(text) ==
            c["with_special_tokens_legacy"].get<std::vector<std::int32_t>>());
    }
    for (const auto& c : reference()["decode"]) {
      const auto ids = c["ids"].get<std::vector<std::int32_t>>();
      CHECK(tok.decode(ids) == c["text"].get<std::string>());
    }
    const std::vector<std::int32_t> bad{5, 500};
    CHECK(error_of([&] { (void)tok.decode(bad); }).find("id 500 is outside the vocabulary") !=
          std::string::npos);
  }

  TEST_CASE("tokenizer: special pieces in text are ids only through encode_with_special_tokens") {
    const auto& tok = tiny_tokenizer();
    const auto plain = tok.encode("A</s>B");
    CHECK(std::find(plain.begin(), plain.end(), 2) == plain.end());
    // legacy: the text after a special piece gets its own dummy prefix; not legacy: it does not.
    const auto special = tiny_legacy_tokenizer().encode_with_special_tokens("A</s>B");
    auto expected = tok.encode("A");
    expected.push_back(2);
    const auto b = tok.encode("B");
    expected.insert(expected.end(), b.begin(), b.end());
    CHECK(special == expected);
    const auto plain_b = tok.encode_with_special_tokens("A</s>B");
    REQUIRE(plain_b.size() == tok.encode("A").size() + 2);
    CHECK(!tok.piece(plain_b.back()).starts_with("\xE2\x96\x81"));  // no "▁"
    CHECK(tok.legacy() == false);
    CHECK(tiny_legacy_tokenizer().legacy() == true);
    CHECK(tok.encode_with_special_tokens("<s></s><unk>") == std::vector<std::int32_t>{1, 2, 0});
  }

  TEST_CASE("tokenizer: from_memory equals load") {
    const auto bytes = read_all(fixture("tokenizer.model"));
    const auto tok = tokenizer::from_memory(bytes, "memory");
    CHECK(tok.encode("The quick brown fox") == tiny_tokenizer().encode("The quick brown fox"));
  }

  TEST_CASE("tokenizer: special ids can be given, and must be control pieces") {
    const auto bytes = read_all(fixture("tokenizer.model"));
    tokenizer_options swap;
    swap.bos_id = 2;
    swap.eos_id = 1;
    const auto swapped = tokenizer::from_memory(bytes, "m", swap);
    CHECK(swapped.bos_id() == 2);
    CHECK(swapped.eos_id() == 1);
    tokenizer_options eos13;
    eos13.eos_id = 13;
    const auto msg = error_of([&] { (void)tokenizer::from_memory(bytes, "m.model", eos13); });
    CHECK(msg.find("m.model") != std::string::npos);
    CHECK(msg.find("EOS id 13 (piece \"<0x0A>\") is not a control piece") != std::string::npos);
    tokenizer_options bos500;
    bos500.bos_id = 500;
    CHECK(error_of([&] {
            (void)tokenizer::from_memory(bytes, "m", bos500);
          }).find("BOS id 500 is outside the vocabulary [0, 500) (given by the caller)") !=
          std::string::npos);
  }

  TEST_CASE("tokenizer: the normaliser settings are checked or followed") {
    const auto good = read_all(fixture("tokenizer.model"));
    // normalizer_spec.remove_extra_whitespaces = true: "a  b" would come back as "a b".
    CHECK(error_of([&] {
            (void)tokenizer::from_memory(good + std::string("\x1a\x02\x20\x01", 4), "ws.model");
          }).find("ws.model\": the model does not give text back unchanged") != std::string::npos);
    // normalizer_spec.add_dummy_prefix = false: no "▁" in front, and none dropped when decoding.
    const auto plain =
        tokenizer::from_memory(good + std::string("\x1a\x02\x18\x00", 4), "no-prefix.model");
    CHECK_FALSE(plain.adds_dummy_prefix());
    CHECK(plain.decode(plain.encode(" x")) == " x");
    text_stream stream(plain);
    std::string streamed;
    for (auto id : plain.encode(" x")) streamed += stream.push(id);
    CHECK(streamed == " x");
  }

  TEST_CASE("tokenizer: malformed files are errors naming the file") {
    scratch s;
    const auto good = read_all(fixture("tokenizer.model"));
    struct bad_case {
      const char* what;
      fs::path path;
      const char* expect;
    };
    const bad_case cases[] = {
        {"missing", s.dir / "absent.model", "no such file"},
        {"directory", s.dir, "is a directory"},
        {"empty", s.write("empty.model", ""), "the file is empty"},
        {"garbage", s.write("garbage.model", "this is not a protobuf \xff\xff\xff\xff"),
         "not a SentencePiece model"},
        {"truncated", s.write("truncated.model", good.substr(0, good.size() / 2)),
         "not a SentencePiece model"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.what);
      const auto msg = error_of([&] { (void)tokenizer::load(c.path); });
      CHECK(msg.find(c.path.string()) != std::string::npos);
      CHECK(msg.find(c.expect) != std::string::npos);
    }
    // Framing errors found before SentencePiece parses the bytes, with the offset.
    const auto n = good.size();
    struct framing_case {
      std::string bytes;
      std::string expect;
    };
    const framing_case framing[] = {
        {good + std::string("\x1a\x06\x12\x04"
                            "abcd",
                            8),
         fmt::format("normaliser table (precompiled_charsmap, 4 bytes at byte {})", n + 2)},
        {good + std::string("\x2a\x03\x12\x01"
                            "x",
                            5),
         "denormaliser table"},
        {good + "\x1a\x10", fmt::format("field 3 at byte {} claims 16 bytes, 0 remain", n)},
        {good + "\x0b", fmt::format("field 1 at byte {} has wire type 3", n)},
        {good + "\x80", fmt::format("the field tag at byte {} is cut off", n + 1)},
        {good + "\x18\x01", fmt::format("field 3 at byte {} is not a message", n)},
        // Pieces SentencePiece's trie would abort the process on.
        {good + std::string("\x0a\x03\x0a\x01\x00", 5),
         fmt::format("piece 500 (at byte {}) contains a NUL byte", n)},
        {good + std::string("\x0a\x02\x0a\x00", 4), "piece 500 (at byte"},  // empty string
        {good + std::string("\x0a\x02\x0a\x00", 4), "is empty"},
        {good + "\x0a\x02\x18\x01", fmt::format("piece 500 (at byte {}) is empty", n)},
        {good + "\x0a\x05\x0a\x03<s>",
         fmt::format("piece 500 (at byte {}) repeats an earlier piece", n)},
        {good + "\x0a\x02\x08\x01", fmt::format("piece 500 at byte {} is not a string", n + 2)},
    };
    for (const auto& c : framing) {
      CAPTURE(c.expect);
      const auto msg = error_of([&] { (void)tokenizer::from_memory(c.bytes, "framed.model"); });
      CHECK(msg.find("framed.model") != std::string::npos);
      CHECK(msg.find(c.expect) != std::string::npos);
    }
    // A text piece that is not UTF-8 (the stream would pass it on as it is).
    CHECK(error_of([&] {
            (void)tokenizer::from_memory(good + std::string("\x0a\x04\x0a\x02\xff\xfe", 6),
                                         "u.model");
          }).find("u.model\": piece 500 (\"\\xff\\xfe\") is not valid UTF-8") != std::string::npos);
    // Unknown fields are skipped, as protobuf does.
    CHECK_NOTHROW((void)tokenizer::from_memory(good + "\x30\x05", "unknown-field.model"));

    tokenizer_options small;
    small.max_bytes = 1000;
    const auto big = error_of([&] { (void)tokenizer::load(fixture("tokenizer.model"), small); });
    CHECK(big.find("more than the limit of 1000 bytes") != std::string::npos);
    tokenizer_options few;
    few.max_pieces = 100;
    CHECK(error_of([&] {
            (void)tokenizer::from_memory(good, "few.model", few);
          }).find("few.model\": more than 100 pieces") != std::string::npos);
  }
}

// SPDX-License-Identifier: Apache-2.0
/// @file test_prompt.cpp
/// @brief vicuna_v1 prompts and LLaVA's tokenizer_image_token against the Python reference.
#include <dynllava/core/error.hpp>

#include "llava_test_support.hpp"

#include <doctest/doctest.h>

#include <conversation.hpp>
#include <prompt_tokens.hpp>

using namespace dynllava::llava;
using dynllava::llava::test::reference;
using dynllava::llava::test::tiny_tokenizer;

namespace {

conversation from_reference(const nlohmann::json& c) {
  conversation conv;
  const auto turns = c["turns"].get<std::vector<std::string>>();
  for (std::size_t i = 0; i < turns.size(); ++i) {
    if (i % 2 == 0) {
      conv.add_user(turns[i], i == 0 ? c["images"].get<int>() : 0);
    } else {
      conv.add_assistant(turns[i]);
    }
  }
  return conv;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("vicuna_v1: the prompts of the released template") {
    conversation conv;
    conv.add_user("What is shown?", 1);
    CHECK(conv.prompt() ==
          "A chat between a curious user and an artificial intelligence assistant. The assistant "
          "gives helpful, detailed, and polite answers to the user's questions. USER: "
          "<image>\nWhat is shown? ASSISTANT:");
    conv.add_assistant("A bus.");
    conv.add_user("And its colour?");
    const std::string prompt = conv.prompt();
    CHECK(
        prompt.ends_with(" USER: <image>\nWhat is shown? ASSISTANT: A bus.</s>USER: And its "
                         "colour? ASSISTANT:"));
    CHECK(conv.images() == 1);
    CHECK(conv.turns() == 3);
    for (const auto& c : reference()["prompts"]) {
      CAPTURE(c["name"].get<std::string>());
      CHECK(from_reference(c).prompt() == c["prompt"].get<std::string>());
    }
  }

  TEST_CASE("vicuna_v1: misuse is an error") {
    conversation conv;
    CHECK_THROWS_WITH_AS((void)conv.prompt(), doctest::Contains("must end with a user turn"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS(conv.add_assistant("x"), doctest::Contains("must be a user turn"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS(conv.add_user("look: <image>"), doctest::Contains("give images by count"),
                         dynllava::error);
    CHECK_THROWS_AS(conv.add_user("x", -1), dynllava::error);
    conv.add_user("q");
    CHECK_THROWS_WITH_AS(conv.add_user("again"), doctest::Contains("must be an assistant turn"),
                         dynllava::error);
    conv.add_assistant("a");
    CHECK_THROWS_AS((void)conv.prompt(), dynllava::error);
  }

  TEST_CASE("tokenize_prompt: LLaVA's tokenizer_image_token, exactly") {
    const auto& tok = tiny_tokenizer();
    const int image = reference()["image_token_index"].get<int>();
    CHECK(image == llava_image_token_id);
    for (const auto& c : reference()["prompts"]) {
      CAPTURE(c["name"].get<std::string>());
      const auto ids = tokenize_prompt(tok, c["prompt"].get<std::string>());
      CHECK(ids == c["ids"].get<std::vector<std::int32_t>>());
      CHECK(std::count(ids.begin(), ids.end(), image) == c["images"].get<int>());
    }
  }

  TEST_CASE("tokenize_prompt: the subtleties") {
    const auto& tok = tiny_tokenizer();
    conversation conv;
    conv.add_user("Hi", 1);
    conv.add_assistant("Yes");
    conv.add_user("Why");
    const auto ids = tokenize_prompt(tok, conv.prompt());
    // One BOS, at the front.
    CHECK(ids.front() == 1);
    CHECK(std::count(ids.begin(), ids.end(), 1) == 1);
    // The earlier answer's "</s>" is the EOS id, followed by "▁USER" (a fresh dummy prefix).
    const auto eos = std::find(ids.begin(), ids.end(), 2);
    REQUIRE(eos != ids.end());
    const auto user = tok.encode("USER");
    CHECK(std::equal(user.begin(), user.end(), eos + 1));
    // After the image: "▁" then the newline byte piece.
    const auto img = std::find(ids.begin(), ids.end(), llava_image_token_id);
    REQUIRE(img != ids.end());
    CHECK(tok.piece(*(img + 1)) == "\xE2\x96\x81");
    CHECK(tok.piece(*(img + 2)) == "<0x0A>");
    // A Hugging Face layout's vocabulary id gives the same sequence with that id.
    auto hf = tokenize_prompt(tok, conv.prompt(), 32000);
    std::replace(hf.begin(), hf.end(), 32000, llava_image_token_id);
    CHECK(hf == ids);
    CHECK_THROWS_WITH_AS((void)tokenize_prompt(tok, "x", 13),
                         doctest::Contains("image_token_id 13 is a piece of the vocabulary"),
                         dynllava::error);
    CHECK(tokenize_prompt(tok, "") == std::vector<std::int32_t>{1});
    CHECK(tokenize_prompt(tok, "<image>") == std::vector<std::int32_t>{1, llava_image_token_id});
  }

  TEST_CASE("expand_images: each placeholder becomes its rows, positions recorded") {
    const std::vector<std::int32_t> ids{1, 5, -200, 7, 8, -200, 9};
    const auto e = expand_images(ids, -200, 3);
    CHECK(e.ids == std::vector<std::int32_t>{1, 5, -200, -200, -200, 7, 8, -200, -200, -200, 9});
    CHECK(e.image_begin == std::vector<dynllava::index_t>{2, 7});
    CHECK(e.rows_per_image == 3);
    const auto none = expand_images(std::vector<std::int32_t>{1, 2}, -200, 576);
    CHECK(none.ids == std::vector<std::int32_t>{1, 2});
    CHECK(none.image_begin.empty());
    const auto real = expand_images(
        tokenize_prompt(tiny_tokenizer(), reference()["prompts"][0]["prompt"].get<std::string>()),
        -200, 576);
    REQUIRE(real.image_begin.size() == 1);
    CHECK(real.ids.size() == reference()["prompts"][0]["ids"].size() + 575);
    CHECK(std::count(real.ids.begin(), real.ids.end(), -200) == 576);
    CHECK(real.ids[static_cast<std::size_t>(real.image_begin[0]) - 1] != -200);
    CHECK_THROWS_AS((void)expand_images(ids, -200, 0), dynllava::error);
  }
}

// SPDX-License-Identifier: Apache-2.0
// The bundled tiny Dynamic-LLaVA (models/tiny-dynamic-llava) through the program's runner, as
// one ragged batch: its prompts tokenise to the trainer's ids, and greedy decoding with the KV
// cache gives the training script's PyTorch tokens (eval/greedy_reference.json), dense and
// Dynamic-LLaVA, with the same kept image rows. Fails when the weights and the reference
// disagree (e.g. weights retrained without rewriting the reference).
#ifdef DYNLLAVA_BUNDLED_MODEL

#include <dynllava/core/config.hpp>

#include "cli_options.hpp"
#include "request_runner.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ll = dynllava::llava;
namespace fs = std::filesystem;

namespace {

const fs::path model_dir = DYNLLAVA_BUNDLED_MODEL;

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), "cannot open " << p);
  return nlohmann::json::parse(f);
}

/// The first `n` lines of eval/heldout.jsonl.
std::vector<nlohmann::json> heldout(std::size_t n) {
  std::ifstream f(model_dir / "eval" / "heldout.jsonl");
  REQUIRE(f.good());
  std::vector<nlohmann::json> out;
  for (std::string line; out.size() < n && std::getline(f, line);)
    out.push_back(nlohmann::json::parse(line));
  REQUIRE(out.size() == n);
  return out;
}

std::vector<std::int32_t> kept_rows(const std::vector<std::uint8_t>& keep) {
  std::vector<std::int32_t> rows;
  for (std::size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] != 0) rows.push_back(static_cast<std::int32_t>(i));
  }
  return rows;
}

}  // namespace

TEST_SUITE("bundled model") {
  TEST_CASE("bundled model: the library's greedy tokens and kept rows equal PyTorch's") {
    const auto ref = read_json(model_dir / "eval" / "greedy_reference.json").at("questions");
    REQUIRE(ref.size() >= 12);
    const auto items = heldout(ref.size());
    const ll::loaded_model m = ll::load_model(model_dir, std::nullopt);
    std::vector<ll::prepared_request> batch;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      CAPTURE(i);
      REQUIRE(ref[i].at("id") == items[i].at("id"));
      REQUIRE(ref[i].at("question") == items[i].at("question"));
      const ll::request req{items[i].at("question").get<std::string>(),
                            {model_dir / "eval" / items[i].at("image").get<std::string>()}};
      batch.push_back(ll::prepare_request(m, req));
      // The program's vicuna_v1 prompt is the trainer's, id for id.
      CHECK(batch.back().ids == items[i].at("prompt_ids").get<std::vector<std::int64_t>>());
    }
    for (const auto mode : {ll::run_mode::dense, ll::run_mode::dynamic}) {
      const bool dynamic = mode == ll::run_mode::dynamic;
      CAPTURE(dynamic);
      ll::generation_settings s;
      s.mode = mode;
      s.kv_cache = true;
      s.max_new_tokens = 8;  // the reference's budget
      const ll::batch_result res = ll::run_batch(m, batch, s);
      REQUIRE(res.sequences.size() == ref.size());
      std::size_t exact = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        CAPTURE(i);
        const auto& r = res.sequences[i];
        CHECK(r.tokens ==
              ref[i].at(dynamic ? "dynamic" : "dense").get<std::vector<std::int32_t>>());
        if (dynamic) {
          CHECK(kept_rows(r.image_keep) ==
                ref[i].at("dynamic_kept_image_rows").get<std::vector<std::int32_t>>());
        }
        exact += r.tokens == items[i].at("answer_ids").get<std::vector<std::int32_t>>();
      }
      // A trained model, not noise: most of these answers are right.
      CHECK(exact * 4 >= ref.size() * 3);
    }
  }
}

#endif  // DYNLLAVA_BUNDLED_MODEL

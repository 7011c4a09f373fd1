// SPDX-License-Identifier: Apache-2.0
// The LLaVA model against transformers' LlavaForConditionalGeneration: the tiny random model of
// tests/fixtures/llava in every checkpoint layout (fp32, fp16, bf16; sharded or not; the tower
// inside or in its own folder) loads, gives the reference logits within 1e-4 of each row's
// largest logit and the same 32 greedy tokens through the library's KV-cache driver.
#include <dynllava/core/half.hpp>
#include <dynllava/dynllava.hpp>
#include <dynllava/io/load_llava.hpp>
#include <dynllava/model/llava_model.hpp>

#include "support/fixtures.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace dynllava;
using dynllava::test::fixture_dir;

namespace {

const nlohmann::json& reference() {
  static const nlohmann::json r = [] {
    std::ifstream in(fixture_dir() / "llava" / "reference.json");
    return nlohmann::json::parse(in);
  }();
  return r;
}

/// The reference's pixel values: `[3, 336, 336]` little-endian fp16, widened.
const std::vector<float>& pixels() {
  static const std::vector<float> px = dynllava::test::reference_pixels();
  return px;
}

/// Logits of every row of a one-sequence prompt, every layer run densely without a cache.
std::vector<float> dense_logits(const llava_model& m, const prompt_rows& p) {
  std::vector<float> h = p.rows;
  const auto n = static_cast<std::size_t>(p.row_indptr.back());
  const auto H = static_cast<std::size_t>(m.hidden());
  std::vector<index_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[i] = static_cast<index_t>(i);
  std::vector<float> k(n * H), v(n * H);
  for (index_t l = 0; l < m.layers(); ++l) {
    m.layer(host, l,
            host_ragged_rows<float>{make_host_span(p.row_indptr), make_host_span(h), m.hidden()},
            make_host_span(std::as_const(pos)), nullptr, make_host_span(k), make_host_span(v));
  }
  std::vector<float> out(n * static_cast<std::size_t>(m.vocab()));
  m.logits(host, make_host_span(std::as_const(h)), make_host_span(out));
  return out;
}

struct layout_case {
  const char* folder;
  llava_layout layout;
};

}  // namespace

TEST_SUITE("llava") {
  TEST_CASE("llava model: every checkpoint layout matches transformers' logits and greedy tokens") {
    const auto& ref = reference();
    const double tol = ref["tolerance"]["logits_relative_to_max_abs"].get<double>();
    // The folders hold the same values (each representable in every stored width), so every
    // layout's logits must equal the first one's exactly, case by case.
    std::map<std::string, std::vector<float>> first_logits;
    for (const layout_case lc :
         {layout_case{"original", llava_layout::original},
          layout_case{"original-separate-clip", llava_layout::original_separate_tower},
          layout_case{"hf-legacy", llava_layout::hf_legacy},
          layout_case{"hf", llava_layout::hf_legacy_flat_vision},
          layout_case{"hf-new-names", llava_layout::hf_current_flat_vision},
          layout_case{"hf-current", llava_layout::hf_current}}) {
      CAPTURE(lc.folder);
      const io::llava_folder f = io::load_llava(fixture_dir() / "llava" / lc.folder);
      CHECK(f.layout == lc.layout);
      const bool original =
          lc.layout == llava_layout::original || lc.layout == llava_layout::original_separate_tower;
      CHECK(f.config.image_token_id == (original ? -200 : 500));
      CHECK(f.image.has_value() == original);
      CHECK(f.output.has_value() == original);
      const llava_model& m = f.model;
      for (const auto& [name, c] : ref["cases"].items()) {
        CAPTURE(name);
        std::vector<std::int64_t> ids = c["prompt_ids"].get<std::vector<std::int64_t>>();
        for (auto& id : ids) id = id == -200 ? f.config.image_token_id : id;
        const std::vector<index_t> indptr = {0, static_cast<index_t>(ids.size())};
        const auto images = c["images"].get<std::size_t>();
        std::vector<float> px;
        for (std::size_t i = 0; i < images; ++i)
          px.insert(px.end(), pixels().begin(), pixels().end());
        const prompt_rows p = m.prompt({make_host_span(indptr), make_host_span(std::as_const(ids))},
                                       make_host_span(std::as_const(px)));
        REQUIRE(p.row_indptr.back() == static_cast<index_t>(c["input_ids"].size()));

        // Logits at the reference's positions.
        const std::vector<float> logits = dense_logits(m, p);
        const auto [seen, is_first] = first_logits.try_emplace(name, logits);
        if (!is_first) CHECK(logits == seen->second);
        const auto V = static_cast<std::size_t>(m.vocab());
        for (const auto& [where, row] : c["logits"].items()) {
          CAPTURE(where);
          const auto at = row["position"].get<std::size_t>();
          const auto want = row["values"].get<std::vector<float>>();
          REQUIRE(want.size() == V);
          float scale = 0.0f, err = 0.0f;
          for (std::size_t j = 0; j < V; ++j) {
            scale = std::max(scale, std::abs(want[j]));
            err = std::max(err, std::abs(logits[at * V + j] - want[j]));
          }
          CHECK(err <= tol * scale);
        }

        // 32 greedy tokens through the KV-cache driver, dense, EOS not stopping generation.
        const index_t width = m.config().text.heads * m.config().text.head_dim;
        paged_kv_cache cache({m.layers(), 1, width, 16, 4 * (p.row_indptr.back() / 16 + 4)});
        kv_session s(m, cache, full_cache_policy{}, nullptr, nullptr,
                     {.prune_images = false, .gate_outputs = false});
        const generation g = generate(s, p.view(), p.segment_view(),
                                      {.max_new_tokens = 32, .eos = std::nullopt, .sampling = {}});
        CHECK(g.tokens.front() == c["greedy_tokens"].get<std::vector<std::int32_t>>());
      }
    }
  }

  TEST_CASE(
      "llava model: without its tower folder a checkpoint is a clear error; given, it loads") {
    test::temp_dir d("llava-errors");
    const auto src = fixture_dir() / "llava" / "original-separate-clip";
    for (const char* file : {"config.json", "model.safetensors", "tokenizer.model"})
      std::filesystem::copy_file(src / file, d.path / file);
    // The config names the tower but the folder is not there: that folder is the error (not the
    // built-in ViT-L/14-336 sizes, which would disagree with the projector's input width).
    const std::string missing = (d.path / "clip-vit-large-patch14-336").string();
    const std::string absent = "the checkpoint holds no vision tower, and the CLIP folder \"" +
                               missing +
                               "\" that mm_vision_tower \"openai/clip-vit-large-patch14-336\" "
                               "names does not exist";
    CHECK_THROWS_WITH_AS(io::load_llava(d.path), doctest::Contains(absent.c_str()), error);
    // A folder without config.json.
    std::filesystem::create_directory(missing);
    const std::string named = missing + "\" that ";
    CHECK_THROWS_WITH_AS(io::load_llava(d.path), doctest::Contains(named.c_str()), error);
    CHECK_THROWS_WITH_AS(io::load_llava(d.path), doctest::Contains("names has no config.json"),
                         error);
    std::filesystem::remove(missing);
    // A tower folder without weights.
    test::temp_dir empty_tower("llava-empty-tower");
    std::filesystem::copy_file(src / "clip-vit-large-patch14-336" / "config.json",
                               empty_tower.path / "config.json");
    CHECK_THROWS_WITH_AS(io::load_llava(d.path, {.vision_tower = empty_tower.path}),
                         doctest::Contains("holds no .safetensors file"), error);
    // Only PyTorch's pickled weights: refused, and the message says why.
    test::write_file(empty_tower.path / "pytorch_model.bin", "not read");
    CHECK_THROWS_WITH_AS(io::load_llava(d.path, {.vision_tower = empty_tower.path}),
                         doctest::Contains("PyTorch .bin files are not read"), error);
    std::filesystem::remove(empty_tower.path / "pytorch_model.bin");
    // Given explicitly, it loads.
    const auto f = io::load_llava(d.path, {.vision_tower = src / "clip-vit-large-patch14-336"});
    CHECK(f.layout == llava_layout::original_separate_tower);
  }

  TEST_CASE(
      "llava model: a config that disagrees with the checkpoint, or asks for too much, is an "
      "error") {
    const auto src = fixture_dir() / "llava" / "hf";
    auto edited = [&](const char* name, auto&& edit) {
      auto d = std::make_unique<test::temp_dir>(name);
      for (const char* file : {"model.safetensors", "tokenizer.model"})
        std::filesystem::copy_file(src / file, d->path / file);
      std::ifstream in(src / "config.json");
      auto j = nlohmann::json::parse(in);
      edit(j);
      std::ofstream(d->path / "config.json") << j.dump();
      return d;
    };
    // One layer fewer than the checkpoint holds: the fourth layer's tensors are left over.
    const auto fewer =
        edited("llava-fewer", [](auto& j) { j["text_config"]["num_hidden_layers"] = 3; });
    CHECK_THROWS_WITH_AS(io::load_llava(fewer->path),
                         doctest::Contains("that the model config.json describes does not use"),
                         error);
    // Millions of layers are refused by the reader, before anything is allocated.
    const auto many =
        edited("llava-many", [](auto& j) { j["text_config"]["num_hidden_layers"] = 3000000; });
    CHECK_THROWS_WITH_AS(io::load_llava(many->path), doctest::Contains("num_hidden_layers"), error);
    const auto tower = edited(
        "llava-tower", [](auto& j) { j["vision_config"]["num_hidden_layers"] = 2147483647; });
    CHECK_THROWS_WITH_AS(io::load_llava(tower->path), doctest::Contains("num_hidden_layers"),
                         error);
    // A huge max_position_embeddings costs no memory up front (the RoPE table is bounded).
    const auto positions = edited("llava-positions", [](auto& j) {
      j["text_config"]["max_position_embeddings"] = 2147483647;
    });
    CHECK(io::load_llava(positions->path).config.text.max_positions == 2147483647);
  }
}

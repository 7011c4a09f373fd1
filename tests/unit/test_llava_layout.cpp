// SPDX-License-Identifier: Apache-2.0
// The LLaVA checkpoint layouts (model/llava_layout.hpp): detection from tensor names, and the
// name tables checked against the names transformers 5.24 really writes
// (tests/fixtures/configs/hf_*_names.txt, written by tools/llava_layout_names.py).
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/model/llava_layout.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using dynllava::llava_layout;
using dynllava::projector_type;

std::vector<std::string> read_names(const std::string& file) {
  std::ifstream in(fs::path(DYNLLAVA_FIXTURE_DIR) / "configs" / file);
  REQUIRE(in.good());
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

/// Replaces the prefix `from` by `to` in every name that starts with it.
std::vector<std::string> renamed(std::vector<std::string> names, const std::string& from,
                                 const std::string& to) {
  for (auto& n : names) {
    if (n.rfind(from, 0) == 0) n = to + n.substr(from.size());
  }
  return names;
}

std::vector<std::string> without_prefix(std::vector<std::string> names, const std::string& p) {
  names.erase(std::remove_if(names.begin(), names.end(),
                             [&](const std::string& n) { return n.rfind(p, 0) == 0; }),
              names.end());
  return names;
}

/// The canonical names of the tiny model of tools/llava_layout_names.py: LLaMA (2 layers) from
/// the decoder's tensor table, CLIP (2 layers) relative to `vision_model.`.
std::vector<std::string> canonical_llm() {
  dynllava::llama_config c{48, 2, 4, 96, 600};
  dynllava::llama_weights w;
  std::vector<std::string> names;
  // Whatever a table hands over (vectors, matrices), only the names are kept.
  dynllava::visit_tensors(
      w, c, [&](const dynllava::nn::tensor_spec& s, auto&) { names.push_back(s.name); });
  return names;
}

std::vector<std::string> canonical_clip(int layers) {
  std::vector<std::string> n{"embeddings.class_embedding",
                             "embeddings.patch_embedding.weight",
                             "embeddings.position_embedding.weight",
                             "pre_layrnorm.weight",
                             "pre_layrnorm.bias",
                             "post_layernorm.weight",
                             "post_layernorm.bias"};
  for (int l = 0; l < layers; ++l) {
    const std::string p = "encoder.layers." + std::to_string(l) + ".";
    for (const char* m :
         {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
          "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"}) {
      n.push_back(p + m + ".weight");
      n.push_back(p + m + ".bias");
    }
  }
  return n;
}

/// Every tensor of `names` is exactly one canonical tensor mapped by `layout`'s table (the
/// tower's only when it is in the checkpoint), and every mapped name is present.
void check_table_covers(const std::vector<std::string>& names, llava_layout layout,
                        std::size_t extra = 0) {
  const auto t = dynllava::tensor_names(layout);
  std::set<std::string> mapped;
  for (const auto& c : canonical_llm()) mapped.insert(t.llm(c));
  if (t.vision_in_checkpoint) {
    for (const auto& c : canonical_clip(2)) mapped.insert(t.vision(c));
  }
  for (int i = 0; i < 2; ++i) {
    mapped.insert(t.projector(i, projector_type::mlp2x_gelu) + ".weight");
    mapped.insert(t.projector(i, projector_type::mlp2x_gelu) + ".bias");
  }
  const std::set<std::string> present(names.begin(), names.end());
  for (const auto& m : mapped) {
    INFO(m);
    CHECK(present.count(m) == 1);
  }
  CHECK(present.size() == mapped.size() + extra);
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("transformers 5.24's names: saved files and the in-memory state dict") {
    const auto saved = read_names("hf_saved_names.txt");
    CHECK(dynllava::detect_llava_layout(saved) == llava_layout::hf_legacy_flat_vision);
    check_table_covers(saved, llava_layout::hf_legacy_flat_vision);
    const auto state = read_names("hf_state_names.txt");
    CHECK(dynllava::detect_llava_layout(state) == llava_layout::hf_current_flat_vision);
    check_table_covers(state, llava_layout::hf_current_flat_vision);
  }

  TEST_CASE("every layout is detected and its table covers the checkpoint") {
    const auto saved = read_names("hf_saved_names.txt");
    const auto state = read_names("hf_state_names.txt");
    // llava-hf hub files: the tower under vision_tower.vision_model.
    const auto legacy = renamed(saved, "vision_tower.", "vision_tower.vision_model.");
    CHECK(dynllava::detect_llava_layout(legacy) == llava_layout::hf_legacy);
    check_table_covers(legacy, llava_layout::hf_legacy);
    const auto current = renamed(state, "model.vision_tower.", "model.vision_tower.vision_model.");
    CHECK(dynllava::detect_llava_layout(current) == llava_layout::hf_current);
    check_table_covers(current, llava_layout::hf_current);

    // The original layout: the same tensors under LLaVA's names, plus the predictors.
    auto original = renamed(legacy, "language_model.model.", "model.");
    original = renamed(original, "language_model.lm_head", "lm_head");
    original = renamed(original, "vision_tower.vision_model.",
                       "model.vision_tower.vision_tower.vision_model.");
    original = renamed(original, "multi_modal_projector.linear_1", "model.mm_projector.0");
    original = renamed(original, "multi_modal_projector.linear_2", "model.mm_projector.2");
    original.push_back("model.image_score_predictor.down_mlp.1.weight");
    original.push_back("model.output_text_score_predictor.output_mlp.1.weight");
    CHECK(dynllava::detect_llava_layout(original) == llava_layout::original);
    check_table_covers(original, llava_layout::original, 2);
    const auto t = dynllava::tensor_names(llava_layout::original);
    CHECK(t.image_predictor_prefix == "model.image_score_predictor.");
    CHECK(t.output_predictor_prefix == "model.output_text_score_predictor.");

    const auto separate = without_prefix(original, "model.vision_tower.");
    CHECK(dynllava::detect_llava_layout(separate) == llava_layout::original_separate_tower);
    check_table_covers(separate, llava_layout::original_separate_tower, 2);
    const auto s = dynllava::tensor_names(llava_layout::original_separate_tower);
    CHECK_FALSE(s.vision_in_checkpoint);
    CHECK(s.vision("embeddings.class_embedding") == "vision_model.embeddings.class_embedding");

    // A linear projector in the original layout is `model.mm_projector` itself.
    auto linear = without_prefix(separate, "model.mm_projector.");
    linear.push_back("model.mm_projector.weight");
    linear.push_back("model.mm_projector.bias");
    CHECK(dynllava::detect_llava_layout(linear) == llava_layout::original_separate_tower);
    CHECK(s.projector(0, projector_type::linear) == "model.mm_projector");
  }

  TEST_CASE("name mapping by example") {
    const auto legacy = dynllava::tensor_names(llava_layout::hf_legacy);
    CHECK(legacy.llm("model.layers.3.self_attn.q_proj.weight") ==
          "language_model.model.layers.3.self_attn.q_proj.weight");
    CHECK(legacy.llm("lm_head.weight") == "language_model.lm_head.weight");
    CHECK(legacy.vision("encoder.layers.0.mlp.fc1.bias") ==
          "vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias");
    CHECK(legacy.projector(1, projector_type::mlp2x_gelu) == "multi_modal_projector.linear_2");
    const auto current = dynllava::tensor_names(llava_layout::hf_current);
    CHECK(current.llm("model.norm.weight") == "model.language_model.norm.weight");
    CHECK(current.llm("lm_head.weight") == "lm_head.weight");
    CHECK(current.projector(0, projector_type::mlp2x_gelu) ==
          "model.multi_modal_projector.linear_1");
    const auto original = dynllava::tensor_names(llava_layout::original);
    CHECK(original.llm("model.embed_tokens.weight") == "model.embed_tokens.weight");
    CHECK(original.vision("pre_layrnorm.weight") ==
          "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight");
    CHECK(original.projector(1, projector_type::mlp2x_gelu) == "model.mm_projector.2");
    CHECK_THROWS_WITH_AS((void)original.llm("layers.0.x"),
                         doctest::Contains("is not a canonical language-model name"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS((void)original.projector(2, projector_type::mlp2x_gelu),
                         doctest::Contains("linear_index must be in [0, 2), got 2"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS((void)original.projector(1, projector_type::linear),
                         doctest::Contains("linear_index must be in [0, 1), got 1"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS((void)legacy.projector(0, projector_type::linear),
                         doctest::Contains("has only the two-Linear projector"), dynllava::error);
    for (const auto l : dynllava::all_llava_layouts) CHECK(dynllava::to_string(l) != "unknown");
  }

  TEST_CASE("unrecognised and ambiguous name sets are errors listing what was looked for") {
    const std::vector<std::string> none{"foo.weight", "model.layers.0.mlp.up_proj.weight"};
    CHECK_THROWS_WITH_AS((void)dynllava::detect_llava_layout(none),
                         doctest::Contains("the 2 tensor names match no LLaVA layout; looked for:"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS(
        (void)dynllava::detect_llava_layout(none),
        doctest::Contains("hf_legacy: language_model.model.embed_tokens.weight + "
                          "multi_modal_projector.linear_1.weight + "
                          "vision_tower.vision_model.embeddings.patch_embedding.weight"),
        dynllava::error);
    CHECK_THROWS_AS((void)dynllava::detect_llava_layout(std::vector<std::string>{}),
                    dynllava::error);
    // A language model without a projector is not a LLaVA checkpoint.
    const auto saved = read_names("hf_saved_names.txt");
    CHECK_THROWS_AS(
        (void)dynllava::detect_llava_layout(without_prefix(saved, "multi_modal_projector.")),
        dynllava::error);
    // Both tower namings at once, or two whole checkpoints merged: ambiguous.
    auto both = saved;
    both.push_back("vision_tower.vision_model.embeddings.patch_embedding.weight");
    CHECK_THROWS_WITH_AS((void)dynllava::detect_llava_layout(both),
                         doctest::Contains("match several layouts (hf_legacy, "
                                           "hf_legacy_flat_vision)"),
                         dynllava::error);
    auto merged = saved;
    const auto state = read_names("hf_state_names.txt");
    merged.insert(merged.end(), state.begin(), state.end());
    CHECK_THROWS_WITH_AS((void)dynllava::detect_llava_layout(merged),
                         doctest::Contains("hf_legacy_flat_vision, hf_current_flat_vision"),
                         dynllava::error);
  }

  TEST_CASE("a separate CLIP checkpoint: vision_model. or flat") {
    CHECK(dynllava::detect_clip_vision_prefix(std::vector<std::string>{
              "vision_model.embeddings.patch_embedding.weight", "text_model.x"}) ==
          "vision_model.");
    CHECK(dynllava::detect_clip_vision_prefix(
              std::vector<std::string>{"embeddings.patch_embedding.weight"}) == "");
    CHECK_THROWS_WITH_AS((void)dynllava::detect_clip_vision_prefix(std::vector<std::string>{"x"}),
                         doctest::Contains("found neither"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        (void)dynllava::detect_clip_vision_prefix(std::vector<std::string>{
            "embeddings.patch_embedding.weight", "vision_model.embeddings.patch_embedding.weight"}),
        doctest::Contains("found both"), dynllava::error);
  }
}

// SPDX-License-Identifier: Apache-2.0
/// @file llava_layout.hpp
/// @brief The checkpoint layouts of a LLaVA-1.5 model, their detection from the tensor names, and
/// the table from the library's canonical tensor names to each layout's names.
///
/// Canonical names (what the models' tensor tables use):
/// - language model: `model.embed_tokens.weight`, `model.layers.{i}.*`, `model.norm.weight`,
///   `lm_head.weight` (llama_weights.hpp);
/// - CLIP tower: names relative to CLIP's `vision_model.`: `embeddings.patch_embedding.weight`,
///   `embeddings.class_embedding`, `embeddings.position_embedding.weight`, `pre_layrnorm.*`,
///   `encoder.layers.{i}.{self_attn.{q,k,v,out}_proj,layer_norm1,layer_norm2,mlp.fc1,mlp.fc2}.*`,
///   `post_layernorm.*`;
/// - projector: Linear 0 and Linear 1 (`projector(i)` gives the prefix of `.weight` / `.bias`);
/// - predictors: the released prefixes (load_predictors.hpp), in every layout (no other naming
///   of the Dynamic-LLaVA predictors exists).
///
/// Layouts (language model / lm_head / CLIP tower / projector Linears):
/// - `original`: `model.` / `lm_head` / `model.vision_tower.vision_tower.vision_model.` /
///   `model.mm_projector.{0,2}`;
/// - `original_separate_tower`: as `original`, the tower in its own CLIP checkpoint under
///   `vision_model.` (or no prefix);
/// - `hf_legacy`: `language_model.model.` / `language_model.lm_head` /
///   `vision_tower.vision_model.` / `multi_modal_projector.linear_{1,2}`;
/// - `hf_legacy_flat_vision`: as `hf_legacy` with the tower under `vision_tower.`;
/// - `hf_current`: `model.language_model.` / `lm_head` / `model.vision_tower.vision_model.` /
///   `model.multi_modal_projector.linear_{1,2}`;
/// - `hf_current_flat_vision`: as `hf_current` with the tower under `model.vision_tower.`.
///
/// `hf_legacy_flat_vision` is what transformers 5 `save_pretrained` writes;
/// `hf_current_flat_vision` is its in-memory state dict; `hf_legacy` is the llava-hf hub
/// checkpoints; `hf_current` is what transformers 4.5x's state dict looked like. The original
/// layout with a linear projector names it `model.mm_projector`.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/model/llava_config.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dynllava {

/// How a LLaVA checkpoint names its tensors (see the file comment's table).
enum class llava_layout : std::uint8_t {
  original,                 ///< LLaVA / Dynamic-LLaVA, CLIP tower inside the checkpoint
  original_separate_tower,  ///< LLaVA / Dynamic-LLaVA, CLIP tower in its own folder
  hf_legacy,                ///< `LlavaForConditionalGeneration`, older names
  hf_legacy_flat_vision,    ///< older names, tower without `vision_model.` (transformers 5 files)
  hf_current,               ///< newer names (`model.language_model.`, top-level `lm_head`)
  hf_current_flat_vision,   ///< newer names, tower without `vision_model.`
};

inline constexpr std::array<llava_layout, 6> all_llava_layouts{
    llava_layout::original,   llava_layout::original_separate_tower,
    llava_layout::hf_legacy,  llava_layout::hf_legacy_flat_vision,
    llava_layout::hf_current, llava_layout::hf_current_flat_vision};

/// The layout's name as written above.
[[nodiscard]] constexpr std::string_view to_string(llava_layout l) noexcept {
  switch (l) {
    case llava_layout::original:
      return "original";
    case llava_layout::original_separate_tower:
      return "original_separate_tower";
    case llava_layout::hf_legacy:
      return "hf_legacy";
    case llava_layout::hf_legacy_flat_vision:
      return "hf_legacy_flat_vision";
    case llava_layout::hf_current:
      return "hf_current";
    case llava_layout::hf_current_flat_vision:
      return "hf_current_flat_vision";
  }
  return "unknown";
}

/// @brief One layout's tensor names: maps canonical names (file comment) to checkpoint names.
struct llava_tensor_names {
  llava_layout layout = llava_layout::original;
  std::string llm_prefix;  ///< replaces the canonical `model.` of the language model's names
  std::string lm_head;     ///< replaces the canonical `lm_head`
  /// Prepended to CLIP names relative to `vision_model.`. In `original_separate_tower` it applies
  /// to the separate CLIP checkpoint (`vision_model.`, or "" for a flat one: see
  /// `detect_clip_vision_prefix`).
  std::string vision_prefix;
  bool vision_in_checkpoint = true;  ///< false: the tower's tensors are in the CLIP folder
  std::string projector_prefix;      ///< `model.mm_projector`, `multi_modal_projector`, ...
  bool hf_projector = false;         ///< Linears named `linear_1`/`linear_2` (else `0`/`2`)
  std::string image_predictor_prefix = "model.image_score_predictor.";
  std::string output_predictor_prefix = "model.output_text_score_predictor.";

  /// @brief The checkpoint name of a canonical language-model name (`model.layers.3.mlp.up_proj.
  /// weight`, `lm_head.weight`). @throws dynllava::error for a name that is neither.
  [[nodiscard]] std::string llm(std::string_view canonical) const {
    if (canonical.rfind("model.", 0) == 0) {
      return llm_prefix + std::string(canonical.substr(6));
    }
    if (canonical == "lm_head" || canonical.rfind("lm_head.", 0) == 0) {
      return lm_head + std::string(canonical.substr(7));
    }
    DYNLLAVA_FAIL(
        "llava_tensor_names::llm: {} is not a canonical language-model name (model.* "
        "or lm_head.*)",
        std::string(canonical));
  }
  /// The checkpoint name of a CLIP name relative to `vision_model.` (`embeddings.class_embedding`).
  [[nodiscard]] std::string vision(std::string_view canonical) const {
    return vision_prefix + std::string(canonical);
  }
  /// @brief The prefix of the projector's Linear `linear_index` (0 or 1), to which `.weight` and
  /// `.bias` are appended. @throws dynllava::error for an index the projector type lacks, or a
  /// `linear` projector in a Hugging Face layout (transformers has none).
  [[nodiscard]] std::string projector(int linear_index, projector_type type) const {
    const int count = type == projector_type::linear ? 1 : 2;
    DYNLLAVA_EXPECTS(linear_index >= 0 && linear_index < count,
                     "llava_tensor_names::projector: linear_index must be in [0, {}), got {}",
                     count, linear_index);
    if (hf_projector) {
      DYNLLAVA_EXPECTS(type == projector_type::mlp2x_gelu,
                       "llava_tensor_names::projector: the {} layout has only the two-Linear "
                       "projector",
                       to_string(layout));
      return projector_prefix + (linear_index == 0 ? ".linear_1" : ".linear_2");
    }
    if (type == projector_type::linear) return projector_prefix;
    return projector_prefix + (linear_index == 0 ? ".0" : ".2");
  }
};

/// @brief The tensor-name table of `layout`.
[[nodiscard]] inline llava_tensor_names tensor_names(llava_layout layout) {
  llava_tensor_names n;
  n.layout = layout;
  switch (layout) {
    case llava_layout::original:
    case llava_layout::original_separate_tower:
      n.llm_prefix = "model.";
      n.lm_head = "lm_head";
      n.vision_in_checkpoint = layout == llava_layout::original;
      n.vision_prefix = n.vision_in_checkpoint ? "model.vision_tower.vision_tower.vision_model."
                                               : "vision_model.";
      n.projector_prefix = "model.mm_projector";
      n.hf_projector = false;
      break;
    case llava_layout::hf_legacy:
    case llava_layout::hf_legacy_flat_vision:
      n.llm_prefix = "language_model.model.";
      n.lm_head = "language_model.lm_head";
      n.vision_prefix =
          layout == llava_layout::hf_legacy ? "vision_tower.vision_model." : "vision_tower.";
      n.projector_prefix = "multi_modal_projector";
      n.hf_projector = true;
      break;
    case llava_layout::hf_current:
    case llava_layout::hf_current_flat_vision:
      n.llm_prefix = "model.language_model.";
      n.lm_head = "lm_head";
      n.vision_prefix = layout == llava_layout::hf_current ? "model.vision_tower.vision_model."
                                                           : "model.vision_tower.";
      n.projector_prefix = "model.multi_modal_projector";
      n.hf_projector = true;
      break;
  }
  return n;
}

namespace detail {

inline bool has_name(std::span<const std::string> names, std::string_view want) {
  for (const auto& n : names) {
    if (n == want) return true;
  }
  return false;
}

/// The tensors whose presence identifies `layout`: the token embedding, a projector weight (either
/// projector type) and the patch embedding (none for the separate tower).
struct layout_markers {
  std::string embed;
  std::string projector, projector_linear;  // mlp2x_gelu's first Linear, linear's only one
  std::string patch;                        // empty: the tower must be absent
};

inline layout_markers markers(llava_layout l) {
  const llava_tensor_names n = tensor_names(l);
  layout_markers m;
  m.embed = n.llm("model.embed_tokens.weight");
  m.projector = n.projector(0, projector_type::mlp2x_gelu) + ".weight";
  if (!n.hf_projector) m.projector_linear = n.projector(0, projector_type::linear) + ".weight";
  if (n.vision_in_checkpoint) m.patch = n.vision("embeddings.patch_embedding.weight");
  return m;
}

/// Every patch-embedding name a layout with the tower inside uses.
inline std::vector<std::string> all_patch_markers() {
  std::vector<std::string> out;
  for (const auto l : all_llava_layouts) {
    if (const auto m = markers(l); !m.patch.empty()) out.push_back(m.patch);
  }
  return out;
}

inline bool matches(std::span<const std::string> names, llava_layout l) {
  const layout_markers m = markers(l);
  if (!has_name(names, m.embed)) return false;
  if (!has_name(names, m.projector) &&
      (m.projector_linear.empty() || !has_name(names, m.projector_linear))) {
    return false;
  }
  if (!m.patch.empty()) return has_name(names, m.patch);
  for (const auto& p : all_patch_markers()) {  // the separate tower: no tower at all
    if (has_name(names, p)) return false;
  }
  return true;
}

}  // namespace detail

/// @brief The layout of a checkpoint from its tensor names: the one layout whose token
/// embedding, projector and patch embedding (or, for `original_separate_tower`, the absence of
/// every tower) are all present.
/// @throws dynllava::error when no layout or several match, listing the names looked for.
[[nodiscard]] inline llava_layout detect_llava_layout(std::span<const std::string> names) {
  std::vector<llava_layout> found;
  for (const auto l : all_llava_layouts) {
    if (detail::matches(names, l)) found.push_back(l);
  }
  if (found.size() == 1) return found.front();
  std::string looked;
  for (const auto l : all_llava_layouts) {
    const auto m = detail::markers(l);
    looked += fmt::format("\n  {}: {} + {}{}{}", to_string(l), m.embed, m.projector,
                          m.projector_linear.empty() ? "" : " (or " + m.projector_linear + ")",
                          m.patch.empty() ? " + no tower" : " + " + m.patch);
  }
  if (found.empty()) {
    DYNLLAVA_FAIL("detect_llava_layout: the {} tensor names match no LLaVA layout; looked for:{}",
                  names.size(), looked);
  }
  std::string which;
  for (const auto l : found) which += (which.empty() ? "" : ", ") + std::string(to_string(l));
  DYNLLAVA_FAIL(
      "detect_llava_layout: the tensor names match several layouts ({}): the "
      "checkpoint is ambiguous; looked for:{}",
      which, looked);
}

/// @brief The prefix of the tower's names in a separate CLIP checkpoint: `vision_model.` (a
/// `CLIPModel`, or a `CLIPVisionModel` saved by transformers 4) or "" (a `CLIPVisionModel` saved by
/// transformers 5). @throws dynllava::error when neither or both patch embeddings are present.
[[nodiscard]] inline std::string detect_clip_vision_prefix(std::span<const std::string> names) {
  const bool prefixed = detail::has_name(names, "vision_model.embeddings.patch_embedding.weight");
  const bool flat = detail::has_name(names, "embeddings.patch_embedding.weight");
  DYNLLAVA_EXPECTS(prefixed != flat,
                   "detect_clip_vision_prefix: expected exactly one of "
                   "vision_model.embeddings.patch_embedding.weight and "
                   "embeddings.patch_embedding.weight among the {} tensor names, found {}",
                   names.size(), prefixed ? "both" : "neither");
  return prefixed ? "vision_model." : "";
}

}  // namespace dynllava

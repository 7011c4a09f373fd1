// SPDX-License-Identifier: Apache-2.0
/// @file load_llava.hpp
/// @brief Loads a LLaVA-1.5 / Dynamic-LLaVA model folder as published: `config.json` (either
/// style), the weights (one `model.safetensors`, shards with `model.safetensors.index.json`, or
/// the `*.safetensors` files of the folder) in any layout of `model/llava_layout.hpp`, the CLIP
/// tower inside the checkpoint or in its own folder, and the Dynamic-LLaVA predictors when the
/// checkpoint has them. Matrices stay in their stored width, memory-mapped.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/io/load_clip.hpp>
#include <dynllava/io/load_predictors.hpp>
#include <dynllava/io/read_image_preprocess.hpp>
#include <dynllava/io/read_llava_config.hpp>
#include <dynllava/io/read_tensor.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/model/image_preprocess.hpp>
#include <dynllava/model/llava_config.hpp>
#include <dynllava/model/llava_layout.hpp>
#include <dynllava/model/llava_model.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>

#include <filesystem>
#include <functional>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace dynllava::io {

/// Where `load_llava` finds what the model folder does not say.
struct load_llava_options {
  /// The CLIP tower's folder (its `config.json` and, for a checkpoint without the tower, its
  /// weights). Unset: the folder inside the model folder named after `mm_vision_tower`.
  std::optional<std::filesystem::path> vision_tower;
  /// Load the Dynamic-LLaVA predictors when `config.json` has a `sparse_config` (then their
  /// tensors must be there); false: skip them (and ignore their tensors).
  bool predictors = true;
};

/// A loaded model folder.
struct llava_folder {
  llava_config config;
  llava_layout layout = llava_layout::original;
  llava_model model;
  std::optional<image_predictor> image;    ///< the checkpoint's image predictor, if any
  std::optional<output_predictor> output;  ///< the checkpoint's output-text predictor, if any
  /// How its images become `pixel_values` (io/read_image_preprocess.hpp): the folder's
  /// `preprocessor_config.json` (Hugging Face layouts) or `image_aspect_ratio` and the tower's
  /// processor (original layouts).
  image_preprocess preprocess{};
};

namespace detail {

inline llava_folder load_llava_unchecked(const std::filesystem::path& model_dir,
                                         const load_llava_options& o);

/// The folder of the tower's weights for a checkpoint without them.
inline std::filesystem::path tower_folder(const llava_config_file& file,
                                          const load_llava_options& o,
                                          const std::filesystem::path& model_dir) {
  if (o.vision_tower) return *o.vision_tower;
  DYNLLAVA_EXPECTS(file.clip_dir.has_value(),
                   "load_llava: the checkpoint in {} has no vision tower and mm_vision_tower {} "
                   "names no folder inside it; pass the CLIP folder as "
                   "load_llava_options::vision_tower",
                   quote_untrusted(model_dir.string()), quote_untrusted(file.vision_tower));
  return *file.clip_dir;
}

/// @throws dynllava::error naming the first of the checkpoint's tensors `names` that nothing reads:
/// not in `used`, not under `ignored_prefix` (the tower, whose later layers and post-LayerNorm
/// LLaVA never runs), not under `predictor_prefixes` when the predictors are not wanted, and not a
/// RoPE buffer
/// (`*.rotary_emb.inv_freq`, which older checkpoints carry). Such a tensor means the
/// checkpoint and `config.json` disagree (a layer count, a bias, another projector).
inline void expect_all_read(const std::vector<std::string>& names,
                            const std::set<std::string, std::less<>>& used,
                            const std::vector<std::string>& ignored_prefixes,
                            const std::filesystem::path& model_dir) {
  std::vector<std::string> extra;
  for (const auto& n : names) {
    if (used.count(n) != 0 || n.ends_with(".rotary_emb.inv_freq")) continue;
    bool ignored = false;
    for (const auto& p : ignored_prefixes) ignored = ignored || (!p.empty() && n.starts_with(p));
    if (!ignored) extra.push_back(n);
  }
  DYNLLAVA_EXPECTS(extra.empty(),
                   "load_llava: {}: the checkpoint holds tensor {} (and {} more) that the model "
                   "config.json describes does not use: the checkpoint and config.json disagree",
                   quote_untrusted(model_dir.string()),
                   extra.empty() ? "" : quote_untrusted(extra.front()),
                   extra.empty() ? 0 : extra.size() - 1);
}

}  // namespace detail

/// @brief Loads the LLaVA model of `model_dir`.
/// @throws dynllava::error naming the file and the problem: a malformed `config.json`,
///         `preprocessor_config.json`, shards or index; an unrecognised layout; a missing, wrongly
///         shaped or non-float tensor; a tensor the config does not account for; a tower folder
///         that is missing; running out of memory.
inline llava_folder load_llava(const std::filesystem::path& model_dir,
                               const load_llava_options& o = {}) {
  try {
    return detail::load_llava_unchecked(model_dir, o);
  } catch (const std::bad_alloc&) {
    DYNLLAVA_FAIL("load_llava: {}: out of memory while loading",
                  quote_untrusted(model_dir.string()));
  }
}

namespace detail {

inline llava_folder load_llava_unchecked(const std::filesystem::path& model_dir,
                                         const load_llava_options& o) {
  // The weights' layout first: a checkpoint without the tower needs the CLIP folder, which the
  // config reader then must find (not fall back to a known tower's built-in sizes).
  const checkpoint ckpt(model_dir);
  const std::vector<std::string> names = ckpt.names();
  const llava_layout layout = detect_llava_layout(names);
  const llava_tensor_names tn = tensor_names(layout);
  llava_config_options co;
  co.clip_config = o.vision_tower;
  co.require_clip_folder = !tn.vision_in_checkpoint;
  const llava_config_file file = read_llava_config_file(model_dir, co);
  const llava_config& c = file.config;
  const image_preprocess preprocess = read_image_preprocess(model_dir, file, co.limits);

  llava_weights w;
  visit_tensors(w.text, c.text, [&](const nn::tensor_spec& s, auto& out) {
    read_tensor(ckpt, tn.llm(s.name), s, out);
  });
  if (tn.vision_in_checkpoint) {
    w.vision = load_clip_weights(ckpt, c.vision, tn.vision_prefix, c.vision_layer());
  } else {
    const std::filesystem::path dir = detail::tower_folder(file, o, model_dir);
    const checkpoint tower(dir);
    const std::vector<std::string> tower_names = tower.names();
    w.vision = load_clip_weights(tower, c.vision, detect_clip_vision_prefix(tower_names),
                                 c.vision_layer());
  }
  const projector_names pn{tn.projector(0, c.projector), c.projector == projector_type::mlp2x_gelu
                                                             ? tn.projector(1, c.projector)
                                                             : std::string()};
  w.projector = load_projector_weights(ckpt, projector_config::of(c), pn);

  // Every tensor of the checkpoint must be read (or be one LLaVA never runs).
  std::set<std::string, std::less<>> used;
  const auto collect = [&](const nn::tensor_spec& s, const auto&) { used.insert(s.name); };
  visit_tensors(std::as_const(w.text), c.text,
                [&](const nn::tensor_spec& s, const auto&) { used.insert(tn.llm(s.name)); });
  visit_tensors(std::as_const(w.projector), projector_config::of(c), pn, collect);
  std::vector<std::string> ignored{tn.vision_in_checkpoint ? tn.vision_prefix : std::string()};
  if (!o.predictors || c.predictors) {  // not wanted, or their loaders check what lies below
    ignored.push_back(tn.image_predictor_prefix);
    ignored.push_back(tn.output_predictor_prefix);
  }
  detail::expect_all_read(names, used, ignored, model_dir);

  llava_folder f{c, layout, llava_model(c, std::move(w)), std::nullopt, std::nullopt, preprocess};
  if (o.predictors && c.predictors) {
    f.image = load_image_predictor(ckpt, *c.predictors, tn.image_predictor_prefix);
    if (c.sparse.output_predictor) {
      f.output = load_output_predictor(ckpt, *c.predictors, tn.output_predictor_prefix);
    }
  }
  return f;
}

}  // namespace detail

}  // namespace dynllava::io

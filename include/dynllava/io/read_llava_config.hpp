// SPDX-License-Identifier: Apache-2.0
/// @file read_llava_config.hpp
/// @brief Reads a LLaVA-1.5 checkpoint's `config.json` into a validated `llava_config`.
///
/// Two styles, told apart by `architectures` (else by the presence of `text_config` /
/// `vision_config` or `mm_vision_tower`):
/// - original LLaVA / Dynamic-LLaVA (`LlavaLlamaForCausalLM`, `DynamicLlavaLlamaForCausalLM`):
///   the LLaMA fields at the top level, `mm_vision_tower`, `mm_projector_type`,
///   `mm_vision_select_layer`, `mm_vision_select_feature`, `image_aspect_ratio`, optional
///   `sparse_config`. The tower's sizes come from a CLIP `config.json` (see
///   `read_llava_config_file`); the image token is the released code's -200.
/// - Hugging Face `LlavaForConditionalGeneration`: `text_config`, `vision_config`,
///   `image_token_index`, `vision_feature_layer`, `vision_feature_select_strategy`,
///   `projector_hidden_act`; missing fields take transformers' defaults (`LlamaConfig`,
///   `CLIPVisionConfig`, and `LlavaConfig`'s ViT-L/14-336 tower when `vision_config` is absent).
///   `aspect` is `square` here; the folder's `preprocessor_config.json` decides padding
///   (`io/read_image_preprocess.hpp`). The image token must be a vocabulary id other than BOS
///   and EOS.
///
/// Every field read is checked for type and range, floats for finiteness, and the whole for
/// consistency; what the library cannot run is refused: grouped-query attention, `rope_scaling`
/// other than the default, `head_dim != hidden / heads`, biases in the LLaMA layers, tied
/// embeddings, activations other than SiLU (LLaMA) / GELU (projector) / quick_gelu or GELU
/// (CLIP), projectors other than `linear` / `mlp2x_gelu`, `anyres` images, image start/end
/// tokens, multi-layer vision features, text models other than LLaMA, towers other than CLIP,
/// and the instruction-token predictor. Errors name the file and the field's JSON path.
#pragma once

#include <dynllava/core/clip_config.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/llama_config.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/io/detail/json_fields.hpp>
#include <dynllava/io/json_document.hpp>
#include <dynllava/io/read_clip_config.hpp>
#include <dynllava/model/llava_config.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace dynllava::io {

/// Which `config.json` convention a checkpoint follows.
enum class llava_config_style : std::uint8_t {
  original,      ///< LLaVA / Dynamic-LLaVA's own (`LlavaLlamaForCausalLM`, ...)
  hugging_face,  ///< transformers' `LlavaForConditionalGeneration`
};

/// A JSON text and the name it has in errors.
struct json_text {
  std::string_view text;
  std::string_view label;
};

/// Options of `read_llava_config_file`.
struct llava_config_options {
  /// The CLIP tower's `config.json` (or its folder) for an original-style checkpoint. Read from
  /// wherever it is: the caller chose it. Ignored for the Hugging Face style.
  std::optional<std::filesystem::path> clip_config;
  /// The tower's folder must be found (`clip_config`, or the folder named after
  /// `mm_vision_tower`): the checkpoint has no tower, so the built-in sizes of a known tower name
  /// would only lead to a later mismatch. A missing folder or `config.json` is an error naming it.
  bool require_clip_folder = false;
  json_limits limits{};  ///< for `config.json` and the CLIP config
};

/// What `read_llava_config_file` found.
struct llava_config_file {
  llava_config config;
  llava_config_style style = llava_config_style::original;
  std::string vision_tower;  ///< `mm_vision_tower` as written (original style), else empty
  /// The folder whose `config.json` gave the tower's sizes (original style; it holds the tower's
  /// weights when the checkpoint does not); empty when the sizes are built in or embedded.
  std::optional<std::filesystem::path> clip_dir;
};

namespace detail {

using json = nlohmann::json;

/// transformers' `LlamaConfig()` defaults (LLaMA-7B sizes, 2048 positions, eps 1e-6).
inline llama_config llama_config_defaults() {
  llama_config c;
  c.max_positions = 2048;
  c.rms_eps = 1e-6f;
  return c;
}

/// Fails unless the string field `key` (default `def`) equals `want`.
inline void expect_string(const json_fields& f, std::string_view key, std::string_view def,
                          std::string_view want, std::string_view why) {
  const std::string v = f.string(key, std::string(def));
  if (v != want) f.fail(key, fmt::format("\"{}\" ({})", want, why), f.value_or_null(key));
}

/// Fails unless the boolean field `key` (default `def`) equals `want`.
inline void expect_bool(const json_fields& f, std::string_view key, bool def, bool want,
                        std::string_view why) {
  if (f.boolean(key, def) != want) {
    f.fail(key, fmt::format("{} ({})", want ? "true" : "false", why), f.value_or_null(key));
  }
}

/// A token id in `[0, vocab)`: an integer, or a list holding exactly one.
inline std::int64_t read_token_id(const json_fields& f, std::string_view key, std::int64_t def,
                                  index_t vocab) {
  const json* v = f.find(key);
  if (v == nullptr) {
    if (def < 0 || def >= vocab) {
      f.fail(key, fmt::format("is missing and its default {} is outside the vocabulary of {}", def,
                              vocab));
    }
    return def;
  }
  const json& id = v->is_array() && v->size() == 1 ? (*v)[0] : *v;
  if (!id.is_number_integer()) f.fail(key, "a single integer token id", *v);
  return f.integer_value(key, id, 0, std::int64_t{vocab} - 1);
}

/// The LLaMA decoder's fields of `f` (the top level, or `text_config`). With `sizes_required`
/// the five size fields must be present (original style); otherwise they default as in
/// `LlamaConfig`.
/// The most layers a language model or a vision tower may declare.
inline constexpr std::int64_t max_layers = 1024;

inline llama_config read_llama_fields(const json_fields& f, bool sizes_required) {
  const llama_config def = llama_config_defaults();
  const auto size = [&](std::string_view key, index_t d) {
    return sizes_required ? f.positive(key) : f.positive(key, d);
  };
  llama_config c = def;
  c.hidden = size("hidden_size", def.hidden);
  c.intermediate = size("intermediate_size", def.intermediate);
  // At most 1024 layers (LLaMA-65B has 80): a config cannot make the loader allocate per-layer
  // state for millions of layers that the checkpoint does not hold.
  c.layers = static_cast<index_t>(
      f.integer("num_hidden_layers", 1, max_layers,
                sizes_required ? std::nullopt : std::optional<std::int64_t>(def.layers)));
  c.heads = size("num_attention_heads", def.heads);
  c.vocab = size("vocab_size", def.vocab);
  if (c.hidden % c.heads != 0) {
    f.fail("hidden_size",
           fmt::format("({}) is not a multiple of num_attention_heads ({})", c.hidden, c.heads));
  }
  c.head_dim = c.hidden / c.heads;
  if (const auto kv =
          f.integer_or_null("num_key_value_heads", 1, std::numeric_limits<index_t>::max());
      kv && *kv != c.heads) {
    f.fail("num_key_value_heads",
           fmt::format("is {} but num_attention_heads is {}: grouped-query attention is not "
                       "supported",
                       *kv, c.heads));
  }
  if (const auto hd = f.integer_or_null("head_dim", 1, std::numeric_limits<index_t>::max());
      hd && *hd != c.head_dim) {
    f.fail("head_dim", fmt::format("is {} but hidden_size / num_attention_heads is {}: only "
                                   "head_dim = hidden_size / num_attention_heads is supported",
                                   *hd, c.head_dim));
  }
  c.max_positions = f.positive("max_position_embeddings", def.max_positions);
  c.rms_eps = static_cast<float>(
      f.number("rms_norm_eps", 0.0, 1.0, true, static_cast<double>(def.rms_eps)));
  if (!(c.rms_eps > 0.0f)) f.fail("rms_norm_eps", "is below float precision");
  expect_string(f, "hidden_act", "silu", "silu", "LLaMA's SwiGLU");
  expect_bool(f, "attention_bias", false, false, "LLaMA's attention has no biases");
  expect_bool(f, "mlp_bias", false, false, "LLaMA's MLP has no biases");
  expect_bool(f, "tie_word_embeddings", false, false, "tied embeddings are not supported");
  if (const json* p = f.find_non_null("partial_rotary_factor");
      p != nullptr && !(p->is_number() && p->get<double>() == 1.0)) {
    f.fail("partial_rotary_factor", "1 (partial RoPE is not supported)", *p);
  }

  // RoPE, as transformers reads it: `rope_scaling` (older files) replaces `rope_parameters`;
  // the theta is the dictionary's `rope_theta`, else the top-level `rope_theta`, else 10000.
  double theta = f.number("rope_theta", 0.0, 1e30, true, 10000.0);
  const std::optional<json_fields> rope = f.has("rope_scaling")
                                              ? f.object_or_null("rope_scaling")
                                              : f.object_or_null("rope_parameters");
  if (rope) {
    theta = rope->number("rope_theta", 0.0, 1e30, true, theta);
    const char* type_key = rope->has("rope_type") ? "rope_type" : "type";
    const std::string type = rope->string(type_key, std::string("default"));
    if (type != "default") {
      rope->fail(type_key, "\"default\" (scaled RoPE is not supported)",
                 rope->value_or_null(type_key));
    }
    if (const json* factor = rope->find_non_null("factor");
        factor != nullptr && !(factor->is_number() && factor->get<double>() == 1.0)) {
      rope->fail("factor", "absent or 1 for the default RoPE", *factor);
    }
  }
  c.rope_theta = theta;
  c.validate();
  return c;
}

/// `sparse_config` (Dynamic-LLaVA) -> the predictors' sizes and the trained settings, following
/// the released code: VisionPredictor(d_model, nhead, dim_feedforward, num_layers) with the
/// block MLP width `int(d_model * (dim_feedforward / d_model))`, the local half `d_model // 2`,
/// output heads `d_model // 2, d_model // 4`; TextPredictor `d_model, d_model // 2, d_model // 4`.
inline void read_sparse_config(const json_fields& top, llava_config& c) {
  const auto sc = top.object_or_null("sparse_config");
  if (!sc) return;
  const json_fields& s = *sc;
  if (!s.boolean("use_vision_predictor")) {
    s.fail("use_vision_predictor",
           "is false: a sparse_config without the image predictor is "
           "not supported");
  }
  bool output = false;
  if (s.boolean("use_text_predictor")) {
    output = s.boolean("use_output_text_predictor");
    if (s.boolean("use_instruct_predictor")) {
      s.fail("use_instruct_predictor", "is true: the instruction-token predictor is not supported");
    }
  }
  predictor_config p;
  p.hidden = c.text.hidden;
  p.d_model = s.positive("d_model");
  p.heads = s.positive("nhead");
  const index_t ffn = s.positive("dim_feedforward");
  p.blocks = static_cast<index_t>(s.integer("num_layers", 0, 1024));
  if (p.d_model < 4 || p.d_model % 2 != 0) {
    s.fail("d_model", fmt::format("({}) must be even and at least 4: the predictors split it in "
                                  "halves and quarters",
                                  p.d_model));
  }
  if (p.d_model % p.heads != 0) {
    s.fail("nhead", fmt::format("({}) does not divide d_model ({})", p.heads, p.d_model));
  }
  // Python: int(d_model * (dim_feedforward / d_model)), in double.
  const double ratio = static_cast<double>(ffn) / static_cast<double>(p.d_model);
  p.ffn = static_cast<index_t>(static_cast<double>(p.d_model) * ratio);
  if (p.ffn <= 0) s.fail("dim_feedforward", fmt::format("gives an MLP width of {}", p.ffn));
  p.local_dim = p.d_model / 2;
  p.image_head = {p.d_model / 2, p.d_model / 4};
  p.output_head = {p.d_model, p.d_model / 2, p.d_model / 4};
  p.layer_norm_eps = 1e-5f;
  p.validate();

  c.sparse.sparse_layer =
      static_cast<index_t>(s.integer("sparse_layer", 0, std::int64_t{c.text.layers} - 1));
  c.sparse.vision_keep_rate = s.number("vision_keep_rate", 0.0, 1.0, false);
  c.sparse.output_text_keep_rate = s.number("output_text_keep_rate", 0.0, 1.0, false, 0.5);
  c.sparse.output_predictor = output;
  c.predictors = p;
}

/// Which style `top` follows (see the file comment). @throws for an unsupported architecture.
inline llava_config_style detect_style(const json_fields& top) {
  if (const json* a = top.find_non_null("architectures")) {
    if (!a->is_array() || a->size() != 1 || !(*a)[0].is_string()) {
      top.fail("architectures", "a list of one architecture name", *a);
    }
    const std::string name = (*a)[0].get<std::string>();
    if (name == "LlavaForConditionalGeneration") return llava_config_style::hugging_face;
    if (name == "LlavaLlamaForCausalLM" || name == "DynamicLlavaLlamaForCausalLM") {
      return llava_config_style::original;
    }
    top.fail("architectures",
             "[\"LlavaForConditionalGeneration\"], [\"LlavaLlamaForCausalLM\"] "
             "or [\"DynamicLlavaLlamaForCausalLM\"]",
             *a);
  }
  if (top.has("text_config") || top.has("vision_config")) return llava_config_style::hugging_face;
  if (top.has("mm_vision_tower")) return llava_config_style::original;
  top.fail("architectures",
           "is missing, and neither text_config nor mm_vision_tower tells the "
           "style: not a LLaVA config");
}

/// Checks the selected tower layer against the tower and stores it.
inline void read_select_layer(const json_fields& f, std::string_view key, llava_config& c,
                              std::optional<std::int64_t> def) {
  const json* v = f.find(key);
  if (v != nullptr && v->is_array()) {
    f.fail(key, "a single layer (features from several layers are not supported)", *v);
  }
  const std::int64_t L = c.vision.layers;
  c.vision_select_layer = static_cast<index_t>(f.integer(key, -(L + 1), L, def));
}

/// The Hugging Face style.
inline llava_config read_hf_style(const json_fields& top) {
  llava_config c;
  if (const json* mt = top.find_non_null("model_type");
      mt != nullptr && !(mt->is_string() && mt->get<std::string>() == "llava")) {
    top.fail("model_type", "\"llava\"", *mt);
  }
  if (auto t = top.object_or_null("text_config")) {
    if (const json* mt = t->find_non_null("model_type");
        mt != nullptr && !(mt->is_string() && mt->get<std::string>() == "llama")) {
      t->fail("model_type", "\"llama\" (only LLaMA language models are supported)", *mt);
    }
    c.text = read_llama_fields(*t, false);
    c.bos_token_id = read_token_id(*t, "bos_token_id", 1, c.text.vocab);
    c.eos_token_id = read_token_id(*t, "eos_token_id", 2, c.text.vocab);
  } else {
    c.text = llama_config_defaults();
  }
  if (auto v = top.object_or_null("vision_config")) {
    c.vision = read_clip_vision_fields(*v, clip_vision_config_defaults());
  } else {
    c.vision = clip_config{};  // LlavaConfig's own default tower: ViT-L/14 at 336 px
  }
  c.projector = projector_type::mlp2x_gelu;
  expect_string(top, "projector_hidden_act", "gelu", "gelu", "the projector's exact GELU");
  expect_bool(top, "multimodal_projector_bias", true, true, "the projector has biases");
  expect_bool(top, "tie_word_embeddings", false, false, "tied embeddings are not supported");
  read_select_layer(top, "vision_feature_layer", c, -2);
  const std::string strategy = top.string("vision_feature_select_strategy", "default");
  if (strategy == "default") {
    c.select_feature = vision_select_feature::patch;
  } else if (strategy == "full") {
    c.select_feature = vision_select_feature::cls_patch;
  } else {
    top.fail("vision_feature_select_strategy", "\"default\" or \"full\"",
             top.value_or_null("vision_feature_select_strategy"));
  }
  c.aspect = image_aspect::square;
  const std::int64_t id_max = std::numeric_limits<index_t>::max();
  const auto index = top.integer_or_null("image_token_index", 0, id_max);
  const auto id = top.integer_or_null("image_token_id", 0, id_max);
  if (index && id && *index != *id) {
    top.fail("image_token_id",
             fmt::format("({}) differs from image_token_index ({})", *id, *index));
  }
  c.image_token_id = index ? *index : id ? *id : 32000;
  // transformers looks the image token up in the embedding before replacing its rows, so it
  // must be a vocabulary id; and it must not be BOS or EOS, which the prompt and generation use.
  const char* image_key = index || !id ? "image_token_index" : "image_token_id";
  const char* given = index || id ? "" : ", the default";
  if (c.image_token_id >= c.text.vocab) {
    top.fail(image_key,
             fmt::format("({}{}) is outside the vocabulary of {} (text_config.vocab_size): "
                         "transformers looks it up in the token embedding",
                         c.image_token_id, given, c.text.vocab));
  }
  if (c.image_token_id == c.bos_token_id || c.image_token_id == c.eos_token_id) {
    top.fail(image_key,
             fmt::format("({}{}) is the {} token id: it must be an id of its own", c.image_token_id,
                         given, c.image_token_id == c.bos_token_id ? "BOS" : "EOS"));
  }
  read_sparse_config(top, c);
  return c;
}

/// The tower name of an original-style config: `mm_vision_tower`, else `vision_tower`.
inline std::string read_tower_name(const json_fields& top) {
  const char* key =
      !top.has("mm_vision_tower") && top.has("vision_tower") ? "vision_tower" : "mm_vision_tower";
  const std::string name = top.string(key);
  if (name.empty()) top.fail(key, "is empty");
  return name;
}

/// The original style; `clip` gives the tower's sizes for its name.
inline llava_config read_original_style(
    const json_fields& top, const std::function<clip_config(const std::string&)>& clip) {
  llava_config c;
  if (const json* mt = top.find_non_null("model_type")) {
    const std::string t = mt->is_string() ? mt->get<std::string>() : std::string();
    if (t != "llava" && t != "llava_llama" && t != "dynamic_llava_llama") {
      top.fail("model_type", "\"llava\", \"llava_llama\" or \"dynamic_llava_llama\"", *mt);
    }
  }
  c.text = read_llama_fields(top, true);
  c.bos_token_id = read_token_id(top, "bos_token_id", 1, c.text.vocab);
  c.eos_token_id = read_token_id(top, "eos_token_id", 2, c.text.vocab);
  c.image_token_id = -200;

  const std::string proj = top.string("mm_projector_type", "linear");
  if (proj == "linear") {
    c.projector = projector_type::linear;
  } else if (proj == "mlp2x_gelu") {
    c.projector = projector_type::mlp2x_gelu;
  } else {
    top.fail("mm_projector_type", "\"linear\" or \"mlp2x_gelu\"",
             top.value_or_null("mm_projector_type"));
  }
  const std::string feature = top.string("mm_vision_select_feature", "patch");
  if (feature == "patch") {
    c.select_feature = vision_select_feature::patch;
  } else if (feature == "cls_patch") {
    c.select_feature = vision_select_feature::cls_patch;
  } else {
    top.fail("mm_vision_select_feature", "\"patch\" or \"cls_patch\"",
             top.value_or_null("mm_vision_select_feature"));
  }
  // LLaVA pads only for "pad"; no value means CLIPImageProcessor's resize and crop.
  const std::string aspect = top.string("image_aspect_ratio", "square", true);
  if (aspect == "pad") {
    c.aspect = image_aspect::pad;
  } else if (aspect == "square") {
    c.aspect = image_aspect::square;
  } else if (aspect.rfind("anyres", 0) == 0) {
    top.fail("image_aspect_ratio", "is \"anyres\": tiled images (LLaVA-NeXT) are not supported");
  } else {
    top.fail("image_aspect_ratio", "\"pad\", \"square\" or null",
             top.value_or_null("image_aspect_ratio"));
  }
  const std::string merge = top.string("mm_patch_merge_type", "flat", true);
  if (merge != "flat") {
    top.fail("mm_patch_merge_type", "\"flat\" (LLaVA-1.5)",
             top.value_or_null("mm_patch_merge_type"));
  }
  expect_bool(top, "mm_use_im_start_end", false, false, "image start/end tokens are not supported");

  c.vision = clip(read_tower_name(top));
  if (const auto mm = top.integer_or_null("mm_hidden_size", 1, std::numeric_limits<index_t>::max());
      mm && *mm != c.vision.hidden) {
    top.fail("mm_hidden_size", fmt::format("({}) differs from the CLIP tower's hidden_size ({})",
                                           *mm, c.vision.hidden));
  }
  read_select_layer(top, "mm_vision_select_layer", c, std::nullopt);
  read_sparse_config(top, c);
  return c;
}

/// Reads a parsed `config.json`. `clip` maps `mm_vision_tower` to the tower's sizes (original
/// style only).
inline llava_config read_llava_document(const json& doc, std::string_view label,
                                        const std::function<clip_config(const std::string&)>& clip,
                                        llava_config_style* style) {
  const json_fields top(doc, label, "");
  const llava_config_style s = detect_style(top);
  if (style != nullptr) *style = s;
  llava_config c =
      s == llava_config_style::hugging_face ? read_hf_style(top) : read_original_style(top, clip);
  c.validate();  // every field was checked above with its path; the struct's own guard
  return c;
}

}  // namespace detail

/// @brief Reads a `config.json` text (either style).
/// @param file_label names the file in errors.
/// @param clip the CLIP tower's `config.json` text for an original-style config; when empty,
/// such a config must name a known tower (`known_clip_tower`).
/// @throws dynllava::error naming the file and the field's JSON path (see the file comment).
[[nodiscard]] inline llava_config parse_llava_config(std::string_view text,
                                                     std::string_view file_label,
                                                     std::optional<json_text> clip = std::nullopt,
                                                     const json_limits& limits = {}) {
  const nlohmann::json doc = parse_json_document(text, file_label, limits);
  return detail::read_llava_document(
      doc, file_label,
      [&](const std::string& name) {
        if (clip) return parse_clip_config(clip->text, clip->label, limits);
        if (auto known = known_clip_tower(name)) return *known;
        DYNLLAVA_FAIL(
            "{}: mm_vision_tower {} is not a known tower and no CLIP config.json was "
            "given",
            file_label, quote_untrusted(name));
      },
      nullptr);
}

/// @brief Reads `model_dir/config.json` (either style). For an original-style config the CLIP
/// tower's sizes come from, in order: `options.clip_config`; the `config.json` of the folder
/// inside `model_dir` named after the last path component of `mm_vision_tower` (e.g.
/// `model_dir/clip-vit-large-patch14-336/`); the built-in sizes of a known tower name. A path
/// written in the config is never followed anywhere else.
/// @throws dynllava::error naming the file and the field (see `parse_llava_config`), or when
/// `config.json` is missing, too large, or the tower's sizes cannot be found.
[[nodiscard]] inline llava_config_file read_llava_config_file(
    const std::filesystem::path& model_dir, const llava_config_options& options = {}) {
  namespace fs = std::filesystem;
  const fs::path file = model_dir / "config.json";
  const std::string label = quote_untrusted(file.string(), 200);
  const std::string text = read_small_file(file, label, options.limits.max_bytes);
  const nlohmann::json doc = parse_json_document(text, label, options.limits);
  llava_config_file out;
  out.config = detail::read_llava_document(
      doc, label,
      [&](const std::string& name) {
        out.vision_tower = name;
        if (options.clip_config) {
          const fs::path p = *options.clip_config;
          std::error_code ec;
          out.clip_dir = fs::is_directory(p, ec) ? p : p.parent_path();
          return read_clip_config(p, options.limits);
        }
        std::string_view base = name;
        while (!base.empty() && base.back() == '/') base.remove_suffix(1);
        if (const auto slash = base.rfind('/'); slash != std::string_view::npos) {
          base.remove_prefix(slash + 1);
        }
        const bool plain = !base.empty() && base != "." && base != ".." &&
                           base.find('\0') == std::string_view::npos &&
                           base.find('\\') == std::string_view::npos;
        if (plain) {
          const fs::path dir = model_dir / fs::path(std::string(base));
          std::error_code ec;
          if (fs::is_regular_file(dir / "config.json", ec)) {
            out.clip_dir = dir;
            return read_clip_config(dir / "config.json", options.limits);
          }
          if (options.require_clip_folder) {
            const bool folder = fs::is_directory(dir, ec);
            DYNLLAVA_FAIL(
                "{}: the checkpoint holds no vision tower, and the CLIP folder {} that "
                "mm_vision_tower {} names {}; put the CLIP model there or pass its folder "
                "(load_llava_options::vision_tower)",
                label, quote_untrusted(dir.string(), 200), quote_untrusted(name),
                folder ? "has no config.json" : "does not exist");
          }
        }
        if (options.require_clip_folder) {
          DYNLLAVA_FAIL(
              "{}: the checkpoint holds no vision tower, and mm_vision_tower {} names no folder "
              "inside {}; pass the CLIP folder (load_llava_options::vision_tower)",
              label, quote_untrusted(name), quote_untrusted(model_dir.string(), 200));
        }
        if (auto known = known_clip_tower(name)) return *known;
        DYNLLAVA_FAIL(
            "{}: mm_vision_tower {} names no folder with a config.json inside {} and is "
            "not a known tower; pass the CLIP config.json as "
            "llava_config_options::clip_config",
            label, quote_untrusted(name), quote_untrusted(model_dir.string(), 200));
      },
      &out.style);
  return out;
}

/// @brief `read_llava_config_file(model_dir, options).config`.
[[nodiscard]] inline llava_config read_llava_config(const std::filesystem::path& model_dir,
                                                    const llava_config_options& options = {}) {
  return read_llava_config_file(model_dir, options).config;
}

}  // namespace dynllava::io

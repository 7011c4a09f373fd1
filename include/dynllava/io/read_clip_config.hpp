// SPDX-License-Identifier: Apache-2.0
/// @file read_clip_config.hpp
/// @brief The CLIP vision tower's sizes (`clip_config`) from JSON: a `vision_config` object of a
/// Hugging Face LLaVA config, or the `config.json` of a CLIP folder (a `CLIPVisionConfig`, or a
/// `CLIPConfig` with `vision_config` / `vision_config_dict`), with transformers' defaults for
/// missing fields; and the built-in sizes of the two OpenAI towers LLaVA names.
#pragma once

#include <dynllava/core/clip_config.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/io/detail/json_fields.hpp>
#include <dynllava/io/json_document.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace dynllava::io {

/// transformers' `CLIPVisionConfig()` defaults (ViT-B/32 at 224 px): the sizes a `vision_config`
/// object falls back to field by field.
[[nodiscard]] inline clip_config clip_vision_config_defaults() {
  clip_config c;
  c.image_size = 224;
  c.patch_size = 32;
  c.channels = 3;
  c.hidden = 768;
  c.layers = 12;
  c.heads = 12;
  c.intermediate = 3072;
  c.layer_norm_eps = 1e-5f;
  c.activation = clip_activation::quick_gelu;
  return c;
}

/// @brief Built-in sizes of the towers LLaVA-1.5 names in `mm_vision_tower`, by exact name:
/// `openai/clip-vit-large-patch14-336` (ViT-L/14, 336 px) and `openai/clip-vit-large-patch14`
/// (ViT-L/14, 224 px). Empty for any other name.
[[nodiscard]] inline std::optional<clip_config> known_clip_tower(std::string_view name) {
  clip_config c;  // the defaults are ViT-L/14-336
  if (name == "openai/clip-vit-large-patch14-336") return c;
  if (name == "openai/clip-vit-large-patch14") {
    c.image_size = 224;
    return c;
  }
  return std::nullopt;
}

namespace detail {

/// `image_size` / `patch_size`: an integer, or a list of two equal integers (square only).
inline index_t read_square_size(const json_fields& f, std::string_view key, index_t def) {
  const nlohmann::json* v = f.find(key);
  if (v == nullptr) return def;
  if (v->is_array()) {
    if (v->size() != 2) f.fail(key, "a positive integer or a list of two equal ones", *v);
    const auto a = f.integer_value(key, (*v)[0], 1, std::numeric_limits<index_t>::max());
    const auto b = f.integer_value(key, (*v)[1], 1, std::numeric_limits<index_t>::max());
    if (a != b) {
      f.fail(key, fmt::format("is [{}, {}]: only square images and patches are supported", a, b));
    }
    return static_cast<index_t>(a);
  }
  return static_cast<index_t>(f.integer_value(key, *v, 1, std::numeric_limits<index_t>::max()));
}

/// Reads the fields of a `CLIPVisionConfig` object; missing fields take `def`'s values.
inline clip_config read_clip_vision_fields(const json_fields& f, const clip_config& def) {
  if (const auto* mt = f.find_non_null("model_type")) {
    if (!mt->is_string() || mt->get<std::string>() != "clip_vision_model") {
      f.fail("model_type", "\"clip_vision_model\" (only CLIP vision towers are supported)", *mt);
    }
  }
  clip_config c;
  c.hidden = f.positive("hidden_size", def.hidden);
  c.intermediate = f.positive("intermediate_size", def.intermediate);
  c.layers =
      static_cast<index_t>(f.integer("num_hidden_layers", 1, 1024, def.layers));  // bounded
                                                                                  // as LLaMA's
  c.heads = f.positive("num_attention_heads", def.heads);
  c.channels = f.positive("num_channels", def.channels);
  c.image_size = read_square_size(f, "image_size", def.image_size);
  c.patch_size = read_square_size(f, "patch_size", def.patch_size);
  c.layer_norm_eps = static_cast<float>(
      f.number("layer_norm_eps", 0.0, 1.0, true, static_cast<double>(def.layer_norm_eps)));
  if (!(c.layer_norm_eps > 0.0f)) f.fail("layer_norm_eps", "is below float precision");
  const std::string act =
      f.string("hidden_act", def.activation == clip_activation::gelu ? "gelu" : "quick_gelu");
  if (act == "quick_gelu") {
    c.activation = clip_activation::quick_gelu;
  } else if (act == "gelu") {
    c.activation = clip_activation::gelu;
  } else {
    f.fail("hidden_act", "\"quick_gelu\" or \"gelu\"", f.value_or_null("hidden_act"));
  }
  if (c.hidden % c.heads != 0) {
    f.fail("hidden_size",
           fmt::format("({}) is not a multiple of num_attention_heads ({})", c.hidden, c.heads));
  }
  if (c.image_size % c.patch_size != 0) {
    f.fail("patch_size",
           fmt::format("({}) does not divide image_size ({})", c.patch_size, c.image_size));
  }
  if (static_cast<std::int64_t>(c.grid()) * c.grid() >= (std::int64_t{1} << 30)) {
    f.fail("image_size", fmt::format("gives {} patches per side, too many", c.grid()));
  }
  c.validate();  // everything above already checked; kept as the struct's own guard
  return c;
}

/// Reads the tower from a CLIP folder's config document (see `parse_clip_config`).
inline clip_config read_clip_folder_config(const nlohmann::json& doc, std::string_view label) {
  const json_fields top(doc, label, "");
  const std::string type = top.string("model_type", std::string(), true);
  if (type == "clip_vision_model")
    return read_clip_vision_fields(top, clip_vision_config_defaults());
  if (!type.empty() && type != "clip") {
    top.fail("model_type", "\"clip\" or \"clip_vision_model\" (only CLIP towers are supported)",
             top.value_or_null("model_type"));
  }
  if (type.empty() && !top.has("vision_config") && !top.has("vision_config_dict")) {
    return read_clip_vision_fields(top, clip_vision_config_defaults());  // a bare vision config
  }
  // CLIPConfig: `vision_config_dict` (old files), when present, replaces `vision_config` whole,
  // missing fields taking CLIPVisionConfig's defaults, as transformers' CLIPConfig does.
  if (auto d = top.object_or_null("vision_config_dict")) {
    return read_clip_vision_fields(*d, clip_vision_config_defaults());
  }
  if (auto v = top.object_or_null("vision_config")) {
    return read_clip_vision_fields(*v, clip_vision_config_defaults());
  }
  return clip_vision_config_defaults();
}

}  // namespace detail

/// @brief The tower's sizes from a CLIP folder's `config.json` text: a `CLIPVisionConfig`
/// (`model_type` `clip_vision_model`, or no `model_type` and no `vision_config`) or a
/// `CLIPConfig` (`model_type` `clip`, sizes in `vision_config`, overridden whole by
/// `vision_config_dict` when present). Missing fields take `CLIPVisionConfig`'s defaults.
/// @param label names the file in errors.
/// @throws dynllava::error naming the file and the field's JSON path for malformed JSON, a
/// mistyped or out-of-range field, a tower that is not CLIP, or inconsistent sizes.
[[nodiscard]] inline clip_config parse_clip_config(std::string_view text, std::string_view label,
                                                   const json_limits& limits = {}) {
  const nlohmann::json doc = parse_json_document(text, label, limits);
  return detail::read_clip_folder_config(doc, label);
}

/// @brief `parse_clip_config` of `path` (a `config.json`, or a folder holding one).
/// @throws dynllava::error as `parse_clip_config`, or when the file is missing or too large.
[[nodiscard]] inline clip_config read_clip_config(const std::filesystem::path& path,
                                                  const json_limits& limits = {}) {
  std::error_code ec;
  const auto file = std::filesystem::is_directory(path, ec) ? path / "config.json" : path;
  const std::string label = quote_untrusted(file.string(), 200);
  return parse_clip_config(read_small_file(file, label, limits.max_bytes), label, limits);
}

}  // namespace dynllava::io

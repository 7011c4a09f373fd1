// SPDX-License-Identifier: Apache-2.0
/// @file read_image_preprocess.hpp
/// @brief Reads how a LLaVA model folder preprocesses images (`model/image_preprocess.hpp`).
///
/// - Hugging Face layouts: `preprocessor_config.json` of the model folder (or, as transformers 5
///   saves a processor, the `image_processor` object of `processor_config.json`). The processor
///   type decides padding: `CLIPImageProcessor` never pads; `LlavaImageProcessor` pads to a
///   square with `int(255 * image_mean)` when `do_pad` is true (default false). Without either
///   file: no padding, CLIP's mean and std, the tower's `image_size` for the resize and crop.
/// - Original layouts: `image_aspect_ratio` of `config.json` decides padding (LLaVA's
///   `expand2square`); the rest is the CLIP tower's processor: its folder's
///   `preprocessor_config.json` when there is one, else CLIPImageProcessor's mean and std at the
///   tower's `image_size`.
///
/// Only what the preprocessing implements is accepted: resize of the shortest edge with bicubic
/// resampling, a centre crop no larger than the resized image and equal to the tower's input,
/// RGB conversion. `do_resize`, `do_center_crop` or `do_convert_rgb` false, `size` as
/// height/width, another `resample` or an unknown processor type are errors naming the file and
/// the field. `do_rescale` false is `rescale_factor = 1`; `do_normalize` false is mean 0, std 1.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/io/detail/json_fields.hpp>
#include <dynllava/io/json_document.hpp>
#include <dynllava/io/read_llava_config.hpp>
#include <dynllava/model/image_preprocess.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace dynllava::io {

/// Which processor a `preprocessor_config.json` describes.
enum class image_processor_kind : std::uint8_t {
  clip,   ///< `CLIPImageProcessor` (also `...Fast`, `...Pil`, `CLIPFeatureExtractor`): no padding
  llava,  ///< `LlavaImageProcessor` (also `...Fast`, `...Pil`): pads when `do_pad`
};

namespace detail {

/// `size` or `crop_size`: an integer, `{"shortest_edge": n}` (size) or `{"height": h,
/// "width": w}` (crop_size). Returns {h, w}; for `size` both are the shortest edge.
inline std::array<index_t, 2> read_image_size(const json_fields& f, std::string_view key,
                                              bool shortest_edge, index_t def) {
  const json* v = f.find(key);
  if (v == nullptr) return {def, def};
  if (v->is_number()) {
    const auto n = static_cast<index_t>(f.integer(key, 1, 1 << 16));
    return {n, n};
  }
  if (!v->is_object()) {
    f.fail(key,
           shortest_edge ? "an integer or {\"shortest_edge\": n}"
                         : "an integer or "
                           "{\"height\": h, "
                           "\"width\": w}",
           *v);
  }
  const json_fields s(*v, f.file(), f.path_of(key));
  if (shortest_edge) {
    if (!s.has("shortest_edge")) {
      f.fail(key,
             "{\"shortest_edge\": n} (resizing to a fixed height and width or a longest "
             "edge is not supported)",
             *v);
    }
    if (s.has("longest_edge"))
      s.fail("longest_edge", "is set: a longest-edge cap is not supported");
    const auto n = static_cast<index_t>(s.integer("shortest_edge", 1, 1 << 16));
    return {n, n};
  }
  return {static_cast<index_t>(s.integer("height", 1, 1 << 16)),
          static_cast<index_t>(s.integer("width", 1, 1 << 16))};
}

/// `image_mean` / `image_std`: three finite numbers in `[lo, hi]` (or one, for every channel).
inline std::array<double, 3> read_channels(const json_fields& f, std::string_view key, double lo,
                                           double hi, bool lo_open, std::array<double, 3> def) {
  const json* v = f.find(key);
  if (v == nullptr) return def;
  const std::string what =
      fmt::format("three finite numbers in {}{}, {}]", lo_open ? "(" : "[", lo, hi);
  const auto ok = [&](const json& x) {
    if (!x.is_number()) return false;
    const double d = x.get<double>();
    return std::isfinite(d) && (lo_open ? d > lo : d >= lo) && d <= hi;
  };
  if (v->is_number() && ok(*v)) {
    const double d = v->get<double>();
    return {d, d, d};
  }
  if (!v->is_array() || v->size() != 3 || !ok((*v)[0]) || !ok((*v)[1]) || !ok((*v)[2])) {
    f.fail(key, what, *v);
  }
  return {(*v)[0].get<double>(), (*v)[1].get<double>(), (*v)[2].get<double>()};
}

/// A boolean that must be `want` (absent: `want`), else an error saying what is unsupported.
inline void expect_flag(const json_fields& f, std::string_view key, bool want,
                        std::string_view why) {
  if (f.boolean(key, want) != want) f.fail(key, fmt::format("is {}: {}", !want, why));
}

}  // namespace detail

/// @brief Reads a processor's JSON object (a `preprocessor_config.json`, or the
/// `image_processor` of a `processor_config.json`) for a tower of `tower_image_size` pixels.
/// @param label names the file in errors. @param path the object's JSON path ("" = top level).
/// @param kind_out receives the processor type when not null.
/// @return the preprocessing; `aspect` is `pad` only for `LlavaImageProcessor` with `do_pad`.
/// @throws dynllava::error naming the file and the field (see the file comment).
[[nodiscard]] inline image_preprocess read_image_processor_object(
    const nlohmann::json& obj, std::string_view label, std::string path, index_t tower_image_size,
    image_processor_kind* kind_out = nullptr) {
  const detail::json_fields f(obj, label, std::move(path));
  const char* type_key = f.has("image_processor_type")     ? "image_processor_type"
                         : f.has("feature_extractor_type") ? "feature_extractor_type"
                                                           : nullptr;
  if (type_key == nullptr) {
    f.fail("image_processor_type",
           "is missing (expected CLIPImageProcessor or "
           "LlavaImageProcessor; feature_extractor_type is missing too)");
  }
  const std::string type = f.string(type_key);
  image_processor_kind kind{};
  if (type == "CLIPImageProcessor" || type == "CLIPImageProcessorFast" ||
      type == "CLIPImageProcessorPil" || type == "CLIPFeatureExtractor") {
    kind = image_processor_kind::clip;
  } else if (type == "LlavaImageProcessor" || type == "LlavaImageProcessorFast" ||
             type == "LlavaImageProcessorPil") {
    kind = image_processor_kind::llava;
  } else {
    f.fail(type_key,
           "\"CLIPImageProcessor\" or \"LlavaImageProcessor\" (or their Fast / Pil "
           "variants)",
           f.value_or_null(type_key));
  }
  if (kind_out != nullptr) *kind_out = kind;

  image_preprocess p;
  // CLIPImageProcessor ignores do_pad; LlavaImageProcessor pads when it is true (default false).
  const bool pad = f.boolean("do_pad", false);
  p.aspect = kind == image_processor_kind::llava && pad ? image_aspect::pad : image_aspect::square;
  detail::expect_flag(f, "do_resize", true, "only resizing the shortest edge is supported");
  detail::expect_flag(f, "do_center_crop", true,
                      "only a centre crop to the tower's input is "
                      "supported");
  detail::expect_flag(f, "do_convert_rgb", true, "images are always converted to RGB");
  if (const auto r = f.integer_or_null("resample", 0, 5); r && *r != 3) {
    f.fail("resample", "3 (bicubic, the only filter supported)", f.value_or_null("resample"));
  }
  // transformers' class defaults: shortest edge 224, crop 224 x 224.
  p.shortest_edge = detail::read_image_size(f, "size", true, 224)[0];
  const auto crop = detail::read_image_size(f, "crop_size", false, 224);
  p.crop_height = crop[0];
  p.crop_width = crop[1];
  if (p.crop_height > p.shortest_edge || p.crop_width > p.shortest_edge) {
    f.fail("crop_size", fmt::format("({} x {}) is larger than size.shortest_edge ({}): padding "
                                    "the crop is not supported",
                                    p.crop_height, p.crop_width, p.shortest_edge));
  }
  if (p.crop_height != tower_image_size || p.crop_width != tower_image_size) {
    f.fail("crop_size", fmt::format("({} x {}) differs from the vision tower's image_size ({})",
                                    p.crop_height, p.crop_width, tower_image_size));
  }
  const std::array<double, 3> clip_mean{0.48145466, 0.4578275, 0.40821073};
  const std::array<double, 3> clip_std{0.26862954, 0.26130258, 0.27577711};
  const auto mean = detail::read_channels(f, "image_mean", 0.0, 1.0, false, clip_mean);
  const auto std_dev = detail::read_channels(f, "image_std", 0.0, 1e3, true, clip_std);
  const double factor = f.number("rescale_factor", 0.0, 1.0, true, 1.0 / 255.0);
  p.rescale_factor = f.boolean("do_rescale", true) ? factor : 1.0;
  const bool normalize = f.boolean("do_normalize", true);
  for (std::size_t c = 0; c < 3; ++c) {
    p.pad_colour[c] = static_cast<std::uint8_t>(mean[c] * 255.0);  // Python's int(): truncation
    p.image_mean[c] = normalize ? static_cast<float>(mean[c]) : 0.0F;
    p.image_std[c] = normalize ? static_cast<float>(std_dev[c]) : 1.0F;
  }
  return p;
}

/// @brief Parses a `preprocessor_config.json` text (see `read_image_processor_object`).
[[nodiscard]] inline image_preprocess parse_preprocessor_config(
    std::string_view text, std::string_view label, index_t tower_image_size,
    image_processor_kind* kind_out = nullptr, const json_limits& limits = {}) {
  const nlohmann::json doc = parse_json_document(text, label, limits);
  return read_image_processor_object(doc, label, "", tower_image_size, kind_out);
}

/// The CLIP processor's defaults at the tower's input size, with `aspect`.
[[nodiscard]] inline image_preprocess clip_image_preprocess(index_t tower_image_size,
                                                            image_aspect aspect) {
  image_preprocess p;
  p.aspect = aspect;
  p.shortest_edge = tower_image_size;
  p.crop_height = tower_image_size;
  p.crop_width = tower_image_size;
  return p;
}

/// @brief The preprocessing of a model folder whose `config.json` gave `file` (see the file
/// comment for where each part comes from).
/// @throws dynllava::error naming the file and the field of a malformed, too large or
/// unsupported processor configuration.
[[nodiscard]] inline image_preprocess read_image_preprocess(const std::filesystem::path& model_dir,
                                                            const llava_config_file& file,
                                                            const json_limits& limits = {}) {
  namespace fs = std::filesystem;
  const index_t side = file.config.vision.image_size;
  const auto present = [](const fs::path& p) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(p, ec));
  };
  const auto read_file = [&](const fs::path& p) {
    const std::string label = quote_untrusted(p.string(), 200);
    return std::pair{
        label, parse_json_document(read_small_file(p, label, limits.max_bytes), label, limits)};
  };
  if (file.style == llava_config_style::hugging_face) {
    if (const fs::path p = model_dir / "preprocessor_config.json"; present(p)) {
      const auto [label, doc] = read_file(p);
      return read_image_processor_object(doc, label, "", side);
    }
    if (const fs::path p = model_dir / "processor_config.json"; present(p)) {
      const auto [label, doc] = read_file(p);
      const detail::json_fields top(doc, label, "");
      if (top.object_or_null("image_processor")) {
        return read_image_processor_object(*top.find("image_processor"), label, "image_processor",
                                           side);
      }
    }
    return clip_image_preprocess(side, file.config.aspect);
  }
  // Original: LLaVA pads by itself (image_aspect_ratio), with the tower's processor's mean.
  if (file.clip_dir) {
    if (const fs::path p = *file.clip_dir / "preprocessor_config.json"; present(p)) {
      const auto [label, doc] = read_file(p);
      image_processor_kind kind{};
      image_preprocess out = read_image_processor_object(doc, label, "", side, &kind);
      if (kind != image_processor_kind::clip) {
        const detail::json_fields top(doc, label, "");
        top.fail("image_processor_type",
                 "a CLIP processor (the original LLaVA code loads the "
                 "tower's with CLIPImageProcessor)",
                 top.value_or_null("image_processor_type"));
      }
      out.aspect = file.config.aspect;
      return out;
    }
  }
  return clip_image_preprocess(side, file.config.aspect);
}

}  // namespace dynllava::io

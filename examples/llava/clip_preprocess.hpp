// SPDX-License-Identifier: Apache-2.0
/// @file clip_preprocess.hpp
/// @brief LLaVA-1.5's image preprocessing: pad to a square with the CLIP mean colour, resize
/// the shortest edge with PIL's bicubic filter, centre-crop, rescale by 1/255 and normalise, as
/// LLaVA's `expand2square` followed by transformers' PIL-based `CLIPImageProcessor`
/// (`use_fast=False`) computes it. The 8-bit image after the crop equals PIL's bit for bit;
/// `pixel_values` follow from it with the same float32 operations as NumPy's.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/model/image_preprocess.hpp>
#include <dynllava/model/llava_config.hpp>

#include "image.hpp"

#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace dynllava::llava {

/// The preprocessing parameters; the defaults are LLaVA-1.5's (CLIP ViT-L/14 at 336 px).
struct clip_preprocess_options {
  image_aspect aspect = image_aspect::pad;  ///< pad to a square first, or resize as is
  index_t shortest_edge = 336;              ///< the resize target of the shorter side
  index_t crop_height = 336;                ///< centre crop; at most `shortest_edge`
  index_t crop_width = 336;
  /// Canvas colour of `pad`: LLaVA uses `int(255 * image_mean)` per channel.
  std::array<std::uint8_t, 3> pad_colour{122, 116, 104};
  double rescale_factor = 1.0 / 255.0;
  std::array<float, 3> image_mean{0.48145466F, 0.4578275F, 0.40821073F};
  std::array<float, 3> image_std{0.26862954F, 0.26130258F, 0.27577711F};
  /// Refuse inputs whose resize would hold more than this many intermediate pixels (the padded
  /// square is never materialised, but a 1 x 10^7 image still needs `336 x 10^7` of them).
  std::int64_t max_work_pixels = std::int64_t{64} << 20;

  /// @throws dynllava::error naming the first field out of range.
  void validate() const;
};

/// @brief The options for a loaded model folder's preprocessing (`io::llava_folder::preprocess`,
/// read by `io::read_image_preprocess`): every field carried over; the work limit is the default.
[[nodiscard]] clip_preprocess_options preprocess_options(const image_preprocess& p);

/// @brief LLaVA's `expand2square`: a `max(w, h)` square of `colour` with `image` pasted at
/// `((side - w) / 2, (side - h) / 2)`; a square image is returned unchanged.
[[nodiscard]] rgb_image expand_to_square(const rgb_image& image,
                                         std::array<std::uint8_t, 3> colour);

/// @brief transformers' `get_resize_output_image_size(default_to_square=False)`: the
/// `(width, height)` whose shorter side is `shortest_edge` and whose longer side is
/// `int(shortest_edge * long / short)` (truncated).
[[nodiscard]] std::pair<index_t, index_t> shortest_edge_size(index_t width, index_t height,
                                                             index_t shortest_edge);

/// @brief `PIL.Image.resize((width, height), Image.BICUBIC)` on an RGB image: separable
/// bicubic convolution (a = -0.5) whose support widens with the downscale factor, horizontal
/// pass first with its result rounded to 8 bits, PIL's 22-bit fixed-point coefficients.
/// @throws dynllava::error when a size is not positive or the work exceeds `max_work_pixels`.
[[nodiscard]] rgb_image resize_bicubic(const rgb_image& image, index_t width, index_t height,
                                       std::int64_t max_work_pixels = std::int64_t{64} << 20);

/// @brief The 8-bit image `pixel_values` are computed from: padded (aspect `pad`), resized,
/// centre-cropped to `[crop_height, crop_width, 3]`.
/// @throws dynllava::error for an empty image or invalid options.
[[nodiscard]] rgb_image clip_resize_crop(const rgb_image& image,
                                         const clip_preprocess_options& options = {});

/// @brief Rescale and normalise an 8-bit image into `out`, channels first:
/// `out[c, y, x] = (float(v * rescale_factor) - mean[c]) / std[c]` in float32.
/// @param[out] out `[3, image.height, image.width]` host, written
/// @throws dynllava::error when `out` has the wrong size.
void clip_normalize(const rgb_image& image, const clip_preprocess_options& options,
                    std::span<float> out);

/// @brief The whole preprocessing: `pixel_values` `[3, crop_height, crop_width]` fp32 CHW.
[[nodiscard]] std::vector<float> clip_pixel_values(const rgb_image& image,
                                                   const clip_preprocess_options& options = {});

}  // namespace dynllava::llava

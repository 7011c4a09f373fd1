// SPDX-License-Identifier: Apache-2.0
/// @file image_decode.cpp
/// @brief libFuzzer target: bytes -> decode_image (1 Mi pixel budget) -> when it decodes, the
/// LLaVA-1.5 preprocessing in both aspect modes. Any dynllava::error is an accepted outcome;
/// a crash, a sanitizer report, a hang or an allocation over libFuzzer's limit is a bug.
#include <dynllava/core/error.hpp>

#include "check_message.hpp"

#include <algorithm>
#include <clip_preprocess.hpp>
#include <cstddef>
#include <cstdint>
#include <image.hpp>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace ll = dynllava::llava;
  ll::image_limits limits;
  limits.max_pixels = std::int64_t{1} << 20;  // small images keep runs fast
  limits.max_file_bytes = std::int64_t{1} << 20;
  try {
    const ll::rgb_image image = ll::decode_image(std::span(data, size), "<fuzz input>", limits);
    // Output sizes vary with the input (1..97 pixels, the crop up to 4 smaller) so that runs
    // stay fast and odd sizes are covered; the real 336 only for small images.
    const auto edge = static_cast<dynllava::index_t>(1 + size % 97);
    for (const auto aspect : {dynllava::image_aspect::pad, dynllava::image_aspect::square}) {
      ll::clip_preprocess_options options;
      options.aspect = aspect;
      options.max_work_pixels = std::int64_t{1} << 18;  // thin images: refused, not slow
      const bool full = std::int64_t{image.width} * image.height <= 4096;
      if (!full) {
        options.shortest_edge = edge;
        options.crop_width = std::max<dynllava::index_t>(1, edge - static_cast<int>(size % 5));
        options.crop_height = std::max<dynllava::index_t>(1, edge - static_cast<int>(size % 3));
      }
      try {
        const auto pixel_values = ll::clip_pixel_values(image, options);
        if (pixel_values.size() != std::size_t{3} * static_cast<std::size_t>(options.crop_width) *
                                       static_cast<std::size_t>(options.crop_height)) {
          __builtin_trap();
        }
      } catch (const dynllava::error& e) {  // e.g. an aspect ratio over the work budget
        dynllava::fuzz::check_message(e.what());
      }
    }
  } catch (const dynllava::error& e) {
    dynllava::fuzz::check_message(e.what());
  }
  return 0;
}

// SPDX-License-Identifier: Apache-2.0
/// @file image.hpp
/// @brief PNG and JPEG decoding to 8-bit RGB (stb_image), with a memory budget checked before
/// decoding. Decoded pixels equal what `PIL.Image.open(f).convert("RGB")` gives for PNG (for
/// JPEG, stb's IDCT and chroma upsampling differ from libjpeg's by a few levels).
#pragma once

#include <dynllava/core/config.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dynllava::llava {

/// An 8-bit RGB image, owning its pixels.
struct rgb_image {
  index_t width = 0;
  index_t height = 0;
  std::vector<std::uint8_t> pixels;  ///< [height, width, 3] row-major (HWC), host

  /// The (r, g, b) triple at column `x`, row `y` (unchecked).
  [[nodiscard]] const std::uint8_t* at(index_t x, index_t y) const noexcept {
    return pixels.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) +
                            static_cast<std::size_t>(x)) *
                               3;
  }
};

/// What a decode may cost. An image whose header declares more than `max_pixels` pixels is
/// refused before any pixel is decoded. The decoder's own allocations are then capped at
/// `decoder_bytes_per_pixel` times the declared pixels (rounded up to whole 32x32 JPEG blocks,
/// at most `max_pixels`) plus 1 MiB, so a PNG whose compressed data expands far beyond its
/// declared size fails with an error instead of exhausting memory.
struct image_limits {
  std::int64_t max_pixels = std::int64_t{64} << 20;       ///< 64 Mi pixels (8192 x 8192)
  std::int64_t max_file_bytes = std::int64_t{256} << 20;  ///< files larger than this are refused
  /// Worst case of stb_image: a 16-bit RGBA PNG holds 8 bytes per pixel of inflated data and
  /// 8 more of 16-bit pixels before the 8-bit conversion.
  static constexpr std::int64_t decoder_bytes_per_pixel = 20;
};

/// The two accepted container formats, told apart by their first bytes (never the file name).
enum class image_format : std::uint8_t { png, jpeg };

/// @brief The format of `bytes` from its signature.
/// @param[in] name names the input in the error message (a file path or "<memory>").
/// @throws dynllava::error when `bytes` start with neither the PNG nor the JPEG signature.
[[nodiscard]] image_format sniff_image_format(std::span<const std::uint8_t> bytes,
                                              std::string_view name);

/// @brief Decodes a PNG or JPEG held in memory to 8-bit RGB.
///
/// Colour types, as `PIL.Image.convert("RGB")` does them: grey is replicated to the three
/// channels; alpha (grey + alpha, RGBA, a palette's or a colour key's transparency) is dropped
/// without compositing; palettes are looked up; 1/2/4-bit grey is scaled to 0..255; 16-bit
/// colour and grey + alpha keep the high byte; 16-bit grey is clipped to 255 (PIL opens it as
/// `I;16` and converts by clipping, so values above 255 all become white); a CMYK JPEG is
/// converted from Adobe's inverted CMYK as PIL does. EXIF orientation is
/// ignored (neither PIL's `open` nor LLaVA applies it). A JPEG must contain its end-of-image
/// marker after the first scan (a truncated JPEG is an error, as in PIL).
/// @param[in] bytes the whole file, host, read-only
/// @param[in] name names the input in error messages (quoted and escaped there)
/// @throws dynllava::error naming the input and the problem: not PNG/JPEG, a declared size over
/// `limits.max_pixels`, a PNG chunk that overruns the file or fails its CRC, no PNG IEND or
/// JPEG end-of-image marker (truncated), a JPEG Huffman table of more than 256 codes, a header
/// stb cannot read, corrupt data (with stb's reason), or a decoder allocation over the budget.
[[nodiscard]] rgb_image decode_image(std::span<const std::uint8_t> bytes, std::string_view name,
                                     const image_limits& limits = {});

/// @brief Reads `file` (at most `limits.max_file_bytes`) and decodes it with `decode_image`.
/// @throws dynllava::error when the file is missing, a directory, unreadable, too large, or
/// its content is refused by `decode_image`.
[[nodiscard]] rgb_image load_image(const std::filesystem::path& file,
                                   const image_limits& limits = {});

}  // namespace dynllava::llava

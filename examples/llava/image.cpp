// SPDX-License-Identifier: Apache-2.0
/// @file image.cpp
/// @brief PNG/JPEG decoding with stb_image behind a size budget; see image.hpp.
#include "image.hpp"

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include "stb_alloc.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <memory>
#include <stb_image.h>
#include <system_error>
#include <zlib.h>

namespace dynllava::llava {
namespace {

constexpr std::array<std::uint8_t, 8> png_signature{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
constexpr std::array<std::uint8_t, 3> jpeg_signature{0xff, 0xd8, 0xff};

constexpr std::string_view format_name(image_format f) noexcept {
  return f == image_format::png ? "PNG" : "JPEG";
}

std::string first_bytes_hex(std::span<const std::uint8_t> bytes) {
  std::string out;
  for (std::size_t i = 0; i < std::min<std::size_t>(bytes.size(), 8); ++i) {
    out += fmt::format("{}{:02x}", i == 0 ? "" : " ", bytes[i]);
  }
  return out.empty() ? "none: the input is empty" : out;
}

/// stb's reason for the last failure, escaped: some reasons carry bytes of the file (an unknown
/// PNG chunk's type).
std::string stb_reason() {
  const char* r = stbi_failure_reason();
  if (r == nullptr) return "unknown failure";
  const std::string quoted = quote_untrusted(r);
  return quoted.substr(1, quoted.size() - 2);
}

struct declared_size {
  std::uint32_t width = 0;
  std::uint32_t height = 0;
  bool found = false;
};

std::uint32_t be16(const std::uint8_t* p) noexcept { return (std::uint32_t{p[0]} << 8) | p[1]; }
std::uint32_t be32(const std::uint8_t* p) noexcept { return (be16(p) << 16) | be16(p + 2); }

/// The size in a PNG's IHDR (always the first chunk), without trusting stb to report it.
declared_size png_declared_size(std::span<const std::uint8_t> b) noexcept {
  if (b.size() < 24 || !std::equal(b.begin() + 12, b.begin() + 16, "IHDR")) return {};
  return {be32(&b[16]), be32(&b[20]), true};
}

/// Checks a PNG's chunk framing: every chunk's length fits the file, its CRC matches (zlib's
/// crc32; stb ignores CRCs, PIL checks them), and an IEND chunk ends the image. Returns an empty
/// string when the framing is sound, else the problem. Linear in the file's size. Fuzzing
/// builds skip the CRC comparison, so that mutated inputs still reach the decoder.
std::string png_framing_problem(std::span<const std::uint8_t> b) {
  std::size_t pos = 8;  // after the signature
  while (true) {
    if (b.size() - pos < 12) {
      return fmt::format("truncated PNG: the file ends at byte {} without an IEND chunk", b.size());
    }
    const std::uint32_t length = be32(&b[pos]);
    const std::string type =
        quote_untrusted(std::string_view(reinterpret_cast<const char*>(&b[pos + 4]), 4));
    if (length > b.size() - pos - 12) {
      return fmt::format("truncated PNG: chunk {} at byte {} declares {} bytes of data, {} remain",
                         type, pos, length, b.size() - pos - 12);
    }
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    const auto crc = static_cast<std::uint32_t>(
        crc32(0L, &b[pos + 4], static_cast<uInt>(length) + 4));  // type and data
    if (crc != be32(&b[pos + 8 + length])) {
      return fmt::format("corrupt PNG: chunk {} at byte {} fails its CRC check", type, pos);
    }
#endif
    if (std::equal(b.begin() + static_cast<std::ptrdiff_t>(pos + 4),
                   b.begin() + static_cast<std::ptrdiff_t>(pos + 8), "IEND")) {
      return {};
    }
    pos += 12 + std::size_t{length};
  }
}

/// What the JPEG's markers say, read before stb sees the file: the frame size (first SOFn),
/// whether an end-of-image marker follows the first scan, and the first Huffman table (DHT)
/// with more than 256 codes (stb_image 2.27, Debian's, writes past its tables for those).
///
/// One linear pass over the markers as stb_image finds them: segments are skipped by their
/// length, bytes outside segments are scanned for FF followed by a marker code (FF 00 is a
/// stuffed data byte, FF FF fill, RSTn and TEM carry no length). This sees every marker stb can
/// act on (stb skips junk between segments byte by byte, and stops entropy-coded data at the
/// first FF that is not followed by 00), so every table stb would build is checked.
struct jpeg_layout {
  declared_size size;
  std::size_t scan = 0;         ///< offset of the first SOS marker, 0 when none
  bool end_after_scan = false;  ///< an EOI marker follows the first SOS
  std::size_t bad_table = 0;    ///< offset of a DHT segment with a table over 256 codes
  std::uint32_t bad_table_codes = 0;
};

jpeg_layout jpeg_walk(std::span<const std::uint8_t> b) noexcept {
  const std::size_t n = b.size();
  const auto at = [&](std::size_t i) -> std::uint32_t { return i < n ? b[i] : 0U; };
  jpeg_layout out;
  std::size_t pos = 2;  // after SOI
  while (pos < n) {
    if (b[pos] != 0xff) {  // entropy-coded data, or junk that stb skips
      ++pos;
      continue;
    }
    std::size_t q = pos;
    while (q < n && b[q] == 0xff) ++q;  // fill bytes
    if (q >= n) break;
    const std::uint8_t marker = b[q];
    pos = q + 1;
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue;
    if (marker == 0xd9) {  // EOI: stb stops here
      out.end_after_scan = out.scan != 0;
      break;
    }
    const std::size_t seg = q + 1;  // the two length bytes
    const std::uint32_t length = (at(seg) << 8) | at(seg + 1);
    const bool frame =
        marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
    if (frame && !out.size.found && seg + 6 < n) {
      out.size = {(at(seg + 5) << 8) | at(seg + 6), (at(seg + 3) << 8) | at(seg + 4), true};
    }
    if (marker == 0xda && out.scan == 0) out.scan = q - 1;
    if (marker == 0xc4) {
      // As stb reads it: tables follow each other while the length lasts; each is a class
      // byte, 16 code counts and the codes. Bytes past the file read as 0, as in stb.
      std::size_t t = seg + 2;
      std::int64_t left = std::int64_t{length} - 2;
      while (left > 0 && t < n) {
        std::uint32_t codes = 0;
        for (std::size_t i = 1; i <= 16; ++i) codes += at(t + i);
        if (codes > 256 && out.bad_table == 0) {
          out.bad_table = q - 1;
          out.bad_table_codes = codes;
        }
        t += 17 + codes;
        left -= 17 + std::int64_t{codes};
      }
    }
    pos = seg + std::max<std::uint32_t>(length, 2);
  }
  return out;
}

template <class T>
struct stb_deleter {
  void operator()(T* p) const noexcept { stbi_image_free(p); }
};

}  // namespace

image_format sniff_image_format(std::span<const std::uint8_t> bytes, std::string_view name) {
  if (bytes.size() >= png_signature.size() &&
      std::equal(png_signature.begin(), png_signature.end(), bytes.begin())) {
    return image_format::png;
  }
  if (bytes.size() >= jpeg_signature.size() &&
      std::equal(jpeg_signature.begin(), jpeg_signature.end(), bytes.begin())) {
    return image_format::jpeg;
  }
  DYNLLAVA_FAIL(
      "image {}: not a PNG or JPEG file (first bytes: {}); only PNG and JPEG are accepted, "
      "recognised by their signature",
      quote_untrusted(name), first_bytes_hex(bytes));
}

rgb_image decode_image(std::span<const std::uint8_t> bytes, std::string_view name,
                       const image_limits& limits) {
  DYNLLAVA_EXPECTS(limits.max_pixels > 0 && limits.max_file_bytes > 0,
                   "decode_image: the limits must be positive (max_pixels {}, max_file_bytes {})",
                   limits.max_pixels, limits.max_file_bytes);
  const image_format format = sniff_image_format(bytes, name);
  DYNLLAVA_EXPECTS(bytes.size() <= static_cast<std::size_t>(limits.max_file_bytes) &&
                       bytes.size() <= static_cast<std::size_t>(INT_MAX),
                   "image {}: {} bytes exceed the limit of {} bytes", quote_untrusted(name),
                   bytes.size(), std::min<std::int64_t>(limits.max_file_bytes, INT_MAX));
  const int length = static_cast<int>(bytes.size());

  // The declared size, read here first: stb refuses very large sizes with a vague reason.
  const jpeg_layout jpeg = format == image_format::jpeg ? jpeg_walk(bytes) : jpeg_layout{};
  const declared_size declared = format == image_format::png ? png_declared_size(bytes) : jpeg.size;
  if (declared.found) {
    const std::uint64_t n = std::uint64_t{declared.width} * declared.height;  // < 2^64
    DYNLLAVA_EXPECTS(n <= static_cast<std::uint64_t>(limits.max_pixels),
                     "image {}: {}x{} = {} pixels exceed the budget of {} pixels; refused before "
                     "decoding",
                     quote_untrusted(name), declared.width, declared.height, n, limits.max_pixels);
  }
  if (format == image_format::png) {
    const std::string problem = png_framing_problem(bytes);
    DYNLLAVA_EXPECTS(problem.empty(), "image {}: {}", quote_untrusted(name), problem);
  }
  if (format == image_format::jpeg) {  // before stb reads a byte of it
    // stb_image pads a truncated scan with zeros and reports success; PIL reports "image file
    // is truncated". Entropy-coded data stuffs every literal FF (FF 00), so an FF D9 found by
    // the walk after the first scan is the real end.
    DYNLLAVA_EXPECTS(jpeg.bad_table == 0,
                     "image {}: corrupt JPEG: the Huffman table segment at byte {} lists {} codes "
                     "(at most 256)",
                     quote_untrusted(name), jpeg.bad_table, jpeg.bad_table_codes);
    DYNLLAVA_EXPECTS(jpeg.end_after_scan,
                     "image {}: truncated JPEG: no end-of-image marker after the first scan",
                     quote_untrusted(name));
  }
  int w = 0;
  int h = 0;
  int channels = 0;
  if (stbi_info_from_memory(bytes.data(), length, &w, &h, &channels) == 0) {
    DYNLLAVA_FAIL(
        "image {}: cannot read the {} header{}: {}", quote_untrusted(name), format_name(format),
        declared.found ? fmt::format(" (declaring {}x{} pixels)", declared.width, declared.height)
                       : std::string(),
        stb_reason());
  }
  DYNLLAVA_EXPECTS(w > 0 && h > 0, "image {}: the {} header declares {}x{} pixels",
                   quote_untrusted(name), format_name(format), w, h);
  const std::int64_t pixels = std::int64_t{w} * h;
  DYNLLAVA_EXPECTS(pixels <= limits.max_pixels,
                   "image {}: {}x{} = {} pixels exceed the budget of {} pixels; refused before "
                   "decoding",
                   quote_untrusted(name), w, h, pixels, limits.max_pixels);

  // The decoder's allocations: per declared pixel, rounded up to whole 32x32 blocks.
  const std::int64_t padded =
      std::min<std::int64_t>((std::int64_t{w} + 32) * (std::int64_t{h} + 32), limits.max_pixels);
  const auto budget =
      static_cast<std::size_t>(padded * image_limits::decoder_bytes_per_pixel + (1 << 20));

  rgb_image image;
  image.width = w;
  image.height = h;
  image.pixels.resize(static_cast<std::size_t>(pixels) * 3);
  int dw = 0;
  int dh = 0;
  int dc = 0;
  const bool grey16 = format == image_format::png && channels == 1 &&
                      stbi_is_16_bit_from_memory(bytes.data(), length) != 0;
  {
    detail::stb_budget_scope scope(budget);
    if (grey16) {
      // PIL's I;16 -> RGB conversion clips each value to 255.
      const std::unique_ptr<stbi_us, stb_deleter<stbi_us>> grey(
          stbi_load_16_from_memory(bytes.data(), length, &dw, &dh, &dc, 1));
      if (grey && dw == w && dh == h) {
        for (std::size_t i = 0; i < static_cast<std::size_t>(pixels); ++i) {
          const auto v = static_cast<std::uint8_t>(std::min<stbi_us>(grey.get()[i], 255));
          std::fill_n(image.pixels.begin() + static_cast<std::ptrdiff_t>(3 * i), 3, v);
        }
      } else if (grey) {
        DYNLLAVA_FAIL("image {}: decoded {}x{} pixels, the header declares {}x{}",
                      quote_untrusted(name), dw, dh, w, h);
      } else {
        DYNLLAVA_FAIL("image {}: corrupt or unsupported {}: {}", quote_untrusted(name),
                      format_name(format), stb_reason());
      }
    } else {
      const std::unique_ptr<stbi_uc, stb_deleter<stbi_uc>> rgb(
          stbi_load_from_memory(bytes.data(), length, &dw, &dh, &dc, 3));
      DYNLLAVA_EXPECTS(rgb != nullptr, "image {}: corrupt or unsupported {}: {}",
                       quote_untrusted(name), format_name(format), stb_reason());
      DYNLLAVA_EXPECTS(dw == w && dh == h,
                       "image {}: decoded {}x{} pixels, the header declares {}x{}",
                       quote_untrusted(name), dw, dh, w, h);
      std::copy_n(rgb.get(), image.pixels.size(), image.pixels.begin());
    }
  }
  return image;
}

rgb_image load_image(const std::filesystem::path& file, const image_limits& limits) {
  const std::string name = file.string();
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  DYNLLAVA_EXPECTS(!ec && std::filesystem::exists(status), "image {}: no such file",
                   quote_untrusted(name));
  DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(status), "image {}: not a regular file{}",
                   quote_untrusted(name),
                   std::filesystem::is_directory(status) ? " (a directory)" : "");
  const auto size = std::filesystem::file_size(file, ec);
  DYNLLAVA_EXPECTS(!ec, "image {}: cannot read its size: {}", quote_untrusted(name), ec.message());
  DYNLLAVA_EXPECTS(size <= static_cast<std::uintmax_t>(limits.max_file_bytes),
                   "image {}: {} bytes exceed the limit of {} bytes", quote_untrusted(name), size,
                   limits.max_file_bytes);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  std::ifstream in(file, std::ios::binary);
  DYNLLAVA_EXPECTS(in.good(), "image {}: cannot open it for reading", quote_untrusted(name));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  DYNLLAVA_EXPECTS(in.gcount() == static_cast<std::streamsize>(bytes.size()),
                   "image {}: read {} of its {} bytes", quote_untrusted(name), in.gcount(), size);
  return decode_image(bytes, name, limits);
}

}  // namespace dynllava::llava

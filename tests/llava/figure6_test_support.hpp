// SPDX-License-Identifier: Apache-2.0
/// @file figure6_test_support.hpp
/// @brief Test images for the Figure-6 page and a way back from its data URIs to pixels,
/// shared by the unit tests and the headless-browser test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <figure6_page.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dynllava::llava::test {

/// A `grid x grid`-patch image of `width x height` pixels: kept patches solid `colour`, every
/// pixel of a dropped patch a non-white gradient value (so only whitening makes them white);
/// patch (r, c) is dropped when `(r * 3 + c * 5) % 4 == 1`, so corners are kept and every row
/// and column holds both kinds.
inline figure6_image solid_test_image(int width, int height, int grid,
                                      const std::uint8_t (&colour)[3]) {
  figure6_image img;
  img.width = width;
  img.height = height;
  img.grid = grid;
  img.rgb.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  img.kept.resize(static_cast<std::size_t>(grid) * static_cast<std::size_t>(grid));
  for (int r = 0; r < grid; ++r) {
    for (int c = 0; c < grid; ++c) {
      img.kept[static_cast<std::size_t>(r * grid + c)] = (r * 3 + c * 5) % 4 == 1 ? 0 : 1;
    }
  }
  const int pw = width / grid;
  const int ph = height / grid;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const bool kept = img.kept[static_cast<std::size_t>((y / ph) * grid + x / pw)] != 0;
      std::uint8_t* p =
          img.rgb.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) +
                            static_cast<std::size_t>(x)) *
                               3;
      for (int ch = 0; ch < 3; ++ch) {
        p[ch] = kept ? colour[ch] : static_cast<std::uint8_t>((x * 7 + y * 3 + ch * 50) % 200);
      }
    }
  }
  return img;
}

/// The payloads of every `src="data:image/png;base64,..."` in `html`, in page order.
inline std::vector<std::string> png_data_uris(std::string_view html) {
  static constexpr std::string_view prefix = "src=\"data:image/png;base64,";
  std::vector<std::string> out;
  std::size_t pos = 0;
  while ((pos = html.find(prefix, pos)) != std::string_view::npos) {
    pos += prefix.size();
    const std::size_t end = html.find('"', pos);
    if (end == std::string_view::npos) break;
    out.emplace_back(html.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

/// Decodes standard base64 with padding; nullopt on any other character or a bad length.
inline std::optional<std::vector<std::uint8_t>> base64_decode(std::string_view s) {
  if (s.size() % 4 != 0) return std::nullopt;
  const auto value = [](char ch) -> int {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
  };
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i < s.size(); i += 4) {
    const bool last = i + 4 == s.size();
    const int pad = last ? (s[i + 3] == '=' ? (s[i + 2] == '=' ? 2 : 1) : 0) : 0;
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const int d = k >= 4 - static_cast<std::size_t>(pad) ? 0 : value(s[i + k]);
      if (d < 0) return std::nullopt;
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    out.push_back(static_cast<std::uint8_t>(v >> 16));
    if (pad < 2) out.push_back(static_cast<std::uint8_t>(v >> 8));
    if (pad < 1) out.push_back(static_cast<std::uint8_t>(v));
  }
  return out;
}

}  // namespace dynllava::llava::test

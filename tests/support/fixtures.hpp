// SPDX-License-Identifier: Apache-2.0
/// @file fixtures.hpp
/// @brief Paths of committed test fixtures and small file helpers for tests.
#pragma once

#include <dynllava/core/half.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace dynllava::test {

inline std::filesystem::path fixture_dir() { return DYNLLAVA_FIXTURE_DIR; }

/// A fresh directory under the system temp folder, removed on destruction.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(std::string_view name) {
    path = std::filesystem::temp_directory_path() /
           (std::string("dynllava-test-") + std::string(name) + "-" +
            std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

inline void write_file(const std::filesystem::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The reference pixel values of tests/fixtures/llava/image.png (CLIPImageProcessor after the
/// pad to a square, `[3, 336, 336]`), stored in fp16 and widened.
inline std::vector<float> reference_pixels() {
  const std::string bytes = read_file(fixture_dir() / "llava" / "pixel_values.f16.bin");
  std::vector<float> v(bytes.size() / 2);
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto lo = static_cast<unsigned char>(bytes[2 * i]);
    const auto hi = static_cast<unsigned char>(bytes[2 * i + 1]);
    v[i] = half_bits_to_float(static_cast<std::uint16_t>(lo | (hi << 8)));
  }
  return v;
}

}  // namespace dynllava::test

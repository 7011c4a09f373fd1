// SPDX-License-Identifier: Apache-2.0
/// @file fixtures.hpp
/// @brief Paths of committed test fixtures and small file helpers for tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

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

}  // namespace dynllava::test

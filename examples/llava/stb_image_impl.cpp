// SPDX-License-Identifier: Apache-2.0
/// @file stb_image_impl.cpp
/// @brief The one translation unit that compiles stb_image (Debian libstb-dev): PNG and JPEG
/// only, from memory only, every allocation through the budgeted allocator of stb_alloc.hpp.
#include "stb_alloc.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace dynllava::llava::detail {
namespace {

// Each block carries its size in a 16-byte header (keeps malloc's alignment for stb's data).
constexpr std::size_t header_bytes = 16;
thread_local std::size_t limit_bytes = std::numeric_limits<std::size_t>::max();
thread_local std::size_t live_bytes = 0;

std::size_t block_size(void* p) noexcept {
  std::size_t n = 0;
  std::memcpy(&n, static_cast<unsigned char*>(p) - header_bytes, sizeof n);
  return n;
}

}  // namespace

void* stb_malloc(std::size_t bytes) noexcept {
  if (bytes > limit_bytes - live_bytes || bytes > std::numeric_limits<std::size_t>::max() / 2) {
    return nullptr;
  }
  auto* base = static_cast<unsigned char*>(std::malloc(bytes + header_bytes));
  if (base == nullptr) return nullptr;
  std::memcpy(base, &bytes, sizeof bytes);
  live_bytes += bytes;
  return base + header_bytes;
}

void* stb_realloc(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return stb_malloc(bytes);
  const std::size_t old = block_size(p);
  if (bytes > old && (bytes - old > limit_bytes - live_bytes ||
                      bytes > std::numeric_limits<std::size_t>::max() / 2)) {
    return nullptr;  // the old block stays valid; stb frees it on its error path
  }
  auto* base = static_cast<unsigned char*>(
      std::realloc(static_cast<unsigned char*>(p) - header_bytes, bytes + header_bytes));
  if (base == nullptr) return nullptr;
  std::memcpy(base, &bytes, sizeof bytes);
  live_bytes = live_bytes - old + bytes;
  return base + header_bytes;
}

void stb_free(void* p) noexcept {
  if (p == nullptr) return;
  live_bytes -= block_size(p);
  std::free(static_cast<unsigned char*>(p) - header_bytes);
}

stb_budget_scope::stb_budget_scope(std::size_t bytes) noexcept
    : saved_limit_(limit_bytes), saved_live_(live_bytes) {
  limit_bytes = bytes;
  live_bytes = 0;
}

stb_budget_scope::~stb_budget_scope() {
  limit_bytes = saved_limit_;
  live_bytes = saved_live_ + live_bytes;  // blocks still held (the caller's result) stay counted
}

}  // namespace dynllava::llava::detail

#define STBI_MALLOC(bytes) ::dynllava::llava::detail::stb_malloc(bytes)
#define STBI_REALLOC(p, bytes) ::dynllava::llava::detail::stb_realloc(p, bytes)
#define STBI_FREE(p) ::dynllava::llava::detail::stb_free(p)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

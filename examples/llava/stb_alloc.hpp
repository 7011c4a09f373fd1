// SPDX-License-Identifier: Apache-2.0
/// @file stb_alloc.hpp
/// @brief The allocator stb_image uses here: plain malloc with a per-thread byte budget, so
/// that a hostile file makes stb fail with "outofmem" instead of exhausting memory.
#pragma once

#include <cstddef>

namespace dynllava::llava::detail {

void* stb_malloc(std::size_t bytes) noexcept;
void* stb_realloc(void* p, std::size_t bytes) noexcept;
void stb_free(void* p) noexcept;

/// Caps what stb may hold at once on this thread while the object lives (nesting restores).
class stb_budget_scope {
 public:
  explicit stb_budget_scope(std::size_t bytes) noexcept;
  ~stb_budget_scope();
  stb_budget_scope(const stb_budget_scope&) = delete;
  stb_budget_scope& operator=(const stb_budget_scope&) = delete;

 private:
  std::size_t saved_limit_;
  std::size_t saved_live_;
};

}  // namespace dynllava::llava::detail

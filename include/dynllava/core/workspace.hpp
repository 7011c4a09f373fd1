// SPDX-License-Identifier: Apache-2.0
/// @file workspace.hpp
/// @brief Two-phase temporary storage: carve one caller-provided buffer into aligned parts.
///
/// Device-level calls that need scratch take `(void* temp, std::size_t& temp_bytes, ...)`:
/// with `temp == nullptr` they only write the bytes they need to `temp_bytes` and launch nothing;
/// with a buffer of at least that size they run. `alias_temporaries` does the arithmetic for
/// both phases (after CUB's helper of the same name); it is plain host code, tested on the host.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace dynllava {

/// Alignment of every part carved out of a workspace, in bytes.
inline constexpr std::size_t workspace_alignment = 256;

/// Outcome of `alias_temporaries`.
enum class workspace_status {
  size_query,  ///< `temp` was null: `temp_bytes` now holds the required size; run nothing
  ready,       ///< `parts` point into `temp`; run
  too_small,   ///< `temp_bytes` is below the required size; `temp_bytes` is left unchanged
};

inline constexpr std::size_t workspace_saturated = static_cast<std::size_t>(-1);

/// Rounds `bytes` up to a multiple of `workspace_alignment`; saturates at `workspace_saturated`.
constexpr std::size_t align_workspace(std::size_t bytes) noexcept {
  if (bytes > workspace_saturated - workspace_alignment) return workspace_saturated;
  return (bytes + workspace_alignment - 1) / workspace_alignment * workspace_alignment;
}

/// @brief Lays out `N` parts of the given sizes in one workspace.
/// @param[in] temp caller's buffer (any memory space; never dereferenced), or null to query
/// @param[in,out] temp_bytes size of `temp`; receives the required size on a query
/// @param[out] parts start of each part (null for a zero-byte part); set only when `ready`
/// @param[in] sizes bytes needed by each part
template <std::size_t N>
constexpr workspace_status alias_temporaries(void* temp, std::size_t& temp_bytes,
                                             std::array<void*, N>& parts,
                                             const std::array<std::size_t, N>& sizes) noexcept {
  std::array<std::size_t, N> offsets{};
  std::size_t total = 0;
  for (std::size_t i = 0; i < N; ++i) {
    offsets[i] = total;
    const std::size_t part = align_workspace(sizes[i]);
    total = part > workspace_saturated - total ? workspace_saturated : total + part;
  }
  // Over-allocate by one alignment unit so that any base address can be aligned. Sizes that do
  // not fit in size_t saturate: the query answers `workspace_saturated`, which no buffer meets.
  const std::size_t required = total == 0 ? 1
                               : total > workspace_saturated - workspace_alignment
                                   ? workspace_saturated
                                   : total + workspace_alignment - 1;
  if (temp == nullptr) {
    temp_bytes = required;
    return workspace_status::size_query;
  }
  if (temp_bytes < required || required == workspace_saturated) return workspace_status::too_small;
  const auto base = reinterpret_cast<std::uintptr_t>(temp);
  const std::uintptr_t aligned =
      (base + workspace_alignment - 1) / workspace_alignment * workspace_alignment;
  for (std::size_t i = 0; i < N; ++i) {
    parts[i] = sizes[i] == 0 ? nullptr : reinterpret_cast<void*>(aligned + offsets[i]);
  }
  return workspace_status::ready;
}

}  // namespace dynllava

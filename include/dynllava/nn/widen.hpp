// SPDX-License-Identifier: Apache-2.0
/// @file widen.hpp
/// @brief Bulk widening of little-endian fp16 and bf16 storage to fp32 on the host, exact, with
/// AVX2 / F16C paths chosen at run time on x86-64 (the same values as `half_bits_to_float` and
/// `bfloat16_bits_to_float`; an fp16 signalling NaN may come back quiet).
#pragma once

#include <dynllava/core/half.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#include <cpuid.h>
#include <immintrin.h>
#define DYNLLAVA_WIDEN_X86 1
#endif

namespace dynllava::nn {

namespace detail {

inline std::uint16_t load_u16(const std::byte* p) noexcept {
  return static_cast<std::uint16_t>(static_cast<unsigned>(p[0]) |
                                    (static_cast<unsigned>(p[1]) << 8));
}

inline void widen_bf16_portable(const std::byte* p, std::size_t n, float* out) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = bfloat16_bits_to_float(load_u16(p + 2 * i));
}

inline void widen_f16_portable(const std::byte* p, std::size_t n, float* out) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = half_bits_to_float(load_u16(p + 2 * i));
}

#ifdef DYNLLAVA_WIDEN_X86
__attribute__((target("avx2"))) inline void widen_bf16_avx2(const std::byte* p, std::size_t n,
                                                            float* out) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(w));
  }
  widen_bf16_portable(p + 2 * i, n - i, out + i);
}

__attribute__((target("avx,f16c"))) inline void widen_f16_f16c(const std::byte* p, std::size_t n,
                                                               float* out) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  widen_f16_portable(p + 2 * i, n - i, out + i);
}

inline bool cpu_has_avx2() noexcept {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
inline bool cpu_has_f16c() noexcept {
  // CPUID leaf 1, ECX bit 29 (F16C); clang 14's __builtin_cpu_supports does not know "f16c".
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) != 0 &&
           (c & (1u << 29)) != 0;
  }();
  return has;
}
#endif

}  // namespace detail

/// `out[i] = bf16 value i` of `n` little-endian bf16 values at `p` (any alignment).
inline void widen_bf16(const std::byte* p, std::size_t n, float* out) noexcept {
#ifdef DYNLLAVA_WIDEN_X86
  if (detail::cpu_has_avx2()) return detail::widen_bf16_avx2(p, n, out);
#endif
  detail::widen_bf16_portable(p, n, out);
}

/// `out[i] = fp16 value i` of `n` little-endian fp16 values at `p` (any alignment).
inline void widen_f16(const std::byte* p, std::size_t n, float* out) noexcept {
#ifdef DYNLLAVA_WIDEN_X86
  if (detail::cpu_has_f16c()) return detail::widen_f16_f16c(p, n, out);
#endif
  detail::widen_f16_portable(p, n, out);
}

}  // namespace dynllava::nn

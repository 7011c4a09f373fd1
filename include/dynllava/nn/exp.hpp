// SPDX-License-Identifier: Apache-2.0
/// @file exp.hpp
/// @brief `exp` over a row of host floats, as softmax needs it: Cody-Waite range reduction and a
/// degree-6 polynomial (within 2 ulp of `std::exp` for results above `FLT_MIN`), with an AVX2
/// path chosen at run time on x86-64 that computes exactly the same values as the portable one
/// (the same operations in the same order, no FMA contraction).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#include <immintrin.h>
#define DYNLLAVA_EXP_X86 1
#endif

namespace dynllava::nn {

namespace detail {

inline constexpr float exp_lo = -87.33654f;  ///< ln(FLT_MIN): below it the result is 0
inline constexpr float exp_hi = 88.72283f;   ///< ln(FLT_MAX): above it the result is +inf
inline constexpr float exp_log2e = 1.44269504088896341f;
inline constexpr float exp_ln2_hi = 0.693359375f;  // ln 2 = hi + lo, hi exact in 9 bits
inline constexpr float exp_ln2_lo = -2.12194440e-4f;
inline constexpr float exp_c[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                   4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

/// One value; NaN stays NaN, `x < exp_lo` gives 0, `x > exp_hi` gives +inf.
inline float exp_one(float x) noexcept {
  if (std::isnan(x)) return x;
  if (x < exp_lo) return 0.0f;
  if (x > exp_hi) return INFINITY;
  const float n = std::floor(x * exp_log2e + 0.5f);
  float r = x - n * exp_ln2_hi;
  r = r - n * exp_ln2_lo;
  float p = exp_c[0];
  for (int i = 1; i < 6; ++i) p = p * r + exp_c[i];
  const float e = (p * (r * r) + r) + 1.0f;
  // 2^n for n in [-126, 128]: two factors keep every step finite and normal.
  const auto k = static_cast<std::int32_t>(n);
  const std::int32_t k1 = k / 2, k2 = k - k1;
  const auto b1 = static_cast<std::uint32_t>(k1 + 127) << 23;
  const auto b2 = static_cast<std::uint32_t>(k2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  return (e * s1) * s2;
}

#ifdef DYNLLAVA_EXP_X86
__attribute__((target("avx2"))) inline void exp_shift_avx2(float* x, std::size_t n,
                                                           float shift) noexcept {
  const __m256 lo = _mm256_set1_ps(exp_lo), hi = _mm256_set1_ps(exp_hi);
  const __m256 sh = _mm256_set1_ps(shift), half = _mm256_set1_ps(0.5f);
  const __m256i bias = _mm256_set1_epi32(127);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + i), sh);
    const __m256 under = _mm256_cmp_ps(v, lo, _CMP_LT_OQ);
    const __m256 over = _mm256_cmp_ps(v, hi, _CMP_GT_OQ);
    const __m256 c = _mm256_min_ps(hi, _mm256_max_ps(lo, v));  // NaN passes through
    const __m256 nf =
        _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(c, _mm256_set1_ps(exp_log2e)), half));
    __m256 r = _mm256_sub_ps(c, _mm256_mul_ps(nf, _mm256_set1_ps(exp_ln2_hi)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(nf, _mm256_set1_ps(exp_ln2_lo)));
    __m256 p = _mm256_set1_ps(exp_c[0]);
    for (int j = 1; j < 6; ++j) p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(exp_c[j]));
    const __m256 e = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r),
                                   _mm256_set1_ps(1.0f));
    const __m256i k = _mm256_cvttps_epi32(nf);
    // k / 2 toward zero, as the scalar path's integer division.
    const __m256i k1 = _mm256_srai_epi32(_mm256_add_epi32(k, _mm256_srli_epi32(k, 31)), 1);
    const __m256i k2 = _mm256_sub_epi32(k, k1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    __m256 out = _mm256_mul_ps(_mm256_mul_ps(e, s1), s2);
    out = _mm256_blendv_ps(out, _mm256_setzero_ps(), under);
    out = _mm256_blendv_ps(out, _mm256_set1_ps(INFINITY), over);
    _mm256_storeu_ps(x + i, out);
  }
  for (; i < n; ++i) x[i] = exp_one(x[i] - shift);
}
#endif

inline bool exp_cpu_has_avx2() noexcept {
#ifdef DYNLLAVA_EXP_X86
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

}  // namespace detail

/// @brief `x[i] = exp(x[i] - shift)` for `n` host floats, in place; values below `ln(FLT_MIN)`
/// become 0 (where `std::exp` would give a subnormal), NaN stays NaN. The same values on every
/// machine, whichever path runs.
inline void exp_shifted(float* x, std::size_t n, float shift) noexcept {
#ifdef DYNLLAVA_EXP_X86
  if (detail::exp_cpu_has_avx2()) return detail::exp_shift_avx2(x, n, shift);
#endif
  for (std::size_t i = 0; i < n; ++i) x[i] = detail::exp_one(x[i] - shift);
}

}  // namespace dynllava::nn

// SPDX-License-Identifier: Apache-2.0
/// @file exp.hpp
/// @brief `exp` over a row of host floats, as softmax needs it: Cody-Waite range reduction and a
/// degree-6 polynomial (within 2 ulp of `std::exp` for results above `FLT_MIN`), with an
/// AVX2+FMA path chosen at run time on x86-64 that computes exactly the same values as the
/// portable one (the same operations in the same order; every fused multiply-add is `std::fma`
/// on the portable path, so no compiler contraction can differ).
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
  const float n = std::floor(std::fma(x, exp_log2e, 0.5f));
  float r = std::fma(-n, exp_ln2_hi, x);
  r = std::fma(-n, exp_ln2_lo, r);
  float p = exp_c[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, exp_c[i]);
  const float e = std::fma(p, r * r, r) + 1.0f;
  // 2^n for n in [-126, 128]: two factors keep every step finite and normal (scaling by powers
  // of two is exact, so where one factor would do, two give the same value).
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
/// `exp_one` of 8 lanes. Lanes in `[exp_lo, exp_fast_hi]` (softmax's shifted scores, always)
/// take one scale factor `2^n`; a vector with any other lane (NaN, +-inf, out of range) takes
/// the clamped two-factor form with its blends. Both give `exp_one`'s values.
inline constexpr float exp_fast_hi = 88.0f;  ///< n <= 127: 2^n is one normal float

__attribute__((target("avx2,fma"))) inline __m256 exp8_avx2(__m256 v) noexcept {
  const __m256 lo = _mm256_set1_ps(exp_lo), hi = _mm256_set1_ps(exp_hi);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 inside = _mm256_and_ps(_mm256_cmp_ps(v, lo, _CMP_GE_OQ),
                                      _mm256_cmp_ps(v, _mm256_set1_ps(exp_fast_hi), _CMP_LE_OQ));
  const bool all_inside = _mm256_movemask_ps(inside) == 0xFF;
  const __m256 c = all_inside ? v : _mm256_min_ps(hi, _mm256_max_ps(lo, v));  // NaN passes
  const __m256 nf =
      _mm256_floor_ps(_mm256_fmadd_ps(c, _mm256_set1_ps(exp_log2e), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(exp_ln2_hi), c);
  r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(exp_ln2_lo), r);
  __m256 p = _mm256_set1_ps(exp_c[0]);
  for (int j = 1; j < 6; ++j) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_c[j]));
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i k = _mm256_cvttps_epi32(nf);
  if (all_inside) {
    return _mm256_mul_ps(e, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, bias), 23)));
  }
  // k / 2 toward zero, as the scalar path's integer division.
  const __m256i k1 = _mm256_srai_epi32(_mm256_add_epi32(k, _mm256_srli_epi32(k, 31)), 1);
  const __m256i k2 = _mm256_sub_epi32(k, k1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
  __m256 out = _mm256_mul_ps(_mm256_mul_ps(e, s1), s2);
  out = _mm256_blendv_ps(out, _mm256_setzero_ps(), _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
  out = _mm256_blendv_ps(out, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
  return out;
}

__attribute__((target("avx2,fma"))) inline void exp_shift_avx2(float* x, std::size_t n,
                                                               float shift) noexcept {
  const __m256 sh = _mm256_set1_ps(shift);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(x + i, exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
  }
  for (; i < n; ++i) x[i] = exp_one(x[i] - shift);
}

/// The 8 lanes' sums `l` combined as `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
__attribute__((target("avx2"))) inline float lane_total_avx2(__m256 l) noexcept {
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(l), _mm256_extractf128_ps(l, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));  // b0 = a0 + a2, b1 = a1 + a3
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_shuffle_ps(b, b, 1)));
}

__attribute__((target("avx2,fma"))) inline float exp_shift_sum_avx2(float* x, std::size_t n,
                                                                    float shift) noexcept {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float total = lane_total_avx2(acc);
  for (; i < n; ++i) {
    x[i] = exp_one(x[i] - shift);
    total += x[i];
  }
  return total;
}

__attribute__((target("avx2"))) inline float row_max_avx2(const float* x, std::size_t n) noexcept {
  float m = x[0];
  std::size_t i = 0;
  if (n >= 8) {
    __m256 acc = _mm256_loadu_ps(x);
    for (i = 8; i + 8 <= n; i += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(x + i));
    alignas(32) float l[8];
    _mm256_store_ps(l, acc);
    m = l[0];
    for (int j = 1; j < 8; ++j) m = l[j] > m ? l[j] : m;
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

__attribute__((target("avx2"))) inline void row_scale_avx2(float* x, std::size_t n,
                                                           float s) noexcept {
  const __m256 v = _mm256_set1_ps(s);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), v));
  for (; i < n; ++i) x[i] *= s;
}
#endif

/// Portable `exp_shift_sum_avx2`: the same lanes, added in the same order.
inline float lane_sum(const float* x, std::size_t n) noexcept {
  const std::size_t n8 = n - n % 8;
  float l[8] = {};
  for (std::size_t i = 0; i < n8; i += 8) {
    for (std::size_t j = 0; j < 8; ++j) l[j] += x[i + j];
  }
  float total = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
  for (std::size_t i = n8; i < n; ++i) total += x[i];
  return total;
}

inline bool exp_cpu_has_avx2() noexcept {
#ifdef DYNLLAVA_EXP_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

}  // namespace detail

/// @brief The largest of `n >= 1` host floats (NaNs are skipped or returned, depending on where
/// they lie; softmax rows with a NaN come out all NaN either way).
inline float row_max(const float* x, std::size_t n) noexcept {
#ifdef DYNLLAVA_EXP_X86
  if (detail::exp_cpu_has_avx2()) return detail::row_max_avx2(x, n);
#endif
  float m = x[0];
  for (std::size_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

/// @brief `x[i] = exp(x[i] - shift)` for `n` host floats, in place; values below `ln(FLT_MIN)`
/// become 0 (where `std::exp` would give a subnormal), NaN stays NaN. The same values on every
/// machine, whichever path runs.
inline void exp_shifted(float* x, std::size_t n, float shift) noexcept {
#ifdef DYNLLAVA_EXP_X86
  if (detail::exp_cpu_has_avx2()) return detail::exp_shift_avx2(x, n, shift);
#endif
  for (std::size_t i = 0; i < n; ++i) x[i] = detail::exp_one(x[i] - shift);
}

/// @brief `exp_shifted`, then the sum of the results: eight running sums over `x[8 i + j]`
/// combined in a fixed order, then the tail; the same value on every machine, whichever path
/// runs.
inline float exp_shifted_sum(float* x, std::size_t n, float shift) noexcept {
#ifdef DYNLLAVA_EXP_X86
  if (detail::exp_cpu_has_avx2()) return detail::exp_shift_sum_avx2(x, n, shift);
#endif
  exp_shifted(x, n, shift);
  return detail::lane_sum(x, n);
}

/// `x[i] *= s` for `n` host floats (softmax's normalisation), vectorised where AVX2 runs.
inline void row_scale(float* x, std::size_t n, float s) noexcept {
#ifdef DYNLLAVA_EXP_X86
  if (detail::exp_cpu_has_avx2()) return detail::row_scale_avx2(x, n, s);
#endif
  for (std::size_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace dynllava::nn

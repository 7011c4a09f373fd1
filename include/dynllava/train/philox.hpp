// SPDX-License-Identifier: Apache-2.0
/// @file philox.hpp
/// @brief Philox-4x32-10 counter-based generator and the uniform/Gumbel conversions built on it.
///
/// A counter-based generator has no state: the draw for token `t` is a pure function of
/// `(seed, offset, t)`, so the CPU and every CUDA launch configuration produce bit-identical
/// 32-bit words (and therefore bit-identical uniforms). Key = the 64-bit `seed`; counter =
/// `{t, 0, offset_lo, offset_hi}` (Salmon et al., SC'11, "Random123"). Use a new `offset` (for
/// instance the training step) for every fresh set of draws.
#pragma once

#include <dynllava/core/config.hpp>

#include <array>
#include <cmath>
#include <cstdint>

namespace dynllava {

/// Where in the random stream a set of draws comes from.
struct philox_key {
  std::uint64_t seed = 0;    ///< the stream (Philox key)
  std::uint64_t offset = 0;  ///< which set of draws in that stream (e.g. the training step)
};

/// Four 32-bit words of one Philox call.
struct philox_block {
  std::uint32_t v[4];
};

namespace detail {

DYNLLAVA_HOST_DEVICE constexpr void philox_mulhilo(std::uint32_t a, std::uint32_t b,
                                                   std::uint32_t& hi, std::uint32_t& lo) noexcept {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b);
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

}  // namespace detail

/// @brief Philox-4x32 with 10 rounds (the Random123 reference algorithm and constants).
/// @param[in] counter the 128-bit counter
/// @param[in] key the 64-bit key
DYNLLAVA_HOST_DEVICE constexpr philox_block philox4x32_10(philox_block counter, std::uint32_t key0,
                                                          std::uint32_t key1) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  std::uint32_t c0 = counter.v[0], c1 = counter.v[1], c2 = counter.v[2], c3 = counter.v[3];
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0 = 0, lo0 = 0, hi1 = 0, lo1 = 0;
    detail::philox_mulhilo(m0, c0, hi0, lo0);
    detail::philox_mulhilo(m1, c2, hi1, lo1);
    const std::uint32_t n0 = hi1 ^ c1 ^ key0;
    const std::uint32_t n2 = hi0 ^ c3 ^ key1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    key0 += w0;
    key1 += w1;
  }
  return philox_block{{c0, c1, c2, c3}};
}

/// The four words drawn for token `token` of the stream `key`.
DYNLLAVA_HOST_DEVICE constexpr philox_block philox_draw(philox_key key,
                                                        std::uint32_t token) noexcept {
  const philox_block counter{{token, 0u, static_cast<std::uint32_t>(key.offset),
                              static_cast<std::uint32_t>(key.offset >> 32)}};
  return philox4x32_10(counter, static_cast<std::uint32_t>(key.seed),
                       static_cast<std::uint32_t>(key.seed >> 32));
}

/// @brief A 32-bit word to a uniform in the open interval (0, 1): `(2 k + 1) * 2^-24` with
/// `k = bits >> 9`. Exactly representable in float and double, never 0 or 1 (min 2^-24,
/// max 1 - 2^-24), identical on every backend.
DYNLLAVA_HOST_DEVICE constexpr float uniform_open01(std::uint32_t bits) noexcept {
  return static_cast<float>((bits >> 9) * 2u + 1u) * (1.0f / 16777216.0f);
}

/// @brief Standard Gumbel noise `-log(-log(u))` of a uniform in (0, 1), computed in double and
/// rounded to `T` (so that host and device logarithms agree after rounding except in
/// vanishingly rare double-rounding cases). Finite for every value `uniform_open01` returns:
/// the range is about [-2.8, 16.6].
template <class T>
DYNLLAVA_HOST_DEVICE T gumbel_from_uniform(float u) noexcept {
  const double ud = static_cast<double>(u);
#if defined(__CUDA_ARCH__)
  return static_cast<T>(-::log(-::log(ud)));
#else
  return static_cast<T>(-std::log(-std::log(ud)));
#endif
}

}  // namespace dynllava

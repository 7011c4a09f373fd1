// SPDX-License-Identifier: Apache-2.0
/// @file half.hpp
/// @brief Bit-exact conversion of IEEE fp16 and bfloat16 storage to fp32, host and device.
#pragma once

#include <dynllava/core/config.hpp>

#include <bit>
#include <cstdint>

namespace dynllava {

/// fp32 value of an IEEE 754 binary16 bit pattern (subnormals, infinities and NaN included).
DYNLLAVA_HOST_DEVICE constexpr float half_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits = 0;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {        // subnormal: normalise
    std::uint32_t e = 113u;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

/// fp32 value of a bfloat16 bit pattern (exact: bfloat16 is the top half of an fp32).
DYNLLAVA_HOST_DEVICE constexpr float bfloat16_bits_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

static_assert(half_bits_to_float(0x3c00) == 1.0f);
static_assert(half_bits_to_float(0xc000) == -2.0f);
static_assert(half_bits_to_float(0x0001) == 5.9604644775390625e-08f);
static_assert(half_bits_to_float(0x7bff) == 65504.0f);
static_assert(bfloat16_bits_to_float(0x3f80) == 1.0f);

}  // namespace dynllava

// SPDX-License-Identifier: Apache-2.0
/// @file config.hpp
/// @brief Host/device annotation macros and the library's index type.
///
/// Without nvcc the annotations degrade to plain `inline`, so every function marked with them
/// (index arithmetic, gate predicates, score orderings) is compiled and unit-tested as ordinary
/// host C++ (the CuTe habit).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define DYNLLAVA_HOST_DEVICE __host__ __device__ inline
#define DYNLLAVA_DEVICE __device__ inline
#define DYNLLAVA_FORCEINLINE __forceinline__
#else
#define DYNLLAVA_HOST_DEVICE inline
#define DYNLLAVA_DEVICE inline
#define DYNLLAVA_FORCEINLINE inline
#endif

#define DYNLLAVA_VERSION_MAJOR 0
#define DYNLLAVA_VERSION_MINOR 1
#define DYNLLAVA_VERSION_PATCH 0

namespace dynllava {

/// Signed 32-bit index used for positions, row numbers and CSR offsets. A batch may hold at
/// most 2^31 - 1 tokens; the boundary checks say so when it does not.
using index_t = std::int32_t;

}  // namespace dynllava

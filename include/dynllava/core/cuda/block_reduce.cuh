// SPDX-License-Identifier: Apache-2.0
/// @file block_reduce.cuh
/// @brief Deterministic block-wide sum and max-with-index (used by the training kernels; shared
/// through core/ with every component's kernels).
///
/// Every thread of the block must call these together; every thread receives the result. The
/// reduction order depends only on `blockDim.x`, so results are reproducible run to run.
#pragma once

#include <dynllava/core/config.hpp>

#include <climits>

namespace dynllava::cuda::detail {

/// Shared scratch of the block reductions (one slot per warp, at most 32 warps).
struct block_reduce_storage {
  float value[32];
  int index[32];
};

/// Sum of `v` over the block.
__device__ inline float block_sum(float v, block_reduce_storage& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const unsigned warps = (blockDim.x + 31u) / 32u;
  __syncthreads();  // the previous reduction's readers are done with `s`
  if ((threadIdx.x & 31u) == 0) s.value[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
  for (unsigned w = 0; w < warps; ++w) total += s.value[w];
  return total;
}

/// `(a, i)` ranks before `(b, k)`: larger value, then smaller index.
__device__ inline bool max_arg_before(float a, int i, float b, int k) {
  return a > b || (!(b > a) && i < k);
}

/// Largest `v` over the block and the smallest `index` attaining it (`INT_MAX` marks "none").
__device__ inline void block_max_arg(float& v, int& index, block_reduce_storage& s) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, index, o);
    if (max_arg_before(ov, oi, v, index)) {
      v = ov;
      index = oi;
    }
  }
  const unsigned warps = (blockDim.x + 31u) / 32u;
  __syncthreads();
  if ((threadIdx.x & 31u) == 0) {
    s.value[threadIdx.x >> 5] = v;
    s.index[threadIdx.x >> 5] = index;
  }
  __syncthreads();
  v = s.value[0];
  index = s.index[0];
  for (unsigned w = 1; w < warps; ++w) {
    if (max_arg_before(s.value[w], s.index[w], v, index)) {
      v = s.value[w];
      index = s.index[w];
    }
  }
}

}  // namespace dynllava::cuda::detail

// SPDX-License-Identifier: Apache-2.0
/// @file block_scan_batch.cuh
/// @brief One block's exclusive scan of a per-sequence count over a whole batch, in tiles of the
/// block with a running carry: the CSR offsets that the KV-cache kernels (pages taken and freed,
/// kept lists, FlashInfer tables, H2O budgets) all compute.
#pragma once

#include <dynllava/core/config.hpp>

#include <cub/block/block_scan.cuh>

#include <cstddef>

namespace dynllava::cuda::detail {

/// @brief Exclusive scan of `value(b)` over `b < batch`: calls `write(b, before)` with the sum
/// of the values before `b`, and returns the total to every thread. `value(b)` runs once per `b`,
/// in one thread (it may record results of its own). Every thread of the block must call.
template <int Threads, class Value, class Write>
__device__ inline index_t block_scan_batch(
    std::size_t batch, Value value, Write write,
    typename cub::BlockScan<index_t, Threads>::TempStorage& storage) {
  index_t carry = 0;
  for (std::size_t base = 0; base < batch; base += Threads) {
    const std::size_t b = base + threadIdx.x;
    const index_t v = b < batch ? value(b) : index_t{0};
    index_t before = 0;
    index_t total = 0;
    cub::BlockScan<index_t, Threads>(storage).ExclusiveSum(v, before, total);
    __syncthreads();  // `storage` is reused by the next tile
    if (b < batch) write(b, carry + before);
    carry += total;
  }
  return carry;
}

}  // namespace dynllava::cuda::detail

// SPDX-License-Identifier: Apache-2.0
/// @file kernel_kv_cache.cuh
/// @brief `__global__` kernels of the CUDA KV caches (see device_kv_cache.cuh for the API): the
/// plan and copy of a gated append, the validation, staging and write-back of a compaction, the
/// page release, StreamingLLM's kept lists and FlashInfer page tables. The arithmetic is in
/// kvcache/kv_steps.hpp.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/block_scan_batch.cuh>
#include <dynllava/kvcache/kv_steps.hpp>

#include <cub/block/block_scan.cuh>

#include <cstddef>
#include <cstdint>

namespace dynllava::cuda::detail {

/// Threads per block of the KV-cache kernels.
inline constexpr int kv_threads = 256;

/// Storage rows of a contiguous layer.
struct contiguous_rows {
  index_t capacity;
  __device__ std::size_t row(std::size_t b, index_t i) const {
    return dynllava::detail::contiguous_row(b, i, capacity);
  }
};

/// Storage rows of a paged layer (`page_table` [batch, max_pages]).
struct paged_rows {
  const index_t* page_table;
  index_t max_pages;
  index_t page_size;
  __device__ std::size_t row(std::size_t b, index_t i) const {
    return dynllava::detail::paged_row(page_table + b * static_cast<std::size_t>(max_pages), i,
                                       page_size);
  }
};

/// Where an append's pages come from: none (contiguous, `max_pages == 0`), or a free stack.
struct append_pages {
  index_t* page_table;  ///< [batch, max_pages], or null for a contiguous layer
  index_t max_pages;
  index_t page_size;
  index_t* free_pages;  ///< [num_pages] free stack
  index_t* free_count;  ///< device scalar: pages on the stack
};

/// Tokens of `[begin, end)` admitted by the gate.
__device__ inline index_t admitted_in(const std::uint8_t* keep, bool gated, index_t begin,
                                      index_t end) {
  if (!gated) return end - begin;
  index_t n = 0;
  for (index_t t = begin; t < end; ++t) n += keep[t] != 0 ? 1 : 0;
  return n;
}

/// @brief One block: checks `indptr`, the capacity (contiguous: `capacity` rows per sequence;
/// paged: `max_pages` per sequence and the free stack), then commits the append's bookkeeping:
/// `old_len[b]` (workspace) keeps each sequence's length before the append, `lengths` and
/// `appended` grow, new pages are popped from the stack in sequence order into the page table.
/// Nothing changes when any check fails: `*valid = 0`, `*invalid_out` (nullable) = 1.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    append_plan_kernel(const index_t* indptr, std::size_t batch, index_t tokens,
                       const std::uint8_t* keep, bool gated, index_t capacity, append_pages pages,
                       index_t* lengths, index_t* appended, index_t* old_len, index_t* offsets,
                       int* valid, int* invalid_out) {
  using scan_t = cub::BlockScan<index_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  const bool paged = pages.page_table != nullptr;
  bool ok = true;
  if (threadIdx.x == 0) ok = indptr[0] == 0 && indptr[batch] == tokens;
  for (std::size_t b = threadIdx.x; b < batch; b += Threads) {
    ok = ok && indptr[b + 1] >= indptr[b];
  }
  if (__syncthreads_and(ok ? 1 : 0) == 0) {
    if (threadIdx.x == 0) {
      *valid = 0;
      if (invalid_out != nullptr) *invalid_out = 1;
    }
    return;
  }
  // Capacity per sequence, and the pages the batch takes (scan in sequence order).
  const index_t carry = block_scan_batch<Threads>(
      batch,
      [&](std::size_t b) {
        const index_t held = lengths[b];
        const index_t added = admitted_in(keep, gated, indptr[b], indptr[b + 1]);
        if (!paged) {
          ok = ok && static_cast<long long>(held) + added <= capacity;
          return index_t{0};
        }
        // the room check in 64 bits first: held + added may not fit in index_t
        ok = ok && static_cast<long long>(held) + added <=
                       static_cast<long long>(pages.max_pages) * pages.page_size;
        return ok ? dynllava::detail::pages_taken(held, added, pages.page_size) : index_t{0};
      },
      [&](std::size_t b, index_t before) { offsets[b] = before; }, scan_storage);
  const index_t free_before = paged ? *pages.free_count : 0;
  if (paged && carry > free_before) ok = false;
  if (__syncthreads_and(ok ? 1 : 0) == 0) {
    if (threadIdx.x == 0) {
      *valid = 0;
      if (invalid_out != nullptr) *invalid_out = 1;
    }
    return;
  }
  for (std::size_t b = threadIdx.x; b < batch; b += Threads) {
    const index_t held = lengths[b];
    const index_t added = admitted_in(keep, gated, indptr[b], indptr[b + 1]);
    old_len[b] = held;
    lengths[b] = held + added;
    appended[b] += added;
    if (paged) {
      index_t* table = pages.page_table + b * static_cast<std::size_t>(pages.max_pages);
      const index_t first = dynllava::detail::pages_for(held, pages.page_size);
      const index_t need = dynllava::detail::pages_taken(held, added, pages.page_size);
      for (index_t j = 0; j < need; ++j) {
        table[first + j] =
            pages.free_pages[dynllava::detail::popped_slot(free_before, offsets[b] + j)];
      }
    }
  }
  __syncthreads();  // every thread has read *free_count
  if (threadIdx.x == 0) {
    if (paged) *pages.free_count = free_before - carry;
    *valid = 1;
  }
}

/// @brief Grid over the batch: copies each sequence's admitted tokens (K, V rows of `width` and
/// their positions) to rows `old_len[b] + rank` of its layer, in order.
template <class T, int Threads, class Rows>
__global__ void __launch_bounds__(Threads)
    append_copy_kernel(Rows rows, const index_t* indptr, std::size_t batch,
                       const std::uint8_t* keep, bool gated, const T* k_new, const T* v_new,
                       const index_t* new_positions, index_t width, const index_t* old_len, T* k,
                       T* v, index_t* positions, const int* valid) {
  using scan_t = cub::BlockScan<index_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  __shared__ index_t src[Threads];
  __shared__ std::size_t dst[Threads];
  if (*valid == 0) return;
  const auto w = static_cast<std::size_t>(width);
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t begin = indptr[b];
    const index_t end = indptr[b + 1];
    index_t carry = 0;
    for (index_t base = begin; base < end; base += Threads) {
      const index_t t = base + static_cast<index_t>(threadIdx.x);
      const bool admit = t < end && (!gated || keep[t] != 0);
      index_t rank = 0;
      index_t tile = 0;
      scan_t(scan_storage).ExclusiveSum(admit ? 1 : 0, rank, tile);
      if (admit) {
        src[rank] = t;
        dst[rank] = rows.row(b, old_len[b] + carry + rank);
      }
      __syncthreads();
      for (std::size_t e = threadIdx.x; e < static_cast<std::size_t>(tile) * w; e += Threads) {
        const std::size_t r = e / w;
        const std::size_t c = e % w;
        const std::size_t from = static_cast<std::size_t>(src[r]) * w + c;
        k[dst[r] * w + c] = k_new[from];
        v[dst[r] * w + c] = v_new[from];
      }
      for (index_t r = threadIdx.x; r < tile; r += Threads) {
        positions[dst[r]] = new_positions[src[r]];
      }
      __syncthreads();  // src, dst and the scan storage are reused by the next tile
      carry += tile;
    }
  }
}

/// @brief Grid over the batch: checks the kept lists (CSR `kept_indptr` [batch + 1] into `kept`
/// [kept_size], local positions strictly ascending and below each sequence's length) and raises
/// `*failed` (cleared beforehand) and `*invalid_out` (nullable) on any violation.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    retain_check_kernel(const index_t* kept_indptr, const index_t* kept, std::size_t kept_size,
                        std::size_t batch, const index_t* lengths, int* failed, int* invalid_out) {
  const std::size_t b = blockIdx.x;
  bool ok = true;
  if (b == 0 && threadIdx.x == 0) ok = kept_indptr[0] == 0;
  const index_t begin = kept_indptr[b];
  const index_t end = kept_indptr[b + 1];
  ok = ok && begin >= 0 && end >= begin && static_cast<std::size_t>(end) <= kept_size &&
       end - begin <= lengths[b];
  if (ok) {
    for (index_t j = begin + static_cast<index_t>(threadIdx.x); j < end; j += Threads) {
      ok = ok && kept[j] >= 0 && kept[j] < lengths[b] && (j == begin || kept[j] > kept[j - 1]);
    }
  }
  if (!ok) {
    atomicExch(failed, 1);
    if (invalid_out != nullptr) atomicExch(invalid_out, 1);
  }
}

/// @brief Grid over the batch: moves each sequence's kept rows (K, V, position) to its first rows,
/// in place, and records its length before the compaction in `old_len`. Over column chunks of
/// `chunk` elements, tiles of `tile_rows` kept rows are read into shared memory, then written. A
/// tile's sources sit at positions `kept[j] >= j`, at or above its first destination and so above
/// every row an earlier tile wrote: nothing is overwritten before it is read, and no staging
/// buffer is needed. Shared memory: `tile_rows * (sizeof(index_t) + 2 * chunk * sizeof(T))`.
template <class T, class Rows>
__global__ void retain_move_kernel(Rows rows, const index_t* kept_indptr, const index_t* kept,
                                   std::size_t batch, index_t width, index_t chunk,
                                   index_t tile_rows, T* k, T* v, index_t* positions,
                                   index_t* lengths, index_t* old_len, const int* failed) {
  extern __shared__ __align__(16) unsigned char move_smem[];
  auto* const sp = reinterpret_cast<index_t*>(move_smem);  // [tile_rows]
  const std::size_t pos_bytes =
      (static_cast<std::size_t>(tile_rows) * sizeof(index_t) + 15) / 16 * 16;
  auto* const sk = reinterpret_cast<T*>(move_smem + pos_bytes);  // [tile_rows, chunk]
  T* const sv = sk + static_cast<std::size_t>(tile_rows) * static_cast<std::size_t>(chunk);
  if (*failed != 0) return;
  const auto w = static_cast<std::size_t>(width);
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t begin = kept_indptr[b];
    const index_t count = kept_indptr[b + 1] - begin;
    if (threadIdx.x == 0) old_len[b] = lengths[b];
    for (index_t base = 0; base < count; base += tile_rows) {
      const index_t m = min(tile_rows, count - base);
      for (index_t r = threadIdx.x; r < m; r += blockDim.x) {
        sp[r] = positions[rows.row(b, kept[begin + base + r])];
      }
      __syncthreads();
      for (index_t r = threadIdx.x; r < m; r += blockDim.x)
        positions[rows.row(b, base + r)] = sp[r];
      __syncthreads();
    }
    for (std::size_t c0 = 0; c0 < w; c0 += static_cast<std::size_t>(chunk)) {
      const std::size_t cw = min(static_cast<std::size_t>(chunk), w - c0);
      for (index_t base = 0; base < count; base += tile_rows) {
        const auto m = static_cast<std::size_t>(min(tile_rows, count - base));
        for (std::size_t e = threadIdx.x; e < m * cw; e += blockDim.x) {
          const std::size_t r = e / cw;
          const std::size_t c = e % cw;
          const std::size_t from =
              rows.row(b, kept[begin + base + static_cast<index_t>(r)]) * w + c0 + c;
          sk[r * static_cast<std::size_t>(chunk) + c] = k[from];
          sv[r * static_cast<std::size_t>(chunk) + c] = v[from];
        }
        __syncthreads();
        for (std::size_t e = threadIdx.x; e < m * cw; e += blockDim.x) {
          const std::size_t r = e / cw;
          const std::size_t c = e % cw;
          const std::size_t to = rows.row(b, base + static_cast<index_t>(r)) * w + c0 + c;
          k[to] = sk[r * static_cast<std::size_t>(chunk) + c];
          v[to] = sv[r * static_cast<std::size_t>(chunk) + c];
        }
        __syncthreads();
      }
    }
    if (threadIdx.x == 0) lengths[b] = count;
    __syncthreads();  // old_len and lengths of this sequence are settled before the next one
  }
}

/// @brief One block: pushes the pages each sequence no longer needs back on the free stack, in
/// sequence order, each from its last page backwards (the host cache's order).
template <int Threads>
__global__ void __launch_bounds__(Threads)
    release_pages_kernel(const index_t* kept_indptr, std::size_t batch, const index_t* old_len,
                         append_pages pages, index_t* offsets, const int* failed) {
  using scan_t = cub::BlockScan<index_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  if (*failed != 0) return;
  const index_t carry = block_scan_batch<Threads>(
      batch,
      [&](std::size_t b) {
        return dynllava::detail::pages_freed(old_len[b], kept_indptr[b + 1] - kept_indptr[b],
                                             pages.page_size);
      },
      [&](std::size_t b, index_t before) { offsets[b] = before; }, scan_storage);
  const index_t free_before = *pages.free_count;
  for (std::size_t b = threadIdx.x; b < batch; b += Threads) {
    const index_t kept = kept_indptr[b + 1] - kept_indptr[b];
    const index_t freed = dynllava::detail::pages_freed(old_len[b], kept, pages.page_size);
    index_t* table = pages.page_table + b * static_cast<std::size_t>(pages.max_pages);
    const index_t last = dynllava::detail::pages_for(old_len[b], pages.page_size) - 1;
    for (index_t j = 0; j < freed; ++j) {
      pages.free_pages[dynllava::detail::pushed_slot(free_before, offsets[b] + j)] =
          table[last - j];
      table[last - j] = -1;
    }
  }
  __syncthreads();  // every thread has read *free_count
  if (threadIdx.x == 0) *pages.free_count = free_before + carry;
}

/// @brief One block: StreamingLLM's kept lists for every sequence of a layer (CSR, local
/// positions ascending): the first `sinks` tokens and the `window` newest.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    streaming_kept_kernel(const index_t* lengths, std::size_t batch, index_t sinks, index_t window,
                          index_t* kept_indptr, index_t* kept, std::size_t kept_size) {
  using scan_t = cub::BlockScan<index_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  const index_t carry = block_scan_batch<Threads>(
      batch,
      [&](std::size_t b) {
        return dynllava::detail::streaming_kept_count(lengths[b], sinks, window);
      },
      [&](std::size_t b, index_t before) { kept_indptr[b] = before; }, scan_storage);
  if (threadIdx.x == 0) kept_indptr[batch] = carry;
  __syncthreads();
  if (static_cast<std::size_t>(carry) > kept_size) {  // `kept` too small: refuse, write nothing
    if (threadIdx.x == 0) kept_indptr[0] = -1;
    return;
  }
  for (std::size_t b = 0; b < batch; ++b) {
    const index_t held = lengths[b];
    const index_t count = dynllava::detail::streaming_kept_count(held, sinks, window);
    index_t* out = kept + kept_indptr[b];
    for (index_t j = threadIdx.x; j < count; j += Threads) {
      out[j] = dynllava::detail::streaming_kept_position(held, sinks, window, j);
    }
  }
}

/// @brief One block: FlashInfer's page table of a paged layer (`indptr` [batch + 1], `indices`,
/// `last_page_len` [batch]) from its padded `page_table` [batch, max_pages] and `lengths`.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    paged_table_kernel(const index_t* page_table, const index_t* lengths, std::size_t batch,
                       index_t max_pages, index_t page_size, index_t* indptr, index_t* indices,
                       index_t* last_page_len) {
  using scan_t = cub::BlockScan<index_t, Threads>;
  __shared__ typename scan_t::TempStorage scan_storage;
  const index_t carry = block_scan_batch<Threads>(
      batch, [&](std::size_t b) { return dynllava::detail::pages_for(lengths[b], page_size); },
      [&](std::size_t b, index_t before) {
        indptr[b] = before;
        last_page_len[b] = dynllava::detail::last_page_length(lengths[b], page_size);
      },
      scan_storage);
  if (threadIdx.x == 0) indptr[batch] = carry;
  __syncthreads();
  for (std::size_t b = 0; b < batch; ++b) {
    const index_t count = dynllava::detail::pages_for(lengths[b], page_size);
    for (index_t j = threadIdx.x; j < count; j += Threads) {
      indices[indptr[b] + j] = page_table[b * static_cast<std::size_t>(max_pages) + j];
    }
  }
}

/// Grid-stride: a full free stack, page 0 on top (the host `page_pool`'s first page).
template <int = 0>
__global__ void reset_page_stack_kernel(index_t* free_pages, index_t num_pages,
                                        index_t* free_count) {
  for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < num_pages;
       i += gridDim.x * blockDim.x) {
    free_pages[i] = num_pages - 1 - i;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *free_count = num_pages;
}

}  // namespace dynllava::cuda::detail

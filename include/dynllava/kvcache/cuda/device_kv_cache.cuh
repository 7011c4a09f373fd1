// SPDX-License-Identifier: Apache-2.0
/// @file device_kv_cache.cuh
/// @brief KV caches on CUDA: non-owning layer descriptions (contiguous and paged, FlashInfer's
/// page size and row layout), the gated append, the compaction that keeps given positions (with
/// page release), StreamingLLM's kept lists and FlashInfer page tables. Device-level calls take a
/// stream and a caller workspace (null: size query), return `cudaError_t`, never allocate and
/// never synchronise, so a decode step's append can be captured in a CUDA graph.
///
/// Semantics equal the host caches (`contiguous_kv_cache`, `paged_kv_cache`,
/// kvcache/gated_append.hpp), with two differences forced by the device: an append that does not
/// fit (a full sequence, a full page table, an empty free stack) or a malformed `indptr` changes
/// nothing and raises `d_invalid` (the host cache throws, keeping the tokens appended before),
/// and a compaction with invalid kept lists changes nothing and raises it too. Page ids follow
/// the host pool exactly: pages are popped in sequence order and pushed back in sequence order,
/// each sequence from its last page backwards.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>
#include <dynllava/kvcache/contiguous_kv_view.hpp>
#include <dynllava/kvcache/cuda/kernel_kv_cache.cuh>
#include <dynllava/kvcache/kv_steps.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace dynllava::cuda {

/// @brief One layer of a contiguous KV cache in device memory; non-owning, trivially copyable.
/// Sequence `b` owns rows `[b * capacity, (b + 1) * capacity)`; `lengths[b]` are held.
template <class T>
struct contiguous_kv_layer {
  T* k = nullptr;                ///< [batch, capacity, width] device
  T* v = nullptr;                ///< [batch, capacity, width] device
  index_t* positions = nullptr;  ///< [batch, capacity] device: original positions
  index_t* lengths = nullptr;    ///< [batch] device: tokens held
  index_t* appended = nullptr;   ///< [batch] device: tokens ever appended
  std::size_t batch = 0;
  index_t capacity = 0;  ///< rows per sequence
  index_t width = 0;     ///< heads * head_dim

  /// The read-only view that attention kernels take (kvcache/contiguous_kv_view.hpp).
  contiguous_kv_view<T, device_space> view() const noexcept {
    const std::size_t rows = batch * static_cast<std::size_t>(capacity);
    const std::size_t elems = rows * static_cast<std::size_t>(width);
    return {{k, elems}, {v, elems}, {positions, rows}, {lengths, batch}, capacity, width};
  }
};

/// @brief The free pages of a paged cache's pool, in device memory: a stack `pages[0 .. *count)`
/// whose top is handed out first. One stack serves every layer of a cache.
struct device_page_stack {
  index_t* pages = nullptr;  ///< [num_pages] device
  index_t* count = nullptr;  ///< device scalar: pages on the stack
  index_t num_pages = 0;
};

/// @brief One layer of a paged KV cache in device memory; non-owning, trivially copyable.
/// Page `p` holds rows `[p * page_size, (p + 1) * page_size)` of the pool's storage (shared by
/// every layer); sequence `b`'s pages are `page_table[b * max_pages ..]` in token order.
template <class T>
struct paged_kv_layer {
  T* k = nullptr;                 ///< [num_pages, page_size, width] device: the pool's keys
  T* v = nullptr;                 ///< [num_pages, page_size, width] device: the pool's values
  index_t* positions = nullptr;   ///< [num_pages, page_size] device
  index_t* page_table = nullptr;  ///< [batch, max_pages] device: this layer's pages
  index_t* lengths = nullptr;     ///< [batch] device: tokens held
  index_t* appended = nullptr;    ///< [batch] device: tokens ever appended
  std::size_t batch = 0;
  index_t max_pages = 0;  ///< pages per sequence at most
  index_t page_size = 1;
  index_t width = 0;
};

namespace detail {

/// Host-side checks shared by the device-level calls (nothing on the device is read).
template <class Layer>
bool kv_layer_ok(const Layer& layer) {
  if (layer.width <= 0 || layer.lengths == nullptr || layer.k == nullptr || layer.v == nullptr ||
      layer.positions == nullptr) {
    return layer.batch == 0 && layer.width > 0;
  }
  if constexpr (requires { layer.page_table; }) {
    return layer.page_size > 0 && layer.max_pages >= 0 && layer.page_table != nullptr;
  } else {
    return layer.capacity >= 0;
  }
}

template <class T>
contiguous_rows rows_of(const contiguous_kv_layer<T>& layer) {
  contiguous_rows r;  // (not brace-initialised: nvcc's host pass rejects it for this type)
  r.capacity = layer.capacity;
  return r;
}
template <class T>
paged_rows rows_of(const paged_kv_layer<T>& layer) {
  paged_rows r;
  r.page_table = layer.page_table;
  r.max_pages = layer.max_pages;
  r.page_size = layer.page_size;
  return r;
}

template <class T>
append_pages pages_of(const contiguous_kv_layer<T>&, const device_page_stack*) {
  return {nullptr, 0, 1, nullptr, nullptr};
}
template <class T>
append_pages pages_of(const paged_kv_layer<T>& layer, const device_page_stack* stack) {
  return {layer.page_table, layer.max_pages, layer.page_size, stack->pages, stack->count};
}

template <class T>
index_t capacity_of(const contiguous_kv_layer<T>& layer) {
  return layer.capacity;
}
template <class T>
index_t capacity_of(const paged_kv_layer<T>&) {
  return 0;  // a paged layer's room is its page table and the free stack
}

/// The workspace of an append or a compaction: a flag and two counts per sequence.
struct kv_call_workspace {
  int* flag = nullptr;
  index_t* old_len = nullptr;
  index_t* offsets = nullptr;
};

/// Lays out (or sizes, with a null `temp`) the workspace of an append or a compaction.
inline workspace_status layout_kv_workspace(void* temp, std::size_t& temp_bytes, std::size_t batch,
                                            kv_call_workspace& ws) {
  std::array<void*, 3> parts{};
  const workspace_status status = alias_temporaries(
      temp, temp_bytes, parts, {sizeof(int), batch * sizeof(index_t), batch * sizeof(index_t)});
  ws = {static_cast<int*>(parts[0]), static_cast<index_t*>(parts[1]),
        static_cast<index_t*>(parts[2])};
  return status;
}

template <class Layer, class T>
cudaError_t gated_append_impl(void* temp, std::size_t& temp_bytes, const Layer& layer,
                              const device_page_stack* stack, device_span<const index_t> indptr,
                              device_span<const T> k, device_span<const T> v,
                              device_span<const std::uint8_t> keep,
                              device_span<const index_t> positions, int* d_invalid,
                              cudaStream_t stream) {
  const std::size_t batch = layer.batch;
  const std::size_t tokens = positions.size();
  const auto w = static_cast<std::size_t>(layer.width);
  const bool gated = !keep.empty();
  if (!kv_layer_ok(layer) || (batch > 0 && layer.appended == nullptr) ||
      (batch == 0 && tokens != 0) || indptr.size() != batch + 1 || k.size() != tokens * w ||
      v.size() != k.size() || (gated && keep.size() != tokens) ||
      tokens > static_cast<std::size_t>(std::numeric_limits<index_t>::max() - kv_threads)) {
    return cudaErrorInvalidValue;
  }
  kv_call_workspace ws;
  const workspace_status status = layout_kv_workspace(temp, temp_bytes, batch, ws);
  if (status == workspace_status::size_query) return cudaSuccess;
  if (status == workspace_status::too_small) return cudaErrorInvalidValue;
  if (batch == 0) return cudaSuccess;
  append_plan_kernel<kv_threads><<<1, kv_threads, 0, stream>>>(
      indptr.data(), batch, static_cast<index_t>(tokens), gated ? keep.data() : nullptr, gated,
      capacity_of(layer), pages_of(layer, stack), layer.lengths, layer.appended, ws.old_len,
      ws.offsets, ws.flag, d_invalid);
  if (const cudaError_t e = cudaPeekAtLastError(); e != cudaSuccess) return e;
  const auto grid = static_cast<unsigned>(std::min<std::size_t>(batch, 1u << 16));
  append_copy_kernel<T, kv_threads><<<grid, kv_threads, 0, stream>>>(
      rows_of(layer), indptr.data(), batch, gated ? keep.data() : nullptr, gated, k.data(),
      v.data(), positions.data(), layer.width, ws.old_len, layer.k, layer.v, layer.positions,
      ws.flag);
  return cudaPeekAtLastError();
}

/// Shared-memory tiling of the in-place move: column chunks of at most 1024 elements, as many
/// rows per tile as fit in 24 KiB (at least one).
struct move_tiling {
  index_t chunk;
  index_t tile_rows;
  std::size_t smem;
};
template <class T>
move_tiling move_tiling_for(index_t width) {
  const index_t chunk = std::min<index_t>(width, 1024);
  const auto row = 2 * static_cast<std::size_t>(chunk) * sizeof(T) + sizeof(index_t);
  const auto tile_rows =
      static_cast<index_t>(std::max<std::size_t>(1, (std::size_t{24} << 10) / row));
  const std::size_t pos = (static_cast<std::size_t>(tile_rows) * sizeof(index_t) + 15) / 16 * 16;
  return {
      chunk, tile_rows,
      pos + 2 * static_cast<std::size_t>(tile_rows) * static_cast<std::size_t>(chunk) * sizeof(T)};
}

template <class Layer>
cudaError_t retain_impl(void* temp, std::size_t& temp_bytes, const Layer& layer,
                        const device_page_stack* stack, device_span<const index_t> kept_indptr,
                        device_span<const index_t> kept, int* d_invalid, cudaStream_t stream) {
  using T = std::remove_pointer_t<decltype(layer.k)>;
  const std::size_t batch = layer.batch;
  if (!kv_layer_ok(layer) || kept_indptr.size() != batch + 1 || (batch == 0 && !kept.empty())) {
    return cudaErrorInvalidValue;
  }
  kv_call_workspace ws;
  const workspace_status status = layout_kv_workspace(temp, temp_bytes, batch, ws);
  if (status == workspace_status::size_query) return cudaSuccess;
  if (status == workspace_status::too_small) return cudaErrorInvalidValue;
  if (batch == 0) return cudaSuccess;
  int* const failed = ws.flag;
  index_t* const old_len = ws.old_len;
  index_t* const offsets = ws.offsets;
  if (const cudaError_t e = cudaMemsetAsync(failed, 0, sizeof(int), stream); e != cudaSuccess) {
    return e;
  }
  const auto seq_grid = static_cast<unsigned>(batch);
  retain_check_kernel<kv_threads><<<seq_grid, kv_threads, 0, stream>>>(
      kept_indptr.data(), kept.data(), kept.size(), batch, layer.lengths, failed, d_invalid);
  const move_tiling tiling = move_tiling_for<T>(layer.width);
  retain_move_kernel<<<static_cast<unsigned>(std::min<std::size_t>(batch, 65535)), kv_threads,
                       tiling.smem, stream>>>(
      rows_of(layer), kept_indptr.data(), kept.data(), batch, layer.width, tiling.chunk,
      tiling.tile_rows, layer.k, layer.v, layer.positions, layer.lengths, old_len, failed);
  if (stack != nullptr) {
    release_pages_kernel<kv_threads><<<1, kv_threads, 0, stream>>>(
        kept_indptr.data(), batch, old_len, pages_of(layer, stack), offsets, failed);
  }
  return cudaPeekAtLastError();
}

}  // namespace detail

/// @brief Device-level gated append to a contiguous layer: sequence `b`'s new tokens
/// `indptr[b] .. indptr[b + 1]` enter its rows in order, each only when `keep` is empty (every
/// token admitted: layers below the sparse layer, a new user turn) or `keep[t] != 0`.
/// @param[in] temp, temp_bytes workspace (null `temp`: size query)
/// @param[in,out] layer the layer (`lengths` and `appended` grow)
/// @param[in] indptr [batch + 1] device offsets of the new tokens (checked on the device)
/// @param[in] k, v [tokens, width] device keys and values of the new tokens
/// @param[in] keep [tokens] device gate decisions, or empty
/// @param[in] positions [tokens] device original positions, stored with the rows
/// @param[out] d_invalid device int or null: raised when the device finds `indptr` malformed or a
///             sequence without room; then nothing changed
/// @return `cudaErrorInvalidValue` on mismatched shapes or a too small workspace (nothing
///         launched), else the last launch's status
template <class T>
requires std::is_trivially_copyable_v<T> cudaError_t
gated_append(void* temp, std::size_t& temp_bytes, const contiguous_kv_layer<T>& layer,
             device_span<const index_t> indptr, std::type_identity_t<device_span<const T>> k,
             std::type_identity_t<device_span<const T>> v, device_span<const std::uint8_t> keep,
             device_span<const index_t> positions, int* d_invalid, cudaStream_t stream) {
  return detail::gated_append_impl(temp, temp_bytes, layer, nullptr, indptr, k, v, keep, positions,
                                   d_invalid, stream);
}

/// @brief Device-level gated append to a paged layer; new pages come from `stack` (in sequence
/// order, as the host pool hands them out). Arguments as the contiguous overload; `d_invalid`
/// is also raised when a sequence would need more than `max_pages` pages or the stack runs out.
template <class T>
requires std::is_trivially_copyable_v<T> cudaError_t
gated_append(void* temp, std::size_t& temp_bytes, const paged_kv_layer<T>& layer,
             const device_page_stack& stack, device_span<const index_t> indptr,
             std::type_identity_t<device_span<const T>> k,
             std::type_identity_t<device_span<const T>> v, device_span<const std::uint8_t> keep,
             device_span<const index_t> positions, int* d_invalid, cudaStream_t stream) {
  if (stack.pages == nullptr || stack.count == nullptr) return cudaErrorInvalidValue;
  return detail::gated_append_impl(temp, temp_bytes, layer, &stack, indptr, k, v, keep, positions,
                                   d_invalid, stream);
}

/// @brief Device-level compaction of a contiguous layer: sequence `b` keeps the tokens at the
/// local positions `kept[kept_indptr[b] .. kept_indptr[b + 1])` (strictly ascending), moved to
/// its first rows in order, in place (tiles through shared memory; the workspace holds only a
/// flag and two counts per sequence).
/// @param[out] d_invalid raised when a kept list is not ascending or out of range; then nothing
///             changed
template <class T>
requires std::is_trivially_copyable_v<T> cudaError_t retain(void* temp, std::size_t& temp_bytes,
                                                            const contiguous_kv_layer<T>& layer,
                                                            device_span<const index_t> kept_indptr,
                                                            device_span<const index_t> kept,
                                                            int* d_invalid, cudaStream_t stream) {
  return detail::retain_impl(temp, temp_bytes, layer, nullptr, kept_indptr, kept, d_invalid,
                             stream);
}

/// @brief Device-level compaction of a paged layer; pages no longer needed go back on `stack`
/// (in sequence order, each sequence's from its last page backwards). As the contiguous overload.
template <class T>
requires std::is_trivially_copyable_v<T> cudaError_t retain(void* temp, std::size_t& temp_bytes,
                                                            const paged_kv_layer<T>& layer,
                                                            const device_page_stack& stack,
                                                            device_span<const index_t> kept_indptr,
                                                            device_span<const index_t> kept,
                                                            int* d_invalid, cudaStream_t stream) {
  if (stack.pages == nullptr || stack.count == nullptr) return cudaErrorInvalidValue;
  return detail::retain_impl(temp, temp_bytes, layer, &stack, kept_indptr, kept, d_invalid, stream);
}

/// @brief Device-level StreamingLLM kept lists of a layer: for each sequence of `lengths`
/// [batch], the first `sinks` and the `window` newest local positions (all when they cover it).
/// @param[out] kept_indptr [batch + 1] device; @param[out] kept [>= sum of kept] device (at most
///             batch * (sinks + window)); when it is too small nothing is written but
///             `kept_indptr[0] = -1`, which `cuda::retain` refuses
/// @return `cudaErrorInvalidValue` on a negative `sinks`/`window` or a size mismatch
inline cudaError_t streaming_kept(device_span<const index_t> lengths, index_t sinks, index_t window,
                                  device_span<index_t> kept_indptr, device_span<index_t> kept,
                                  cudaStream_t stream) {
  if (sinks < 0 || window < 0 || kept_indptr.size() != lengths.size() + 1) {
    return cudaErrorInvalidValue;
  }
  detail::streaming_kept_kernel<detail::kv_threads><<<1, detail::kv_threads, 0, stream>>>(
      lengths.data(), lengths.size(), sinks, window, kept_indptr.data(), kept.data(), kept.size());
  return cudaPeekAtLastError();
}

/// @brief Device-level FlashInfer page table of a paged layer: `indptr` [batch + 1], `indices`
/// [>= pages held], `last_page_len` [batch], for attention kernels that take that layout.
template <class T>
cudaError_t paged_page_table(const paged_kv_layer<T>& layer, device_span<index_t> indptr,
                             device_span<index_t> indices, device_span<index_t> last_page_len,
                             cudaStream_t stream) {
  if (!detail::kv_layer_ok(layer) || indptr.size() != layer.batch + 1 ||
      last_page_len.size() != layer.batch ||
      indices.size() < layer.batch * static_cast<std::size_t>(layer.max_pages)) {
    return cudaErrorInvalidValue;
  }
  detail::paged_table_kernel<detail::kv_threads><<<1, detail::kv_threads, 0, stream>>>(
      layer.page_table, layer.lengths, layer.batch, layer.max_pages, layer.page_size, indptr.data(),
      indices.data(), last_page_len.data());
  return cudaPeekAtLastError();
}

/// @brief Device-level reset of a free stack: every page free, page 0 handed out first.
inline cudaError_t reset_page_stack(const device_page_stack& stack, cudaStream_t stream) {
  if (stack.pages == nullptr || stack.count == nullptr || stack.num_pages < 0) {
    return cudaErrorInvalidValue;
  }
  const auto grid = static_cast<unsigned>(
      std::max<index_t>(1, std::min<index_t>((stack.num_pages + 255) / 256, 1024)));
  detail::reset_page_stack_kernel<<<grid, 256, 0, stream>>>(stack.pages, stack.num_pages,
                                                            stack.count);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda

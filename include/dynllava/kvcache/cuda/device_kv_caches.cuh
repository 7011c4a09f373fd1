// SPDX-License-Identifier: Apache-2.0
/// @file device_kv_caches.cuh
/// @brief Owning KV caches in device memory (the convenience layer over the layer descriptions
/// of device_kv_cache.cuh): `device_paged_kv_cache<T>` (one page pool and free stack shared by
/// every layer, a page table per layer) and `device_contiguous_kv_cache<T>` (a fixed capacity per
/// layer and sequence). Construction allocates and initialises synchronously; `layer(l)` and
/// `stack()` give the non-owning views that the device-level calls take.
///
/// Both are the CUDA models of `kv_storage<C, cuda::on_stream>` (kvcache/kv_storage.hpp):
/// `lengths(l)` and `appended_counts(l)` stay in device memory, and `append(exec, ...)` /
/// `retain(exec, ...)` enqueue the device-level gated append and compaction on `exec.stream` in
/// the cache's own workspace (its size depends only on the batch, so it is allocated with the
/// cache): they allocate nothing and never synchronise with the host, and a decode step's calls
/// can be captured in a CUDA graph. Calls on one cache must be ordered (one stream, or streams
/// that wait for each other), as they modify the same storage. A call that the device finds invalid
/// (a sequence without room, malformed offsets or kept lists) changes nothing and raises
/// `invalid_flag()`, where the host caches throw; shapes known on the host are checked there and
/// throw.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>
#include <dynllava/kvcache/kv_layout_checks.hpp>
#include <dynllava/kvcache/kv_storage.hpp>

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dynllava::cuda {

namespace detail {

/// Host-known shape of a layer-level compaction's kept lists.
inline void check_device_kept(const char* fn, index_t layer, index_t layers, std::size_t batch,
                              ragged_span<const index_t, device_space> kept) {
  DYNLLAVA_EXPECTS(layer >= 0 && layer < layers, "{}: layer {} is not in [0, {})", fn, layer,
                   layers);
  DYNLLAVA_EXPECTS(kept.indptr.size() == batch + 1,
                   "{}: kept must have one row per sequence ({}), got indptr of {} entries", fn,
                   batch, kept.indptr.size());
}

/// @brief The `kv_storage<C, cuda::on_stream>` calls both device caches share (CRTP: `Cache`
/// gives `config()`, `layer(l)`, `invalid_flag()`, the names `append_name` / `retain_name`
/// and, when paged, `stack()`).
template <class Cache, class T>
class device_kv_storage_calls {
 public:
  /// Keys, values, positions and counts live in device memory.
  using memory_space = device_space;
  /// Stored element of K and V.
  using value_type = T;

  index_t layers() const noexcept { return self().config().layers; }
  std::size_t batch() const noexcept { return self().config().batch; }
  index_t width() const noexcept { return self().config().width; }
  /// Tokens held by layer `l` per sequence (`[batch]`, device). @throws dynllava::error on `l`.
  device_span<const index_t> lengths(index_t l) const { return {self().layer(l).lengths, batch()}; }
  /// Tokens ever appended to layer `l` per sequence (`[batch]`, device).
  device_span<const index_t> appended_counts(index_t l) const {
    return {self().layer(l).appended, batch()};
  }

  /// @brief Layer-level gated append (`kv_storage` requirement 4), enqueued on `exec.stream`:
  /// sequence `b`'s new tokens `indptr[b] .. indptr[b + 1]` enter layer `l` in order, each only
  /// when `keep` is empty or `keep[t] != 0` (a paged cache takes new pages from its free
  /// stack). What only the device sees (malformed offsets, a sequence without room) raises
  /// `invalid_flag()` and changes nothing.
  /// @param[in] indptr [batch + 1] device; @param[in] k, v [tokens, width] device;
  /// @param[in] keep [tokens] device or empty; @param[in] positions [tokens] device
  /// @throws dynllava::error on host-known shapes, dynllava::cuda_error on a CUDA failure.
  void append(on_stream exec, index_t l, device_span<const index_t> indptr, device_span<const T> k,
              device_span<const T> v, device_span<const std::uint8_t> keep,
              device_span<const index_t> positions) {
    dynllava::detail::check_layer_append_shapes(Cache::append_name, l, layers(), batch(), width(),
                                                indptr, k, v, keep, positions);
    const auto lay = self().layer(l);
    constexpr bool paged = requires(const Cache& c) { c.stack(); };
    std::size_t bytes = temp_.size();
    if constexpr (paged) {
      DYNLLAVA_CUDA_TRY(dynllava::cuda::gated_append(temp_.data(), bytes, lay, self().stack(),
                                                     indptr, k, v, keep, positions,
                                                     self().invalid_flag(), exec.stream));
    } else {
      DYNLLAVA_CUDA_TRY(dynllava::cuda::gated_append(temp_.data(), bytes, lay, indptr, k, v, keep,
                                                     positions, self().invalid_flag(),
                                                     exec.stream));
    }
  }

  /// @brief Layer-level compaction (`kv_storage` requirement 5), enqueued on `exec.stream`:
  /// sequence `b` keeps the tokens at `kept.row(b)` (strictly ascending local positions,
  /// device); a paged cache pushes the pages it no longer needs back on its free stack. Invalid
  /// lists raise `invalid_flag()` and change nothing.
  void retain(on_stream exec, index_t l, ragged_span<const index_t, device_space> kept) {
    check_device_kept(Cache::retain_name, l, layers(), batch(), kept);
    const auto lay = self().layer(l);
    constexpr bool paged = requires(const Cache& c) { c.stack(); };
    std::size_t bytes = temp_.size();
    if constexpr (paged) {
      DYNLLAVA_CUDA_TRY(dynllava::cuda::retain(temp_.data(), bytes, lay, self().stack(),
                                               kept.indptr, kept.values, self().invalid_flag(),
                                               exec.stream));
    } else {
      DYNLLAVA_CUDA_TRY(dynllava::cuda::retain(temp_.data(), bytes, lay, kept.indptr, kept.values,
                                               self().invalid_flag(), exec.stream));
    }
  }

 protected:
  /// Allocates the workspace of the layer-level calls for `batch` sequences (the derived cache's
  /// constructor calls it once).
  void reserve_workspace(std::size_t batch) {
    std::size_t bytes = 0;
    kv_call_workspace unused{};
    (void)layout_kv_workspace(nullptr, bytes, batch, unused);
    temp_ = device_buffer<unsigned char>(bytes);
  }

 private:
  const Cache& self() const noexcept { return static_cast<const Cache&>(*this); }
  device_buffer<unsigned char> temp_;  ///< the layer-level calls' workspace
};

}  // namespace detail

/// Shape of a device paged KV cache.
struct device_paged_kv_config {
  index_t layers = 1;
  std::size_t batch = 1;
  index_t width = 1;       ///< heads * head_dim
  index_t page_size = 16;  ///< tokens per page
  index_t num_pages = 0;   ///< pool shared by every layer and sequence
  index_t max_pages = 0;   ///< pages per (layer, sequence) at most
};

/// @brief A paged KV cache in device memory, every sequence empty and every page free at first.
template <class T>
class device_paged_kv_cache : public detail::device_kv_storage_calls<device_paged_kv_cache<T>, T> {
 public:
  static constexpr const char* append_name = "device_paged_kv_cache::append";
  static constexpr const char* retain_name = "device_paged_kv_cache::retain";

  /// @throws dynllava::error on a non-positive size, dynllava::cuda_error on a CUDA failure.
  explicit device_paged_kv_cache(const device_paged_kv_config& c) : c_(c) {
    DYNLLAVA_EXPECTS(
        c.layers > 0 && c.width > 0 && c.page_size > 0 && c.num_pages >= 0 && c.max_pages >= 0,
        "device_paged_kv_cache: layers ({}), width ({}) and page_size ({}) must be "
        "> 0, num_pages ({}) and max_pages ({}) >= 0",
        c.layers, c.width, c.page_size, c.num_pages, c.max_pages);
    const std::size_t rows =
        static_cast<std::size_t>(c.num_pages) * static_cast<std::size_t>(c.page_size);
    k_ = device_buffer<T>(rows * static_cast<std::size_t>(c.width));
    v_ = device_buffer<T>(rows * static_cast<std::size_t>(c.width));
    positions_ = device_buffer<index_t>(rows);
    const std::size_t lb = static_cast<std::size_t>(c.layers) * c.batch;
    tables_ = device_buffer<index_t>(
        std::vector<index_t>(lb * static_cast<std::size_t>(c.max_pages), -1));
    lengths_ = device_buffer<index_t>(std::vector<index_t>(lb, 0));
    appended_ = device_buffer<index_t>(std::vector<index_t>(lb, 0));
    free_pages_ = device_buffer<index_t>(static_cast<std::size_t>(c.num_pages));
    free_count_ = device_buffer<index_t>(std::size_t{1});
    this->reserve_workspace(c.batch);
    if (c.num_pages > 0) {
      DYNLLAVA_CUDA_TRY(reset_page_stack(stack(), nullptr));
    } else {
      free_count_.copy_from(host_span<const index_t>(&zero_, 1));
    }
    DYNLLAVA_CUDA_TRY(cudaStreamSynchronize(nullptr));
  }

  const device_paged_kv_config& config() const noexcept { return c_; }
  /// The most tokens one (layer, sequence) can hold: `max_pages * page_size` (what sizes a
  /// decode step's retained buffer, `batch * max_length()`).
  index_t max_length() const noexcept { return c_.max_pages * c_.page_size; }
  /// Device int raised (never cleared by the cache) by an `append` or `retain` that the device
  /// found invalid (that call changed nothing).
  int* invalid_flag() const noexcept { return invalid_.data(); }

  /// The free stack shared by every layer.
  device_page_stack stack() const noexcept {
    return {free_pages_.data(), free_count_.data(), c_.num_pages};
  }

  /// Layer `l`'s description. @throws dynllava::error on a layer outside [0, layers).
  paged_kv_layer<T> layer(index_t l) const {
    DYNLLAVA_EXPECTS(l >= 0 && l < c_.layers, "device_paged_kv_cache: layer {} is not in [0, {})",
                     l, c_.layers);
    const std::size_t first = static_cast<std::size_t>(l) * c_.batch;
    return {k_.data(),
            v_.data(),
            positions_.data(),
            tables_.data() + first * static_cast<std::size_t>(c_.max_pages),
            lengths_.data() + first,
            appended_.data() + first,
            c_.batch,
            c_.max_pages,
            c_.page_size,
            c_.width};
  }

 private:
  device_paged_kv_config c_;
  index_t zero_ = 0;
  device_buffer<T> k_, v_;
  device_buffer<index_t> positions_, tables_, lengths_, appended_, free_pages_, free_count_;
  device_buffer<int> invalid_ = device_buffer<int>(std::vector<int>{0});
};
static_assert(kv_storage<device_paged_kv_cache<float>, on_stream>);
static_assert(!kv_storage<device_paged_kv_cache<float>, host_t>);

/// Shape of a device contiguous KV cache.
struct device_contiguous_kv_config {
  index_t layers = 1;
  std::size_t batch = 1;
  index_t width = 1;     ///< heads * head_dim
  index_t capacity = 0;  ///< tokens per (layer, sequence)
};

/// @brief A contiguous KV cache in device memory, every sequence empty at first.
template <class T>
class device_contiguous_kv_cache
    : public detail::device_kv_storage_calls<device_contiguous_kv_cache<T>, T> {
 public:
  static constexpr const char* append_name = "device_contiguous_kv_cache::append";
  static constexpr const char* retain_name = "device_contiguous_kv_cache::retain";

  /// @throws dynllava::error on a non-positive size, dynllava::cuda_error on a CUDA failure.
  explicit device_contiguous_kv_cache(const device_contiguous_kv_config& c) : c_(c) {
    DYNLLAVA_EXPECTS(c.layers > 0 && c.width > 0 && c.capacity >= 0,
                     "device_contiguous_kv_cache: layers ({}) and width ({}) must be > 0, "
                     "capacity ({}) >= 0",
                     c.layers, c.width, c.capacity);
    const std::size_t lb = static_cast<std::size_t>(c.layers) * c.batch;
    const std::size_t rows = lb * static_cast<std::size_t>(c.capacity);
    k_ = device_buffer<T>(rows * static_cast<std::size_t>(c.width));
    v_ = device_buffer<T>(rows * static_cast<std::size_t>(c.width));
    positions_ = device_buffer<index_t>(rows);
    lengths_ = device_buffer<index_t>(std::vector<index_t>(lb, 0));
    appended_ = device_buffer<index_t>(std::vector<index_t>(lb, 0));
    this->reserve_workspace(c.batch);
  }

  const device_contiguous_kv_config& config() const noexcept { return c_; }
  /// The most tokens one (layer, sequence) can hold: the capacity.
  index_t max_length() const noexcept { return c_.capacity; }
  /// Device int raised (never cleared by the cache) by an `append` or `retain` that the device
  /// found invalid (that call changed nothing).
  int* invalid_flag() const noexcept { return invalid_.data(); }

  /// Layer `l`'s description. @throws dynllava::error on a layer outside [0, layers).
  contiguous_kv_layer<T> layer(index_t l) const {
    DYNLLAVA_EXPECTS(l >= 0 && l < c_.layers,
                     "device_contiguous_kv_cache: layer {} is not in [0, {})", l, c_.layers);
    const std::size_t first = static_cast<std::size_t>(l) * c_.batch;
    const std::size_t row = first * static_cast<std::size_t>(c_.capacity);
    const auto w = static_cast<std::size_t>(c_.width);
    return {k_.data() + row * w,
            v_.data() + row * w,
            positions_.data() + row,
            lengths_.data() + first,
            appended_.data() + first,
            c_.batch,
            c_.capacity,
            c_.width};
  }

 private:
  device_contiguous_kv_config c_;
  device_buffer<T> k_, v_;
  device_buffer<index_t> positions_, lengths_, appended_;
  device_buffer<int> invalid_ = device_buffer<int>(std::vector<int>{0});
};
static_assert(kv_storage<device_contiguous_kv_cache<__half>, on_stream>);
static_assert(!kv_storage<device_contiguous_kv_cache<__half>, host_t>);

}  // namespace dynllava::cuda

// SPDX-License-Identifier: Apache-2.0
/// @file device_kv_caches.cuh
/// @brief Owning KV caches in device memory (the convenience layer over the layer descriptions
/// of device_kv_cache.cuh): `device_paged_kv_cache<T>` (one page pool and free stack shared by
/// every layer, a page table per layer) and `device_contiguous_kv_cache<T>` (a fixed capacity per
/// layer and sequence). Construction allocates and initialises synchronously; `layer(l)` and
/// `stack()` give the non-owning views that the device-level calls take.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

namespace dynllava::cuda {

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
class device_paged_kv_cache {
 public:
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
    if (c.num_pages > 0) {
      DYNLLAVA_CUDA_TRY(reset_page_stack(stack(), nullptr));
    } else {
      free_count_.copy_from(host_span<const index_t>(&zero_, 1));
    }
    DYNLLAVA_CUDA_TRY(cudaStreamSynchronize(nullptr));
  }

  const device_paged_kv_config& config() const noexcept { return c_; }

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
};

/// Shape of a device contiguous KV cache.
struct device_contiguous_kv_config {
  index_t layers = 1;
  std::size_t batch = 1;
  index_t width = 1;     ///< heads * head_dim
  index_t capacity = 0;  ///< tokens per (layer, sequence)
};

/// @brief A contiguous KV cache in device memory, every sequence empty at first.
template <class T>
class device_contiguous_kv_cache {
 public:
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
  }

  const device_contiguous_kv_config& config() const noexcept { return c_; }

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
};

}  // namespace dynllava::cuda

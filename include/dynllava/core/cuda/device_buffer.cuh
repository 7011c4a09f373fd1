// SPDX-License-Identifier: Apache-2.0
/// @file device_buffer.cuh
/// @brief `device_buffer<T>`: an owning, move-only device allocation (the convenience layer).
///
/// The device-level algorithms never allocate; this RAII type is for callers (tests, examples,
/// set-up code) that want ownership without bookkeeping. Allocation and copies here are
/// synchronous and throw `dynllava::cuda_error` on failure.
#pragma once

#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/span.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace dynllava::cuda {

/// @brief `size()` elements of `T` in device memory, owned.
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  /// Allocates `n` uninitialised elements. @throws dynllava::cuda_error
  explicit device_buffer(std::size_t n) : size_(n) {
    if (n > 0) DYNLLAVA_CUDA_TRY(cudaMalloc(reinterpret_cast<void**>(&data_), n * sizeof(T)));
  }
  /// Allocates and copies a host vector. @throws dynllava::cuda_error
  explicit device_buffer(const std::vector<T>& host) : device_buffer(host.size()) {
    copy_from(host_span<const T>(host.data(), host.size()));
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~device_buffer() { release(); }

  T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  device_span<T> view() noexcept { return {data_, size_}; }
  device_span<const T> view() const noexcept { return {data_, size_}; }

  /// Synchronous copy of `src.size() == size()` elements from the host. @throws dynllava::error
  void copy_from(host_span<const T> src) {
    DYNLLAVA_EXPECTS(src.size() == size_, "device_buffer::copy_from: expected {} elements, got {}",
                     size_, src.size());
    if (size_ > 0) {
      DYNLLAVA_CUDA_TRY(cudaMemcpy(data_, src.data(), size_ * sizeof(T), cudaMemcpyHostToDevice));
    }
  }
  /// Synchronous copy of the whole buffer to a new host vector. @throws dynllava::cuda_error
  std::vector<T> to_host() const {
    std::vector<T> out(size_);
    if (size_ > 0) {
      DYNLLAVA_CUDA_TRY(cudaMemcpy(out.data(), data_, size_ * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return out;
  }

 private:
  void release() noexcept {
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace dynllava::cuda

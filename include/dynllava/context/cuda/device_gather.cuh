// SPDX-License-Identifier: Apache-2.0
/// @file device_gather.cuh
/// @brief Row gather/scatter on CUDA: the device-level API (returns `cudaError_t`, never throws,
/// never allocates, never synchronises) and the throwing `on_stream` entry points.
///
/// Semantics equal the CPU twins in `context/gather.hpp`, except that an index out of range
/// cannot throw on the device: it is reported through the optional `d_out_of_range` flag (and
/// the gather zero-fills that row, the scatter skips it). Duplicate scatter rows are a
/// precondition violation (the CPU twin rejects them; here the last write is unspecified).
#pragma once

#include <dynllava/context/cuda/kernel_gather.cuh>
#include <dynllava/context/gather.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/span.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace dynllava::cuda {

namespace detail {

inline constexpr unsigned gather_block_threads = 128;
inline constexpr std::size_t gather_max_blocks = 65535;

/// Launches `kernel` over 16-byte chunks when every row is 16-byte aligned, else per element.
template <bool Scatter, class T>
cudaError_t launch_row_kernel(const T* src, std::size_t width, const index_t* rows, std::size_t m,
                              std::size_t other_rows, T* dst, int* flag, cudaStream_t stream) {
  if (m == 0 || width == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min(m, gather_max_blocks));
  const bool vectorizable = (width * sizeof(T)) % sizeof(uint4) == 0 &&
                            reinterpret_cast<std::uintptr_t>(src) % alignof(uint4) == 0 &&
                            reinterpret_cast<std::uintptr_t>(dst) % alignof(uint4) == 0;
  if (vectorizable) {
    const std::size_t chunks = width * sizeof(T) / sizeof(uint4);
    const auto* s = reinterpret_cast<const uint4*>(src);
    auto* d = reinterpret_cast<uint4*>(dst);
    if constexpr (Scatter) {
      scatter_rows_kernel<<<blocks, gather_block_threads, 0, stream>>>(s, chunks, rows, m,
                                                                       other_rows, d, flag);
    } else {
      gather_rows_kernel<<<blocks, gather_block_threads, 0, stream>>>(s, chunks, rows, m,
                                                                      other_rows, d, flag);
    }
  } else if constexpr (Scatter) {
    scatter_rows_kernel<<<blocks, gather_block_threads, 0, stream>>>(src, width, rows, m,
                                                                     other_rows, dst, flag);
  } else {
    gather_rows_kernel<<<blocks, gather_block_threads, 0, stream>>>(src, width, rows, m, other_rows,
                                                                    dst, flag);
  }
  return cudaPeekAtLastError();
}

}  // namespace detail

/// @brief Device-level gather: `dst[i, :] = src[rows[i], :]`, enqueued on `stream`.
/// @tparam T trivially copyable element type (float, __half, __nv_bfloat16, ...)
/// @param[in] src [num_rows, width] device, read-only
/// @param[in] width elements per row, > 0
/// @param[in] rows [m] device row indices into `src`
/// @param[out] dst [m, width] device
/// @param[out] d_out_of_range device int or null; set to 1 if any index is out of range (never
///             cleared by this call)
/// @param[in] stream CUDA stream
/// @return `cudaErrorInvalidValue` on a shape mismatch (nothing launched), else the launch status
template <class T>
requires std::is_trivially_copyable_v<T> cudaError_t gather_rows(
    std::type_identity_t<device_span<const T>> src, index_t width, device_span<const index_t> rows,
    device_span<T> dst, int* d_out_of_range, cudaStream_t stream) {
  if (width <= 0 || src.size() % static_cast<std::size_t>(width) != 0 ||
      dst.size() != rows.size() * static_cast<std::size_t>(width)) {
    return cudaErrorInvalidValue;
  }
  const auto w = static_cast<std::size_t>(width);
  return detail::launch_row_kernel<false>(src.data(), w, rows.data(), rows.size(), src.size() / w,
                                          dst.data(), d_out_of_range, stream);
}

/// @brief Device-level scatter: `dst[rows[i], :] = src[i, :]`, enqueued on `stream`.
/// @param[in] src [m, width] device, read-only
/// @param[in] rows [m] device, distinct indices into `dst`
/// @param[in,out] dst [num_rows, width] device
/// @param[out] d_out_of_range device int or null; set to 1 if any index is out of range
/// @return `cudaErrorInvalidValue` on a shape mismatch (nothing launched), else the launch status
template <class T>
requires std::is_trivially_copyable_v<T> cudaError_t scatter_rows(
    std::type_identity_t<device_span<const T>> src, index_t width, device_span<const index_t> rows,
    device_span<T> dst, int* d_out_of_range, cudaStream_t stream) {
  if (width <= 0 || dst.size() % static_cast<std::size_t>(width) != 0 ||
      src.size() != rows.size() * static_cast<std::size_t>(width)) {
    return cudaErrorInvalidValue;
  }
  const auto w = static_cast<std::size_t>(width);
  return detail::launch_row_kernel<true>(src.data(), w, rows.data(), rows.size(), dst.size() / w,
                                         dst.data(), d_out_of_range, stream);
}

}  // namespace dynllava::cuda

namespace dynllava {

/// Execution-tag entry point: gather on a CUDA stream (asynchronous).
/// @throws dynllava::error on a shape mismatch, dynllava::cuda_error on a launch failure.
template <class T>
requires std::is_trivially_copyable_v<T>
void gather_rows(cuda::on_stream exec, std::type_identity_t<device_span<const T>> src,
                 index_t width, device_span<const index_t> rows, device_span<T> dst,
                 int* d_out_of_range = nullptr) {
  check_row_shapes("gather_rows", src.size(), dst.size(), rows.size(), width);
  DYNLLAVA_CUDA_TRY(cuda::gather_rows(src, width, rows, dst, d_out_of_range, exec.stream));
}

/// Execution-tag entry point: scatter on a CUDA stream (asynchronous).
/// @throws dynllava::error on a shape mismatch, dynllava::cuda_error on a launch failure.
template <class T>
requires std::is_trivially_copyable_v<T>
void scatter_rows(cuda::on_stream exec, std::type_identity_t<device_span<const T>> src,
                  index_t width, device_span<const index_t> rows, device_span<T> dst,
                  int* d_out_of_range = nullptr) {
  check_row_shapes("scatter_rows", dst.size(), src.size(), rows.size(), width);
  DYNLLAVA_CUDA_TRY(cuda::scatter_rows(src, width, rows, dst, d_out_of_range, exec.stream));
}

}  // namespace dynllava

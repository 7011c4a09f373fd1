// SPDX-License-Identifier: Apache-2.0
/// @file device_linear.cuh
/// @brief A Linear layer on CUDA, `y = act(x W^T + b)`: one cuBLAS GEMM (`cublasGemmEx`, fp32
/// accumulation for every storage type) and one bias-activation kernel. The device twin of
/// nn/linear.hpp; row-major `x [rows, in]`, `W [out, in]` (the checkpoints' layout).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/nn/cuda/kernel_rows.cuh>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>

namespace dynllava::cuda {

namespace detail {

template <class T>
constexpr cudaDataType_t cuda_data_type() {
  if constexpr (std::is_same_v<T, float>) {
    return CUDA_R_32F;
  } else if constexpr (std::is_same_v<T, __half>) {
    return CUDA_R_16F;
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "float, __half or __nv_bfloat16");
    return CUDA_R_16BF;
  }
}

/// cuBLAS status as a CUDA error (device-level calls report `cudaError_t`).
inline cudaError_t from_cublas(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return cudaSuccess;
    case CUBLAS_STATUS_INVALID_VALUE:
      return cudaErrorInvalidValue;
    case CUBLAS_STATUS_ALLOC_FAILED:
      return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return cudaErrorInitializationError;
    case CUBLAS_STATUS_ARCH_MISMATCH:
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return cudaErrorNotSupported;
    default:
      return cudaErrorUnknown;
  }
}

/// @brief Points `handle` at `stream`, only when it is not already there: `cublasSetStream`
/// resets the handle's workspace to cuBLAS's own pool, which would drop a workspace the caller
/// set with `cublasSetWorkspace` (and let cuBLAS allocate inside a graph capture).
inline cudaError_t use_stream(cublasHandle_t handle, cudaStream_t stream) {
  cudaStream_t current = nullptr;
  if (const auto s = cublasGetStream(handle, &current); s != CUBLAS_STATUS_SUCCESS) {
    return from_cublas(s);
  }
  return current == stream ? cudaSuccess : from_cublas(cublasSetStream(handle, stream));
}

inline unsigned elementwise_grid(std::size_t n) {
  return static_cast<unsigned>(std::clamp<std::size_t>((n + 255) / 256, 1, 4096));
}

}  // namespace detail

/// @brief Device-level Linear: `y[r, :] = act(x[r, :] W^T + b)` on `stream`.
/// @tparam T storage of `x` and `W` (`float`, `__half`, `__nv_bfloat16`); `Y` that of `y`
///         (`T` or `float`)
/// @param handle cuBLAS handle; pointed at `stream` when it is not already (for graph capture,
///        call `cublasSetStream(handle, stream)` and then `cublasSetWorkspace` before capturing:
///        setting the stream resets the workspace, so this call leaves a matching stream alone)
/// @param x [rows, in] device; @param W [out, in] device; @param bias [out] device fp32 or null
/// @param y [rows, out] device (must not alias `x`); @param gelu apply exact GELU after the bias
/// @param accumulate add to `y` (a residual: `y += x W^T + b`) instead of overwriting it;
///        `gelu` must then be false
/// @return the cuBLAS status mapped to `cudaError_t`, or the kernel's launch status
template <class T, class Y>
cudaError_t linear(cublasHandle_t handle, const T* x, std::size_t rows, const T* W, index_t in,
                   index_t out, const float* bias, bool gelu, Y* y, cudaStream_t stream,
                   bool accumulate = false) {
  if (rows == 0) return cudaSuccess;
  if (in <= 0 || out <= 0 || rows > 0x7fffffffu || (accumulate && gelu)) {
    return cudaErrorInvalidValue;
  }
  if (const cudaError_t e = detail::use_stream(handle, stream); e != cudaSuccess) return e;
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  // Row-major y [rows, out] is column-major [out, rows] = W (col-major [in, out])^T x (col-major
  // [in, rows]).
  const auto s =
      cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, static_cast<int>(rows), in, &alpha, W,
                   detail::cuda_data_type<T>(), in, x, detail::cuda_data_type<T>(), in, &beta, y,
                   detail::cuda_data_type<Y>(), out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) return detail::from_cublas(s);
  if (bias == nullptr && !gelu) return cudaSuccess;
  const std::size_t n = rows * static_cast<std::size_t>(out);
  detail::bias_activation_kernel<<<detail::elementwise_grid(n), 256, 0, stream>>>(y, rows, out,
                                                                                  bias, gelu);
  return cudaPeekAtLastError();
}

/// @brief Device-level affine LayerNorm of `rows` rows of `dim` on `stream` (fp32 statistics).
/// @param x, y [rows, dim] device (may alias); @param gamma, beta [dim] device fp32
template <class T>
cudaError_t layer_norm(const T* x, std::size_t rows, index_t dim, const float* gamma,
                       const float* beta, float eps, T* y, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (dim <= 0) return cudaErrorInvalidValue;
  const auto grid = static_cast<unsigned>(std::min<std::size_t>(rows, 65535));
  detail::layer_norm_rows_kernel<<<grid, 256, 0, stream>>>(x, rows, dim, gamma, beta, eps, y);
  return cudaPeekAtLastError();
}

}  // namespace dynllava::cuda

// SPDX-License-Identifier: Apache-2.0
/// @file error.cuh
/// @brief `dynllava::cuda_error` and `DYNLLAVA_CUDA_TRY` for the throwing host layer over CUDA.
#pragma once

#include <dynllava/core/error.hpp>

#include <cuda_runtime_api.h>

#include <string>

namespace dynllava {

/// Thrown by host-level CUDA entry points when a CUDA call fails; carries the error code.
class cuda_error : public error {
 public:
  cuda_error(cudaError_t code, const std::string& what) : error(what), code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

namespace detail {

/// Clears the sticky error (where the context is still usable) and throws `cuda_error`.
[[noreturn]] inline void throw_cuda_error(cudaError_t code, const char* call, const char* file,
                                          int line) {
  (void)cudaGetLastError();
  throw cuda_error(code, fmt::format("dynllava: CUDA call `{}` failed: {} ({}) at {}:{}", call,
                                     cudaGetErrorName(code), cudaGetErrorString(code), file, line));
}

}  // namespace detail

/// True when `code` means "no usable CUDA device here" (no device, or no driver at all).
inline bool is_no_device_error(cudaError_t code) noexcept {
  return code == cudaErrorNoDevice || code == cudaErrorInsufficientDriver;
}

}  // namespace dynllava

/// Evaluates a `cudaError_t` expression and throws `dynllava::cuda_error` when it fails.
#define DYNLLAVA_CUDA_TRY(call)                                                          \
  do {                                                                                   \
    const cudaError_t dynllava_status_ = (call);                                         \
    if (dynllava_status_ != cudaSuccess) {                                               \
      ::dynllava::detail::throw_cuda_error(dynllava_status_, #call, __FILE__, __LINE__); \
    }                                                                                    \
  } while (false)

// SPDX-License-Identifier: Apache-2.0
/// @file stream_workspace.cuh
/// @brief Convenience-layer helper for every component's CUDA calls: run a two-phase
/// device-level call with a workspace that is allocated and freed in stream order
/// (`cudaMallocAsync` / `cudaFreeAsync`, no host sync).
#pragma once

#include <dynllava/core/cuda/error.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>

namespace dynllava::cuda::detail {

/// @brief Calls `call(nullptr, bytes)` to size the workspace, allocates it on `stream`, calls
/// `call(temp, bytes)` and frees it on `stream`.
/// @tparam Call `cudaError_t(void* temp, std::size_t& temp_bytes)`
/// @throws dynllava::cuda_error when a call, the allocation or the release fails.
template <class Call>
void with_stream_workspace(cudaStream_t stream, Call&& call) {
  std::size_t bytes = 0;
  DYNLLAVA_CUDA_TRY(call(nullptr, bytes));
  void* temp = nullptr;
  DYNLLAVA_CUDA_TRY(cudaMallocAsync(&temp, bytes, stream));
  const cudaError_t run = call(temp, bytes);
  const cudaError_t freed = cudaFreeAsync(temp, stream);
  DYNLLAVA_CUDA_TRY(run);
  DYNLLAVA_CUDA_TRY(freed);
}

}  // namespace dynllava::cuda::detail

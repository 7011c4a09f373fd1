// SPDX-License-Identifier: Apache-2.0
/// @file device_positions.cuh
/// @brief `advance_positions(cuda::on_stream, ...)`: the next decode step's positions on a stream,
/// the twin of `advance_positions(host, ...)` (pipeline/decode_step.hpp); one elementwise launch,
/// nothing allocated, no host synchronisation, so a captured decode step can advance its own
/// positions between graph replays. Also pins `no_layer_hooks` as the CUDA step's layer hooks.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/span.hpp>
#include <dynllava/pipeline/run_layers.hpp>

#include <algorithm>
#include <cstddef>

namespace dynllava {

namespace cuda::detail {

/// Grid-stride: `positions[i] += 1`.
template <int = 0>
__global__ void advance_positions_kernel(index_t* positions, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    positions[i] += 1;
  }
}

}  // namespace cuda::detail

static_assert(layer_hooks<no_layer_hooks<cuda::on_stream>, cuda::on_stream>);

/// @brief `positions[b] += 1` for every sequence, enqueued on `exec.stream`.
/// @param[in,out] positions [batch] device
/// @throws dynllava::cuda_error on a launch failure.
inline void advance_positions(cuda::on_stream exec, device_span<index_t> positions) {
  if (positions.empty()) return;
  const auto grid =
      static_cast<unsigned>(std::min<std::size_t>((positions.size() + 255) / 256, 4096));
  cuda::detail::advance_positions_kernel<<<grid, 256, 0, exec.stream>>>(positions.data(),
                                                                        positions.size());
  DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
}

}  // namespace dynllava

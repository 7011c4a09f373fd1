// SPDX-License-Identifier: Apache-2.0
/// @file execution.cuh
/// @brief The CUDA execution tag: run on a given stream, stream-ordered, no host synchronisation.
#pragma once

#include <dynllava/core/execution.hpp>

#include <cuda_runtime_api.h>

namespace dynllava::cuda {

/// @brief Execution tag for the CUDA backend. Work is enqueued on `stream` and returns without
/// waiting; results are valid once the stream reaches that point.
struct on_stream {
  cudaStream_t stream = nullptr;
};

}  // namespace dynllava::cuda

namespace dynllava {
template <>
inline constexpr bool enable_execution_tag<cuda::on_stream> = true;
template <>
struct execution_space<cuda::on_stream> {
  using type = device_space;
};
static_assert(execution_tag<cuda::on_stream>);
static_assert(std::same_as<span_for<cuda::on_stream, float>, device_span<float>>);
}  // namespace dynllava

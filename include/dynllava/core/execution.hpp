// SPDX-License-Identifier: Apache-2.0
/// @file execution.hpp
/// @brief Execution tags: one algorithm name, overloaded on where it runs.
///
/// `dynllava::host` selects the CPU implementation (namespace `dynllava::cpu`); the CUDA tag
/// `dynllava::cuda::on_stream{stream}` lives in `core/cuda/execution.cuh` so that this header
/// stays free of CUDA includes. Generic code (the pipeline) is written once against
/// `execution_tag` and instantiated for either backend.
#pragma once

#include <concepts>
#include <type_traits>

namespace dynllava {

/// Tag type of the host (CPU) backend.
struct host_t {
  explicit host_t() = default;
};
/// Run on the host, synchronously, in the calling thread.
inline constexpr host_t host{};

/// Opt-in trait for execution tags (specialised for the CUDA tag in `core/cuda/execution.cuh`).
template <class T>
inline constexpr bool enable_execution_tag = false;
template <>
inline constexpr bool enable_execution_tag<host_t> = true;

/// @brief An execution tag.
/// Requirements:
///   1. `T` is trivially copyable and cheap to pass by value;
///   2. `enable_execution_tag<T>` is true (explicit opt-in).
template <class T>
concept execution_tag = enable_execution_tag<std::remove_cvref_t<T>> &&
                        std::is_trivially_copyable_v<std::remove_cvref_t<T>>;

static_assert(execution_tag<host_t>);

}  // namespace dynllava

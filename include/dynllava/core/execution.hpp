// SPDX-License-Identifier: Apache-2.0
/// @file execution.hpp
/// @brief Execution tags: one algorithm name, overloaded on where it runs.
///
/// `dynllava::host` selects the CPU implementation (namespace `dynllava::cpu`); the CUDA tag
/// `dynllava::cuda::on_stream{stream}` lives in `core/cuda/execution.cuh` so that this header
/// stays free of CUDA includes. Generic code (the pipeline) is written once against
/// `execution_tag` and instantiated for either backend.
#pragma once

#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

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

/// @brief The memory space an execution tag works in: `execution_space<T>::type`. The host tag
/// works in `host_space`; the CUDA tag (core/cuda/execution.cuh) in `device_space`. Concepts
/// name their views through it, so one concept describes the host and the CUDA model of a thing.
template <class T>
struct execution_space;
template <>
struct execution_space<host_t> {
  using type = host_space;
};
template <class T>
using execution_space_t = typename execution_space<std::remove_cvref_t<T>>::type;

/// A span in the memory space of execution tag `Tag`.
template <class Tag, class T>
using span_for = span<T, execution_space_t<Tag>>;
/// A ragged (CSR) batch in the memory space of execution tag `Tag`.
template <class Tag, class T>
using ragged_for = ragged_span<T, execution_space_t<Tag>>;
/// A ragged batch of rows in the memory space of execution tag `Tag`.
template <class Tag, class T>
using ragged_rows_for = ragged_rows<T, execution_space_t<Tag>>;

static_assert(std::same_as<span_for<host_t, float>, host_span<float>>);

}  // namespace dynllava

// SPDX-License-Identifier: Apache-2.0
/// @file dynllava.cuh
/// @brief Umbrella header of the CUDA tier: the host tier plus every `.cuh` of dynllava.
#pragma once

#include <dynllava/dynllava.hpp>

#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>

#include <dynllava/context/cuda/device_gather.cuh>
#include <dynllava/context/cuda/kernel_gather.cuh>

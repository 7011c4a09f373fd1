// SPDX-License-Identifier: Apache-2.0
/// @file dynllava.cuh
/// @brief Umbrella header of the CUDA tier (`dynllava::cuda`): the host tier (`dynllava.hpp`)
/// plus every `.cuh` of dynllava but `score/cuda/device_image_predictor_weights.cuh` (which needs
/// the `nn` tier). Needs nvcc, the CUDA runtime, cuBLAS and CCCL; no BLAS or JSON
/// (include `dynllava/nn.hpp` or `dynllava/io.hpp` too for those, and link their targets).
#pragma once

#include <dynllava/context/cuda/device_gather.cuh>
#include <dynllava/context/cuda/kernel_gather.cuh>
#include <dynllava/core/cuda/block_reduce.cuh>
#include <dynllava/core/cuda/block_scan_batch.cuh>
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/cuda/kernel_validate.cuh>
#include <dynllava/core/cuda/stream_workspace.cuh>
#include <dynllava/dynllava.hpp>
#include <dynllava/kvcache/cuda/device_h2o.cuh>
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>
#include <dynllava/kvcache/cuda/device_kv_caches.cuh>
#include <dynllava/kvcache/cuda/device_policies.cuh>
#include <dynllava/kvcache/cuda/kernel_kv_cache.cuh>
#include <dynllava/nn/cuda/device_linear.cuh>
#include <dynllava/nn/cuda/kernel_rows.cuh>
#include <dynllava/pipeline/cuda/device_positions.cuh>
#include <dynllava/score/cuda/device_fastv.cuh>
#include <dynllava/score/cuda/device_h2o_scorer.cuh>
#include <dynllava/score/cuda/device_image_predictor.cuh>
#include <dynllava/score/cuda/device_margins.cuh>
#include <dynllava/score/cuda/device_output_predictor.cuh>
#include <dynllava/select/cuda/device_gate.cuh>
#include <dynllava/select/cuda/device_score.cuh>
#include <dynllava/select/cuda/device_topk.cuh>
#include <dynllava/select/cuda/kernel_gate.cuh>
#include <dynllava/select/cuda/kernel_topk.cuh>
#include <dynllava/select/cuda/selectors.cuh>
#include <dynllava/train/cuda/device_attention_mask.cuh>
#include <dynllava/train/cuda/device_budget_loss.cuh>
#include <dynllava/train/cuda/device_gumbel.cuh>
#include <dynllava/train/cuda/device_masked_softmax.cuh>
#include <dynllava/train/cuda/kernel_attention_mask.cuh>
#include <dynllava/train/cuda/kernel_budget_loss.cuh>
#include <dynllava/train/cuda/kernel_gumbel.cuh>
#include <dynllava/train/cuda/kernel_masked_softmax.cuh>
#include <dynllava/train/cuda/square_layout.cuh>

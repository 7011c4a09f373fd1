// SPDX-License-Identifier: Apache-2.0
/// @file dynllava.hpp
/// @brief Umbrella header of the host tier: every `.hpp` of dynllava (no CUDA includes).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/half.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/llama_config.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/core/workspace.hpp>

#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/selection.hpp>
#include <dynllava/select/topk.hpp>
#include <dynllava/select/topk_types.hpp>

#include <dynllava/io/safetensors.hpp>

#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/attention.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/rms_norm.hpp>
#include <dynllava/nn/rope.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <dynllava/score/concepts.hpp>
#include <dynllava/score/fastv_scorer.hpp>
#include <dynllava/score/h2o_scorer.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/l2_norm_scorer.hpp>
#include <dynllava/score/load_predictors.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/predictor_weights.hpp>
#include <dynllava/score/random_scorer.hpp>

#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/kvcache/page_pool.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/kvcache/paged_kv_view.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>

#include <dynllava/model/llama.hpp>
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/model/load_llama.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/sparsifier.hpp>
#include <dynllava/score/random_weights.hpp>

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/context/sparse_context_view.hpp>

#include <dynllava/train/attention_layout.hpp>
#include <dynllava/train/attention_mask.hpp>
#include <dynllava/train/budget_loss.hpp>
#include <dynllava/train/gumbel.hpp>
#include <dynllava/train/masked_softmax.hpp>
#include <dynllava/train/philox.hpp>

#include <dynllava/cost/exact_flops.hpp>
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/llava_config.hpp>
#include <dynllava/cost/output_sweep.hpp>
#include <dynllava/cost/paper_formula.hpp>
#include <dynllava/cost/schedule.hpp>
#include <dynllava/cost/schedule_trace.hpp>
#include <dynllava/cost/trace.hpp>

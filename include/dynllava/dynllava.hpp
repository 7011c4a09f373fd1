// SPDX-License-Identifier: Apache-2.0
/// @file dynllava.hpp
/// @brief Umbrella header of the host tier (`dynllava::dynllava`): C++20 and fmt only, no
/// CUDA, BLAS or JSON includes. The learned predictors and models are in `dynllava/nn.hpp`
/// (+ BLAS), checkpoint loading in `dynllava/io.hpp` (+ nlohmann-json), CUDA in `dynllava.cuh`.
#pragma once

#include <dynllava/core/budget.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/half.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/llama_config.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/ranking_key.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/core/workspace.hpp>

#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/topk.hpp>
#include <dynllava/select/topk_types.hpp>

#include <dynllava/score/concepts.hpp>
#include <dynllava/score/fastv_scorer.hpp>
#include <dynllava/score/h2o_scorer.hpp>
#include <dynllava/score/layer_attention.hpp>
#include <dynllava/score/l2_norm_scorer.hpp>
#include <dynllava/core/predictor_config.hpp>
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

#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/decode_without_cache.hpp>
#include <dynllava/pipeline/generate.hpp>
#include <dynllava/pipeline/hooks.hpp>
#include <dynllava/pipeline/kv_session.hpp>
#include <dynllava/pipeline/no_cache_session.hpp>
#include <dynllava/pipeline/no_predictor.hpp>
#include <dynllava/pipeline/pipeline_observer.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>
#include <dynllava/pipeline/token_decisions.hpp>
#include <dynllava/pipeline/token_sampler.hpp>
#include <dynllava/pipeline/trace_recorder.hpp>

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/image_groups.hpp>
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

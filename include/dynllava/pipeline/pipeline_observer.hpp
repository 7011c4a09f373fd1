// SPDX-License-Identifier: Apache-2.0
/// @file pipeline_observer.hpp
/// @brief `pipeline_observer`: what a driver reports of its work while it runs (layer calls,
/// predictor calls, logits), for cost accounting (`trace_recorder`), profiling or logging. The
/// caller owns the observer and hands the driver a pointer; the driver never stores results in it.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>

namespace dynllava {

/// @brief Callbacks of one driver call (a prefill, a decode step, a step without KV cache), in
/// this order: `begin_call`, then per layer call `layer` (and `image_predictor` /
/// `output_predictor` where they run), then `end_call`. Every default does nothing.
class pipeline_observer {
 public:
  virtual ~pipeline_observer() = default;
  /// A call on a model of `layers` layers starts.
  virtual void begin_call(index_t layers) { (void)layers; }
  /// Layer `l` runs on rows ragged by `indptr` (`[batch + 1]`, host); row `r` of sequence `b`
  /// attends to `cached[b]` cached tokens (`[batch]`, host; empty: none) and to the rows of its
  /// sequence in the call up to itself.
  virtual void layer(index_t l, host_span<const index_t> indptr, host_span<const index_t> cached) {
    (void)l, (void)indptr, (void)cached;
  }
  /// The image predictor runs on groups of image tokens (`[groups + 1]` CSR, host), each group
  /// attending within itself.
  virtual void image_predictor(host_span<const index_t> group_indptr) { (void)group_indptr; }
  /// The output predictor runs on `tokens` tokens.
  virtual void output_predictor(std::size_t tokens) { (void)tokens; }
  /// The call ends after computing `logit_rows` rows of logits; `held[l]` is the number of tokens
  /// layer `l`'s KV cache holds now, summed over the batch (`[layers]`, host; empty without cache).
  virtual void end_call(std::size_t logit_rows, host_span<const index_t> held) {
    (void)logit_rows, (void)held;
  }
};

}  // namespace dynllava

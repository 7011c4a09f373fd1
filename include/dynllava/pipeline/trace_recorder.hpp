// SPDX-License-Identifier: Apache-2.0
/// @file trace_recorder.hpp
/// @brief `trace_recorder`: a `pipeline_observer` that writes each driver call's work as a
/// `cost::trace` (the cost model's terms), which `cost::exact_flops` and `cost::kv_cache_bytes`
/// turn into FLOPs and bytes.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/cost/trace.hpp>
#include <dynllava/pipeline/pipeline_observer.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dynllava {

/// @brief Records one `cost::trace` per driver call, in call order: per layer the query rows,
/// the (query, key) pairs and the tokens cached afterwards; the predictors' tokens and pairs; the
/// logit rows. Owns its traces.
class trace_recorder final : public pipeline_observer {
 public:
  /// Every call recorded so far.
  const std::vector<cost::trace>& traces() const noexcept { return traces_; }
  /// Forgets every recorded call.
  void clear() noexcept { traces_.clear(); }

  void begin_call(index_t layers) override {
    traces_.emplace_back();
    traces_.back().layers.resize(static_cast<std::size_t>(layers));
  }
  void layer(index_t l, host_span<const index_t> indptr, host_span<const index_t> cached) override {
    auto& t = traces_.back().layers[static_cast<std::size_t>(l)];
    for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
      const std::int64_t n = indptr[b + 1] - indptr[b];
      t.query_rows += n;
      t.attention_pairs += n * (cached.empty() ? 0 : cached[b]) + n * (n + 1) / 2;
    }
  }
  void image_predictor(host_span<const index_t> group_indptr) override {
    for (std::size_t g = 0; g + 1 < group_indptr.size(); ++g) {
      const std::int64_t n = group_indptr[g + 1] - group_indptr[g];
      traces_.back().image_tokens_scored += n;
      traces_.back().image_attention_pairs += n * n;
    }
  }
  void output_predictor(std::size_t tokens) override {
    traces_.back().output_tokens_scored += static_cast<std::int64_t>(tokens);
  }
  void end_call(std::size_t logit_rows, host_span<const index_t> held) override {
    auto& t = traces_.back();
    for (std::size_t l = 0; l < held.size(); ++l) t.layers[l].kv_tokens = held[l];
    t.logit_rows += static_cast<std::int64_t>(logit_rows);
  }

 private:
  std::vector<cost::trace> traces_;
};

}  // namespace dynllava

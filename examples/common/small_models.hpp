// SPDX-License-Identifier: Apache-2.0
/// @file small_models.hpp
/// @brief Small random models for the examples and tests: reduced predictor sizes, and an output
/// predictor whose gate keeps about half of the tokens of a given decoder.
#pragma once

#include <dynllava/core/keep_margin.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/model/llama.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/random_weights.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dynllava::examples {

/// Predictor sizes for a hidden width `H` (d_model 16, 2 heads, small heads).
inline predictor_config small_predictor_config(index_t H) {
  predictor_config c;
  c.hidden = H;
  c.d_model = 16;
  c.heads = 2;
  c.ffn = 32;
  c.local_dim = 8;
  c.image_head = {8, 4};
  c.output_head = {16, 8, 4};
  return c;
}

/// @brief Random output-predictor weights (`seed`) with the keep margin `logit0 - logit1`
/// centred on `model`'s hidden states entering layer `sparse_layer`: every vocabulary token is
/// run alone at position 5 through layers `0 .. sparse_layer-1`, and the median margin is
/// subtracted from the keep logit's bias, so the gate keeps some tokens and drops others.
inline output_predictor centred_output_predictor(const predictor_config& pc,
                                                 const llama_model& model, std::uint64_t seed,
                                                 index_t sparse_layer = 2) {
  auto wts = random_output_predictor_weights(pc, seed);
  const auto n = static_cast<std::size_t>(model.vocab());
  const auto H = static_cast<std::size_t>(model.hidden());
  std::vector<std::int32_t> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<std::int32_t>(i);
  std::vector<float> h(n * H), k(h.size()), v(h.size()), logits(2 * n), margin(n);
  model.embed(make_host_span(std::as_const(ids)), make_host_span(h));
  std::vector<index_t> indptr(n + 1), pos(n, 5);
  for (std::size_t i = 0; i <= n; ++i) indptr[i] = static_cast<index_t>(i);
  const paged_kv_cache* none = nullptr;
  for (index_t l = 0; l < sparse_layer; ++l) {
    model.layer(l, {make_host_span(std::as_const(indptr)), make_host_span(h), model.hidden()},
                make_host_span(std::as_const(pos)), none, make_host_span(k), make_host_span(v));
  }
  output_predictor(pc, wts).logits(
      host,
      {make_host_span(std::as_const(indptr)), make_host_span(std::as_const(h)), model.hidden()},
      make_host_span(logits));
  for (std::size_t i = 0; i < n; ++i) margin[i] = keep_margin(logits[2 * i], logits[2 * i + 1]);
  std::nth_element(margin.begin(), margin.begin() + static_cast<std::ptrdiff_t>(n / 2),
                   margin.end());
  wts.head.back().bias[0] -= margin[n / 2];
  return output_predictor(pc, std::move(wts));
}

}  // namespace dynllava::examples

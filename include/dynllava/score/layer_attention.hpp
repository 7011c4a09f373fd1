// SPDX-License-Identifier: Apache-2.0
/// @file layer_attention.hpp
/// @brief `layer_attention`: the attention each cached token has received so far, per layer and
/// sequence, kept in step with a KV cache (what H2O ranks held tokens by).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/h2o_scorer.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dynllava {

/// @brief One stateful scorer per layer, fed by the decoder's per-key attention
/// (`layer_probes::key_attention`) and cut whenever the cache is. Host memory, owning.
/// @tparam S the accumulator of one layer (`stateful_token_scorer<S, host_t>`)
template <stateful_token_scorer<host_t> S = h2o_scorer>
class layer_attention {
 public:
  layer_attention() = default;
  layer_attention(index_t layers, std::size_t batch)
      : per_layer_(static_cast<std::size_t>(layers), S(batch)) {}

  std::size_t layers() const noexcept { return per_layer_.size(); }
  const S& layer(index_t l) const { return per_layer_[static_cast<std::size_t>(l)]; }

  /// @brief After layer `l` ran on a call: `mass` (`[sum_b (cached[b] + rows_b)]`, the probes'
  /// layout) is the attention every visible key received; the call's rows with `admitted[r] != 0`
  /// entered the cache and start being tracked; every tracked token adds what it received.
  /// @param[in] indptr [batch + 1] the call's rows per sequence
  /// @param[in] cached [batch] tokens the layer's cache held before the call (== tracked)
  /// @throws dynllava::error when the tracked counts disagree with `cached`.
  void track(index_t l, host_span<const index_t> indptr, host_span<const index_t> cached,
             host_span<const std::uint8_t> admitted, host_span<const float> mass) {
    auto& acc = per_layer_[static_cast<std::size_t>(l)];
    std::vector<index_t> added(cached.size(), 0), block_indptr{0};
    std::vector<float> block;
    std::size_t first = 0;
    const host_span<const index_t> tracked = acc.lengths();
    DYNLLAVA_EXPECTS(tracked.size() == cached.size(),
                     "layer_attention: layer {} tracks {} sequences, the cache holds {}", l,
                     tracked.size(), cached.size());
    for (std::size_t b = 0; b < cached.size(); ++b) {
      DYNLLAVA_EXPECTS(tracked[b] == cached[b],
                       "layer_attention: layer {} sequence {} holds {} tokens but {} are tracked "
                       "(was the cache changed outside the session?)",
                       l, b, cached[b], tracked[b]);
      const auto held = static_cast<std::size_t>(cached[b]);
      block.insert(block.end(), mass.begin() + static_cast<std::ptrdiff_t>(first),
                   mass.begin() + static_cast<std::ptrdiff_t>(first + held));
      first += held;
      for (index_t r = indptr[b]; r < indptr[b + 1]; ++r, ++first) {
        if (admitted[static_cast<std::size_t>(r)] == 0) continue;
        block.push_back(mass[first]);
        ++added[b];
      }
      block_indptr.push_back(static_cast<index_t>(block.size()));
    }
    acc.append(host, make_host_span(std::as_const(added)));
    acc.accumulate(
        host, {make_host_span(std::as_const(block_indptr)), make_host_span(std::as_const(block))});
  }

  /// Every tracked token's score in layer `l`, sequence by sequence (`[tracked]`).
  void scores(index_t l, host_span<float> out) const { layer(l).scores(host, out); }

  /// Layer `l` keeps only the tokens at `kept` (CSR, local, ascending), as its cache did.
  void retain(index_t l, host_ragged<const index_t> kept) {
    per_layer_[static_cast<std::size_t>(l)].retain(host, kept);
  }

 private:
  std::vector<S> per_layer_;
};

}  // namespace dynllava

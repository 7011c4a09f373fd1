// SPDX-License-Identifier: Apache-2.0
/// @file decode_step.hpp
/// @brief One decode step of the KV mode (METHOD.md 4b) for any execution tag: `decode_step`
/// embeds one new token per sequence, runs the layers below the sparse layer, gates the tokens
/// with the output predictor, runs the layers from the sparse layer on (each new token's K/V
/// enters a layer's cache iff the policy admits its decision there), cuts the cache to what the
/// policy retains and writes the logits. `kv_session::decode` is this function with the host
/// tag; with `cuda::on_stream` and the CUDA models (a CUDA `decoder`, `device_contiguous_kv_cache`
/// or `device_paged_kv_cache`, `device_online_gate_policy`, `cuda::output_predictor_scorer`) it
/// is a CUDA decode step: stream-ordered, no allocation, no host synchronisation, so capturable in
/// a CUDA graph whenever the decoder is.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/pipeline/run_layers.hpp>
#include <dynllava/pipeline/tagged_hooks.hpp>
#include <dynllava/score/concepts.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynllava {

/// @brief The buffers of a decode step over `batch` sequences of width `H`, in the memory space of
/// `Tag`; non-owning, the caller's (sized once, reused every step). `T` is the cache's element
/// type.
template <class Tag, class T>
struct decode_buffers {
  span_for<Tag, const index_t> indptr;     ///< [batch + 1]: 0, 1, ..., batch (one new token per
                                           ///< sequence), filled once by the caller
  span_for<Tag, float> hidden;             ///< [batch, H]: the new tokens' rows
  span_for<Tag, T> keys;                   ///< [batch, H]: one layer's keys
  span_for<Tag, T> values;                 ///< [batch, H]: one layer's values
  gate_outputs<Tag> gate;                  ///< the online gate: logits [batch, 2], keep [batch],
                                           ///< kept CSR [batch + 1] / [batch]; unused without gate
  span_for<Tag, index_t> retained_indptr;  ///< [batch + 1]: a retention's kept CSR
  span_for<Tag, index_t> retained;  ///< [>= tokens an evicting layer holds after the append];
                                    ///< a device caller sizes it by `batch * cache.max_length()`
};

/// @brief The buffers of a host decode step, owned: `resize` once for the batch (and again when
/// the retained bound grows), then `view()` every step; resizing to the same sizes allocates
/// nothing.
struct host_decode_buffers {
  std::vector<index_t> indptr, kept_indptr, kept, retained_indptr, retained;
  std::vector<float> hidden, keys, values, gate_logits;
  std::vector<std::uint8_t> keep;

  /// For `batch` sequences of width `H`, with room for `retain` kept tokens per layer.
  void resize(std::size_t batch, index_t H, std::size_t retain) {
    const std::size_t rows = batch * static_cast<std::size_t>(H);
    indptr.resize(batch + 1);
    for (std::size_t b = 0; b <= batch; ++b) indptr[b] = static_cast<index_t>(b);
    hidden.resize(rows);
    keys.resize(rows);
    values.resize(rows);
    gate_logits.resize(2 * batch);
    keep.resize(batch);
    kept_indptr.resize(batch + 1);
    kept.resize(batch);
    retained_indptr.resize(batch + 1);
    retained.resize(retain);
  }
  /// The non-owning view `decode_step` takes.
  decode_buffers<host_t, float> view() {
    return {make_host_span(std::as_const(indptr)),
            make_host_span(hidden),
            make_host_span(keys),
            make_host_span(values),
            {make_host_span(gate_logits), make_host_span(keep), make_host_span(kept_indptr),
             make_host_span(kept)},
            make_host_span(retained_indptr),
            make_host_span(retained)};
  }
};

namespace detail {

/// @brief Checks, on the host, that `policy` agrees with an online gate at `sparse_layer` over
/// `layers` layers: every layer admits kept tokens whenever it admits gated-out ones; layers below
/// `sparse_layer` cache every token (no gate has decided there); with the gate on (`gate`), every
/// layer from `sparse_layer` on drops gated-out tokens (else the gate's decisions would be
/// ignored).
/// @param who the caller, @param gate_on how the caller's gate is switched on, @param gate_off
///        how it is switched off (both for the messages)
/// @throws dynllava::error naming `who`, the layer and the remedy.
template <class Policy>
void check_gate_policy(const Policy& policy, index_t layers, index_t sparse_layer, bool gate,
                       const char* who, const char* gate_on, const char* gate_off) {
  for (index_t l = 0; l < layers; ++l) {
    DYNLLAVA_EXPECTS(policy.admits(l, true) || !policy.admits(l, false),
                     "{}: the policy admits gated-out tokens but not kept ones at layer {}", who,
                     l);
    if (l < sparse_layer) {
      DYNLLAVA_EXPECTS(policy.admits(l, false),
                       "{}: layer {} is below sparse_layer {} and must cache every token, but the "
                       "policy drops gated-out tokens there (an online_gate_policy's layer must "
                       "equal sparse_layer)",
                       who, l, sparse_layer);
    } else if (gate) {
      DYNLLAVA_EXPECTS(!policy.admits(l, false),
                       "{}: {}, but the policy caches gated-out tokens in layer {} (at or above "
                       "sparse_layer {}); use online_gate_policy{{{}}}, or {} for a policy that "
                       "ignores the gate",
                       who, gate_on, l, sparse_layer, sparse_layer, gate_off);
    }
  }
}

/// The most tokens (summed over the batch) any layer where `policy` evicts holds once `adding`
/// more are appended to each of them; 0 where no layer evicts. Reads the host cache's lengths.
template <class Cache, class Policy>
std::size_t retained_bound(const Cache& cache, const Policy& policy, std::size_t adding) {
  std::size_t most = 0;
  bool evicts = false;
  for (index_t l = 0; l < cache.layers(); ++l) {
    if (!policy.evicts(l)) continue;
    evicts = true;
    most = std::max(most, static_cast<std::size_t>(held_tokens(cache, l)));
  }
  return evicts ? most + adding : 0;
}

}  // namespace detail

/// @brief Runs one decode step: `tokens[b]` is sequence `b`'s newest token, at original position
/// `positions[b]`. With an output predictor (non-null `output`, `sparse_layer < layers`) the gate
/// decides each token at the sparse layer (`gate_new_tokens`: `logit0 > logit1` keeps it; the
/// logits, mask and kept CSR are left in `buf.gate` for the caller to read); every token attends
/// to the cache and to itself in every layer and enters layer `l`'s cache iff
/// `policy.admits(l, keep)`; without a gate every token counts as kept. Then every evicting layer
/// is cut to what the policy retains, and the logits of the final rows are written. The caller
/// advances `positions` (`advance_positions`).
/// @param[in] tokens `[batch]` in the tag's memory: ids in `[0, vocab)` (a device caller checks
///            them where they are made)
/// @param[in] positions `[batch]`: the new tokens' original positions
/// @param[out] logits `[batch, vocab]`
/// @param hooks per-layer additions (`layer_hooks`): probes, bookkeeping of score-based policies,
///        reports; `no_layer_hooks` by default, which serves only score-free policies
///        (`retention_hooks`: with H2O the call does not compile)
/// @throws dynllava::error, before anything runs and without reading device memory, naming the
///         argument on extents or widths that do not fit (every buffer of `buf` the step will
///         use; `buf.retained` against the host cache's lengths, or against
///         `batch * cache.max_length()` for a device cache that has one) and on a policy that
///         disagrees with the gate (`detail::check_gate_policy`: layers below `sparse_layer`
///         cache every token; with a gate, the layers from it drop gated-out ones); then what the
///         decoder, the predictor, the cache and the policy throw.
template <execution_tag Tag, class Model, class Cache, class Policy, class Output,
          class Hooks = no_layer_hooks<Tag>>
requires decoder<Model, Tag, Cache> && kv_policy<Policy, Tag> && two_way_predictor<Output, Tag> &&
    retention_hooks<std::remove_cvref_t<Hooks>, Policy, Tag>
void decode_step(Tag exec, const Model& m, Cache& cache, const Policy& policy, const Output* output,
                 index_t sparse_layer, span_for<Tag, const std::int32_t> tokens,
                 span_for<Tag, const index_t> positions,
                 const decode_buffers<Tag, typename Cache::value_type>& buf,
                 span_for<Tag, float> logits, Hooks&& hooks = Hooks{}) {
  const index_t L = m.layers();
  const auto H = static_cast<std::size_t>(m.hidden());
  const std::size_t n = tokens.size();
  DYNLLAVA_EXPECTS(n == cache.batch(), "decode_step: one token per sequence ({}), got {}",
                   cache.batch(), n);
  DYNLLAVA_EXPECTS(0 <= sparse_layer && sparse_layer <= L,
                   "decode_step: sparse_layer must be in [0, {}], got {}", L, sparse_layer);
  DYNLLAVA_EXPECTS(cache.layers() == L && cache.width() == m.hidden(),
                   "decode_step: the cache ({} layers, width {}) does not fit the model ({} "
                   "layers, H {})",
                   cache.layers(), cache.width(), L, m.hidden());
  DYNLLAVA_EXPECTS(positions.size() == n, "decode_step: positions must have {} entries, got {}", n,
                   positions.size());
  DYNLLAVA_EXPECTS(buf.indptr.size() == n + 1,
                   "decode_step: buf.indptr must have {} entries, got {}", n + 1,
                   buf.indptr.size());
  if constexpr (std::same_as<execution_space_t<Tag>, host_space>) {
    for (std::size_t b = 0; b <= n; ++b) {
      DYNLLAVA_EXPECTS(buf.indptr[b] == static_cast<index_t>(b),
                       "decode_step: buf.indptr[{}] must be {} (one token per sequence), got {}", b,
                       b, buf.indptr[b]);
    }
  }
  DYNLLAVA_EXPECTS(buf.hidden.size() == n * H,
                   "decode_step: buf.hidden must be [{}, {}], got {} values", n, H,
                   buf.hidden.size());
  DYNLLAVA_EXPECTS(logits.size() == n * static_cast<std::size_t>(m.vocab()),
                   "decode_step: logits must be [{}, vocab = {}], got {} values", n, m.vocab(),
                   logits.size());
  DYNLLAVA_EXPECTS(buf.retained_indptr.size() == n + 1,
                   "decode_step: buf.retained_indptr must have {} entries, got {}", n + 1,
                   buf.retained_indptr.size());
  DYNLLAVA_EXPECTS(buf.keys.size() == n * H && buf.values.size() == n * H,
                   "decode_step: buf.keys and buf.values must be [{}, {}], got {} and {} values", n,
                   H, buf.keys.size(), buf.values.size());
  const bool gate = output != nullptr && sparse_layer < L;
  detail::check_gate_policy(policy, L, sparse_layer, gate, "decode_step",
                            "an output predictor gates", "no output predictor");
  if (gate) {
    DYNLLAVA_EXPECTS(output->hidden() == m.hidden(),
                     "decode_step: the output predictor reads width {}, the model's H is {}",
                     output->hidden(), m.hidden());
    DYNLLAVA_EXPECTS(buf.gate.logits.size() == 2 * n,
                     "decode_step: buf.gate.logits must be [{}, 2], got {} values", n,
                     buf.gate.logits.size());
    DYNLLAVA_EXPECTS(buf.gate.keep.size() == n,
                     "decode_step: buf.gate.keep must have one entry per sequence ({}), got {}", n,
                     buf.gate.keep.size());
    DYNLLAVA_EXPECTS(buf.gate.kept_indptr.size() == n + 1,
                     "decode_step: buf.gate.kept_indptr must have {} entries, got {}", n + 1,
                     buf.gate.kept_indptr.size());
    DYNLLAVA_EXPECTS(buf.gate.kept_positions.size() >= n,
                     "decode_step: buf.gate.kept_positions must hold {} entries, got {}", n,
                     buf.gate.kept_positions.size());
  }
  // Retention writes every evicting layer's kept lists to buf.retained: room for all it holds.
  if constexpr (std::same_as<execution_space_t<Tag>, host_space>) {
    const std::size_t need = detail::retained_bound(cache, policy, n);
    DYNLLAVA_EXPECTS(buf.retained.size() >= need,
                     "decode_step: buf.retained must hold the {} tokens an evicting layer holds "
                     "after this step, got {}",
                     need, buf.retained.size());
  } else if constexpr (requires { cache.max_length(); }) {
    bool evicts = false;
    for (index_t l = 0; l < L; ++l) evicts = evicts || policy.evicts(l);
    const std::size_t need = evicts ? n * static_cast<std::size_t>(cache.max_length()) : 0;
    DYNLLAVA_EXPECTS(buf.retained.size() >= need,
                     "decode_step: buf.retained must hold batch * max_length = {} tokens (an "
                     "evicting layer's lengths are on the device), got {}",
                     need, buf.retained.size());
  }
  // Nothing above read device memory; from here on the work is enqueued in order.
  m.embed(exec, tokens, buf.hidden);
  const ragged_rows_for<Tag, float> rows{buf.indptr, buf.hidden, m.hidden()};
  const span_for<Tag, const std::uint8_t> keep =
      gate ? span_for<Tag, const std::uint8_t>(buf.gate.keep) : span_for<Tag, const std::uint8_t>{};
  // below the sparse layer no gate has decided yet: every token counts as kept
  run_layers(exec, m, cache, policy, 0, sparse_layer, rows, positions,
             span_for<Tag, const std::uint8_t>{}, buf.keys, buf.values, hooks);
  if (gate) {
    gate_new_tokens(exec, *output,
                    ragged_rows_for<Tag, const float>{
                        buf.indptr, span_for<Tag, const float>(buf.hidden), m.hidden()},
                    buf.gate);
  }
  run_layers(exec, m, cache, policy, sparse_layer, L, rows, positions, keep, buf.keys, buf.values,
             hooks);
  retain_layers(exec, cache, policy, buf.retained_indptr, buf.retained, hooks);
  m.logits(exec, span_for<Tag, const float>(buf.hidden), logits);
}

/// @brief `positions[b] += 1` for every sequence: the next step's positions (the host model; the
/// CUDA one is in `pipeline/cuda/device_positions.cuh`).
inline void advance_positions(host_t, host_span<index_t> positions) noexcept {
  for (auto& p : positions) ++p;
}

}  // namespace dynllava

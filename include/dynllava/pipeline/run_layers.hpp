// SPDX-License-Identifier: Apache-2.0
/// @file run_layers.hpp
/// @brief The layer loop of the KV mode, written once for every execution tag: `run_layers` (run
/// decoder layers on a ragged batch and append each layer's K/V under the policy) and
/// `retain_layers` (cut every evicting layer to what the policy retains), with `layer_hooks`
/// through which a caller adds its own per-layer work (probes, bookkeeping, reports).
/// `kv_session` runs its prefill and decode steps through them with the host tag; `decode_step`
/// (`decode_step.hpp`) runs a whole decode step through them for any tag.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/kv_policy.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/pipeline/decoder.hpp>

#include <concepts>
#include <cstdint>
#include <type_traits>

namespace dynllava {

/// @brief What `run_layers` and `retain_layers` ask of their caller around each layer.
/// Requirements, for `h` of type `H&`, an execution tag of type `Tag` and `index_t l`:
///   1. `h.probes(l)` returns the `layer_probes_for<Tag>` that layer `l`'s call fills (empty
///      spans: none; non-empty ones need a `probing_decoder`), called before the layer runs;
///   2. `h.appended(l)` is called once layer `l` ran and its K/V reached the cache;
///   3. `h.retention_scores(l)` returns the scores (`ragged_for<Tag, const float>`, a row per
///      sequence over the tokens the layer holds) that a score-ranking policy ranks layer `l` by,
///      or an empty view for the others; called before the layer is compacted;
///   4. `h.retained(l, kept_indptr, kept)` (`span_for<Tag, const index_t>` each) is called once
///      layer `l` was compacted to these kept lists.
template <class H, class Tag>
concept layer_hooks = execution_tag<Tag> &&
    requires(H& h, index_t l, span_for<Tag, const index_t> kept) {
  { h.probes(l) } -> std::convertible_to<layer_probes_for<Tag>>;
  h.appended(l);
  { h.retention_scores(l) } -> std::convertible_to<ragged_for<Tag, const float>>;
  h.retained(l, kept, kept);
};

/// The hooks that add nothing: no probes, no scores, no reports.
template <class Tag>
struct no_layer_hooks {
  layer_probes_for<Tag> probes(index_t) const noexcept { return {}; }
  void appended(index_t) const noexcept {}
  ragged_for<Tag, const float> retention_scores(index_t) const noexcept { return {}; }
  void retained(index_t, span_for<Tag, const index_t>,
                span_for<Tag, const index_t>) const noexcept {}
};
static_assert(layer_hooks<no_layer_hooks<host_t>, host_t>);

/// @brief `layer_hooks<H, Tag>` that can serve `Policy`'s retention: a policy that ranks by
/// scores (`kv_policy_needs_scores<Policy>`, H2O) needs hooks that supply them, so
/// `no_layer_hooks` serves only the score-free policies.
template <class H, class Policy, class Tag>
concept retention_hooks = layer_hooks<H, Tag> &&
    (!kv_policy_needs_scores<Policy> || !std::same_as<H, no_layer_hooks<Tag>>);

namespace detail {

/// Runs `m.layer` with probes when the model offers them; a plain decoder runs without and must
/// not be asked for any.
template <class Tag, class Model, class Cache>
void run_layer(Tag exec, const Model& m, index_t l, ragged_rows_for<Tag, float> rows,
               span_for<Tag, const index_t> positions, const Cache* cache,
               span_for<Tag, typename Cache::value_type> k,
               span_for<Tag, typename Cache::value_type> v, layer_probes_for<Tag> probes) {
  if constexpr (probing_decoder<Model, Tag, Cache>) {
    m.layer(exec, l, rows, positions, cache, k, v, probes);
  } else {
    DYNLLAVA_EXPECTS(probes.queries.empty() && probes.key_attention.empty(),
                     "run_layers: layer {} was asked for probes, but the model is not a "
                     "probing_decoder",
                     l);
    m.layer(exec, l, rows, positions, cache, k, v);
  }
}

}  // namespace detail

/// @brief Runs layers `[from, to)` of `m` in place on `rows`, each row attending to what `cache`
/// holds for its sequence and to the earlier rows of its sequence in the call, and appends each
/// layer's keys and values to `cache` under `policy` (`gated_append`) before the next layer runs.
/// Stream-ordered on CUDA; allocates nothing itself.
/// @param[in,out] rows ragged `[n, H]` in the tag's memory: the rows entering layer `from`, then
///                leaving layer `to - 1`
/// @param[in] positions `[n]`: each row's original position
/// @param[in] keep `[n]`: the online gate's flags, read where the policy admits only kept tokens;
///            empty: every row counts as kept (a prompt, a step without gate)
/// @param k, v `[n, H]` scratch for one layer's keys and values
/// @throws dynllava::error on extents that disagree (before layer `from` runs); what the decoder,
///         the cache's append and the hooks throw (layers below the failing one stay appended).
template <execution_tag Tag, class Model, class Cache, class Policy, class Hooks>
requires decoder<Model, Tag, Cache> && kv_policy<Policy, Tag> &&
    layer_hooks<std::remove_cvref_t<Hooks>, Tag>
void run_layers(Tag exec, const Model& m, Cache& cache, const Policy& policy, index_t from,
                index_t to, ragged_rows_for<Tag, float> rows,
                span_for<Tag, const index_t> positions, span_for<Tag, const std::uint8_t> keep,
                span_for<Tag, typename Cache::value_type> k,
                span_for<Tag, typename Cache::value_type> v, Hooks&& hooks) {
  DYNLLAVA_EXPECTS(0 <= from && from <= to && to <= m.layers(),
                   "run_layers: layers [{}, {}) are not within the model's [0, {})", from, to,
                   m.layers());
  DYNLLAVA_EXPECTS(rows.width == m.hidden(), "run_layers: rows have width {}, the model H = {}",
                   rows.width, m.hidden());
  const std::size_t n = rows.rows();
  DYNLLAVA_EXPECTS(positions.size() == n, "run_layers: positions must have {} entries, got {}", n,
                   positions.size());
  DYNLLAVA_EXPECTS(k.size() == rows.values.size() && v.size() == rows.values.size(),
                   "run_layers: k and v must be [n = {}, H = {}], got {} and {} values", n,
                   rows.width, k.size(), v.size());
  DYNLLAVA_EXPECTS(rows.batch() == cache.batch(),
                   "run_layers: rows cover {} sequences, the cache {}", rows.batch(),
                   cache.batch());
  DYNLLAVA_EXPECTS(keep.empty() || keep.size() == n,
                   "run_layers: keep must be empty or have one entry per row ({}), got {}", n,
                   keep.size());
  using value = typename Cache::value_type;
  for (index_t l = from; l < to; ++l) {
    detail::run_layer(exec, m, l, rows, positions, static_cast<const Cache*>(&cache), k, v,
                      hooks.probes(l));
    gated_append(exec, cache, policy, l, span_for<Tag, const index_t>(rows.indptr),
                 span_for<Tag, const value>(k), span_for<Tag, const value>(v), keep, positions);
    hooks.appended(l);
  }
}

/// @brief Cuts every layer where `policy.evicts(layer)` to what the policy retains
/// (`enforce_retention`), ranking score-based policies by `hooks.retention_scores(layer)`.
/// @param[out] kept_indptr `[batch + 1]`; @param[out] kept `[>=` the most tokens any evicting
///             layer holds (summed over the batch)`]`: a layer's kept lists, handed to
///             `hooks.retained` (a device caller that cannot read the lengths sizes it by the
///             cache's capacity, `batch * capacity`)
template <execution_tag Tag, class Cache, class Policy, class Hooks>
requires kv_storage<Cache, Tag> && kv_policy<Policy, Tag> &&
    retention_hooks<std::remove_cvref_t<Hooks>, Policy, Tag>
void retain_layers(Tag exec, Cache& cache, const Policy& policy, span_for<Tag, index_t> kept_indptr,
                   span_for<Tag, index_t> kept, Hooks&& hooks) {
  for (index_t l = 0; l < cache.layers(); ++l) {
    if (!policy.evicts(l)) continue;
    enforce_retention(exec, cache, policy, l, hooks.retention_scores(l), kept_indptr, kept);
    hooks.retained(l, span_for<Tag, const index_t>(kept_indptr),
                   span_for<Tag, const index_t>(kept));
  }
}

}  // namespace dynllava

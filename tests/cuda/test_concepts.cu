// SPDX-License-Identifier: Apache-2.0
/// @file test_concepts.cu
/// @brief One concept describes the host and the CUDA model of the same thing: archetypes of
/// device-memory models (declarations only) satisfy each concept with the CUDA tag and not with
/// the host tag, and the bundled host models do not pass for CUDA ones. Checked when this file
/// compiles (every CI run builds it).
#include <dynllava/dynllava.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

namespace dynllava::test::device_archetypes {

using cuda::on_stream;
template <class T>
using dspan = span<T, device_space>;

/// A 2-way predictor whose inputs and outputs live in device memory.
struct device_predictor {
  index_t hidden() const;
  void score(on_stream, ragged_rows<const float, device_space>, dspan<float>) const;
  void logits(on_stream, ragged_rows<const float, device_space>, dspan<float>) const;
};
static_assert(two_way_predictor<device_predictor, on_stream>);
static_assert(!token_scorer<device_predictor, host_t>);
static_assert(!token_scorer<l2_norm_scorer, on_stream>);
static_assert(token_scorer<l2_norm_scorer, host_t>);

/// FastV-like scorer on device queries and keys.
struct device_attention_scorer {
  void score(on_stream, dspan<const float>, ragged_rows<const float, device_space>,
             ragged_span<const index_t, device_space>, dspan<float>) const;
};
static_assert(attention_scorer<device_attention_scorer, on_stream>);
static_assert(!attention_scorer<device_attention_scorer, host_t>);
static_assert(!attention_scorer<fastv_scorer, on_stream>);
static_assert(image_ranker<device_attention_scorer, on_stream> &&
              image_ranker<device_predictor, on_stream> && !image_ranker<device_predictor, host_t>);

/// H2O-like accumulator in device memory.
struct device_stateful_scorer {
  explicit device_stateful_scorer(std::size_t batch);
  dspan<const index_t> lengths() const;
  void score(on_stream, ragged_rows<const float, device_space>, dspan<float>) const;
  void append(on_stream, dspan<const index_t>);
  void accumulate(on_stream, ragged_span<const float, device_space>);
  void retain(on_stream, ragged_span<const index_t, device_space>);
  void scores(on_stream, dspan<float>) const;
};
static_assert(stateful_token_scorer<device_stateful_scorer, on_stream>);
static_assert(!stateful_token_scorer<device_stateful_scorer, host_t>);
static_assert(!stateful_token_scorer<h2o_scorer, on_stream>);

/// A selector over device scores.
struct device_selector {
  index_t select(on_stream, const ragged_span<const float, device_space>&, dspan<index_t>,
                 dspan<index_t>) const;
};
static_assert(token_selector<device_selector, on_stream, ragged_span<const float, device_space>>);
static_assert(!token_selector<device_selector, host_t, ragged_span<const float, host_space>>);
static_assert(!token_selector<budgeted_topk, on_stream, ragged_span<const float, device_space>>);

/// A KV cache whose keys, values and counts live in device memory (shape on the host).
struct device_cache {
  using memory_space = device_space;
  using value_type = __half;
  index_t layers() const;
  std::size_t batch() const;
  index_t width() const;
  dspan<const index_t> lengths(index_t) const;
  dspan<const index_t> appended_counts(index_t) const;
  void append(on_stream, index_t, dspan<const index_t>, dspan<const __half>, dspan<const __half>,
              dspan<const std::uint8_t>, dspan<const index_t>);
  void retain(on_stream, index_t, ragged_span<const index_t, device_space>);
};
static_assert(kv_storage<device_cache, on_stream>);
static_assert(!kv_storage<device_cache, host_t>);
static_assert(!kv_storage<paged_kv_cache, on_stream>);
static_assert(!kv_storage<contiguous_kv_cache, on_stream>);
// the bundled CUDA caches are its models; the host caches also give token-by-token access
static_assert(kv_storage<cuda::device_paged_kv_cache<__nv_bfloat16>, on_stream>);
static_assert(kv_storage<cuda::device_contiguous_kv_cache<float>, on_stream>);
static_assert(!host_kv_storage<cuda::device_contiguous_kv_cache<float>>);
static_assert(host_kv_storage<paged_kv_cache> && kv_storage<paged_kv_cache, host_t>);

/// A retention policy that ranks device scores, a layer at a time.
struct device_policy {
  bool admits(index_t, bool) const;
  bool evicts(index_t) const;
  void kept(on_stream, index_t, dspan<const index_t>, dspan<const index_t>,
            ragged_span<const float, device_space>, dspan<index_t>, dspan<index_t>) const;
};
static_assert(kv_policy<device_policy, on_stream>);
static_assert(!kv_policy<device_policy, host_t>);
static_assert(!kv_policy<h2o_policy, on_stream>);
// the bundled CUDA policies are its models; the host policies also decide sequence by sequence
static_assert(kv_policy<cuda::device_h2o_policy, on_stream>);
static_assert(kv_policy<cuda::device_online_gate_policy, on_stream>);
static_assert(!host_kv_policy<cuda::device_streaming_policy>);
static_assert(host_kv_policy<streaming_policy> && kv_policy<streaming_policy, host_t>);

/// A decoder on device rows, probing for FastV/H2O, writing K/V in the cache's fp16.
struct device_decoder {
  index_t layers() const;
  index_t hidden() const;
  index_t vocab() const;
  index_t heads() const;
  void embed(on_stream, dspan<const std::int32_t>, dspan<float>) const;
  void layer(on_stream, index_t, ragged_rows<float, device_space>, dspan<const index_t>,
             const device_cache*, dspan<__half>, dspan<__half>) const;
  void layer(on_stream, index_t, ragged_rows<float, device_space>, dspan<const index_t>,
             const device_cache*, dspan<__half>, dspan<__half>, layer_probes_for<on_stream>) const;
  void logits(on_stream, dspan<const float>, dspan<float>) const;
};
static_assert(probing_decoder<device_decoder, on_stream, device_cache>);
static_assert(!decoder<device_decoder, host_t, paged_kv_cache>);

/// The same decoder writing fp32 K/V does not fit the fp16 cache: K/V come in its element type.
struct device_decoder_fp32_kv {
  index_t layers() const;
  index_t hidden() const;
  index_t vocab() const;
  void embed(on_stream, dspan<const std::int32_t>, dspan<float>) const;
  void layer(on_stream, index_t, ragged_rows<float, device_space>, dspan<const index_t>,
             const device_cache*, dspan<float>, dspan<float>) const;
  void logits(on_stream, dspan<const float>, dspan<float>) const;
};
static_assert(!decoder<device_decoder_fp32_kv, on_stream, device_cache>);

}  // namespace dynllava::test::device_archetypes

// SPDX-License-Identifier: Apache-2.0
/// @file llama.hpp
/// @brief A reference LLaMA-architecture decoder on the CPU (fp32): RMSNorm, RoPE in the
/// Hugging Face rotate-half convention at explicit position ids, SwiGLU MLP, multi-head causal
/// attention over any set of kept rows plus a per-layer KV cache, built from the nn/ blocks. It
/// models the `decoder` and `probing_decoder` concepts (pipeline/decoder.hpp); the LLaVA-1.5
/// example builds its CPU backend on it.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/llama_config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/attention.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/rms_norm.hpp>
#include <dynllava/nn/rope.hpp>
#include <dynllava/pipeline/decoder.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace dynllava {

namespace detail {

/// The `nn::kv_view` of what `cache` holds for layer `l`, sequence `b`.
template <host_kv_storage C>
struct cached_layer_view {
  const C* cache;
  index_t l;
  std::size_t b;
  index_t size() const { return cache->length(l, b); }
  const float* key(index_t i) const { return cache->key(l, b, i); }
  const float* value(index_t i) const { return cache->value(l, b, i); }
};

}  // namespace detail

/// @brief The reference decoder. Owns its weights; `const` calls are thread-safe.
class llama_model {
 public:
  /// Rows of the precomputed RoPE table at most (positions beyond it are computed per call), so
  /// a config's `max_position_embeddings` cannot make the model allocate without bound.
  static constexpr index_t max_rope_table = 16384;

  /// @throws dynllava::error on an inconsistent config (heads * head_dim must be H, head_dim
  /// even) or weights of another shape, naming the tensor.
  llama_model(const llama_config& c, llama_weights w)
      : c_(c),
        w_(std::move(w)),
        rope_(checked(c).head_dim, c.rope_theta, std::min(c.max_positions, max_rope_table)) {
    validate(w_, c_);
  }

  const llama_config& config() const noexcept { return c_; }
  index_t layers() const noexcept { return c_.layers; }
  index_t hidden() const noexcept { return c_.hidden; }
  index_t vocab() const noexcept { return c_.vocab; }
  index_t heads() const noexcept { return c_.heads; }

  /// @name The `decoder` concept's calls (execution tag `host`): the same as the untagged ones.
  /// @{
  void embed(host_t, host_span<const std::int32_t> tokens, host_span<float> out) const {
    embed(tokens, out);
  }
  template <host_kv_storage C>
  void layer(host_t, index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             const C* cache, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    layer(l, hidden, positions, cache, k_out, v_out, probes);
  }
  void layer(host_t, index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             std::nullptr_t, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    layer(l, hidden, positions, nullptr, k_out, v_out, probes);
  }
  void logits(host_t, host_span<const float> rows, host_span<float> out) const {
    logits(rows, out);
  }
  /// @}

  /// `out[i, :] = embed[tokens[i], :]`. @throws dynllava::error on an id outside the vocabulary.
  void embed(host_span<const std::int32_t> tokens, host_span<float> out) const {
    const auto H = static_cast<std::size_t>(c_.hidden);
    DYNLLAVA_EXPECTS(out.size() == tokens.size() * H,
                     "llama_model::embed: out must hold {} values, got {}", tokens.size() * H,
                     out.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      DYNLLAVA_EXPECTS(tokens[i] >= 0 && tokens[i] < c_.vocab,
                       "llama_model::embed: token {} is outside the vocabulary [0, {})", tokens[i],
                       c_.vocab);
      w_.embed.widen_rows(tokens[i], 1, out.data() + i * H);
    }
  }

  /// @brief Runs decoder layer `l` on `hidden` (in place).
  /// Row `r` of sequence `b` attends to every token that `cache` holds for (l, b) (may be null)
  /// and to the rows of this call in sequence `b` up to and including itself, in row order. Each
  /// sequence is computed by its own BLAS calls: its results do not depend on the batch.
  /// @param[in,out] hidden ragged `[rows, H]` host
  /// @param[in] positions [rows] original position ids (RoPE)
  /// @param[in] cache the layer's KV state, or null for none
  /// @param[out] k_out, v_out [rows, H]: the rows' keys (after RoPE) and values, to cache
  /// @param[out] probes optional queries and per-key attention (see `layer_probes`)
  template <host_kv_storage C>
  void layer(index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             const C* cache, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    DYNLLAVA_EXPECTS(
        cache == nullptr || (cache->batch() == hidden.batch() && cache->layers() > l &&
                             cache->width() == c_.hidden),
        "llama_model::layer: the cache ({} sequences, {} layers, width {}) must hold the "
        "rows' {} sequences, layer {} and width H = {}",
        cache ? cache->batch() : 0, cache ? cache->layers() : 0, cache ? cache->width() : 0,
        hidden.batch(), l, c_.hidden);
    if (cache == nullptr) {
      run_layer(
          l, hidden, positions, [](std::size_t) { return nn::no_cached_kv{}; }, k_out, v_out,
          probes);
    } else {
      run_layer(
          l, hidden, positions,
          [&](std::size_t b) {
            return detail::cached_layer_view<C>{cache, l, b};
          },
          k_out, v_out, probes);
    }
  }

  /// @brief `layer` without a KV cache: every row sees only the earlier rows of its sequence in
  /// this call (`model.layer(l, rows, positions, nullptr, k, v)`).
  void layer(index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             std::nullptr_t, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    run_layer(
        l, hidden, positions, [](std::size_t) { return nn::no_cached_kv{}; }, k_out, v_out, probes);
  }

  /// Final RMSNorm + lm_head: `rows [n, H]` -> `logits [n, vocab]`.
  void logits(host_span<const float> rows, host_span<float> out) const {
    const auto H = static_cast<std::size_t>(c_.hidden);
    const std::size_t n = rows.size() / H;
    DYNLLAVA_EXPECTS(rows.size() == n * H && out.size() == n * static_cast<std::size_t>(c_.vocab),
                     "llama_model::logits: rows must be [n, {}] and out [n, {}]", H, c_.vocab);
    std::vector<float> x(rows.size());
    nn::rms_norm(rows.data(), n, w_.final_norm, c_.rms_eps, x.data());
    // Row by row, so that a row's logits do not depend on the other rows (bit for bit).
    const auto V = static_cast<std::size_t>(c_.vocab);
    for (std::size_t r = 0; r < n; ++r)
      nn::linear(x.data() + r * H, 1, w_.lm_head, out.data() + r * V);
  }

 private:
  static const llama_config& checked(const llama_config& c) {
    c.validate();
    DYNLLAVA_EXPECTS(
        static_cast<std::int64_t>(c.heads) * c.head_dim == c.hidden && c.head_dim % 2 == 0,
        "llama_model: heads ({}) * head_dim ({}) must equal hidden ({}) with an even "
        "head_dim",
        c.heads, c.head_dim, c.hidden);
    return c;
  }

  /// `layer`'s work; `view_of(b)` gives the `nn::kv_view` of sequence `b`'s cached keys.
  template <class ViewOf>
  void run_layer(index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
                 ViewOf view_of, host_span<float> k_out, host_span<float> v_out,
                 layer_probes probes) const {
    DYNLLAVA_EXPECTS(l >= 0 && l < c_.layers, "llama_model::layer: layer {} is not in [0, {})", l,
                     c_.layers);
    DYNLLAVA_EXPECTS(hidden.width == c_.hidden,
                     "llama_model::layer: rows must have width {}, got {}", c_.hidden,
                     hidden.width);
    validate(hidden, "llama_model::layer: hidden");
    const std::size_t n = hidden.rows();
    const auto H = static_cast<std::size_t>(c_.hidden);
    DYNLLAVA_EXPECTS(
        positions.size() == n && k_out.size() == n * H && v_out.size() == n * H,
        "llama_model::layer: positions ({}), k_out ({}) and v_out ({}) must match {} rows",
        positions.size(), k_out.size(), v_out.size(), n);
    if (!probes.queries.empty()) {
      DYNLLAVA_EXPECTS(probes.queries.size() == n * H,
                       "llama_model::layer: probes.queries must hold {} values, got {}", n * H,
                       probes.queries.size());
    }
    float* mass = nullptr;  // key_attention of the current sequence
    if (!probes.key_attention.empty()) {
      std::size_t need = n;
      for (std::size_t b = 0; b < hidden.batch(); ++b) {
        need += static_cast<std::size_t>(view_of(b).size());
      }
      DYNLLAVA_EXPECTS(probes.key_attention.size() >= need,
                       "llama_model::layer: probes.key_attention must hold at least {} values "
                       "(cached + new keys), got {}",
                       need, probes.key_attention.size());
      std::fill_n(probes.key_attention.begin(), need, 0.0f);
      mass = probes.key_attention.data();
    }
    std::size_t longest = 0;
    for (std::size_t b = 0; b < hidden.batch(); ++b) {
      longest = std::max(longest, static_cast<std::size_t>(hidden.length(b)));
    }
    thread_local scratch buf;  // reused across calls: no allocation per layer
    buf.reserve(longest * H, longest * static_cast<std::size_t>(c_.intermediate));
    for (std::size_t b = 0; b < hidden.batch(); ++b) {
      const auto first = static_cast<std::size_t>(hidden.indptr[b]);
      const auto rows = static_cast<std::size_t>(hidden.length(b));
      const auto view = view_of(b);
      sequence_layer(
          w_.layers[static_cast<std::size_t>(l)], hidden.values.data() + first * H, rows,
          positions.data() + first, view, k_out.data() + first * H, v_out.data() + first * H,
          probes.queries.empty() ? nullptr : probes.queries.data() + first * H, mass, buf);
      if (mass != nullptr) mass += static_cast<std::size_t>(view.size()) + rows;
    }
  }

  /// A call's buffers: x, q, att, tmp of `[rows, H]`, gate and up of `[rows, I]`. Each thread
  /// keeps one for every model and call; it grows to the largest call's size, never shrinks.
  struct scratch {
    std::vector<float> x, q, att, tmp, gate, up;
    void reserve(std::size_t rows_h, std::size_t rows_i) {
      for (auto* b : {&x, &q, &att, &tmp}) {
        if (b->size() < rows_h) b->resize(rows_h);
      }
      for (auto* b : {&gate, &up}) {
        if (b->size() < rows_i) b->resize(rows_i);
      }
    }
  };

  /// @brief One sequence's `n` rows through layer `w`. Each sequence gets its own BLAS calls, so
  /// its results do not depend on the rest of the batch (bit for bit).
  /// @param h [n, H] in/out; @param k, v [n, H] out; @param queries null or [n, H] out;
  /// @param mass null or [cached + n] (added to)
  template <nn::kv_view V>
  void sequence_layer(const llama_layer_weights& w, float* h, std::size_t n,
                      const index_t* positions, const V& cached, float* k, float* v, float* queries,
                      float* mass, scratch& s) const {
    if (n == 0) return;
    const auto H = static_cast<std::size_t>(c_.hidden);
    const auto heads = static_cast<std::size_t>(c_.heads);
    nn::rms_norm(h, n, w.attn_norm, c_.rms_eps, s.x.data());
    nn::linear(s.x.data(), n, w.wq, s.q.data());
    nn::linear(s.x.data(), n, w.wk, k);
    nn::linear(s.x.data(), n, w.wv, v);
    for (std::size_t r = 0; r < n; ++r) {
      rope_.apply(s.q.data() + r * H, heads, positions[r]);
      rope_.apply(k + r * H, heads, positions[r]);
    }
    if (queries != nullptr) std::copy(s.q.data(), s.q.data() + n * H, queries);
    const nn::attention_options opt{c_.heads, c_.head_dim, true};
    nn::attention(opt, cached, {s.q.data(), H}, {k, H}, {v, H}, n, s.att.data(), H, mass);
    nn::linear(s.att.data(), n, w.wo, s.tmp.data());
    nn::add_inplace(h, s.tmp.data(), n * H);
    // SwiGLU MLP
    const std::size_t nI = n * static_cast<std::size_t>(c_.intermediate);
    nn::rms_norm(h, n, w.mlp_norm, c_.rms_eps, s.x.data());
    nn::linear(s.x.data(), n, w.w_gate, s.gate.data());
    nn::linear(s.x.data(), n, w.w_up, s.up.data());
    nn::swiglu_inplace(s.gate.data(), s.up.data(), nI);
    nn::linear(s.gate.data(), n, w.w_down, s.tmp.data());
    nn::add_inplace(h, s.tmp.data(), n * H);
  }

  llama_config c_;
  llama_weights w_;
  nn::rope_table rope_;
};

static_assert(probing_decoder<llama_model, host_t, paged_kv_cache>);
static_assert(probing_decoder<llama_model, host_t, contiguous_kv_cache>);

}  // namespace dynllava

// SPDX-License-Identifier: Apache-2.0
/// @file llama.hpp
/// @brief A reference LLaMA-architecture decoder on the CPU (fp32): RMSNorm, RoPE in the
/// Hugging Face rotate-half convention at explicit position ids, SwiGLU MLP, multi-head causal
/// attention over any set of kept rows plus a per-layer KV cache. It models the `decoder`
/// and `probing_decoder` concepts (pipeline/decoder.hpp); the LLaVA-1.5 example builds its CPU
/// backend on it.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/pipeline/decoder.hpp>
#include <dynllava/score/detail/layers.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace dynllava {

struct llama_config {
  index_t hidden = 4096;
  index_t layers = 32;
  index_t heads = 32;
  index_t intermediate = 11008;
  index_t vocab = 32000;
  float rms_eps = 1e-5f;
  double rope_theta = 10000.0;

  index_t head_dim() const noexcept { return hidden / heads; }
  /// @throws dynllava::error naming the inconsistent field.
  void validate() const {
    DYNLLAVA_EXPECTS(hidden > 0 && heads > 0 && hidden % heads == 0 && head_dim() % 2 == 0,
                     "llama_config: hidden ({}) must be a positive multiple of heads ({}) with an "
                     "even head dim", hidden, heads);
    DYNLLAVA_EXPECTS(layers > 0 && intermediate > 0 && vocab > 0,
                     "llama_config: layers ({}), intermediate ({}) and vocab ({}) must be > 0",
                     layers, intermediate, vocab);
  }
};

/// One decoder layer's weights, row-major `[out, in]` like the checkpoints.
struct llama_layer_weights {
  std::vector<float> attn_norm;                 ///< [H]
  linear_weights wq, wk, wv, wo;                ///< [H, H] each, no bias
  std::vector<float> mlp_norm;                  ///< [H]
  linear_weights w_gate, w_up;                  ///< [I, H]
  linear_weights w_down;                        ///< [H, I]
};

struct llama_weights {
  std::vector<float> embed;  ///< [vocab, H]
  std::vector<llama_layer_weights> layers;
  std::vector<float> final_norm;  ///< [H]
  linear_weights lm_head;         ///< [vocab, H]
};

/// Random weights for tests and examples (uniform +-1/sqrt(fan_in), norms near 1), seeded.
inline llama_weights random_llama_weights(const llama_config& c, std::uint64_t seed) {
  c.validate();
  std::mt19937_64 g(seed);
  auto lin = [&](index_t in, index_t out) {
    std::uniform_real_distribution<float> u(-1.0f / std::sqrt(static_cast<float>(in)),
                                            1.0f / std::sqrt(static_cast<float>(in)));
    linear_weights w;
    w.in = in;
    w.out = out;
    w.weight.resize(static_cast<std::size_t>(in) * static_cast<std::size_t>(out));
    for (auto& x : w.weight) x = u(g);
    return w;
  };
  auto norm = [&](index_t n) {
    std::normal_distribution<float> d(1.0f, 0.1f);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = d(g);
    return v;
  };
  llama_weights w;
  std::normal_distribution<float> e(0.0f, 1.0f);
  w.embed.resize(static_cast<std::size_t>(c.vocab) * static_cast<std::size_t>(c.hidden));
  for (auto& x : w.embed) x = e(g);
  for (index_t l = 0; l < c.layers; ++l) {
    llama_layer_weights lw;
    lw.attn_norm = norm(c.hidden);
    lw.wq = lin(c.hidden, c.hidden);
    lw.wk = lin(c.hidden, c.hidden);
    lw.wv = lin(c.hidden, c.hidden);
    lw.wo = lin(c.hidden, c.hidden);
    lw.mlp_norm = norm(c.hidden);
    lw.w_gate = lin(c.hidden, c.intermediate);
    lw.w_up = lin(c.hidden, c.intermediate);
    lw.w_down = lin(c.intermediate, c.hidden);
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = norm(c.hidden);
  w.lm_head = lin(c.hidden, c.vocab);
  return w;
}

namespace detail {

inline void rms_norm(const float* x, std::size_t rows, std::size_t d, const std::vector<float>& w,
                     float eps, float* out) {
  for (std::size_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (std::size_t i = 0; i < d; ++i) ss += static_cast<double>(x[r * d + i]) * x[r * d + i];
    const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    for (std::size_t i = 0; i < d; ++i) out[r * d + i] = x[r * d + i] * inv * w[i];
  }
}

/// Rotate-half RoPE of one row `[heads, head_dim]` at `position`, in place.
inline void rope(float* x, std::size_t heads, std::size_t hd, index_t position, double theta) {
  const std::size_t half = hd / 2;
  for (std::size_t i = 0; i < half; ++i) {
    const double freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
    const double angle = static_cast<double>(position) * freq;
    const auto c = static_cast<float>(std::cos(angle));
    const auto s = static_cast<float>(std::sin(angle));
    for (std::size_t h = 0; h < heads; ++h) {
      float* p = x + h * hd;
      const float a = p[i], b = p[i + half];
      p[i] = a * c - b * s;
      p[i + half] = b * c + a * s;
    }
  }
}

}  // namespace detail

/// @brief The reference decoder. Owns its weights; `const` calls are thread-safe.
class llama_model {
 public:
  llama_model(const llama_config& c, llama_weights w) : c_(c), w_(std::move(w)) {
    c_.validate();
    DYNLLAVA_EXPECTS(w_.layers.size() == static_cast<std::size_t>(c_.layers),
                     "llama_model: expected {} layers of weights, got {}", c_.layers, w_.layers.size());
    DYNLLAVA_EXPECTS(w_.embed.size() == static_cast<std::size_t>(c_.vocab) * static_cast<std::size_t>(c_.hidden),
                     "llama_model: embed must be [vocab = {}, H = {}]", c_.vocab, c_.hidden);
    const index_t H = c_.hidden, I = c_.intermediate;
    for (std::size_t l = 0; l < w_.layers.size(); ++l) {
      const auto& lw = w_.layers[l];
      check_norm(lw.attn_norm, fmt::format("layers[{}].attn_norm", l));
      check_norm(lw.mlp_norm, fmt::format("layers[{}].mlp_norm", l));
      check_linear(lw.wq, H, H, fmt::format("layers[{}].wq", l));
      check_linear(lw.wk, H, H, fmt::format("layers[{}].wk", l));
      check_linear(lw.wv, H, H, fmt::format("layers[{}].wv", l));
      check_linear(lw.wo, H, H, fmt::format("layers[{}].wo", l));
      check_linear(lw.w_gate, H, I, fmt::format("layers[{}].w_gate", l));
      check_linear(lw.w_up, H, I, fmt::format("layers[{}].w_up", l));
      check_linear(lw.w_down, I, H, fmt::format("layers[{}].w_down", l));
    }
    check_norm(w_.final_norm, "final_norm");
    check_linear(w_.lm_head, H, c_.vocab, "lm_head");
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
  template <kv_storage<host_t> C>
  void layer(host_t, index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             const C* cache, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    layer(l, hidden, positions, cache, k_out, v_out, probes);
  }
  void logits(host_t, host_span<const float> rows, host_span<float> out) const { logits(rows, out); }
  /// @}

  /// `out[i, :] = embed[tokens[i], :]`. @throws dynllava::error on an id outside the vocabulary.
  void embed(host_span<const std::int32_t> tokens, host_span<float> out) const {
    const auto H = static_cast<std::size_t>(c_.hidden);
    DYNLLAVA_EXPECTS(out.size() == tokens.size() * H, "llama_model::embed: out must hold {} values, got {}",
                     tokens.size() * H, out.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      DYNLLAVA_EXPECTS(tokens[i] >= 0 && tokens[i] < c_.vocab,
                       "llama_model::embed: token {} is outside the vocabulary [0, {})", tokens[i], c_.vocab);
      const float* e = w_.embed.data() + static_cast<std::size_t>(tokens[i]) * H;
      std::copy(e, e + H, out.data() + i * H);
    }
  }

  /// @brief Runs decoder layer `l` on `hidden` (in place).
  /// Row `r` of sequence `b` attends to every token that `cache` holds for (l, b) (may be null)
  /// and to the rows of this call in sequence `b` up to and including itself, in row order.
  /// @param[in,out] hidden ragged `[rows, H]` host
  /// @param[in] positions [rows] original position ids (RoPE)
  /// @param[in] cache the layer's KV state, or null for none
  /// @param[out] k_out, v_out [rows, H]: the rows' keys (after RoPE) and values, to cache
  /// @param[out] probes optional queries and per-key attention (see `layer_probes`)
  template <kv_storage<host_t> C>
  void layer(index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             const C* cache, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    DYNLLAVA_EXPECTS(l >= 0 && l < c_.layers, "llama_model::layer: layer {} is not in [0, {})", l, c_.layers);
    DYNLLAVA_EXPECTS(hidden.width == c_.hidden, "llama_model::layer: rows must have width {}, got {}",
                     c_.hidden, hidden.width);
    validate(hidden, "llama_model::layer: hidden");
    const std::size_t n = hidden.rows();
    const auto H = static_cast<std::size_t>(c_.hidden);
    DYNLLAVA_EXPECTS(positions.size() == n && k_out.size() == n * H && v_out.size() == n * H,
                     "llama_model::layer: positions ({}), k_out ({}) and v_out ({}) must match {} rows",
                     positions.size(), k_out.size(), v_out.size(), n);
    DYNLLAVA_EXPECTS(cache == nullptr || (cache->batch() == hidden.batch() && cache->layers() > l &&
                                          cache->width() == c_.hidden),
                     "llama_model::layer: the cache ({} sequences, {} layers, width {}) must hold the "
                     "rows' {} sequences, layer {} and width H = {}", cache ? cache->batch() : 0,
                     cache ? cache->layers() : 0, cache ? cache->width() : 0, hidden.batch(), l, c_.hidden);
    const auto& w = w_.layers[static_cast<std::size_t>(l)];
    const auto heads = static_cast<std::size_t>(c_.heads);
    const std::size_t hd = H / heads;
    std::vector<float> x(n * H), q(n * H), att(n * H), tmp(n * H);
    detail::rms_norm(hidden.values.data(), n, H, w.attn_norm, c_.rms_eps, x.data());
    detail::linear(x.data(), n, w.wq, q.data());
    detail::linear(x.data(), n, w.wk, k_out.data());
    detail::linear(x.data(), n, w.wv, v_out.data());
    for (std::size_t r = 0; r < n; ++r) {
      detail::rope(q.data() + r * H, heads, hd, positions[r], c_.rope_theta);
      detail::rope(k_out.data() + r * H, heads, hd, positions[r], c_.rope_theta);
    }
    if (!probes.queries.empty()) {
      DYNLLAVA_EXPECTS(probes.queries.size() == n * H,
                       "llama_model::layer: probes.queries must hold {} values, got {}", n * H,
                       probes.queries.size());
      std::copy(q.begin(), q.end(), probes.queries.begin());
    }
    float* mass = nullptr;  // key_attention of the current sequence
    if (!probes.key_attention.empty()) {
      std::size_t need = n;
      for (std::size_t b = 0; cache != nullptr && b < hidden.batch(); ++b) {
        need += static_cast<std::size_t>(cache->length(l, b));
      }
      DYNLLAVA_EXPECTS(probes.key_attention.size() == need,
                       "llama_model::layer: probes.key_attention must hold {} values (cached + "
                       "new keys), got {}", need, probes.key_attention.size());
      std::fill(probes.key_attention.begin(), probes.key_attention.end(), 0.0f);
      mass = probes.key_attention.data();
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> logit;
    std::vector<const float*> keys, values;
    for (std::size_t b = 0; b < hidden.batch(); ++b) {
      const auto first = static_cast<std::size_t>(hidden.indptr[b]);
      keys.clear();
      values.clear();
      if (cache != nullptr) {
        for (index_t i = 0; i < cache->length(l, b); ++i) {
          keys.push_back(cache->key(l, b, i));
          values.push_back(cache->value(l, b, i));
        }
      }
      const std::size_t cached = keys.size();
      for (std::size_t r = first; r < first + static_cast<std::size_t>(hidden.length(b)); ++r) {
        keys.push_back(k_out.data() + r * H);
        values.push_back(v_out.data() + r * H);
        const std::size_t visible = cached + (r - first) + 1;  // causal within this call
        logit.resize(visible);
        for (std::size_t h = 0; h < heads; ++h) {
          const float* qh = q.data() + r * H + h * hd;
          float mx = -INFINITY;
          for (std::size_t j = 0; j < visible; ++j) {
            logit[j] = detail::dot(qh, keys[j] + h * hd, hd) * scale;
            mx = std::max(mx, logit[j]);
          }
          float sum = 0.0f;
          for (std::size_t j = 0; j < visible; ++j) {
            logit[j] = std::exp(logit[j] - mx);
            sum += logit[j];
          }
          float* o = att.data() + r * H + h * hd;
          std::fill(o, o + hd, 0.0f);
          for (std::size_t j = 0; j < visible; ++j) {
            const float a = logit[j] / sum;
            const float* vh = values[j] + h * hd;
            for (std::size_t c = 0; c < hd; ++c) o[c] += a * vh[c];
            if (mass != nullptr) mass[j] += a;
          }
        }
      }
      if (mass != nullptr) mass += keys.size();
    }
    detail::linear(att.data(), n, w.wo, tmp.data());
    float* hv = hidden.values.data();
    for (std::size_t i = 0; i < n * H; ++i) hv[i] += tmp[i];
    // SwiGLU MLP
    const auto I = static_cast<std::size_t>(c_.intermediate);
    std::vector<float> gate(n * I), up(n * I);
    detail::rms_norm(hv, n, H, w.mlp_norm, c_.rms_eps, x.data());
    detail::linear(x.data(), n, w.w_gate, gate.data());
    detail::linear(x.data(), n, w.w_up, up.data());
    for (std::size_t i = 0; i < n * I; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    detail::linear(gate.data(), n, w.w_down, tmp.data());
    for (std::size_t i = 0; i < n * H; ++i) hv[i] += tmp[i];
  }

  /// Final RMSNorm + lm_head: `rows [n, H]` -> `logits [n, vocab]`.
  void logits(host_span<const float> rows, host_span<float> out) const {
    const auto H = static_cast<std::size_t>(c_.hidden);
    const std::size_t n = rows.size() / H;
    DYNLLAVA_EXPECTS(rows.size() == n * H && out.size() == n * static_cast<std::size_t>(c_.vocab),
                     "llama_model::logits: rows must be [n, {}] and out [n, {}]", H, c_.vocab);
    std::vector<float> x(rows.size());
    detail::rms_norm(rows.data(), n, H, w_.final_norm, c_.rms_eps, x.data());
    detail::linear(x.data(), n, w_.lm_head, out.data());
  }

 private:
  void check_norm(const std::vector<float>& w, const std::string& name) const {
    DYNLLAVA_EXPECTS(w.size() == static_cast<std::size_t>(c_.hidden),
                     "llama_model: {} must hold H = {} values, got {}", name, c_.hidden, w.size());
  }
  static void check_linear(const linear_weights& w, index_t in, index_t out, const std::string& name) {
    DYNLLAVA_EXPECTS(w.in == in && w.out == out &&
                         w.weight.size() == static_cast<std::size_t>(in) * static_cast<std::size_t>(out) &&
                         (w.bias.empty() || w.bias.size() == static_cast<std::size_t>(out)),
                     "llama_model: {} must be [out = {}, in = {}] ({} weights, bias empty or {}), got "
                     "[{}, {}] with {} weights and {} bias values", name, out, in,
                     static_cast<std::size_t>(in) * static_cast<std::size_t>(out), out, w.out, w.in,
                     w.weight.size(), w.bias.size());
  }

  llama_config c_;
  llama_weights w_;
};

static_assert(probing_decoder<llama_model, host_t, paged_kv_cache>);
static_assert(probing_decoder<llama_model, host_t, contiguous_kv_cache>);

}  // namespace dynllava

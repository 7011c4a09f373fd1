// SPDX-License-Identifier: Apache-2.0
/// @file image_predictor.hpp
/// @brief The Dynamic-LLaVA image predictor on the CPU (fp32): 2-way keep/drop logits for each
/// image token from the hidden states entering the sparse layer.
///
/// Per sequence of `n` image tokens `x [n, H]` (METHOD.md section 3):
///   h = GELU(Linear(LayerNorm(x)))                                   [n, d]
///   for each block: h += proj(attn(norm1(h))); h += fc2(GELU(fc1(norm2(h))))
///       (8 heads, no mask: every image token of the sequence sees every other, and only those)
///   z = [h[:, :local_dim] | mean over the n tokens of h[:, local_dim:]]   [n, d]
///   logits = Linear(GELU(Linear(GELU(Linear(z)))))                    [n, 2], channel 0 = keep
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/attention.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/predictor_weights.hpp>

#include <cstddef>
#include <utility>
#include <vector>

namespace dynllava {

/// @brief The image predictor. Owns its fp32 weights; `const` calls are thread-safe.
class image_predictor {
 public:
  /// @throws dynllava::error when a weight's shape disagrees with `config`.
  image_predictor(const predictor_config& config, image_predictor_weights weights)
      : config_(config), w_(std::move(weights)) {
    validate(w_, config_);
  }

  const predictor_config& config() const noexcept { return config_; }
  /// Width H of the hidden states it reads.
  index_t hidden() const noexcept { return config_.hidden; }
  const image_predictor_weights& weights() const noexcept { return w_; }

  /// @brief 2-way logits for every image token of a ragged batch.
  /// @param[in] hidden ragged `[tokens, H]` host rows: each sequence's image tokens only
  /// @param[out] logits [tokens, 2] host; channel 0 = keep
  /// @throws dynllava::error on a width other than H or wrongly sized outputs.
  void logits(host_t, host_ragged_rows<const float> hidden, host_span<float> logits) const {
    check_input(hidden, logits.size(), 2, "logits");
    for (std::size_t b = 0; b < hidden.batch(); ++b) {
      const auto n = static_cast<std::size_t>(hidden.length(b));
      if (n == 0) continue;
      const std::size_t first = static_cast<std::size_t>(hidden.indptr[b]);
      sequence_logits(hidden.row(first), n, logits.data() + 2 * first);
    }
  }

  /// @brief Ranking scores `logit0 - logit1` for every image token (larger = keep first).
  /// @param[out] scores [tokens] host
  void score(host_t, host_ragged_rows<const float> hidden, host_span<float> scores) const {
    check_input(hidden, scores.size(), 1, "scores");
    std::vector<float> l(2 * scores.size());
    logits(host, hidden, make_host_span(l));
    for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = keep_margin(l[2 * i], l[2 * i + 1]);
  }

 private:
  void check_input(host_ragged_rows<const float> hidden, std::size_t out_size, std::size_t per,
                   const char* out_name) const {
    DYNLLAVA_EXPECTS(hidden.width == config_.hidden,
                     "image_predictor: hidden rows must have width H = {}, got {}", config_.hidden,
                     hidden.width);
    validate(hidden, "image_predictor: hidden");
    DYNLLAVA_EXPECTS(out_size == per * hidden.rows(),
                     "image_predictor: {} must have {} entries ({} per token), got {}", out_name,
                     per * hidden.rows(), per, out_size);
  }

  void sequence_logits(const float* x, std::size_t n, float* out) const {
    const auto d = static_cast<std::size_t>(config_.d_model);
    const float eps = config_.layer_norm_eps;
    std::vector<float> t(n * static_cast<std::size_t>(config_.hidden));
    nn::layer_norm(x, n, w_.down_norm, eps, t.data());
    std::vector<float> h = nn::linear(t, n, w_.down);
    nn::gelu_inplace(h);
    std::vector<float> a(n * d), qkv(n * 3 * d), att(n * d),
        m(n * static_cast<std::size_t>(config_.ffn)), r(n * d);
    for (const auto& blk : w_.blocks) {
      nn::layer_norm(h.data(), n, blk.norm1, eps, a.data());
      nn::linear(a.data(), n, blk.qkv, qkv.data());
      const nn::attention_options opt{config_.heads, config_.d_model / config_.heads, false};
      nn::attention(opt, nn::no_cached_kv{}, {qkv.data(), 3 * d}, {qkv.data() + d, 3 * d},
                    {qkv.data() + 2 * d, 3 * d}, n, att.data(), d);
      nn::linear(att.data(), n, blk.proj, r.data());
      for (std::size_t i = 0; i < h.size(); ++i) h[i] += r[i];
      nn::layer_norm(h.data(), n, blk.norm2, eps, a.data());
      nn::linear(a.data(), n, blk.fc1, m.data());
      nn::gelu_inplace(m);
      nn::linear(m.data(), n, blk.fc2, r.data());
      for (std::size_t i = 0; i < h.size(); ++i) h[i] += r[i];
    }
    // Local/global split: the global half is the sequence's mean, broadcast to every token.
    const auto local = static_cast<std::size_t>(config_.local_dim);
    std::vector<double> mean(d - local, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t c = local; c < d; ++c) mean[c - local] += h[i * d + c];
    }
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t c = local; c < d; ++c) {
        h[i * d + c] = static_cast<float>(mean[c - local] / static_cast<double>(n));
      }
    }
    std::vector<float> z1 = nn::linear(h, n, w_.head[0]);
    nn::gelu_inplace(z1);
    std::vector<float> z2 = nn::linear(z1, n, w_.head[1]);
    nn::gelu_inplace(z2);
    nn::linear(z2.data(), n, w_.head[2], out);
  }

  predictor_config config_;
  image_predictor_weights w_;
};
static_assert(two_way_predictor<image_predictor, host_t>);

}  // namespace dynllava

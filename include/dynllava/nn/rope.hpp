// SPDX-License-Identifier: Apache-2.0
/// @file rope.hpp
/// @brief Rotary position embedding in the Hugging Face rotate-half convention, from cos/sin
/// tables computed once.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava::nn {

/// @brief cos/sin tables `[positions, head_dim / 2]` (host, owned) for RoPE with base `theta`:
/// angle(p, i) = p * theta^(-2i / head_dim), computed in double and stored as float. Immutable
/// after construction, so `apply` is thread-safe.
class rope_table {
 public:
  /// @throws dynllava::error unless `head_dim` is even and positive and `positions >= 0`.
  rope_table(index_t head_dim, double theta, index_t positions) : head_dim_(head_dim) {
    DYNLLAVA_EXPECTS(head_dim > 0 && head_dim % 2 == 0,
                     "rope_table: head_dim must be even and > 0, got {}", head_dim);
    DYNLLAVA_EXPECTS(positions >= 0, "rope_table: positions must be >= 0, got {}", positions);
    const auto half = static_cast<std::size_t>(head_dim / 2);
    inv_freq_.resize(half);
    for (std::size_t i = 0; i < half; ++i) {
      inv_freq_[i] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    }
    cos_.resize(static_cast<std::size_t>(positions) * half);
    sin_.resize(cos_.size());
    for (index_t p = 0; p < positions; ++p)
      angles(p, cos_.data() + p * half, sin_.data() + p * half);
  }

  index_t head_dim() const noexcept { return head_dim_; }
  /// Positions `[0, positions())` come from the table; later ones are computed per call.
  index_t positions() const noexcept {
    return static_cast<index_t>(cos_.size() / inv_freq_.size());
  }

  /// @brief Rotates one row `[heads, head_dim]` (host, in place) to `position`:
  /// `(a, b) -> (a cos - b sin, b cos + a sin)` for `a = x[i]`, `b = x[i + head_dim / 2]`.
  /// @throws dynllava::error on a negative position.
  void apply(float* x, std::size_t heads, index_t position) const {
    DYNLLAVA_EXPECTS(position >= 0, "rope_table::apply: position must be >= 0, got {}", position);
    const std::size_t half = inv_freq_.size();
    const float* c = nullptr;
    const float* s = nullptr;
    std::vector<float> local;
    if (position < positions()) {
      c = cos_.data() + static_cast<std::size_t>(position) * half;
      s = sin_.data() + static_cast<std::size_t>(position) * half;
    } else {
      local.resize(2 * half);
      angles(position, local.data(), local.data() + half);
      c = local.data();
      s = local.data() + half;
    }
    const std::size_t hd = 2 * half;
    for (std::size_t h = 0; h < heads; ++h) {
      float* p = x + h * hd;
      for (std::size_t i = 0; i < half; ++i) {
        const float a = p[i], b = p[i + half];
        p[i] = a * c[i] - b * s[i];
        p[i + half] = b * c[i] + a * s[i];
      }
    }
  }

 private:
  void angles(index_t position, float* c, float* s) const {
    for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
      const double angle = static_cast<double>(position) * inv_freq_[i];
      c[i] = static_cast<float>(std::cos(angle));
      s[i] = static_cast<float>(std::sin(angle));
    }
  }

  index_t head_dim_;
  std::vector<double> inv_freq_;
  std::vector<float> cos_, sin_;
};

}  // namespace dynllava::nn

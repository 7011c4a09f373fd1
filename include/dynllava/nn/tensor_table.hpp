// SPDX-License-Identifier: Apache-2.0
/// @file tensor_table.hpp
/// @brief One description of a model's tensors from which validation, checkpoint loading and
/// random initialisation are derived.
///
/// A model lists its tensors once, in a `visit_tensors(weights, config, f)` function written
/// with the helpers below: each tensor is announced as a `tensor_spec` (its checkpoint name, its
/// shape computed from the config, its role) together with the host vector that holds it. The
/// same function serves `const` weights (validation: counts and layer sizes are checked) and
/// mutable ones (loading, random init: counts and layer sizes are set).
///
/// A tensor is held either by a `std::vector<float>` (small ones: norms, biases; always fp32) or
/// by a `stored_matrix` (the big ones: Linear weights, embeddings; kept in their stored width,
/// `[shape[0], product of the rest]`). A visitor takes both (a generic lambda, or two overloads).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/stored_matrix.hpp>

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynllava::nn {

/// What a tensor is for; random initialisation draws by role.
enum class tensor_role {
  linear_weight,  ///< `[out, in]`
  linear_bias,    ///< `[out]`
  norm_weight,    ///< a LayerNorm's gamma or an RMSNorm's weight, `[dim]`
  norm_bias,      ///< a LayerNorm's beta, `[dim]`
  embedding,      ///< `[vocab, H]`, or another learned table of rows (positions, a class token)
  conv_weight,    ///< `[out, in_channels, kh, kw]`, `fan_in = in_channels * kh * kw`
};

/// One row of a model's tensor table.
struct tensor_spec {
  std::string name;                 ///< checkpoint name, relative to the model's prefix
  std::vector<std::int64_t> shape;  ///< from the config
  tensor_role role = tensor_role::linear_weight;
  index_t fan_in = 0;  ///< input features of the Linear (linear roles)

  std::size_t elements() const noexcept {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
  /// `shape[0]`, the rows of the tensor as a matrix (1 for a scalar).
  index_t matrix_rows() const noexcept {
    return shape.empty() ? 1 : static_cast<index_t>(shape[0]);
  }
  /// The product of the other extents, the columns of the tensor as a matrix.
  index_t matrix_cols() const noexcept {
    std::size_t n = 1;
    for (std::size_t i = 1; i < shape.size(); ++i) n *= static_cast<std::size_t>(shape[i]);
    return static_cast<index_t>(n);
  }
  std::string shape_string() const {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

/// `T` or `const T`.
template <class W, class T>
concept maybe_const = std::same_as<std::remove_const_t<W>, T>;

/// @brief Mutable `items`: resized to `count`; const: must hold `count`.
/// @throws dynllava::error naming `what` when a const `items` holds another number.
template <class V>
void expect_count(V& items, index_t count, const std::string& what) {
  if constexpr (std::is_const_v<V>) {
    DYNLLAVA_EXPECTS(items.size() == static_cast<std::size_t>(count),
                     "{}: expected {} entries, got {}", what, count, items.size());
  } else {
    items.resize(static_cast<std::size_t>(count));
  }
}

/// Announces `name.weight [out, in]` and, with `bias`, `name.bias [out]`. Mutable `w` gets
/// `in`, `out`; const `w` must have them.
template <maybe_const<linear_weights> W, class F>
void visit_linear(W& w, const std::string& name, index_t in, index_t out, bool bias, F&& f) {
  if constexpr (std::is_const_v<W>) {
    DYNLLAVA_EXPECTS(w.in == in && w.out == out,
                     "linear {} must be [out = {}, in = {}], got [out = {}, "
                     "in = {}]",
                     name, out, in, w.out, w.in);
    DYNLLAVA_EXPECTS(bias || w.bias.empty(), "linear {} has no bias, got {} bias values", name,
                     w.bias.size());
  } else {
    w.in = in;
    w.out = out;
  }
  f(tensor_spec{name + ".weight", {out, in}, tensor_role::linear_weight, in}, w.weight);
  if (bias) f(tensor_spec{name + ".bias", {out}, tensor_role::linear_bias, in}, w.bias);
}

/// @brief Announces a bias-free square convolution's `name.weight [out, channels, k, k]` held as
/// the Linear of its im2col form: `in = channels * k * k`, columns ordered (channel, row, col),
/// which is the checkpoint's row-major layout. Mutable `w` gets `in`, `out`; const `w` must have
/// them and no bias.
template <maybe_const<linear_weights> W, class F>
void visit_conv_as_linear(W& w, const std::string& name, index_t channels, index_t k, index_t out,
                          F&& f) {
  const index_t in = channels * k * k;
  if constexpr (std::is_const_v<W>) {
    DYNLLAVA_EXPECTS(w.in == in && w.out == out && w.bias.empty(),
                     "convolution {} must be [out = {}, in = {} * {} * {}] without bias, got "
                     "[out = {}, in = {}] and {} bias values",
                     name, out, channels, k, k, w.out, w.in, w.bias.size());
  } else {
    w.in = in;
    w.out = out;
    w.bias.clear();
  }
  f(tensor_spec{name + ".weight", {out, channels, k, k}, tensor_role::conv_weight, in}, w.weight);
}

/// Announces a LayerNorm's `name.weight [dim]` and `name.bias [dim]`.
template <maybe_const<layer_norm_weights> W, class F>
void visit_layer_norm(W& w, const std::string& name, index_t dim, F&& f) {
  f(tensor_spec{name + ".weight", {dim}, tensor_role::norm_weight, 0}, w.gamma);
  f(tensor_spec{name + ".bias", {dim}, tensor_role::norm_bias, 0}, w.beta);
}

/// @brief A table visitor that checks every tensor's size; `model` prefixes the error.
struct size_checker {
  const char* model;
  void operator()(const tensor_spec& s, const std::vector<float>& v) const {
    DYNLLAVA_EXPECTS(v.size() == s.elements(), "{}: {} must be {} ({} values), got {} values",
                     model, s.name, s.shape_string(), s.elements(), v.size());
  }
  void operator()(const tensor_spec& s, const stored_matrix& m) const {
    DYNLLAVA_EXPECTS(m.rows() == s.matrix_rows() && m.cols() == s.matrix_cols(),
                     "{}: {} must be {} ([{}, {}] as a matrix), got [{}, {}]", model, s.name,
                     s.shape_string(), s.matrix_rows(), s.matrix_cols(), m.rows(), m.cols());
  }
};

/// @brief A table visitor that fills tensors with seeded random values, deterministic in the
/// table's order: Linear and convolution weights and biases uniform in `+-1/sqrt(fan_in)`;
/// embeddings N(0, 1); norm weights `norm_center + N(0, norm_std)` and norm biases N(0, norm_std),
/// one normal distribution per norm (a weight starts it, its bias continues it).
struct random_filler {
  std::mt19937_64 gen;
  float norm_center = 1.0f;
  float norm_std = 0.1f;
  std::normal_distribution<float> norm{0.0f, 0.1f};

  void operator()(const tensor_spec& s, std::vector<float>& v) {
    v.resize(s.elements());
    switch (s.role) {
      case tensor_role::linear_weight:
      case tensor_role::linear_bias:
      case tensor_role::conv_weight: {
        const float k = 1.0f / std::sqrt(static_cast<float>(s.fan_in));
        std::uniform_real_distribution<float> u(-k, k);
        for (auto& x : v) x = u(gen);
        break;
      }
      case tensor_role::embedding: {
        std::normal_distribution<float> e(0.0f, 1.0f);
        for (auto& x : v) x = e(gen);
        break;
      }
      case tensor_role::norm_weight:
        norm = std::normal_distribution<float>(0.0f, norm_std);
        for (auto& x : v) x = norm_center + norm(gen);
        break;
      case tensor_role::norm_bias:
        for (auto& x : v) x = norm(gen);
        break;
    }
  }
  /// Owned fp32 values, drawn as for a vector.
  void operator()(const tensor_spec& s, stored_matrix& m) {
    std::vector<float> v;
    (*this)(s, v);
    m = stored_matrix(std::move(v), s.matrix_rows(), s.matrix_cols());
  }
};

}  // namespace dynllava::nn

// SPDX-License-Identifier: Apache-2.0
/// @file projector.hpp
/// @brief LLaVA's projector from the vision tower's width `D` to the language model's `H` on the
/// CPU (fp32): `linear` (one Linear(D, H) with bias) or `mlp2x_gelu` (Linear(D, H) -> exact erf
/// GELU -> Linear(H, H), both with bias). Weights, tensor table, random init and the module.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/model/llava_config.hpp>
#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynllava {

/// The projector's type and sizes.
struct projector_config {
  projector_type type = projector_type::mlp2x_gelu;
  index_t vision_hidden = 1024;  ///< D, the tower's width (input)
  index_t text_hidden = 4096;    ///< H, the language model's width (output)

  /// The projector of a LLaVA model.
  static constexpr projector_config of(const llava_config& c) noexcept {
    return {c.projector, c.vision.hidden, c.text.hidden};
  }
  /// @throws dynllava::error naming a size that is not positive.
  void validate() const {
    DYNLLAVA_EXPECTS(vision_hidden > 0 && text_hidden > 0,
                     "projector_config: vision_hidden ({}) and text_hidden ({}) must be > 0",
                     vision_hidden, text_hidden);
  }
};

/// @brief Checkpoint names of the projector's Linears, without `.weight` / `.bias`: the
/// original LLaVA layout uses `model.mm_projector.0` and `model.mm_projector.2` (`.0` alone for
/// `linear`), Hugging Face's `multi_modal_projector.linear_1` and `.linear_2`.
struct projector_names {
  std::string first;   ///< Linear(D, H)
  std::string second;  ///< Linear(H, H); unused by `linear`
};

/// Owned host weights: `first [H, D] + [H]`; `second [H, H] + [H]` for `mlp2x_gelu`, empty for
/// `linear`.
struct projector_weights {
  nn::linear_weights first;
  nn::linear_weights second;
};

/// @brief The projector's tensor table: announces `names.first.{weight,bias}` and, for
/// `mlp2x_gelu`, `names.second.{weight,bias}` with shapes from `c` to
/// `f(const nn::tensor_spec&, vector&)`. Mutable `w` is shaped by `c`; const `w` is checked.
template <nn::maybe_const<projector_weights> W, class F>
void visit_tensors(W& w, const projector_config& c, const projector_names& names, F&& f) {
  nn::visit_linear(w.first, names.first, c.vision_hidden, c.text_hidden, true, f);
  if (c.type == projector_type::mlp2x_gelu) {
    nn::visit_linear(w.second, names.second, c.text_hidden, c.text_hidden, true, f);
  } else if constexpr (std::is_const_v<W>) {
    DYNLLAVA_EXPECTS(w.second.weight.empty() && w.second.bias.empty(),
                     "projector weights: a linear projector has no second Linear, got {} values",
                     w.second.weight.size() + w.second.bias.size());
  }
}

/// @throws dynllava::error when `c` is invalid or a tensor's size disagrees with it.
inline void validate(const projector_weights& w, const projector_config& c) {
  c.validate();
  visit_tensors(w, c, projector_names{"first", "second"}, nn::size_checker{"projector weights"});
}

/// Random weights for tests and benchmarks, seeded: uniform +-1/sqrt(fan_in) in table order.
inline projector_weights random_projector_weights(const projector_config& c, std::uint64_t seed) {
  c.validate();
  projector_weights w;
  visit_tensors(w, c, projector_names{"first", "second"}, nn::random_filler{std::mt19937_64(seed)});
  return w;
}

/// @brief The projector. Owns its weights; `const` calls are thread-safe.
class projector {
 public:
  /// @throws dynllava::error on an invalid config or weights of another shape.
  projector(const projector_config& c, projector_weights w) : c_(c), w_(std::move(w)) {
    validate(w_, c_);
  }

  const projector_config& config() const noexcept { return c_; }

  /// @brief `out = project(x)` row by row.
  /// @param x [rows, D] host; @param out [rows, H] host; must not alias `x`
  /// @throws dynllava::error when `x` is not whole rows of D or `out` not the same rows of H.
  void apply(host_span<const float> x, host_span<float> out) const {
    const auto D = static_cast<std::size_t>(c_.vision_hidden);
    const auto H = static_cast<std::size_t>(c_.text_hidden);
    const std::size_t rows = x.size() / D;
    DYNLLAVA_EXPECTS(x.size() == rows * D && out.size() == rows * H,
                     "projector::apply: x must be [rows, D = {}] and out [rows, H = {}], got {} "
                     "and {} values",
                     D, H, x.size(), out.size());
    if (c_.type == projector_type::linear) {
      nn::linear(x.data(), rows, w_.first, out.data());
      return;
    }
    std::vector<float> mid(rows * H);
    nn::linear(x.data(), rows, w_.first, mid.data());
    nn::gelu_inplace(mid);
    nn::linear(mid.data(), rows, w_.second, out.data());
  }

  /// `apply` into a new `[rows, H]` vector.
  std::vector<float> apply(const std::vector<float>& x) const {
    std::vector<float> out(x.size() / static_cast<std::size_t>(c_.vision_hidden) *
                           static_cast<std::size_t>(c_.text_hidden));
    apply(make_host_span(x), make_host_span(out));
    return out;
  }

 private:
  projector_config c_;
  projector_weights w_;
};

}  // namespace dynllava

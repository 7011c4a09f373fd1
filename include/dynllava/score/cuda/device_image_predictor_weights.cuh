// SPDX-License-Identifier: Apache-2.0
/// @file device_image_predictor_weights.cuh
/// @brief `device_image_predictor<T>`: the image predictor's weights uploaded to device memory
/// from the host weights (`image_predictor_weights`, as `io::load_predictors` or
/// `random_image_predictor_weights` give them) and converted to `T`; owning, construction
/// allocates and copies synchronously. Needs the `nn` tier (`dynllava::nn`, BLAS) for the host
/// weight types, so the CUDA umbrella header does not include it.
#pragma once

#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/score/cuda/device_image_predictor.cuh>
#include <dynllava/score/predictor_weights.hpp>
#include <dynllava/select/cuda/device_score.cuh>

#include <array>
#include <cstddef>
#include <vector>

namespace dynllava::cuda {

template <class T>
requires device_score<T>
class device_image_predictor {
 public:
  /// @throws dynllava::error when `w` disagrees with `c`, dynllava::cuda_error on a CUDA failure.
  device_image_predictor(const predictor_config& c, const image_predictor_weights& w) {
    validate(w, c);
    view_.hidden = c.hidden;
    view_.d_model = c.d_model;
    view_.heads = c.heads;
    view_.ffn = c.ffn;
    view_.local_dim = c.local_dim;
    view_.eps = c.layer_norm_eps;
    view_.down_norm = norm(w.down_norm);
    view_.down = linear(w.down);
    for (const auto& b : w.blocks) {
      blocks_.push_back({norm(b.norm1), linear(b.qkv), linear(b.proj), norm(b.norm2), linear(b.fc1),
                         linear(b.fc2)});
    }
    view_.blocks = blocks_.data();
    view_.block_count = blocks_.size();
    for (std::size_t i = 0; i < 3; ++i) view_.head[i] = linear(w.head[i]);
  }
  device_image_predictor(const device_image_predictor&) = delete;
  device_image_predictor& operator=(const device_image_predictor&) = delete;

  index_t hidden() const noexcept { return view_.hidden; }
  /// The non-owning view the device-level calls take (valid while this object lives).
  const image_predictor_view<T>& view() const noexcept { return view_; }

 private:
  device_norm_view norm(const nn::layer_norm_weights& n) {
    // take each device pointer at once: a later emplace_back may move the buffers (the device
    // memory stays where it is)
    const float* g = floats_.emplace_back(n.gamma).data();
    const float* b = floats_.emplace_back(n.beta).data();
    return {g, b};
  }
  device_linear_view<T> linear(const nn::linear_weights& l) {
    std::vector<float> wide(static_cast<std::size_t>(l.out) * static_cast<std::size_t>(l.in));
    l.weight.widen_rows(0, l.out, wide.data());
    std::vector<T> stored(wide.size());
    for (std::size_t i = 0; i < wide.size(); ++i) stored[i] = static_cast<T>(wide[i]);
    const T* W = weights_.emplace_back(stored).data();
    const float* bias = l.bias.empty() ? nullptr : floats_.emplace_back(l.bias).data();
    return {W, bias, l.in, l.out};
  }

  std::vector<device_buffer<float>> floats_;
  std::vector<device_buffer<T>> weights_;
  std::vector<typename image_predictor_view<T>::block> blocks_;
  image_predictor_view<T> view_{};
};

}  // namespace dynllava::cuda

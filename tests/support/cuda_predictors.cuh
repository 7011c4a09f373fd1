// SPDX-License-Identifier: Apache-2.0
/// @file cuda_predictors.cuh
/// @brief GPU tests of the predictors: the CPU output predictor's weights widened to fp32 (what the
/// CUDA uploader takes), a cuBLAS handle with its own workspace, a small image-predictor shape
/// and a run of the CUDA image predictor's logits.
#pragma once

#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/predictor_config.hpp>
#include <dynllava/score/cuda/device_image_predictor.cuh>
#include <dynllava/score/cuda/device_image_predictor_weights.cuh>
#include <dynllava/score/cuda/device_output_predictor.cuh>
#include <dynllava/score/predictor_weights.hpp>

#include <cublas_v2.h>
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <utility>
#include <vector>

namespace dynllava::test {

/// The CPU predictor's weights widened to fp32, and the views the CUDA uploader takes.
struct host_weights {
  std::vector<float> gamma, beta;
  std::array<std::vector<float>, 4> weight, bias;
  cuda::output_predictor_host_weights view(const predictor_config& c) const {
    cuda::output_predictor_host_weights v;
    v.dims = {c.hidden, c.output_head[0], c.output_head[1], c.output_head[2], 2};
    v.eps = c.layer_norm_eps;
    v.gamma = make_host_span(gamma);
    v.beta = make_host_span(beta);
    for (std::size_t i = 0; i < 4; ++i) {
      v.weight[i] = make_host_span(weight[i]);
      v.bias[i] = make_host_span(bias[i]);
    }
    return v;
  }
};

inline host_weights widen(const output_predictor_weights& w) {
  host_weights h{w.norm.gamma, w.norm.beta, {}, {}};
  for (std::size_t i = 0; i < 4; ++i) {
    const auto& l = w.head[i];
    h.weight[i].resize(static_cast<std::size_t>(l.out) * static_cast<std::size_t>(l.in));
    l.weight.widen_rows(0, l.out, h.weight[i].data());
    h.bias[i] = l.bias;
  }
  return h;
}

/// RAII cuBLAS handle with a user workspace (so that it allocates nothing while captured).
struct cublas_handle {
  cublasHandle_t h = nullptr;
  cuda::device_buffer<unsigned char> workspace{std::size_t{4} << 20};
  cublas_handle() {
    REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cublasSetWorkspace(h, workspace.data(), workspace.size()) == CUBLAS_STATUS_SUCCESS);
  }
  ~cublas_handle() { (void)cublasDestroy(h); }
  cublas_handle(const cublas_handle&) = delete;
  cublas_handle& operator=(const cublas_handle&) = delete;
};

/// A small image predictor: 4 heads of 16 (the checkpoints' have 8 of 64).
inline predictor_config small_image_config() {
  predictor_config c;
  c.hidden = 80;
  c.d_model = 64;
  c.heads = 4;
  c.ffn = 96;
  c.local_dim = 32;
  c.image_head = {32, 16};
  return c;
}

/// The CUDA image predictor's logits `[tokens, 2]` of fp32 `hidden` stored as `T`, ragged by
/// `indptr` (synchronous: sizes and allocates its workspace, runs on the legacy stream).
template <class T>
std::vector<float> image_logits(const cuda::device_image_predictor<T>& predictor,
                                cublasHandle_t handle, const std::vector<index_t>& indptr,
                                const std::vector<float>& hidden) {
  std::vector<T> stored(hidden.size());
  for (std::size_t i = 0; i < hidden.size(); ++i) stored[i] = static_cast<T>(hidden[i]);
  const cuda::device_buffer<index_t> d_indptr(indptr);
  const cuda::device_buffer<T> d_hidden(stored);
  const auto tokens = static_cast<std::size_t>(indptr.back());
  cuda::device_buffer<float> d_logits(2 * tokens);
  std::size_t bytes = 0;
  REQUIRE(cuda::image_predictor_logits(nullptr, bytes, handle, predictor.view(),
                                       make_host_span(indptr), d_indptr.view(), d_hidden.view(),
                                       d_logits.view(), nullptr) == cudaSuccess);
  cuda::device_buffer<unsigned char> temp(bytes);
  REQUIRE(cuda::image_predictor_logits(temp.data(), bytes, handle, predictor.view(),
                                       make_host_span(indptr), d_indptr.view(), d_hidden.view(),
                                       d_logits.view(), nullptr) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  return d_logits.to_host();
}

}  // namespace dynllava::test

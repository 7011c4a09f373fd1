// SPDX-License-Identifier: Apache-2.0
/// @file device_output_predictor.cuh
/// @brief The Dynamic-LLaVA output-text predictor on CUDA, the twin of `output_predictor`
/// (score/output_predictor.hpp): `logits = L7(GELU(L5(GELU(L3(GELU(L1(LayerNorm(x))))))))` per
/// token, channel 0 = keep. Storage `T` (fp32, fp16, bf16) for the hidden states, the weights and
/// the intermediate activations; fp32 LayerNorm parameters, biases, accumulation and logits.
///
/// Three levels: the device-level calls (`output_predictor_logits`, `output_predictor_scores`:
/// caller workspace, a cuBLAS handle, `cudaError_t`, no allocation, no host sync); an owning
/// `device_output_predictor<T>` that uploads host fp32 weights (allocates, synchronous; needs no
/// BLAS, so the CUDA tier stays free of the `nn` tier); and
/// `output_predictor_scorer`, the CUDA model of `two_way_predictor<P, cuda::on_stream>` for fp32.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>
#include <dynllava/nn/cuda/device_linear.cuh>
#include <dynllava/nn/cuda/kernel_rows.cuh>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/cuda/device_margins.cuh>
#include <dynllava/select/cuda/device_score.cuh>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <vector>

namespace dynllava::cuda {

/// @brief Device weights of the output predictor; non-owning, trivially copyable.
template <class T>
struct output_predictor_view {
  std::array<index_t, 5> dims{};       ///< H, o0, o1, o2, 2
  float eps = 1e-5f;                   ///< LayerNorm epsilon
  const float* norm_gamma = nullptr;   ///< [H] device
  const float* norm_beta = nullptr;    ///< [H] device
  std::array<const T*, 4> weight{};    ///< [dims[i + 1], dims[i]] device, row-major
  std::array<const float*, 4> bias{};  ///< [dims[i + 1]] device
  index_t hidden() const noexcept { return dims[0]; }
};

namespace detail {

template <class T>
std::array<std::size_t, 5> output_predictor_parts(const output_predictor_view<T>& w,
                                                  std::size_t tokens) {
  return {tokens * static_cast<std::size_t>(w.dims[0]) * sizeof(T),
          tokens * static_cast<std::size_t>(w.dims[1]) * sizeof(T),
          tokens * static_cast<std::size_t>(w.dims[2]) * sizeof(T),
          tokens * static_cast<std::size_t>(w.dims[3]) * sizeof(T), tokens * 2 * sizeof(float)};
}

template <class T>
cudaError_t run_output_predictor(const std::array<void*, 5>& parts, cublasHandle_t handle,
                                 const output_predictor_view<T>& w, const T* hidden,
                                 std::size_t tokens, float* logits, cudaStream_t stream) {
  auto* const normed = static_cast<T*>(parts[0]);
  cudaError_t e =
      cuda::layer_norm(hidden, tokens, w.dims[0], w.norm_gamma, w.norm_beta, w.eps, normed, stream);
  const T* in = normed;
  for (int i = 0; i < 3 && e == cudaSuccess; ++i) {
    auto* const next = static_cast<T*>(parts[static_cast<std::size_t>(i) + 1]);
    e = cuda::linear(handle, in, tokens, w.weight[static_cast<std::size_t>(i)],
                     w.dims[static_cast<std::size_t>(i)], w.dims[static_cast<std::size_t>(i) + 1],
                     w.bias[static_cast<std::size_t>(i)], true, next, stream);
    in = next;
  }
  if (e != cudaSuccess) return e;
  return cuda::linear(handle, in, tokens, w.weight[3], w.dims[3], w.dims[4], w.bias[3], false,
                      logits, stream);
}

template <class T>
bool output_predictor_view_ok(const output_predictor_view<T>& w) {
  for (index_t d : w.dims) {
    if (d <= 0) return false;
  }
  for (std::size_t i = 0; i < 4; ++i) {
    if (w.weight[i] == nullptr || w.bias[i] == nullptr) return false;
  }
  return w.dims[4] == 2 && w.norm_gamma != nullptr && w.norm_beta != nullptr;
}

/// @brief Checks the shapes (`hidden_size` = tokens x H, `out_size` = `per` x tokens) and lays
/// out the workspace: `cudaErrorInvalidValue` on a mismatch or a too small workspace, else
/// success with `tokens` set (and `parts` set when `temp` is not null).
template <class T>
cudaError_t output_predictor_prepare(void* temp, std::size_t& temp_bytes,
                                     const output_predictor_view<T>& w, std::size_t hidden_size,
                                     std::size_t out_size, std::size_t per,
                                     std::array<void*, 5>& parts, std::size_t& tokens) {
  if (!output_predictor_view_ok(w) || hidden_size % static_cast<std::size_t>(w.dims[0]) != 0) {
    return cudaErrorInvalidValue;
  }
  tokens = hidden_size / static_cast<std::size_t>(w.dims[0]);
  if (out_size != per * tokens) return cudaErrorInvalidValue;
  const workspace_status ws =
      alias_temporaries(temp, temp_bytes, parts, output_predictor_parts(w, tokens));
  return ws == workspace_status::too_small ? cudaErrorInvalidValue : cudaSuccess;
}

}  // namespace detail

/// @brief Device-level logits of the output predictor for `tokens` rows.
/// @param[in] temp, temp_bytes workspace (null `temp`: size query)
/// @param[in] handle cuBLAS handle (its stream is set to `stream`)
/// @param[in] hidden [tokens, H] device, read-only
/// @param[out] logits [tokens, 2] device fp32; channel 0 = keep
/// @return `cudaErrorInvalidValue` on mismatched shapes or a too small workspace
template <class T>
requires device_score<T> cudaError_t output_predictor_logits(
    void* temp, std::size_t& temp_bytes, cublasHandle_t handle, const output_predictor_view<T>& w,
    device_span<const T> hidden, device_span<float> logits, cudaStream_t stream) {
  std::array<void*, 5> parts{};
  std::size_t tokens = 0;
  if (const cudaError_t e = detail::output_predictor_prepare(temp, temp_bytes, w, hidden.size(),
                                                             logits.size(), 2, parts, tokens);
      e != cudaSuccess || temp == nullptr || tokens == 0) {
    return e;
  }
  return detail::run_output_predictor(parts, handle, w, hidden.data(), tokens, logits.data(),
                                      stream);
}

/// @brief Device-level ranking scores `logit0 - logit1` of the output predictor.
/// @param[out] scores [tokens] device fp32. Otherwise as `output_predictor_logits`.
template <class T>
requires device_score<T> cudaError_t output_predictor_scores(
    void* temp, std::size_t& temp_bytes, cublasHandle_t handle, const output_predictor_view<T>& w,
    device_span<const T> hidden, device_span<float> scores, cudaStream_t stream) {
  std::array<void*, 5> parts{};
  std::size_t tokens = 0;
  if (const cudaError_t e = detail::output_predictor_prepare(temp, temp_bytes, w, hidden.size(),
                                                             scores.size(), 1, parts, tokens);
      e != cudaSuccess || temp == nullptr || tokens == 0) {
    return e;
  }
  auto* const logits = static_cast<float*>(parts[4]);
  if (const cudaError_t e =
          detail::run_output_predictor(parts, handle, w, hidden.data(), tokens, logits, stream);
      e != cudaSuccess) {
    return e;
  }
  detail::margin_kernel<<<detail::elementwise_grid(tokens), 256, 0, stream>>>(logits, tokens,
                                                                              scores.data());
  return cudaPeekAtLastError();
}

/// @brief Host fp32 views of the output predictor's parameters, for `device_output_predictor`
/// (widen stored fp16/bf16 checkpoint weights first). Non-owning.
struct output_predictor_host_weights {
  std::array<index_t, 5> dims{};                 ///< H, o0, o1, o2, 2
  float eps = 1e-5f;                             ///< LayerNorm epsilon
  host_span<const float> gamma, beta;            ///< [H]
  std::array<host_span<const float>, 4> weight;  ///< [dims[i + 1], dims[i]] row-major
  std::array<host_span<const float>, 4> bias;    ///< [dims[i + 1]], or empty for none
};

/// @brief The output predictor's weights in device memory, uploaded from host fp32 views and
/// converted to `T` (owning; construction allocates and copies synchronously).
template <class T>
requires device_score<T>
class device_output_predictor {
 public:
  /// @throws dynllava::error naming the tensor on a size mismatch, dynllava::cuda_error on a
  ///         CUDA failure.
  explicit device_output_predictor(const output_predictor_host_weights& w)
      : dims_(w.dims), eps_(w.eps) {
    for (index_t d : dims_) {
      DYNLLAVA_EXPECTS(d > 0, "device_output_predictor: every width must be > 0, got {}", d);
    }
    DYNLLAVA_EXPECTS(dims_[4] == 2, "device_output_predictor: the last width must be 2, got {}",
                     dims_[4]);
    const auto h = static_cast<std::size_t>(dims_[0]);
    DYNLLAVA_EXPECTS(w.gamma.size() == h && w.beta.size() == h,
                     "device_output_predictor: LayerNorm gamma and beta must have H = {} entries, "
                     "got {} and {}",
                     h, w.gamma.size(), w.beta.size());
    gamma_ = device_buffer<float>(std::vector<float>(w.gamma.begin(), w.gamma.end()));
    beta_ = device_buffer<float>(std::vector<float>(w.beta.begin(), w.beta.end()));
    for (std::size_t i = 0; i < 4; ++i) {
      const auto in = static_cast<std::size_t>(dims_[i]);
      const auto out = static_cast<std::size_t>(dims_[i + 1]);
      DYNLLAVA_EXPECTS(w.weight[i].size() == out * in,
                       "device_output_predictor: weight {} must be [{}, {}] ({} values), got {}", i,
                       out, in, out * in, w.weight[i].size());
      DYNLLAVA_EXPECTS(w.bias[i].empty() || w.bias[i].size() == out,
                       "device_output_predictor: bias {} must be empty or have {} entries, got {}",
                       i, out, w.bias[i].size());
      std::vector<T> stored(w.weight[i].size());
      for (std::size_t j = 0; j < stored.size(); ++j) stored[j] = static_cast<T>(w.weight[i][j]);
      weight_[i] = device_buffer<T>(stored);
      bias_[i] = device_buffer<float>(w.bias[i].empty()
                                          ? std::vector<float>(out, 0.0f)
                                          : std::vector<float>(w.bias[i].begin(), w.bias[i].end()));
    }
  }

  index_t hidden() const noexcept { return dims_[0]; }

  /// The non-owning view the device-level calls take (valid while this object lives).
  output_predictor_view<T> view() const noexcept {
    output_predictor_view<T> v;
    v.dims = dims_;
    v.eps = eps_;
    v.norm_gamma = gamma_.data();
    v.norm_beta = beta_.data();
    for (std::size_t i = 0; i < 4; ++i) {
      v.weight[i] = weight_[i].data();
      v.bias[i] = bias_[i].data();
    }
    return v;
  }

 private:
  std::array<index_t, 5> dims_{};
  float eps_ = 1e-5f;
  device_buffer<float> gamma_, beta_;
  std::array<device_buffer<T>, 4> weight_;
  std::array<device_buffer<float>, 4> bias_;
};

/// @brief The CUDA model of `two_way_predictor<P, cuda::on_stream>` (fp32 rows): scores and
/// logits of ragged device hidden states through `output_predictor_scores` / `_logits`, in a
/// caller workspace (sized by `workspace_bytes(tokens)`), with a caller cuBLAS handle. Non-owning.
struct output_predictor_scorer {
  output_predictor_view<float> weights{};
  cublasHandle_t handle = nullptr;
  void* temp = nullptr;
  std::size_t temp_bytes = 0;

  index_t hidden() const noexcept { return weights.hidden(); }

  /// Workspace bytes for up to `tokens` rows.
  std::size_t workspace_bytes(std::size_t tokens) const {
    std::size_t bytes = 0;
    const auto h = static_cast<std::size_t>(std::max<index_t>(weights.hidden(), 1));
    DYNLLAVA_CUDA_TRY(output_predictor_logits(nullptr, bytes, handle, weights,
                                              device_span<const float>(nullptr, tokens * h),
                                              device_span<float>(nullptr, 2 * tokens), nullptr));
    return bytes;
  }

  /// @throws dynllava::error on a width other than H, a wrong output size or a too small
  ///         workspace; dynllava::cuda_error on a CUDA or cuBLAS failure.
  void logits(on_stream exec, ragged_rows<const float, device_space> rows,
              device_span<float> out) const {
    check(rows, out.size(), 2, "logits");
    std::size_t bytes = temp_bytes;
    DYNLLAVA_CUDA_TRY(
        output_predictor_logits(temp, bytes, handle, weights, rows.values, out, exec.stream));
  }

  void score(on_stream exec, ragged_rows<const float, device_space> rows,
             device_span<float> out) const {
    check(rows, out.size(), 1, "scores");
    std::size_t bytes = temp_bytes;
    DYNLLAVA_CUDA_TRY(
        output_predictor_scores(temp, bytes, handle, weights, rows.values, out, exec.stream));
  }

 private:
  void check(ragged_rows<const float, device_space> rows, std::size_t out_size, std::size_t per,
             const char* what) const {
    DYNLLAVA_EXPECTS(rows.width == weights.hidden(),
                     "cuda::output_predictor_scorer: rows must have width H = {}, got {}",
                     weights.hidden(), rows.width);
    DYNLLAVA_EXPECTS(out_size == per * rows.rows(),
                     "cuda::output_predictor_scorer: {} must have {} entries, got {}", what,
                     per * rows.rows(), out_size);
    const std::size_t needed = workspace_bytes(rows.rows());
    DYNLLAVA_EXPECTS(temp != nullptr && temp_bytes >= needed,
                     "cuda::output_predictor_scorer: the workspace must hold {} bytes for {} rows, "
                     "got {}",
                     needed, rows.rows(), temp == nullptr ? 0 : temp_bytes);
  }
};
static_assert(two_way_predictor<output_predictor_scorer, on_stream>);
static_assert(!two_way_predictor<output_predictor_scorer, host_t>);

}  // namespace dynllava::cuda

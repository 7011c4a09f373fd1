// SPDX-License-Identifier: Apache-2.0
/// @file device_image_predictor.cuh
/// @brief The Dynamic-LLaVA image predictor on CUDA, the twin of `image_predictor`
/// (score/image_predictor.hpp), per sequence of `n` image tokens `x [n, H]`:
///   h = GELU(Linear(LayerNorm(x)))                                        [n, d]
///   per block: h += proj(attn(norm1(h))); h += fc2(GELU(fc1(norm2(h))))    (8 heads, no mask)
///   z = [h[:, :local] | mean over the sequence of h[:, local:]]
///   logits = Linear(GELU(Linear(GELU(Linear(z)))))                         [n, 2], channel 0 =
///   keep
/// Storage `T` (fp32, fp16, bf16) for inputs, weights and activations; fp32 LayerNorm
/// parameters, biases, accumulation, attention scores and logits. GEMMs through cuBLAS; the
/// attention is one launch of the library's own kernel over the whole ragged batch
/// (`nn/cuda/kernel_attention.cuh`: a thread per query row and head, online softmax over the
/// sequence's keys, no score matrix in memory).
///
/// The image-token counts per sequence are host-known in prefill (576 per image), so the call
/// takes the batch's offsets on the host as well (`host_indptr`): the workspace and the launch
/// shapes come from them without reading device memory, and the call stays free of host
/// synchronisation.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/workspace.hpp>
#include <dynllava/nn/cuda/device_linear.cuh>
#include <dynllava/nn/cuda/kernel_attention.cuh>
#include <dynllava/nn/cuda/kernel_rows.cuh>
#include <dynllava/score/concepts.hpp>
#include <dynllava/score/cuda/device_margins.cuh>
#include <dynllava/select/cuda/device_score.cuh>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava::cuda {

/// Device weights of one linear layer: `W [out, in]` row-major in `T`, `bias [out]` fp32 or null.
template <class T>
struct device_linear_view {
  const T* weight = nullptr;
  const float* bias = nullptr;
  index_t in = 0;
  index_t out = 0;
};

/// Device LayerNorm parameters `[dim]`, fp32.
struct device_norm_view {
  const float* gamma = nullptr;
  const float* beta = nullptr;
};

/// @brief Device weights of the image predictor; non-owning. `blocks` has `block_count` entries.
template <class T>
struct image_predictor_view {
  index_t hidden = 0;     ///< H
  index_t d_model = 0;    ///< d
  index_t heads = 0;      ///< attention heads (head dim d / heads)
  index_t ffn = 0;        ///< block MLP width
  index_t local_dim = 0;  ///< channels kept per token; the rest are averaged
  float eps = 1e-5f;
  device_norm_view down_norm;
  device_linear_view<T> down;
  struct block {
    device_norm_view norm1;
    device_linear_view<T> qkv;  ///< no bias
    device_linear_view<T> proj;
    device_norm_view norm2;
    device_linear_view<T> fc1;
    device_linear_view<T> fc2;
  };
  const block* blocks = nullptr;  ///< host array of `block_count` blocks
  std::size_t block_count = 0;
  std::array<device_linear_view<T>, 3> head{};
};

namespace detail {

template <class T>
std::array<std::size_t, 6> image_predictor_parts(const image_predictor_view<T>& w,
                                                 std::size_t tokens) {
  const auto d = static_cast<std::size_t>(w.d_model);
  return {tokens * static_cast<std::size_t>(w.hidden) * sizeof(T),  // normalised input
          tokens * d * sizeof(T),                                   // h
          tokens * d * sizeof(T),                                   // a (normed) / attention out
          tokens * 3 * d * sizeof(T),                               // qkv
          tokens * static_cast<std::size_t>(std::max(w.ffn, w.head[0].out)) * sizeof(T),  // mlp
          tokens * static_cast<std::size_t>(w.head[1].out) * sizeof(T)};  // head hidden 2
}

template <class T>
bool linear_ok(const device_linear_view<T>& l, index_t in, index_t out, bool bias) {
  return l.weight != nullptr && l.in == in && l.out == out && (!bias || l.bias != nullptr);
}

inline bool norm_ok(const device_norm_view& n) { return n.gamma != nullptr && n.beta != nullptr; }

/// Every tensor present and every width consistent (host-side; the view's `blocks` is a host
/// array).
template <class T>
bool image_predictor_view_ok(const image_predictor_view<T>& w) {
  if (w.hidden <= 0 || w.d_model <= 0 || w.heads <= 0 || w.d_model % w.heads != 0 ||
      w.d_model / w.heads > attention_max_head_dim || w.ffn <= 0 || w.local_dim < 0 ||
      w.local_dim > w.d_model || (w.block_count > 0 && w.blocks == nullptr)) {
    return false;
  }
  const index_t d = w.d_model;
  if (!norm_ok(w.down_norm) || !linear_ok(w.down, w.hidden, d, true) || w.head[0].out <= 0 ||
      w.head[1].out <= 0 || !linear_ok(w.head[0], d, w.head[0].out, true) ||
      !linear_ok(w.head[1], w.head[0].out, w.head[1].out, true) ||
      !linear_ok(w.head[2], w.head[1].out, 2, true)) {
    return false;
  }
  for (std::size_t i = 0; i < w.block_count; ++i) {
    const auto& b = w.blocks[i];
    if (!norm_ok(b.norm1) || !norm_ok(b.norm2) || !linear_ok(b.qkv, d, 3 * d, false) ||
        !linear_ok(b.proj, d, d, true) || !linear_ok(b.fc1, d, w.ffn, true) ||
        !linear_ok(b.fc2, w.ffn, d, true)) {
      return false;
    }
  }
  return true;
}

}  // namespace detail

/// @brief Device-level logits of the image predictor for a ragged batch of image tokens.
/// @param[in] temp, temp_bytes workspace (null `temp`: size query; the size depends on the
///            tokens and the longest sequence)
/// @param[in] handle cuBLAS handle (its stream is set to `stream`)
/// @param[in] host_indptr [batch + 1] host offsets of each sequence's image tokens
/// @param[in] indptr the same offsets in device memory (read by the global-mean kernel; a
///            precondition, not checked: sequences whose device offsets fall outside the rows are
///            skipped there, never read out of bounds)
/// @param[in] hidden [tokens, H] device, read-only
/// @param[out] logits [tokens, 2] device fp32; channel 0 = keep
/// @return `cudaErrorInvalidValue` on invalid weights, offsets or sizes, or a too small
///         workspace; else the first failing cuBLAS or launch status
template <class T>
requires device_score<T> cudaError_t image_predictor_logits(
    void* temp, std::size_t& temp_bytes, cublasHandle_t handle, const image_predictor_view<T>& w,
    host_span<const index_t> host_indptr, device_span<const index_t> indptr,
    device_span<const T> hidden, device_span<float> logits, cudaStream_t stream) {
  if (!detail::image_predictor_view_ok(w) || host_indptr.size() != indptr.size() ||
      host_indptr.empty() || host_indptr[0] != 0) {
    return cudaErrorInvalidValue;
  }
  const std::size_t batch = host_indptr.size() - 1;
  std::size_t max_n = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    if (host_indptr[b + 1] < host_indptr[b]) return cudaErrorInvalidValue;
    max_n = std::max(max_n, static_cast<std::size_t>(host_indptr[b + 1] - host_indptr[b]));
  }
  const auto tokens = static_cast<std::size_t>(host_indptr[batch]);
  if (hidden.size() != tokens * static_cast<std::size_t>(w.hidden) || logits.size() != 2 * tokens) {
    return cudaErrorInvalidValue;
  }
  std::array<void*, 6> parts{};
  const workspace_status ws =
      alias_temporaries(temp, temp_bytes, parts, detail::image_predictor_parts(w, tokens));
  if (ws == workspace_status::size_query) return cudaSuccess;
  if (ws == workspace_status::too_small) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  auto* const normed = static_cast<T*>(parts[0]);
  auto* const h = static_cast<T*>(parts[1]);
  auto* const a = static_cast<T*>(parts[2]);
  auto* const qkv = static_cast<T*>(parts[3]);
  auto* const m = static_cast<T*>(parts[4]);
  auto* const m2 = static_cast<T*>(parts[5]);
  const index_t d = w.d_model;
  const float eps = w.eps;
  cudaError_t e = cuda::layer_norm(hidden.data(), tokens, w.hidden, w.down_norm.gamma,
                                   w.down_norm.beta, eps, normed, stream);
  if (e == cudaSuccess) {
    e = cuda::linear(handle, static_cast<const T*>(normed), tokens, w.down.weight, w.down.in,
                     w.down.out, w.down.bias, true, h, stream);
  }
  for (std::size_t i = 0; i < w.block_count && e == cudaSuccess; ++i) {
    const auto& blk = w.blocks[i];
    e = cuda::layer_norm(static_cast<const T*>(h), tokens, d, blk.norm1.gamma, blk.norm1.beta, eps,
                         a, stream);
    if (e == cudaSuccess) {
      e = cuda::linear(handle, static_cast<const T*>(a), tokens, blk.qkv.weight, d, 3 * d,
                       static_cast<const float*>(nullptr), false, qkv, stream);
    }
    if (e == cudaSuccess) {  // a = attention of each sequence's rows over its own rows
      e = detail::bidirectional_attention(static_cast<const T*>(qkv), indptr.data(), batch, tokens,
                                          max_n, d, w.heads, a, stream);
    }
    if (e == cudaSuccess) {  // h += proj(att) + b
      e = cuda::linear(handle, static_cast<const T*>(a), tokens, blk.proj.weight, d, d,
                       blk.proj.bias, false, h, stream, true);
    }
    if (e == cudaSuccess) {
      e = cuda::layer_norm(static_cast<const T*>(h), tokens, d, blk.norm2.gamma, blk.norm2.beta,
                           eps, a, stream);
    }
    if (e == cudaSuccess) {
      e = cuda::linear(handle, static_cast<const T*>(a), tokens, blk.fc1.weight, d, w.ffn,
                       blk.fc1.bias, true, m, stream);
    }
    if (e == cudaSuccess) {  // h += fc2(GELU(fc1(norm2(h)))) + b
      e = cuda::linear(handle, static_cast<const T*>(m), tokens, blk.fc2.weight, w.ffn, d,
                       blk.fc2.bias, false, h, stream, true);
    }
  }
  if (e != cudaSuccess) return e;
  detail::global_mean_kernel<<<static_cast<unsigned>(std::min<std::size_t>(batch, 65535)), 256, 0,
                               stream>>>(h, indptr.data(), batch, d, w.local_dim, tokens);
  if (e = cudaPeekAtLastError(); e != cudaSuccess) return e;
  e = cuda::linear(handle, static_cast<const T*>(h), tokens, w.head[0].weight, w.head[0].in,
                   w.head[0].out, w.head[0].bias, true, m, stream);
  if (e == cudaSuccess) {
    e = cuda::linear(handle, static_cast<const T*>(m), tokens, w.head[1].weight, w.head[1].in,
                     w.head[1].out, w.head[1].bias, true, m2, stream);
  }
  if (e == cudaSuccess) {
    e = cuda::linear(handle, static_cast<const T*>(m2), tokens, w.head[2].weight, w.head[2].in,
                     w.head[2].out, w.head[2].bias, false, logits.data(), stream);
  }
  return e;
}

/// @brief Device-level ranking scores `logit0 - logit1` of the image predictor.
/// @param[out] scores [tokens] device fp32. Otherwise as `image_predictor_logits` (the logits
///             go to the workspace).
template <class T>
requires device_score<T> cudaError_t image_predictor_scores(
    void* temp, std::size_t& temp_bytes, cublasHandle_t handle, const image_predictor_view<T>& w,
    host_span<const index_t> host_indptr, device_span<const index_t> indptr,
    device_span<const T> hidden, device_span<float> scores, cudaStream_t stream) {
  std::array<void*, 2> parts{};
  std::size_t inner = 0;
  const std::size_t tokens = scores.size();
  if (const cudaError_t e =
          image_predictor_logits(nullptr, inner, handle, w, host_indptr, indptr, hidden,
                                 device_span<float>(nullptr, 2 * tokens), stream);
      e != cudaSuccess) {
    return e;
  }
  const workspace_status ws =
      alias_temporaries(temp, temp_bytes, parts, {inner, 2 * tokens * sizeof(float)});
  if (ws == workspace_status::size_query) return cudaSuccess;
  if (ws == workspace_status::too_small) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  auto* const logits = static_cast<float*>(parts[1]);
  if (const cudaError_t e =
          image_predictor_logits(parts[0], inner, handle, w, host_indptr, indptr, hidden,
                                 device_span<float>(logits, 2 * tokens), stream);
      e != cudaSuccess) {
    return e;
  }
  detail::margin_kernel<<<detail::elementwise_grid(tokens), 256, 0, stream>>>(logits, tokens,
                                                                              scores.data());
  return cudaPeekAtLastError();
}

/// @brief The CUDA model of `two_way_predictor<P, cuda::on_stream>` (fp32 rows) for the image
/// predictor. The launches need each sequence's image-token count on the host (prefill knows
/// them: 576 per image), so the caller also sets `host_indptr` to the same offsets as the rows'
/// device `indptr` before each call (a precondition: reading the device offsets would
/// synchronise). Non-owning; the workspace is sized by `workspace_bytes()` for that batch.
struct image_predictor_scorer {
  image_predictor_view<float> weights{};
  cublasHandle_t handle = nullptr;
  host_span<const index_t> host_indptr;  ///< [batch + 1] host copy of the rows' offsets
  void* temp = nullptr;
  std::size_t temp_bytes = 0;

  index_t hidden() const noexcept { return weights.hidden; }

  /// Workspace bytes for the batch described by `host_indptr`.
  /// @throws dynllava::error on invalid weights or offsets.
  std::size_t workspace_bytes() const {
    std::size_t bytes = 0;
    const std::size_t tokens =
        host_indptr.empty() ? 0 : static_cast<std::size_t>(host_indptr[host_indptr.size() - 1]);
    const cudaError_t e = image_predictor_logits(
        nullptr, bytes, handle, weights, host_indptr,
        device_span<const index_t>(nullptr, host_indptr.size()),
        device_span<const float>(nullptr, tokens * static_cast<std::size_t>(weights.hidden)),
        device_span<float>(nullptr, 2 * tokens), nullptr);
    DYNLLAVA_EXPECTS(e == cudaSuccess,
                     "cuda::image_predictor_scorer: invalid weights or host_indptr ({} entries)",
                     host_indptr.size());
    return bytes;
  }

  /// @throws dynllava::error on a width other than H, offsets that do not describe the rows, a
  ///         wrong output size or a too small workspace; dynllava::cuda_error on a CUDA failure.
  void logits(on_stream exec, ragged_rows<const float, device_space> rows,
              device_span<float> out) const {
    check(rows, out.size(), 2, "logits");
    std::size_t bytes = temp_bytes;
    DYNLLAVA_CUDA_TRY(image_predictor_logits(temp, bytes, handle, weights, host_indptr, rows.indptr,
                                             rows.values, out, exec.stream));
  }

  void score(on_stream exec, ragged_rows<const float, device_space> rows,
             device_span<float> out) const {
    check(rows, out.size(), 1, "scores");
    std::size_t bytes = temp_bytes;
    const std::size_t needed = scores_bytes(rows.rows());
    DYNLLAVA_EXPECTS(bytes >= needed,
                     "cuda::image_predictor_scorer: scores need a workspace of {} bytes, got {}",
                     needed, bytes);
    DYNLLAVA_CUDA_TRY(image_predictor_scores(temp, bytes, handle, weights, host_indptr, rows.indptr,
                                             rows.values, out, exec.stream));
  }

  /// Workspace bytes of `score` (the logits go to the workspace too).
  std::size_t scores_bytes(std::size_t tokens) const {
    std::size_t bytes = 0;
    DYNLLAVA_CUDA_TRY(image_predictor_scores(
        nullptr, bytes, handle, weights, host_indptr,
        device_span<const index_t>(nullptr, host_indptr.size()),
        device_span<const float>(nullptr, tokens * static_cast<std::size_t>(weights.hidden)),
        device_span<float>(nullptr, tokens), nullptr));
    return bytes;
  }

 private:
  void check(ragged_rows<const float, device_space> rows, std::size_t out_size, std::size_t per,
             const char* what) const {
    DYNLLAVA_EXPECTS(rows.width == weights.hidden,
                     "cuda::image_predictor_scorer: rows must have width H = {}, got {}",
                     weights.hidden, rows.width);
    DYNLLAVA_EXPECTS(
        host_indptr.size() == rows.indptr.size() && !host_indptr.empty() &&
            static_cast<std::size_t>(host_indptr[host_indptr.size() - 1]) == rows.rows(),
        "cuda::image_predictor_scorer: host_indptr ({} entries) must describe the "
        "rows' {} sequences and {} rows",
        host_indptr.size(), rows.batch(), rows.rows());
    DYNLLAVA_EXPECTS(out_size == per * rows.rows(),
                     "cuda::image_predictor_scorer: {} must have {} entries, got {}", what,
                     per * rows.rows(), out_size);
    DYNLLAVA_EXPECTS(temp != nullptr && temp_bytes >= workspace_bytes(),
                     "cuda::image_predictor_scorer: the workspace must hold {} bytes, got {}",
                     workspace_bytes(), temp == nullptr ? 0 : temp_bytes);
  }
};
static_assert(two_way_predictor<image_predictor_scorer, on_stream>);
static_assert(!two_way_predictor<image_predictor_scorer, host_t>);

}  // namespace dynllava::cuda

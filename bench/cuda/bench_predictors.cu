// SPDX-License-Identifier: Apache-2.0
/// @file bench_predictors.cu
/// @brief The CUDA predictors against the dense work they let a model skip, in the same run: the
/// image predictor over `batch` images of 576 tokens against the GEMMs of one LLaMA-7B decoder
/// layer over the same tokens (q, k, v, o 4096 x 4096; gate, up 11008 x 4096; down 4096 x 11008),
/// and the output predictor over one new token per sequence against that layer's GEMMs for the
/// same rows (a decode step). The ratio says how many dense layers one predictor call costs.
///
/// LLaVA-1.5-7B sizes (H 4096; predictor d 512, 8 heads, MLP 2048, heads 512 -> 256 -> 128 -> 2),
/// fp16 storage, fp32 accumulation, weights and inputs uniform random on the device. Timed with
/// CUDA events, L2 flushed before every iteration. Without a device every case reports
/// "no CUDA device".
#include <dynllava/score/cuda/device_image_predictor.cuh>
#include <dynllava/score/cuda/device_output_predictor.cuh>

#include "bench_support.cuh"

#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace {

using dynllava::index_t;
using dynllava::bench::cuda_timing;
using dynllava::bench::device_available;
using dynllava::bench::device_memory;
namespace dc = dynllava::cuda;

constexpr index_t hidden = 4096;
constexpr index_t image_tokens = 576;

__global__ void fill_uniform(__half* out, std::size_t n, float scale, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u + seed;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    out[i] = __float2half(scale * (static_cast<float>(x >> 8) * (1.0f / 16777216.0f) - 0.5f));
  }
}

__global__ void fill_value(float* out, std::size_t n, float v) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    out[i] = v;
  }
}

/// Device allocations that live for one benchmark case; `ok` turns false on any failure.
struct arena {
  std::vector<std::unique_ptr<device_memory>> blocks;
  bool ok = true;
  __half* halves(std::size_t n, float scale) {
    auto& m = blocks.emplace_back(std::make_unique<device_memory>(n * sizeof(__half)));
    if (!m->ptr) {
      ok = false;
      return nullptr;
    }
    fill_uniform<<<256, 256>>>(static_cast<__half*>(m->ptr), n, scale,
                               static_cast<std::uint32_t>(blocks.size()));
    return static_cast<__half*>(m->ptr);
  }
  float* floats(std::size_t n, float v) {
    auto& m = blocks.emplace_back(std::make_unique<device_memory>(n * sizeof(float)));
    if (!m->ptr) {
      ok = false;
      return nullptr;
    }
    fill_value<<<64, 256>>>(static_cast<float*>(m->ptr), n, v);
    return static_cast<float*>(m->ptr);
  }
  dc::device_linear_view<__half> linear(index_t in, index_t out) {
    return {halves(static_cast<std::size_t>(in) * out, 2.0f / static_cast<float>(in)),
            floats(static_cast<std::size_t>(out), 0.0f), in, out};
  }
  dc::device_norm_view norm(index_t d) {
    return {floats(static_cast<std::size_t>(d), 1.0f), floats(static_cast<std::size_t>(d), 0.0f)};
  }
};

struct cublas_state {
  cublasHandle_t handle = nullptr;
  device_memory workspace{std::size_t{32} << 20};
  cublas_state() {
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) handle = nullptr;
    if (handle && workspace.ptr) {
      (void)cublasSetWorkspace(handle, workspace.ptr, std::size_t{32} << 20);
    }
  }
  ~cublas_state() {
    if (handle) (void)cublasDestroy(handle);
  }
  cublas_state(const cublas_state&) = delete;
  cublas_state& operator=(const cublas_state&) = delete;
};

/// The GEMMs of one LLaMA-7B decoder layer over `rows` fp16 rows.
struct dense_layer {
  std::array<dc::device_linear_view<__half>, 7> w;
  __half* x = nullptr;
  __half* y = nullptr;
  __half* z = nullptr;
  explicit dense_layer(arena& a, std::size_t rows) {
    for (std::size_t i = 0; i < 4; ++i) w[i] = a.linear(hidden, hidden);  // q, k, v, o
    w[4] = a.linear(hidden, 11008);                                       // gate
    w[5] = a.linear(hidden, 11008);                                       // up
    w[6] = a.linear(11008, hidden);                                       // down
    x = a.halves(rows * hidden, 1.0f);
    y = a.halves(rows * 11008, 1.0f);
    z = a.halves(rows * hidden, 1.0f);
  }
  cudaError_t run(cublasHandle_t h, std::size_t rows) const {
    cudaError_t e = cudaSuccess;
    for (std::size_t i = 0; i < 4 && e == cudaSuccess; ++i) {
      e = dc::linear(h, static_cast<const __half*>(x), rows, w[i].weight, w[i].in, w[i].out,
                     static_cast<const float*>(nullptr), false, z, nullptr);
    }
    for (std::size_t i = 4; i < 6 && e == cudaSuccess; ++i) {
      e = dc::linear(h, static_cast<const __half*>(x), rows, w[i].weight, w[i].in, w[i].out,
                     static_cast<const float*>(nullptr), false, y, nullptr);
    }
    if (e == cudaSuccess) {
      e = dc::linear(h, static_cast<const __half*>(y), rows, w[6].weight, w[6].in, w[6].out,
                     static_cast<const float*>(nullptr), false, z, nullptr);
    }
    return e;
  }
};

/// A cuBLAS handle for the case, or null after reporting why (no device first, so that a run
/// without a GPU says "no CUDA device" for every case).
std::unique_ptr<cublas_state> start(benchmark::State& state) {
  if (!device_available()) {
    state.SkipWithError("no CUDA device");
    return nullptr;
  }
  auto cb = std::make_unique<cublas_state>();
  if (cb->handle == nullptr) {
    state.SkipWithError("cublasCreate failed");
    return nullptr;
  }
  return cb;
}

template <class Run>
void time_case(benchmark::State& state, arena& a, Run run) {
  if (!a.ok || cudaDeviceSynchronize() != cudaSuccess) {
    state.SkipWithError("allocation or initialisation failed");
    return;
  }
  cuda_timing timing;
  for (auto _ : state) {
    if (!timing.time(state, run)) return;
  }
  state.counters["batch"] = static_cast<double>(state.range(0));
}

/// dynllava::cuda::image_predictor_logits over `batch` images of 576 tokens.
void bm_dynllava_cuda_image_predictor(benchmark::State& state) {
  const auto cb = start(state);
  if (!cb) return;
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::size_t tokens = batch * image_tokens;
  arena a;
  dc::image_predictor_view<__half> w;
  w.hidden = hidden;
  w.d_model = 512;
  w.heads = 8;
  w.ffn = 2048;
  w.local_dim = 256;
  w.down_norm = a.norm(hidden);
  w.down = a.linear(hidden, 512);
  std::vector<dc::image_predictor_view<__half>::block> blocks(2);
  for (auto& b : blocks) {
    b = {a.norm(512), a.linear(512, 1536), a.linear(512, 512),
         a.norm(512), a.linear(512, 2048), a.linear(2048, 512)};
  }
  w.blocks = blocks.data();
  w.block_count = blocks.size();
  w.head = {a.linear(512, 256), a.linear(256, 128), a.linear(128, 2)};
  __half* x = a.halves(tokens * hidden, 1.0f);
  float* logits = a.floats(2 * tokens, 0.0f);
  std::vector<index_t> host_indptr(batch + 1);
  for (std::size_t b = 0; b <= batch; ++b) host_indptr[b] = static_cast<index_t>(b * image_tokens);
  device_memory indptr(host_indptr.size() * sizeof(index_t));
  if (!indptr.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  (void)cudaMemcpy(indptr.ptr, host_indptr.data(), host_indptr.size() * sizeof(index_t),
                   cudaMemcpyHostToDevice);
  const dynllava::host_span<const index_t> hi(host_indptr.data(), host_indptr.size());
  const dynllava::device_span<const index_t> di(static_cast<const index_t*>(indptr.ptr),
                                                host_indptr.size());
  const dynllava::device_span<const __half> xs(x, tokens * hidden);
  const dynllava::device_span<float> ls(logits, 2 * tokens);
  std::size_t bytes = 0;
  (void)dc::image_predictor_logits(nullptr, bytes, cb->handle, w, hi, di, xs, ls, nullptr);
  device_memory temp(bytes);
  if (!temp.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  time_case(state, a, [&] {
    return dc::image_predictor_logits(temp.ptr, bytes, cb->handle, w, hi, di, xs, ls, nullptr);
  });
}

/// dynllava::cuda::output_predictor_logits over one new token per sequence.
void bm_dynllava_cuda_output_predictor(benchmark::State& state) {
  const auto cb = start(state);
  if (!cb) return;
  const auto batch = static_cast<std::size_t>(state.range(0));
  arena a;
  dc::output_predictor_view<__half> w;
  w.dims = {hidden, 512, 256, 128, 2};
  const auto norm = a.norm(hidden);
  w.norm_gamma = norm.gamma;
  w.norm_beta = norm.beta;
  for (std::size_t i = 0; i < 4; ++i) {
    const auto l = a.linear(w.dims[i], w.dims[i + 1]);
    w.weight[i] = l.weight;
    w.bias[i] = l.bias;
  }
  __half* x = a.halves(batch * hidden, 1.0f);
  float* logits = a.floats(2 * batch, 0.0f);
  const dynllava::device_span<const __half> xs(x, batch * hidden);
  const dynllava::device_span<float> ls(logits, 2 * batch);
  std::size_t bytes = 0;
  (void)dc::output_predictor_logits(nullptr, bytes, cb->handle, w, xs, ls, nullptr);
  device_memory temp(bytes);
  if (!temp.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  time_case(state, a, [&] {
    return dc::output_predictor_logits(temp.ptr, bytes, cb->handle, w, xs, ls, nullptr);
  });
}

/// Dense equivalent of the image predictor: one decoder layer's GEMMs over the image tokens.
void bm_dense_layer_prefill(benchmark::State& state) {
  const auto cb = start(state);
  if (!cb) return;
  const auto rows = static_cast<std::size_t>(state.range(0)) * image_tokens;
  arena a;
  const dense_layer layer(a, rows);
  time_case(state, a, [&] { return layer.run(cb->handle, rows); });
}

/// Dense equivalent of the output predictor: one decoder layer's GEMMs over the step's rows.
void bm_dense_layer_decode(benchmark::State& state) {
  const auto cb = start(state);
  if (!cb) return;
  const auto rows = static_cast<std::size_t>(state.range(0));
  arena a;
  const dense_layer layer(a, rows);
  time_case(state, a, [&] { return layer.run(cb->handle, rows); });
}

}  // namespace

BENCHMARK(bm_dynllava_cuda_image_predictor)->Arg(1)->Arg(8)->Arg(64)->UseManualTime();
BENCHMARK(bm_dense_layer_prefill)->Arg(1)->Arg(8)->Arg(64)->UseManualTime();
BENCHMARK(bm_dynllava_cuda_output_predictor)->Arg(1)->Arg(8)->Arg(64)->Arg(256)->UseManualTime();
BENCHMARK(bm_dense_layer_decode)->Arg(1)->Arg(8)->Arg(64)->Arg(256)->UseManualTime();

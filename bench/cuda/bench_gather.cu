// SPDX-License-Identifier: Apache-2.0
/// @file bench_gather.cu
/// @brief CUDA row gather (building the pruned context) against a contiguous device-to-device
/// copy of the same bytes (the bandwidth bound), measured in the same run.
///
/// Shapes: LLaVA-1.5 prefill at the sparse layer, `batch` sequences of 35 system + 576 image +
/// 40 text rows, hidden 4096 (7B) or 5120 (13B), fp16; the kept context is 35 + 115 + 40 rows.
/// Timed with CUDA events, L2 flushed before every iteration. Without a device every case
/// reports "no CUDA device" and nothing is timed.
#include <dynllava/context/cuda/device_gather.cuh>

#include <benchmark/benchmark.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

namespace {

using dynllava::index_t;

bool device_available() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  (void)cudaGetLastError();
  return ok;
}

/// Owns a device allocation for the benchmark's lifetime; reports failure instead of throwing.
struct device_memory {
  void* ptr = nullptr;
  explicit device_memory(std::size_t bytes) {
    if (cudaMalloc(&ptr, std::max<std::size_t>(bytes, 1)) != cudaSuccess) ptr = nullptr;
  }
  ~device_memory() { (void)cudaFree(ptr); }
  device_memory(const device_memory&) = delete;
  device_memory& operator=(const device_memory&) = delete;
};

/// CUDA-event timer plus an L2 flush, after RAFT's benchmark fixture.
class cuda_timing {
 public:
  cuda_timing() {
    int l2 = 0;
    (void)cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
    flush_bytes_ = static_cast<std::size_t>(std::max(l2, 1 << 20)) * 2;
    (void)cudaMalloc(&flush_, flush_bytes_);
    (void)cudaEventCreate(&start_);
    (void)cudaEventCreate(&stop_);
  }
  ~cuda_timing() {
    (void)cudaFree(flush_);
    (void)cudaEventDestroy(start_);
    (void)cudaEventDestroy(stop_);
  }
  cuda_timing(const cuda_timing&) = delete;
  cuda_timing& operator=(const cuda_timing&) = delete;

  /// Times `work` (which enqueues on the default stream) once; returns false on a CUDA error.
  template <class Work>
  bool time(benchmark::State& state, Work&& work) {
    (void)cudaMemsetAsync(flush_, state.iterations() & 0xff, flush_bytes_);
    (void)cudaEventRecord(start_);
    const cudaError_t launched = work();
    (void)cudaEventRecord(stop_);
    const cudaError_t synced = cudaEventSynchronize(stop_);
    if (launched != cudaSuccess || synced != cudaSuccess) {
      state.SkipWithError(cudaGetErrorString(launched != cudaSuccess ? launched : synced));
      (void)cudaGetLastError();
      return false;
    }
    float ms = 0.0f;
    (void)cudaEventElapsedTime(&ms, start_, stop_);
    state.SetIterationTime(static_cast<double>(ms) * 1e-3);
    return true;
  }

 private:
  void* flush_ = nullptr;
  std::size_t flush_bytes_ = 0;
  cudaEvent_t start_{};
  cudaEvent_t stop_{};
};

struct llava_shape {
  index_t batch;
  index_t hidden;
  index_t rows_per_seq() const { return 35 + 576 + 40; }
  index_t kept_per_seq() const { return 35 + 115 + 40; }
};

/// Kept rows of a pruned LLaVA batch: all text rows and a random 115 of each 576 image rows.
std::vector<index_t> kept_rows(const llava_shape& s) {
  std::mt19937 g(1);
  std::vector<index_t> rows;
  for (index_t b = 0; b < s.batch; ++b) {
    const index_t base = b * s.rows_per_seq();
    for (index_t r = 0; r < 35; ++r) rows.push_back(base + r);
    std::vector<index_t> image(576);
    std::iota(image.begin(), image.end(), 35);
    std::shuffle(image.begin(), image.end(), g);
    image.resize(115);
    std::sort(image.begin(), image.end());
    for (index_t r : image) rows.push_back(base + r);
    for (index_t r = 35 + 576; r < s.rows_per_seq(); ++r) rows.push_back(base + r);
  }
  return rows;
}

void set_counters(benchmark::State& state, const llava_shape& s, std::size_t bytes_moved) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(bytes_moved));
  state.counters["batch"] = s.batch;
  state.counters["hidden"] = s.hidden;
}

/// dynllava::cuda::gather_rows: read kept rows, write the compact context (fp16).
void bm_dynllava_cuda_gather(benchmark::State& state) {
  if (!device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const llava_shape s{static_cast<index_t>(state.range(0)), static_cast<index_t>(state.range(1))};
  const auto rows = kept_rows(s);
  const std::size_t src_elems = static_cast<std::size_t>(s.batch * s.rows_per_seq()) * s.hidden;
  const std::size_t dst_elems = rows.size() * static_cast<std::size_t>(s.hidden);
  device_memory src(src_elems * sizeof(__half)), dst(dst_elems * sizeof(__half)),
      d_rows(rows.size() * sizeof(index_t));
  if (!src.ptr || !dst.ptr || !d_rows.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  (void)cudaMemcpy(d_rows.ptr, rows.data(), rows.size() * sizeof(index_t), cudaMemcpyHostToDevice);
  cuda_timing timing;
  const dynllava::device_span<const __half> src_view(static_cast<const __half*>(src.ptr),
                                                     src_elems);
  const dynllava::device_span<const index_t> rows_view(static_cast<const index_t*>(d_rows.ptr),
                                                       rows.size());
  const dynllava::device_span<__half> dst_view(static_cast<__half*>(dst.ptr), dst_elems);
  for (auto _ : state) {
    if (!timing.time(state, [&] {
          return dynllava::cuda::gather_rows(src_view, s.hidden, rows_view, dst_view, nullptr,
                                             nullptr);
        })) {
      return;
    }
  }
  set_counters(state, s, 2 * dst_elems * sizeof(__half));
}

/// Baseline: one contiguous device-to-device copy of the same number of bytes.
void bm_baseline_memcpy(benchmark::State& state) {
  if (!device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const llava_shape s{static_cast<index_t>(state.range(0)), static_cast<index_t>(state.range(1))};
  const std::size_t bytes = static_cast<std::size_t>(s.batch * s.kept_per_seq()) *
                            static_cast<std::size_t>(s.hidden) * sizeof(__half);
  device_memory src(bytes), dst(bytes);
  if (!src.ptr || !dst.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  cuda_timing timing;
  for (auto _ : state) {
    if (!timing.time(state, [&] {
          return cudaMemcpyAsync(dst.ptr, src.ptr, bytes, cudaMemcpyDeviceToDevice, nullptr);
        })) {
      return;
    }
  }
  set_counters(state, s, 2 * bytes);
}

}  // namespace

BENCHMARK(bm_dynllava_cuda_gather)->ArgsProduct({{1, 8, 32}, {4096, 5120}})->UseManualTime();
BENCHMARK(bm_baseline_memcpy)->ArgsProduct({{1, 8, 32}, {4096, 5120}})->UseManualTime();

BENCHMARK_MAIN();

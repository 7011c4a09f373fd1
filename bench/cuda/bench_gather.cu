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

#include "bench_support.cuh"

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
using dynllava::bench::cuda_timing;
using dynllava::bench::device_available;
using dynllava::bench::device_memory;

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
  if (dynllava::bench::time_device_copy(state, bytes)) set_counters(state, s, 2 * bytes);
}

}  // namespace

BENCHMARK(bm_dynllava_cuda_gather)->ArgsProduct({{1, 8, 32}, {4096, 5120}})->UseManualTime();
BENCHMARK(bm_baseline_memcpy)->ArgsProduct({{1, 8, 32}, {4096, 5120}})->UseManualTime();

BENCHMARK_MAIN();

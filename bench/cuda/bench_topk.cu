// SPDX-License-Identifier: Apache-2.0
/// @file bench_topk.cu
/// @brief Batched budgeted top-k on CUDA against, in the same run: an empty kernel launch (the
/// latency floor), a device-to-device copy of the scores (the bandwidth floor), a top-k built on
/// CUB's segmented radix sort (sort each row by score key, keep the first k, sort the kept
/// positions), and a Thrust stable sort of the whole batch by (sequence, score).
///
/// Shapes: B in {1, 8, 64, 256}, n in {576, 2048, 4096, 32768, 2^20, 2^24} with B * n <= 2^30
/// (256 x 2^24 = 2^32 scores exceeds the `index_t` token total and is not measured),
/// k = floor(0.2 n) (arg 0) or k = 115 (arg 1), fp32 (arg 0) or fp16 (arg 1) scores. Scores are
/// uniform in [-3, 3), generated on the device. Timed with CUDA events, L2 flushed before every
/// iteration; items per second count the scores read. Without a device every case reports
/// "no CUDA device" and nothing is timed. The PyTorch peer (`torch.topk` + sort) is
/// bench/torch/peers.py.
#include <dynllava/core/ranking_key.hpp>
#include <dynllava/select/cuda/device_topk.cuh>

#include "bench_support.cuh"

#include <benchmark/benchmark.h>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <thrust/execution_policy.h>
#include <thrust/sort.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using dynllava::index_t;
using dynllava::bench::cuda_timing;
using dynllava::bench::device_available;
using dynllava::bench::device_memory;

/// Largest batch x n measured: the token total must fit `index_t` (2^31 - 1), so 256 x 2^24 is
/// out of the API's range and not registered; 64 x 2^24 = 2^30 is the largest shape.
constexpr long long max_items = 1LL << 30;

struct topk_shape {
  index_t batch;
  index_t n;
  bool k115;
  bool half;
  index_t k() const { return k115 ? 115 : static_cast<index_t>(static_cast<long long>(n) / 5); }
  std::size_t items() const { return static_cast<std::size_t>(batch) * n; }
  std::size_t score_bytes() const { return items() * (half ? 2 : 4); }
};

topk_shape shape_of(const benchmark::State& state) {
  return {static_cast<index_t>(state.range(0)), static_cast<index_t>(state.range(1)),
          state.range(2) != 0, state.range(3) != 0};
}

void set_counters(benchmark::State& state, const topk_shape& s) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(s.items()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(s.score_bytes()));
  state.counters["batch"] = s.batch;
  state.counters["n"] = s.n;
  state.counters["k"] = s.k();
}

__device__ inline std::uint32_t mix_bits(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<std::uint32_t>(x);
}

template <class T>
__global__ void fill_scores(T* out, std::size_t count) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float u = static_cast<float>(mix_bits(i) >> 8) * (1.0f / 16777216.0f);
    out[i] = static_cast<T>(6.0f * u - 3.0f);
  }
}

__global__ void fill_uniform_indptr(index_t* indptr, index_t batch, index_t step) {
  for (index_t b = blockIdx.x * blockDim.x + threadIdx.x; b <= batch; b += gridDim.x * blockDim.x) {
    indptr[b] = b * step;
  }
}

__global__ void empty_kernel() {}

/// Device-resident inputs and outputs of one shape.
struct topk_inputs {
  device_memory scores;
  device_memory indptr;
  device_memory out_indptr;
  device_memory positions;
  explicit topk_inputs(const topk_shape& s)
      : scores(s.score_bytes()),
        indptr((static_cast<std::size_t>(s.batch) + 1) * sizeof(index_t)),
        out_indptr((static_cast<std::size_t>(s.batch) + 1) * sizeof(index_t)),
        positions(s.items() * sizeof(index_t)) {
    if (!ok()) return;
    if (s.half) {
      fill_scores<<<1024, 256>>>(static_cast<__half*>(scores.ptr), s.items());
    } else {
      fill_scores<<<1024, 256>>>(static_cast<float*>(scores.ptr), s.items());
    }
    fill_uniform_indptr<<<64, 256>>>(static_cast<index_t*>(indptr.ptr), s.batch, s.n);
    if (cudaDeviceSynchronize() != cudaSuccess) scores.ptr = nullptr;  // reported by ok()
  }
  bool ok() const { return scores.ptr && indptr.ptr && out_indptr.ptr && positions.ptr; }
};

bool skip_unless_ready(benchmark::State& state, const topk_shape& s) {
  if (!device_available()) {
    state.SkipWithError("no CUDA device");
    return false;
  }
  if (static_cast<long long>(s.batch) * s.n > max_items) {
    state.SkipWithError("shape above 2^30 scores (beyond index_t)");
    return false;
  }
  return true;
}

template <class T>
cudaError_t run_dynllava(const topk_inputs& in, const topk_shape& s, void* temp,
                         std::size_t& bytes) {
  const dynllava::device_ragged<const T> scores{
      dynllava::device_span<const index_t>(static_cast<const index_t*>(in.indptr.ptr),
                                           static_cast<std::size_t>(s.batch) + 1),
      dynllava::device_span<const T>(static_cast<const T*>(in.scores.ptr), s.items())};
  return dynllava::cuda::topk(
      temp, bytes, scores, s.n, dynllava::topk_budget<dynllava::device_space>::keep_count(s.k()),
      dynllava::device_span<index_t>(static_cast<index_t*>(in.out_indptr.ptr),
                                     static_cast<std::size_t>(s.batch) + 1),
      dynllava::device_span<index_t>(static_cast<index_t*>(in.positions.ptr), s.items()), {},
      nullptr, nullptr);
}

/// dynllava::cuda::topk (device-level, workspace allocated once outside the timed region).
void bm_dynllava_cuda_topk(benchmark::State& state) {
  const topk_shape s = shape_of(state);
  if (!skip_unless_ready(state, s)) return;
  topk_inputs in(s);
  if (!in.ok()) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  std::size_t bytes = 0;
  const auto run = [&](void* temp) {
    return s.half ? run_dynllava<__half>(in, s, temp, bytes)
                  : run_dynllava<float>(in, s, temp, bytes);
  };
  (void)run(nullptr);
  device_memory temp(bytes);
  if (!temp.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  cuda_timing timing;
  for (auto _ : state) {
    if (!timing.time(state, [&] { return run(temp.ptr); })) return;
  }
  set_counters(state, s);
}

/// Latency floor: one empty kernel launch.
void bm_baseline_empty_launch(benchmark::State& state) {
  if (!device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  cuda_timing timing;
  for (auto _ : state) {
    if (!timing.time(state, [] {
          empty_kernel<<<1, 32>>>();
          return cudaPeekAtLastError();
        })) {
      return;
    }
  }
}

/// Bandwidth floor: a device-to-device copy of the scores (k does not matter; registered for
/// both so that every top-k row has its floor in the report).
void bm_baseline_copy_scores(benchmark::State& state) {
  const topk_shape s = shape_of(state);
  if (!skip_unless_ready(state, s)) return;
  if (dynllava::bench::time_device_copy(state, s.score_bytes())) set_counters(state, s);
}

template <class T>
__global__ void score_keys_and_positions(const T* scores, std::size_t count, index_t n,
                                         std::uint32_t* keys, index_t* positions) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    keys[i] = dynllava::score_key(dynllava::cuda::detail::widen(scores[i]));
    positions[i] = static_cast<index_t>(i % static_cast<std::size_t>(n));
  }
}

__global__ void take_first_k(const index_t* sorted, index_t batch, index_t n, index_t k,
                             index_t* kept) {
  const std::size_t total = static_cast<std::size_t>(batch) * k;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / static_cast<std::size_t>(k);
    kept[i] = sorted[b * n + i % static_cast<std::size_t>(k)];
  }
}

/// Peer: top-k on CUB's segmented radix sort. A stable descending sort of each row's score keys
/// (ties keep the smaller position first, as dynllava's rule), the first k positions of each
/// row, then an ascending segmented sort of those positions.
void bm_cub_segmented_sort_topk(benchmark::State& state) {
  const topk_shape s = shape_of(state);
  if (!skip_unless_ready(state, s)) return;
  topk_inputs in(s);
  const std::size_t items = s.items();
  const std::size_t kept_items = static_cast<std::size_t>(s.batch) * s.k();
  device_memory keys(items * 4), keys_sorted(items * 4), pos(items * 4), pos_sorted(items * 4),
      kept(kept_items * 4), kept_sorted(kept_items * 4),
      kept_indptr((static_cast<std::size_t>(s.batch) + 1) * sizeof(index_t));
  if (!in.ok() || !keys.ptr || !keys_sorted.ptr || !pos.ptr || !pos_sorted.ptr || !kept.ptr ||
      !kept_sorted.ptr || !kept_indptr.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  fill_uniform_indptr<<<64, 256>>>(static_cast<index_t*>(kept_indptr.ptr), s.batch, s.k());
  const auto* offsets = static_cast<const index_t*>(in.indptr.ptr);
  const auto* kept_offsets = static_cast<const index_t*>(kept_indptr.ptr);
  std::size_t sort_bytes = 0;
  std::size_t kept_bytes = 0;
  (void)cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, sort_bytes, static_cast<const std::uint32_t*>(keys.ptr),
      static_cast<std::uint32_t*>(keys_sorted.ptr), static_cast<const index_t*>(pos.ptr),
      static_cast<index_t*>(pos_sorted.ptr), static_cast<int>(items), s.batch, offsets,
      offsets + 1);
  (void)cub::DeviceSegmentedRadixSort::SortKeys(
      nullptr, kept_bytes, static_cast<const index_t*>(kept.ptr),
      static_cast<index_t*>(kept_sorted.ptr), static_cast<int>(kept_items), s.batch, kept_offsets,
      kept_offsets + 1);
  device_memory temp(std::max(sort_bytes, kept_bytes));
  if (!temp.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  const std::size_t temp_bytes = std::max(sort_bytes, kept_bytes);
  cuda_timing timing;
  for (auto _ : state) {
    if (!timing.time(state, [&] {
          if (s.half) {
            score_keys_and_positions<<<1024, 256>>>(
                static_cast<const __half*>(in.scores.ptr), items, s.n,
                static_cast<std::uint32_t*>(keys.ptr), static_cast<index_t*>(pos.ptr));
          } else {
            score_keys_and_positions<<<1024, 256>>>(static_cast<const float*>(in.scores.ptr), items,
                                                    s.n, static_cast<std::uint32_t*>(keys.ptr),
                                                    static_cast<index_t*>(pos.ptr));
          }
          std::size_t b1 = temp_bytes;
          cudaError_t e = cub::DeviceSegmentedRadixSort::SortPairsDescending(
              temp.ptr, b1, static_cast<const std::uint32_t*>(keys.ptr),
              static_cast<std::uint32_t*>(keys_sorted.ptr), static_cast<const index_t*>(pos.ptr),
              static_cast<index_t*>(pos_sorted.ptr), static_cast<int>(items), s.batch, offsets,
              offsets + 1);
          if (e != cudaSuccess) return e;
          take_first_k<<<1024, 256>>>(static_cast<const index_t*>(pos_sorted.ptr), s.batch, s.n,
                                      s.k(), static_cast<index_t*>(kept.ptr));
          std::size_t b2 = temp_bytes;
          return cub::DeviceSegmentedRadixSort::SortKeys(
              temp.ptr, b2, static_cast<const index_t*>(kept.ptr),
              static_cast<index_t*>(kept_sorted.ptr), static_cast<int>(kept_items), s.batch,
              kept_offsets, kept_offsets + 1);
        })) {
      return;
    }
  }
  set_counters(state, s);
}

template <class T>
__global__ void segment_score_keys(const T* scores, std::size_t count, index_t n,
                                   std::uint64_t* keys, index_t* positions) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t segment = i / static_cast<std::size_t>(n);
    // ascending = best first
    keys[i] = (segment << 32) | ~dynllava::score_key(dynllava::cuda::detail::widen(scores[i]));
    positions[i] = static_cast<index_t>(i % static_cast<std::size_t>(n));
  }
}

/// Peer: a Thrust stable sort of the whole batch by (sequence, score descending), fp32 or fp16 (the
/// sort alone: every row ranked, nothing compacted; registered for both k, which it ignores).
/// Thrust allocates its own temporaries.
void bm_thrust_sort(benchmark::State& state) {
  const topk_shape s = shape_of(state);
  if (!skip_unless_ready(state, s)) return;
  topk_inputs in(s);
  device_memory keys(s.items() * 8), pos(s.items() * 4);
  if (!in.ok() || !keys.ptr || !pos.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  auto* k = static_cast<std::uint64_t*>(keys.ptr);
  auto* p = static_cast<index_t*>(pos.ptr);
  cuda_timing timing;
  for (auto _ : state) {
    if (!timing.time(state, [&] {
          if (s.half) {
            segment_score_keys<<<1024, 256>>>(static_cast<const __half*>(in.scores.ptr), s.items(),
                                              s.n, k, p);
          } else {
            segment_score_keys<<<1024, 256>>>(static_cast<const float*>(in.scores.ptr), s.items(),
                                              s.n, k, p);
          }
          thrust::stable_sort_by_key(thrust::device, k, k + s.items(), p);
          return cudaPeekAtLastError();
        })) {
      return;
    }
  }
  set_counters(state, s);
}

void topk_shapes(benchmark::internal::Benchmark* b, bool both_k, bool both_types) {
  for (long long n : {576LL, 2048LL, 4096LL, 32768LL, 1LL << 20, 1LL << 24}) {
    for (long long batch : {1LL, 8LL, 64LL, 256LL}) {
      if (batch * n > max_items) continue;
      for (long long k115 : {0LL, 1LL}) {
        if (k115 == 1 && !both_k) continue;
        for (long long half : {0LL, 1LL}) {
          if (half == 1 && !both_types) continue;
          b->Args({batch, n, k115, half});
        }
      }
    }
  }
}

}  // namespace

BENCHMARK(bm_baseline_empty_launch)->UseManualTime();
BENCHMARK(bm_dynllava_cuda_topk)
    ->Apply([](benchmark::internal::Benchmark* b) { topk_shapes(b, true, true); })
    ->UseManualTime();
BENCHMARK(bm_baseline_copy_scores)
    ->Apply([](benchmark::internal::Benchmark* b) { topk_shapes(b, true, true); })
    ->UseManualTime();
BENCHMARK(bm_cub_segmented_sort_topk)
    ->Apply([](benchmark::internal::Benchmark* b) { topk_shapes(b, true, true); })
    ->UseManualTime();
BENCHMARK(bm_thrust_sort)
    ->Apply([](benchmark::internal::Benchmark* b) { topk_shapes(b, true, true); })
    ->UseManualTime();

// SPDX-License-Identifier: Apache-2.0
/// @file bench_support.cuh
/// @brief What every CUDA benchmark shares: a device check, an owning allocation that reports
/// failure instead of throwing, and CUDA-event timing with an L2 flush (after RAFT's fixture).
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace dynllava::bench {

inline bool device_available() {
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
  /// `work` returns the status of what it enqueued.
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

/// @brief Times a device-to-device copy of `bytes` (the bandwidth floor of a case) in every
/// iteration; returns false after reporting an allocation or CUDA failure.
inline bool time_device_copy(benchmark::State& state, std::size_t bytes) {
  device_memory src(bytes), dst(bytes);
  if (!src.ptr || !dst.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return false;
  }
  cuda_timing timing;
  for (auto _ : state) {
    if (!timing.time(state, [&] {
          return cudaMemcpyAsync(dst.ptr, src.ptr, bytes, cudaMemcpyDeviceToDevice, nullptr);
        })) {
      return false;
    }
  }
  return true;
}

}  // namespace dynllava::bench

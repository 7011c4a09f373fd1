// SPDX-License-Identifier: Apache-2.0
/// @file bench_kv_cache.cu
/// @brief The CUDA gated append of one decode step against its dense equivalent (every token
/// admitted, what a cache without Dynamic-LLaVA's gate does) and a plain copy of the step's new
/// K/V rows (the bandwidth floor), into a contiguous or a paged layer, measured in the same run.
///
/// Shapes: `batch` in {1, 8, 64, 256} sequences holding 1000 tokens, one new token each, width
/// 4096 (LLaVA-1.5-7B: 32 heads x 128) in fp16; the gate admits every second sequence's token.
/// The layer's lengths (and, paged, its page table and free stack) are reset before every
/// iteration, outside the timed region. Timed with CUDA events, L2 flushed before every
/// iteration. Without a device every case reports "no CUDA device".
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>

#include "bench_support.cuh"

#include <benchmark/benchmark.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

namespace {

using dynllava::index_t;
using dynllava::bench::cuda_timing;
using dynllava::bench::device_available;
using dynllava::bench::device_memory;
namespace dc = dynllava::cuda;

constexpr index_t held = 1000;
constexpr index_t width = 4096;
constexpr index_t page_size = 16;

template <class T>
T* as(const device_memory& m) {
  return static_cast<T*>(m.ptr);
}

/// One decode step's append, gated (every second token kept) or dense; contiguous or paged.
void append_case(benchmark::State& state, bool gated) {
  if (!device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const auto batch = static_cast<std::size_t>(state.range(0));
  const bool paged = state.range(1) != 0;
  const index_t capacity = held + 16;
  const index_t max_pages = dynllava::detail::pages_for(capacity, page_size);
  const auto num_pages = static_cast<index_t>(batch) * max_pages;
  const std::size_t rows = paged ? static_cast<std::size_t>(num_pages) * page_size
                                 : batch * static_cast<std::size_t>(capacity);
  device_memory k(rows * width * sizeof(__half)), v(rows * width * sizeof(__half)),
      positions(rows * sizeof(index_t)), lengths(batch * sizeof(index_t)),
      appended(batch * sizeof(index_t)), table(batch * max_pages * sizeof(index_t)),
      stack_pages(num_pages * sizeof(index_t)), stack_count(sizeof(index_t)),
      new_k(batch * width * sizeof(__half)), new_v(batch * width * sizeof(__half)),
      indptr((batch + 1) * sizeof(index_t)), keep(batch), new_positions(batch * sizeof(index_t)),
      invalid(sizeof(int));
  if (!k.ptr || !v.ptr || !positions.ptr || !lengths.ptr || !appended.ptr || !table.ptr ||
      !stack_pages.ptr || !stack_count.ptr || !new_k.ptr || !new_v.ptr || !indptr.ptr ||
      !keep.ptr || !new_positions.ptr || !invalid.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  std::vector<index_t> host_indptr(batch + 1);
  std::iota(host_indptr.begin(), host_indptr.end(), 0);
  std::vector<std::uint8_t> host_keep(batch);
  for (std::size_t b = 0; b < batch; ++b) host_keep[b] = static_cast<std::uint8_t>(b % 2);
  (void)cudaMemcpy(indptr.ptr, host_indptr.data(), host_indptr.size() * sizeof(index_t),
                   cudaMemcpyHostToDevice);
  (void)cudaMemcpy(keep.ptr, host_keep.data(), batch, cudaMemcpyHostToDevice);
  (void)cudaMemcpy(new_positions.ptr, host_indptr.data(), batch * sizeof(index_t),
                   cudaMemcpyHostToDevice);
  // the state before the step: every sequence holds `held` tokens (paged: pages taken in order)
  std::vector<index_t> host_lengths(batch, held);
  std::vector<index_t> host_table(batch * max_pages, -1);
  const index_t used = dynllava::detail::pages_for(held, page_size);
  for (std::size_t b = 0; b < batch; ++b) {
    for (index_t j = 0; j < used; ++j) {
      host_table[b * max_pages + j] = static_cast<index_t>(b) * used + j;
    }
  }
  std::vector<index_t> host_stack;
  for (index_t p = num_pages; p-- > static_cast<index_t>(batch) * used;) host_stack.push_back(p);
  const auto free_count = static_cast<index_t>(host_stack.size());
  const auto reset = [&] {
    (void)cudaMemcpyAsync(lengths.ptr, host_lengths.data(), batch * sizeof(index_t),
                          cudaMemcpyHostToDevice, nullptr);
    if (paged) {
      (void)cudaMemcpyAsync(table.ptr, host_table.data(), host_table.size() * sizeof(index_t),
                            cudaMemcpyHostToDevice, nullptr);
      (void)cudaMemcpyAsync(stack_pages.ptr, host_stack.data(), host_stack.size() * sizeof(index_t),
                            cudaMemcpyHostToDevice, nullptr);
      (void)cudaMemcpyAsync(stack_count.ptr, &free_count, sizeof(index_t), cudaMemcpyHostToDevice,
                            nullptr);
    }
  };
  const dynllava::device_span<const index_t> indptr_view(as<const index_t>(indptr), batch + 1);
  const dynllava::device_span<const __half> k_view(as<const __half>(new_k), batch * width);
  const dynllava::device_span<const __half> v_view(as<const __half>(new_v), batch * width);
  const dynllava::device_span<const std::uint8_t> keep_view =
      gated ? dynllava::device_span<const std::uint8_t>(as<const std::uint8_t>(keep), batch)
            : dynllava::device_span<const std::uint8_t>{};
  const dynllava::device_span<const index_t> positions_view(as<const index_t>(new_positions),
                                                            batch);
  const dc::contiguous_kv_layer<__half> contiguous{as<__half>(k),
                                                   as<__half>(v),
                                                   as<index_t>(positions),
                                                   as<index_t>(lengths),
                                                   as<index_t>(appended),
                                                   batch,
                                                   capacity,
                                                   width};
  const dc::paged_kv_layer<__half> paged_layer{as<__half>(k),
                                               as<__half>(v),
                                               as<index_t>(positions),
                                               as<index_t>(table),
                                               as<index_t>(lengths),
                                               as<index_t>(appended),
                                               batch,
                                               max_pages,
                                               page_size,
                                               width};
  const dc::device_page_stack stack{as<index_t>(stack_pages), as<index_t>(stack_count), num_pages};
  const auto run = [&](void* temp, std::size_t& bytes) {
    return paged ? dc::gated_append(temp, bytes, paged_layer, stack, indptr_view, k_view, v_view,
                                    keep_view, positions_view, as<int>(invalid), nullptr)
                 : dc::gated_append(temp, bytes, contiguous, indptr_view, k_view, v_view, keep_view,
                                    positions_view, as<int>(invalid), nullptr);
  };
  std::size_t bytes = 0;
  (void)run(nullptr, bytes);
  device_memory temp(bytes);
  if (!temp.ptr) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  cuda_timing timing;
  for (auto _ : state) {
    reset();
    if (!timing.time(state, [&] { return run(temp.ptr, bytes); })) return;
  }
  const std::size_t admitted = gated ? batch / 2 : batch;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(2 * 2 * admitted * width * sizeof(__half)));
  state.counters["batch"] = static_cast<double>(batch);
  state.counters["paged"] = paged ? 1 : 0;
}

/// dynllava::cuda::gated_append, the output gate admitting every second token.
void bm_dynllava_cuda_gated_append(benchmark::State& state) { append_case(state, true); }

/// Dense equivalent: the same call admitting every token (no gate).
void bm_dense_append(benchmark::State& state) { append_case(state, false); }

/// Bandwidth floor: one device-to-device copy of the step's new K and V rows.
void bm_baseline_copy_rows(benchmark::State& state) {
  if (!device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::size_t bytes = 2 * batch * width * sizeof(__half);
  if (!dynllava::bench::time_device_copy(state, bytes)) return;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(2 * bytes));
}

}  // namespace

BENCHMARK(bm_dynllava_cuda_gated_append)->ArgsProduct({{1, 8, 64, 256}, {0, 1}})->UseManualTime();
BENCHMARK(bm_dense_append)->ArgsProduct({{1, 8, 64, 256}, {0, 1}})->UseManualTime();
BENCHMARK(bm_baseline_copy_rows)->ArgsProduct({{1, 8, 64, 256}, {0, 1}})->UseManualTime();

// SPDX-License-Identifier: Apache-2.0
/// @file test_kv_storage.cu
/// @brief The CUDA caches as models of `kv_storage<C, cuda::on_stream>`: their layer-level
/// `append` and `retain` (fp32 and bf16 rows, contiguous and paged, two layers, gated and not,
/// ragged steps with empty sequences, random evictions) leave every layer equal to the host
/// caches' same calls; a sequence without room raises `invalid_flag()` and changes nothing;
/// host-known shapes throw; and a step of appends captured in a CUDA graph replays like the
/// host calls.
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/cuda/device_kv_caches.cuh>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/kv_steps.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>

#include <support/cuda_readback.cuh>
#include <support/random.hpp>

#include <cuda_bf16.h>
#include <doctest/doctest.h>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

using namespace dynllava;
namespace dc = dynllava::cuda;  // `cuda` alone is ambiguous with CCCL's ::cuda
using dc::device_buffer;

namespace {

constexpr index_t width = 5;
constexpr index_t layers = 2;
constexpr std::size_t batch = 6;
constexpr index_t page_size = 3;
constexpr index_t capacity = 96;  // tokens per (layer, sequence)
constexpr index_t num_pages = layers * static_cast<index_t>(batch) * (capacity / page_size);

/// A host cache and the CUDA cache of the same shape, element `T`.
template <class T, bool Paged>
struct cache_pair {
  using host_cache = std::conditional_t<Paged, paged_kv_cache, contiguous_kv_cache>;
  using device_cache =
      std::conditional_t<Paged, dc::device_paged_kv_cache<T>, dc::device_contiguous_kv_cache<T>>;

  static host_cache make_host() {
    if constexpr (Paged) {
      return host_cache(paged_kv_config{layers, batch, width, page_size, num_pages});
    } else {
      return host_cache(contiguous_kv_config{layers, batch, width, capacity});
    }
  }
  static device_cache make_device() {
    if constexpr (Paged) {
      return device_cache(dc::device_paged_kv_config{layers, batch, width, page_size, num_pages,
                                                     capacity / page_size});
    } else {
      return device_cache(dc::device_contiguous_kv_config{layers, batch, width, capacity});
    }
  }
};

template <class T>
std::vector<T> to_device_values(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i]);
  return out;
}

template <class T>
float to_float(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(x);
  } else {
    return x;
  }
}

/// Every layer of `device` equals the same layer of `host`, token by token.
template <class Pair>
void check_layers(const typename Pair::host_cache& host,
                  const typename Pair::device_cache& device) {
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  for (index_t l = 0; l < layers; ++l) {
    CAPTURE(l);
    const auto lengths = test::copy_to_host(device.lengths(l).data(), batch);
    const auto appended = test::copy_to_host(device.appended_counts(l).data(), batch);
    const auto layer = device.layer(l);
    std::size_t rows = 0;
    std::vector<index_t> table;
    if constexpr (requires { layer.page_table; }) {
      rows = static_cast<std::size_t>(num_pages * page_size);
      table =
          test::copy_to_host(layer.page_table, batch * static_cast<std::size_t>(layer.max_pages));
    } else {
      rows = batch * static_cast<std::size_t>(capacity);
    }
    const auto w = static_cast<std::size_t>(width);
    const auto k = test::copy_to_host(layer.k, rows * w);
    const auto v = test::copy_to_host(layer.v, rows * w);
    const auto positions = test::copy_to_host(layer.positions, rows);
    for (std::size_t b = 0; b < batch; ++b) {
      CAPTURE(b);
      REQUIRE(lengths[b] == host.length(l, b));
      CHECK(appended[b] == host.appended(l, b));
      bool same = true;
      for (index_t i = 0; i < lengths[b]; ++i) {
        std::size_t r = 0;
        if constexpr (requires { layer.page_table; }) {
          r = detail::paged_row(table.data() + b * static_cast<std::size_t>(layer.max_pages), i,
                                page_size);
        } else {
          r = detail::contiguous_row(b, i, capacity);
        }
        same = same && positions[r] == host.position(l, b, i);
        for (std::size_t c = 0; c < w; ++c) {
          same = same && to_float(k[r * w + c]) == host.key(l, b, i)[c] &&
                 to_float(v[r * w + c]) == host.value(l, b, i)[c];
        }
      }
      CHECK(same);
    }
  }
}

/// One call's new tokens on the host and on the device (values exact in bf16: integers < 256).
template <class T>
struct step_tokens {
  std::vector<index_t> indptr, positions;
  std::vector<float> k, v;
  std::vector<std::uint8_t> keep;
  device_buffer<index_t> d_indptr, d_positions;
  device_buffer<T> d_k, d_v;
  device_buffer<std::uint8_t> d_keep;

  step_tokens(test::rng& g, index_t max_new, index_t& next) {
    indptr = test::indptr_of(test::random_lengths(g, batch, max_new));
    const auto n = static_cast<std::size_t>(indptr.back());
    for (std::size_t i = 0; i < n * width; ++i) {
      k.push_back(static_cast<float>(g() % 256));
      v.push_back(-static_cast<float>(g() % 256));
    }
    for (std::size_t i = 0; i < n; ++i) {
      keep.push_back(static_cast<std::uint8_t>(g() % 2));
      positions.push_back(next++);
    }
    d_indptr = device_buffer<index_t>(indptr);
    d_positions = device_buffer<index_t>(positions);
    d_k = device_buffer<T>(to_device_values<T>(k));
    d_v = device_buffer<T>(to_device_values<T>(v));
    d_keep = device_buffer<std::uint8_t>(keep);
  }

  template <class Host, class Device>
  void append_both(Host& host, Device& device, index_t l, bool gated, cudaStream_t stream) {
    host.append(dynllava::host, l, make_host_span(std::as_const(indptr)),
                make_host_span(std::as_const(k)), make_host_span(std::as_const(v)),
                gated ? make_host_span(std::as_const(keep)) : host_span<const std::uint8_t>{},
                make_host_span(std::as_const(positions)));
    append_device(device, l, gated, stream);
  }
  template <class Device>
  void append_device(Device& device, index_t l, bool gated, cudaStream_t stream) const {
    device.append(dc::on_stream{stream}, l, std::as_const(d_indptr).view(),
                  std::as_const(d_k).view(), std::as_const(d_v).view(),
                  gated ? std::as_const(d_keep).view() : device_span<const std::uint8_t>{},
                  std::as_const(d_positions).view());
  }
};

template <class T, bool Paged>
void run_random_steps(std::uint64_t seed) {
  using pair = cache_pair<T, Paged>;
  test::rng g(seed);
  auto host = pair::make_host();
  auto device = pair::make_device();
  static_assert(kv_storage<decltype(device), dc::on_stream>);
  index_t next = 0;
  for (int step = 0; step < 24; ++step) {
    CAPTURE(step);
    step_tokens<T> t(g, step % 6 == 0 ? 9 : 2, next);
    for (index_t l = 0; l < layers; ++l) t.append_both(host, device, l, l == 1, nullptr);
    if (step % 3 == 2) {
      for (index_t l = 0; l < layers; ++l) {
        std::vector<index_t> indptr{0}, kept;
        for (std::size_t b = 0; b < batch; ++b) {
          for (index_t i = 0; i < host.length(l, b); ++i) {
            if (g() % 3 != 0) kept.push_back(i);
          }
          indptr.push_back(static_cast<index_t>(kept.size()));
        }
        host.retain(dynllava::host, l,
                    host_ragged<const index_t>{make_host_span(std::as_const(indptr)),
                                               make_host_span(std::as_const(kept))});
        const device_buffer<index_t> d_indptr(indptr), d_kept(kept);
        device.retain(dc::on_stream{nullptr}, l,
                      ragged_span<const index_t, device_space>{d_indptr.view(), d_kept.view()});
        REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);  // before d_kept goes
      }
    }
    check_layers<pair>(host, device);
    CHECK(test::copy_to_host(device.invalid_flag(), 1)[0] == 0);
    if constexpr (Paged) {
      CHECK(test::copy_to_host(device.stack().count, 1)[0] == host.pool().free_pages());
    }
  }
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("kv storage: CUDA caches' layer-level append and retain equal the host caches'") {
    run_random_steps<float, false>(51);
    run_random_steps<float, true>(52);
    run_random_steps<__nv_bfloat16, false>(53);
    run_random_steps<__nv_bfloat16, true>(54);
  }

  TEST_CASE("kv storage: a CUDA cache without room raises its flag and changes nothing") {
    using pair = cache_pair<float, false>;
    test::rng g(55);
    auto host = pair::make_host();
    auto device = pair::make_device();
    index_t next = 0;
    step_tokens<float> t(g, 5, next);
    for (index_t l = 0; l < layers; ++l) t.append_both(host, device, l, false, nullptr);
    // the last sequence asked for one token more than its room
    const index_t room = capacity - host.length(0, batch - 1);
    std::vector<index_t> lengths(batch, 0);
    lengths[batch - 1] = room + 1;
    const auto indptr = test::indptr_of(lengths);
    const std::vector<float> rows(static_cast<std::size_t>(room + 1) * width, 7.0f);
    std::vector<index_t> positions(static_cast<std::size_t>(room + 1), 1000);
    const device_buffer<index_t> d_indptr(indptr), d_positions(positions);
    const device_buffer<float> d_rows(rows);
    device.append(dc::on_stream{nullptr}, 0, d_indptr.view(), d_rows.view(), d_rows.view(), {},
                  d_positions.view());
    check_layers<pair>(host, device);
    CHECK(test::copy_to_host(device.invalid_flag(), 1)[0] == 1);
    // shapes known on the host throw before anything is enqueued
    CHECK_THROWS_AS(device.append(dc::on_stream{nullptr}, 0, d_indptr.view(),
                                  device_span<const float>(d_rows.data(), 3), d_rows.view(), {},
                                  d_positions.view()),
                    dynllava::error);
    CHECK_THROWS_AS(device.append(dc::on_stream{nullptr}, layers, d_indptr.view(), d_rows.view(),
                                  d_rows.view(), {}, d_positions.view()),
                    dynllava::error);
    CHECK_THROWS_AS(device.retain(dc::on_stream{nullptr}, 0,
                                  ragged_span<const index_t, device_space>{
                                      device_span<const index_t>(d_indptr.data(), 2), {}}),
                    dynllava::error);
  }

  TEST_CASE("kv storage: a step of CUDA cache appends and evictions in a CUDA graph, replayed") {
    using pair = cache_pair<__nv_bfloat16, true>;
    test::rng g(56);
    auto host = pair::make_host();
    auto device = pair::make_device();
    index_t next = 0;
    step_tokens<__nv_bfloat16> t(g, 2, next);
    // StreamingLLM after every append: the cache's retain (its own workspace, no allocation) on
    // kept lists written on the stream
    constexpr index_t sinks = 1;
    constexpr index_t window = 2;
    const streaming_policy streaming{sinks, window};
    device_buffer<index_t> kept_indptr(batch + 1), kept(batch * (sinks + window));
    cudaStream_t stream{};
    REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    cudaGraph_t graph{};
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    for (index_t l = 0; l < layers; ++l) {
      t.append_device(device, l, l == 1, stream);
      REQUIRE(dc::streaming_kept(device.lengths(l), sinks, window, kept_indptr.view(), kept.view(),
                                 stream) == cudaSuccess);
      device.retain(dc::on_stream{stream}, l,
                    ragged_span<const index_t, device_space>{std::as_const(kept_indptr).view(),
                                                             std::as_const(kept).view()});
    }
    REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    cudaGraphExec_t instance{};
    REQUIRE(cudaGraphInstantiate(&instance, graph, 0) == cudaSuccess);
    for (int replay = 0; replay < 3; ++replay) {
      CAPTURE(replay);
      REQUIRE(cudaGraphLaunch(instance, stream) == cudaSuccess);
      REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
      for (index_t l = 0; l < layers; ++l) {
        host.append(
            dynllava::host, l, make_host_span(std::as_const(t.indptr)),
            make_host_span(std::as_const(t.k)), make_host_span(std::as_const(t.v)),
            l == 1 ? make_host_span(std::as_const(t.keep)) : host_span<const std::uint8_t>{},
            make_host_span(std::as_const(t.positions)));
        for (std::size_t b = 0; b < batch; ++b) (void)cpu::enforce_retention(host, streaming, l, b);
      }
      check_layers<pair>(host, device);
    }
    CHECK(test::copy_to_host(device.invalid_flag(), 1)[0] == 0);
    CHECK(cudaGraphExecDestroy(instance) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    CHECK(cudaStreamDestroy(stream) == cudaSuccess);
  }
}

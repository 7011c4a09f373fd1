// SPDX-License-Identifier: Apache-2.0
/// @file test_kv_cache.cu
/// @brief CUDA KV caches against the host caches: gated appends (gated and not, ragged new
/// tokens, empty sequences), compactions (random kept lists, StreamingLLM's), page ids reused
/// after eviction in the host pool's order, FlashInfer page tables, device-found overflow and
/// invalid kept lists; H2O's kept lists against `h2o_policy::retain`; and a decode step (argmax
/// gate, gated append, StreamingLLM eviction) captured in a CUDA graph and replayed.
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/selection.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/cuda/device_h2o.cuh>
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>
#include <dynllava/kvcache/cuda/device_kv_caches.cuh>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/kv_steps.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>
#include <dynllava/select/cuda/device_gate.cuh>
#include <dynllava/select/gate.hpp>

#include <support/cuda_readback.cuh>
#include <support/random.hpp>

#include <cuda_fp16.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

using namespace dynllava;
namespace dc = dynllava::cuda;  // `cuda` alone is ambiguous with CCCL's ::cuda
using dc::device_buffer;

namespace {

constexpr index_t width = 6;

/// New tokens of one step: ragged over the batch, random K/V, gate decisions, positions.
struct step_input {
  std::vector<index_t> indptr;
  std::vector<float> k, v;
  std::vector<std::uint8_t> keep;
  std::vector<index_t> positions;
};

step_input random_step(test::rng& g, std::size_t batch, index_t max_new, index_t& next_position) {
  step_input s;
  s.indptr = test::indptr_of(test::random_lengths(g, batch, max_new));
  const auto tokens = static_cast<std::size_t>(s.indptr.back());
  for (std::size_t i = 0; i < tokens * width; ++i) {
    s.k.push_back(static_cast<float>(g() % 1000));
    s.v.push_back(static_cast<float>(g() % 1000) + 0.5f);
  }
  for (std::size_t t = 0; t < tokens; ++t) {
    s.keep.push_back(static_cast<std::uint8_t>(g() % 2));
    s.positions.push_back(next_position++);
  }
  return s;
}

/// Random ascending kept lists (CSR) for the lengths given.
std::pair<std::vector<index_t>, std::vector<index_t>> random_kept(
    test::rng& g, const std::vector<index_t>& lengths) {
  std::vector<index_t> indptr{0};
  std::vector<index_t> kept;
  for (index_t n : lengths) {
    for (index_t i = 0; i < n; ++i) {
      if (g() % 3 != 0) kept.push_back(i);
    }
    indptr.push_back(static_cast<index_t>(kept.size()));
  }
  return {indptr, kept};
}

void host_append(auto& host, const step_input& s, bool gated) {
  const auto indptr = make_host_span(std::as_const(s.indptr));
  if (gated) {
    cpu::gated_append(host, online_gate_policy{0}, 0, indptr, make_host_span(std::as_const(s.k)),
                      make_host_span(std::as_const(s.v)), make_host_span(std::as_const(s.keep)),
                      make_host_span(std::as_const(s.positions)));
  } else {
    cpu::gated_append(host, full_cache_policy{}, 0, indptr, make_host_span(std::as_const(s.k)),
                      make_host_span(std::as_const(s.v)), make_host_span(std::as_const(s.keep)),
                      make_host_span(std::as_const(s.positions)));
  }
}

void host_retain(auto& host, const std::vector<index_t>& indptr, const std::vector<index_t>& kept) {
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    host.retain(0, b,
                host_span<const index_t>(kept.data() + indptr[b],
                                         static_cast<std::size_t>(indptr[b + 1] - indptr[b])));
  }
}

/// Runs one device-level call with a freshly sized workspace, synchronously (test convenience).
template <class Call>
void with_workspace(Call call) {
  std::size_t bytes = 0;
  REQUIRE(call(nullptr, bytes) == cudaSuccess);
  device_buffer<unsigned char> temp(bytes);
  REQUIRE(call(temp.data(), bytes) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("kv cache: CUDA contiguous gated append and compaction equal the host cache") {
    test::rng g(21);
    constexpr std::size_t batch = 7;
    constexpr index_t capacity = 400;
    contiguous_kv_cache host(contiguous_kv_config{1, batch, width, capacity});
    device_buffer<float> k(batch * capacity * width), v(batch * capacity * width);
    device_buffer<index_t> positions(batch * capacity);
    device_buffer<index_t> lengths(std::vector<index_t>(batch, 0)),
        appended(std::vector<index_t>(batch, 0));
    const dc::contiguous_kv_layer<float> layer{
        k.data(),        v.data(), positions.data(), lengths.data(),
        appended.data(), batch,    capacity,         width};
    device_buffer<int> invalid(std::vector<int>{0});
    index_t next_position = 0;
    for (int step = 0; step < 40; ++step) {
      CAPTURE(step);
      const bool gated = step % 2 == 0;
      const auto s = random_step(g, batch, step % 5 == 0 ? 30 : 3, next_position);
      host_append(host, s, gated);
      device_buffer<index_t> d_indptr(s.indptr), d_positions(s.positions);
      device_buffer<float> d_k(s.k), d_v(s.v);
      device_buffer<std::uint8_t> d_keep(s.keep);
      with_workspace([&](void* temp, std::size_t& bytes) {
        return dc::gated_append(
            temp, bytes, layer, std::as_const(d_indptr).view(), std::as_const(d_k).view(),
            std::as_const(d_v).view(),
            gated ? std::as_const(d_keep).view() : device_span<const std::uint8_t>{},
            std::as_const(d_positions).view(), invalid.data(), nullptr);
      });
      if (step % 4 == 3) {
        std::vector<index_t> held(batch);
        for (std::size_t b = 0; b < batch; ++b) held[b] = host.length(0, b);
        const auto [kept_indptr, kept] = random_kept(g, held);
        host_retain(host, kept_indptr, kept);
        device_buffer<index_t> d_kept_indptr(kept_indptr), d_kept(kept);
        with_workspace([&](void* temp, std::size_t& bytes) {
          return dc::retain(temp, bytes, layer, std::as_const(d_kept_indptr).view(),
                            std::as_const(d_kept).view(), invalid.data(), nullptr);
        });
      }
      const test::layer_readback got{lengths.to_host(), appended.to_host(), k.to_host(),
                                     v.to_host(), positions.to_host()};
      CHECK(invalid.to_host()[0] == 0);
      test::check_against_host(host, got, batch, width, [](std::size_t b, index_t i) {
        return detail::contiguous_row(b, i, capacity);
      });
    }
  }

  TEST_CASE("kv cache: CUDA paged append, StreamingLLM eviction, page reuse, page tables") {
    test::rng g(22);
    constexpr std::size_t batch = 5;
    constexpr index_t page_size = 4;
    constexpr index_t num_pages = 120;
    constexpr index_t max_pages = 40;
    paged_kv_cache host(paged_kv_config{1, batch, width, page_size, num_pages});
    const dc::device_paged_kv_cache<float> device(
        dc::device_paged_kv_config{1, batch, width, page_size, num_pages, max_pages});
    const dc::paged_kv_layer<float> layer = device.layer(0);
    const dc::device_page_stack stack = device.stack();
    const device_span<const index_t> lengths(layer.lengths, batch);
    device_buffer<int> invalid(std::vector<int>{0});
    const streaming_policy streaming{2, 9};
    index_t next_position = 0;
    for (int step = 0; step < 50; ++step) {
      CAPTURE(step);
      const bool gated = step % 3 != 0;
      const auto s = random_step(g, batch, 6, next_position);
      host_append(host, s, gated);
      device_buffer<index_t> d_indptr(s.indptr), d_positions(s.positions);
      device_buffer<float> d_k(s.k), d_v(s.v);
      device_buffer<std::uint8_t> d_keep(s.keep);
      with_workspace([&](void* temp, std::size_t& bytes) {
        return dc::gated_append(
            temp, bytes, layer, stack, std::as_const(d_indptr).view(), std::as_const(d_k).view(),
            std::as_const(d_v).view(),
            gated ? std::as_const(d_keep).view() : device_span<const std::uint8_t>{},
            std::as_const(d_positions).view(), invalid.data(), nullptr);
      });
      // StreamingLLM every step: kept lists on the device, compaction, pages back to the stack
      device_buffer<index_t> kept_indptr(batch + 1), kept(batch * (2 + 9));
      REQUIRE(dc::streaming_kept(lengths, streaming.sinks, streaming.window, kept_indptr.view(),
                                 kept.view(), nullptr) == cudaSuccess);
      with_workspace([&](void* temp, std::size_t& bytes) {
        return dc::retain(temp, bytes, layer, stack, std::as_const(kept_indptr).view(),
                          std::as_const(kept).view(), invalid.data(), nullptr);
      });
      for (std::size_t b = 0; b < batch; ++b) {
        (void)cpu::enforce_retention(host, streaming, 0, b);
      }
      const test::layer_readback got = test::read_back(layer, num_pages);
      CHECK(invalid.to_host()[0] == 0);
      const auto pages = test::copy_to_host(layer.page_table, batch * max_pages);
      test::check_against_host(host, got, batch, width, [&](std::size_t b, index_t i) {
        return detail::paged_row(pages.data() + b * max_pages, i, page_size);
      });
      for (std::size_t b = 0; b < batch; ++b) {
        const std::vector<index_t> device_pages(
            pages.begin() + static_cast<std::ptrdiff_t>(b * max_pages),
            pages.begin() + static_cast<std::ptrdiff_t>(
                                b * max_pages + detail::pages_for(got.lengths[b], page_size)));
        CHECK(device_pages == host.pages(0, b));  // same page ids as the host pool
      }
      CHECK(test::copy_to_host(stack.count, 1)[0] == host.pool().free_pages());
      // FlashInfer page table equals the host view's
      const auto view = host.view(0);
      device_buffer<index_t> fi_indptr(batch + 1), fi_indices(batch * max_pages), fi_last(batch);
      REQUIRE(dc::paged_page_table(layer, fi_indptr.view(), fi_indices.view(), fi_last.view(),
                                   nullptr) == cudaSuccess);
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      CHECK(fi_indptr.to_host() == std::vector<index_t>(view.indptr.begin(), view.indptr.end()));
      auto indices = fi_indices.to_host();
      indices.resize(view.indices.size());
      CHECK(indices == std::vector<index_t>(view.indices.begin(), view.indices.end()));
      CHECK(fi_last.to_host() ==
            std::vector<index_t>(view.last_page_len.begin(), view.last_page_len.end()));
    }
  }

  TEST_CASE("kv cache: CUDA H2O kept lists equal h2o_policy::retain (ties, NaN, window, layers)") {
    test::rng g(24);
    // rows held on chip (max_length 700), and rows of the multi-block top-k (max_length 20000)
    for (const index_t max_length : {700, 20000}) {
      for (const auto mix :
           {test::score_mix::distinct, test::score_mix::heavy_ties, test::score_mix::adversarial}) {
        for (const h2o_policy policy :
             {h2o_policy{0.5, 4, 0}, h2o_policy{0.2, 0, 0}, h2o_policy{1.0, 3, 0},
              h2o_policy{0.3, 50, 0}, h2o_policy{0.5, 4, 2}}) {
          for (index_t layer : {0, 3}) {
            CAPTURE(static_cast<int>(mix));
            CAPTURE(policy.ratio);
            CAPTURE(policy.recent);
            CAPTURE(layer);
            CAPTURE(max_length);
            const auto lengths = test::random_lengths(g, 9, max_length == 700 ? 700 : 12000);
            std::vector<index_t> appended(lengths.size());
            for (std::size_t b = 0; b < lengths.size(); ++b) {
              appended[b] = lengths[b] + static_cast<index_t>(g() % 300);
            }
            const auto indptr = test::indptr_of(lengths);
            const auto scores =
                test::random_scores(g, static_cast<std::size_t>(indptr.back()), mix);
            host_selection expected;
            expected.indptr.push_back(0);
            for (std::size_t b = 0; b < lengths.size(); ++b) {
              std::vector<index_t> out(static_cast<std::size_t>(lengths[b]));
              const index_t n =
                  policy.retain(layer, kv_sequence_state{lengths[b], appended[b]},
                                host_span<const float>(scores.data() + indptr[b],
                                                       static_cast<std::size_t>(lengths[b])),
                                make_host_span(out));
              expected.positions.insert(expected.positions.end(), out.begin(), out.begin() + n);
              expected.indptr.push_back(static_cast<index_t>(expected.positions.size()));
            }
            device_buffer<index_t> d_lengths(lengths), d_appended(appended), d_indptr(indptr);
            device_buffer<float> d_scores(scores);
            device_buffer<index_t> kept_indptr(lengths.size() + 1),
                kept(std::max<std::size_t>(scores.size(), 1));
            device_buffer<int> invalid(std::vector<int>{0});
            with_workspace([&](void* temp, std::size_t& bytes) {
              return dc::h2o_kept(
                  temp, bytes, std::as_const(d_lengths).view(), std::as_const(d_appended).view(),
                  device_ragged<const float>{std::as_const(d_indptr).view(),
                                             std::as_const(d_scores).view()},
                  layer,
                  dc::h2o_parameters{policy.ratio, policy.recent, policy.uncompressed_layers},
                  max_length, kept_indptr.view(), kept.view(), invalid.data(), nullptr);
            });
            CHECK(invalid.to_host()[0] == 0);
            CHECK(kept_indptr.to_host() == expected.indptr);
            auto got = kept.to_host();
            got.resize(expected.positions.size());
            CHECK(got == expected.positions);
          }
        }
      }
    }
  }

  TEST_CASE("kv cache: fp16 rows wider than a chunk, compacted in place over many tiles") {
    // width 2500 fp16: 3 column chunks, 5 rows per tile; values exact in fp16 (integers < 2048)
    test::rng g(25);
    constexpr std::size_t batch = 3;
    constexpr index_t wide = 2500;
    constexpr index_t capacity = 64;
    contiguous_kv_cache host(contiguous_kv_config{1, batch, wide, capacity});
    const dc::device_contiguous_kv_cache<__half> device(
        dc::device_contiguous_kv_config{1, batch, wide, capacity});
    const auto layer = device.layer(0);
    const std::vector<index_t> indptr{0, 40, 40, 97};  // 40, 0 and 57 new tokens
    const auto tokens = static_cast<std::size_t>(indptr.back());
    std::vector<float> k(tokens * wide), v(tokens * wide);
    for (auto& x : k) x = static_cast<float>(g() % 2000);
    for (auto& x : v) x = static_cast<float>(g() % 2000);
    std::vector<index_t> positions(tokens);
    for (std::size_t t = 0; t < tokens; ++t) positions[t] = static_cast<index_t>(100 + t);
    const std::vector<std::uint8_t> keep(tokens, 1);
    cpu::gated_append(host, full_cache_policy{}, 0, make_host_span(indptr),
                      make_host_span(std::as_const(k)), make_host_span(std::as_const(v)),
                      make_host_span(keep), make_host_span(std::as_const(positions)));
    std::vector<__half> hk(k.size()), hv(v.size());
    for (std::size_t i = 0; i < k.size(); ++i) {
      hk[i] = __float2half(k[i]);
      hv[i] = __float2half(v[i]);
    }
    device_buffer<index_t> d_indptr(indptr), d_positions(positions);
    device_buffer<__half> d_k(hk), d_v(hv);
    device_buffer<int> invalid(std::vector<int>{0});
    with_workspace([&](void* temp, std::size_t& bytes) {
      return dc::gated_append(temp, bytes, layer, std::as_const(d_indptr).view(),
                              std::as_const(d_k).view(), std::as_const(d_v).view(),
                              device_span<const std::uint8_t>{}, std::as_const(d_positions).view(),
                              invalid.data(), nullptr);
    });
    const auto [kept_indptr, kept] = random_kept(g, {40, 0, 57});
    host_retain(host, kept_indptr, kept);
    device_buffer<index_t> d_kept_indptr(kept_indptr), d_kept(kept);
    with_workspace([&](void* temp, std::size_t& bytes) {
      return dc::retain(temp, bytes, layer, std::as_const(d_kept_indptr).view(),
                        std::as_const(d_kept).view(), invalid.data(), nullptr);
    });
    CHECK(test::copy_to_host(invalid.data(), 1)[0] == 0);
    const auto rows = batch * static_cast<std::size_t>(capacity);
    const auto got_k = test::copy_to_host(layer.k, rows * wide);
    const auto got_v = test::copy_to_host(layer.v, rows * wide);
    const auto got_pos = test::copy_to_host(layer.positions, rows);
    const auto got_len = test::copy_to_host(layer.lengths, batch);
    for (std::size_t b = 0; b < batch; ++b) {
      CAPTURE(b);
      REQUIRE(got_len[b] == host.length(0, b));
      bool same = true;
      for (index_t i = 0; i < host.length(0, b); ++i) {
        const std::size_t r = detail::contiguous_row(b, i, capacity);
        same = same && got_pos[r] == host.position(0, b, i);
        for (index_t c = 0; c < wide; ++c) {
          same =
              same &&
              __half2float(got_k[r * wide + static_cast<std::size_t>(c)]) == host.key(0, b, i)[c] &&
              __half2float(got_v[r * wide + static_cast<std::size_t>(c)]) == host.value(0, b, i)[c];
        }
      }
      CHECK(same);
    }
  }

  TEST_CASE("kv cache: overflow and invalid kept lists change nothing and raise the flag") {
    constexpr std::size_t batch = 2;
    constexpr index_t capacity = 3;
    device_buffer<float> k(batch * capacity * width), v(batch * capacity * width);
    device_buffer<index_t> positions(batch * capacity);
    device_buffer<index_t> lengths(std::vector<index_t>{2, 0}),
        appended(std::vector<index_t>{2, 0});
    const dc::contiguous_kv_layer<float> layer{
        k.data(),        v.data(), positions.data(), lengths.data(),
        appended.data(), batch,    capacity,         width};
    // two more tokens for sequence 0 (holding 2 of 3): does not fit
    const std::vector<index_t> indptr{0, 2, 3};
    device_buffer<index_t> d_indptr(indptr), d_positions(std::vector<index_t>{5, 6, 7});
    device_buffer<float> d_kv(std::vector<float>(3 * width, 1.0f));
    device_buffer<int> invalid(std::vector<int>{0});
    with_workspace([&](void* temp, std::size_t& bytes) {
      return dc::gated_append(temp, bytes, layer, std::as_const(d_indptr).view(),
                              std::as_const(d_kv).view(), std::as_const(d_kv).view(),
                              device_span<const std::uint8_t>{}, std::as_const(d_positions).view(),
                              invalid.data(), nullptr);
    });
    CHECK(invalid.to_host()[0] == 1);
    CHECK(lengths.to_host() == std::vector<index_t>{2, 0});
    CHECK(appended.to_host() == std::vector<index_t>{2, 0});
    // a kept list that is not ascending
    device_buffer<int> invalid2(std::vector<int>{0});
    device_buffer<index_t> kept_indptr(std::vector<index_t>{0, 2, 2}),
        kept(std::vector<index_t>{1, 0});
    with_workspace([&](void* temp, std::size_t& bytes) {
      return dc::retain(temp, bytes, layer, std::as_const(kept_indptr).view(),
                        std::as_const(kept).view(), invalid2.data(), nullptr);
    });
    CHECK(invalid2.to_host()[0] == 1);
    CHECK(lengths.to_host() == std::vector<index_t>{2, 0});
    // StreamingLLM lists that do not fit their buffer are refused (kept_indptr[0] = -1), and a
    // compaction with them changes nothing
    device_buffer<index_t> s_indptr(batch + 1), s_kept(1);
    REQUIRE(dc::streaming_kept(std::as_const(lengths).view(), 0, 2, s_indptr.view(), s_kept.view(),
                               nullptr) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(s_indptr.to_host()[0] == -1);
    device_buffer<int> invalid3(std::vector<int>{0});
    with_workspace([&](void* temp, std::size_t& bytes) {
      return dc::retain(temp, bytes, layer, std::as_const(s_indptr).view(),
                        std::as_const(s_kept).view(), invalid3.data(), nullptr);
    });
    CHECK(invalid3.to_host()[0] == 1);
    CHECK(lengths.to_host() == std::vector<index_t>{2, 0});
    // shapes are checked on the host
    std::size_t bytes = 0;
    CHECK(dc::gated_append(nullptr, bytes, layer, std::as_const(d_indptr).view(),
                           device_span<const float>(d_kv.data(), 5), std::as_const(d_kv).view(),
                           device_span<const std::uint8_t>{}, std::as_const(d_positions).view(),
                           nullptr, nullptr) == cudaErrorInvalidValue);
  }
}

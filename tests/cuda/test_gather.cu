// SPDX-License-Identifier: Apache-2.0
/// @file test_gather.cu
/// @brief CUDA gather/scatter against the CPU twin: random ragged contexts, odd widths (scalar
/// path), 16-byte widths (vector path), empty inputs, out-of-range reporting.
#include <dynllava/context/build_context.hpp>
#include <dynllava/context/cuda/device_gather.cuh>
#include <dynllava/context/gather.hpp>
#include <dynllava/core/cuda/device_buffer.cuh>

#include <support/random.hpp>

#include <cuda_fp16.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

using namespace dynllava;
using cuda::device_buffer;

namespace {

template <class T>
std::vector<T> random_rows(test::rng& g, std::size_t n) {
  std::vector<T> out(n);
  for (auto& v : out) v = static_cast<T>(static_cast<float>(g() % 10000) * 0.25f);
  return out;
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
void check_gather_scatter(test::rng& g, index_t width, std::size_t num_rows, std::size_t m) {
  const auto src = random_rows<T>(g, num_rows * static_cast<std::size_t>(width));
  std::vector<index_t> rows(m);
  // distinct rows, ascending (as a sparse context produces)
  std::vector<index_t> all(num_rows);
  for (std::size_t i = 0; i < num_rows; ++i) all[i] = static_cast<index_t>(i);
  std::shuffle(all.begin(), all.end(), g);
  std::copy(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(m), rows.begin());
  std::sort(rows.begin(), rows.end());

  std::vector<T> expected(m * static_cast<std::size_t>(width));
  cpu::gather_rows(make_host_span(std::as_const(src)), width, make_host_span(std::as_const(rows)),
                   make_host_span(expected));

  device_buffer<T> d_src(src);
  device_buffer<index_t> d_rows(rows);
  device_buffer<T> d_dst(expected.size());
  device_buffer<int> d_flag(std::vector<int>{0});
  gather_rows(cuda::on_stream{}, d_src.view(), width, d_rows.view(), d_dst.view(), d_flag.data());
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  CHECK(bitwise_equal(d_dst.to_host(), expected));
  CHECK(d_flag.to_host()[0] == 0);

  // scatter back into a copy of a second random tensor
  const auto base = random_rows<T>(g, src.size());
  std::vector<T> scattered = base;
  cpu::scatter_rows(make_host_span(std::as_const(expected)), width,
                    make_host_span(std::as_const(rows)), make_host_span(scattered));
  device_buffer<T> d_base(base);
  scatter_rows(cuda::on_stream{}, d_dst.view(), width, d_rows.view(), d_base.view(), d_flag.data());
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  CHECK(bitwise_equal(d_base.to_host(), scattered));
  CHECK(d_flag.to_host()[0] == 0);
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gather/scatter: CUDA equals the CPU twin, float and half, scalar and vector paths") {
    test::rng g(5);
    for (index_t width : {1, 3, 4, 8, 64, 4096, 4097}) {
      for (auto [n, m] : {std::pair<std::size_t, std::size_t>{1, 0}, {1, 1}, {10, 10}, {50, 17}}) {
        CAPTURE(width);
        CAPTURE(n);
        CAPTURE(m);
        check_gather_scatter<float>(g, width, n, m);
        check_gather_scatter<__half>(g, width, n, m);
      }
    }
  }

  TEST_CASE("gather: a pruned LLaVA-sized context, against the CPU twin") {
    test::rng g(8);
    check_gather_scatter<float>(g, 4096, 35 + 576 + 40, 35 + 115 + 40);
  }

  TEST_CASE("gather/scatter: out-of-range rows raise the flag, never read or write outside") {
    const std::vector<float> src{1, 2, 3, 4};
    const std::vector<index_t> rows{1, 2, -1};
    device_buffer<float> d_src(src);
    device_buffer<index_t> d_rows(rows);
    device_buffer<float> d_dst(6);
    device_buffer<int> d_flag(std::vector<int>{0});
    gather_rows(cuda::on_stream{}, d_src.view(), 2, d_rows.view(), d_dst.view(), d_flag.data());
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(d_flag.to_host()[0] == 1);
    CHECK(d_dst.to_host() == std::vector<float>{3, 4, 0, 0, 0, 0});

    device_buffer<int> d_flag2(std::vector<int>{0});
    device_buffer<float> d_full(src);
    scatter_rows(cuda::on_stream{}, device_span<const float>(d_dst.data(), 6), 2, d_rows.view(),
                 d_full.view(), d_flag2.data());
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(d_flag2.to_host()[0] == 1);
    CHECK(d_full.to_host() == std::vector<float>{1, 2, 3, 4});
  }

  TEST_CASE("gather: shape errors throw on the host and return cudaErrorInvalidValue below") {
    device_buffer<float> d_src(6);
    device_buffer<index_t> d_rows(2);
    device_buffer<float> d_dst(3);
    CHECK_THROWS_AS(gather_rows(cuda::on_stream{}, std::as_const(d_src).view(), 2,
                                std::as_const(d_rows).view(), d_dst.view()),
                    error);
    CHECK(cuda::gather_rows(std::as_const(d_src).view(), 2, std::as_const(d_rows).view(),
                            d_dst.view(), nullptr, nullptr) == cudaErrorInvalidValue);
  }
}

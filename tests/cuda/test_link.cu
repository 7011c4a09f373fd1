// SPDX-License-Identifier: Apache-2.0
/// @file test_link.cu
/// @brief A second translation unit that includes every CUDA header: the GPU test binary then
/// links two TUs with all of them (kernels defined in headers must not clash at link time).
#include <dynllava/dynllava.cuh>

#include <doctest/doctest.h>

TEST_SUITE("gpu") {
  TEST_CASE("headers: every .cuh can be included from several translation units") {
    CHECK(dynllava::execution_tag<dynllava::cuda::on_stream>);
  }
}

// SPDX-License-Identifier: Apache-2.0
/// @file cuda_readback.cuh
/// @brief GPU tests: reading a device KV layer back and comparing it with a host cache, token by
/// token (lengths, appended counts, positions, keys, values).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>

#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

namespace dynllava::test {

/// Device state of a layer, read back.
struct layer_readback {
  std::vector<index_t> lengths, appended;
  std::vector<float> k, v;
  std::vector<index_t> positions;
};

/// `n` elements at device address `p`, copied to the host (synchronous).
template <class T>
std::vector<T> copy_to_host(const T* p, std::size_t n) {
  std::vector<T> out(n);
  if (n > 0) {
    REQUIRE(cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  }
  return out;
}

/// The state of a paged layer of `num_pages` pool pages, read back.
inline layer_readback read_back(const cuda::paged_kv_layer<float>& l, index_t num_pages) {
  const auto rows = static_cast<std::size_t>(num_pages) * static_cast<std::size_t>(l.page_size);
  const auto w = static_cast<std::size_t>(l.width);
  return {copy_to_host(l.lengths, l.batch), copy_to_host(l.appended, l.batch),
          copy_to_host(l.k, rows * w), copy_to_host(l.v, rows * w),
          copy_to_host(l.positions, rows)};
}

/// Checks layer 0 of `host` against `got`, row of token `i` of sequence `b` at `row_of(b, i)`,
/// rows of `width` elements.
template <class Host, class RowOf>
void check_against_host(const Host& host, const layer_readback& got, std::size_t batch,
                        index_t width, RowOf row_of) {
  const auto w = static_cast<std::size_t>(width);
  for (std::size_t b = 0; b < batch; ++b) {
    CAPTURE(b);
    REQUIRE(got.lengths[b] == host.length(0, b));
    CHECK(got.appended[b] == host.appended(0, b));
    bool same = true;
    for (index_t i = 0; i < host.length(0, b); ++i) {
      const std::size_t r = row_of(b, i);
      same = same && got.positions[r] == host.position(0, b, i);
      for (std::size_t c = 0; c < w; ++c) {
        same = same && got.k[r * w + c] == host.key(0, b, i)[c] &&
               got.v[r * w + c] == host.value(0, b, i)[c];
      }
    }
    CHECK(same);
  }
}

}  // namespace dynllava::test

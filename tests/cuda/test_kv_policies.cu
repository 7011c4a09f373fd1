// SPDX-License-Identifier: Apache-2.0
/// @file test_kv_policies.cu
/// @brief The CUDA policies as models of `kv_policy<P, cuda::on_stream>`: their `kept` lists equal
/// the host policies' `kept` (full cache, online gate, StreamingLLM, H2O with ties, NaN and
/// +-inf scores; ragged batches with empty sequences; compressed and uncompressed layers), and
/// they feed a CUDA cache's `retain` like the host lists feed the host cache's.
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/cuda/device_kv_caches.cuh>
#include <dynllava/kvcache/cuda/device_policies.cuh>

#include <support/cuda_readback.cuh>
#include <support/random.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

using namespace dynllava;
namespace dc = dynllava::cuda;  // `cuda` alone is ambiguous with CCCL's ::cuda
using dc::device_buffer;

namespace {

/// A layer's state: held and appended counts per sequence, one score per held token.
struct layer_state {
  std::vector<index_t> held, appended, indptr;
  std::vector<float> scores;
};

layer_state random_state(test::rng& g, std::size_t batch, test::score_mix mix) {
  layer_state s;
  s.held = test::random_lengths(g, batch, 300);
  for (index_t h : s.held) s.appended.push_back(h + static_cast<index_t>(g() % 200));
  s.indptr = test::indptr_of(s.held);
  s.scores = test::random_scores(g, static_cast<std::size_t>(s.indptr.back()), mix);
  return s;
}

/// The host policy's lists and the device policy's, for layer `l`.
template <class HostPolicy, class DevicePolicy>
void check_same_lists(const HostPolicy& host_policy, const DevicePolicy& device_policy,
                      const layer_state& s, index_t l) {
  const std::size_t batch = s.held.size();
  const auto tokens = static_cast<std::size_t>(s.indptr.back());
  std::vector<index_t> want_indptr(batch + 1), want(std::max<std::size_t>(tokens, 1));
  host_policy.kept(host, l, make_host_span(s.held), make_host_span(s.appended),
                   host_ragged<const float>{make_host_span(s.indptr), make_host_span(s.scores)},
                   make_host_span(want_indptr), make_host_span(want));
  const device_buffer<index_t> held(s.held), appended(s.appended), indptr(s.indptr);
  const device_buffer<float> scores(s.scores);
  device_buffer<index_t> got_indptr(batch + 1), got(std::max<std::size_t>(tokens, 1));
  device_policy.kept(dc::on_stream{nullptr}, l, held.view(), appended.view(),
                     ragged_span<const float, device_space>{indptr.view(), scores.view()},
                     got_indptr.view(), got.view());
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  CHECK(got_indptr.to_host() == want_indptr);
  auto got_lists = got.to_host();
  got_lists.resize(static_cast<std::size_t>(want_indptr.back()));
  want.resize(static_cast<std::size_t>(want_indptr.back()));
  CHECK(got_lists == want);
  CHECK(device_policy.evicts(l) == host_policy.evicts(l));
  CHECK(device_policy.admits(l, false) == host_policy.admits(l, false));
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("kv policy: CUDA policies' kept lists equal the host policies' (all four, ragged)") {
    test::rng g(61);
    for (const auto mix :
         {test::score_mix::distinct, test::score_mix::heavy_ties, test::score_mix::adversarial}) {
      CAPTURE(static_cast<int>(mix));
      for (index_t l : {0, 1, 3}) {
        CAPTURE(l);
        const layer_state s = random_state(g, 9, mix);
        check_same_lists(full_cache_policy{}, dc::device_full_cache_policy{}, s, l);
        check_same_lists(online_gate_policy{2}, dc::device_online_gate_policy{{2}}, s, l);
        for (const streaming_policy p : {streaming_policy{4, 20}, streaming_policy{0, 1},
                                         streaming_policy{0, 0}, streaming_policy{300, 300}}) {
          check_same_lists(p, dc::device_streaming_policy{p}, s, l);
        }
        for (const h2o_policy p : {h2o_policy{0.5, 4, 0}, h2o_policy{0.2, 0, 0},
                                   h2o_policy{1.0, 3, 0}, h2o_policy{0.3, 50, 2}}) {
          check_same_lists(p, dc::device_h2o_policy{p, 300, nullptr}, s, l);
          // in a caller's workspace sized for the largest layer (nothing allocated by `kept`)
          dc::device_h2o_policy in_workspace{p, 300, nullptr};
          device_buffer<unsigned char> ws(in_workspace.workspace_bytes(9, 9 * 300));
          in_workspace.temp = ws.data();
          in_workspace.temp_bytes = ws.size();
          check_same_lists(p, in_workspace, s, l);
          in_workspace.temp_bytes = 1;  // a workspace too small is refused on the host
          CHECK_THROWS_AS(check_same_lists(p, in_workspace, s, l), error);
        }
      }
    }
  }

  TEST_CASE("kv policy: CUDA StreamingLLM lists drive a CUDA cache's retain like the host's") {
    test::rng g(62);
    constexpr std::size_t batch = 4;
    constexpr index_t width = 3;
    constexpr index_t capacity = 40;
    contiguous_kv_cache host_cache(contiguous_kv_config{1, batch, width, capacity});
    dc::device_contiguous_kv_cache<float> device_cache(
        dc::device_contiguous_kv_config{1, batch, width, capacity});
    const std::vector<index_t> indptr{0, 30, 30, 35, 40};
    std::vector<index_t> positions(40);
    std::vector<float> rows(40 * width);
    for (std::size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<index_t>(i);
    for (auto& x : rows) x = static_cast<float>(g() % 100);
    host_cache.append(host, 0, make_host_span(indptr), make_host_span(std::as_const(rows)),
                      make_host_span(std::as_const(rows)), {},
                      make_host_span(std::as_const(positions)));
    const device_buffer<index_t> d_indptr(indptr), d_positions(positions);
    const device_buffer<float> d_rows(rows);
    device_cache.append(dc::on_stream{nullptr}, 0, d_indptr.view(), d_rows.view(), d_rows.view(),
                        {}, d_positions.view());
    const streaming_policy policy{2, 5};
    std::vector<index_t> kept_indptr(batch + 1), kept(40);
    policy.kept(host, 0, host_cache.lengths(0), host_cache.appended_counts(0), {},
                make_host_span(kept_indptr), make_host_span(kept));
    host_cache.retain(host, 0,
                      host_ragged<const index_t>{make_host_span(std::as_const(kept_indptr)),
                                                 make_host_span(std::as_const(kept))});
    device_buffer<index_t> d_kept_indptr(batch + 1), d_kept(40);
    dc::device_streaming_policy{policy}.kept(dc::on_stream{nullptr}, 0, device_cache.lengths(0),
                                             device_cache.appended_counts(0), {},
                                             d_kept_indptr.view(), d_kept.view());
    device_cache.retain(dc::on_stream{nullptr}, 0,
                        ragged_span<const index_t, device_space>{
                            std::as_const(d_kept_indptr).view(), std::as_const(d_kept).view()});
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    const auto lengths = test::copy_to_host(device_cache.lengths(0).data(), batch);
    const auto layer = device_cache.layer(0);
    const auto got_positions = test::copy_to_host(layer.positions, batch * capacity);
    for (std::size_t b = 0; b < batch; ++b) {
      CAPTURE(b);
      REQUIRE(lengths[b] == host_cache.length(0, b));
      for (index_t i = 0; i < lengths[b]; ++i) {
        CHECK(got_positions[detail::contiguous_row(b, i, capacity)] ==
              host_cache.position(0, b, i));
      }
    }
    CHECK(test::copy_to_host(device_cache.invalid_flag(), 1)[0] == 0);
  }
}

// SPDX-License-Identifier: Apache-2.0
/// @file test_topk.cu
/// @brief CUDA top-k and gates against their CPU twins, bit for bit: random and adversarial
/// scores (ties, NaN, +-0, +-inf, identical leading bits), k in {0, 1, n - 1, n}, empty
/// sequences, ragged batches of very different lengths, both regimes (the tiled one also forced
/// on short rows), fp32, fp16 and bf16, very long rows; device-found invalid batches; the
/// workspace protocol; and a decode-step sequence (top-k, threshold gate, argmax gate, gather)
/// captured in a CUDA graph and replayed on new inputs.
#include <dynllava/context/cuda/device_gather.cuh>
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/cuda/device_gate.cuh>
#include <dynllava/select/cuda/device_topk.cuh>
#include <dynllava/select/cuda/selectors.cuh>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/topk.hpp>

#include <support/random.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

using namespace dynllava;
namespace dc = dynllava::cuda;  // `cuda` alone is ambiguous with CCCL's ::cuda
using dc::device_buffer;

namespace {

template <class T>
T narrow(float v);
template <>
float narrow<float>(float v) {
  return v;
}
template <>
__half narrow<__half>(float v) {
  return __float2half(v);
}
template <>
__nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
float widen_host(float v) { return v; }
float widen_host(__half v) { return __half2float(v); }
float widen_host(__nv_bfloat16 v) { return __bfloat162float(v); }

/// Scores stored as `T` and their exact fp32 values (what the CPU twin ranks).
template <class T>
struct stored_scores {
  std::vector<T> stored;
  std::vector<float> widened;
};

template <class T>
stored_scores<T> store(const std::vector<float>& scores) {
  stored_scores<T> out;
  for (float s : scores) {
    out.stored.push_back(narrow<T>(s));
    out.widened.push_back(widen_host(out.stored.back()));
  }
  return out;
}

/// Runs the CUDA top-k (device-level call, explicit workspace) and returns its selection.
template <class T>
host_selection device_topk(const std::vector<index_t>& indptr, const std::vector<T>& scores,
                           index_t max_length, budget_kind kind, double ratio, index_t count,
                           const std::vector<index_t>& counts, tie_break tie, int* invalid) {
  device_buffer<index_t> d_indptr(indptr);
  device_buffer<T> d_scores(scores);
  device_buffer<index_t> d_counts(counts);
  device_buffer<index_t> d_out_indptr(indptr.size());
  device_buffer<index_t> d_positions(std::max<std::size_t>(scores.size(), 1));
  device_buffer<int> d_invalid(std::vector<int>{0});
  const device_ragged<const T> view{std::as_const(d_indptr).view(), std::as_const(d_scores).view()};
  topk_budget<device_space> budget{kind, ratio, count, std::as_const(d_counts).view()};
  std::size_t bytes = 0;
  REQUIRE(dc::topk(nullptr, bytes, view, max_length, budget, d_out_indptr.view(),
                   d_positions.view(), topk_options{tie}, d_invalid.data(),
                   nullptr) == cudaSuccess);
  device_buffer<unsigned char> temp(bytes);
  REQUIRE(dc::topk(temp.data(), bytes, view, max_length, budget, d_out_indptr.view(),
                   d_positions.view(), topk_options{tie}, d_invalid.data(),
                   nullptr) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  host_selection sel;
  sel.indptr = d_out_indptr.to_host();
  sel.positions = d_positions.to_host();
  sel.positions.resize(static_cast<std::size_t>(sel.indptr.back()));
  *invalid = d_invalid.to_host()[0];
  return sel;
}

host_selection host_topk(const std::vector<index_t>& indptr, const std::vector<float>& scores,
                         budget_kind kind, double ratio, index_t count,
                         const std::vector<index_t>& counts, tie_break tie) {
  const host_ragged<const float> view{make_host_span(indptr), make_host_span(scores)};
  topk_budget<host_space> budget{kind, ratio, count, make_host_span(counts)};
  return cpu::topk(view, budget, topk_options{tie});
}

template <class T>
void check_batch(test::rng& g, const std::vector<index_t>& lengths, test::score_mix mix,
                 index_t max_length) {
  const auto indptr = test::indptr_of(lengths);
  const auto data = store<T>(test::random_scores(g, static_cast<std::size_t>(indptr.back()), mix));
  const index_t shortest = lengths.empty() ? 0 : *std::min_element(lengths.begin(), lengths.end());
  std::vector<index_t> counts(lengths.size());
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    std::uniform_int_distribution<index_t> pick(0, lengths[b]);
    const int edge = static_cast<int>(g() % 4);
    counts[b] = edge == 0   ? 0
                : edge == 1 ? lengths[b]
                : edge == 2 ? std::min(1, lengths[b])
                            : pick(g);
  }
  struct budget_case {
    budget_kind kind;
    double ratio;
    index_t count;
  };
  for (const budget_case& bc :
       {budget_case{budget_kind::ratio, 0.2, 0}, budget_case{budget_kind::ratio, 1.0, 0},
        budget_case{budget_kind::ratio, 0.0, 0},
        budget_case{budget_kind::count, 0.0, std::min(1, shortest)},
        budget_case{budget_kind::count, 0.0, shortest},
        budget_case{budget_kind::per_sequence, 0.0, 0}}) {
    for (tie_break tie : {tie_break::smaller_position, tie_break::larger_position}) {
      CAPTURE(bc.kind);
      CAPTURE(bc.ratio);
      CAPTURE(bc.count);
      CAPTURE(tie);
      CAPTURE(max_length);
      CAPTURE(lengths.size());
      const auto expected =
          host_topk(indptr, data.widened, bc.kind, bc.ratio, bc.count, counts, tie);
      int invalid = -1;
      const auto got = device_topk<T>(indptr, data.stored, max_length, bc.kind, bc.ratio, bc.count,
                                      counts, tie, &invalid);
      CHECK(invalid == 0);
      CHECK(got.indptr == expected.indptr);
      CHECK(got.positions == expected.positions);
    }
  }
}

template <class T>
void check_regimes(std::uint64_t seed) {
  test::rng g(seed);
  for (auto mix :
       {test::score_mix::distinct, test::score_mix::heavy_ties, test::score_mix::adversarial}) {
    CAPTURE(static_cast<int>(mix));
    // the real case: LLaVA image rows
    check_batch<T>(g, std::vector<index_t>(8, 576), mix, 576);
    // ragged, with empty and single-token sequences, one block per sequence
    const auto short_rows = test::random_lengths(g, 37, 3000);
    check_batch<T>(g, short_rows, mix, 3000);
    // the same kind of rows through the tiled regime (a bound above the one-block limit)
    check_batch<T>(g, test::random_lengths(g, 19, 3000), mix, detail::topk_block_row_max + 1);
    // very different lengths in one batch, long rows spanning many tiles
    check_batch<T>(g, {0, 1, 9000, 5, 70000, 4096, 4097, 0}, mix, 70000);
  }
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("topk: CUDA equals the CPU twin, fp32, both regimes") { check_regimes<float>(1); }
  TEST_CASE("topk: CUDA equals the CPU twin on the widened scores, fp16") {
    check_regimes<__half>(2);
  }
  TEST_CASE("topk: CUDA equals the CPU twin on the widened scores, bf16") {
    check_regimes<__nv_bfloat16>(3);
  }

  TEST_CASE("topk: batch 256 of image rows, and a very long row (2^22)") {
    test::rng g(4);
    check_batch<float>(g, std::vector<index_t>(256, 576), test::score_mix::adversarial, 576);
    // above the one-launch batch limit: the plan kernel, then one block per sequence
    check_batch<float>(g, test::random_lengths(g, detail::topk_fused_batch_max + 300, 60),
                       test::score_mix::adversarial, 60);
    check_batch<__half>(g, {1 << 22}, test::score_mix::distinct, 1 << 22);
  }

  TEST_CASE("topk: all keys equal, identical leading bits, NaN-only rows") {
    for (tie_break tie : {tie_break::smaller_position, tie_break::larger_position}) {
      for (index_t max_length : {index_t{4096}, detail::topk_block_row_max + 1}) {
        std::vector<float> scores(4000 + 3000 + 2000);
        for (std::size_t i = 0; i < 4000; ++i) scores[i] = 1.5f;
        for (std::size_t i = 4000; i < 7000; ++i) {
          scores[i] = std::bit_cast<float>(0x3f800000u + static_cast<std::uint32_t>(i % 2));
        }
        for (std::size_t i = 7000; i < scores.size(); ++i) {
          scores[i] = std::numeric_limits<float>::quiet_NaN();
        }
        const std::vector<index_t> indptr{0, 4000, 7000, 9000};
        for (index_t k : {1, 999, 1500, 1999}) {
          CAPTURE(k);
          CAPTURE(tie);
          CAPTURE(max_length);
          int invalid = -1;
          const auto got = device_topk<float>(indptr, scores, max_length, budget_kind::count, 0.0,
                                              k, {}, tie, &invalid);
          const auto expected = host_topk(indptr, scores, budget_kind::count, 0.0, k, {}, tie);
          CHECK(invalid == 0);
          CHECK(got.indptr == expected.indptr);
          CHECK(got.positions == expected.positions);
        }
      }
    }
  }

  TEST_CASE("topk: invalid batches found on the device zero out_indptr and raise the flag") {
    const std::vector<float> scores(10, 1.0f);
    int invalid = -1;
    // a row longer than max_length
    auto got = device_topk<float>({0, 4, 10}, scores, 5, budget_kind::ratio, 0.5, 0, {},
                                  tie_break::smaller_position, &invalid);
    CHECK(invalid == 1);
    CHECK(got.indptr == std::vector<index_t>{0, 0, 0});
    // k above a sequence's length, in both regimes
    for (index_t max_length : {index_t{10}, detail::topk_block_row_max + 1}) {
      got = device_topk<float>({0, 4, 10}, scores, max_length, budget_kind::count, 0.0, 5, {},
                               tie_break::smaller_position, &invalid);
      CHECK(invalid == 1);
      CHECK(got.indptr == std::vector<index_t>{0, 0, 0});
      got = device_topk<float>({0, 4, 10}, scores, max_length, budget_kind::per_sequence, 0.0, 0,
                               {2, 7}, tie_break::smaller_position, &invalid);
      CHECK(invalid == 1);
    }
    // an invalid budget in a batch above the one-launch limit (plan kernel path)
    {
      const std::size_t big = detail::topk_fused_batch_max + 5;
      std::vector<index_t> indptr(big + 1);
      for (std::size_t b = 0; b <= big; ++b) indptr[b] = static_cast<index_t>(b);
      std::vector<index_t> counts(big, 1);
      counts[big - 1] = 2;  // 2 of 1 token
      const std::vector<float> ones(big, 1.0f);
      got = device_topk<float>(indptr, ones, 1, budget_kind::per_sequence, 0.0, 0, counts,
                               tie_break::smaller_position, &invalid);
      CHECK(invalid == 1);
      CHECK(got.indptr == std::vector<index_t>(big + 1, 0));
    }
    // a decreasing indptr
    got = device_topk<float>({0, 6, 4, 10}, scores, 10, budget_kind::ratio, 0.5, 0, {},
                             tie_break::smaller_position, &invalid);
    CHECK(invalid == 1);
  }

  TEST_CASE("topk: workspace protocol and host-side argument errors") {
    const std::vector<index_t> indptr{0, 3};
    device_buffer<index_t> d_indptr(indptr);
    device_buffer<float> d_scores(std::vector<float>{3, 1, 2});
    device_buffer<index_t> d_out_indptr(2), d_positions(3);
    const device_ragged<const float> view{std::as_const(d_indptr).view(),
                                          std::as_const(d_scores).view()};
    const auto budget = topk_budget<device_space>::keep_count(2);
    std::size_t bytes = 0;
    REQUIRE(dc::topk(nullptr, bytes, view, 3, budget, d_out_indptr.view(), d_positions.view(), {},
                     nullptr, nullptr) == cudaSuccess);
    CHECK(bytes > 0);
    device_buffer<unsigned char> temp(bytes);
    std::size_t small = 0;
    CHECK(dc::topk(temp.data(), small, view, 3, budget, d_out_indptr.view(), d_positions.view(), {},
                   nullptr, nullptr) == cudaErrorInvalidValue);
    CHECK(dc::topk(temp.data(), bytes, view, 3, budget,
                   device_span<index_t>(d_out_indptr.data(), 1), d_positions.view(), {}, nullptr,
                   nullptr) == cudaErrorInvalidValue);
    CHECK_THROWS_AS(topk(dc::on_stream{}, view, 3, topk_budget<device_space>::keep_ratio(1.5),
                         d_out_indptr.view(), d_positions.view()),
                    error);
    CHECK_THROWS_AS(
        topk(dc::on_stream{}, view, -1, budget, d_out_indptr.view(), d_positions.view()), error);
    // the throwing entry point, with its stream-ordered workspace
    topk(dc::on_stream{}, view, 3, budget, d_out_indptr.view(), d_positions.view());
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(d_out_indptr.to_host() == std::vector<index_t>{0, 2});
    CHECK(d_positions.to_host()[0] == 0);
    CHECK(d_positions.to_host()[1] == 2);
    // an empty batch
    device_buffer<index_t> d_zero(std::vector<index_t>{7});
    topk(dc::on_stream{},
         device_ragged<const float>{device_span<const index_t>{}, device_span<const float>{}}, 0,
         budget, d_zero.view(), device_span<index_t>{});
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(d_zero.to_host() == std::vector<index_t>{0});
  }

  TEST_CASE("gates: CUDA argmax and threshold gates equal the CPU twins, masks and positions") {
    test::rng g(6);
    for (std::size_t batch : {std::size_t{1}, std::size_t{7}, std::size_t{64}, std::size_t{300}}) {
      const auto lengths = test::random_lengths(g, batch, 40);
      const auto indptr = test::indptr_of(lengths);
      const auto tokens = static_cast<std::size_t>(indptr.back());
      const auto scores =
          store<__half>(test::random_scores(g, tokens, test::score_mix::adversarial));
      const auto logits = test::random_scores(g, 2 * tokens, test::score_mix::heavy_ties);
      CAPTURE(batch);

      std::vector<std::uint8_t> keep(tokens);
      cpu::threshold_gate(
          host_ragged<const float>{make_host_span(indptr), make_host_span(scores.widened)}, 0.5f,
          make_host_span(keep));
      host_selection expected_t;
      expected_t.indptr.resize(batch + 1);
      expected_t.positions.resize(tokens);
      expected_t.positions.resize(static_cast<std::size_t>(cpu::mask_to_positions(
          make_host_span(indptr), make_host_span(std::as_const(keep)),
          make_host_span(expected_t.indptr), make_host_span(expected_t.positions))));

      device_buffer<index_t> d_indptr(indptr);
      device_buffer<__half> d_scores(scores.stored);
      device_buffer<std::uint8_t> d_mask(tokens);
      device_buffer<index_t> d_out_indptr(batch + 1), d_positions(std::max<std::size_t>(tokens, 1));
      threshold_gate(dc::on_stream{},
                     device_ragged<const __half>{std::as_const(d_indptr).view(),
                                                 std::as_const(d_scores).view()},
                     0.5f, d_mask.view(), d_out_indptr.view(), d_positions.view());
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      CHECK(d_mask.to_host() == keep);
      CHECK(d_out_indptr.to_host() == expected_t.indptr);
      auto got = d_positions.to_host();
      got.resize(expected_t.positions.size());
      CHECK(got == expected_t.positions);

      std::vector<std::uint8_t> keep_a(tokens);
      cpu::argmax_gate(ragged_logits<host_space>{make_host_span(indptr), make_host_span(logits)},
                       make_host_span(keep_a));
      host_selection expected_a;
      expected_a.indptr.resize(batch + 1);
      expected_a.positions.resize(tokens);
      expected_a.positions.resize(static_cast<std::size_t>(cpu::mask_to_positions(
          make_host_span(indptr), make_host_span(std::as_const(keep_a)),
          make_host_span(expected_a.indptr), make_host_span(expected_a.positions))));
      device_buffer<float> d_logits(logits);
      const dc::logit_argmax selector{};
      CHECK(selector.select(dc::on_stream{},
                            ragged_logits<device_space>{std::as_const(d_indptr).view(),
                                                        std::as_const(d_logits).view()},
                            d_out_indptr.view(), d_positions.view()) == kept_count_on_device);
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      CHECK(d_out_indptr.to_host() == expected_a.indptr);
      got = d_positions.to_host();
      got.resize(expected_a.positions.size());
      CHECK(got == expected_a.positions);
    }
  }

  TEST_CASE("gates: bf16 scores and fp16/bf16 logits, against the CPU twins on widened values") {
    test::rng g(9);
    const auto lengths = test::random_lengths(g, 33, 20);
    const auto indptr = test::indptr_of(lengths);
    const auto tokens = static_cast<std::size_t>(indptr.back());
    const auto scores =
        store<__nv_bfloat16>(test::random_scores(g, tokens, test::score_mix::adversarial));
    const auto logits =
        store<__half>(test::random_scores(g, 2 * tokens, test::score_mix::heavy_ties));
    device_buffer<index_t> d_indptr(indptr);
    device_buffer<index_t> d_out(indptr.size()), d_pos(std::max<std::size_t>(tokens, 1));
    device_buffer<std::uint8_t> d_mask(std::max<std::size_t>(tokens, 1));
    const device_span<std::uint8_t> mask(d_mask.data(), tokens);
    const device_span<index_t> pos(d_pos.data(), tokens);

    std::vector<std::uint8_t> keep(tokens);
    cpu::threshold_gate(
        host_ragged<const float>{make_host_span(indptr), make_host_span(scores.widened)}, -0.25f,
        make_host_span(keep));
    device_buffer<__nv_bfloat16> d_scores(scores.stored);
    REQUIRE(dc::threshold_gate(device_ragged<const __nv_bfloat16>{std::as_const(d_indptr).view(),
                                                                  std::as_const(d_scores).view()},
                               -0.25f, mask, d_out.view(), pos, nullptr, nullptr) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    auto got_mask = d_mask.to_host();
    got_mask.resize(tokens);
    CHECK(got_mask == keep);

    cpu::argmax_gate(
        ragged_logits<host_space>{make_host_span(indptr), make_host_span(logits.widened)},
        make_host_span(keep));
    device_buffer<__half> d_logits(logits.stored);
    REQUIRE(dc::argmax_gate(std::as_const(d_indptr).view(), std::as_const(d_logits).view(), mask,
                            d_out.view(), pos, nullptr, nullptr) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    got_mask = d_mask.to_host();
    got_mask.resize(tokens);
    CHECK(got_mask == keep);
    std::vector<index_t> expected_indptr(indptr.size());
    std::vector<index_t> expected_pos(tokens);
    expected_pos.resize(static_cast<std::size_t>(
        cpu::mask_to_positions(make_host_span(indptr), make_host_span(std::as_const(keep)),
                               make_host_span(expected_indptr), make_host_span(expected_pos))));
    CHECK(d_out.to_host() == expected_indptr);
    auto got_pos = d_pos.to_host();
    got_pos.resize(expected_pos.size());
    CHECK(got_pos == expected_pos);
  }

  TEST_CASE("gates: an invalid indptr raises the flag and zeroes out_indptr") {
    device_buffer<index_t> d_indptr(std::vector<index_t>{0, 3, 2, 4});
    device_buffer<float> d_scores(std::vector<float>{1, 2, 3, 4});
    device_buffer<index_t> d_out_indptr(4), d_positions(4);
    device_buffer<int> d_invalid(std::vector<int>{0});
    threshold_gate(
        dc::on_stream{},
        device_ragged<const float>{std::as_const(d_indptr).view(), std::as_const(d_scores).view()},
        0.0f, device_span<std::uint8_t>{}, d_out_indptr.view(), d_positions.view(),
        d_invalid.data());
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(d_invalid.to_host()[0] == 1);
    CHECK(d_out_indptr.to_host() == std::vector<index_t>{0, 0, 0, 0});
    CHECK_THROWS_AS(
        threshold_gate(dc::on_stream{},
                       device_ragged<const float>{std::as_const(d_indptr).view(),
                                                  std::as_const(d_scores).view()},
                       std::numeric_limits<float>::quiet_NaN(), device_span<std::uint8_t>{},
                       d_out_indptr.view(), d_positions.view()),
        error);
  }

  TEST_CASE("decode step in a CUDA graph: top-k, gates and gather captured once, replayed") {
    // batch 4 of 576 image scores, one gate token per sequence, hidden rows of width 64
    constexpr std::size_t batch = 4;
    const std::vector<index_t> indptr = test::indptr_of(std::vector<index_t>(batch, 576));
    const std::vector<index_t> gate_indptr{0, 1, 2, 3, 4};
    constexpr index_t width = 64;
    device_buffer<index_t> d_indptr(indptr), d_gate_indptr(gate_indptr);
    device_buffer<float> d_scores(indptr.back()), d_logits(2 * batch);
    device_buffer<float> d_rows(static_cast<std::size_t>(indptr.back()) * width);
    device_buffer<index_t> d_kept_indptr(batch + 1), d_kept(indptr.back());
    device_buffer<index_t> d_gate_out(batch + 1), d_gate_pos(batch);
    device_buffer<std::uint8_t> d_mask(batch);
    device_buffer<float> d_gathered(static_cast<std::size_t>(115) * width);

    dc::budgeted_topk selector;
    selector.budget = topk_budget<device_space>::keep_ratio(0.2);
    selector.max_length = 576;
    const std::size_t bytes = selector.workspace_bytes(batch);
    device_buffer<unsigned char> temp(bytes);
    selector.temp = temp.data();
    selector.temp_bytes = bytes;

    cudaStream_t stream{};
    REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    const dc::on_stream exec{stream};
    const device_ragged<const float> scores_view{std::as_const(d_indptr).view(),
                                                 std::as_const(d_scores).view()};
    cudaGraph_t graph{};
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(selector.select(exec, scores_view, d_kept_indptr.view(), d_kept.view()) ==
          kept_count_on_device);
    argmax_gate(exec, std::as_const(d_gate_indptr).view(), std::as_const(d_logits).view(),
                d_mask.view(), d_gate_out.view(), d_gate_pos.view());
    // gather the first sequence's kept rows (its 115 positions are global rows of sequence 0)
    gather_rows(exec, std::as_const(d_rows).view(), width,
                device_span<const index_t>(d_kept.data(), 115), d_gathered.view());
    REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    cudaGraphExec_t instance{};
    REQUIRE(cudaGraphInstantiate(&instance, graph, 0) == cudaSuccess);

    test::rng g(7);
    for (int replay = 0; replay < 3; ++replay) {
      CAPTURE(replay);
      const auto scores = test::random_scores(g, static_cast<std::size_t>(indptr.back()),
                                              test::score_mix::adversarial);
      const auto logits = test::random_scores(g, 2 * batch, test::score_mix::heavy_ties);
      std::vector<float> rows(static_cast<std::size_t>(indptr.back()) * width);
      for (auto& v : rows) v = static_cast<float>(g() % 1000);
      d_scores.copy_from(make_host_span(std::as_const(scores)));
      d_logits.copy_from(make_host_span(std::as_const(logits)));
      d_rows.copy_from(make_host_span(std::as_const(rows)));
      // copy_from's cudaMemcpy runs on the legacy stream, which a non-blocking stream does not
      // wait for: finish it before the replay reads the inputs
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      REQUIRE(cudaGraphLaunch(instance, stream) == cudaSuccess);
      REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);

      const auto expected =
          host_topk(indptr, scores, budget_kind::ratio, 0.2, 0, {}, tie_break::smaller_position);
      CHECK(d_kept_indptr.to_host() == expected.indptr);
      auto kept = d_kept.to_host();
      kept.resize(expected.positions.size());
      CHECK(kept == expected.positions);
      std::vector<std::uint8_t> keep(batch);
      cpu::argmax_gate(
          ragged_logits<host_space>{make_host_span(gate_indptr), make_host_span(logits)},
          make_host_span(keep));
      CHECK(d_mask.to_host() == keep);
      const auto gathered = d_gathered.to_host();
      bool same = true;
      for (std::size_t r = 0; r < 115; ++r) {
        for (index_t c = 0; c < width; ++c) {
          same = same && gathered[r * width + static_cast<std::size_t>(c)] ==
                             rows[static_cast<std::size_t>(expected.positions[r]) * width +
                                  static_cast<std::size_t>(c)];
        }
      }
      CHECK(same);
    }
    CHECK(cudaGraphExecDestroy(instance) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    CHECK(cudaStreamDestroy(stream) == cudaSuccess);
  }
}

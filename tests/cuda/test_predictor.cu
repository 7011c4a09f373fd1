// SPDX-License-Identifier: Apache-2.0
/// @file test_predictor.cu
/// @brief The CUDA image predictor (ragged batches of image tokens, the attention per sequence,
/// the global mean), output predictor, FastV and H2O scorers against their CPU twins (random
/// weights; fp32 to rounding, fp16 and bf16 to their precision, with the same keep decisions
/// wherever the margin is clear), the `two_way_predictor` model on CUDA, and the whole decode step
/// (score, gate, gated append, StreamingLLM eviction) captured in one CUDA graph and replayed
/// against the host pipeline.
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/kvcache/cuda/device_kv_cache.cuh>
#include <dynllava/kvcache/cuda/device_kv_caches.cuh>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/kv_steps.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>
#include <dynllava/score/cuda/device_fastv.cuh>
#include <dynllava/score/cuda/device_h2o_scorer.cuh>
#include <dynllava/score/cuda/device_image_predictor.cuh>
#include <dynllava/score/cuda/device_image_predictor_weights.cuh>
#include <dynllava/score/cuda/device_output_predictor.cuh>
#include <dynllava/score/fastv_scorer.hpp>
#include <dynllava/score/h2o_scorer.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/random_weights.hpp>
#include <dynllava/select/cuda/device_gate.cuh>
#include <dynllava/select/gate.hpp>

#include <support/cuda_predictors.cuh>
#include <support/cuda_readback.cuh>
#include <support/random.hpp>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

using namespace dynllava;
namespace dc = dynllava::cuda;  // `cuda` alone is ambiguous with CCCL's ::cuda
using dc::device_buffer;
using test::cublas_handle;
using test::host_weights;
using test::widen;

namespace {

predictor_config small_config() {
  predictor_config c;
  c.hidden = 96;
  c.output_head = {64, 32, 16};
  return c;
}

std::vector<float> random_rows(test::rng& g, std::size_t n) { return test::normal_values(g, n); }

template <class T>
std::vector<float> device_logits(const dc::device_output_predictor<T>& p, cublasHandle_t handle,
                                 const std::vector<float>& hidden) {
  std::vector<T> stored(hidden.size());
  for (std::size_t i = 0; i < hidden.size(); ++i) stored[i] = static_cast<T>(hidden[i]);
  device_buffer<T> d_hidden(stored);
  const std::size_t tokens = hidden.size() / static_cast<std::size_t>(p.hidden());
  device_buffer<float> d_logits(std::max<std::size_t>(2 * tokens, 1));
  const device_span<float> out(d_logits.data(), 2 * tokens);
  std::size_t bytes = 0;
  REQUIRE(dc::output_predictor_logits(nullptr, bytes, handle, p.view(),
                                      std::as_const(d_hidden).view(), out, nullptr) == cudaSuccess);
  device_buffer<unsigned char> temp(bytes);
  REQUIRE(dc::output_predictor_logits(temp.data(), bytes, handle, p.view(),
                                      std::as_const(d_hidden).view(), out, nullptr) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  auto l = d_logits.to_host();
  l.resize(2 * tokens);
  return l;
}

/// Compares logits within `tol` (absolute + relative) and the keep decisions of tokens whose
/// CPU margin exceeds `clear`.
void check_close(const std::vector<float>& got, const std::vector<float>& expected, float tol,
                 float clear) {
  REQUIRE(got.size() == expected.size());
  std::size_t bad = 0;
  std::size_t flipped = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - expected[i]) <= tol * (1.0f + std::fabs(expected[i])))) ++bad;
  }
  for (std::size_t t = 0; 2 * t < got.size(); ++t) {
    const float margin = expected[2 * t] - expected[2 * t + 1];
    if (std::fabs(margin) > clear && argmax_keeps(got[2 * t], got[2 * t + 1]) !=
                                         argmax_keeps(expected[2 * t], expected[2 * t + 1])) {
      ++flipped;
    }
  }
  CHECK(bad == 0);
  CHECK(flipped == 0);
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("H2O: the CUDA accumulated-attention scorer follows the CPU twin step by step") {
    constexpr std::size_t batch = 5;
    h2o_scorer cpu(batch);
    dc::h2o_device_scorer gpu(batch, 300);
    test::rng g(44);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int step = 0; step < 30; ++step) {
      CAPTURE(step);
      std::vector<index_t> counts(batch);
      for (auto& c : counts) c = static_cast<index_t>(g() % (step == 0 ? 40 : 3));
      cpu.append(host, make_host_span(std::as_const(counts)));
      device_buffer<index_t> d_counts(counts);
      gpu.append(dc::on_stream{}, std::as_const(d_counts).view());
      // attention of `rows` queries x heads over every tracked token
      std::vector<index_t> indptr{0};
      std::vector<float> probs;
      for (std::size_t b = 0; b < batch; ++b) {
        const auto n = static_cast<std::size_t>(cpu.tracked(b));
        const std::size_t rows = n == 0 ? 0 : 1 + g() % 4;
        for (std::size_t i = 0; i < rows * n; ++i) probs.push_back(u(g));
        indptr.push_back(static_cast<index_t>(probs.size()));
      }
      cpu.accumulate(host, host_ragged<const float>{make_host_span(indptr), make_host_span(probs)});
      device_buffer<index_t> d_indptr(indptr);
      device_buffer<float> d_probs(probs.empty() ? std::vector<float>{0.0f} : probs);
      gpu.accumulate(dc::on_stream{}, ragged_span<const float, device_space>{
                                          std::as_const(d_indptr).view(),
                                          device_span<const float>(d_probs.data(), probs.size())});
      if (step % 4 == 3) {  // evict a random subset
        std::vector<index_t> kept_indptr{0};
        std::vector<index_t> kept;
        for (std::size_t b = 0; b < batch; ++b) {
          for (index_t j = 0; j < cpu.tracked(b); ++j) {
            if (g() % 3 != 0) kept.push_back(j);
          }
          kept_indptr.push_back(static_cast<index_t>(kept.size()));
        }
        cpu.retain(host,
                   host_ragged<const index_t>{make_host_span(kept_indptr), make_host_span(kept)});
        device_buffer<index_t> d_kept_indptr(kept_indptr),
            d_kept(kept.empty() ? std::vector<index_t>{0} : kept);
        gpu.retain(dc::on_stream{}, ragged_span<const index_t, device_space>{
                                        std::as_const(d_kept_indptr).view(),
                                        device_span<const index_t>(d_kept.data(), kept.size())});
      }
      std::size_t total = 0;
      for (std::size_t b = 0; b < batch; ++b) {
        REQUIRE(gpu.tracked(b) == cpu.tracked(b));
        total += static_cast<std::size_t>(cpu.tracked(b));
      }
      std::vector<float> expected(total);
      cpu.scores(host, make_host_span(expected));
      device_buffer<float> d_out(std::max<std::size_t>(total, 1));
      gpu.scores(dc::on_stream{}, device_span<float>(d_out.data(), total));
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      const auto got = d_out.to_host();
      for (std::size_t i = 0; i < total; ++i) {
        CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-6).scale(1e-6));
      }
      int flag = 0;
      REQUIRE(cudaMemcpy(&flag, gpu.invalid_flag(), sizeof(int), cudaMemcpyDeviceToHost) ==
              cudaSuccess);
      CHECK(flag == 0);
    }
    // an append beyond the capacity changes nothing and raises the flag
    const std::vector<index_t> too_many(batch, 1000);
    device_buffer<index_t> d_too_many(too_many);
    const index_t before = gpu.tracked(0);
    gpu.append(dc::on_stream{}, std::as_const(d_too_many).view());
    CHECK(gpu.tracked(0) == before);
    int flag = 0;
    REQUIRE(cudaMemcpy(&flag, gpu.invalid_flag(), sizeof(int), cudaMemcpyDeviceToHost) ==
            cudaSuccess);
    CHECK(flag == 1);
  }

  TEST_CASE("FastV: CUDA scores equal the CPU twin; candidates outside the context are flagged") {
    const fastv_scorer cpu_scorer{4, 16};
    test::rng g(43);
    const auto lengths = test::random_lengths(g, 7, 700);
    const auto key_indptr = test::indptr_of(lengths);
    const index_t width = 64;
    const auto rows = static_cast<std::size_t>(key_indptr.back());
    const auto keys = random_rows(g, rows * width);
    const auto queries = random_rows(g, lengths.size() * width);
    std::vector<index_t> cand_indptr{0};
    std::vector<index_t> cands;
    for (index_t n : lengths) {
      for (index_t j = 0; j < n; ++j) {
        if (g() % 3 == 0) cands.push_back(j);
      }
      cand_indptr.push_back(static_cast<index_t>(cands.size()));
    }
    std::vector<float> expected(cands.size());
    cpu_scorer.score(
        host, make_host_span(queries),
        host_ragged_rows<const float>{make_host_span(key_indptr), make_host_span(keys), width},
        host_ragged<const index_t>{make_host_span(cand_indptr), make_host_span(cands)},
        make_host_span(expected));
    device_buffer<float> d_keys(keys), d_queries(queries),
        d_scores(std::max<std::size_t>(cands.size(), 1));
    device_buffer<index_t> d_key_indptr(key_indptr), d_cand_indptr(cand_indptr),
        d_cands(cands.empty() ? std::vector<index_t>{0} : cands);
    device_buffer<int> invalid(std::vector<int>{0});
    dc::fastv_device_scorer scorer{4, 16, nullptr, 0, invalid.data()};
    device_buffer<unsigned char> temp(scorer.workspace_bytes(rows));
    scorer.temp = temp.data();
    scorer.temp_bytes = temp.size();
    const ragged_rows<const float, device_space> key_view{std::as_const(d_key_indptr).view(),
                                                          std::as_const(d_keys).view(), width};
    const ragged_span<const index_t, device_space> cand_view{
        std::as_const(d_cand_indptr).view(),
        device_span<const index_t>(d_cands.data(), cands.size())};
    scorer.score(dc::on_stream{}, std::as_const(d_queries).view(), key_view, cand_view,
                 device_span<float>(d_scores.data(), cands.size()));
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    CHECK(invalid.to_host()[0] == 0);
    const auto got = d_scores.to_host();
    for (std::size_t i = 0; i < cands.size(); ++i) {
      CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-4).scale(1e-6));
    }
    // a candidate outside its context: flagged, scored 0
    if (!cands.empty() && lengths[0] > 0 && cand_indptr[1] > 0) {
      std::vector<index_t> bad = cands;
      bad[0] = lengths[0];
      device_buffer<index_t> d_bad(bad);
      scorer.score(dc::on_stream{}, std::as_const(d_queries).view(), key_view,
                   ragged_span<const index_t, device_space>{std::as_const(d_cand_indptr).view(),
                                                            std::as_const(d_bad).view()},
                   device_span<float>(d_scores.data(), cands.size()));
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      CHECK(invalid.to_host()[0] == 1);
      CHECK(d_scores.to_host()[0] == 0.0f);
    }
    // offsets that disagree with the sizes (found on the device): flagged, nothing written
    for (const bool keys_bad : {true, false}) {
      CAPTURE(keys_bad);
      if (lengths.size() < 2 || cands.empty()) break;
      std::vector<index_t> bad = keys_bad ? key_indptr : cand_indptr;
      std::swap(bad[0], bad[bad.size() - 1]);  // starts past 0, ends at 0: decreasing
      device_buffer<index_t> d_bad(bad);
      device_buffer<float> d_untouched(std::vector<float>(cands.size(), -5.0f));
      const std::vector<int> zero{0};
      invalid.copy_from(make_host_span(zero));
      scorer.score(
          dc::on_stream{}, std::as_const(d_queries).view(),
          ragged_rows<const float, device_space>{
              keys_bad ? std::as_const(d_bad).view() : key_view.indptr, key_view.values, width},
          ragged_span<const index_t, device_space>{
              keys_bad ? cand_view.indptr : std::as_const(d_bad).view(), cand_view.values},
          d_untouched.view());
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      CHECK(invalid.to_host()[0] == 1);
      CHECK(d_untouched.to_host() == std::vector<float>(cands.size(), -5.0f));
    }
  }

  TEST_CASE("image predictor: CUDA logits equal the CPU twin, fp32, fp16 and bf16, ragged") {
    const predictor_config c = test::small_image_config();
    const auto weights = random_image_predictor_weights(c, 41);
    const image_predictor cpu_predictor(c, weights);
    cublas_handle handle;
    test::rng g(42);
    const std::vector<index_t> lengths{576, 0, 1, 37, 200};
    const auto indptr = test::indptr_of(lengths);
    const auto tokens = static_cast<std::size_t>(indptr.back());
    const auto hidden = random_rows(g, tokens * static_cast<std::size_t>(c.hidden));
    std::vector<float> expected(2 * tokens);
    cpu_predictor.logits(
        host,
        host_ragged_rows<const float>{make_host_span(indptr), make_host_span(hidden), c.hidden},
        make_host_span(expected));
    device_buffer<index_t> d_indptr(indptr);
    const auto run = [&](const auto& device_predictor, auto) {
      return test::image_logits(device_predictor, handle.h, indptr, hidden);
    };
    // bounds ~20x the errors of an emulation that rounds where the GPU stores (fp16 1e-4, bf16
    // 1e-3 on logits of about 0.3): loose enough for any correct kernel, tight enough to catch a
    // transposed or missing step
    check_close(run(dc::device_image_predictor<float>(c, weights), float{}), expected, 2e-4f,
                1e-3f);
    check_close(run(dc::device_image_predictor<__half>(c, weights), __half{}), expected, 2e-3f,
                0.02f);
    check_close(run(dc::device_image_predictor<__nv_bfloat16>(c, weights), __nv_bfloat16{}),
                expected, 1e-2f, 0.05f);

    // the scores are the margins, and invalid offsets are refused before anything runs
    const dc::device_image_predictor<float> p32(c, weights);
    device_buffer<float> d_hidden(hidden), d_scores(tokens);
    std::size_t bytes = 0;
    REQUIRE(dc::image_predictor_scores(nullptr, bytes, handle.h, p32.view(), make_host_span(indptr),
                                       std::as_const(d_indptr).view(),
                                       std::as_const(d_hidden).view(), d_scores.view(),
                                       nullptr) == cudaSuccess);
    device_buffer<unsigned char> temp(bytes);
    REQUIRE(dc::image_predictor_scores(temp.data(), bytes, handle.h, p32.view(),
                                       make_host_span(indptr), std::as_const(d_indptr).view(),
                                       std::as_const(d_hidden).view(), d_scores.view(),
                                       nullptr) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    const auto scores = d_scores.to_host();
    for (std::size_t t = 0; t < tokens; ++t) {
      CHECK(scores[t] ==
            doctest::Approx(expected[2 * t] - expected[2 * t + 1]).epsilon(1e-3).scale(1.0));
    }
    // the two_way_predictor model gives the same scores (host offsets set by the caller)
    dc::image_predictor_scorer scorer{p32.view(), handle.h, make_host_span(indptr), nullptr, 0};
    device_buffer<unsigned char> scorer_temp(scorer.scores_bytes(tokens));
    scorer.temp = scorer_temp.data();
    scorer.temp_bytes = scorer_temp.size();
    device_buffer<float> d_scores2(tokens);
    scorer.score(dc::on_stream{},
                 ragged_rows<const float, device_space>{std::as_const(d_indptr).view(),
                                                        std::as_const(d_hidden).view(), c.hidden},
                 d_scores2.view());
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    const auto scores2 = d_scores2.to_host();
    for (std::size_t t = 0; t < tokens; ++t) {
      CHECK(scores2[t] == doctest::Approx(scores[t]).epsilon(1e-6).scale(1e-6));
    }
    // decreasing offsets, with every size consistent with them otherwise
    const std::vector<index_t> bad{0, 600, 500};
    CHECK(dc::image_predictor_logits(
              temp.data(), bytes, handle.h, p32.view(), make_host_span(bad),
              device_span<const index_t>(nullptr, 3),
              device_span<const float>(nullptr, 500 * static_cast<std::size_t>(c.hidden)),
              device_span<float>(nullptr, 2 * 500), nullptr) == cudaErrorInvalidValue);
  }

  TEST_CASE("image predictor: the checkpoints' attention shape (8 heads of 64), ragged, fp32") {
    predictor_config c;  // d_model 512, 8 heads, ffn 2048, 2 blocks, local 256 (the defaults)
    c.hidden = 128;
    const auto weights = random_image_predictor_weights(c, 44);
    const image_predictor cpu_predictor(c, weights);
    cublas_handle handle;
    test::rng g(45);
    // longer than a query tile (128) and a key tile (32), shorter than both, and empty
    const auto indptr = test::indptr_of({576, 3, 0, 130, 33});
    const auto hidden = random_rows(g, static_cast<std::size_t>(indptr.back()) * 128);
    std::vector<float> expected(2 * static_cast<std::size_t>(indptr.back()));
    cpu_predictor.logits(
        host,
        host_ragged_rows<const float>{make_host_span(indptr), make_host_span(hidden), c.hidden},
        make_host_span(expected));
    check_close(
        test::image_logits(dc::device_image_predictor<float>(c, weights), handle.h, indptr, hidden),
        expected, 2e-4f, 1e-3f);
  }

  TEST_CASE("output predictor: CUDA logits equal the CPU twin, fp32, fp16 and bf16") {
    const predictor_config c = small_config();
    const auto weights = random_output_predictor_weights(c, 31);
    const output_predictor cpu_predictor(c, weights);
    const host_weights wide = widen(weights);
    cublas_handle handle;
    test::rng g(32);
    for (std::size_t tokens : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{300}}) {
      CAPTURE(tokens);
      const auto hidden = random_rows(g, tokens * static_cast<std::size_t>(c.hidden));
      const std::vector<index_t> indptr{0, static_cast<index_t>(tokens)};
      std::vector<float> expected(2 * tokens);
      cpu_predictor.logits(
          host,
          host_ragged_rows<const float>{make_host_span(indptr), make_host_span(hidden), c.hidden},
          make_host_span(expected));
      check_close(device_logits(dc::device_output_predictor<float>(wide.view(c)), handle.h, hidden),
                  expected, 1e-4f, 1e-3f);
      check_close(
          device_logits(dc::device_output_predictor<__half>(wide.view(c)), handle.h, hidden),
          expected, 2e-3f, 0.02f);
      check_close(
          device_logits(dc::device_output_predictor<__nv_bfloat16>(wide.view(c)), handle.h, hidden),
          expected, 1e-2f, 0.05f);
    }
  }

  TEST_CASE("output predictor: the CUDA two_way_predictor model scores as the CPU twin") {
    const predictor_config c = small_config();
    const auto weights = random_output_predictor_weights(c, 33);
    const output_predictor cpu_predictor(c, weights);
    const host_weights wide = widen(weights);
    const dc::device_output_predictor<float> device_predictor(wide.view(c));
    cublas_handle handle;
    test::rng g(34);
    const auto lengths = test::random_lengths(g, 6, 20);
    const auto indptr = test::indptr_of(lengths);
    const auto tokens = static_cast<std::size_t>(indptr.back());
    const auto hidden = random_rows(g, tokens * static_cast<std::size_t>(c.hidden));
    std::vector<float> expected(tokens);
    cpu_predictor.score(
        host,
        host_ragged_rows<const float>{make_host_span(indptr), make_host_span(hidden), c.hidden},
        make_host_span(expected));
    dc::output_predictor_scorer scorer{device_predictor.view(), handle.h, nullptr, 0};
    const std::size_t bytes = scorer.workspace_bytes(tokens);
    device_buffer<unsigned char> temp(bytes);
    scorer.temp = temp.data();
    scorer.temp_bytes = bytes;
    device_buffer<index_t> d_indptr(indptr);
    device_buffer<float> d_hidden(hidden), d_scores(std::max<std::size_t>(tokens, 1));
    const ragged_rows<const float, device_space> rows{std::as_const(d_indptr).view(),
                                                      std::as_const(d_hidden).view(), c.hidden};
    scorer.score(dc::on_stream{}, rows, device_span<float>(d_scores.data(), tokens));
    REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
    auto got = d_scores.to_host();
    got.resize(tokens);
    for (std::size_t i = 0; i < tokens; ++i) {
      CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-4).scale(1.0));
    }
    // shape errors throw before anything runs
    CHECK_THROWS_AS(scorer.score(dc::on_stream{},
                                 ragged_rows<const float, device_space>{
                                     std::as_const(d_indptr).view(), std::as_const(d_hidden).view(),
                                     c.hidden + 1},
                                 device_span<float>(d_scores.data(), tokens)),
                    error);
  }

  TEST_CASE("decode step in one CUDA graph: score, gate, gated append, StreamingLLM eviction") {
    const predictor_config c = small_config();
    const auto weights = random_output_predictor_weights(c, 35);
    const output_predictor cpu_predictor(c, weights);
    const host_weights wide = widen(weights);
    const dc::device_output_predictor<float> predictor(wide.view(c));
    cublas_handle handle;
    constexpr std::size_t batch = 4;
    constexpr index_t width = 8;
    constexpr index_t page_size = 2;
    constexpr index_t num_pages = 64;
    constexpr index_t max_pages = 16;
    constexpr index_t sinks = 1;
    constexpr index_t window = 5;
    paged_kv_cache host_cache(paged_kv_config{1, batch, width, page_size, num_pages});
    const dc::device_paged_kv_cache<float> device_cache(
        dc::device_paged_kv_config{1, batch, width, page_size, num_pages, max_pages});
    const dc::paged_kv_layer<float> layer = device_cache.layer(0);
    const dc::device_page_stack stack = device_cache.stack();
    const std::vector<index_t> indptr{0, 1, 2, 3, 4};  // one new token per sequence
    device_buffer<index_t> d_indptr(indptr), d_positions(batch);
    device_buffer<float> d_hidden(batch * c.hidden), d_logits(2 * batch);
    device_buffer<float> d_k(batch * width), d_v(batch * width);
    device_buffer<std::uint8_t> d_mask(batch);
    device_buffer<index_t> gate_indptr(batch + 1), gate_positions(batch);
    device_buffer<index_t> kept_indptr(batch + 1), kept(batch * (sinks + window));
    device_buffer<int> invalid(std::vector<int>{0});

    const auto score = [&](void* temp, std::size_t& bytes, cudaStream_t s) {
      return dc::output_predictor_logits(temp, bytes, handle.h, predictor.view(),
                                         std::as_const(d_hidden).view(), d_logits.view(), s);
    };
    const auto append = [&](void* temp, std::size_t& bytes, cudaStream_t s) {
      return dc::gated_append(temp, bytes, layer, stack, std::as_const(d_indptr).view(),
                              std::as_const(d_k).view(), std::as_const(d_v).view(),
                              std::as_const(d_mask).view(), std::as_const(d_positions).view(),
                              invalid.data(), s);
    };
    const auto retain = [&](void* temp, std::size_t& bytes, cudaStream_t s) {
      return dc::retain(temp, bytes, layer, stack, std::as_const(kept_indptr).view(),
                        std::as_const(kept).view(), invalid.data(), s);
    };
    std::size_t score_bytes = 0, append_bytes = 0, retain_bytes = 0;
    REQUIRE(score(nullptr, score_bytes, nullptr) == cudaSuccess);
    REQUIRE(append(nullptr, append_bytes, nullptr) == cudaSuccess);
    REQUIRE(retain(nullptr, retain_bytes, nullptr) == cudaSuccess);
    device_buffer<unsigned char> score_temp(score_bytes), append_temp(append_bytes),
        retain_temp(retain_bytes);

    cudaStream_t stream{};
    REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    // cuBLAS on the capture stream with its own workspace (setting the stream resets the
    // workspace, so in this order), and one uncaptured call so that nothing loads lazily inside
    REQUIRE(cublasSetStream(handle.h, stream) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cublasSetWorkspace(handle.h, handle.workspace.data(), handle.workspace.size()) ==
            CUBLAS_STATUS_SUCCESS);
    REQUIRE(score(score_temp.data(), score_bytes, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    cudaGraph_t graph{};
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(score(score_temp.data(), score_bytes, stream) == cudaSuccess);
    REQUIRE(dc::argmax_gate(std::as_const(d_indptr).view(), std::as_const(d_logits).view(),
                            d_mask.view(), gate_indptr.view(), gate_positions.view(),
                            invalid.data(), stream) == cudaSuccess);
    REQUIRE(append(append_temp.data(), append_bytes, stream) == cudaSuccess);
    REQUIRE(dc::streaming_kept(device_span<const index_t>(layer.lengths, batch), sinks, window,
                               kept_indptr.view(), kept.view(), stream) == cudaSuccess);
    REQUIRE(retain(retain_temp.data(), retain_bytes, stream) == cudaSuccess);
    REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    cudaGraphExec_t instance{};
    REQUIRE(cudaGraphInstantiate(&instance, graph, 0) == cudaSuccess);

    test::rng g(36);
    const streaming_policy streaming{sinks, window};
    for (index_t step = 0; step < 10; ++step) {
      CAPTURE(step);
      const auto hidden = random_rows(g, batch * static_cast<std::size_t>(c.hidden));
      std::vector<float> kv(batch * width);
      for (auto& x : kv) x = static_cast<float>(g() % 100);
      const std::vector<index_t> pos(batch, step);
      d_hidden.copy_from(make_host_span(hidden));
      d_k.copy_from(make_host_span(std::as_const(kv)));
      d_v.copy_from(make_host_span(std::as_const(kv)));
      d_positions.copy_from(make_host_span(pos));
      // copy_from runs on the legacy stream, which the non-blocking stream does not wait for
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      REQUIRE(cudaGraphLaunch(instance, stream) == cudaSuccess);
      REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);

      // the host pipeline: the device's gate decisions are checked against the CPU logits
      // (clear margins only); the cache is then driven by the device's own decisions
      std::vector<float> expected_logits(2 * batch);
      cpu_predictor.logits(
          host,
          host_ragged_rows<const float>{make_host_span(indptr), make_host_span(hidden), c.hidden},
          make_host_span(expected_logits));
      check_close(d_logits.to_host(), expected_logits, 1e-4f, 1e-3f);
      const auto mask = d_mask.to_host();
      cpu::gated_append(host_cache, online_gate_policy{0}, 0, make_host_span(indptr),
                        make_host_span(std::as_const(kv)), make_host_span(std::as_const(kv)),
                        make_host_span(mask), make_host_span(pos));
      for (std::size_t b = 0; b < batch; ++b) {
        (void)cpu::enforce_retention(host_cache, streaming, 0, b);
      }
      CHECK(invalid.to_host()[0] == 0);
      // the whole layer, token by token (keys, values, positions), and the free stack
      const auto pages = test::copy_to_host(layer.page_table, batch * max_pages);
      test::check_against_host(host_cache, test::read_back(layer, num_pages), batch, width,
                               [&](std::size_t b, index_t i) {
                                 return detail::paged_row(pages.data() + b * max_pages, i,
                                                          page_size);
                               });
      CHECK(test::copy_to_host(stack.count, 1)[0] == host_cache.pool().free_pages());
    }
    CHECK(cudaGraphExecDestroy(instance) == cudaSuccess);
    CHECK(cudaGraphDestroy(graph) == cudaSuccess);
    CHECK(cudaStreamDestroy(stream) == cudaSuccess);
  }
}

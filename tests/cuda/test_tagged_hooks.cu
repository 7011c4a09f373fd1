// SPDX-License-Identifier: Apache-2.0
/// @file test_tagged_hooks.cu
/// @brief The decision points written once for every execution tag (pipeline/tagged_hooks.hpp),
/// instantiated with the CUDA models: `gate_new_tokens(cuda::on_stream, ...)` with the CUDA
/// output predictor (also captured in a CUDA graph and replayed) and `select_tokens(...)` with the
/// CUDA image predictor and `cuda::budgeted_topk`, against the same hooks instantiated with the
/// host models. Scores and logits agree to rounding; the decisions are compared bit for bit with
/// the host rule applied to the device's own scores and logits.
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/pipeline/tagged_hooks.hpp>
#include <dynllava/score/cuda/device_image_predictor.cuh>
#include <dynllava/score/cuda/device_image_predictor_weights.cuh>
#include <dynllava/score/cuda/device_output_predictor.cuh>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/random_weights.hpp>
#include <dynllava/select/cuda/selectors.cuh>

#include <support/compare.hpp>
#include <support/cuda_predictors.cuh>
#include <support/random.hpp>

#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

using namespace dynllava;
namespace dc = dynllava::cuda;  // `cuda` alone is ambiguous with CCCL's ::cuda
using dc::device_buffer;
using test::check_close;

namespace {

static_assert(two_way_predictor<dc::output_predictor_scorer, dc::on_stream>);
static_assert(
    token_selector<dc::budgeted_topk, dc::on_stream, ragged_for<dc::on_stream, const float>>);

/// The first `indptr.back()` kept positions.
std::vector<index_t> head(const std::vector<index_t>& positions,
                          const std::vector<index_t>& indptr) {
  return {positions.begin(), positions.begin() + indptr.back()};
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("tagged hooks: gate_new_tokens on CUDA equals the host instantiation, and replays") {
    predictor_config c;
    c.hidden = 96;
    c.output_head = {64, 32, 16};
    const auto weights = random_output_predictor_weights(c, 81);
    const output_predictor cpu_predictor(c, weights);
    const test::host_weights wide = test::widen(weights);
    const dc::device_output_predictor<float> predictor(wide.view(c));
    test::cublas_handle handle;
    const std::vector<index_t> indptr{0, 1, 1, 4, 5, 7};  // an empty sequence, ragged
    const std::size_t batch = indptr.size() - 1;
    const auto tokens = static_cast<std::size_t>(indptr.back());

    dc::output_predictor_scorer scorer{predictor.view(), handle.h, nullptr, 0};
    device_buffer<unsigned char> temp(scorer.workspace_bytes(tokens));
    scorer.temp = temp.data();
    scorer.temp_bytes = temp.size();
    device_buffer<index_t> d_indptr(indptr);
    device_buffer<float> d_hidden(tokens * static_cast<std::size_t>(c.hidden)),
        d_logits(2 * tokens);
    device_buffer<std::uint8_t> d_keep(tokens);
    device_buffer<index_t> d_kept_indptr(batch + 1), d_kept(tokens);
    const ragged_rows<const float, device_space> rows{std::as_const(d_indptr).view(),
                                                      std::as_const(d_hidden).view(), c.hidden};
    const gate_outputs<dc::on_stream> out{d_logits.view(), d_keep.view(), d_kept_indptr.view(),
                                          d_kept.view()};

    cudaStream_t stream{};
    REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cublasSetStream(handle.h, stream) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cublasSetWorkspace(handle.h, handle.workspace.data(), handle.workspace.size()) ==
            CUBLAS_STATUS_SUCCESS);
    // one call outside the graph (nothing loads lazily inside), then the hook captured once
    gate_new_tokens(dc::on_stream{stream}, scorer, rows, out);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    cudaGraph_t graph{};
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    gate_new_tokens(dc::on_stream{stream}, scorer, rows, out);
    REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    cudaGraphExec_t instance{};
    REQUIRE(cudaGraphInstantiate(&instance, graph, 0) == cudaSuccess);

    test::rng g(82);
    for (int step = 0; step < 6; ++step) {
      CAPTURE(step);
      auto hidden = test::normal_values(g, tokens * static_cast<std::size_t>(c.hidden));
      if (step == 5) {  // a zero row (LayerNorm of a constant row)
        for (std::size_t j = 0; j < static_cast<std::size_t>(c.hidden); ++j) hidden[j] = 0.0f;
      }
      d_hidden.copy_from(make_host_span(std::as_const(hidden)));
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);  // copy_from runs on the legacy stream
      REQUIRE(cudaGraphLaunch(instance, stream) == cudaSuccess);
      REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);

      // the host instantiation of the same hook
      const host_ragged_rows<const float> host_rows{make_host_span(indptr), make_host_span(hidden),
                                                    c.hidden};
      std::vector<float> logits(2 * tokens);
      std::vector<std::uint8_t> keep(tokens);
      std::vector<index_t> kept_indptr(batch + 1), kept(tokens);
      gate_new_tokens(host, cpu_predictor, host_rows,
                      gate_outputs<host_t>{make_host_span(logits), make_host_span(keep),
                                           make_host_span(kept_indptr), make_host_span(kept)});
      const auto device_logits = d_logits.to_host();
      check_close(device_logits, logits, 1e-4f);
      // the decisions: the host gate on the device's own logits, bit for bit
      argmax_gate(host, make_host_span(indptr), make_host_span(device_logits), make_host_span(keep),
                  make_host_span(kept_indptr), make_host_span(kept));
      CHECK(d_keep.to_host() == keep);
      CHECK(d_kept_indptr.to_host() == kept_indptr);
      CHECK(head(d_kept.to_host(), kept_indptr) == head(kept, kept_indptr));
    }
    REQUIRE(cudaGraphExecDestroy(instance) == cudaSuccess);
    REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);
    REQUIRE(cublasSetStream(handle.h, nullptr) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);

    // host-visible extents are refused before anything is enqueued
    auto bad = out;
    bad.kept_positions = device_span<index_t>(d_kept.data(), tokens - 1);
    CHECK_THROWS_AS(gate_new_tokens(dc::on_stream{}, scorer, rows, bad), error);
    CHECK_THROWS_AS(
        gate_new_tokens(
            dc::on_stream{}, scorer,
            ragged_rows<const float, device_space>{
                rows.indptr, rows.values.subspan(0, static_cast<std::size_t>(c.hidden)), c.hidden},
            out),
        error);
  }

  TEST_CASE(
      "tagged hooks: select_tokens on CUDA (image predictor, budgeted top-k) equals the host") {
    const predictor_config c = test::small_image_config();
    const auto weights = random_image_predictor_weights(c, 83);
    const image_predictor cpu_predictor(c, weights);
    const dc::device_image_predictor<float> predictor(c, weights);
    test::cublas_handle handle;
    test::rng g(84);
    const std::vector<index_t> indptr = test::indptr_of({576, 0, 1, 37, 200, 576});
    const std::size_t batch = indptr.size() - 1;
    const auto tokens = static_cast<std::size_t>(indptr.back());
    const auto hidden = test::normal_values(g, tokens * static_cast<std::size_t>(c.hidden));

    dc::image_predictor_scorer scorer{predictor.view(), handle.h, make_host_span(indptr), nullptr,
                                      0};
    device_buffer<unsigned char> scorer_temp(scorer.scores_bytes(tokens));
    scorer.temp = scorer_temp.data();
    scorer.temp_bytes = scorer_temp.size();
    device_buffer<index_t> d_indptr(indptr);
    device_buffer<float> d_hidden(hidden), d_scores(tokens), d_logits(2 * tokens);
    device_buffer<index_t> d_kept_indptr(batch + 1), d_kept(tokens);
    device_buffer<int> d_invalid(std::vector<int>{0});
    const ragged_rows<const float, device_space> rows{std::as_const(d_indptr).view(),
                                                      std::as_const(d_hidden).view(), c.hidden};

    for (const double ratio : {0.0, 0.2, 1.0}) {
      CAPTURE(ratio);
      dc::budgeted_topk selector{topk_budget<device_space>::keep_ratio(ratio), {}, 576};
      device_buffer<unsigned char> topk_temp(selector.workspace_bytes(batch));
      selector.temp = topk_temp.data();
      selector.temp_bytes = topk_temp.size();
      selector.d_invalid = d_invalid.data();
      // with the logits too: the scores are then their margins (keep_margins on the stream)
      const index_t count =
          select_tokens(dc::on_stream{}, scorer, rows, selector,
                        selection_outputs<dc::on_stream>{d_scores.view(), d_kept_indptr.view(),
                                                         d_kept.view(), d_logits.view()});
      CHECK(count == kept_count_on_device);
      REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
      CHECK(d_invalid.to_host()[0] == 0);

      // the host instantiation: the CPU predictor and the host top-k
      std::vector<float> scores(tokens);
      std::vector<index_t> kept_indptr(batch + 1), kept(tokens);
      const budgeted_topk host_selector{keep_ratio(ratio), {}};
      (void)select_tokens(
          host, cpu_predictor,
          host_ragged_rows<const float>{make_host_span(indptr), make_host_span(hidden), c.hidden},
          host_selector,
          selection_outputs<host_t>{make_host_span(scores), make_host_span(kept_indptr),
                                    make_host_span(kept)});
      const auto device_scores = d_scores.to_host();
      check_close(device_scores, scores, 2e-4f);
      const auto device_logits = d_logits.to_host();
      for (std::size_t t = 0; t < tokens; ++t) {
        CHECK(device_scores[t] == keep_margin(device_logits[2 * t], device_logits[2 * t + 1]));
      }
      // the kept sets: the host top-k of the device's own scores, bit for bit
      const index_t n = host_selector.select(
          host, host_ragged<const float>{make_host_span(indptr), make_host_span(device_scores)},
          make_host_span(kept_indptr), make_host_span(kept));
      CHECK(n == kept_indptr.back());
      CHECK(d_kept_indptr.to_host() == kept_indptr);
      CHECK(head(d_kept.to_host(), kept_indptr) == head(kept, kept_indptr));
    }
  }

  TEST_CASE("tagged hooks: the integration guide's CUDA calls, on one stream") {
    predictor_config c;
    c.hidden = 64;
    c.d_model = 32;
    c.heads = 4;
    c.ffn = 48;
    c.local_dim = 16;
    c.image_head = {16, 8};
    c.output_head = {32, 16, 8};
    const index_t H = c.hidden;
    const auto output_host_weights = random_output_predictor_weights(c, 85);
    const test::host_weights wide = test::widen(output_host_weights);
    const dc::device_output_predictor<float> weights(wide.view(c));
    const dc::device_image_predictor<float> image_weights(c, random_image_predictor_weights(c, 86));
    test::cublas_handle handle;
    const cublasHandle_t cublas = handle.h;
    cudaStream_t stream{};
    REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cublasSetStream(cublas, stream) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cublasSetWorkspace(cublas, handle.workspace.data(), handle.workspace.size()) ==
            CUBLAS_STATUS_SUCCESS);
    // decode: 3 sequences, one new token each; prefill: images of 576 and 40 tokens
    test::rng g(87);
    const std::vector<index_t> indptr{0, 1, 2, 3}, image_indptr{0, 576, 616};
    const host_span<const index_t> host_indptr = make_host_span(image_indptr);
    device_buffer<index_t> indptr_buffer(indptr), image_indptr_buffer(image_indptr);
    device_buffer<float> hidden_buffer(test::normal_values(g, 3 * static_cast<std::size_t>(H)));
    device_buffer<float> image_buffer(test::normal_values(g, 616 * static_cast<std::size_t>(H)));
    device_buffer<float> logits_buffer(6), scores_buffer(616);
    device_buffer<std::uint8_t> keep_buffer(3);
    device_buffer<index_t> kept_indptr_buffer(4), kept_buffer(3), image_kept_indptr_buffer(3),
        image_kept_buffer(616);
    const device_span<const index_t> d_indptr = std::as_const(indptr_buffer).view();
    const device_span<const index_t> d_image_indptr = std::as_const(image_indptr_buffer).view();
    const device_span<const float> d_hidden = std::as_const(hidden_buffer).view();
    const device_span<const float> d_image_rows = std::as_const(image_buffer).view();
    const device_span<float> d_logits = logits_buffer.view(), d_scores = scores_buffer.view();
    const device_span<std::uint8_t> d_keep = keep_buffer.view();
    const device_span<index_t> d_kept_indptr = kept_indptr_buffer.view(),
                               d_kept = kept_buffer.view(),
                               d_image_kept_indptr = image_kept_indptr_buffer.view(),
                               d_image_kept = image_kept_buffer.view();
    // the workspaces, sized by the models
    const std::size_t temp_bytes =
        dc::output_predictor_scorer{weights.view(), cublas, nullptr, 0}.workspace_bytes(3);
    const std::size_t temp2_bytes =
        dc::image_predictor_scorer{image_weights.view(), cublas, host_indptr, nullptr, 0}
            .scores_bytes(616);
    const std::size_t temp3_bytes =
        dc::budgeted_topk{topk_budget<device_space>::keep_ratio(0.2), {}, 576}.workspace_bytes(2);
    device_buffer<unsigned char> temp_buffer(temp_bytes), temp2_buffer(temp2_bytes),
        temp3_buffer(temp3_bytes);
    void* const temp = temp_buffer.data();
    void* const temp2 = temp2_buffer.data();
    void* const temp3 = temp3_buffer.data();

    // example-begin cuda-tagged-hooks
    namespace dc = dynllava::cuda;
    // decode: the new tokens' hidden states at layer l, [tokens, H] in device memory
    dc::output_predictor_scorer output{weights.view(), cublas, temp, temp_bytes};
    dynllava::gate_new_tokens(
        dc::on_stream{stream}, output, {d_indptr, d_hidden, H},
        dynllava::gate_outputs<dc::on_stream>{d_logits, d_keep, d_kept_indptr, d_kept});
    // then each layer >= l: your attention, and dc::gated_append(..., d_keep, ...) on your cache

    // prefill: the image rows gathered per (sequence, turn), [n, H] in device memory
    dc::image_predictor_scorer image{image_weights.view(), cublas, host_indptr, temp2, temp2_bytes};
    dc::budgeted_topk top{topk_budget<device_space>::keep_ratio(0.2), {}, 576, temp3, temp3_bytes};
    dynllava::select_tokens(
        dc::on_stream{stream}, image, {d_image_indptr, d_image_rows, H}, top,
        dynllava::selection_outputs<dc::on_stream>{d_scores, d_image_kept_indptr, d_image_kept});
    // example-end
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    REQUIRE(cublasSetStream(cublas, nullptr) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);

    // the host twins of both calls decide the same on the device's own logits and scores
    const auto logits = logits_buffer.to_host();
    std::vector<std::uint8_t> keep(3);
    std::vector<index_t> kept_indptr(4), kept(3);
    argmax_gate(host, make_host_span(indptr), make_host_span(logits), make_host_span(keep),
                make_host_span(kept_indptr), make_host_span(kept));
    CHECK(keep_buffer.to_host() == keep);
    CHECK(kept_indptr_buffer.to_host() == kept_indptr);
    CHECK(head(kept_buffer.to_host(), kept_indptr) == head(kept, kept_indptr));
    const auto scores = scores_buffer.to_host();
    std::vector<index_t> image_kept_indptr(3), image_kept(616);
    const index_t n = budgeted_topk{keep_ratio(0.2), {}}.select(
        host, host_ragged<const float>{make_host_span(image_indptr), make_host_span(scores)},
        make_host_span(image_kept_indptr), make_host_span(image_kept));
    CHECK(n == 115 + 8);
    CHECK(image_kept_indptr_buffer.to_host() == image_kept_indptr);
    CHECK(head(image_kept_buffer.to_host(), image_kept_indptr) ==
          head(image_kept, image_kept_indptr));
  }
}

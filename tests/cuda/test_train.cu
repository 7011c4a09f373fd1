// SPDX-License-Identifier: Apache-2.0
/// @file test_train.cu
/// @brief CUDA training operators against their CPU twins: Philox/Gumbel noise (bitwise
/// uniforms), hard Gumbel forward/backward, attention-mask build/backward, MaskedSoftmax
/// forward/backward on random and adversarial ragged batches (empty sequences, n = 1, rows longer
/// than a block, -inf rows, huge scores, several heads), budget loss, workspace and error paths.
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/train/attention_mask.hpp>
#include <dynllava/train/budget_loss.hpp>
#include <dynllava/train/cuda/device_attention_mask.cuh>
#include <dynllava/train/cuda/device_budget_loss.cuh>
#include <dynllava/train/cuda/device_gumbel.cuh>
#include <dynllava/train/cuda/device_masked_softmax.cuh>
#include <dynllava/train/gumbel.hpp>
#include <dynllava/train/masked_softmax.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

using namespace dynllava;
using cuda::device_buffer;

namespace {

void stream_sync() { REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess); }

/// |a - b| <= abs + rel * |b| elementwise (NaN must match NaN).
void check_close(const std::vector<float>& got, const std::vector<float>& want, float rel,
                 float abs, const char* what) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!both_nan && !(std::abs(got[i] - want[i]) <= abs + rel * std::abs(want[i]))) {
      if (bad < 5) MESSAGE(what << "[" << i << "]: got " << got[i] << ", want " << want[i]);
      ++bad;
    }
  }
  CHECK(bad == 0);
}

std::size_t squares(const std::vector<index_t>& indptr) {
  std::size_t s = 0;
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    const auto n = static_cast<std::size_t>(indptr[b + 1] - indptr[b]);
    s += n * n;
  }
  return s;
}

std::vector<float> normal(test::rng& g, std::size_t n, double sd) {
  std::normal_distribution<double> nd(0.0, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(nd(g));
  return v;
}

/// Scores with ties, -inf entries (a whole row sometimes) and huge magnitudes.
std::vector<float> adversarial_scores(test::rng& g, std::size_t n) {
  std::uniform_int_distribution<int> kind(0, 9);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> v(n);
  for (auto& x : v) {
    const int k = kind(g);
    x = k == 0   ? -std::numeric_limits<float>::infinity()
        : k == 1 ? 1.0f
        : k == 2 ? 3e4f
        : k == 3 ? -3e4f
                 : nd(g);
  }
  return v;
}

void run_masked_softmax(test::rng& g, const std::vector<index_t>& indptr, index_t heads,
                        bool causal, bool adversarial) {
  CAPTURE(heads);
  CAPTURE(causal);
  CAPTURE(adversarial);
  const std::size_t sq = squares(indptr);
  const std::size_t nnz = static_cast<std::size_t>(indptr.back());
  masked_softmax_params p;
  p.heads = heads;
  p.causal = causal;
  const auto x = adversarial ? adversarial_scores(g, sq * static_cast<std::size_t>(heads))
                             : normal(g, sq * static_cast<std::size_t>(heads), 3.0);
  std::vector<float> keep(nnz);
  std::bernoulli_distribution coin(0.4);
  for (auto& k : keep) k = coin(g) ? 1.0f : 0.0f;
  std::vector<float> mask(sq);
  cpu::build_attention_mask<float>(make_host_span(indptr), make_host_span(std::as_const(keep)),
                                   make_host_span(mask), {2, 2});
  const auto up = normal(g, x.size(), 1.0);
  std::vector<float> attn(x.size()), dx(x.size()), dg(sq), dk(nnz);
  cpu::masked_softmax_forward<float>(make_host_span(indptr), make_host_span(x),
                                     make_host_span(std::as_const(mask)), make_host_span(attn), p);
  cpu::masked_softmax_backward<float>(make_host_span(indptr), make_host_span(x),
                                      make_host_span(std::as_const(mask)), make_host_span(up),
                                      make_host_span(dx), make_host_span(dg), p);
  cpu::attention_mask_backward<float>(make_host_span(indptr), make_host_span(std::as_const(dg)),
                                      make_host_span(dk), {2, 2});

  device_buffer<index_t> d_indptr(indptr);
  device_buffer<float> d_keep(keep), d_x(x), d_up(up), d_mask(sq), d_attn(x.size()), d_dx(x.size()),
      d_dg(sq), d_dk(nnz);
  device_buffer<int> d_invalid(std::vector<int>{0});
  build_attention_mask(cuda::on_stream{}, d_indptr.view(), d_keep.view(), d_mask.view(), {2, 2},
                       d_invalid.data());
  masked_softmax_forward(cuda::on_stream{}, d_indptr.view(), nnz, d_x.view(), d_mask.view(),
                         d_attn.view(), p, d_invalid.data());
  masked_softmax_backward(cuda::on_stream{}, d_indptr.view(), nnz, d_x.view(), d_mask.view(),
                          d_up.view(), d_dx.view(), d_dg.view(), p, d_invalid.data());
  attention_mask_backward(cuda::on_stream{}, d_indptr.view(), d_dg.view(), d_dk.view(), {2, 2},
                          d_invalid.data());
  stream_sync();
  CHECK(d_invalid.to_host()[0] == 0);
  CHECK(d_mask.to_host() == mask);  // exact: pure selection
  check_close(d_attn.to_host(), attn, 1e-5f, 1e-7f, "attn");
  check_close(d_dx.to_host(), dx, 1e-4f, 1e-6f, "d_scores");
  check_close(d_dg.to_host(), dg, 1e-4f, 1e-6f, "d_mask");
  check_close(d_dk.to_host(), dk, 1e-4f, 1e-4f, "d_keep");  // sums up to n terms
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE(
      "gumbel_noise: CUDA uniforms equal the CPU's; the noise agrees to the last bit or ulp") {
    for (std::size_t n : {1u, 7u, 1000u, 100003u}) {
      std::vector<float> cpu_noise(2 * n);
      cpu::gumbel_noise<float>({77, 3}, make_host_span(cpu_noise), 5);
      device_buffer<float> d_noise(2 * n);
      gumbel_noise(cuda::on_stream{}, {77, 3}, d_noise.view(), 5);
      stream_sync();
      check_close(d_noise.to_host(), cpu_noise, 2e-7f, 0.0f, "noise");
    }
  }

  TEST_CASE("gumbel_hard_forward/backward: CUDA equals the CPU twin") {
    test::rng g(31);
    const std::size_t n = 5000;
    auto logits = normal(g, 2 * n, 2.0);
    logits[0] = NAN;
    logits[2] = 1e30f;
    logits[5] = 1e30f;
    std::vector<float> noise(2 * n);
    cpu::gumbel_noise<float>({1, 2}, make_host_span(noise));
    const auto d_keep_h = normal(g, n, 1.0);
    for (double tau : {1.0, 0.1}) {
      std::vector<float> keep(n), soft(n), d_logits(2 * n);
      cpu::gumbel_hard_forward<float>(make_host_span(std::as_const(logits)),
                                      make_host_span(std::as_const(noise)), tau,
                                      make_host_span(keep), make_host_span(soft));
      cpu::gumbel_hard_backward<float>(make_host_span(std::as_const(logits)),
                                       make_host_span(std::as_const(noise)), tau,
                                       make_host_span(d_keep_h), make_host_span(d_logits));
      device_buffer<float> dl(logits), dn(noise), dk(n), ds(n), ddk(d_keep_h), ddl(2 * n);
      gumbel_hard_forward(cuda::on_stream{}, dl.view(), dn.view(), tau, dk.view(), ds.view());
      gumbel_hard_backward(cuda::on_stream{}, dl.view(), dn.view(), tau, ddk.view(), ddl.view());
      stream_sync();
      CHECK(dk.to_host() == keep);  // same expression, IEEE add/sub/div: identical decisions
      check_close(ds.to_host(), soft, 1e-6f, 1e-7f, "soft");
      check_close(ddl.to_host(), d_logits, 1e-5f, 1e-7f, "d_logits");
    }
  }

  TEST_CASE("masked_softmax + attention mask: CUDA equals the CPU twin on random ragged batches") {
    test::rng g(7);
    for (int rep = 0; rep < 4; ++rep) {
      const auto lengths = test::random_lengths(g, 6, 40);
      const auto indptr = test::indptr_of(lengths);
      for (index_t heads : {1, 3}) {
        for (bool causal : {true, false}) run_masked_softmax(g, indptr, heads, causal, false);
      }
    }
  }

  TEST_CASE(
      "masked_softmax: adversarial inputs, n = 1, empty sequences, rows longer than a block") {
    test::rng g(8);
    for (const auto& lengths : {std::vector<index_t>{1}, std::vector<index_t>{0, 1, 0, 2},
                                std::vector<index_t>{700, 3}, std::vector<index_t>{257, 0, 31}}) {
      const auto indptr = test::indptr_of(lengths);
      for (bool causal : {true, false}) {
        run_masked_softmax(g, indptr, 2, causal, true);
        run_masked_softmax(g, indptr, 1, causal, false);
      }
    }
    // an empty batch launches nothing and succeeds
    run_masked_softmax(g, std::vector<index_t>{0}, 1, true, false);
  }

  TEST_CASE("budget_loss: CUDA equals the CPU twin") {
    test::rng g(9);
    const auto img_indptr = test::indptr_of(test::random_lengths(g, 9, 600));
    const auto out_indptr = test::indptr_of(std::vector<index_t>{60, 3, 0, 50, 49, 1000});
    std::uniform_real_distribution<float> ud(0.0f, 1.0f);
    std::vector<float> img(static_cast<std::size_t>(img_indptr.back()));
    std::vector<float> out(static_cast<std::size_t>(out_indptr.back()));
    for (auto& v : img) v = ud(g) < 0.3f ? 1.0f : 0.0f;
    for (auto& v : out) v = ud(g);
    const float loss =
        cpu::budget_loss_forward<float>(make_host_span(img_indptr), make_host_span(img),
                                        make_host_span(out_indptr), make_host_span(out));
    std::vector<float> d_img(img.size()), d_out(out.size());
    cpu::budget_loss_backward<float>(make_host_span(img_indptr), make_host_span(img),
                                     make_host_span(out_indptr), make_host_span(out), 0.5f,
                                     make_host_span(d_img), make_host_span(d_out));
    device_buffer<index_t> di(img_indptr), doi(out_indptr);
    device_buffer<float> dimg(img), dout(out), dloss(1), dgi(img.size()), dgo(out.size()),
        dup(std::vector<float>{0.5f});
    device_buffer<int> invalid(std::vector<int>{0});
    budget_loss_forward(cuda::on_stream{}, di.view(), dimg.view(), doi.view(), dout.view(),
                        dloss.data(), {}, invalid.data());
    budget_loss_backward(cuda::on_stream{}, di.view(), dimg.view(), doi.view(), dout.view(),
                         dup.data(), dgi.view(), dgo.view(), {}, invalid.data());
    stream_sync();
    CHECK(invalid.to_host()[0] == 0);
    check_close(dloss.to_host(), {loss}, 1e-5f, 1e-7f, "loss");
    check_close(dgi.to_host(), d_img, 1e-5f, 1e-9f, "d_image_mask");
    check_close(dgo.to_host(), d_out, 1e-5f, 1e-9f, "d_output_mask");
  }

  TEST_CASE(
      "train CUDA APIs: workspace query, too-small workspace, invalid layouts, bad arguments") {
    const std::vector<index_t> indptr{0, 2, 5};
    device_buffer<index_t> d_indptr(indptr);
    device_buffer<float> x(13), mask(13), out(13), keep(5);
    std::size_t bytes = 0;
    CHECK(cuda::masked_softmax_forward(nullptr, bytes, d_indptr.view(), 5, x.view(), mask.view(),
                                       out.view(), {}, nullptr, nullptr) == cudaSuccess);
    CHECK(bytes > 0);
    device_buffer<unsigned char> temp(bytes);
    std::size_t small = 1;
    CHECK(cuda::masked_softmax_forward(temp.data(), small, d_indptr.view(), 5, x.view(),
                                       mask.view(), out.view(), {}, nullptr,
                                       nullptr) == cudaErrorInvalidValue);
    // a wrong token count is caught on the device: nothing written, flag raised
    device_buffer<int> flag(std::vector<int>{0});
    CHECK(cuda::masked_softmax_forward(temp.data(), bytes, d_indptr.view(), 4, x.view(),
                                       mask.view(), out.view(), {}, flag.data(),
                                       nullptr) == cudaSuccess);
    stream_sync();
    CHECK(flag.to_host()[0] == 1);
    const std::vector<index_t> bad{0, 3, 2};
    device_buffer<index_t> d_bad(bad);
    device_buffer<int> flag2(std::vector<int>{0});
    build_attention_mask(cuda::on_stream{}, d_bad.view(), keep.view(), mask.view(), {},
                         flag2.data());
    stream_sync();
    CHECK(flag2.to_host()[0] == 1);
    masked_softmax_params p;
    p.heads = 0;
    CHECK_THROWS_WITH_AS(masked_softmax_forward(cuda::on_stream{}, d_indptr.view(), 5, x.view(),
                                                mask.view(), out.view(), p),
                         doctest::Contains("heads must be > 0"), dynllava::error);
    CHECK_THROWS_WITH_AS(masked_softmax_forward(cuda::on_stream{}, d_indptr.view(), 5, x.view(),
                                                mask.view().subspan(0, 12), out.view()),
                         doctest::Contains("scores must hold heads * mask.size()"),
                         dynllava::error);
    device_buffer<float> odd(3), k(2), s(2);
    CHECK_THROWS_AS(
        gumbel_hard_forward(cuda::on_stream{}, odd.view(), odd.view(), 1.0, k.view(), s.view()),
        dynllava::error);
    CHECK_THROWS_AS(gumbel_hard_forward(cuda::on_stream{}, keep.view().subspan(0, 4),
                                        keep.view().subspan(0, 4), 0.0, k.view(), s.view()),
                    dynllava::error);
    budget_loss_params bp;
    bp.image_keep_rate = 2.0;
    device_buffer<float> loss(1);
    CHECK_THROWS_AS(budget_loss_forward(cuda::on_stream{}, d_indptr.view(), keep.view(),
                                        d_indptr.view(), keep.view(), loss.data(), bp),
                    dynllava::error);
    // the CUDA context is still usable afterwards
    CHECK(cudaGetLastError() == cudaSuccess);
  }
}

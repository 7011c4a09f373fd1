// SPDX-License-Identifier: Apache-2.0
/// @file test_train_budget_loss.cpp
/// @brief Budget loss on the CPU: hand-computed values, short answers, gradients by finite
/// differences (fp64), ragged batch versus sequences alone, error cases.
#include <dynllava/train/budget_loss.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <utility>
#include <vector>

using namespace dynllava;

TEST_SUITE("cpu") {
  TEST_CASE("budget_loss_forward: hand-computed value with the reference defaults") {
    // image: two sequences with keep rates 0.5 and 0.0; answers: 60 tokens at rate 0.25 and a
    // 10-token answer (no term).
    const std::vector<index_t> img_indptr{0, 4, 6};
    const std::vector<float> img{1, 0, 1, 0, 0, 0};
    std::vector<index_t> out_indptr{0, 60, 70};
    std::vector<float> out(70, 0.0f);
    for (std::size_t j = 0; j < 60; j += 4) out[j] = 1.0f;  // 15 of 60 kept
    for (std::size_t j = 60; j < 70; ++j) out[j] = 1.0f;    // short: ignored
    const float loss =
        cpu::budget_loss_forward<float>(make_host_span(img_indptr), make_host_span(img),
                                        make_host_span(out_indptr), make_host_span(out));
    const double expected = 100.0 * (((0.2 - 0.5) * (0.2 - 0.5) + 0.2 * 0.2) / 2.0 +
                                     ((0.5 - 0.25) * (0.5 - 0.25)) / 2.0);
    CHECK(loss == doctest::Approx(expected).epsilon(1e-6));
    CHECK(budget_loss_forward<float>(host, make_host_span(img_indptr), make_host_span(img),
                                     make_host_span(out_indptr), make_host_span(out)) == loss);
  }

  TEST_CASE(
      "budget_loss: answers shorter than min_output_tokens contribute nothing, not even gradient") {
    const std::vector<index_t> img_indptr{0};
    const std::vector<index_t> out_indptr{0, 49, 99};
    std::vector<double> out(99, 0.9);
    budget_loss_params p;
    const double loss = cpu::budget_loss_forward<double>(
        make_host_span(img_indptr), host_span<const double>{}, make_host_span(out_indptr),
        make_host_span(std::as_const(out)), p);
    CHECK(loss == doctest::Approx(100.0 * (0.4 * 0.4) / 2.0));
    std::vector<double> d_out(99);
    cpu::budget_loss_backward<double>(
        make_host_span(img_indptr), host_span<const double>{}, make_host_span(out_indptr),
        make_host_span(std::as_const(out)), 1.0, host_span<double>{}, make_host_span(d_out), p);
    for (std::size_t j = 0; j < 49; ++j) CHECK(d_out[j] == 0.0);
    CHECK(d_out[49] == doctest::Approx(100.0 * 2.0 * 0.4 / (2.0 * 50.0)));
    p.min_output_tokens = 10;
    CHECK(cpu::budget_loss_forward<double>(
              make_host_span(img_indptr), host_span<const double>{}, make_host_span(out_indptr),
              make_host_span(std::as_const(out)), p) == doctest::Approx(100.0 * 0.16));
  }

  TEST_CASE("budget_loss: empty batches and empty sequences") {
    const std::vector<index_t> none{0};
    CHECK(cpu::budget_loss_forward<float>(make_host_span(none), host_span<const float>{},
                                          host_span<const index_t>{},
                                          host_span<const float>{}) == 0.0f);
    const std::vector<index_t> img_indptr{0, 0, 2};
    const std::vector<float> img{0.2f, 0.2f};
    // the empty image sequence has no term but counts in the batch mean
    CHECK(cpu::budget_loss_forward<float>(make_host_span(img_indptr), make_host_span(img),
                                          make_host_span(none),
                                          host_span<const float>{}) == doctest::Approx(0.0));
    budget_loss_params p;
    p.min_output_tokens = 0;
    const std::vector<index_t> out_indptr{0, 0};
    CHECK(cpu::budget_loss_forward<float>(make_host_span(none), host_span<const float>{},
                                          make_host_span(out_indptr), host_span<const float>{},
                                          p) == 0.0f);
  }

  TEST_CASE("budget_loss_backward: gradients equal finite differences (fp64), scaled by d_loss") {
    test::rng g(8);
    const auto img_len = test::random_lengths(g, 5, 20);
    const std::vector<index_t> out_len{55, 3, 80, 0, 50};
    const auto img_indptr = test::indptr_of(img_len);
    const auto out_indptr = test::indptr_of(out_len);
    std::uniform_real_distribution<double> ud(0.0, 1.0);
    std::vector<double> img(static_cast<std::size_t>(img_indptr.back()));
    std::vector<double> out(static_cast<std::size_t>(out_indptr.back()));
    for (auto& v : img) v = ud(g);
    for (auto& v : out) v = ud(g);
    budget_loss_params p;
    p.weight = 3.0;
    p.image_keep_rate = 0.35;
    const double d_loss = 0.7;
    std::vector<double> d_img(img.size()), d_out(out.size());
    budget_loss_backward<double>(host, make_host_span(img_indptr),
                                 make_host_span(std::as_const(img)), make_host_span(out_indptr),
                                 make_host_span(std::as_const(out)), d_loss, make_host_span(d_img),
                                 make_host_span(d_out), p);
    auto loss = [&](const std::vector<double>& a, const std::vector<double>& b) {
      return d_loss *
             cpu::budget_loss_forward<double>(make_host_span(img_indptr), make_host_span(a),
                                              make_host_span(out_indptr), make_host_span(b), p);
    };
    const double h = 1e-6;
    for (std::size_t i = 0; i < img.size(); ++i) {
      auto a = img, b = img;
      a[i] += h;
      b[i] -= h;
      CHECK(d_img[i] ==
            doctest::Approx((loss(a, out) - loss(b, out)) / (2 * h)).epsilon(1e-6).scale(1.0));
    }
    for (std::size_t i = 0; i < out.size(); ++i) {
      auto a = out, b = out;
      a[i] += h;
      b[i] -= h;
      CHECK(d_out[i] ==
            doctest::Approx((loss(img, a) - loss(img, b)) / (2 * h)).epsilon(1e-6).scale(1.0));
    }
  }

  TEST_CASE("budget_loss: a ragged batch is the mean of each sequence alone") {
    const std::vector<index_t> img_indptr{0, 3, 8};
    const std::vector<double> img{1, 0, 0, 1, 1, 0, 1, 0};
    const std::vector<index_t> out_indptr{0, 50, 110};
    std::vector<double> out(110);
    for (std::size_t j = 0; j < out.size(); ++j) out[j] = static_cast<double>(j % 3) / 2.0;
    const double all = cpu::budget_loss_forward<double>(
        make_host_span(img_indptr), make_host_span(img), make_host_span(out_indptr),
        make_host_span(std::as_const(out)));
    double alone = 0.0;
    for (std::size_t b = 0; b < 2; ++b) {
      const std::vector<index_t> ii{0, img_indptr[b + 1] - img_indptr[b]};
      const std::vector<index_t> oi{0, out_indptr[b + 1] - out_indptr[b]};
      alone += cpu::budget_loss_forward<double>(
          make_host_span(ii),
          make_host_span(img).subspan(static_cast<std::size_t>(img_indptr[b]),
                                      static_cast<std::size_t>(ii[1])),
          make_host_span(oi),
          make_host_span(std::as_const(out))
              .subspan(static_cast<std::size_t>(out_indptr[b]), static_cast<std::size_t>(oi[1])));
    }
    CHECK(all == doctest::Approx(alone / 2.0).epsilon(1e-14));
  }

  TEST_CASE("budget_loss: bad input is a clear error") {
    const std::vector<index_t> indptr{0, 2, 4};
    std::vector<float> m(4), d(4), small(3);
    budget_loss_params p;
    CHECK_THROWS_WITH_AS(
        cpu::budget_loss_forward<float>(make_host_span(indptr),
                                        make_host_span(std::as_const(small)),
                                        make_host_span(indptr), make_host_span(std::as_const(m))),
        doctest::Contains(
            "image_indptr: indptr[batch] must equal the number of elements it indexes (3), got 4"),
        dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::budget_loss_backward<float>(make_host_span(indptr), make_host_span(std::as_const(m)),
                                         make_host_span(indptr), make_host_span(std::as_const(m)),
                                         1.0f, make_host_span(d), make_host_span(small)),
        doctest::Contains("gradients must match the masks"), dynllava::error);
    p.image_keep_rate = 1.5;
    CHECK_THROWS_WITH_AS(cpu::budget_loss_forward<float>(
                             make_host_span(indptr), make_host_span(std::as_const(m)),
                             make_host_span(indptr), make_host_span(std::as_const(m)), p),
                         doctest::Contains("image_keep_rate must be in [0, 1], got 1.5"),
                         dynllava::error);
    p = {};
    p.output_keep_rate = -0.1;
    CHECK_THROWS_AS(cpu::budget_loss_forward<float>(
                        make_host_span(indptr), make_host_span(std::as_const(m)),
                        make_host_span(indptr), make_host_span(std::as_const(m)), p),
                    dynllava::error);
    p = {};
    p.min_output_tokens = -1;
    CHECK_THROWS_WITH_AS(cpu::budget_loss_forward<float>(
                             make_host_span(indptr), make_host_span(std::as_const(m)),
                             make_host_span(indptr), make_host_span(std::as_const(m)), p),
                         doctest::Contains("min_output_tokens must be >= 0"), dynllava::error);
    p = {};
    p.weight = INFINITY;
    CHECK_THROWS_WITH_AS(cpu::budget_loss_forward<float>(
                             make_host_span(indptr), make_host_span(std::as_const(m)),
                             make_host_span(indptr), make_host_span(std::as_const(m)), p),
                         doctest::Contains("weight must be finite"), dynllava::error);
  }
}

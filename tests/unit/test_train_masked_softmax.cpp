// SPDX-License-Identifier: Apache-2.0
/// @file test_train_masked_softmax.cpp
/// @brief MaskedSoftmax and the keep-mask -> attention-mask build on the CPU: gradients by finite
/// differences in fp64, all-ones mask versus ordinary softmax, fully masked rows, ragged batches
/// versus each sequence alone, heads, error cases.
#include <dynllava/train/attention_layout.hpp>
#include <dynllava/train/attention_mask.hpp>
#include <dynllava/train/masked_softmax.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

using namespace dynllava;

namespace {

std::size_t squares(const std::vector<index_t>& indptr) {
  std::size_t s = 0;
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    const auto n = static_cast<std::size_t>(indptr[b + 1] - indptr[b]);
    s += n * n;
  }
  return s;
}

template <class T>
std::vector<T> normal(test::rng& g, std::size_t n, double sd) {
  std::normal_distribution<double> nd(0.0, sd);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(nd(g));
  return v;
}

template <class T>
std::vector<T> uniform01(test::rng& g, std::size_t n) {
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(ud(g));
  return v;
}

template <class T>
std::vector<T> forward(const std::vector<index_t>& indptr, const std::vector<T>& x,
                       const std::vector<T>& mask, masked_softmax_params p) {
  std::vector<T> out(x.size());
  cpu::masked_softmax_forward<T>(make_host_span(indptr), make_host_span(x), make_host_span(mask),
                                 make_host_span(out), p);
  return out;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("sequence_of_token and square_offsets on ragged batches with empty sequences") {
    const std::vector<index_t> indptr{0, 0, 3, 3, 4, 9};
    const index_t expected[] = {1, 1, 1, 3, 4, 4, 4, 4, 4};
    for (index_t t = 0; t < 9; ++t) {
      CHECK(sequence_of_token(indptr.data(), 5, t) == static_cast<std::size_t>(expected[t]));
    }
    std::vector<std::int64_t> sq(6);
    square_offsets(make_host_span(indptr), make_host_span(sq));
    CHECK(sq == std::vector<std::int64_t>{0, 0, 9, 9, 10, 35});
    CHECK(attention_elements(make_host_span(indptr), 3, "t") == 105);
  }

  TEST_CASE(
      "build_attention_mask: causal, diagonal kept, dropped keys masked only from sparse_layer "
      "on") {
    const std::vector<index_t> indptr{0, 3, 5};
    const std::vector<float> keep{0.0f, 1.0f, 0.0f, 0.0f, 0.0f};
    std::vector<float> mask(9 + 4);
    cpu::build_attention_mask<float>(make_host_span(indptr), make_host_span(keep),
                                     make_host_span(mask), {2, 2});
    CHECK(mask == std::vector<float>{1, 0, 0,  //
                                     0, 1, 0,  //
                                     0, 1, 1,  //
                                     1, 0,     //
                                     0, 1});
    build_attention_mask<float>(host, make_host_span(indptr), make_host_span(keep),
                                make_host_span(mask), {1, 2});
    CHECK(mask == std::vector<float>{1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1});
  }

  TEST_CASE("attention_mask_backward: d_keep_j = sum over later queries of dG_ij (and 0 below l)") {
    test::rng g(3);
    const std::vector<index_t> indptr{0, 4, 4, 7};
    const auto d_mask = normal<double>(g, squares(indptr), 1.0);
    std::vector<double> d_keep(7);
    cpu::attention_mask_backward<double>(make_host_span(indptr), make_host_span(d_mask),
                                         make_host_span(d_keep), {3, 2});
    // linear map: check against the adjoint identity <dG, G(k)> - <dG, G(0)> = <d_keep, k>
    const auto k = normal<double>(g, 7, 1.0);
    const std::vector<double> zero(7, 0.0);
    std::vector<double> gk(d_mask.size()), g0(d_mask.size());
    cpu::build_attention_mask<double>(make_host_span(indptr), make_host_span(k), make_host_span(gk),
                                      {3, 2});
    cpu::build_attention_mask<double>(make_host_span(indptr), make_host_span(zero),
                                      make_host_span(g0), {3, 2});
    double lhs = 0.0, rhs = 0.0;
    for (std::size_t i = 0; i < gk.size(); ++i) lhs += d_mask[i] * (gk[i] - g0[i]);
    for (std::size_t i = 0; i < k.size(); ++i) rhs += d_keep[i] * k[i];
    CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
    CHECK(d_keep[3] == 0.0);  // the last token of a sequence is never a key of a later query
    attention_mask_backward<double>(host, make_host_span(indptr), make_host_span(d_mask),
                                    make_host_span(d_keep), {1, 2});
    for (double v : d_keep) CHECK(v == 0.0);
  }

  TEST_CASE("masked_softmax_forward: an all-ones mask equals the ordinary (causal) softmax") {
    // attn_j = (e_j + eps/N) / (sum e + eps) differs from softmax by at most eps / sum(e) <= eps
    // (sum e >= 1 because the max term is exp(0)); fp32 rounding adds a few ulps.
    test::rng g(11);
    for (bool causal : {true, false}) {
      const std::vector<index_t> indptr{0, 1, 8, 40};
      masked_softmax_params p;
      p.causal = causal;
      p.heads = 2;
      const auto x = normal<float>(g, 2 * squares(indptr), 3.0);
      const std::vector<float> ones(squares(indptr), 1.0f);
      const auto a = forward(indptr, x, ones, p);
      std::size_t base = 0;
      for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
        const auto n = static_cast<std::size_t>(indptr[b + 1] - indptr[b]);
        for (std::size_t r = 0; r < 2 * n; ++r) {
          const std::size_t i = r % n;
          const std::size_t len = causal ? i + 1 : n;
          const float* row = x.data() + base + r * n;
          double m = -INFINITY, sum = 0.0;
          for (std::size_t j = 0; j < len; ++j) m = std::max(m, static_cast<double>(row[j]));
          for (std::size_t j = 0; j < len; ++j) sum += std::exp(row[j] - m);
          for (std::size_t j = 0; j < n; ++j) {
            const double s = j < len ? std::exp(row[j] - m) / sum : 0.0;
            CHECK(std::abs(a[base + r * n + j] - s) < 2e-6);
          }
        }
        base += 2 * n * n;
      }
    }
  }

  TEST_CASE("masked_softmax_forward: a fully masked row keeps only its diagonal; rows sum to 1") {
    const std::vector<index_t> indptr{0, 6};
    test::rng g(5);
    const auto x = normal<double>(g, 36, 2.0);
    const std::vector<double> zeros(36, 0.0);
    for (bool causal : {true, false}) {
      masked_softmax_params p;
      p.causal = causal;
      const auto a = forward(indptr, x, zeros, p);
      for (std::size_t i = 0; i < 6; ++i) {
        double total = 0.0;
        for (std::size_t j = 0; j < 6; ++j) {
          const double v = a[i * 6 + j];
          total += v;
          if (j == i) {
            CHECK(v > 0.99);  // (e_ii + eps/N) / (e_ii + eps), e_ii = exp(x_ii - max) >= ~1e-4
          } else {
            CHECK(v < 1e-3);
            CHECK(v > 0.0);  // eps / N on every column, as in the reference
          }
        }
        CHECK(total == doctest::Approx(1.0).epsilon(1e-12));
      }
    }
    // the eps/N weight of a masked column is exactly (eps / N) / D
    masked_softmax_params p;
    const auto a = forward(indptr, x, zeros, p);
    const double d = std::exp(x[2 * 6 + 2] - std::max({x[12], x[13], x[14]})) + 1e-6;
    CHECK(a[2 * 6 + 0] == doctest::Approx(1e-6 / 6.0 / d).epsilon(1e-9));
  }

  TEST_CASE(
      "masked_softmax_forward: rows of -inf scores give 1/N instead of NaN; huge scores stay "
      "finite") {
    const std::vector<index_t> indptr{0, 3};
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<double> x{-inf, -inf, -inf, 1e300, -1e300, 0.0, 1e30, 1e30, -inf};
    const std::vector<double> ones(9, 1.0);
    masked_softmax_params p;
    p.causal = false;
    const auto a = forward(indptr, x, ones, p);
    for (std::size_t j = 0; j < 3; ++j) CHECK(a[j] == doctest::Approx(1.0 / 3.0));
    for (double v : a) CHECK(std::isfinite(v));
    CHECK(a[3] == doctest::Approx(1.0));
    CHECK(a[6] == doctest::Approx(0.5));
  }

  TEST_CASE("masked_softmax: a ragged batch equals each sequence alone (forward and backward)") {
    test::rng g(21);
    const auto lengths = test::random_lengths(g, 7, 9);
    const auto indptr = test::indptr_of(lengths);
    masked_softmax_params p;
    p.heads = 3;
    const std::size_t sq = squares(indptr);
    const auto x = normal<double>(g, 3 * sq, 2.0);
    const auto mask = uniform01<double>(g, sq);
    const auto up = normal<double>(g, 3 * sq, 1.0);
    const auto a = forward(indptr, x, mask, p);
    std::vector<double> dx(x.size()), dg(mask.size());
    masked_softmax_backward<double>(host, make_host_span(indptr), make_host_span(x),
                                    make_host_span(mask), make_host_span(up), make_host_span(dx),
                                    make_host_span(dg), p);
    std::size_t base = 0;
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      const auto n = static_cast<std::size_t>(lengths[b]);
      const std::vector<index_t> one{0, lengths[b]};
      const auto cut = [&](const std::vector<double>& v, std::size_t off, std::size_t len) {
        return std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(off),
                                   v.begin() + static_cast<std::ptrdiff_t>(off + len));
      };
      const auto xs = cut(x, 3 * base, 3 * n * n), ms = cut(mask, base, n * n),
                 us = cut(up, 3 * base, 3 * n * n);
      const auto as = forward(one, xs, ms, p);
      std::vector<double> dxs(xs.size()), dgs(ms.size());
      cpu::masked_softmax_backward<double>(make_host_span(one), make_host_span(xs),
                                           make_host_span(ms), make_host_span(us),
                                           make_host_span(dxs), make_host_span(dgs), p);
      CHECK(as == cut(a, 3 * base, 3 * n * n));
      CHECK(dxs == cut(dx, 3 * base, 3 * n * n));
      CHECK(dgs == cut(dg, base, n * n));
      base += n * n;
    }
  }

  TEST_CASE("masked_softmax_backward: d/dscores and d/dmask equal finite differences (fp64)") {
    test::rng g(99);
    for (bool causal : {true, false}) {
      for (index_t heads : {1, 2}) {
        CAPTURE(causal);
        CAPTURE(heads);
        const std::vector<index_t> indptr{0, 4, 5, 5, 11};
        masked_softmax_params p;
        p.causal = causal;
        p.heads = heads;
        p.eps = 1e-3;  // a larger eps makes the gradient through the row max visible to FD
        const std::size_t sq = squares(indptr);
        const auto x = normal<double>(g, static_cast<std::size_t>(heads) * sq, 2.0);
        const auto mask = uniform01<double>(g, sq);
        const auto up = normal<double>(g, x.size(), 1.0);
        std::vector<double> dx(x.size()), dg(mask.size());
        cpu::masked_softmax_backward<double>(make_host_span(indptr), make_host_span(x),
                                             make_host_span(mask), make_host_span(up),
                                             make_host_span(dx), make_host_span(dg), p);
        auto objective = [&](const std::vector<double>& xv, const std::vector<double>& mv) {
          const auto a = forward(indptr, xv, mv, p);
          double s = 0.0;
          for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * up[i];
          return s;
        };
        const double h = 1e-6;
        for (std::size_t i = 0; i < x.size(); ++i) {
          auto xp = x, xm = x;
          xp[i] += h;
          xm[i] -= h;
          const double fd = (objective(xp, mask) - objective(xm, mask)) / (2 * h);
          CAPTURE(i);
          CHECK(dx[i] == doctest::Approx(fd).epsilon(1e-6).scale(1.0));
        }
        for (std::size_t i = 0; i < mask.size(); ++i) {
          auto mp = mask, mm = mask;
          mp[i] += h;
          mm[i] -= h;
          const double fd = (objective(x, mp) - objective(x, mm)) / (2 * h);
          CAPTURE(i);
          CHECK(dg[i] == doctest::Approx(fd).epsilon(1e-6).scale(1.0));
        }
      }
    }
  }

  TEST_CASE("masked_softmax_backward: the gradient through the row max is what makes eps exact") {
    // With eps > 0 the output is not shift-invariant; the max term must be present: the sum of
    // d_scores over a row equals d/dc f(x + c) which is not zero.
    const std::vector<index_t> indptr{0, 3};
    masked_softmax_params p;
    p.eps = 0.1;
    p.causal = false;
    const std::vector<double> x{0.5, 2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 3.0};
    const std::vector<double> mask{1, 0.5, 0.25, 1, 1, 1, 0, 0, 1};
    const std::vector<double> up{1.0, -2.0, 0.5, 0, 0, 0, 0, 0, 0};
    std::vector<double> dx(9), dg(9);
    cpu::masked_softmax_backward<double>(make_host_span(indptr), make_host_span(x),
                                         make_host_span(mask), make_host_span(up),
                                         make_host_span(dx), make_host_span(dg), p);
    auto f = [&](double c) {
      auto xs = x;
      for (std::size_t j = 0; j < 3; ++j) xs[j] += c;
      const auto a = forward(indptr, xs, mask, p);
      return a[0] * up[0] + a[1] * up[1] + a[2] * up[2];
    };
    const double fd = (f(1e-6) - f(-1e-6)) / 2e-6;
    CHECK(std::abs(fd) < 1e-12);  // shifting the whole row changes nothing: max shifts along
    CHECK(dx[0] + dx[1] + dx[2] == doctest::Approx(fd).scale(1.0).epsilon(1e-8));
    CHECK(dg[0] == 0.0);  // the diagonal is forced to 1
  }

  TEST_CASE("masked_softmax: bad input is a clear error") {
    const std::vector<index_t> indptr{0, 2, 5};
    std::vector<float> x(13), mask(13), out(13), dx(13), dg(13);
    CHECK_THROWS_WITH_AS(
        cpu::masked_softmax_forward<float>(
            make_host_span(indptr), make_host_span(std::as_const(x)).subspan(0, 12),
            make_host_span(std::as_const(mask)), make_host_span(out)),
        doctest::Contains("scores must hold heads * sum of n_b^2 = 13 values, got 12"),
        dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::masked_softmax_forward<float>(make_host_span(indptr), make_host_span(std::as_const(x)),
                                           make_host_span(std::as_const(mask)).subspan(0, 3),
                                           make_host_span(out)),
        doctest::Contains("mask must hold sum of n_b^2 = 13 values, got 3"), dynllava::error);
    masked_softmax_params p;
    p.heads = 0;
    CHECK_THROWS_WITH_AS(cpu::masked_softmax_forward<float>(
                             make_host_span(indptr), make_host_span(std::as_const(x)),
                             make_host_span(std::as_const(mask)), make_host_span(out), p),
                         doctest::Contains("heads must be > 0, got 0"), dynllava::error);
    p = {};
    p.eps = -1.0;
    CHECK_THROWS_WITH_AS(cpu::masked_softmax_forward<float>(
                             make_host_span(indptr), make_host_span(std::as_const(x)),
                             make_host_span(std::as_const(mask)), make_host_span(out), p),
                         doctest::Contains("eps must be finite and >= 0"), dynllava::error);
    const std::vector<index_t> bad{0, 3, 2};
    CHECK_THROWS_WITH_AS(cpu::masked_softmax_forward<float>(
                             make_host_span(bad), make_host_span(std::as_const(x)),
                             make_host_span(std::as_const(mask)), make_host_span(out)),
                         doctest::Contains("non-decreasing"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::masked_softmax_backward<float>(
            make_host_span(indptr), make_host_span(std::as_const(x)),
            make_host_span(std::as_const(mask)), make_host_span(std::as_const(out)).subspan(0, 2),
            make_host_span(dx), make_host_span(dg)),
        doctest::Contains("d_attn must hold 13 values, got 2"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::masked_softmax_backward<float>(
            make_host_span(indptr), make_host_span(std::as_const(x)),
            make_host_span(std::as_const(mask)), make_host_span(std::as_const(out)),
            make_host_span(dx), make_host_span(dg).subspan(0, 1)),
        doctest::Contains("d_mask must hold sum of n_b^2 = 13 values, got 1"), dynllava::error);
    std::vector<float> keep(5), small_keep(4);
    CHECK_THROWS_WITH_AS(cpu::build_attention_mask<float>(make_host_span(indptr),
                                                          make_host_span(std::as_const(small_keep)),
                                                          make_host_span(mask)),
                         doctest::Contains("keep must have one value per token (5), got 4"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS(cpu::build_attention_mask<float>(make_host_span(indptr),
                                                          make_host_span(std::as_const(keep)),
                                                          make_host_span(mask), {-1, 2}),
                         doctest::Contains("layer and sparse_layer must be >= 0"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::attention_mask_backward<float>(make_host_span(indptr),
                                            make_host_span(std::as_const(mask)).subspan(0, 5),
                                            make_host_span(keep)),
        doctest::Contains("mask must hold sum of n_b^2 = 13 values, got 5"), dynllava::error);
  }
}

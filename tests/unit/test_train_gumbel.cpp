// SPDX-License-Identifier: Apache-2.0
/// @file test_train_gumbel.cpp
/// @brief Philox known answers, reproducible Gumbel noise, keep frequency versus the softmax
/// probability, straight-through gradient by finite differences (fp64), temperature schedule.
#include <dynllava/train/gumbel.hpp>
#include <dynllava/train/philox.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <utility>
#include <vector>

using namespace dynllava;

TEST_SUITE("cpu") {
  TEST_CASE("philox4x32_10: Random123 known-answer vectors") {
    const auto a = philox4x32_10(philox_block{{0, 0, 0, 0}}, 0, 0);
    CHECK(a.v[0] == 0x6627e8d5u);
    CHECK(a.v[1] == 0xe169c58du);
    CHECK(a.v[2] == 0xbc57ac4cu);
    CHECK(a.v[3] == 0x9b00dbd8u);
    const auto b = philox4x32_10(philox_block{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                                 0xffffffffu, 0xffffffffu);
    CHECK(b.v[0] == 0x408f276du);
    CHECK(b.v[3] == 0x6d5451fdu);
    const auto c = philox4x32_10(philox_block{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                                 0xa4093822u, 0x299f31d0u);
    CHECK(c.v[0] == 0xd16cfe09u);
    CHECK(c.v[1] == 0x94fdccebu);
    CHECK(c.v[2] == 0x5001e420u);
    CHECK(c.v[3] == 0x24126ea1u);
    static_assert(philox4x32_10(philox_block{{0, 0, 0, 0}}, 0, 0).v[0] == 0x6627e8d5u);
  }

  TEST_CASE("uniform_open01 stays strictly inside (0, 1); the Gumbel noise is finite") {
    for (std::uint32_t bits : {0u, 1u, 511u, 512u, 0x80000000u, 0xfffffe00u, 0xffffffffu}) {
      const float u = uniform_open01(bits);
      CHECK(u > 0.0f);
      CHECK(u < 1.0f);
      CHECK(std::isfinite(gumbel_from_uniform<float>(u)));
    }
    CHECK(uniform_open01(0u) == 1.0f / 16777216.0f);
    CHECK(uniform_open01(0xffffffffu) == 1.0f - 1.0f / 16777216.0f);
  }

  TEST_CASE(
      "gumbel_noise: same seed and offset give the same draws; another offset or seed does not") {
    std::vector<float> a(2 * 257), b(2 * 257), c(2 * 257), d(2 * 257);
    cpu::gumbel_noise<float>({42, 7}, make_host_span(a));
    gumbel_noise<float>(host, {42, 7}, make_host_span(b));
    cpu::gumbel_noise<float>({42, 8}, make_host_span(c));
    cpu::gumbel_noise<float>({43, 7}, make_host_span(d));
    CHECK(a == b);
    std::size_t same_c = 0, same_d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      same_c += a[i] == c[i] ? 1u : 0u;
      same_d += a[i] == d[i] ? 1u : 0u;
    }
    CHECK(same_c == 0);
    CHECK(same_d == 0);
    // the 64-bit offset and seed are used in full
    std::vector<float> e(2 * 4), f(2 * 4);
    cpu::gumbel_noise<float>({42, 7 + (std::uint64_t{1} << 32)}, make_host_span(e));
    cpu::gumbel_noise<float>({42 + (std::uint64_t{1} << 32), 7}, make_host_span(f));
    CHECK(e[0] != a[0]);
    CHECK(f[0] != a[0]);
  }

  TEST_CASE(
      "gumbel_noise: a slice drawn with first_token equals the same rows of the whole batch") {
    std::vector<double> whole(2 * 100), part(2 * 30);
    cpu::gumbel_noise<double>({9, 1}, make_host_span(whole));
    cpu::gumbel_noise<double>({9, 1}, make_host_span(part), 50);
    for (std::size_t i = 0; i < part.size(); ++i) CHECK(part[i] == whole[100 + i]);
  }

  TEST_CASE("gumbel_noise: mean and variance of the standard Gumbel distribution") {
    const std::size_t n = 200000;
    std::vector<double> g(2 * n);
    cpu::gumbel_noise<double>({1234, 0}, make_host_span(g));
    double mean = 0.0, sq = 0.0;
    for (double v : g) mean += v;
    mean /= static_cast<double>(g.size());
    for (double v : g) sq += (v - mean) * (v - mean);
    const double var = sq / static_cast<double>(g.size());
    const double pi = 3.14159265358979323846;
    const double euler_gamma = 0.57721566490153286;
    const double true_var = pi * pi / 6.0;
    // 6 standard errors (sd of the mean = sqrt(var / N); of the variance about sqrt(5.4 var^2 / N))
    CHECK(std::abs(mean - euler_gamma) < 6.0 * std::sqrt(true_var / static_cast<double>(g.size())));
    CHECK(std::abs(var - true_var) <
          6.0 * std::sqrt(5.4 * true_var * true_var / static_cast<double>(g.size())));
  }

  TEST_CASE("gumbel_hard_forward: keep frequency matches softmax(logits)[0] within 5 sigma") {
    const std::size_t n = 100000;
    for (auto [l0, l1] :
         {std::pair{0.3, -0.5}, std::pair{-2.0, 1.0}, std::pair{0.0, 0.0}, std::pair{4.0, 0.0}}) {
      for (double tau : {1.0, 0.1}) {
        CAPTURE(l0);
        CAPTURE(l1);
        CAPTURE(tau);
        std::vector<double> logits(2 * n), noise(2 * n), keep(n), soft(n);
        for (std::size_t t = 0; t < n; ++t) {
          logits[2 * t] = l0;
          logits[2 * t + 1] = l1;
        }
        cpu::gumbel_noise<double>({2024, static_cast<std::uint64_t>(tau * 10)},
                                  make_host_span(noise));
        cpu::gumbel_hard_forward<double>(make_host_span(std::as_const(logits)),
                                         make_host_span(std::as_const(noise)), tau,
                                         make_host_span(keep), make_host_span(soft));
        double kept = 0.0;
        for (double k : keep) {
          CHECK((k == 0.0 || k == 1.0));
          kept += k;
        }
        const double p = 1.0 / (1.0 + std::exp(l1 - l0));
        const double sigma = std::sqrt(p * (1.0 - p) / static_cast<double>(n));
        CHECK(std::abs(kept / static_cast<double>(n) - p) < 5.0 * sigma);
      }
    }
  }

  TEST_CASE("gumbel_hard_forward: one-hot decision agrees with the soft sample; NaN drops") {
    const std::vector<float> logits{1.0f, 0.0f, -1.0f, 0.5f, 0.0f, 0.0f, NAN, 0.0f};
    const std::vector<float> noise{0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    std::vector<float> keep(4), soft(4);
    cpu::gumbel_hard_forward<float>(make_host_span(logits), make_host_span(noise), 0.5,
                                    make_host_span(keep), make_host_span(soft));
    CHECK(keep == std::vector<float>{1.0f, 0.0f, 1.0f, 0.0f});  // a tie keeps (argmax -> index 0)
    CHECK(soft[0] == doctest::Approx(1.0 / (1.0 + std::exp(-2.0))).epsilon(1e-6));
    CHECK(soft[2] == 0.5f);
    CHECK(std::isnan(soft[3]));
    // huge logit gaps stay finite
    const std::vector<float> big{1e30f, -1e30f, -1e30f, 1e30f};
    std::vector<float> k2(2), s2(2);
    cpu::gumbel_hard_forward<float>(make_host_span(big),
                                    make_host_span(std::as_const(noise)).subspan(0, 4), 0.1,
                                    make_host_span(k2), make_host_span(s2));
    CHECK(k2 == std::vector<float>{1.0f, 0.0f});
    CHECK(s2 == std::vector<float>{1.0f, 0.0f});
  }

  TEST_CASE(
      "gumbel_hard_backward: straight-through gradient equals finite differences of y_soft "
      "(fp64)") {
    test::rng g(77);
    std::normal_distribution<double> nd(0.0, 1.5);
    const std::size_t n = 40;
    std::vector<double> logits(2 * n), noise(2 * n), d_keep(n), d_logits(2 * n);
    for (auto& v : logits) v = nd(g);
    for (auto& v : d_keep) v = nd(g);
    cpu::gumbel_noise<double>({5, 5}, make_host_span(noise));
    for (double tau : {1.0, 0.35, 0.1}) {
      CAPTURE(tau);
      cpu::gumbel_hard_backward<double>(
          make_host_span(std::as_const(logits)), make_host_span(std::as_const(noise)), tau,
          make_host_span(std::as_const(d_keep)), make_host_span(d_logits));
      auto objective = [&](const std::vector<double>& l) {
        std::vector<double> keep(n), soft(n);
        cpu::gumbel_hard_forward<double>(make_host_span(l), make_host_span(std::as_const(noise)),
                                         tau, make_host_span(keep), make_host_span(soft));
        double s = 0.0;
        for (std::size_t t = 0; t < n; ++t) s += soft[t] * d_keep[t];
        return s;
      };
      const double h = 1e-6;
      for (std::size_t i = 0; i < logits.size(); ++i) {
        auto plus = logits, minus = logits;
        plus[i] += h;
        minus[i] -= h;
        const double fd = (objective(plus) - objective(minus)) / (2 * h);
        CAPTURE(i);
        CHECK(d_logits[i] == doctest::Approx(fd).epsilon(1e-6).scale(1.0));
      }
    }
  }

  TEST_CASE("gumbel_temperature: exponential decay 1.0 -> 0.1") {
    CHECK(gumbel_temperature(0, 1000) == doctest::Approx(1.0));
    CHECK(gumbel_temperature(1000, 1000) == doctest::Approx(0.1));
    CHECK(gumbel_temperature(500, 1000) == doctest::Approx(std::sqrt(0.1)));
    CHECK(gumbel_temperature(2000, 1000) == doctest::Approx(0.1));  // clamped
    CHECK(gumbel_temperature(-5, 1000) == doctest::Approx(1.0));
    CHECK(gumbel_temperature(3, 10, 2.0, 0.5) == doctest::Approx(2.0 * std::pow(0.25, 0.3)));
    CHECK_THROWS_WITH_AS(gumbel_temperature(1, 0), doctest::Contains("max_steps must be > 0"),
                         dynllava::error);
    CHECK_THROWS_AS(gumbel_temperature(1, 10, 0.0, 0.1), dynllava::error);
  }

  TEST_CASE("gumbel: bad input is a clear error") {
    std::vector<float> logits(6), noise(6), keep(3), soft(3), odd(5), d_logits(6);
    CHECK_THROWS_WITH_AS(cpu::gumbel_noise<float>({1, 1}, make_host_span(odd)),
                         doctest::Contains("noise must be [num_tokens, 2]"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::gumbel_hard_forward<float>(make_host_span(std::as_const(odd)),
                                        make_host_span(std::as_const(noise)), 1.0,
                                        make_host_span(keep), make_host_span(soft)),
        doctest::Contains("logits must be [num_tokens, 2]"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::gumbel_hard_forward<float>(make_host_span(std::as_const(logits)),
                                        make_host_span(std::as_const(noise)).subspan(0, 4), 1.0,
                                        make_host_span(keep), make_host_span(soft)),
        doctest::Contains("noise must be [num_tokens, 2] = 6 values, got 4"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        cpu::gumbel_hard_forward<float>(make_host_span(std::as_const(logits)),
                                        make_host_span(std::as_const(noise)), 1.0,
                                        make_host_span(keep).subspan(0, 2), make_host_span(soft)),
        doctest::Contains("keep must have num_tokens = 3 values, got 2"), dynllava::error);
    for (double tau : {0.0, -1.0, std::nan(""), static_cast<double>(INFINITY), 1e-50, 1e50}) {
      CHECK_THROWS_WITH_AS(
          cpu::gumbel_hard_forward<float>(make_host_span(std::as_const(logits)),
                                          make_host_span(std::as_const(noise)), tau,
                                          make_host_span(keep), make_host_span(soft)),
          doctest::Contains("tau must be finite and > 0"), dynllava::error);
    }
    CHECK_THROWS_WITH_AS(
        cpu::gumbel_hard_backward<float>(
            make_host_span(std::as_const(logits)), make_host_span(std::as_const(noise)), 1.0,
            make_host_span(std::as_const(keep)), make_host_span(d_logits).subspan(0, 5)),
        doctest::Contains("d_logits must have 6 values (like logits), got 5"), dynllava::error);
  }
}

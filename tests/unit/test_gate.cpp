// SPDX-License-Identifier: Apache-2.0
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

using namespace dynllava;

TEST_SUITE("cpu") {
  TEST_CASE("argmax gate: channel 0 keeps, strict, NaN drops") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    static_assert(argmax_keeps(1.0f, 0.0f));
    static_assert(!argmax_keeps(0.0f, 1.0f));
    static_assert(!argmax_keeps(1.0f, 1.0f));
    CHECK_FALSE(argmax_keeps(nan, 0.0f));
    CHECK_FALSE(argmax_keeps(0.0f, nan));
    CHECK(argmax_keeps(inf, 1e30f));
    CHECK_FALSE(argmax_keeps(inf, inf));
    CHECK_FALSE(argmax_keeps(-0.0f, 0.0f));
    // Subnormal differences still decide (no subtraction, so no flush-to-zero hazard).
    CHECK(argmax_keeps(std::numeric_limits<float>::denorm_min(), 0.0f));

    std::vector<index_t> indptr{0, 3, 3, 5};
    std::vector<float> logits{2, 1, 1, 2, 0, 0, nan, 1, 5, -5};
    std::vector<std::uint8_t> keep(5);
    cpu::argmax_gate({make_host_span(std::as_const(indptr)), make_host_span(std::as_const(logits))},
                     make_host_span(keep));
    CHECK(keep == std::vector<std::uint8_t>{1, 0, 0, 0, 1});

    std::vector<index_t> out_indptr(4), out_pos(5);
    const auto n = cpu::mask_to_positions(make_host_span(std::as_const(indptr)),
                                          make_host_span(std::as_const(keep)),
                                          make_host_span(out_indptr), make_host_span(out_pos));
    CHECK(n == 2);
    CHECK(out_indptr == std::vector<index_t>{0, 1, 1, 2});
    CHECK(out_pos[0] == 0);
    CHECK(out_pos[1] == 1);

    const logit_argmax sel;
    static_assert(token_selector<logit_argmax, host_t, ragged_logits<host_space>>);
    CHECK(sel.select(host,
                     {make_host_span(std::as_const(indptr)), make_host_span(std::as_const(logits))},
                     make_host_span(out_indptr), make_host_span(out_pos)) == 2);
  }

  TEST_CASE("argmax gate: bad shapes are clear errors") {
    std::vector<index_t> indptr{0, 2};
    std::vector<float> odd{1, 2, 3};
    std::vector<std::uint8_t> keep(2);
    CHECK_THROWS_WITH_AS(cpu::argmax_gate({make_host_span(std::as_const(indptr)),
                                           make_host_span(std::as_const(odd))},
                                          make_host_span(keep)),
                         doctest::Contains("2 values per token, got 3"), error);
    std::vector<float> logits{1, 2, 3, 4};
    std::vector<std::uint8_t> short_keep(1);
    CHECK_THROWS_WITH_AS(cpu::argmax_gate({make_host_span(std::as_const(indptr)),
                                           make_host_span(std::as_const(logits))},
                                          make_host_span(short_keep)),
                         doctest::Contains("one entry per token (2), got 1"), error);
    std::vector<index_t> bad{0, 3};
    CHECK_THROWS_AS(cpu::argmax_gate(
                        {make_host_span(std::as_const(bad)), make_host_span(std::as_const(logits))},
                        make_host_span(keep)),
                    error);
  }

  TEST_CASE("threshold gate: strict, NaN scores drop, NaN threshold rejected") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<index_t> indptr{0, 4};
    std::vector<float> s{0.5f, 0.25f, nan, 1.0f};
    std::vector<std::uint8_t> keep(4);
    host_ragged<const float> scores{make_host_span(std::as_const(indptr)),
                                    make_host_span(std::as_const(s))};
    cpu::threshold_gate(scores, 0.25f, make_host_span(keep));
    CHECK(keep == std::vector<std::uint8_t>{1, 0, 0, 1});
    CHECK_THROWS_WITH_AS(cpu::threshold_gate(scores, nan, make_host_span(keep)),
                         doctest::Contains("threshold must not be NaN"), error);

    std::vector<index_t> out_indptr(2), out_pos(4);
    const score_threshold sel{0.25f};
    CHECK(sel.select(host, scores, make_host_span(out_indptr), make_host_span(out_pos)) == 2);
    CHECK(out_pos[0] == 0);
    CHECK(out_pos[1] == 3);
  }

  TEST_CASE("mask_to_positions: random masks round-trip, small outputs rejected") {
    test::rng g(3);
    const auto lengths = test::random_lengths(g, 10, 50);
    const auto indptr = test::indptr_of(lengths);
    std::vector<std::uint8_t> keep(static_cast<std::size_t>(indptr.back()));
    for (auto& k : keep) k = static_cast<std::uint8_t>(g() % 3);  // 0, 1 or 2 (non-zero keeps)
    std::vector<index_t> out_indptr(indptr.size()), out_pos(keep.size());
    cpu::mask_to_positions(make_host_span(indptr), make_host_span(std::as_const(keep)),
                           make_host_span(out_indptr), make_host_span(out_pos));
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      std::vector<index_t> expected;
      for (index_t i = 0; i < lengths[b]; ++i) {
        if (keep[static_cast<std::size_t>(indptr[b] + i)] != 0) expected.push_back(i);
      }
      const std::vector<index_t> got(out_pos.begin() + out_indptr[b],
                                     out_pos.begin() + out_indptr[b + 1]);
      CHECK(got == expected);
    }
    std::vector<std::uint8_t> all(3, 1);
    std::vector<index_t> one{0, 3}, small(2), oi(2);
    CHECK_THROWS_WITH_AS(
        cpu::mask_to_positions(make_host_span(std::as_const(one)),
                               make_host_span(std::as_const(all)), make_host_span(oi),
                               make_host_span(small)),
        doctest::Contains("out_positions must hold at least 3 entries (the kept tokens), got 2"),
        error);
  }
}

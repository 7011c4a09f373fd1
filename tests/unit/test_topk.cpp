// SPDX-License-Identifier: Apache-2.0
#include <dynllava/select/concepts.hpp>
#include <dynllava/select/topk.hpp>

#include <support/errors.hpp>
#include <support/random.hpp>
#include <support/reference_topk.hpp>

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace dynllava;
using test::score_mix;

namespace {

host_ragged<const float> ragged_of(const std::vector<index_t>& indptr,
                                   const std::vector<float>& values) {
  return {make_host_span(indptr), make_host_span(values)};
}

/// Checks a selection against the independent reference, sequence by sequence.
void check_against_reference(const std::vector<index_t>& indptr, const std::vector<float>& scores,
                             const std::vector<index_t>& ks, const host_selection& sel,
                             bool larger_first) {
  REQUIRE(sel.indptr.size() == indptr.size());
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    const std::vector<float> row(scores.begin() + indptr[b], scores.begin() + indptr[b + 1]);
    const auto expected = test::reference_topk(row, ks[b], larger_first);
    const std::vector<index_t> got(sel.positions.begin() + sel.indptr[b],
                                   sel.positions.begin() + sel.indptr[b + 1]);
    CAPTURE(b);
    CHECK(got == expected);
  }
}

/// Checks `cpu::topk` against the previous algorithm (`test::nth_element_topk`), bit for bit.
void check_against_nth_element(const std::vector<index_t>& indptr, const std::vector<float>& scores,
                               const topk_budget<host_space>& budget, tie_break tie,
                               cpu::topk_workspace& ws) {
  std::vector<index_t> out_indptr(indptr.size()), out_pos(scores.size() + 1, -1);
  const index_t total = cpu::topk(ragged_of(indptr, scores), budget, make_host_span(out_indptr),
                                  make_host_span(out_pos), {tie}, ws);
  REQUIRE(total == out_indptr.back());
  std::vector<index_t> expected(scores.size() + 1, -1);
  std::vector<std::uint64_t> keys;
  for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
    const index_t k = out_indptr[b + 1] - out_indptr[b];
    test::nth_element_topk(scores.data() + indptr[b], indptr[b + 1] - indptr[b], k, tie,
                           expected.data() + out_indptr[b], keys);
  }
  CHECK(out_pos == expected);  // includes the untouched tail
}

/// Scores drawn from a small alphabet of values chosen to stress one part of the radix select.
std::vector<float> alphabet_scores(test::rng& g, std::size_t n, int family, int size) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> alphabet;
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int a = 0; a < size; ++a) {
    float v = 0.0f;
    switch (family) {
      case 0: {  // special values
        const float specials[] = {nan,
                                  -nan,
                                  inf,
                                  -inf,
                                  0.0f,
                                  -0.0f,
                                  std::numeric_limits<float>::denorm_min(),
                                  -std::numeric_limits<float>::denorm_min(),
                                  1.0f,
                                  -1.0f,
                                  std::numeric_limits<float>::max(),
                                  -std::numeric_limits<float>::max()};
        v = specials[bits(g) % std::size(specials)];
        break;
      }
      case 1:  // same three leading bytes, differ in the last one
        v = std::bit_cast<float>(0x3f800000u | (bits(g) & 0xffu));
        break;
      case 2:  // same leading byte, differ below it
        v = std::bit_cast<float>(0xbf000000u | (bits(g) & 0x00ffffffu));
        break;
      case 3:  // any bit pattern (NaN payloads of both signs included)
        v = std::bit_cast<float>(bits(g));
        break;
      default:  // leading byte only differs
        v = std::bit_cast<float>((bits(g) & 0xff000000u) | 0x00123456u);
        break;
    }
    alphabet.push_back(v);
  }
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::vector<float> out(n);
  for (auto& v : out) v = alphabet[pick(g)];
  return out;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("topk: ratio budget is floor(n * ratio) in double precision") {
    CHECK(ratio_budget(576, 0.2) == 115);
    CHECK(ratio_budget(576, 0.25) == 144);
    CHECK(ratio_budget(5, 0.2) == 1);
    CHECK(ratio_budget(10, 0.3) == 3);
    CHECK(ratio_budget(0, 0.7) == 0);
    CHECK(ratio_budget(7, 1.0) == 7);
    CHECK(ratio_budget(7, 0.0) == 0);
  }

  TEST_CASE("topk: a fixed example with ties, NaN and infinities") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<index_t> indptr{0, 7};
    std::vector<float> s{nan, -inf, 1.0f, inf, 1.0f, -0.0f, 0.0f};
    const auto scores = ragged_of(indptr, s);
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(1)).positions ==
          std::vector<index_t>{3});
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(2)).positions ==
          std::vector<index_t>{2, 3});
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(2), {tie_break::larger_position})
              .positions == std::vector<index_t>{3, 4});
    // +0 and -0 tie: the earlier (-0 at 5) wins.
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(4)).positions ==
          std::vector<index_t>{2, 3, 4, 5});
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(6)).positions ==
          std::vector<index_t>{1, 2, 3, 4, 5, 6});
    // NaN ranks below -inf, so it is the last one in.
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(7)).positions ==
          std::vector<index_t>{0, 1, 2, 3, 4, 5, 6});
  }

  TEST_CASE("topk: mutable ragged batches convert; shorthand budgets") {
    std::vector<index_t> indptr{0, 3};
    std::vector<float> s{1, 3, 2};
    host_ragged<float> mutable_batch{make_host_span(std::as_const(indptr)), make_host_span(s)};
    CHECK(cpu::topk(mutable_batch, keep_count(1)).positions == std::vector<index_t>{1});
    CHECK(cpu::topk(mutable_batch, keep_ratio(0.7)).positions == std::vector<index_t>{1, 2});
    static_assert(keep_ratio(0.2).kind == budget_kind::ratio);
  }

  TEST_CASE("topk: k = 0, 1, n and all-NaN rows") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<index_t> indptr{0, 4};
    std::vector<float> s(4, nan);
    const auto scores = ragged_of(indptr, s);
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(0)).positions.empty());
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(1)).positions ==
          std::vector<index_t>{0});
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(4)).positions ==
          std::vector<index_t>{0, 1, 2, 3});
    CHECK(cpu::topk(scores, topk_budget<host_space>::keep_count(2), {tie_break::larger_position})
              .positions == std::vector<index_t>{2, 3});
  }

  TEST_CASE("topk: empty batch and empty sequences") {
    std::vector<index_t> indptr{0};
    std::vector<float> none;
    auto sel = cpu::topk(ragged_of(indptr, none), topk_budget<host_space>::keep_ratio(0.5));
    CHECK(sel.indptr == std::vector<index_t>{0});
    CHECK(sel.positions.empty());
    CHECK(cpu::topk(host_ragged<const float>{}, topk_budget<host_space>::keep_count(0)).batch() ==
          0);

    std::vector<index_t> ragged{0, 0, 3, 3};
    std::vector<float> s{1, 3, 2};
    sel = cpu::topk(ragged_of(ragged, s), topk_budget<host_space>::keep_ratio(0.7));
    CHECK(sel.indptr == std::vector<index_t>{0, 0, 2, 2});
    CHECK(sel.positions == std::vector<index_t>{1, 2});
  }

  TEST_CASE("topk: per-sequence budgets") {
    std::vector<index_t> indptr{0, 3, 5};
    std::vector<float> s{1, 2, 3, 5, 4};
    std::vector<index_t> ks{2, 1};
    auto sel =
        cpu::topk(ragged_of(indptr, s),
                  topk_budget<host_space>::keep_per_sequence(make_host_span(std::as_const(ks))));
    CHECK(sel.indptr == std::vector<index_t>{0, 2, 3});
    CHECK(sel.positions == std::vector<index_t>{1, 2, 0});
  }

  TEST_CASE("topk: bad input is a clear error") {
    std::vector<index_t> indptr{0, 3, 5};
    std::vector<float> s{1, 2, 3, 5, 4};
    const auto scores = ragged_of(indptr, s);
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_count(3));
          }).find("k (3) exceeds the number of candidates (2) of sequence 1") != std::string::npos);
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_count(-1));
          }).find("k must be >= 0, got -1") != std::string::npos);
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_ratio(1.5));
          }).find("ratio must be in [0, 1], got 1.5") != std::string::npos);
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_ratio(-0.1));
          }).find("ratio must be in [0, 1]") != std::string::npos);
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_ratio(std::nan("")));
          }).find("got nan") != std::string::npos);
    std::vector<index_t> ks{1};
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_per_sequence(
                                  make_host_span(std::as_const(ks))));
          }).find("counts must have one entry per sequence (2), got 1") != std::string::npos);
    std::vector<index_t> ks_big{1, 3};
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_per_sequence(
                                  make_host_span(std::as_const(ks_big))));
          }).find("counts[1] must be in [0, 2]") != std::string::npos);
    std::vector<index_t> bad_indptr{0, 4, 3};
    CHECK(test::error_of([&] {
            cpu::topk(ragged_of(bad_indptr, s), topk_budget<host_space>::keep_ratio(0.5));
          }).find("non-decreasing") != std::string::npos);
    std::vector<index_t> short_indptr{0, 3};
    CHECK(test::error_of([&] {
            cpu::topk(ragged_of(short_indptr, s), topk_budget<host_space>::keep_ratio(0.5));
          }).find("indptr[batch] must equal the number of elements it indexes (5), got 3") !=
          std::string::npos);
    std::vector<index_t> out_indptr(3), out_pos(1);
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_count(1), make_host_span(out_indptr),
                      make_host_span(out_pos));
          }).find("out_positions must hold at least 2 entries") != std::string::npos);
    std::vector<index_t> wrong_indptr(2);
    CHECK(test::error_of([&] {
            cpu::topk(scores, topk_budget<host_space>::keep_count(1), make_host_span(wrong_indptr),
                      make_host_span(out_pos));
          }).find("out_indptr must have batch + 1 = 3 entries, got 2") != std::string::npos);
  }

  TEST_CASE("topk: random ragged batches match the independent reference") {
    test::rng g(20261125);
    for (const auto mix : {score_mix::distinct, score_mix::heavy_ties, score_mix::adversarial}) {
      for (int trial = 0; trial < 40; ++trial) {
        const auto lengths = test::random_lengths(g, 1 + static_cast<std::size_t>(trial % 9), 300);
        const auto indptr = test::indptr_of(lengths);
        const auto scores = test::random_scores(g, static_cast<std::size_t>(indptr.back()), mix);
        const bool larger_first = trial % 3 == 0;
        const topk_options opts{larger_first ? tie_break::larger_position
                                             : tie_break::smaller_position};
        CAPTURE(static_cast<int>(mix));
        CAPTURE(trial);
        // ratio budget
        std::uniform_real_distribution<double> ratio(0.0, 1.0);
        const double r = trial % 5 == 0 ? 1.0 : trial % 5 == 1 ? 0.0 : ratio(g);
        std::vector<index_t> ks(lengths.size());
        for (std::size_t b = 0; b < ks.size(); ++b) ks[b] = ratio_budget(lengths[b], r);
        auto sel =
            cpu::topk(ragged_of(indptr, scores), topk_budget<host_space>::keep_ratio(r), opts);
        check_against_reference(indptr, scores, ks, sel, larger_first);
        // explicit per-sequence budgets, including 0, 1 and n
        for (std::size_t b = 0; b < ks.size(); ++b) {
          std::uniform_int_distribution<index_t> k(0, lengths[b]);
          const int choice = static_cast<int>(g() % 4);
          ks[b] = choice == 0   ? 0
                  : choice == 1 ? std::min<index_t>(1, lengths[b])
                  : choice == 2 ? lengths[b]
                                : k(g);
        }
        sel = cpu::topk(
            ragged_of(indptr, scores),
            topk_budget<host_space>::keep_per_sequence(make_host_span(std::as_const(ks))), opts);
        check_against_reference(indptr, scores, ks, sel, larger_first);
      }
    }
  }

  TEST_CASE("topk: the radix select equals nth_element + sort on the ranking keys") {
    cpu::topk_workspace ws;  // reused across every call, shrinking and growing
    for (std::uint64_t seed = 0; seed < 300; ++seed) {
      test::rng g(seed * 7919 + 11);
      const int family = static_cast<int>(seed % 6);
      const int sizes[] = {1, 2, 3, 5, 17, 256};
      const int size = sizes[(seed / 6) % std::size(sizes)];
      const index_t max_len = seed % 10 == 0 ? 5000 : seed % 3 == 0 ? 20 : 700;
      const auto lengths = test::random_lengths(g, 1 + static_cast<std::size_t>(seed % 7), max_len);
      const auto indptr = test::indptr_of(lengths);
      const auto n = static_cast<std::size_t>(indptr.back());
      const auto scores = family == 5 ? test::random_scores(g, n, score_mix::adversarial)
                                      : alphabet_scores(g, n, family, size);
      CAPTURE(seed);
      for (const auto tie : {tie_break::smaller_position, tie_break::larger_position}) {
        CAPTURE(tie);
        std::uniform_real_distribution<double> ratio(0.0, 1.0);
        for (const double r : {0.0, 0.2, ratio(g), 1.0}) {
          check_against_nth_element(indptr, scores, topk_budget<host_space>::keep_ratio(r), tie,
                                    ws);
        }
        std::vector<index_t> ks(lengths.size());
        for (std::size_t b = 0; b < ks.size(); ++b) {
          std::uniform_int_distribution<index_t> k(0, lengths[b]);
          const int choice = static_cast<int>(g() % 5);
          ks[b] = choice == 0   ? 0
                  : choice == 1 ? std::min<index_t>(1, lengths[b])
                  : choice == 2 ? lengths[b]
                  : choice == 3 ? std::max<index_t>(lengths[b] - 1, 0)
                                : k(g);
        }
        check_against_nth_element(
            indptr, scores,
            topk_budget<host_space>::keep_per_sequence(make_host_span(std::as_const(ks))), tie, ws);
        const index_t min_len = *std::min_element(lengths.begin(), lengths.end());
        check_against_nth_element(indptr, scores, topk_budget<host_space>::keep_count(min_len / 2),
                                  tie, ws);
      }
    }
  }

  TEST_CASE("topk: every k of short sequences over tiny alphabets equals nth_element + sort") {
    cpu::topk_workspace ws;
    test::rng g(424242);
    for (int trial = 0; trial < 400; ++trial) {
      const auto n = static_cast<index_t>(trial % 12);
      const auto scores = alphabet_scores(g, static_cast<std::size_t>(n),
                                          trial % 6 == 5 ? 0 : trial % 5, 1 + trial % 4);
      const std::vector<index_t> indptr{0, n};
      CAPTURE(trial);
      for (index_t k = 0; k <= n; ++k) {
        for (const auto tie : {tie_break::smaller_position, tie_break::larger_position}) {
          check_against_nth_element(indptr, scores, topk_budget<host_space>::keep_count(k), tie,
                                    ws);
        }
      }
    }
  }

  TEST_CASE("topk: ragged batch equals each sequence alone") {
    test::rng g(7);
    const auto lengths = test::random_lengths(g, 12, 200);
    const auto indptr = test::indptr_of(lengths);
    const auto scores =
        test::random_scores(g, static_cast<std::size_t>(indptr.back()), score_mix::adversarial);
    const auto budget = topk_budget<host_space>::keep_ratio(0.2);
    const auto batched = cpu::topk(ragged_of(indptr, scores), budget);
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      std::vector<index_t> one{0, lengths[b]};
      std::vector<float> row(scores.begin() + indptr[b], scores.begin() + indptr[b + 1]);
      const auto alone = cpu::topk(ragged_of(one, row), budget);
      const std::vector<index_t> got(batched.positions.begin() + batched.indptr[b],
                                     batched.positions.begin() + batched.indptr[b + 1]);
      CHECK(got == alone.positions);
    }
  }

  TEST_CASE("topk: a reused workspace gives the same results") {
    test::rng g(99);
    cpu::topk_workspace ws;
    for (int trial = 0; trial < 10; ++trial) {
      const auto lengths = test::random_lengths(g, 4, 100);
      const auto indptr = test::indptr_of(lengths);
      const auto scores =
          test::random_scores(g, static_cast<std::size_t>(indptr.back()), score_mix::heavy_ties);
      std::vector<index_t> out_indptr(indptr.size()), out_pos(scores.size());
      const index_t n =
          cpu::topk(ragged_of(indptr, scores), topk_budget<host_space>::keep_ratio(0.5),
                    make_host_span(out_indptr), make_host_span(out_pos), {}, ws);
      out_pos.resize(static_cast<std::size_t>(n));
      const auto fresh =
          cpu::topk(ragged_of(indptr, scores), topk_budget<host_space>::keep_ratio(0.5));
      CHECK(out_indptr == fresh.indptr);
      CHECK(out_pos == fresh.positions);
    }
  }

  TEST_CASE("token_selector models: budgeted_topk through the concept") {
    static_assert(token_selector<budgeted_topk, host_t, host_ragged<const float>>);
    std::vector<index_t> indptr{0, 4};
    std::vector<float> s{4, 3, 2, 1};
    std::vector<index_t> out_indptr(2), out_pos(4);
    const budgeted_topk sel{topk_budget<host_space>::keep_count(2), {}};
    CHECK(sel.select(host, ragged_of(indptr, s), make_host_span(out_indptr),
                     make_host_span(out_pos)) == 2);
    CHECK(out_pos[0] == 0);
    CHECK(out_pos[1] == 1);
    CHECK(topk(host, ragged_of(indptr, s), topk_budget<host_space>::keep_count(1),
               make_host_span(out_indptr), make_host_span(out_pos)) == 1);
  }
}

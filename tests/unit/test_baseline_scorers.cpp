// SPDX-License-Identifier: Apache-2.0
#include <dynllava/score/fastv_scorer.hpp>
#include <dynllava/score/h2o_scorer.hpp>
#include <dynllava/score/l2_norm_scorer.hpp>
#include <dynllava/score/random_scorer.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <numeric>
#include <set>
#include <vector>

using namespace dynllava;

TEST_SUITE("cpu") {
  TEST_CASE("l2_norm_scorer: norms per row, shape errors") {
    const std::vector<index_t> indptr{0, 1, 3};
    const std::vector<float> x{3, 4, 0, 0, 1, 1};
    std::vector<float> s(3);
    l2_norm_scorer{}.score(host, {make_host_span(indptr), make_host_span(x), 2}, make_host_span(s));
    CHECK(s[0] == 5.0f);
    CHECK(s[1] == 0.0f);
    CHECK(s[2] == doctest::Approx(std::sqrt(2.0)));
    std::vector<float> wrong(2);
    CHECK_THROWS_WITH_AS(
        l2_norm_scorer{}.score(host, {make_host_span(indptr), make_host_span(x), 2},
                               make_host_span(wrong)),
        doctest::Contains("one entry per token (3), got 2"), error);
  }

  TEST_CASE("random_scorer: reproducible, seeded, uniform on 0..1") {
    const std::vector<index_t> indptr{0, 4000, 8000};
    const std::vector<float> x(8000);
    std::vector<float> a(8000), b(8000), c(8000);
    random_scorer{7}.score(host, {make_host_span(indptr), make_host_span(x), 1}, make_host_span(a));
    random_scorer{7}.score(host, {make_host_span(indptr), make_host_span(x), 1}, make_host_span(b));
    random_scorer{8}.score(host, {make_host_span(indptr), make_host_span(x), 1}, make_host_span(c));
    CHECK(a == b);
    CHECK(a != c);
    CHECK(!std::equal(a.begin(), a.begin() + 4000, a.begin() + 4000));  // sequences differ
    double mean = 0;
    for (float v : a) {
      REQUIRE(v >= 0.0f);
      REQUIRE(v < 1.0f);
      mean += v;
    }
    mean /= 8000;
    CHECK(std::abs(mean - 0.5) < 5 * std::sqrt(1.0 / 12 / 8000));  // 5 sigma
    static_assert(random_score(1, 2, 3) == random_score(1, 2, 3));
  }

  TEST_CASE("fastv_scorer: head-averaged softmax of the last query, against explicit attention") {
    test::rng g(4);
    std::normal_distribution<float> normal;
    const index_t heads = 3, hd = 4, width = heads * hd;
    const std::vector<index_t> ctx_indptr{0, 9, 9, 14};
    std::vector<float> keys(14 * width), queries(3 * width);
    for (auto& v : keys) v = normal(g);
    for (auto& v : queries) v = normal(g);
    const std::vector<index_t> cand_indptr{0, 4, 4, 9};
    const std::vector<index_t> cands{1, 2, 3, 8, 0, 1, 2, 3, 4};  // seq 2: every context row
    std::vector<float> s(cands.size());
    const fastv_scorer fastv{heads, hd};
    fastv.score(host, make_host_span(queries),
                {make_host_span(ctx_indptr), make_host_span(keys), width},
                {make_host_span(cand_indptr), make_host_span(cands)}, make_host_span(s));
    // explicit: full attention matrix of the last query, per head
    for (std::size_t b : {0u, 2u}) {
      const index_t n = ctx_indptr[b + 1] - ctx_indptr[b];
      std::vector<double> avg(static_cast<std::size_t>(n), 0.0);
      for (index_t h = 0; h < heads; ++h) {
        std::vector<double> e(static_cast<std::size_t>(n));
        for (index_t j = 0; j < n; ++j) {
          double dotp = 0;
          for (index_t c = 0; c < hd; ++c) {
            dotp += static_cast<double>(queries[static_cast<std::size_t>(
                        static_cast<index_t>(b) * width + h * hd + c)]) *
                    keys[static_cast<std::size_t>((ctx_indptr[b] + j) * width + h * hd + c)];
          }
          e[static_cast<std::size_t>(j)] = std::exp(dotp / 2.0);
        }
        const double z = std::accumulate(e.begin(), e.end(), 0.0);
        for (index_t j = 0; j < n; ++j)
          avg[static_cast<std::size_t>(j)] += e[static_cast<std::size_t>(j)] / z / heads;
      }
      for (index_t c = cand_indptr[b]; c < cand_indptr[b + 1]; ++c) {
        CHECK(s[static_cast<std::size_t>(c)] ==
              doctest::Approx(avg[static_cast<std::size_t>(cands[static_cast<std::size_t>(c)])])
                  .epsilon(1e-5));
      }
    }
    // all rows of a context as candidates: the scores sum to 1
    CHECK(std::accumulate(s.begin() + 4, s.end(), 0.0) == doctest::Approx(1.0).epsilon(1e-6));

    const std::vector<index_t> bad{0, 1, 1, 1};
    const std::vector<index_t> out_of_range{9};
    CHECK_THROWS_WITH_AS(
        fastv.score(host, make_host_span(queries),
                    {make_host_span(ctx_indptr), make_host_span(keys), width},
                    {make_host_span(bad), make_host_span(out_of_range)},
                    host_span<float>(s.data(), 1)),
        doctest::Contains("candidate 9 of sequence 0 is outside its 9 context rows"), error);
    CHECK_THROWS_WITH_AS(
        fastv.score(host, host_span<const float>(queries.data(), 5),
                    {make_host_span(ctx_indptr), make_host_span(keys), width},
                    {make_host_span(cand_indptr), make_host_span(cands)}, make_host_span(s)),
        doctest::Contains("queries must be [batch = 3, 12]"), error);
  }

  TEST_CASE("h2o_scorer: append, accumulate over heads and queries, retain") {
    static_assert(stateful_token_scorer<h2o_scorer, host_t>);
    static_assert(token_scorer<h2o_scorer, host_t>);
    h2o_scorer h2o(2);
    const std::vector<index_t> first{3, 2};
    h2o.append(host, make_host_span(first));
    CHECK(h2o.tracked(0) == 3);
    // sequence 0: two rows (e.g. 2 heads) over 3 tokens; sequence 1: one row over 2 tokens
    const std::vector<index_t> pi{0, 6, 8};
    const std::vector<float> p{0.5f, 0.25f, 0.25f, 0.1f, 0.2f, 0.7f, 0.6f, 0.4f};
    h2o.accumulate(host, {make_host_span(pi), make_host_span(p)});
    std::vector<float> s(5);
    h2o.scores(host, make_host_span(s));
    CHECK(s[0] == doctest::Approx(0.6));
    CHECK(s[1] == doctest::Approx(0.45));
    CHECK(s[2] == doctest::Approx(0.95));
    CHECK(s[3] == doctest::Approx(0.6));
    // evict the middle token of sequence 0, then a new token arrives in each sequence
    const std::vector<index_t> ki{0, 2, 4};
    const std::vector<index_t> kept{0, 2, 0, 1};
    h2o.retain(host, {make_host_span(ki), make_host_span(kept)});
    const std::vector<index_t> one{1, 1};
    h2o.append(host, make_host_span(one));
    std::vector<float> s2(6);
    h2o.scores(host, make_host_span(s2));
    CHECK(s2 == std::vector<float>{s[0], s[2], 0.0f, s[3], s[4], 0.0f});

    const std::vector<index_t> bad_pi{0, 4, 4};
    const std::vector<float> bad_p(4, 0.25f);
    CHECK_THROWS_WITH_AS(
        h2o.accumulate(host, {make_host_span(bad_pi), make_host_span(bad_p)}),
        doctest::Contains("sequence 0 gives 4 probabilities, not a whole number of rows of its 3"),
        error);
    const std::vector<index_t> desc{1, 0, 0, 1};
    CHECK_THROWS_WITH_AS(h2o.retain(host, {make_host_span(ki), make_host_span(desc)}),
                         doctest::Contains("must ascend"), error);
    const std::vector<index_t> neg{-1, 0};
    const std::vector<index_t> half_bad{1, -1};
    CHECK_THROWS_WITH_AS(h2o.append(host, make_host_span(half_bad)),
                         doctest::Contains("counts[1] must be >= 0"), error);
    CHECK(h2o.tracked(0) == 3);  // a rejected call changes nothing
    // as a token_scorer: one row per tracked token
    const std::vector<index_t> ri{0, 3, 6};
    const std::vector<float> rows(6);
    std::vector<float> via_concept(6);
    h2o.score(host, {make_host_span(ri), make_host_span(rows), 1}, make_host_span(via_concept));
    std::vector<float> direct(6);
    h2o.scores(host, make_host_span(direct));
    CHECK(via_concept == direct);
  }
}

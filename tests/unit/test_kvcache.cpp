// SPDX-License-Identifier: Apache-2.0
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/gated_append.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>
#include <dynllava/score/h2o_scorer.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <numeric>
#include <set>
#include <vector>

using namespace dynllava;

namespace {

constexpr index_t W = 3;

/// K row of a token: its position in every channel (V = -position), so contents are checkable.
std::vector<float> rows_of(const std::vector<index_t>& positions, float sign) {
  std::vector<float> out;
  for (index_t p : positions) {
    for (index_t c = 0; c < W; ++c)
      out.push_back(sign * (static_cast<float>(p) + 0.1f * static_cast<float>(c)));
  }
  return out;
}

template <class C>
C make_cache(index_t layers, std::size_t batch, index_t tokens);

template <>
paged_kv_cache make_cache<paged_kv_cache>(index_t layers, std::size_t batch, index_t tokens) {
  return paged_kv_cache({layers, batch, W, /*page_size=*/3,
                         /*num_pages=*/layers * static_cast<index_t>(batch) * ((tokens + 2) / 3)});
}
template <>
contiguous_kv_cache make_cache<contiguous_kv_cache>(index_t layers, std::size_t batch,
                                                    index_t tokens) {
  return contiguous_kv_cache({layers, batch, W, tokens});
}

/// Appends one decode step: one token per sequence with the given keep decisions.
template <class C, class P>
void step(C& cache, const P& policy, const std::vector<index_t>& positions,
          const std::vector<std::uint8_t>& keep) {
  std::vector<index_t> indptr(positions.size() + 1);
  std::iota(indptr.begin(), indptr.end(), 0);
  const auto k = rows_of(positions, 1.0f), v = rows_of(positions, -1.0f);
  for (index_t l = 0; l < cache.layers(); ++l) {
    cpu::gated_append(cache, policy, l, make_host_span(std::as_const(indptr)), make_host_span(k),
                      make_host_span(v), make_host_span(keep), make_host_span(positions));
  }
}

template <class C>
void check_contents(const C& cache, index_t l, std::size_t b,
                    const std::vector<index_t>& positions) {
  REQUIRE(cache.length(l, b) == static_cast<index_t>(positions.size()));
  for (index_t i = 0; i < cache.length(l, b); ++i) {
    const index_t p = positions[static_cast<std::size_t>(i)];
    CHECK(cache.position(l, b, i) == p);
    CHECK(cache.key(l, b, i)[2] == doctest::Approx(static_cast<float>(p) + 0.2f));
    CHECK(cache.value(l, b, i)[0] == -static_cast<float>(p));
  }
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE_TEMPLATE("kv cache: online gate, per-layer lengths, positions preserved", C,
                     paged_kv_cache, contiguous_kv_cache) {
    static_assert(kv_storage<C, host_t> && host_kv_storage<C>);
    C cache = make_cache<C>(4, 2, 12);
    const online_gate_policy gate{2};
    // prompt: 3 tokens per sequence, cached in full everywhere (multi-token append: keep = 1)
    {
      const std::vector<index_t> indptr{0, 3, 6};
      const std::vector<index_t> pos{0, 1, 2, 0, 1, 2};
      const std::vector<std::uint8_t> keep(6, 1);
      const auto k = rows_of(pos, 1), v = rows_of(pos, -1);
      for (index_t l = 0; l < 4; ++l) {
        cpu::gated_append(cache, gate, l, make_host_span(indptr), make_host_span(k),
                          make_host_span(v), make_host_span(keep), make_host_span(pos));
      }
    }
    // decode: positions 3, 4, 5; sequence 0 keeps 3 and 5, sequence 1 keeps only 4
    step(cache, gate, {3, 3}, {1, 0});
    step(cache, gate, {4, 4}, {0, 1});
    step(cache, gate, {5, 5}, {1, 0});
    for (index_t l = 0; l < 2; ++l) {  // below the sparse layer: every token
      check_contents(cache, l, 0, {0, 1, 2, 3, 4, 5});
      check_contents(cache, l, 1, {0, 1, 2, 3, 4, 5});
    }
    for (index_t l = 2; l < 4; ++l) {  // at and above: only kept tokens, original positions
      check_contents(cache, l, 0, {0, 1, 2, 3, 5});
      check_contents(cache, l, 1, {0, 1, 2, 4});
    }
    CHECK(cache.appended(3, 1) == 4);
    CHECK(bytes_held(cache) ==
          static_cast<std::size_t>(2 * 12 + 2 * (5 + 4)) * 2 * W * sizeof(float));
  }

  TEST_CASE_TEMPLATE("kv cache: StreamingLLM and H2O keep exactly their budgets", C, paged_kv_cache,
                     contiguous_kv_cache) {
    C cache = make_cache<C>(2, 1, 40);
    const full_cache_policy full;
    for (index_t t = 0; t < 20; ++t) step(cache, full, {t}, {1});
    const streaming_policy stream{2, 5};
    CHECK(cpu::enforce_retention(cache, stream, 0, 0) == 13);
    check_contents(cache, 0, 0, {0, 1, 15, 16, 17, 18, 19});

    // H2O on layer 1: budget floor(0.5 * 20) = 10 = 4 recent + 6 heavy hitters
    const h2o_policy h2o{0.5, 4, 0};
    std::vector<float> scores(20);
    for (index_t i = 0; i < 20; ++i)
      scores[static_cast<std::size_t>(i)] = static_cast<float>((i * 7) % 11);
    std::vector<index_t> kept;
    CHECK(cpu::enforce_retention(cache, h2o, 1, 0, make_host_span(std::as_const(scores)), &kept) ==
          10);
    // heavy hitters among positions 0..15 by score (i*7)%11, ties to the earlier token
    std::vector<index_t> older(16);
    std::iota(older.begin(), older.end(), 0);
    std::stable_sort(older.begin(), older.end(), [&](index_t a, index_t b) {
      return scores[static_cast<std::size_t>(a)] > scores[static_cast<std::size_t>(b)];
    });
    std::vector<index_t> expected(older.begin(), older.begin() + 6);
    std::sort(expected.begin(), expected.end());
    for (index_t i = 16; i < 20; ++i) expected.push_back(i);
    CHECK(kept == expected);
    check_contents(cache, 1, 0, expected);
    // uncompressed layers keep everything
    const h2o_policy first_layers{0.5, 4, 2};
    CHECK(cpu::enforce_retention(cache, first_layers, 1, 0,
                                 make_host_span(std::as_const(scores))) == 0);
    CHECK_THROWS_WITH_AS(cpu::enforce_retention(cache, h2o_policy{0.2, 2, 0}, 1, 0),
                         doctest::Contains("scores must have one entry per held token (10), got 0"),
                         error);
  }

  TEST_CASE(
      "paged kv cache: eviction frees whole pages and they are reused; overflow is an error") {
    paged_kv_cache cache({1, 2, W, 4, 6});
    const full_cache_policy full;
    for (index_t t = 0; t < 10; ++t) step(cache, full, {t, 100 + t}, {1, 1});  // 3 pages each
    CHECK(cache.pool().free_pages() == 0);
    // any further token would need a 4th page for one sequence: capacity overflow, nothing written
    CHECK(cache.length(0, 0) == 10);
    step(cache, full, {10, 110}, {1, 1});  // fits in the partly filled third pages
    step(cache, full, {11, 111}, {1, 1});
    CHECK_THROWS_WITH_AS(step(cache, full, {12, 112}, {1, 1}),
                         doctest::Contains("out of KV pages (all 6 in use)"), error);
    CHECK(cache.length(0, 0) == 12);
    // StreamingLLM keeps 1 + 4 tokens of sequence 0: two of its three pages return to the pool
    const auto before = cache.pages(0, 0);
    CHECK(cpu::enforce_retention(cache, streaming_policy{1, 4}, 0, 0) == 7);
    CHECK(cache.pool().free_pages() == 1);
    CHECK(cache.pages(0, 0).size() == 2);
    std::vector<index_t> expect{0, 8, 9, 10, 11};
    check_contents(cache, 0, 0, expect);
    // the freed page is handed to the next sequence that needs one
    const std::set<index_t> old(before.begin(), before.end());
    step(cache, full, {12, 112}, {1, 1});
    CHECK(old.count(cache.pages(0, 1).back()) == 1);
    auto view = cache.view(0);
    CHECK(view.length(0) == 6);
    CHECK(view.length(1) == 13);
    CHECK(view.position(1, 12) == 112);
    CHECK(view.key(0, 5)[0] == 12.0f);
    CHECK(view.last_page_len[0] == 2);
  }

  TEST_CASE("paged kv cache: page size 1, random operations against a plain reference") {
    test::rng g(12);
    paged_kv_cache cache({2, 3, W, 1, 200});
    std::vector<std::vector<std::vector<index_t>>> ref(2, std::vector<std::vector<index_t>>(3));
    const online_gate_policy gate{1};
    for (index_t t = 0; t < 40; ++t) {
      std::vector<std::uint8_t> keep{static_cast<std::uint8_t>(g() % 2),
                                     static_cast<std::uint8_t>(g() % 2),
                                     static_cast<std::uint8_t>(g() % 2)};
      step(cache, gate, {t, t, t}, keep);
      for (std::size_t b = 0; b < 3; ++b) {
        ref[0][b].push_back(t);
        if (keep[b]) ref[1][b].push_back(t);
      }
      if (t % 10 == 9) {  // evict every other held token of layer 1, sequence t % 3
        const auto b = static_cast<std::size_t>(t % 3);
        std::vector<index_t> kept;
        for (index_t i = 0; i < cache.length(1, b); i += 2) kept.push_back(i);
        cache.retain(1, b, make_host_span(std::as_const(kept)));
        std::vector<index_t> next;
        for (index_t i : kept) next.push_back(ref[1][b][static_cast<std::size_t>(i)]);
        ref[1][b] = next;
      }
    }
    for (index_t l = 0; l < 2; ++l) {
      for (std::size_t b = 0; b < 3; ++b)
        check_contents(cache, l, b, ref[static_cast<std::size_t>(l)][b]);
    }
    index_t held = 0;
    for (index_t l = 0; l < 2; ++l) held += held_tokens(cache, l);
    CHECK(cache.pool().used_pages() == held);  // page size 1: one page per held token
  }

  TEST_CASE_TEMPLATE(
      "kv cache: each layer's view shows exactly what the cache holds, after appends and evictions",
      C, paged_kv_cache, contiguous_kv_cache) {
    test::rng g(5);
    C cache = make_cache<C>(2, 3, 30);
    const online_gate_policy gate{1};
    for (index_t t = 0; t < 20; ++t) {
      step(cache, gate, {t, t, t},
           {static_cast<std::uint8_t>(g() % 2), 1, static_cast<std::uint8_t>(g() % 2)});
      if (t % 7 == 6) {
        for (std::size_t b = 0; b < 3; ++b)
          cpu::enforce_retention(cache, streaming_policy{2, 3}, 0, b);
      }
    }
    for (index_t l = 0; l < 2; ++l) {
      const auto view = cache.view(l);
      REQUIRE(view.batch() == 3);
      for (std::size_t b = 0; b < 3; ++b) {
        CAPTURE(l);
        CAPTURE(b);
        REQUIRE(view.length(b) == cache.length(l, b));
        for (index_t i = 0; i < view.length(b); ++i) {
          CHECK(view.position(b, i) == cache.position(l, b, i));
          CHECK(view.key(b, i) == cache.key(l, b, i));
          CHECK(view.value(b, i)[1] == cache.value(l, b, i)[1]);
        }
      }
    }
    CHECK(cache.view(0).length(1) == 2 + 3 + 6);  // sinks + window at t = 13, then 6 more tokens
    CHECK_THROWS_WITH_AS(cache.view(2), doctest::Contains("layer 2 is not in [0, 2)"), error);
  }

  TEST_CASE("kv cache: bad input is a clear error") {
    contiguous_kv_cache cache({2, 1, W, 2});
    const std::vector<float> row(W, 1.0f);
    cache.append(0, 0, row.data(), row.data(), 0);
    cache.append(0, 0, row.data(), row.data(), 1);
    CHECK_THROWS_WITH_AS(cache.append(0, 0, row.data(), row.data(), 2),
                         doctest::Contains("layer 0 sequence 0 is full (2 tokens)"), error);
    CHECK_THROWS_WITH_AS(cache.append(2, 0, row.data(), row.data(), 0),
                         doctest::Contains("layer 2 is not in [0, 2)"), error);
    const std::vector<index_t> bad{1, 0};
    CHECK_THROWS_WITH_AS(cache.retain(0, 0, make_host_span(bad)),
                         doctest::Contains("must be ascending"), error);
    page_pool pool(2);
    const index_t p = pool.allocate();
    pool.release(p);
    CHECK_THROWS_WITH_AS(pool.release(p), doctest::Contains("not in use"), error);
    CHECK_THROWS_WITH_AS(h2o_policy{1.5}.retain(0, {4, 4}, {}, {}),
                         doctest::Contains("ratio must be in [0, 1]"), error);
    const std::vector<index_t> indptr{0, 1};
    const std::vector<std::uint8_t> keep{1};
    const std::vector<index_t> pos{0};
    const std::vector<float> short_k(2);
    CHECK_THROWS_WITH_AS(cpu::gated_append(cache, full_cache_policy{}, 1, make_host_span(indptr),
                                           make_host_span(short_k), make_host_span(short_k),
                                           make_host_span(keep), make_host_span(pos)),
                         doctest::Contains("k and v must be [tokens = 1, width = 3]"), error);
  }

  TEST_CASE("h2o: scorer and policy stay aligned through eviction") {
    paged_kv_cache cache({1, 1, W, 2, 20});
    h2o_scorer scorer(1);
    const h2o_policy h2o{0.5, 2, 0};
    const full_cache_policy full;
    test::rng g(3);
    for (index_t t = 0; t < 16; ++t) {
      step(cache, full, {t}, {1});
      const std::vector<index_t> one{1};
      scorer.append(host, make_host_span(one));
      // attention of the new token over the tracked tokens (uniform noise, normalised)
      const index_t n = cache.length(0, 0);
      std::vector<float> p(static_cast<std::size_t>(n));
      for (auto& x : p) x = static_cast<float>(g() % 100 + 1);
      const float z = std::accumulate(p.begin(), p.end(), 0.0f);
      for (auto& x : p) x /= z;
      const std::vector<index_t> pi{0, n};
      scorer.accumulate(host, {make_host_span(pi), make_host_span(std::as_const(p))});
      std::vector<float> s(static_cast<std::size_t>(n));
      scorer.scores(host, make_host_span(s));
      std::vector<index_t> kept;
      cpu::enforce_retention(cache, h2o, 0, 0, make_host_span(std::as_const(s)), &kept);
      const std::vector<index_t> ki{0, static_cast<index_t>(kept.size())};
      scorer.retain(host, {make_host_span(ki), make_host_span(std::as_const(kept))});
      CHECK(cache.length(0, 0) == std::min(n, std::max<index_t>(2, ratio_budget(t + 1, 0.5))));
      CHECK(scorer.tracked(0) == cache.length(0, 0));
      REQUIRE(cache.length(0, 0) > 0);
      CHECK(cache.position(0, 0, cache.length(0, 0) - 1) == t);  // the newest token survives
    }
  }
}

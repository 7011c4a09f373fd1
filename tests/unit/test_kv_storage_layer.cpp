// SPDX-License-Identifier: Apache-2.0
/// @file test_kv_storage_layer.cpp
/// @brief The layer-level half of `kv_storage` on the host caches (the calls a CUDA cache also
/// answers): `append(host, ...)` and `retain(host, ...)` equal the token-by-token calls on random
/// ragged steps, gated and not, with evictions and page reuse; `lengths(l)` and
/// `appended_counts(l)` follow them; a call that cannot be done in full changes nothing and names
/// the argument or the sequence without room.
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>

#include <support/errors.hpp>
#include <support/random.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

using namespace dynllava;
using dynllava::test::error_of;

namespace {

constexpr index_t W = 4;
constexpr index_t layers = 2;

template <class C>
C make_cache(std::size_t batch, index_t room);

template <>
paged_kv_cache make_cache<paged_kv_cache>(std::size_t batch, index_t room) {
  // page size 3, a pool shared by both layers
  return paged_kv_cache({layers, batch, W, 3, layers * static_cast<index_t>(batch) * (room / 3)});
}
template <>
contiguous_kv_cache make_cache<contiguous_kv_cache>(std::size_t batch, index_t room) {
  return contiguous_kv_cache({layers, batch, W, room});
}

/// New tokens of one call: ragged, random rows, random gate decisions, fresh positions.
struct new_tokens {
  std::vector<index_t> indptr, positions;
  std::vector<float> k, v;
  std::vector<std::uint8_t> keep;
};

new_tokens random_tokens(test::rng& g, std::size_t batch, index_t max_new, index_t& next) {
  new_tokens t;
  t.indptr = test::indptr_of(test::random_lengths(g, batch, max_new));
  const auto n = static_cast<std::size_t>(t.indptr.back());
  for (std::size_t i = 0; i < n * W; ++i) {
    t.k.push_back(static_cast<float>(g() % 1000));
    t.v.push_back(-static_cast<float>(g() % 1000));
  }
  for (std::size_t i = 0; i < n; ++i) {
    t.keep.push_back(static_cast<std::uint8_t>(g() % 2));
    t.positions.push_back(next++);
  }
  return t;
}

template <class C>
void expect_same(const C& got, const C& want) {
  for (index_t l = 0; l < layers; ++l) {
    for (std::size_t b = 0; b < want.batch(); ++b) {
      REQUIRE(got.length(l, b) == want.length(l, b));
      CHECK(got.lengths(l)[b] == want.length(l, b));
      CHECK(got.appended_counts(l)[b] == want.appended(l, b));
      for (index_t i = 0; i < want.length(l, b); ++i) {
        CHECK(got.position(l, b, i) == want.position(l, b, i));
        for (index_t c = 0; c < W; ++c) {
          CHECK(got.key(l, b, i)[c] == want.key(l, b, i)[c]);
          CHECK(got.value(l, b, i)[c] == want.value(l, b, i)[c]);
        }
      }
    }
  }
}

/// A cache's every (layer, sequence) contents, to check that a refused call changed nothing.
template <class C>
std::vector<float> snapshot(const C& c) {
  std::vector<float> out;
  for (index_t l = 0; l < layers; ++l) {
    for (std::size_t b = 0; b < c.batch(); ++b) {
      out.push_back(static_cast<float>(c.length(l, b)));
      out.push_back(static_cast<float>(c.appended(l, b)));
      for (index_t i = 0; i < c.length(l, b); ++i) {
        out.push_back(static_cast<float>(c.position(l, b, i)));
        out.insert(out.end(), c.key(l, b, i), c.key(l, b, i) + W);
      }
    }
  }
  return out;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE_TEMPLATE("kv storage: layer-level append and retain equal the token-by-token calls", C,
                     paged_kv_cache, contiguous_kv_cache) {
    static_assert(kv_storage<C, host_t> && host_kv_storage<C>);
    test::rng g(41);
    constexpr std::size_t batch = 5;
    C layered = make_cache<C>(batch, 60);
    C tokenwise = make_cache<C>(batch, 60);
    index_t next = 0;
    for (int call = 0; call < 12; ++call) {
      CAPTURE(call);
      const new_tokens t = random_tokens(g, batch, 4, next);
      for (index_t l = 0; l < layers; ++l) {
        const bool gated = l == 1;  // layer 0 takes every token (keep empty)
        const auto keep =
            gated ? make_host_span(std::as_const(t.keep)) : host_span<const std::uint8_t>{};
        layered.append(host, l, make_host_span(t.indptr), make_host_span(t.k), make_host_span(t.v),
                       keep, make_host_span(t.positions));
        const auto w = static_cast<std::size_t>(W);
        for (std::size_t b = 0; b < batch; ++b) {
          for (index_t i = t.indptr[b]; i < t.indptr[b + 1]; ++i) {
            const auto u = static_cast<std::size_t>(i);
            if (gated && t.keep[u] == 0) continue;
            tokenwise.append(l, b, t.k.data() + u * w, t.v.data() + u * w, t.positions[u]);
          }
        }
      }
      expect_same(layered, tokenwise);
      if (call % 3 == 2) {  // evict: random ascending kept lists, some sequences untouched
        for (index_t l = 0; l < layers; ++l) {
          std::vector<index_t> indptr{0}, kept;
          for (std::size_t b = 0; b < batch; ++b) {
            const bool all = g() % 4 == 0;
            std::vector<index_t> row;
            for (index_t i = 0; i < tokenwise.length(l, b); ++i) {
              if (all || g() % 2 == 0) row.push_back(i);
            }
            tokenwise.retain(l, b, make_host_span(std::as_const(row)));
            kept.insert(kept.end(), row.begin(), row.end());
            indptr.push_back(static_cast<index_t>(kept.size()));
          }
          layered.retain(host, l,
                         host_ragged<const index_t>{make_host_span(std::as_const(indptr)),
                                                    make_host_span(std::as_const(kept))});
        }
        expect_same(layered, tokenwise);
      }
    }
    if constexpr (std::is_same_v<C, paged_kv_cache>) {
      CHECK(layered.pool().free_pages() == tokenwise.pool().free_pages());
      for (index_t l = 0; l < layers; ++l) {
        for (std::size_t b = 0; b < batch; ++b) CHECK(layered.pages(l, b) == tokenwise.pages(l, b));
      }
    }
  }

  TEST_CASE_TEMPLATE("kv storage: a layer-level call that cannot be done in full changes nothing",
                     C, paged_kv_cache, contiguous_kv_cache) {
    C cache = make_cache<C>(2, 6);  // contiguous: 6 tokens per (layer, sequence); paged: 8 pages
    const std::vector<index_t> indptr{0, 2, 3};
    const std::vector<index_t> positions{0, 1, 0};
    const std::vector<float> rows(3 * W, 1.0f);
    const std::vector<std::uint8_t> keep{1, 0, 1};
    auto append = [&](index_t l, host_span<const index_t> ip, host_span<const float> k,
                      host_span<const std::uint8_t> kp, host_span<const index_t> pos) {
      cache.append(host, l, ip, k, make_host_span(rows), kp, pos);
    };
    append(0, make_host_span(indptr), make_host_span(rows), make_host_span(keep),
           make_host_span(positions));
    const auto before = snapshot(cache);
    CHECK(error_of([&] {
            append(2, make_host_span(indptr), make_host_span(rows), {}, make_host_span(positions));
          }).find("layer 2 is not in [0, 2)") != std::string::npos);
    CHECK(error_of([&] {
            append(0, host_span<const index_t>(indptr.data(), 2), make_host_span(rows), {},
                   make_host_span(positions));
          }).find("indptr must have batch + 1 = 3 entries, got 2") != std::string::npos);
    CHECK(error_of([&] {
            append(0, make_host_span(indptr), host_span<const float>(rows.data(), 5), {},
                   make_host_span(positions));
          }).find("k and v must be [tokens = 3, width = 4]") != std::string::npos);
    CHECK(error_of([&] {
            append(0, make_host_span(indptr), make_host_span(rows),
                   host_span<const std::uint8_t>(keep.data(), 2), make_host_span(positions));
          }).find("keep must be empty (every token) or have one entry per token (3), got 2") !=
          std::string::npos);
    const std::vector<index_t> bad_indptr{0, 3, 2};
    CHECK(error_of([&] {
            append(0, make_host_span(bad_indptr), make_host_span(rows), {},
                   make_host_span(positions));
          }).find("indptr must be non-decreasing") != std::string::npos);
    CHECK(snapshot(cache) == before);
    // room: sequence 1 holds 1 token; 9 more do not fit (contiguous: 6 rows; paged: the pool)
    const std::vector<index_t> many_indptr{0, 0, 9};
    std::vector<index_t> many_positions(9);
    const std::vector<float> many_rows(9 * W, 2.0f);
    const std::string full = error_of([&] {
      cache.append(host, 0, make_host_span(many_indptr), make_host_span(many_rows),
                   make_host_span(many_rows), {}, make_host_span(std::as_const(many_positions)));
    });
    if constexpr (std::is_same_v<C, contiguous_kv_cache>) {
      CHECK(full.find("layer 0 sequence 1 holds 1 of 6 tokens and cannot take 9 more; nothing was "
                      "appended") != std::string::npos);
    } else {
      // 2 pages used of 8; sequence 1 needs 3 more pages for 10 tokens: fits; 27 tokens do not
      CHECK(full == "<no error>");
      cache.retain(host, 0,
                   host_ragged<const index_t>{make_host_span(std::vector<index_t>{0, 1, 2}),
                                              make_host_span(std::vector<index_t>{0, 0})});
      const std::vector<index_t> huge_indptr{0, 0, 27};
      std::vector<index_t> huge_positions(27);
      const std::vector<float> huge_rows(27 * W, 3.0f);
      const auto kept_before = snapshot(cache);
      const std::string none = error_of([&] {
        cache.append(host, 0, make_host_span(huge_indptr), make_host_span(huge_rows),
                     make_host_span(huge_rows), {}, make_host_span(std::as_const(huge_positions)));
      });
      CHECK(none.find("layer 0 needs 9 new pages, 6 of 8 are free; nothing was appended") !=
            std::string::npos);
      CHECK(snapshot(cache) == kept_before);
      return;
    }
    CHECK(snapshot(cache) == before);
    // kept lists: one row per sequence, ascending, below the held count; checked before any move
    const std::vector<index_t> kept_indptr{0, 1, 2};
    const std::vector<index_t> kept_bad{1, 1};  // sequence 1 holds one token: position 1 is out
    CHECK(error_of([&] {
            cache.retain(
                host, 0,
                host_ragged<const index_t>{make_host_span(kept_indptr), make_host_span(kept_bad)});
          }).find("kept[0] = 1 must be ascending and below the 1 held tokens") !=
          std::string::npos);
    CHECK(error_of([&] {
            cache.retain(host, 0,
                         host_ragged<const index_t>{host_span<const index_t>(kept_indptr.data(), 2),
                                                    host_span<const index_t>(kept_bad.data(), 1)});
          }).find("kept must have one row per sequence (2), got indptr of 2 entries") !=
          std::string::npos);
    CHECK(snapshot(cache) == before);
    CHECK(error_of([&] { (void)cache.lengths(-1); }).find("lengths: layer -1 is not in [0, 2)") !=
          std::string::npos);
  }
}

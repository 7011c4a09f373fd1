// SPDX-License-Identifier: Apache-2.0
/// @file test_radix_steps.cpp
/// @brief The arithmetic of the CUDA top-k (select/radix_steps.hpp), run on the CPU in an
/// emulation of both kernel regimes (one block per sequence; tiles over many blocks) and compared
/// with `cpu::topk` on random and adversarial rows. The emulations follow the kernels step for
/// step: 256-bin histograms of the prefix-sharing keys, the bin choice by exclusive suffix
/// counts, the state advance, and the ordered compaction in tiles with running carries.
#include <dynllava/select/gate.hpp>
#include <dynllava/select/radix_steps.hpp>
#include <dynllava/select/topk.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <limits>
#include <vector>

using namespace dynllava;
using namespace dynllava::detail;

namespace {

std::vector<std::uint32_t> keys_of(const std::vector<float>& row) {
  std::vector<std::uint32_t> keys(row.size());
  for (std::size_t i = 0; i < row.size(); ++i) keys[i] = score_key(row[i]);
  return keys;
}

/// The select passes as both regimes run them (the tiled one sums tile histograms first, which
/// gives the same histogram). Checks that exactly one bin holds the rank at every pass.
radix_select_state emulate_select(const std::vector<std::uint32_t>& keys, index_t k) {
  radix_select_state s = radix_select_start(k);
  for (int shift = radix_first_shift; shift >= 0; shift -= radix_digit_bits) {
    std::array<std::uint32_t, radix_digit_bins> hist{};
    for (std::uint32_t key : keys) {
      if (radix_prefix_matches(key, s.prefix, shift)) ++hist[radix_digit(key, shift)];
    }
    // thread t looks at bin 255 - t; `above` is the exclusive scan over threads
    int winners = 0;
    radix_select_state next = s;
    std::uint32_t above = 0;
    for (std::uint32_t t = 0; t < radix_digit_bins; ++t) {
      const std::uint32_t count = hist[radix_digit_bins - 1 - t];
      if (radix_bin_holds_rank(above, count, s.rank)) {
        ++winners;
        next = radix_select_advance(s, shift, radix_digit_bins - 1 - t, above, count);
      }
      above += count;
    }
    REQUIRE(winners == 1);
    s = next;
    if (s.done != 0u) break;
  }
  REQUIRE(s.done == 1u);
  return s;
}

/// Ordered compaction of `[begin, end)` in tiles of `threads`, as `compact_kept` does.
void emulate_compact(const std::vector<std::uint32_t>& keys, index_t begin, index_t end,
                     const radix_select_state& fin, tie_break tie, std::uint32_t kept_first,
                     std::uint32_t equal_first, std::vector<index_t>& out, int threads) {
  std::uint32_t kept_carry = kept_first;
  std::uint32_t equal_carry = equal_first;
  for (index_t base = begin; base < end; base += threads) {
    std::uint32_t equal_before = 0;
    std::uint32_t slot = 0;
    for (index_t i = base; i < std::min(end, base + threads); ++i) {
      const std::uint32_t key = keys[static_cast<std::size_t>(i)];
      if (radix_keeps(fin, key, equal_carry + equal_before, tie)) {
        out.at(kept_carry + slot) = i;
        ++slot;
      }
      equal_before += key == fin.threshold ? 1u : 0u;
    }
    kept_carry += slot;
    equal_carry += fin.ties > 0 ? equal_before : 0u;
  }
}

std::vector<index_t> emulate_block_topk(const std::vector<float>& row, index_t k, tie_break tie) {
  const auto n = static_cast<index_t>(row.size());
  std::vector<index_t> out(static_cast<std::size_t>(k));
  if (k == 0) return out;
  if (k == n) {
    for (index_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = i;
    return out;
  }
  const auto keys = keys_of(row);
  emulate_compact(keys, 0, n, emulate_select(keys, k), tie, 0, 0, out, 256);
  return out;
}

std::vector<index_t> emulate_tiled_topk(const std::vector<float>& row, index_t k, tie_break tie,
                                        index_t tile) {
  const auto n = static_cast<index_t>(row.size());
  std::vector<index_t> out(static_cast<std::size_t>(k));
  if (k == 0) return out;
  if (k == n) {
    for (index_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = i;
    return out;
  }
  const auto keys = keys_of(row);
  const radix_select_state fin = emulate_select(keys, k);
  const index_t tiles = tiles_for(n, tile);
  // tile counts, then exclusive prefixes (topk_tile_count_kernel, topk_tile_scan_kernel)
  std::vector<std::uint32_t> kept_first(static_cast<std::size_t>(tiles));
  std::vector<std::uint32_t> equal_first(static_cast<std::size_t>(tiles));
  std::uint32_t kept_carry = 0;
  std::uint32_t equal_carry = 0;
  for (index_t t = 0; t < tiles; ++t) {
    std::uint32_t above = 0;
    std::uint32_t equal = 0;
    for (index_t i = t * tile; i < std::min(n, (t + 1) * tile); ++i) {
      above += keys[static_cast<std::size_t>(i)] > fin.threshold ? 1u : 0u;
      equal += keys[static_cast<std::size_t>(i)] == fin.threshold ? 1u : 0u;
    }
    kept_first[static_cast<std::size_t>(t)] = kept_carry;
    equal_first[static_cast<std::size_t>(t)] = equal_carry;
    kept_carry += above + radix_kept_ties(fin, equal_carry, equal, tie);
    equal_carry += equal;
  }
  REQUIRE(kept_carry == static_cast<std::uint32_t>(k));
  for (index_t t = 0; t < tiles; ++t) {  // topk_tile_write_kernel
    emulate_compact(keys, t * tile, std::min(n, (t + 1) * tile), fin, tie,
                    kept_first[static_cast<std::size_t>(t)],
                    equal_first[static_cast<std::size_t>(t)], out, 256);
  }
  return out;
}

std::vector<index_t> cpu_topk(const std::vector<float>& row, index_t k, tie_break tie) {
  const std::vector<index_t> indptr{0, static_cast<index_t>(row.size())};
  const auto sel = cpu::topk(host_ragged<const float>{make_host_span(indptr), make_host_span(row)},
                             keep_count(k), topk_options{tie});
  return sel.positions;
}

void check_row(const std::vector<float>& row, index_t k) {
  for (tie_break tie : {tie_break::smaller_position, tie_break::larger_position}) {
    CAPTURE(tie);
    CAPTURE(k);
    CAPTURE(row.size());
    const auto expected = cpu_topk(row, k, tie);
    CHECK(emulate_block_topk(row, k, tie) == expected);
    for (index_t tile : {index_t{64}, index_t{1000}, topk_tile_items}) {
      CAPTURE(tile);
      CHECK(emulate_tiled_topk(row, k, tie, tile) == expected);
    }
  }
}

}  // namespace

TEST_SUITE("select") {
  TEST_CASE("radix steps: digits, prefixes and the bin holding a rank") {
    CHECK(radix_digit(0xa1b2c3d4u, 24) == 0xa1u);
    CHECK(radix_digit(0xa1b2c3d4u, 0) == 0xd4u);
    CHECK(radix_prefix_matches(0xa1b2c3d4u, 0u, 24));  // first pass: every key
    CHECK(radix_prefix_matches(0xa1b2c3d4u, 0xa1b20000u, 8));
    CHECK_FALSE(radix_prefix_matches(0xa1b3c3d4u, 0xa1b20000u, 8));
    CHECK(radix_prefix_matches(0xa1b2c3d4u, 0xa1b2c300u, 0));
    CHECK_FALSE(radix_prefix_matches(0xa1b2c4d4u, 0xa1b2c300u, 0));
    CHECK(radix_bin_holds_rank(0, 3, 1));
    CHECK(radix_bin_holds_rank(0, 3, 3));
    CHECK_FALSE(radix_bin_holds_rank(0, 3, 4));
    CHECK_FALSE(radix_bin_holds_rank(3, 0, 4));  // empty bins never hold a rank
    CHECK(radix_bin_holds_rank(3, 2, 5));
    CHECK_FALSE(radix_bin_holds_rank(5, 2, 5));
  }

  TEST_CASE("radix steps: the state ends on a whole bin or on the last digit with ties") {
    auto s = radix_select_start(4);
    s = radix_select_advance(s, 24, 0x80u, 1, 3);  // rank 3 of 3 in bin 0x80: whole bin kept
    CHECK(s.done == 1u);
    CHECK(s.threshold == 0x7fffffffu);
    CHECK(s.ties == 0u);
    CHECK(radix_keeps(s, 0x80000000u, 0, tie_break::smaller_position));
    CHECK_FALSE(radix_keeps(s, 0x7fffffffu, 0, tie_break::smaller_position));

    auto t = radix_select_start(2);
    t.prefix = 0x3f800000u & 0xffffff00u;
    t = radix_select_advance(t, 0, 0x00u, 0, 5);  // 2 of 5 equal keys
    CHECK(t.done == 1u);
    CHECK(t.threshold == 0x3f800000u);
    CHECK(t.ties == 2u);
    CHECK(t.equal == 5u);
    CHECK(radix_keeps(t, 0x3f800000u, 1, tie_break::smaller_position));
    CHECK_FALSE(radix_keeps(t, 0x3f800000u, 2, tie_break::smaller_position));
    CHECK_FALSE(radix_keeps(t, 0x3f800000u, 2, tie_break::larger_position));
    CHECK(radix_keeps(t, 0x3f800000u, 3, tie_break::larger_position));
    CHECK(radix_kept_ties(t, 0, 5, tie_break::smaller_position) == 2u);
    CHECK(radix_kept_ties(t, 1, 3, tie_break::smaller_position) == 1u);
    CHECK(radix_kept_ties(t, 2, 3, tie_break::smaller_position) == 0u);
    CHECK(radix_kept_ties(t, 2, 2, tie_break::larger_position) == 1u);
    CHECK(radix_kept_ties(t, 3, 2, tie_break::larger_position) == 2u);
  }

  TEST_CASE("radix steps: regime rule, tiles, budgets and the sequence of a token") {
    CHECK(topk_regime_for(0) == topk_regime::block_per_sequence);
    CHECK(topk_regime_for(576) == topk_regime::block_per_sequence);
    CHECK(topk_regime_for(topk_block_row_max) == topk_regime::block_per_sequence);
    CHECK(topk_regime_for(topk_block_row_max + 1) == topk_regime::blocks_per_sequence);
    CHECK(tiles_for(0, 4096) == 0);
    CHECK(tiles_for(1, 4096) == 1);
    CHECK(tiles_for(4096, 4096) == 1);
    CHECK(tiles_for(4097, 4096) == 2);
    CHECK(topk_row_max >= (1LL << 26));
    CHECK(topk_fused_batch_max >= 256);  // the real batches take one launch

    index_t k = -1;
    CHECK(checked_budget(budget_kind::ratio, 0.2, 0, 0, 576, k));
    CHECK(k == 115);
    CHECK_FALSE(checked_budget(budget_kind::ratio, 1.5, 0, 0, 576, k));
    CHECK(checked_budget(budget_kind::count, 0.0, 7, 0, 7, k));
    CHECK(k == 7);
    CHECK_FALSE(checked_budget(budget_kind::count, 0.0, 8, 0, 7, k));
    CHECK_FALSE(checked_budget(budget_kind::count, 0.0, -1, 0, 7, k));
    CHECK(checked_budget(budget_kind::per_sequence, 0.0, 0, 0, 0, k));
    CHECK_FALSE(checked_budget(budget_kind::per_sequence, 0.0, 0, 3, 2, k));
    CHECK_FALSE(checked_budget(budget_kind::per_sequence, 0.0, 0, -1, 2, k));

    // ragged with empty sequences: 0:[0,2) 1:empty 2:empty 3:[2,5) 4:empty
    const std::vector<index_t> indptr{0, 2, 2, 2, 5, 5};
    const std::vector<std::size_t> expected{0, 0, 3, 3, 3};
    for (index_t i = 0; i < 5; ++i) CHECK(sequence_of(indptr.data(), 5, i) == expected[i]);
    const std::vector<index_t> leading_empty{0, 0, 1};
    CHECK(sequence_of(leading_empty.data(), 2, 0) == 1);
  }

  TEST_CASE("radix steps: the CUDA gate's CSR offsets, emulated, equal mask_to_positions") {
    test::rng g(17);
    for (int trial = 0; trial < 200; ++trial) {
      CAPTURE(trial);
      const std::size_t batch = static_cast<std::size_t>(trial % 9);
      // many empty sequences, at the start, in runs and at the end
      std::vector<index_t> lengths(batch);
      for (auto& l : lengths) l = g() % 3 == 0 ? 0 : static_cast<index_t>(g() % 6);
      const auto indptr = test::indptr_of(lengths);
      const index_t tokens = indptr.back();
      std::vector<std::uint8_t> keep(static_cast<std::size_t>(tokens));
      for (auto& k : keep) k = static_cast<std::uint8_t>(g() % 2);
      std::vector<index_t> expected(batch + 1), positions(keep.size());
      (void)cpu::mask_to_positions(make_host_span(indptr), make_host_span(std::as_const(keep)),
                                   make_host_span(expected), make_host_span(positions));
      // gate_compact_kernel: at the first token of each sequence, the kept count so far goes to
      // that sequence and the empty ones right before it; the total to the end and the empty
      // sequences at the end
      std::vector<index_t> got(batch + 1, -1);
      index_t kept = 0;
      for (index_t i = 0; i < tokens; ++i) {
        const std::size_t s = sequence_of(indptr.data(), batch, i);
        if (i == indptr[s]) {
          for (std::size_t e = first_sequence_at(indptr.data(), s, i); e <= s; ++e) got[e] = kept;
        }
        kept += keep[static_cast<std::size_t>(i)];
      }
      for (std::size_t e = first_sequence_at(indptr.data(), batch, tokens); e <= batch; ++e) {
        got[e] = kept;
      }
      CHECK(got == expected);
    }
  }

  TEST_CASE("radix steps: both emulated regimes equal cpu::topk on random and adversarial rows") {
    test::rng g(20261202);
    for (auto mix :
         {test::score_mix::distinct, test::score_mix::heavy_ties, test::score_mix::adversarial}) {
      for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{255},
                            std::size_t{576}, std::size_t{1000}, std::size_t{5000}}) {
        const auto row = test::random_scores(g, n, mix);
        const auto nn = static_cast<index_t>(n);
        std::uniform_int_distribution<index_t> pick(0, nn);
        for (index_t k : {index_t{0}, index_t{1}, nn - 1 > 0 ? nn - 1 : 0, nn, pick(g),
                          static_cast<index_t>(nn / 5)}) {
          check_row(row, k);
        }
      }
    }
  }

  TEST_CASE("radix steps: equal keys, one value, identical leading bits") {
    // every key equal: the select ends on the last digit with n ties
    check_row(std::vector<float>(300, 2.5f), 17);
    check_row(std::vector<float>(300, std::numeric_limits<float>::quiet_NaN()), 299);
    // keys that differ only in the last byte, then only in the last bit
    std::vector<float> close(600);
    for (std::size_t i = 0; i < close.size(); ++i) {
      close[i] = std::bit_cast<float>(0x3f800000u + static_cast<std::uint32_t>(i % 256));
    }
    check_row(close, 115);
    std::vector<float> last_bit(600);
    for (std::size_t i = 0; i < last_bit.size(); ++i) {
      last_bit[i] = std::bit_cast<float>(0x3f800000u + static_cast<std::uint32_t>(i % 2));
    }
    for (index_t k : {1, 299, 300, 301, 599}) check_row(last_bit, k);
    // +-0 tie, +-inf at both ends, NaN of both signs below -inf
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> ends{0.0f, -0.0f, inf, -inf, nan, -nan, -0.0f, inf, 0.0f, -inf};
    for (index_t k = 0; k <= 10; ++k) check_row(ends, k);
  }
}

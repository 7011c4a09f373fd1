// SPDX-License-Identifier: Apache-2.0
/// @file test_kv_steps.cpp
/// @brief The arithmetic of the CUDA KV caches (kvcache/kv_steps.hpp) against the host caches:
/// page counts and rows, StreamingLLM's kept positions against `streaming_policy`, the CUDA H2O
/// kept-list path (budget split, the recent window masked to NaN, one budgeted top-k, the merge)
/// emulated on the host against `h2o_policy::retain`, and an
/// emulation of the CUDA append and compaction page bookkeeping (a free stack popped and pushed
/// by `popped_slot` / `pushed_slot`, offsets by an exclusive scan in sequence order) whose page
/// lists must equal `paged_kv_cache`'s, page id for page id, over random appends and evictions.
#include <dynllava/kvcache/kv_steps.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>
#include <dynllava/select/topk.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <limits>
#include <vector>

using namespace dynllava;
using namespace dynllava::detail;

namespace {

/// The CUDA paged bookkeeping of one layer, emulated on the host.
struct emulated_paged_layer {
  index_t page_size;
  std::vector<index_t> stack;    // the free stack, top at the back (stack[count - 1])
  std::vector<index_t> lengths;  // [batch]
  std::vector<std::vector<index_t>> tables;

  /// append_plan_kernel: pages taken in sequence order from the top of the stack.
  void append(const std::vector<index_t>& added) {
    const auto count = static_cast<index_t>(stack.size());
    index_t offset = 0;
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      const index_t need = pages_taken(lengths[b], added[b], page_size);
      for (index_t j = 0; j < need; ++j) {
        tables[b].push_back(stack[static_cast<std::size_t>(popped_slot(count, offset + j))]);
      }
      offset += need;
      lengths[b] += added[b];
    }
    stack.resize(static_cast<std::size_t>(count - offset));
  }

  /// release_pages_kernel: pages pushed in sequence order, each from its last page backwards.
  void retain(const std::vector<index_t>& kept) {
    const auto count = static_cast<index_t>(stack.size());
    index_t offset = 0;
    std::vector<index_t> pushed;
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      const index_t freed = pages_freed(lengths[b], kept[b], page_size);
      for (index_t j = 0; j < freed; ++j) {
        // the kernel writes stack[pushed_slot(count, offset + j)]: the next slot above the top
        REQUIRE(pushed_slot(count, offset + j) == count + static_cast<index_t>(pushed.size()));
        pushed.push_back(tables[b].back());
        tables[b].pop_back();
      }
      offset += freed;
      lengths[b] = kept[b];
    }
    stack.insert(stack.end(), pushed.begin(), pushed.end());
  }
};

}  // namespace

TEST_SUITE("kvcache") {
  TEST_CASE("kv steps: page counts, last page lengths, rows") {
    CHECK(pages_for(0, 16) == 0);
    CHECK(pages_for(1, 16) == 1);
    CHECK(pages_for(16, 16) == 1);
    CHECK(pages_for(17, 16) == 2);
    CHECK(last_page_length(0, 16) == 0);
    CHECK(last_page_length(16, 16) == 16);
    CHECK(last_page_length(17, 16) == 1);
    CHECK(pages_taken(15, 1, 16) == 0);
    CHECK(pages_taken(16, 1, 16) == 1);
    CHECK(pages_taken(0, 33, 16) == 3);
    CHECK(pages_freed(33, 16, 16) == 2);
    CHECK(pages_freed(33, 0, 16) == 3);
    const std::vector<index_t> pages{7, 2, 9};
    CHECK(paged_row(pages.data(), 0, 4) == 28);
    CHECK(paged_row(pages.data(), 5, 4) == 9);
    CHECK(paged_row(pages.data(), 11, 4) == 39);
    CHECK(contiguous_row(3, 5, 10) == 35);
    CHECK(popped_slot(10, 0) == 9);
    CHECK(pushed_slot(10, 2) == 12);
  }

  TEST_CASE("kv steps: StreamingLLM kept positions equal streaming_policy::retain") {
    for (index_t sinks : {0, 1, 4}) {
      for (index_t window : {0, 3, 10}) {
        const streaming_policy policy{sinks, window};
        for (index_t held = 0; held < 30; ++held) {
          std::vector<index_t> expected(static_cast<std::size_t>(held));
          const index_t n =
              policy.retain(0, kv_sequence_state{held, held}, {}, make_host_span(expected));
          expected.resize(static_cast<std::size_t>(n));
          CAPTURE(sinks);
          CAPTURE(window);
          CAPTURE(held);
          REQUIRE(streaming_kept_count(held, sinks, window) == n);
          for (index_t j = 0; j < n; ++j) {
            CHECK(streaming_kept_position(held, sinks, window, j) ==
                  expected[static_cast<std::size_t>(j)]);
          }
        }
      }
    }
  }

  TEST_CASE("kv steps: the emulated CUDA H2O kept lists equal h2o_policy::retain") {
    test::rng g(91);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int trial = 0; trial < 60; ++trial) {
      CAPTURE(trial);
      const auto mix = trial % 3 == 0   ? test::score_mix::adversarial
                       : trial % 3 == 1 ? test::score_mix::heavy_ties
                                        : test::score_mix::distinct;
      const std::size_t batch = 1 + static_cast<std::size_t>(trial % 6);
      const auto held = test::random_lengths(g, batch, 40);
      std::vector<index_t> appended;
      for (index_t h : held) appended.push_back(h + static_cast<index_t>(g() % 30));
      const auto indptr = test::indptr_of(held);
      const auto scores = test::random_scores(g, static_cast<std::size_t>(indptr.back()), mix);
      const h2o_policy policy{trial % 4 == 0 ? 1.0 : 0.1 * static_cast<double>(trial % 7),
                              static_cast<index_t>(trial % 5), trial % 2};
      for (const index_t layer : {0, 1}) {
        CAPTURE(layer);
        // h2o_plan_kernel: budgets, splits; h2o_mask_recent_kernel: the recent window -> NaN
        std::vector<index_t> keep(batch), heavy(batch);
        std::vector<float> masked(scores.size());
        for (std::size_t b = 0; b < batch; ++b) {
          keep[b] = h2o_budget(layer, held[b], appended[b], policy.ratio, policy.recent,
                               policy.uncompressed_layers);
          const h2o_split split = split_h2o_budget(held[b], keep[b], policy.recent);
          CHECK(split.window + split.older == held[b]);
          CHECK(split.heavy <= split.older);
          heavy[b] = split.heavy;
          for (index_t i = 0; i < held[b]; ++i) {
            const auto at = static_cast<std::size_t>(indptr[b] + i);
            masked[at] = i < split.older ? scores[at] : nan;
          }
        }
        // one budgeted top-k of `heavy[b]` per sequence, then h2o_merge_kernel
        std::vector<index_t> top_indptr(batch + 1), top(masked.size());
        (void)cpu::topk(
            {make_host_span(indptr), make_host_span(std::as_const(masked))},
            topk_budget<host_space>::keep_per_sequence(make_host_span(std::as_const(heavy))),
            make_host_span(top_indptr), make_host_span(top));
        for (std::size_t b = 0; b < batch; ++b) {
          CAPTURE(b);
          std::vector<index_t> expected(static_cast<std::size_t>(held[b]));
          const std::vector<float> own(scores.begin() + indptr[b], scores.begin() + indptr[b + 1]);
          const index_t n = policy.retain(layer, kv_sequence_state{held[b], appended[b]},
                                          make_host_span(own), make_host_span(expected));
          REQUIRE(n == keep[b]);
          REQUIRE(top_indptr[b + 1] - top_indptr[b] == heavy[b]);
          for (index_t j = 0; j < n; ++j) {
            const index_t got = j < heavy[b] ? top[static_cast<std::size_t>(top_indptr[b] + j)]
                                             : h2o_recent_position(held[b], keep[b], heavy[b], j);
            CHECK(got == expected[static_cast<std::size_t>(j)]);
          }
        }
      }
    }
  }

  TEST_CASE("kv steps: the emulated CUDA page bookkeeping hands out the host cache's pages") {
    test::rng g(11);
    constexpr std::size_t batch = 5;
    constexpr index_t page_size = 4;
    constexpr index_t num_pages = 64;
    paged_kv_cache host(paged_kv_config{1, batch, 2, page_size, num_pages});
    emulated_paged_layer device{
        page_size, {}, std::vector<index_t>(batch, 0), std::vector<std::vector<index_t>>(batch)};
    for (index_t p = num_pages; p-- > 0;) device.stack.push_back(p);  // page 0 on top
    const std::vector<float> row{1.0f, 2.0f};
    for (int step = 0; step < 60; ++step) {
      std::vector<index_t> added(batch);
      index_t need = 0;
      for (std::size_t b = 0; b < batch; ++b) {
        added[b] = static_cast<index_t>(g() % 4);
        need += pages_taken(host.length(0, b), added[b], page_size);
      }
      if (need > host.pool().free_pages()) break;
      for (std::size_t b = 0; b < batch; ++b) {
        for (index_t t = 0; t < added[b]; ++t) host.append(0, b, row.data(), row.data(), t);
      }
      device.append(added);
      if (step % 3 == 2) {  // evict: keep a random prefix-free subset (the first kept_b tokens)
        std::vector<index_t> kept(batch);
        for (std::size_t b = 0; b < batch; ++b) {
          kept[b] =
              host.length(0, b) == 0 ? 0 : static_cast<index_t>(g() % (host.length(0, b) + 1));
          std::vector<index_t> positions(static_cast<std::size_t>(kept[b]));
          for (index_t j = 0; j < kept[b]; ++j) positions[static_cast<std::size_t>(j)] = j;
          host.retain(0, b, make_host_span(std::as_const(positions)));
        }
        device.retain(kept);
      }
      for (std::size_t b = 0; b < batch; ++b) {
        CAPTURE(step);
        CAPTURE(b);
        REQUIRE(device.tables[b] == host.pages(0, b));
        REQUIRE(device.lengths[b] == host.length(0, b));
      }
      REQUIRE(static_cast<index_t>(device.stack.size()) == host.pool().free_pages());
    }
  }
}

// SPDX-License-Identifier: Apache-2.0
// The decision points written once for every execution tag (pipeline/tagged_hooks.hpp) and the
// host gates with their CUDA twins' outputs (select/gate.hpp), on the host: they equal the host
// hooks and the mask gates on random and adversarial inputs, take a scorer and a selector
// written here, and refuse bad extents before anything runs.
#include <dynllava/dynllava.hpp>
#include <dynllava/nn.hpp>

#include "support/errors.hpp"
#include "support/random.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace dynllava;

namespace {

predictor_config small_config() {
  predictor_config c;
  c.hidden = 24;
  c.d_model = 16;
  c.heads = 2;
  c.ffn = 32;
  c.blocks = 1;
  c.local_dim = 8;
  c.image_head = {8, 8};
  c.output_head = {16, 8, 8};
  return c;
}

/// The reference: the mask gate, then the mask compacted.
host_selection compact(const std::vector<index_t>& indptr, const std::vector<std::uint8_t>& mask) {
  host_selection s;
  s.indptr.assign(indptr.size(), 0);
  s.positions.resize(mask.size());
  s.positions.resize(static_cast<std::size_t>(
      cpu::mask_to_positions(make_host_span(indptr), make_host_span(mask), make_host_span(s.indptr),
                             make_host_span(s.positions))));
  return s;
}

/// A scorer written here: the row's first value minus its last (ties on purpose: rounded).
struct edge_scorer {
  void score(host_t, host_ragged_rows<const float> h, host_span<float> out) const {
    for (std::size_t r = 0; r < h.rows(); ++r) {
      out[r] = std::round(h.row(r)[0] - h.row(r)[h.width - 1]);
    }
  }
};
static_assert(token_scorer<edge_scorer, host_t>);
static_assert(!two_way_predictor<edge_scorer, host_t>);

/// A selector written here: each group's first `n` rows whose score is not below 0.
struct first_non_negative {
  index_t n = 2;
  index_t select(host_t, host_ragged<const float> s, host_span<index_t> indptr,
                 host_span<index_t> positions) const {
    index_t nnz = 0;
    indptr[0] = 0;
    for (std::size_t b = 0; b + 1 < s.indptr.size(); ++b) {
      index_t taken = 0;
      for (index_t i = s.indptr[b]; i < s.indptr[b + 1] && taken < n; ++i) {
        if (s.values[static_cast<std::size_t>(i)] >= 0.0f) {
          positions[static_cast<std::size_t>(nnz++)] = i - s.indptr[b];
          ++taken;
        }
      }
      indptr[b + 1] = nnz;
    }
    return nnz;
  }
};
static_assert(token_selector<first_non_negative, host_t, host_ragged<const float>>);

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("gates: the host tag entry points equal the mask gates then the compaction") {
    test::rng g(71);
    for (int trial = 0; trial < 40; ++trial) {
      CAPTURE(trial);
      const std::size_t batch = 1 + static_cast<std::size_t>(trial % 7);
      const auto indptr = test::indptr_of(test::random_lengths(g, batch, 40));
      const auto tokens = static_cast<std::size_t>(indptr.back());
      const auto mix = trial % 3 == 0   ? test::score_mix::adversarial
                       : trial % 3 == 1 ? test::score_mix::heavy_ties
                                        : test::score_mix::distinct;
      const auto logits = test::random_scores(g, 2 * tokens, mix);
      const auto scores = test::random_scores(g, tokens, mix);

      std::vector<std::uint8_t> mask(tokens), expected_mask(tokens);
      std::vector<index_t> out_indptr(batch + 1, -7), out(tokens, -7);
      cpu::argmax_gate({make_host_span(indptr), make_host_span(logits)},
                       make_host_span(expected_mask));
      argmax_gate(host, make_host_span(indptr), make_host_span(logits), make_host_span(mask),
                  make_host_span(out_indptr), make_host_span(out));
      CHECK(mask == expected_mask);
      auto expected = compact(indptr, expected_mask);
      CHECK(out_indptr == expected.indptr);
      CHECK(std::vector<index_t>(out.begin(), out.begin() + out_indptr.back()) ==
            expected.positions);
      // without a mask: the same positions
      std::vector<index_t> out_indptr2(batch + 1), out2(tokens, -7);
      argmax_gate(host, make_host_span(indptr), make_host_span(logits), host_span<std::uint8_t>{},
                  make_host_span(out_indptr2), make_host_span(out2));
      CHECK(out_indptr2 == out_indptr);
      CHECK(out2 == out);

      for (const float threshold : {0.0f, -1.5f, std::numeric_limits<float>::infinity(),
                                    -std::numeric_limits<float>::infinity()}) {
        CAPTURE(threshold);
        cpu::threshold_gate({make_host_span(indptr), make_host_span(scores)}, threshold,
                            make_host_span(expected_mask));
        threshold_gate(host, {make_host_span(indptr), make_host_span(scores)}, threshold,
                       make_host_span(mask), make_host_span(out_indptr), make_host_span(out));
        CHECK(mask == expected_mask);
        expected = compact(indptr, expected_mask);
        CHECK(out_indptr == expected.indptr);
        CHECK(std::vector<index_t>(out.begin(), out.begin() + out_indptr.back()) ==
              expected.positions);
      }
    }
  }

  TEST_CASE("gates: the host tag entry points on empty batches and bad extents") {
    std::vector<index_t> one(1, -1);
    argmax_gate(host, host_span<const index_t>{}, host_span<const float>{},
                host_span<std::uint8_t>{}, make_host_span(one), host_span<index_t>{});
    CHECK(one[0] == 0);
    const std::vector<index_t> indptr{0, 2, 2, 3};
    const std::vector<float> logits{1, 0, 0, 1, 2, 2};
    std::vector<std::uint8_t> mask(3);
    std::vector<index_t> out_indptr(4), out(3);
    argmax_gate(host, make_host_span(indptr), make_host_span(logits), make_host_span(mask),
                make_host_span(out_indptr), make_host_span(out));
    CHECK(mask == std::vector<std::uint8_t>{1, 0, 0});  // a tie drops
    CHECK(out_indptr == std::vector<index_t>{0, 1, 1, 1});
    CHECK(out[0] == 0);

    CHECK(test::error_of([&] {
            argmax_gate(host, make_host_span(indptr), make_host_span(logits), make_host_span(mask),
                        make_host_span(out_indptr), host_span<index_t>(out.data(), 2));
          }).find("out_positions must hold one entry per token (3), got 2") != std::string::npos);
    CHECK(test::error_of([&] {
            argmax_gate(host, make_host_span(indptr), make_host_span(logits),
                        host_span<std::uint8_t>(mask.data(), 2), make_host_span(out_indptr),
                        make_host_span(out));
          }).find("mask must be empty or have one entry per token (3), got 2") !=
          std::string::npos);
    CHECK(test::error_of([&] {
            argmax_gate(host, make_host_span(indptr), make_host_span(logits), make_host_span(mask),
                        host_span<index_t>(out_indptr.data(), 3), make_host_span(out));
          }).find("out_indptr must have batch + 1 = 4 entries, got 3") != std::string::npos);
    CHECK(test::error_of([&] {
            argmax_gate(host, make_host_span(indptr), host_span<const float>(logits.data(), 5),
                        make_host_span(mask), make_host_span(out_indptr), make_host_span(out));
          }).find("logits must hold 2 values per token, got 5") != std::string::npos);
    CHECK(test::error_of([&] {
            argmax_gate(host, host_span<const index_t>{}, make_host_span(logits),
                        host_span<std::uint8_t>{}, make_host_span(one), make_host_span(out));
          }).find("an empty indptr describes an empty batch, but 3 tokens") != std::string::npos);
    const std::vector<index_t> bad{0, 2, 1, 3};
    CHECK_THROWS_AS(
        argmax_gate(host, make_host_span(bad), make_host_span(logits), make_host_span(mask),
                    make_host_span(out_indptr), make_host_span(out)),
        error);
    CHECK(test::error_of([&] {
            threshold_gate(host, {make_host_span(indptr), host_span<const float>(logits.data(), 3)},
                           std::numeric_limits<float>::quiet_NaN(), make_host_span(mask),
                           make_host_span(out_indptr), make_host_span(out));
          }).find("threshold must not be NaN") != std::string::npos);
    // nothing was written by the refused calls
    CHECK(out_indptr == std::vector<index_t>{0, 1, 1, 1});
  }

  TEST_CASE("tagged hooks: gate_new_tokens(host) equals the host hook, logits and decisions") {
    const predictor_config c = small_config();
    const output_predictor predictor(c, random_output_predictor_weights(c, 72));
    test::rng g(73);
    for (const std::size_t batch : {1u, 3u, 8u}) {
      CAPTURE(batch);
      const auto indptr = test::indptr_of(test::random_lengths(g, batch, 3));
      const auto tokens = static_cast<std::size_t>(indptr.back());
      const auto hidden = test::normal_values(g, tokens * static_cast<std::size_t>(c.hidden));
      const host_ragged_rows<const float> rows{make_host_span(indptr), make_host_span(hidden),
                                               c.hidden};
      std::vector<std::uint8_t> expected_keep(tokens);
      token_decisions seen;
      cpu::gate_new_tokens(predictor, rows, make_host_span(expected_keep), &seen);

      std::vector<float> logits(2 * tokens);
      std::vector<std::uint8_t> keep(tokens);
      std::vector<index_t> kept_indptr(batch + 1), kept(tokens);
      gate_new_tokens(host, predictor, rows,
                      gate_outputs<host_t>{make_host_span(logits), make_host_span(keep),
                                           make_host_span(kept_indptr), make_host_span(kept)});
      CHECK(logits == seen.logits);
      CHECK(keep == expected_keep);
      const auto expected = compact(indptr, expected_keep);
      CHECK(kept_indptr == expected.indptr);
      CHECK(std::vector<index_t>(kept.begin(), kept.begin() + kept_indptr.back()) ==
            expected.positions);
      // every decision is the argmax of its own logits
      for (std::size_t i = 0; i < tokens; ++i) {
        CHECK(keep[i] == (logits[2 * i] > logits[2 * i + 1] ? 1 : 0));
      }
    }
  }

  TEST_CASE(
      "tagged hooks: select_tokens(host) with the image predictor is the image hook's top-k") {
    const predictor_config c = small_config();
    const image_predictor predictor(c, random_image_predictor_weights(c, 74));
    test::rng g(75);
    // one image per sequence: a group is a sequence, so the hook's candidate-local positions are
    // the group-local ones of select_tokens
    const std::vector<index_t> image_tokens{7, 1, 12, 5};
    std::vector<segment> segs;
    std::vector<index_t> prompt_indptr{0}, image_indptr{0}, image_begin;
    index_t row = 0;
    for (std::size_t b = 0; b < image_tokens.size(); ++b) {
      const index_t n = image_tokens[b];
      segs.push_back({segment_kind::system, 0, 2, 0});
      segs.push_back({segment_kind::image, 2, n, 0});
      segs.push_back({segment_kind::instruction, 2 + n, 3, 0});
      image_begin.push_back(row + 2);
      row += n + 5;
      prompt_indptr.push_back(3 * static_cast<index_t>(b + 1));
      image_indptr.push_back(image_indptr.back() + n);
    }
    const auto hidden = test::normal_values(g, static_cast<std::size_t>(row) * c.hidden);
    const segment_table<host_space> table{make_host_span(prompt_indptr), make_host_span(segs)};
    for (const double ratio : {0.0, 0.2, 0.5, 1.0}) {
      CAPTURE(ratio);
      token_decisions seen;
      const auto expected =
          cpu::select_images(predictor, make_host_span(hidden), table, ratio, &seen);
      // the image rows, packed by sequence, as an engine would hand them over
      std::vector<float> x;
      for (std::size_t b = 0; b < image_tokens.size(); ++b) {
        const auto first = static_cast<std::ptrdiff_t>(image_begin[b]) * c.hidden;
        x.insert(x.end(), hidden.begin() + first,
                 hidden.begin() + first + static_cast<std::ptrdiff_t>(image_tokens[b]) * c.hidden);
      }
      const auto n = static_cast<std::size_t>(image_indptr.back());
      std::vector<float> scores(n);
      std::vector<index_t> kept_indptr(image_tokens.size() + 1), kept(n);
      const index_t count = select_tokens(
          host, predictor, {make_host_span(image_indptr), make_host_span(x), c.hidden},
          budgeted_topk{keep_ratio(ratio), {}},
          selection_outputs<host_t>{make_host_span(scores), make_host_span(kept_indptr),
                                    make_host_span(kept)});
      CHECK(count == kept_indptr.back());
      CHECK(scores == seen.scores);
      CHECK(kept_indptr == expected.indptr);
      CHECK(std::vector<index_t>(kept.begin(), kept.begin() + count) == expected.positions);
    }
  }

  TEST_CASE("tagged hooks: select_tokens with a predictor's logits ranks by their margins") {
    const predictor_config c = small_config();
    const image_predictor predictor(c, random_image_predictor_weights(c, 77));
    test::rng g(78);
    const std::vector<index_t> indptr{0, 9, 9, 14};
    const auto x = test::normal_values(g, 14 * static_cast<std::size_t>(c.hidden));
    const host_ragged_rows<const float> rows{make_host_span(indptr), make_host_span(x), c.hidden};
    std::vector<float> scores(14), logits(28), plain(14);
    std::vector<index_t> kept_indptr(4), kept(14), plain_indptr(4), plain_kept(14);
    const budgeted_topk top{keep_ratio(0.4), {}};
    const index_t n =
        select_tokens(host, predictor, rows, top,
                      selection_outputs<host_t>{make_host_span(scores), make_host_span(kept_indptr),
                                                make_host_span(kept), make_host_span(logits)});
    const index_t m =
        select_tokens(host, predictor, rows, top,
                      selection_outputs<host_t>{make_host_span(plain), make_host_span(plain_indptr),
                                                make_host_span(plain_kept)});
    std::vector<float> expected_logits(28), margins(14);
    predictor.logits(host, rows, make_host_span(expected_logits));
    keep_margins(host, make_host_span(std::as_const(expected_logits)), make_host_span(margins));
    CHECK(logits == expected_logits);
    CHECK(scores == margins);
    CHECK(plain == margins);  // score() is the margin: the same ranking either way
    CHECK(n == m);
    CHECK(kept_indptr == plain_indptr);
    CHECK(kept == plain_kept);
    CHECK(test::error_of([&] {
            keep_margins(host, make_host_span(std::as_const(expected_logits)),
                         host_span<float>(margins.data(), 13));
          }).find("logits must hold 2 values per score (26), got 28") != std::string::npos);
    // logits of the wrong size, or asked of a plain scorer: refused before it runs
    CHECK(test::error_of([&] {
            select_tokens(host, predictor, rows, top,
                          selection_outputs<host_t>{
                              make_host_span(scores), make_host_span(kept_indptr),
                              make_host_span(kept), host_span<float>(logits.data(), 27)});
          }).find("logits must be empty or [rows = 14, 2], got 27 values") != std::string::npos);
    const std::vector<float> narrow(14 * 2, 1.0f);
    CHECK(test::error_of([&] {
            select_tokens(
                host, edge_scorer{}, {make_host_span(indptr), make_host_span(narrow), 2}, top,
                selection_outputs<host_t>{make_host_span(scores), make_host_span(kept_indptr),
                                          make_host_span(kept), make_host_span(logits)});
          }).find("not a two_way_predictor") != std::string::npos);
  }

  TEST_CASE("tagged hooks: select_tokens takes a scorer and a selector written here") {
    const std::vector<index_t> indptr{0, 4, 4, 7};
    // rows of width 2: score = round(first - last)
    const std::vector<float> x{3, 1, 0, 0, -2, 1, 5, 0,  // 2, 0, -3, 5
                               0, 4, 1, 1, 9,  2};       // -4, 0, 7
    std::vector<float> scores(7);
    std::vector<index_t> kept_indptr(4), kept(7);
    const index_t count = select_tokens(
        host, edge_scorer{}, {make_host_span(indptr), make_host_span(x), 2}, first_non_negative{2},
        selection_outputs<host_t>{make_host_span(scores), make_host_span(kept_indptr),
                                  make_host_span(kept)});
    CHECK(scores == std::vector<float>{2, 0, -3, 5, -4, 0, 7});
    CHECK(count == 4);
    CHECK(kept_indptr == std::vector<index_t>{0, 2, 2, 4});
    CHECK(std::vector<index_t>(kept.begin(), kept.begin() + 4) == std::vector<index_t>{0, 1, 1, 2});
  }

  TEST_CASE("tagged hooks: bad extents are refused before the scorer runs") {
    const predictor_config c = small_config();
    const output_predictor predictor(c, random_output_predictor_weights(c, 76));
    const std::vector<index_t> indptr{0, 1, 3};
    const std::vector<float> hidden(3 * static_cast<std::size_t>(c.hidden), 0.5f);
    const host_ragged_rows<const float> rows{make_host_span(indptr), make_host_span(hidden),
                                             c.hidden};
    std::vector<float> logits(6, -9.0f);
    std::vector<std::uint8_t> keep(3, 7);
    std::vector<index_t> kept_indptr(3, -9), kept(3, -9);
    const auto gate = [&](gate_outputs<host_t> out, host_ragged_rows<const float> r) {
      return test::error_of([&] { gate_new_tokens(host, predictor, r, out); });
    };
    const gate_outputs<host_t> good{make_host_span(logits), make_host_span(keep),
                                    make_host_span(kept_indptr), make_host_span(kept)};
    auto bad = good;
    bad.logits = host_span<float>(logits.data(), 5);
    CHECK(gate(bad, rows).find("logits must be [tokens = 3, 2], got 5 values") !=
          std::string::npos);
    bad = good;
    bad.keep = host_span<std::uint8_t>(keep.data(), 2);
    CHECK(gate(bad, rows).find("keep must be empty or have one entry per token (3), got 2") !=
          std::string::npos);
    bad = good;
    bad.kept_indptr = host_span<index_t>(kept_indptr.data(), 2);
    CHECK(gate(bad, rows).find("kept_indptr must have batch + 1 = 3 entries, got 2") !=
          std::string::npos);
    bad = good;
    bad.kept_positions = host_span<index_t>(kept.data(), 1);
    CHECK(gate(bad, rows).find("kept_positions must hold one entry per row (3), got 1") !=
          std::string::npos);
    const std::vector<float> narrow(3 * static_cast<std::size_t>(c.hidden - 1), 0.5f);
    CHECK(gate(good, {make_host_span(indptr), make_host_span(narrow), c.hidden - 1})
              .find("the output predictor reads width 24, the rows have width 23") !=
          std::string::npos);
    CHECK(gate(good, {make_host_span(indptr), host_span<const float>(hidden.data(), 30), c.hidden})
              .find("not a whole number of rows of width 24") != std::string::npos);
    const std::vector<index_t> wrong{0, 1, 2};
    CHECK_THROWS_AS(
        gate_new_tokens(host, predictor, {make_host_span(wrong), make_host_span(hidden), c.hidden},
                        good),
        error);
    // nothing was written
    CHECK(logits == std::vector<float>(6, -9.0f));
    CHECK(keep == std::vector<std::uint8_t>(3, 7));
    CHECK(kept_indptr == std::vector<index_t>(3, -9));

    std::vector<float> scores(2);
    CHECK(test::error_of([&] {
            select_tokens(
                host, predictor, rows, budgeted_topk{},
                selection_outputs<host_t>{make_host_span(scores), make_host_span(kept_indptr),
                                          make_host_span(kept)});
          }).find("scores must have one entry per row (3), got 2") != std::string::npos);
  }
}

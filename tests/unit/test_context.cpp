// SPDX-License-Identifier: Apache-2.0
#include <dynllava/context/build_context.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/topk.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <limits>
#include <vector>

using namespace dynllava;

namespace {

/// Builds a contiguous segment list from (kind, length, turn) triples.
struct table_builder {
  std::vector<index_t> indptr{0};
  std::vector<segment> segs;

  table_builder& sequence(std::initializer_list<segment> parts) {
    index_t begin = 0;
    for (segment s : parts) {
      s.begin = begin;
      begin += s.length;
      segs.push_back(s);
    }
    indptr.push_back(static_cast<index_t>(segs.size()));
    return *this;
  }
  segment_table<host_space> view() const { return {make_host_span(indptr), make_host_span(segs)}; }
};

segment seg(segment_kind k, index_t len, index_t turn = 0) { return {k, 0, len, turn}; }

using K = segment_kind;

/// Brute-force reference: a keep mask per row, built from the rules' text.
host_sparse_context reference_context(const table_builder& t,
                                      const std::vector<std::pair<K, host_selection>>& pruned,
                                      bool pin_last_output) {
  host_sparse_context out;
  out.indptr.push_back(0);
  index_t base = 0;
  const auto table = t.view();
  for (std::size_t b = 0; b < table.batch(); ++b) {
    const index_t len = table.length(b);
    std::vector<int> kind_of(static_cast<std::size_t>(len));
    for (index_t s = t.indptr[b]; s < t.indptr[b + 1]; ++s) {
      const auto& sg = t.segs[static_cast<std::size_t>(s)];
      for (index_t r = sg.begin; r < sg.end(); ++r)
        kind_of[static_cast<std::size_t>(r)] = static_cast<int>(sg.kind);
    }
    std::vector<bool> keep(static_cast<std::size_t>(len), true);
    for (const auto& [kind, sel] : pruned) {
      std::vector<index_t> cands;
      for (index_t r = 0; r < len; ++r) {
        const bool pinned = pin_last_output && kind == K::output && r == len - 1;
        if (kind_of[static_cast<std::size_t>(r)] == static_cast<int>(kind) && !pinned)
          cands.push_back(r);
      }
      for (index_t r : cands) keep[static_cast<std::size_t>(r)] = false;
      for (index_t i = sel.indptr[b]; i < sel.indptr[b + 1]; ++i) {
        keep[static_cast<std::size_t>(
            cands[static_cast<std::size_t>(sel.positions[static_cast<std::size_t>(i)])])] = true;
      }
    }
    for (index_t r = 0; r < len; ++r) {
      if (!keep[static_cast<std::size_t>(r)]) continue;
      out.rows.push_back(base + r);
      out.positions.push_back(r);
    }
    out.indptr.push_back(static_cast<index_t>(out.rows.size()));
    base += len;
  }
  return out;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("segments: prunable kinds and validation") {
    static_assert(is_prunable(K::image) && is_prunable(K::output));
    static_assert(!is_prunable(K::system) && !is_prunable(K::instruction));
    table_builder t;
    t.sequence({seg(K::system, 3), seg(K::image, 4), seg(K::instruction, 2)})
        .sequence({})
        .sequence({seg(K::system, 1), seg(K::image, 0), seg(K::instruction, 1), seg(K::output, 2),
                   seg(K::instruction, 1, 1), seg(K::output, 3, 1)});
    CHECK(validate(t.view(), "t") == 9 + 0 + 8);
    CHECK(t.view().length(1) == 0);

    auto gap = t;
    gap.segs[1].begin = 4;
    CHECK_THROWS_WITH_AS(validate(gap.view(), "segments"),
                         doctest::Contains("sequence 0 segment 1 must begin at row 3"), error);
    auto neg = t;
    neg.segs[0].length = -1;
    CHECK_THROWS_WITH_AS(validate(neg.view(), "segments"), doctest::Contains("negative length"),
                         error);
    auto turns = t;
    turns.segs[3].turn = 2;  // sequence 2 segment 0 in turn 2, later segments in turn 0
    CHECK_THROWS_WITH_AS(validate(turns.view(), "segments"),
                         doctest::Contains("turns must not decrease"), error);
    auto neg_turn = t;
    neg_turn.segs[0].turn = -5;
    CHECK_THROWS_WITH_AS(validate(neg_turn.view(), "segments"),
                         doctest::Contains("sequence 0 segment 0 has a negative turn -5"), error);
    auto kind = t;
    kind.segs[0].kind = static_cast<K>(9);
    CHECK_THROWS_WITH_AS(validate(kind.view(), "segments"), doctest::Contains("unknown kind 9"),
                         error);
  }

  TEST_CASE("candidates: image and output rows, last output pinned") {
    table_builder t;
    t.sequence({seg(K::system, 2), seg(K::image, 3), seg(K::instruction, 1), seg(K::output, 2),
                seg(K::instruction, 1, 1), seg(K::output, 2, 1)})
        .sequence({seg(K::system, 1), seg(K::image, 2), seg(K::instruction, 1)});
    auto img = cpu::candidate_rows(t.view(), K::image);
    CHECK(img.indptr == std::vector<index_t>{0, 3, 5});
    CHECK(img.positions == std::vector<index_t>{2, 3, 4, 1, 2});
    auto out = cpu::candidate_rows(t.view(), K::output);
    CHECK(out.positions == std::vector<index_t>{6, 7, 9, 10});
    auto pinned = cpu::candidate_rows(t.view(), K::output, {.pin_last_output = true});
    CHECK(pinned.indptr == std::vector<index_t>{0, 3, 3});
    CHECK(pinned.positions == std::vector<index_t>{6, 7, 9});
    CHECK_THROWS_WITH_AS(cpu::candidate_rows(t.view(), K::instruction),
                         doctest::Contains("kind must be image or output, got instruction"), error);
  }

  TEST_CASE("build_sparse_context: prefill keeps text, prunes image by top-k, positions kept") {
    table_builder t;
    t.sequence({seg(K::system, 2), seg(K::image, 5), seg(K::instruction, 2)})
        .sequence({seg(K::system, 2), seg(K::image, 4), seg(K::instruction, 1)});
    const auto cands = cpu::candidate_rows(t.view(), K::image);
    const std::vector<float> scores{0.1f, 0.9f, 0.2f, 0.8f, 0.0f, /**/ 5, 1, 4, 3};
    const auto kept = cpu::topk({make_host_span(cands.indptr), make_host_span(scores)},
                                topk_budget<host_space>::keep_ratio(0.4));
    CHECK(kept.positions == std::vector<index_t>{1, 3, 0});
    const std::vector<kind_selection> pruned{{K::image, kept.view()}};
    const auto ctx = cpu::build_sparse_context(t.view(), make_host_span(pruned));
    CHECK(ctx.indptr == std::vector<index_t>{0, 6, 10});
    // seq 0: system 0,1; image rows 2..6 keep local 1,3 -> rows 3,5; instruction 7,8
    // seq 1 (base 9): system 0,1; image rows 2..5 keep local 0 -> row 2; instruction 6
    CHECK(ctx.rows == std::vector<index_t>{0, 1, 3, 5, 7, 8, 9, 10, 11, 15});
    CHECK(ctx.positions == std::vector<index_t>{0, 1, 3, 5, 7, 8, 0, 1, 2, 6});

    // Position offsets continue an earlier context.
    const std::vector<index_t> offsets{100, 7};
    const auto shifted = cpu::build_sparse_context(t.view(), make_host_span(pruned),
                                                   {.position_offsets = make_host_span(offsets)});
    CHECK(shifted.rows == ctx.rows);
    CHECK(shifted.positions == std::vector<index_t>{100, 101, 103, 105, 107, 108, 7, 8, 9, 13});
  }

  TEST_CASE("build_sparse_context: decode without KV cache, image top-k + output gate + pin") {
    table_builder t;
    t.sequence({seg(K::system, 1), seg(K::image, 4), seg(K::instruction, 1), seg(K::output, 4)});
    const context_options opts{.pin_last_output = true};
    const auto out_cands = cpu::candidate_rows(t.view(), K::output, opts);
    CHECK(out_cands.positions == std::vector<index_t>{6, 7, 8});  // row 9 is pinned
    const std::vector<float> logits{1, 0, /**/ 0, 1, /**/ 3, 2};
    std::vector<std::uint8_t> keep(3);
    cpu::argmax_gate({make_host_span(out_cands.indptr), make_host_span(logits)},
                     make_host_span(keep));
    host_selection out_kept;
    out_kept.indptr.resize(2);
    out_kept.positions.resize(3);
    out_kept.positions.resize(static_cast<std::size_t>(cpu::mask_to_positions(
        make_host_span(out_cands.indptr), make_host_span(std::as_const(keep)),
        make_host_span(out_kept.indptr), make_host_span(out_kept.positions))));
    host_selection img_kept{{0, 2}, {0, 3}};
    const std::vector<kind_selection> pruned{{K::image, img_kept.view()},
                                             {K::output, out_kept.view()}};
    const auto ctx = cpu::build_sparse_context(t.view(), make_host_span(pruned), opts);
    CHECK(ctx.rows == std::vector<index_t>{0, 1, 4, 5, 6, 8, 9});
  }

  TEST_CASE("build_sparse_context: keeping everything is the identity") {
    test::rng g(11);
    table_builder t;
    t.sequence({seg(K::system, 3), seg(K::image, 6), seg(K::instruction, 2), seg(K::output, 3)})
        .sequence({seg(K::system, 3), seg(K::image, 6), seg(K::instruction, 4)});
    const auto img = cpu::candidate_rows(t.view(), K::image);
    const auto out = cpu::candidate_rows(t.view(), K::output);
    const std::vector<kind_selection> pruned{{K::image, img.view()}, {K::output, out.view()}};
    // candidate_rows' positions are rows; a keep-all selection lists 0..n-1 instead.
    const auto all_img = host_selection::keep_all(img.indptr);
    const auto all_out = host_selection::keep_all(out.indptr);
    const std::vector<kind_selection> keep_all{{K::image, all_img.view()},
                                               {K::output, all_out.view()}};
    const auto ctx = cpu::build_sparse_context(t.view(), make_host_span(keep_all));
    const auto dense = cpu::build_sparse_context(t.view(), host_span<const kind_selection>{});
    std::vector<index_t> identity(14 + 13);
    for (std::size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<index_t>(i);
    CHECK(ctx.rows == identity);
    CHECK(dense.rows == identity);
    CHECK(dense.indptr == std::vector<index_t>{0, 14, 27});
  }

  TEST_CASE("build_sparse_context: random batches match a brute-force mask reference") {
    test::rng g(2026);
    for (int trial = 0; trial < 60; ++trial) {
      table_builder t;
      const std::size_t batch = 1 + g() % 6;
      for (std::size_t b = 0; b < batch; ++b) {
        std::uniform_int_distribution<index_t> len(0, 12);
        if (g() % 5 == 0) {
          t.sequence({});
          continue;
        }
        std::vector<segment> parts{seg(K::system, len(g)), seg(K::image, len(g)),
                                   seg(K::instruction, len(g))};
        const index_t turns = static_cast<index_t>(g() % 3);
        for (index_t turn = 0; turn < turns; ++turn) {
          parts.push_back(seg(K::output, len(g), turn));
          parts.push_back(seg(K::instruction, len(g), turn + 1));
        }
        if (g() % 2) parts.push_back(seg(K::output, len(g), turns));
        index_t begin = 0;
        for (auto& p : parts) {
          p.begin = begin;
          begin += p.length;
          t.segs.push_back(p);
        }
        t.indptr.push_back(static_cast<index_t>(t.segs.size()));
      }
      const bool pin = trial % 2 == 0;
      const context_options opts{.pin_last_output = pin};
      std::vector<std::pair<K, host_selection>> pruned_ref;
      std::vector<std::vector<float>> scores_store;
      for (K kind : {K::image, K::output}) {
        if (g() % 4 == 0) continue;  // this kind kept whole
        const auto cands = cpu::candidate_rows(t.view(), kind, opts);
        scores_store.push_back(
            test::random_scores(g, cands.positions.size(), test::score_mix::adversarial));
        pruned_ref.emplace_back(
            kind, cpu::topk({make_host_span(cands.indptr), make_host_span(scores_store.back())},
                            topk_budget<host_space>::keep_ratio(0.3 + 0.1 * (trial % 5))));
      }
      std::vector<kind_selection> pruned;
      for (const auto& [kind, sel] : pruned_ref) pruned.push_back({kind, sel.view()});
      const auto ctx = cpu::build_sparse_context(t.view(), make_host_span(pruned), opts);
      const auto ref = reference_context(t, pruned_ref, pin);
      CAPTURE(trial);
      CHECK(ctx.indptr == ref.indptr);
      CHECK(ctx.rows == ref.rows);
      CHECK(ctx.positions == ref.positions);
      // Never-prunable rows are always there.
      index_t base = 0;
      for (std::size_t b = 0; b < batch; ++b) {
        for (index_t s = t.indptr[b]; s < t.indptr[b + 1]; ++s) {
          const auto& sg = t.segs[static_cast<std::size_t>(s)];
          if (is_prunable(sg.kind)) continue;
          for (index_t r = sg.begin; r < sg.end(); ++r) {
            CHECK(std::binary_search(ctx.rows.begin(), ctx.rows.end(), base + r));
          }
        }
        base += t.view().length(b);
      }
    }
  }

  TEST_CASE("build_sparse_context: bad selections are clear errors") {
    table_builder t;
    t.sequence({seg(K::system, 1), seg(K::image, 3)});
    const auto run = [&](std::vector<index_t> indptr, std::vector<index_t> pos, K kind = K::image) {
      host_selection s{std::move(indptr), std::move(pos)};
      const std::vector<kind_selection> pruned{{kind, s.view()}};
      return cpu::build_sparse_context(t.view(), make_host_span(pruned));
    };
    CHECK_NOTHROW(run({0, 2}, {0, 2}));
    CHECK_THROWS_WITH_AS(run({0, 2}, {2, 0}), doctest::Contains("strictly ascending"), error);
    CHECK_THROWS_WITH_AS(run({0, 2}, {1, 1}), doctest::Contains("strictly ascending"), error);
    CHECK_THROWS_WITH_AS(
        run({0, 1}, {3}),
        doctest::Contains("kept position 3 of sequence 0 is not a valid candidate"), error);
    CHECK_THROWS_WITH_AS(run({0, 1}, {-1}), doctest::Contains("not a valid candidate"), error);
    CHECK_THROWS_WITH_AS(run({0, 0, 0}, {}), doctest::Contains("covers 2 sequences, expected 1"),
                         error);
    CHECK_THROWS_WITH_AS(run({0, 1}, {0}, K::system),
                         doctest::Contains("must be image or output, got system"), error);
    host_selection s{{0, 1}, {0}};
    const std::vector<kind_selection> twice{{K::image, s.view()}, {K::image, s.view()}};
    CHECK_THROWS_WITH_AS(cpu::build_sparse_context(t.view(), make_host_span(twice)),
                         doctest::Contains("listed twice"), error);
    const std::vector<index_t> offsets{1, 2};
    CHECK_THROWS_WITH_AS(
        cpu::build_sparse_context(t.view(), host_span<const kind_selection>{},
                                  {.position_offsets = make_host_span(offsets)}),
        doctest::Contains("position_offsets must have one entry per sequence (1), got 2"), error);
    for (index_t bad : {-1, std::numeric_limits<index_t>::max() - 2}) {
      const std::vector<index_t> one{bad};
      CHECK_THROWS_WITH_AS(cpu::build_sparse_context(t.view(), host_span<const kind_selection>{},
                                                     {.position_offsets = make_host_span(one)}),
                           doctest::Contains("position_offsets[0] = "), error);
    }
    std::vector<index_t> oi(2), rows(1), pos(1);
    CHECK_THROWS_WITH_AS(
        cpu::build_sparse_context(t.view(), host_span<const kind_selection>{}, make_host_span(oi),
                                  make_host_span(rows), make_host_span(pos)),
        doctest::Contains("too few"), error);
  }
}

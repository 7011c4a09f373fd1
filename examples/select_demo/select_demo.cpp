// SPDX-License-Identifier: Apache-2.0
/// @file select_demo.cpp
/// @brief The selection pipeline on a synthetic LLaVA-shaped batch, end to end on the CPU:
/// segments -> candidates -> scores -> top-k (prefill, image) and argmax gate (decode, output)
/// -> sparse context -> gathered hidden states. Prints what each sequence kept.
///
/// The scores come from a seeded random linear probe over random hidden states, standing in for
/// the learned predictors (which are a later component); everything else is the library's.
///
/// Usage: dynllava_select_demo [--seed N] [--keep-ratio R] [--hidden H]
#include <dynllava/dynllava.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdlib>
#include <random>
#include <string_view>
#include <vector>

using namespace dynllava;

namespace {

struct args {
  unsigned long seed = 1;
  double keep_ratio = 0.2;
  index_t hidden = 64;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    DYNLLAVA_EXPECTS(i + 1 < argc, "select_demo: {} needs a value", flag);
    const char* value = argv[++i];
    char* end = nullptr;
    if (flag == "--seed") {
      a.seed = std::strtoul(value, &end, 10);
    } else if (flag == "--keep-ratio") {
      a.keep_ratio = std::strtod(value, &end);
    } else if (flag == "--hidden") {
      a.hidden = static_cast<index_t>(std::strtol(value, &end, 10));
    } else {
      DYNLLAVA_FAIL("select_demo: unknown option {} (expected --seed, --keep-ratio, --hidden)", flag);
    }
    DYNLLAVA_EXPECTS(end != nullptr && *end == '\0', "select_demo: {} expects a number, got '{}'",
                     flag, value);
  }
  DYNLLAVA_EXPECTS(a.hidden > 0, "select_demo: --hidden must be > 0, got {}", a.hidden);
  return a;
}

/// Scores `rows` of `hidden` with a linear probe: one score per row (prefill ranking) or two
/// logits per row (decode gate), like the predictors' outputs.
std::vector<float> probe(const std::vector<float>& hidden, index_t width,
                         const std::vector<index_t>& global_rows, const std::vector<float>& w,
                         int channels) {
  std::vector<float> out;
  for (index_t r : global_rows) {
    float acc = 0.0f;
    for (index_t c = 0; c < width; ++c) {
      acc += hidden[static_cast<std::size_t>(r * width + c)] * w[static_cast<std::size_t>(c)];
    }
    if (channels == 1) {
      out.push_back(acc);
    } else {
      out.push_back(acc);   // logit 0: keep
      out.push_back(0.0f);  // logit 1: drop
    }
  }
  return out;
}

/// Local candidate rows -> global rows of the packed batch.
std::vector<index_t> to_global(const host_selection& cands, const segment_table<host_space>& t) {
  std::vector<index_t> out;
  index_t base = 0;
  for (std::size_t b = 0; b < cands.batch(); ++b) {
    for (index_t i = cands.indptr[b]; i < cands.indptr[b + 1]; ++i) {
      out.push_back(base + cands.positions[static_cast<std::size_t>(i)]);
    }
    base += t.length(b);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  const args a = parse(argc, argv);
  std::mt19937_64 g(a.seed);

  // Three conversations: [system | 576 image | question | answer so far], one of them two turns.
  const segment_kind S = segment_kind::system, I = segment_kind::image,
                     Q = segment_kind::instruction, O = segment_kind::output;
  const std::vector<std::vector<segment>> convs = {
      {{S, 0, 35, 0}, {I, 0, 576, 0}, {Q, 0, 12, 0}, {O, 0, 40, 0}},
      {{S, 0, 35, 0}, {I, 0, 576, 0}, {Q, 0, 30, 0}, {O, 0, 8, 0}},
      {{S, 0, 35, 0}, {I, 0, 576, 0}, {Q, 0, 9, 0}, {O, 0, 64, 0}, {Q, 0, 14, 1}, {O, 0, 20, 1}},
  };
  std::vector<index_t> seg_indptr{0};
  std::vector<segment> segs;
  for (const auto& conv : convs) {
    index_t begin = 0;
    for (segment s : conv) {
      s.begin = begin;
      begin += s.length;
      segs.push_back(s);
    }
    seg_indptr.push_back(static_cast<index_t>(segs.size()));
  }
  const segment_table<host_space> table{make_host_span(seg_indptr), make_host_span(segs)};
  const index_t total_rows = validate(table, "select_demo: segments");

  // Hidden states entering the sparse layer, and a probe standing in for the predictors.
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> hidden(static_cast<std::size_t>(total_rows * a.hidden));
  for (auto& h : hidden) h = normal(g);
  std::vector<float> w(static_cast<std::size_t>(a.hidden));
  for (auto& x : w) x = normal(g);

  // Decode without KV cache: image tokens by budgeted top-k, earlier outputs by the argmax gate,
  // the newest token pinned.
  const context_options opts{.pin_last_output = true};
  const auto img = cpu::candidate_rows(table, I, opts);
  const auto img_scores = probe(hidden, a.hidden, to_global(img, table), w, 1);
  const auto img_kept = cpu::topk({make_host_span(img.indptr), make_host_span(img_scores)},
                                  topk_budget<host_space>::keep_ratio(a.keep_ratio));

  const auto out = cpu::candidate_rows(table, O, opts);
  const auto out_logits = probe(hidden, a.hidden, to_global(out, table), w, 2);
  host_selection out_kept;
  out_kept.indptr.resize(out.indptr.size());
  out_kept.positions.resize(out.positions.size());
  out_kept.positions.resize(static_cast<std::size_t>(
      logit_argmax{}.select(host, {make_host_span(out.indptr), make_host_span(out_logits)},
                            make_host_span(out_kept.indptr), make_host_span(out_kept.positions))));

  const std::vector<kind_selection> pruned{{I, img_kept.view()}, {O, out_kept.view()}};
  const auto ctx = cpu::build_sparse_context(table, make_host_span(pruned), opts);

  std::vector<float> packed(ctx.rows.size() * static_cast<std::size_t>(a.hidden));
  gather_rows(host, make_host_span(std::as_const(hidden)), a.hidden, make_host_span(ctx.rows),
              make_host_span(packed));

  fmt::print("dynllava selection demo: {} sequences, hidden {}, image keep ratio {}, seed {}\n",
             table.batch(), a.hidden, a.keep_ratio, a.seed);
  for (std::size_t b = 0; b < table.batch(); ++b) {
    const auto first = ctx.positions.begin() + ctx.indptr[b];
    const auto last = ctx.positions.begin() + ctx.indptr[b + 1];
    fmt::print(
        "sequence {}: {} rows -> {} kept | image {}/{} kept | output {}/{} kept (+1 pinned) | "
        "first positions {}\n",
        b, table.length(b), ctx.indptr[b + 1] - ctx.indptr[b],
        img_kept.indptr[b + 1] - img_kept.indptr[b], img.indptr[b + 1] - img.indptr[b],
        out_kept.indptr[b + 1] - out_kept.indptr[b], out.indptr[b + 1] - out.indptr[b],
        std::vector<index_t>(first, first + std::min<std::ptrdiff_t>(40, last - first)));
  }
  fmt::print("context rows: {} of {} ({:.1f}%), gathered {} floats\n", ctx.rows.size(), total_rows,
             100.0 * static_cast<double>(ctx.rows.size()) / total_rows, packed.size());
  return 0;
} catch (const dynllava::error& e) {
  fmt::print(stderr, "{}\n", e.what());
  return 2;
}

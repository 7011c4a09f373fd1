// SPDX-License-Identifier: Apache-2.0
/// @file select_demo.cpp
/// @brief The selection pipeline on a synthetic LLaVA-shaped batch, end to end on the CPU:
/// segments -> candidates -> scores -> top-k (prefill, image) and argmax gate (decode, output)
/// -> sparse context -> gathered hidden states. Prints what each sequence kept.
///
/// The scores come from a seeded random linear probe over random hidden states, standing in for
/// the learned predictors (which are a later component); everything else is the library's.
///
/// Usage: dynllava_select_demo [--seed N] [--keep-ratio R] [--hidden H] (see --help)
#include <dynllava/dynllava.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

using namespace dynllava;

namespace {

struct args {
  unsigned long long seed = 1;
  double keep_ratio = 0.2;
  index_t hidden = 64;
};

constexpr const char* usage =
    "usage: dynllava_select_demo [--seed N] [--keep-ratio R] [--hidden H]\n"
    "  --seed N        random seed, 0 .. 2^64-1 (default 1)\n"
    "  --keep-ratio R  image tokens kept per sequence, floor(576 * R), R in [0, 1] (default 0.2)\n"
    "  --hidden H      hidden size of the synthetic states, 1 .. 65536 (default 64)\n";

/// Parses a whole decimal number in [lo, hi]. @throws dynllava::error naming the flag.
template <class T>
T parse_number(std::string_view flag, const char* text, T lo, T hi) {
  std::size_t used = 0;
  long double v = 0;
  try {
    v = std::stold(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  DYNLLAVA_EXPECTS(used > 0 && text[used] == '\0', "select_demo: {} expects a number, got '{}'",
                   flag, text);
  DYNLLAVA_EXPECTS(v >= static_cast<long double>(lo) && v <= static_cast<long double>(hi),
                   "select_demo: {} must be in [{}, {}], got {}", flag, lo, hi, text);
  if constexpr (std::is_integral_v<T>) {
    DYNLLAVA_EXPECTS(v == static_cast<long double>(static_cast<T>(v)),
                     "select_demo: {} must be a whole number, got {}", flag, text);
  }
  return static_cast<T>(v);
}

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    DYNLLAVA_EXPECTS(flag == "--seed" || flag == "--keep-ratio" || flag == "--hidden",
                     "select_demo: unknown option '{}'\n{}", flag, usage);
    DYNLLAVA_EXPECTS(i + 1 < argc, "select_demo: {} needs a value", flag);
    const char* value = argv[++i];
    if (flag == "--seed") {
      DYNLLAVA_EXPECTS(value[0] != '-', "select_demo: --seed must be >= 0, got {}", value);
      char* end = nullptr;
      errno = 0;
      a.seed = std::strtoull(value, &end, 10);
      DYNLLAVA_EXPECTS(errno == 0 && end != value && *end == '\0',
                       "select_demo: --seed expects a whole number in [0, 2^64), got '{}'", value);
    } else if (flag == "--keep-ratio") {
      a.keep_ratio = parse_number<double>(flag, value, 0.0, 1.0);
    } else {
      a.hidden = parse_number<index_t>(flag, value, 1, 65536);
    }
  }
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
  const auto img_scores = probe(hidden, a.hidden, cpu::global_rows(img, table), w, 1);
  const auto img_kept = cpu::topk({make_host_span(img.indptr), make_host_span(img_scores)},
                                  topk_budget<host_space>::keep_ratio(a.keep_ratio));

  const auto out = cpu::candidate_rows(table, O, opts);
  const auto out_logits = probe(hidden, a.hidden, cpu::global_rows(out, table), w, 2);
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
    // Original positions of the first kept image tokens (image rows start at 35).
    std::vector<index_t> image_positions;
    for (index_t i = img_kept.indptr[b]; i < img_kept.indptr[b + 1] && image_positions.size() < 10;
         ++i) {
      image_positions.push_back(img.positions[static_cast<std::size_t>(
          img.indptr[b] + img_kept.positions[static_cast<std::size_t>(i)])]);
    }
    fmt::print(
        "sequence {}: {} rows -> {} kept | image {}/{} kept, first at positions {} | output {}/{} "
        "kept (+1 pinned) | text always kept\n",
        b, table.length(b), ctx.indptr[b + 1] - ctx.indptr[b],
        img_kept.indptr[b + 1] - img_kept.indptr[b], img.indptr[b + 1] - img.indptr[b],
        image_positions, out_kept.indptr[b + 1] - out_kept.indptr[b],
        out.indptr[b + 1] - out.indptr[b]);
  }
  fmt::print("context rows: {} of {} ({:.1f}%), gathered {} floats\n", ctx.rows.size(), total_rows,
             100.0 * static_cast<double>(ctx.rows.size()) / total_rows, packed.size());
  return 0;
} catch (const dynllava::error& e) {
  fmt::print(stderr, "{}\n", e.what());
  return 2;
}

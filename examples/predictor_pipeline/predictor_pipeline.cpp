// SPDX-License-Identifier: Apache-2.0
/// @file predictor_pipeline.cpp
/// @brief Scorer -> selector -> sparse context, as Dynamic-LLaVA composes them at the sparse
/// layer, with the learned predictors loaded from a checkpoint by their official names.
///
///  prefill: image tokens --image predictor--> logit0 - logit1 --top-k floor(n * 0.2)--> kept
///  decode:  output tokens --output predictor--> logits --argmax gate (logit0 > logit1)--> kept
///  both:    build_sparse_context keeps every system / instruction row, the kept candidates and
///           the newest token, with their original positions; gather_rows builds the rows that
///           layers >= 2 run on.
///
/// Usage: dynllava_predictor_pipeline [CHECKPOINT_DIR HIDDEN]
///   Without arguments it runs on the small test checkpoint (H = 48, reduced predictor sizes).
///   With a real Dynamic-LLaVA checkpoint: `dynllava_predictor_pipeline /path/to/ckpt 5120`
///   (hidden states are random here: the LLM that produces them is a later component).
#include <dynllava/io.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace predictor_pipeline {

using namespace dynllava;

struct result {
  host_selection image_candidates, image_kept;  // local rows / positions among candidates
  host_selection output_candidates, output_kept;
  host_sparse_context prefill, decode;  // contexts of the two stages
  std::vector<float> image_scores, output_logits;
  segment_table<host_space> table;
  std::vector<index_t> seg_indptr;
  std::vector<segment> segs;
};

inline result run(const image_predictor& image, const output_predictor& output, unsigned seed) {
  result r;
  const index_t H = image.config().hidden;
  using K = segment_kind;
  // [system 5 | image 576 | question 7 | answer 30] and [system 5 | image 100 | question 3 | answer
  // 12]
  for (const auto& conv : {std::vector<segment>{{K::system, 0, 5, 0},
                                                {K::image, 0, 576, 0},
                                                {K::instruction, 0, 7, 0},
                                                {K::output, 0, 30, 0}},
                           std::vector<segment>{{K::system, 0, 5, 0},
                                                {K::image, 0, 100, 0},
                                                {K::instruction, 0, 3, 0},
                                                {K::output, 0, 12, 0}}}) {
    index_t begin = 0;
    for (segment s : conv) {
      s.begin = begin;
      begin += s.length;
      r.segs.push_back(s);
    }
    r.seg_indptr.push_back(static_cast<index_t>(r.segs.size()));
  }
  r.seg_indptr.insert(r.seg_indptr.begin(), 0);
  r.table = {make_host_span(std::as_const(r.seg_indptr)), make_host_span(std::as_const(r.segs))};
  const index_t rows = validate(r.table, "predictor_pipeline");

  // Hidden states entering the sparse layer (random stand-ins for the LLM's layer-1 output).
  std::mt19937 g(seed);
  std::normal_distribution<float> normal;
  std::vector<float> hidden(static_cast<std::size_t>(rows) * static_cast<std::size_t>(H));
  for (auto& v : hidden) v = normal(g);

  // --- prefill: image predictor + budgeted top-k ----------------------------------------------
  // example-begin prefill-hook
  r.image_candidates = cpu::candidate_rows(r.table, K::image);
  const auto img_rows = cpu::global_rows(r.image_candidates, r.table);
  std::vector<float> img_hidden(img_rows.size() * static_cast<std::size_t>(H));
  gather_rows(host, make_host_span(std::as_const(hidden)), H, make_host_span(img_rows),
              make_host_span(img_hidden));
  r.image_scores.resize(img_rows.size());
  image.score(
      host,
      {make_host_span(r.image_candidates.indptr), make_host_span(std::as_const(img_hidden)), H},
      make_host_span(r.image_scores));
  r.image_kept = cpu::topk(
      {make_host_span(r.image_candidates.indptr), make_host_span(r.image_scores)}, keep_ratio(0.2));
  const std::vector<kind_selection> prefill_pruned{{K::image, r.image_kept.view()}};
  r.prefill = cpu::build_sparse_context(r.table, make_host_span(prefill_pruned));
  // example-end

  // --- decode (without KV cache): output predictor + argmax gate, newest token pinned ----------
  const context_options pin{.pin_last_output = true};
  r.output_candidates = cpu::candidate_rows(r.table, K::output, pin);
  const auto out_rows = cpu::global_rows(r.output_candidates, r.table);
  std::vector<float> out_hidden(out_rows.size() * static_cast<std::size_t>(H));
  gather_rows(host, make_host_span(std::as_const(hidden)), H, make_host_span(out_rows),
              make_host_span(out_hidden));
  r.output_logits.resize(2 * out_rows.size());
  output.logits(
      host,
      {make_host_span(r.output_candidates.indptr), make_host_span(std::as_const(out_hidden)), H},
      make_host_span(r.output_logits));
  r.output_kept.indptr.resize(r.output_candidates.indptr.size());
  r.output_kept.positions.resize(out_rows.size());
  r.output_kept.positions.resize(static_cast<std::size_t>(logit_argmax{}.select(
      host,
      {make_host_span(r.output_candidates.indptr), make_host_span(std::as_const(r.output_logits))},
      make_host_span(r.output_kept.indptr), make_host_span(r.output_kept.positions))));
  const std::vector<kind_selection> decode_pruned{{K::image, r.image_kept.view()},
                                                  {K::output, r.output_kept.view()}};
  r.decode = cpu::build_sparse_context(r.table, make_host_span(decode_pruned), pin);
  return r;
}

/// The small test checkpoint's predictor sizes (tools/predictor_reference.py).
inline predictor_config small_config() {
  predictor_config c;
  c.hidden = 48;
  c.d_model = 32;
  c.heads = 4;
  c.ffn = 64;
  c.local_dim = 16;
  c.image_head = {16, 8};
  c.output_head = {32, 16, 8};
  return c;
}

}  // namespace predictor_pipeline

#if defined(DYNLLAVA_PIPELINE_AS_TEST)
#include <doctest/doctest.h>
TEST_SUITE("cpu") {
  TEST_CASE("scorer -> selector -> sparse context: prefill top-k and decode gate compose") {
    using namespace dynllava;
    const io::checkpoint ckpt(DYNLLAVA_EXAMPLE_CHECKPOINT);
    const auto cfg = predictor_pipeline::small_config();
    const auto r = predictor_pipeline::run(load_image_predictor(ckpt, cfg),
                                           load_output_predictor(ckpt, cfg), 5);
    CHECK(r.image_kept.indptr ==
          std::vector<index_t>{0, 115, 135});  // floor(576*.2), floor(100*.2)
    // Prefill: every text row is kept, and exactly the selected image rows.
    CHECK(r.prefill.indptr ==
          std::vector<index_t>{0, 5 + 115 + 7 + 30, 5 + 115 + 7 + 30 + 5 + 20 + 3 + 12});
    // Decode: the output gate's decisions plus the pinned newest token of each sequence.
    index_t gate_keeps = 0;
    for (std::size_t i = 0; i < r.output_logits.size() / 2; ++i) {
      gate_keeps += r.output_logits[2 * i] > r.output_logits[2 * i + 1] ? 1 : 0;
    }
    CHECK(static_cast<index_t>(r.output_kept.positions.size()) == gate_keeps);
    CHECK(static_cast<index_t>(r.decode.rows.size()) == 5 + 115 + 7 + 5 + 20 + 3 + gate_keeps + 2);
    const index_t rows0 = r.table.length(0);
    CHECK(std::binary_search(r.decode.rows.begin(), r.decode.rows.end(), rows0 - 1));
    CHECK(r.decode.rows.back() == rows0 + r.table.length(1) - 1);
    CHECK(std::is_sorted(r.decode.positions.begin(),
                         r.decode.positions.begin() + r.decode.indptr[1]));
    // The kept image positions are the top 115 by logit0 - logit1 (ties: earlier first).
    std::vector<index_t> order(576);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
      return r.image_scores[static_cast<std::size_t>(a)] >
             r.image_scores[static_cast<std::size_t>(b)];
    });
    order.resize(115);
    std::sort(order.begin(), order.end());
    CHECK(std::vector<index_t>(r.image_kept.positions.begin(),
                               r.image_kept.positions.begin() + 115) == order);
  }
}
#else
int main(int argc, char** argv) try {
  using namespace dynllava;
  const std::string path = argc > 1 ? argv[1] : DYNLLAVA_EXAMPLE_CHECKPOINT;
  predictor_config cfg = argc > 1 ? predictor_config{} : predictor_pipeline::small_config();
  if (argc > 2) cfg.hidden = static_cast<index_t>(std::stol(argv[2]));
  const io::checkpoint ckpt(path);
  const auto r =
      predictor_pipeline::run(load_image_predictor(ckpt, cfg), load_output_predictor(ckpt, cfg), 1);
  fmt::print("checkpoint {} (H = {})\n", path, cfg.hidden);
  for (std::size_t b = 0; b < r.table.batch(); ++b) {
    fmt::print(
        "sequence {}: {} rows | prefill keeps {} (image {}/{}) | decode keeps {} (outputs {}/{} + "
        "newest)\n",
        b, r.table.length(b), r.prefill.indptr[b + 1] - r.prefill.indptr[b],
        r.image_kept.indptr[b + 1] - r.image_kept.indptr[b],
        r.image_candidates.indptr[b + 1] - r.image_candidates.indptr[b],
        r.decode.indptr[b + 1] - r.decode.indptr[b],
        r.output_kept.indptr[b + 1] - r.output_kept.indptr[b],
        r.output_candidates.indptr[b + 1] - r.output_candidates.indptr[b]);
  }
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "{}\n", e.what());
  return 2;
}
#endif

// SPDX-License-Identifier: Apache-2.0
#include "eval_modes.hpp"

#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/dynllava.hpp>

#include "random_image_scorer.hpp"

#include <algorithm>
#include <array>
#include <chrono>

namespace dynllava::llava {

namespace {

constexpr std::array<std::pair<eval_mode, std::string_view>, 3> mode_names{{
    {eval_mode::dense, "dense"},
    {eval_mode::dynamic, "dynamic"},
    {eval_mode::random, "random"},
}};

prepared_request prepare(const loaded_model& m, const heldout_item& it) {
  return prepare_request(m, request{it.question, {it.image}});
}

}  // namespace

std::string_view to_string(eval_mode mode) noexcept {
  for (const auto& [m, name] : mode_names) {
    if (m == mode) return name;
  }
  return "?";
}

eval_mode parse_eval_mode(std::string_view text) {
  for (const auto& [m, name] : mode_names) {
    if (name == text) return m;
  }
  DYNLLAVA_FAIL("--modes: unknown mode {} (expected dense, dynamic or random)",
                quote_untrusted(text));
}

double mode_report::exact_rate() const noexcept {
  return questions == 0 ? 0.0 : static_cast<double>(exact) / static_cast<double>(questions);
}
double mode_report::kept_on_object_rate() const noexcept {
  return kept_rows == 0 ? 0.0
                        : static_cast<double>(kept_on_object) / static_cast<double>(kept_rows);
}
double mode_report::object_share() const noexcept {
  return image_rows == 0 ? 0.0 : static_cast<double>(object_rows) / static_cast<double>(image_rows);
}

void check_prompts(const loaded_model& m, const std::vector<heldout_item>& items,
                   const std::string& file) {
  const std::string name = quote_untrusted(file);
  for (const auto& it : items) {
    // Only the ids are compared; the image is read here too (a missing one fails early).
    const prepared_request p = prepare(m, it);
    const auto& want = it.prompt_ids;
    const auto [a, b] = std::mismatch(p.ids.begin(), p.ids.end(), want.begin(), want.end());
    if (a == p.ids.end() && b == want.end()) continue;
    const auto at = static_cast<std::size_t>(a - p.ids.begin());
    DYNLLAVA_FAIL(
        "--eval {}:{}: \"prompt_ids\" ({} ids) differ from the program's tokens of the question "
        "({} ids) at index {}: expected {}, the program has {}",
        name, it.line, want.size(), p.ids.size(), at,
        b == want.end() ? std::string("nothing") : std::to_string(*b),
        a == p.ids.end() ? std::string("nothing") : std::to_string(*a));
  }
}

std::vector<sequence_result> run_random_batch(const loaded_model& m,
                                              const std::vector<prepared_request>& batch,
                                              index_t max_new_tokens, std::uint64_t seed) {
  DYNLLAVA_EXPECTS(!batch.empty(), "run_random_batch: the batch is empty");
  const io::llava_folder& f = m.folder;
  const llava_model& model = f.model;
  std::vector<index_t> indptr{0};
  std::vector<std::int64_t> ids;
  std::vector<float> pixels;
  for (const auto& r : batch) {
    ids.insert(ids.end(), r.ids.begin(), r.ids.end());
    indptr.push_back(static_cast<index_t>(ids.size()));
    pixels.insert(pixels.end(), r.pixels.begin(), r.pixels.end());
  }
  const prompt_rows p = model.prompt({make_host_span(indptr), make_host_span(std::as_const(ids))},
                                     make_host_span(std::as_const(pixels)));
  sparsifier_options o;
  o.prune_images = true;
  o.gate_outputs = false;
  o.sparse_layer = f.config.sparse.sparse_layer;
  o.vision_keep_ratio = f.config.sparse.vision_keep_rate;
  const random_image_scorer scorer{random_scorer{seed}, model.hidden()};
  auto cache = kv_cache_for(model, p, batch.size(), max_new_tokens);
  kv_session s(model, cache, full_cache_policy{}, &scorer, nullptr, o);
  const generate_options g{.max_new_tokens = max_new_tokens,
                           .eos = static_cast<std::int32_t>(f.config.eos_token_id)};
  const generation out = generate(s, p.view(), p.segment_view(), g);
  const token_decisions& img = s.image_decisions();
  std::vector<sequence_result> r(batch.size());
  for (std::size_t b = 0; b < batch.size(); ++b) {
    r[b].tokens = out.tokens[b];
    r[b].stopped_at_eos = out.stopped_at_eos[b] != 0;
    r[b].prompt_rows = p.row_indptr[b + 1] - p.row_indptr[b];
    if (img.batch() == batch.size()) {
      r[b].image_keep.assign(img.keep.begin() + img.indptr[b],
                             img.keep.begin() + img.indptr[b + 1]);
    }
  }
  return r;
}

mode_report evaluate_mode(const loaded_model& m, const std::vector<heldout_item>& items,
                          eval_mode mode, const eval_settings& settings) {
  DYNLLAVA_EXPECTS(settings.batch >= 1, "--batch must be at least 1, got {}", settings.batch);
  DYNLLAVA_EXPECTS(settings.margin >= 0, "--margin must be >= 0, got {}", settings.margin);
  const auto t0 = std::chrono::steady_clock::now();
  const index_t rows = m.folder.model.image_rows();
  mode_report rep;
  rep.mode = mode;
  for (std::size_t first = 0; first < items.size(); first += settings.batch) {
    const std::size_t n = std::min(settings.batch, items.size() - first);
    std::vector<prepared_request> batch;
    index_t max_new = 0;
    for (std::size_t i = first; i < first + n; ++i) {
      batch.push_back(prepare(m, items[i]));
      max_new =
          std::max(max_new, static_cast<index_t>(items[i].answer_ids.size()) + settings.margin);
    }
    std::vector<sequence_result> res;
    if (mode == eval_mode::random) {
      // Scores from (seed, first question of the batch, index in the batch, row).
      res = run_random_batch(m, batch, max_new, mix64(settings.seed ^ mix64(first)));
    } else {
      generation_settings g;
      g.mode = mode == eval_mode::dense ? run_mode::dense : run_mode::dynamic;
      g.kv_cache = true;
      g.max_new_tokens = max_new;
      g.temperature = 0.0f;
      res = run_batch(m, batch, g).sequences;
    }
    for (std::size_t b = 0; b < n; ++b) {
      const heldout_item& it = items[first + b];
      sequence_result& r = res[b];
      // A sequence of the batch may run past its own budget (the batch's is the largest):
      // greedy answers do not depend on the batch, so it is cut to what it would be alone.
      const auto own = it.answer_ids.size() + static_cast<std::size_t>(settings.margin);
      if (r.tokens.size() > own) r.tokens.resize(own);
      const bool ok = r.tokens == it.answer_ids;
      ++rep.questions;
      rep.exact += ok ? 1 : 0;
      auto& k = rep.kinds[it.kind];
      ++k.questions;
      k.exact += ok ? 1 : 0;
      if (!ok) rep.wrong.push_back(it.line);
      DYNLLAVA_EXPECTS(static_cast<index_t>(it.object_patch.size()) == rows,
                       "--eval line {}: {} object patches for the model's {} image rows", it.line,
                       it.object_patch.size(), rows);
      if (mode != eval_mode::dense) {
        DYNLLAVA_EXPECTS(static_cast<index_t>(r.image_keep.size()) == rows,
                         "{} mode: the session decided {} image rows, the model has {}",
                         to_string(mode), r.image_keep.size(), rows);
      }
      for (index_t i = 0; i < rows; ++i) {
        const auto u = static_cast<std::size_t>(i);
        const bool kept = mode == eval_mode::dense || r.image_keep[u] != 0;
        const bool object = it.object_patch[u] != 0;
        rep.image_rows += 1;
        rep.object_rows += object ? 1 : 0;
        rep.kept_rows += kept ? 1 : 0;
        rep.kept_on_object += kept && object ? 1 : 0;
      }
    }
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace dynllava::llava

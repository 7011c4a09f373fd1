// SPDX-License-Identifier: Apache-2.0
// From an image file and a text prompt to generated tokens, through every mode of the library's
// drivers, on the tiny Dynamic-LLaVA of tests/fixtures/llava/original (random weights, bf16,
// two shards, predictors): dense, Dynamic-LLaVA vision-only and vision + text, FastV, H2O,
// FastV + H2O, StreamingLLM, with and without KV cache, greedy and sampling, and a ragged batch.
// The METHOD.md invariants hold end to end: KV == no-cache under the argmax rule, keep-all ==
// dense, ragged == alone.
#include <dynllava/dynllava.hpp>
#include <dynllava/io/load_llava.hpp>

#include "../support/fixtures.hpp"
#include "clip_preprocess.hpp"
#include "conversation.hpp"
#include "image.hpp"
#include "prompt_tokens.hpp"
#include "tokenizer.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

using namespace dynllava;
namespace ll = dynllava::llava;

namespace {

std::filesystem::path fixtures() { return DYNLLAVA_FIXTURE_DIR; }

const io::llava_folder& tiny() {
  static const io::llava_folder f = io::load_llava(fixtures() / "llava" / "original");
  return f;
}

/// One request: its token ids (one placeholder per image) and its images' pixel values.
struct request {
  std::vector<std::int64_t> ids;
  std::vector<float> pixels;
};

request make_request(const std::string& question,
                     const std::vector<std::filesystem::path>& images) {
  const auto& f = tiny();
  static const ll::tokenizer tok =
      ll::tokenizer::load(fixtures() / "llava" / "original" / "tokenizer.model");
  ll::conversation conv(ll::vicuna_v1());
  conv.add_user(question, static_cast<int>(images.size()));
  const auto ids =
      ll::tokenize_prompt(tok, conv.prompt(), static_cast<std::int32_t>(f.config.image_token_id));
  request r{std::vector<std::int64_t>(ids.begin(), ids.end()), {}};
  const ll::clip_preprocess_options o = ll::preprocess_options(f.preprocess);  // pad, CLIP
  for (const auto& file : images) {
    const auto px = ll::clip_pixel_values(ll::load_image(file), o);
    r.pixels.insert(r.pixels.end(), px.begin(), px.end());
  }
  return r;
}

/// The batch's prompt rows (requests in order).
prompt_rows rows_of(const std::vector<request>& batch) {
  std::vector<index_t> indptr{0};
  std::vector<std::int64_t> ids;
  std::vector<float> px;
  for (const auto& r : batch) {
    ids.insert(ids.end(), r.ids.begin(), r.ids.end());
    indptr.push_back(static_cast<index_t>(ids.size()));
    px.insert(px.end(), r.pixels.begin(), r.pixels.end());
  }
  return tiny().model.prompt({make_host_span(indptr), make_host_span(std::as_const(ids))},
                             make_host_span(std::as_const(px)));
}

paged_kv_cache cache_for(const prompt_rows& p, std::size_t batch, index_t new_tokens) {
  const auto& m = tiny().model;
  const index_t width = m.config().text.heads * m.config().text.head_dim;
  const index_t pages = static_cast<index_t>(batch) *
                        ((p.row_indptr.back() + new_tokens * static_cast<index_t>(batch)) / 8 + 4);
  return paged_kv_cache({m.layers(), batch, width, 8, m.layers() * pages});
}

generate_options greedy(index_t n) {
  return {.max_new_tokens = n, .eos = std::nullopt, .sampling = {}};
}

sparsifier_options dense() {
  sparsifier_options o;
  o.prune_images = false;
  o.gate_outputs = false;
  return o;
}
sparsifier_options dynamic(bool text) {
  sparsifier_options o;
  o.sparse_layer = tiny().config.sparse.sparse_layer;
  o.vision_keep_ratio = tiny().config.sparse.vision_keep_rate;
  o.gate_outputs = text;
  return o;
}

/// Greedy tokens of a KV-cache run with `policy`.
template <class Policy>
generation kv_run(const prompt_rows& p, std::size_t batch, Policy policy, sparsifier_options o,
                  bool predictors, index_t n = 12) {
  const auto& f = tiny();
  auto cache = cache_for(p, batch, n);
  kv_session s(f.model, cache, policy, predictors ? &*f.image : nullptr,
               predictors ? &*f.output : nullptr, o);
  return generate(s, p.view(), p.segment_view(), greedy(n));
}

/// Greedy tokens without a KV cache.
generation no_cache_run(const prompt_rows& p, std::size_t batch, sparsifier_options o,
                        bool predictors, index_t n = 12) {
  const auto& f = tiny();
  no_cache_session s(f.model, batch, predictors ? &*f.image : nullptr,
                     predictors ? &*f.output : nullptr, o);
  return generate(s, p.view(), p.segment_view(), greedy(n));
}

/// Runs a KV-cache session and a no-cache session side by side on `p` (one sequence) for `n`
/// decode steps, feeding both the KV session's argmax token, and checks that they agree at
/// every step: the same argmax, logits within 1e-4 of the row's largest, the same kept image
/// positions; with the output gate on, the same keep flags for every decoded token.
template <class KvSession, class NoCacheSession>
void check_kv_equals_no_cache(KvSession& kv, NoCacheSession& nc, const prompt_rows& p, index_t n,
                              bool gate) {
  std::vector<float> a = kv.prefill(p.view(), p.segment_view());
  std::vector<float> b = nc.prefill(p.view(), p.segment_view());
  CHECK(kv.image_decisions().kept().positions == nc.image_decisions().kept().positions);
  for (index_t step = 0; step <= n; ++step) {
    CAPTURE(step);
    REQUIRE(a.size() == b.size());
    float scale = 0.0f, err = 0.0f;
    for (std::size_t j = 0; j < a.size(); ++j) {
      scale = std::max(scale, std::abs(a[j]));
      err = std::max(err, std::abs(a[j] - b[j]));
    }
    CHECK(err <= 1e-4f * scale);
    const auto t = static_cast<std::int32_t>(std::max_element(a.begin(), a.end()) - a.begin());
    CHECK(std::max_element(b.begin(), b.end()) - b.begin() == t);
    if (step == n) break;
    const std::vector<std::int32_t> token{t};
    a = kv.decode(make_host_span(token));
    b = nc.decode(make_host_span(token));
  }
  if (gate) {
    // The no-cache session's last step saw every decoded token but the newest as a candidate.
    const auto& flags = kv.decisions();
    const auto& seen = nc.output_decisions().keep;
    REQUIRE(flags.size() == static_cast<std::size_t>(n));
    REQUIRE(seen.size() + 1 == flags.size());
    CHECK(std::equal(seen.begin(), seen.end(), flags.begin()));
    CHECK(std::count(flags.begin(), flags.end(), 0) > 0);  // the gate dropped some
    CHECK(std::count(flags.begin(), flags.end(), 1) > 0);  // and kept some
  }
}

}  // namespace

TEST_SUITE("llava") {
  TEST_CASE("llava end to end: the image file and the prompt become the reference's inputs") {
    std::ifstream in(fixtures() / "llava" / "reference.json");
    const auto ref = nlohmann::json::parse(in);
    const auto& c = ref["cases"]["image"];
    const request r =
        make_request("What is shown in this image?", {fixtures() / "llava" / "image.png"});
    CHECK(r.ids == c["prompt_ids"].get<std::vector<std::int64_t>>());
    // pixel_values: the reference's fp32 values, every 37th.
    const auto stride = ref["image"]["fp32_subsample"]["stride"].get<std::size_t>();
    const auto want = ref["image"]["fp32_subsample"]["values"].get<std::vector<float>>();
    REQUIRE(r.pixels.size() == 3u * 336u * 336u);
    float err = 0.0f;
    for (std::size_t i = 0; i < want.size(); ++i)
      err = std::max(err, std::abs(r.pixels[i * stride] - want[i]));
    CHECK(err <= 1e-6f);
    // Every value, against the reference's fp16 copy (half an fp16 ulp at |x| < 4 is < 2e-3),
    // and the picture's own pixels are among them (not only the pad colour).
    const std::vector<float> all = dynllava::test::reference_pixels();
    REQUIRE(all.size() == r.pixels.size());
    float worst = 0.0f;
    std::size_t not_pad = 0;
    for (std::size_t i = 0; i < all.size(); ++i) {
      worst = std::max(worst, std::abs(r.pixels[i] - all[i]));
      not_pad += std::abs(all[i] - all[0]) > 0.05f ? 1 : 0;
    }
    CHECK(worst <= 2e-3f);
    CHECK(not_pad > all.size() / 4);
    const prompt_rows p = rows_of({r});
    CHECK(p.row_indptr.back() == static_cast<index_t>(c["input_ids"].size()));
  }

  TEST_CASE("llava end to end: every mode, with and without KV cache; the invariants hold") {
    const request r =
        make_request("What is shown in this image?", {fixtures() / "llava" / "image.png"});
    const prompt_rows p = rows_of({r});
    const auto dense_kv = kv_run(p, 1, full_cache_policy{}, dense(), false);
    REQUIRE(dense_kv.tokens.front().size() == 12);
    // Dense without a cache, and Dynamic-LLaVA keeping everything, equal dense.
    CHECK(no_cache_run(p, 1, dense(), false).tokens == dense_kv.tokens);
    sparsifier_options keep_all = dynamic(true);
    keep_all.vision_keep_ratio = 1.0;
    keep_all.gate_outputs = false;
    CHECK(kv_run(p, 1, full_cache_policy{}, keep_all, true).tokens == dense_kv.tokens);

    // Dynamic-LLaVA, vision only and vision + text: KV == no-cache (argmax rule), tokens, and
    // step by step the logits, the kept image rows and the gate's decisions.
    const auto vision_kv = kv_run(p, 1, full_cache_policy{}, dynamic(false), true);
    CHECK(no_cache_run(p, 1, dynamic(false), true).tokens == vision_kv.tokens);
    const index_t layer = tiny().config.sparse.sparse_layer;
    const auto both_kv = kv_run(p, 1, online_gate_policy{layer}, dynamic(true), true);
    CHECK(no_cache_run(p, 1, dynamic(true), true).tokens == both_kv.tokens);
    for (const bool text : {false, true}) {
      CAPTURE(text);
      auto cache = cache_for(p, 1, 12);
      kv_session kv(tiny().model, cache, online_gate_policy{layer}, &*tiny().image, &*tiny().output,
                    dynamic(text));
      no_cache_session nc(tiny().model, 1, &*tiny().image, &*tiny().output, dynamic(text));
      check_kv_equals_no_cache(kv, nc, p, 12, text);
    }
    {
      auto cache = cache_for(p, 1, 12);
      kv_session s(tiny().model, cache, online_gate_policy{layer}, &*tiny().image, &*tiny().output,
                   dynamic(true));
      (void)generate(s, p.view(), p.segment_view(), greedy(12));
      // floor(576 * 0.2) image tokens kept, and the cache beyond the sparse layer is shorter
      // than below it.
      CHECK(s.image_kept().positions.size() == 115);
      const auto lengths = s.cache_lengths();
      CHECK(lengths.back() < lengths.front());
    }

    // Baselines run through the same drivers.
    sparsifier_options fastv = dense();
    fastv.prune_images = true;
    fastv.vision = vision_rule::fastv;
    fastv.sparse_layer = 2;
    fastv.vision_keep_ratio = 0.25;
    CHECK(kv_run(p, 1, full_cache_policy{}, fastv, false).tokens.front().size() == 12);
    CHECK(kv_run(p, 1, h2o_policy{0.5, 8, 0}, dense(), false).tokens.front().size() == 12);
    CHECK(kv_run(p, 1, h2o_policy{0.5, 8, 0}, fastv, false).tokens.front().size() == 12);
    CHECK(kv_run(p, 1, streaming_policy{4, 64}, dense(), false).tokens.front().size() == 12);

    // Sampling: the seed fixes the draw.
    auto sample = [&](std::uint64_t seed) {
      auto cache = cache_for(p, 1, 12);
      kv_session s(tiny().model, cache, online_gate_policy{layer}, &*tiny().image, &*tiny().output,
                   dynamic(true));
      return generate(s, p.view(), p.segment_view(),
                      {.max_new_tokens = 12,
                       .eos = std::nullopt,
                       .sampling = {.temperature = 0.8f, .top_p = 0.9f, .seed = seed}});
    };
    CHECK(sample(7).tokens == sample(7).tokens);
  }

  TEST_CASE("llava end to end: a ragged batch of requests equals each request alone") {
    const std::vector<request> batch = {
        make_request("What is shown in this image?", {fixtures() / "llava" / "image.png"}),
        make_request("Describe the picture in detail.",
                     {fixtures() / "images" / "wide_500x375.png"}),
        make_request("Is there a dog?", {})};
    const prompt_rows p = rows_of(batch);
    const index_t layer = tiny().config.sparse.sparse_layer;
    const auto together = kv_run(p, batch.size(), online_gate_policy{layer}, dynamic(true), true);
    const auto together_nc = no_cache_run(p, batch.size(), dynamic(true), true);
    for (std::size_t b = 0; b < batch.size(); ++b) {
      CAPTURE(b);
      const prompt_rows alone = rows_of({batch[b]});
      CHECK(kv_run(alone, 1, online_gate_policy{layer}, dynamic(true), true).tokens.front() ==
            together.tokens[b]);
      CHECK(together_nc.tokens[b] == together.tokens[b]);
    }
    // Dense, vision-only Dynamic-LLaVA and FastV too.
    sparsifier_options fastv = dense();
    fastv.prune_images = true;
    fastv.vision = vision_rule::fastv;
    fastv.sparse_layer = 2;
    fastv.vision_keep_ratio = 0.25;
    for (int mode = 0; mode < 3; ++mode) {
      CAPTURE(mode);
      const sparsifier_options o = mode == 0 ? dense() : mode == 1 ? dynamic(false) : fastv;
      const bool predictors = mode == 1;
      const auto all = kv_run(p, batch.size(), full_cache_policy{}, o, predictors);
      for (std::size_t b = 0; b < batch.size(); ++b) {
        CAPTURE(b);
        const prompt_rows alone = rows_of({batch[b]});
        CHECK(kv_run(alone, 1, full_cache_policy{}, o, predictors).tokens.front() == all.tokens[b]);
      }
    }
  }
}

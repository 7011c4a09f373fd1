// SPDX-License-Identifier: Apache-2.0
/// @file test_cost_model.cpp
/// @brief Cost model: the paper's prefill table, the exact count (hand-computed and against the
/// paper's formula), KV-cache bytes.
#include <dynllava/cost/exact_flops.hpp>
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/paper_formula.hpp>
#include <dynllava/cost/schedule_trace.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

using namespace dynllava;
using namespace dynllava::cost;

namespace {

/// TFLOPs at the paper table's rounding (one decimal).
double table_tflops(double flops) { return std::round(flops / 1e12 * 10.0) / 10.0; }

/// A trace of `n_per_layer[l]` rows per layer, each attending to all `n` (square, not causal),
/// nothing else: the shape the paper's formula assumes.
trace image_only_square_trace(const std::vector<std::int64_t>& n_per_layer) {
  trace t;
  for (std::int64_t n : n_per_layer) t.layers.push_back({n, n * n, n});
  return t;
}

/// Tiny config for hand counts: C 8, 2 layers, 2 heads of 4, MLP 16, vocab 10.
llava_sizes tiny_config() {
  llava_sizes c;
  c.name = "tiny";
  c.hidden = 8;
  c.layers = 2;
  c.heads = 2;
  c.head_dim = 4;
  c.intermediate = 16;
  c.vocab = 10;
  c.max_positions = 64;
  c.predictor.hidden = 8;
  c.predictor.d_model = 8;
  c.predictor.heads = 2;
  c.predictor.ffn = 16;
  c.predictor.blocks = 1;
  c.predictor.local_dim = 4;
  c.predictor.image_head = {4, 3};
  c.predictor.output_head = {4, 3, 2};
  return c;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("cost: the paper's prefill TFLOPs table (7B 10.1/2.5/3.2, 13B 19.6/4.7/6.0)") {
    const schedule dense = dense_schedule{};
    const schedule dyn = dynamic_llava_schedule{};
    const schedule fastv = fastv_schedule{};
    const llava_sizes b7 = llava_1_5_7b();
    const llava_sizes b13 = llava_1_5_13b();
    CHECK(table_tflops(paper_prefill_flops(b7, dense, 1, 576)) == doctest::Approx(10.1));
    CHECK(table_tflops(paper_prefill_flops(b7, dyn, 1, 576)) == doctest::Approx(2.5));
    CHECK(table_tflops(paper_prefill_flops(b7, fastv, 1, 576)) == doctest::Approx(3.2));
    CHECK(table_tflops(paper_prefill_flops(b13, dense, 1, 576)) == doctest::Approx(19.6));
    CHECK(table_tflops(paper_prefill_flops(b13, dyn, 1, 576)) == doctest::Approx(4.7));
    CHECK(table_tflops(paper_prefill_flops(b13, fastv, 1, 576)) == doctest::Approx(6.0));
    // H2O's prefill is dense; the formula is linear in the batch.
    CHECK(paper_prefill_flops(b7, h2o_schedule{}, 1, 576) ==
          paper_prefill_flops(b7, dense, 1, 576));
    CHECK(paper_prefill_flops(b7, dyn, 8, 576) ==
          doctest::Approx(8 * paper_prefill_flops(b7, dyn, 1, 576)));
    // Image tokens per layer: 2 full + 115, 3 full + 144.
    CHECK(paper_image_tokens(dyn, 576, 1) == 576);
    CHECK(paper_image_tokens(dyn, 576, 2) == 115);
    CHECK(paper_image_tokens(fastv, 576, 2) == 576);
    CHECK(paper_image_tokens(fastv, 576, 3) == 144);
  }

  TEST_CASE(
      "cost: the paper's formula is the exact count with MLP 4C, square attention, "
      "image tokens only, no element-wise work") {
    for (llava_sizes c : {llava_1_5_7b(), llava_1_5_13b()}) {
      c.intermediate = 4 * c.hidden;
      for (const schedule& s : {schedule{dense_schedule{}}, schedule{dynamic_llava_schedule{}},
                                schedule{fastv_schedule{}}}) {
        std::vector<std::int64_t> n;
        for (index_t l = 0; l < c.layers; ++l) n.push_back(paper_image_tokens(s, 576, l));
        const flop_breakdown f =
            exact_flops(c, image_only_square_trace(n), count_options{.elementwise = false});
        CHECK(f.total() == doctest::Approx(paper_prefill_flops(c, s, 1, 576)).epsilon(1e-12));
        CHECK(f.elementwise == 0.0);
        CHECK(f.lm_head == 0.0);
      }
    }
  }

  TEST_CASE("cost: at LLaMA's real MLP width the exact count is below the paper's formula") {
    // Per image token and layer the linear part is 8 C^2 + 6 C I instead of 32 C^2:
    // 7B: (8 + 6 * 11008 / 4096) / 32 = 0.7539..., 13B: (8 + 6 * 13824 / 5120) / 32 = 0.75625.
    for (const llava_sizes& c : {llava_1_5_7b(), llava_1_5_13b()}) {
      const std::vector<std::int64_t> n(static_cast<std::size_t>(c.layers), 576);
      const flop_breakdown f =
          exact_flops(c, image_only_square_trace(n), count_options{.elementwise = false});
      const double cc = c.hidden;
      const double expected_ratio = (8 * cc * cc + 6 * cc * c.intermediate) / (32 * cc * cc);
      const double paper_linear = 32.0 * 576 * cc * cc * c.layers;
      CHECK((f.projections + f.mlp) / paper_linear == doctest::Approx(expected_ratio));
      CHECK(f.total() < paper_prefill_flops(c, dense_schedule{}, 1, 576));

      // The whole default prompt (35 + 576 + 20 tokens, causal, norms, lm_head) still comes to
      // less than the formula's image tokens alone: 631 < 576 * 32 C / (8 C + 6 I).
      const request req{};
      const double exact_dense =
          exact_flops(c, schedule_trace(c, dense_schedule{}, req, pass_kind::prefill)).total();
      const double paper_dense = paper_prefill_flops(c, dense_schedule{}, 1, 576);
      CHECK(static_cast<double>(req.prompt_tokens()) < 576.0 / expected_ratio);
      CHECK(exact_dense < paper_dense);
      CHECK(exact_dense > expected_ratio * paper_dense);  // more tokens than the image alone
    }
  }

  TEST_CASE("cost: exact count of a tiny config by hand") {
    const llava_sizes c = tiny_config();
    trace t;
    t.layers = {{3, 6, 3}, {2, 3, 2}};  // 5 rows, 9 pairs in all
    t.logit_rows = 1;

    const flop_breakdown bare = exact_flops(c, t, count_options{.elementwise = false});
    CHECK(bare.projections == 5 * 4 * 2 * 8 * 8);  // 2560
    CHECK(bare.mlp == 5 * 3 * 2 * 8 * 16);         // 3840
    CHECK(bare.attention_scores == 9 * 2 * 8);     // 144
    CHECK(bare.attention_values == 9 * 2 * 8);
    CHECK(bare.lm_head == 2 * 8 * 10);  // 160
    CHECK(bare.elementwise == 0);
    CHECK(bare.total() == 6848);

    const flop_breakdown full = exact_flops(c, t);
    // per row: 2 RMSNorms 64 + RoPE 48 + SwiGLU 80 + residuals 16 = 208; per pair 6 x 2 heads.
    CHECK(full.elementwise == 5 * 208 + 9 * 12);
    CHECK(full.lm_head == 160 + 4 * 8);
    CHECK(full.total() == 6848 + 1148 + 32);

    // Output predictor: LN(8), 8->4, 4->3, 3->2 with GELU, then 2->2.
    CHECK(output_predictor_flops_per_token(c, {.elementwise = false}) == 64 + 24 + 12 + 8);
    CHECK(output_predictor_flops_per_token(c) == 108 + 7 * 8 + (4 + 3 + 2 + 2) + 5 * (4 + 3 + 2));
    // Image predictor, one block: LN(8) + 8->8 + GELU; qkv 8->24, proj, fc1 8->16, fc2 16->8,
    // two LNs, GELU(16), two adds; global mean 4; head 8->4, 4->3 with GELU, 3->2.
    const double image_bare = 2 * 8 * 8 + 2 * 8 * 24 + 2 * 8 * 8 + 2 * 8 * 16 + 2 * 16 * 8 +
                              2 * 8 * 4 + 2 * 4 * 3 + 2 * 3 * 2;
    CHECK(image_predictor_flops_per_token(c, {.elementwise = false}) == image_bare);
    const double image_extra = (7 * 8 + 5 * 8 + 8) + (8 + 16 + 8) + (2 * 7 * 8 + 5 * 16 + 2 * 8) +
                               4 + (4 + 5 * 4) + (3 + 5 * 3) + 2;
    CHECK(image_predictor_flops_per_token(c) == image_bare + image_extra);
    CHECK(image_predictor_flops_per_pair(c) == 4 * 8 + 6 * 2);

    t.image_tokens_scored = 5;
    t.image_attention_pairs = 25;
    t.output_tokens_scored = 2;
    const flop_breakdown with_predictors = exact_flops(c, t);
    CHECK(with_predictors.image_predictor == 5 * (image_bare + image_extra) + 25 * (4 * 8 + 6 * 2));
    CHECK(with_predictors.output_predictor == 2 * output_predictor_flops_per_token(c));
  }

  TEST_CASE("cost: predictor FLOPs at LLaVA sizes are about twice their parameter counts") {
    // 8.57 M and 2.27 M parameters (METHOD.md section 3); FLOPs per token ~ 2 x weights.
    const llava_sizes c = llava_1_5_7b();
    const double image = image_predictor_flops_per_token(c, {.elementwise = false});
    const double output = output_predictor_flops_per_token(c, {.elementwise = false});
    CHECK(image == doctest::Approx(2 * 8.55e6).epsilon(0.01));
    CHECK(output == doctest::Approx(2 * 2.26e6).epsilon(0.01));
  }

  TEST_CASE("cost: KV-cache bytes") {
    const llava_sizes c7 = llava_1_5_7b();
    CHECK(kv_bytes_per_token_layer(c7) == 2 * 4096 * 2);
    const request req{};  // 631 prompt tokens
    const trace dense_prefill = schedule_trace(c7, dense_schedule{}, req, pass_kind::prefill);
    CHECK(kv_cache_bytes(c7, dense_prefill) == std::int64_t{631} * 32 * 2 * 4096 * 2);

    // Dynamic-LLaVA after T generated tokens with KV cache: layers < 2 hold every token,
    // layers >= 2 the 115 kept image tokens, the text, and floor(T / 2) generated tokens.
    const dynamic_llava_schedule dyn{};
    for (std::int64_t big_t : {1, 2, 7, 100, 1000}) {
      const trace last = schedule_trace(c7, dyn, req, pass_kind::decode_kv_cache, big_t - 1);
      for (index_t l = 0; l < c7.layers; ++l) {
        const std::int64_t expected = l < 2 ? 631 + big_t : 35 + 115 + 20 + big_t / 2;
        CHECK(last.layers[static_cast<std::size_t>(l)].kv_tokens == expected);
      }
      const std::int64_t tokens = 2 * (631 + big_t) + 30 * (170 + big_t / 2);
      CHECK(kv_cache_bytes(c7, last) == tokens * kv_bytes_per_token_layer(c7));
    }

    // Batch scales linearly; a trace without cache holds nothing.
    request batch8 = req;
    batch8.batch = 8;
    CHECK(kv_cache_bytes(c7, schedule_trace(c7, dyn, batch8, pass_kind::prefill)) ==
          8 * kv_cache_bytes(c7, schedule_trace(c7, dyn, req, pass_kind::prefill)));
    CHECK(kv_cache_bytes(c7, schedule_trace(c7, dyn, req, pass_kind::decode_no_cache, 5)) == 0);

    llava_sizes fp32 = c7;
    fp32.kv_bytes_per_element = 4;
    CHECK(kv_cache_bytes(fp32, dense_prefill) == 2 * kv_cache_bytes(c7, dense_prefill));
  }

  TEST_CASE("cost: invalid configs and traces are errors naming the field") {
    llava_sizes c = llava_1_5_7b();
    c.intermediate = 0;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("intermediate must be > 0, got 0"),
                         dynllava::error);
    c = llava_1_5_13b();
    c.predictor.hidden = 4096;
    CHECK_THROWS_WITH_AS(c.validate(),
                         doctest::Contains("predictor.hidden must equal hidden (5120)"),
                         dynllava::error);
    c = llava_1_5_7b();
    c.kv_bytes_per_element = -2;
    CHECK_THROWS_AS((void)kv_cache_bytes(c, trace{}), dynllava::error);
    c.kv_bytes_per_element = 2;
    c.layers = -1;
    CHECK_THROWS_WITH_AS((void)exact_flops(c, trace{}), doctest::Contains("layers must be > 0"),
                         dynllava::error);

    const llava_sizes ok = tiny_config();
    trace t;
    t.layers = {{1, 1, 1}};
    CHECK_THROWS_WITH_AS((void)exact_flops(ok, t),
                         doctest::Contains("one entry per layer (2), got 1"), dynllava::error);
    t.layers = {{1, 1, 1}, {3, 2, 0}};
    CHECK_THROWS_WITH_AS(
        (void)exact_flops(ok, t),
        doctest::Contains("layer 1: attention_pairs (2) must be >= query_rows (3)"),
        dynllava::error);
    t.layers = {{1, 1, 1}, {1, 1, -1}};
    CHECK_THROWS_WITH_AS((void)kv_cache_bytes(ok, t),
                         doctest::Contains("layer 1 has a negative count"), dynllava::error);
    t.layers = {{1, 1, 1}, {1, 1, 1}};
    t.logit_rows = -1;
    CHECK_THROWS_AS((void)exact_flops(ok, t), dynllava::error);

    trace a;
    a.layers.resize(2);
    trace b;
    b.layers.resize(3);
    CHECK_THROWS_WITH_AS(a += b, doctest::Contains("layer counts differ (2 vs 3)"),
                         dynllava::error);

    CHECK_THROWS_WITH_AS((void)paper_prefill_flops(ok, dense_schedule{}, 0, 576),
                         doctest::Contains("batch must be > 0, got 0"), dynllava::error);
    CHECK_THROWS_WITH_AS((void)paper_prefill_flops(ok, dense_schedule{}, 1, -1),
                         doctest::Contains("image_tokens must be >= 0, got -1"), dynllava::error);
  }
}

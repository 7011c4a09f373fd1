// SPDX-License-Identifier: Apache-2.0
/// @file test_cost_schedules.cpp
/// @brief Cost model: analytic traces of dense, FastV, Dynamic-LLaVA and H2O, and the sweep
/// against output length.
#include <dynllava/cost/output_sweep.hpp>
#include <dynllava/cost/schedule_trace.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <vector>

using namespace dynllava;
using namespace dynllava::cost;

namespace {

const pass_kind all_passes[] = {pass_kind::prefill, pass_kind::decode_no_cache,
                                pass_kind::decode_kv_cache};

std::int64_t rows(const trace& t, index_t layer) {
  return t.layers[static_cast<std::size_t>(layer)].query_rows;
}
std::int64_t pairs(const trace& t, index_t layer) {
  return t.layers[static_cast<std::size_t>(layer)].attention_pairs;
}
std::int64_t kv(const trace& t, index_t layer) {
  return t.layers[static_cast<std::size_t>(layer)].kv_tokens;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("cost: dense traces") {
    const llava_sizes c = llava_1_5_7b();
    const request req{};  // 631 tokens
    const trace pre = schedule_trace(c, dense_schedule{}, req, pass_kind::prefill);
    CHECK(pre.layers.size() == 32);
    CHECK(rows(pre, 31) == 631);
    CHECK(pairs(pre, 0) == 631 * 632 / 2);
    CHECK(kv(pre, 5) == 631);
    CHECK(pre.logit_rows == 1);
    CHECK(pre.image_tokens_scored == 0);

    const trace kv7 = schedule_trace(c, dense_schedule{}, req, pass_kind::decode_kv_cache, 7);
    CHECK(rows(kv7, 0) == 1);
    CHECK(pairs(kv7, 0) == 631 + 7 + 1);
    CHECK(kv(kv7, 31) == 631 + 8);

    const trace nc7 = schedule_trace(c, dense_schedule{}, req, pass_kind::decode_no_cache, 7);
    CHECK(rows(nc7, 0) == 639);
    CHECK(pairs(nc7, 0) == 639 * 640 / 2);
    CHECK(kv(nc7, 0) == 0);
  }

  TEST_CASE("cost: FastV prunes image tokens from layer K on, in prefill and both decodes") {
    const llava_sizes c = llava_1_5_7b();
    const request req{};
    const fastv_schedule f{};  // K = 3, 144 of 576 kept
    const trace pre = schedule_trace(c, f, req, pass_kind::prefill);
    CHECK(rows(pre, 2) == 631);
    CHECK(rows(pre, 3) == 631 - 432);
    CHECK(kv(pre, 3) == 199);
    const trace kv4 = schedule_trace(c, f, req, pass_kind::decode_kv_cache, 4);
    CHECK(pairs(kv4, 2) == 631 + 5);
    CHECK(pairs(kv4, 3) == 199 + 5);
    CHECK(kv(kv4, 3) == 199 + 5);
    const trace nc4 = schedule_trace(c, f, req, pass_kind::decode_no_cache, 4);
    CHECK(rows(nc4, 2) == 636);
    CHECK(rows(nc4, 3) == 204);
  }

  TEST_CASE("cost: Dynamic-LLaVA traces") {
    const llava_sizes c = llava_1_5_13b();
    const request req{};
    const dynamic_llava_schedule d{};  // l = 2, 115 image tokens, half the outputs
    const std::int64_t p = 631;
    const std::int64_t kept_p = 35 + 115 + 20;

    const trace pre = schedule_trace(c, d, req, pass_kind::prefill);
    CHECK(rows(pre, 1) == p);
    CHECK(rows(pre, 2) == kept_p);
    CHECK(pairs(pre, 39) == kept_p * (kept_p + 1) / 2);
    CHECK(pre.image_tokens_scored == 576);
    CHECK(pre.image_attention_pairs == 576 * 576);
    CHECK(pre.output_tokens_scored == 0);

    // Step t = 5: of tokens 0..4 generated before, floor(5 / 2) = 2 are kept; token 5 is kept
    // too (floor(6 / 2) = 3 > 2), so layers >= 2 cache 3 generated tokens after the step.
    const trace kv5 = schedule_trace(c, d, req, pass_kind::decode_kv_cache, 5);
    CHECK(pairs(kv5, 1) == p + 5 + 1);
    CHECK(pairs(kv5, 2) == kept_p + 2 + 1);
    CHECK(kv(kv5, 1) == p + 6);
    CHECK(kv(kv5, 2) == kept_p + 3);
    CHECK(kv5.output_tokens_scored == 1);
    CHECK(kv5.image_tokens_scored == 0);

    const trace nc5 = schedule_trace(c, d, req, pass_kind::decode_no_cache, 5);
    CHECK(rows(nc5, 1) == p + 6);
    CHECK(rows(nc5, 2) == kept_p + 2 + 1);
    CHECK(nc5.output_tokens_scored == 5);
    CHECK(nc5.image_tokens_scored == 0);  // the prompt pass's image selection is reused
    CHECK(nc5.image_attention_pairs == 0);

    // METHOD.md 4a: without and with KV cache the same tokens are kept: the rows a step without
    // cache runs in layers >= l are the keys the KV-cache step attends to.
    for (std::int64_t t = 0; t < 50; ++t) {
      const trace a = schedule_trace(c, d, req, pass_kind::decode_no_cache, t);
      const trace b = schedule_trace(c, d, req, pass_kind::decode_kv_cache, t);
      for (index_t l = 0; l < c.layers; ++l) CHECK(rows(a, l) == pairs(b, l));
    }
  }

  TEST_CASE("cost: Dynamic-LLaVA keeping everything is dense (predictors aside)") {
    const llava_sizes c = llava_1_5_7b();
    request req{};
    req.batch = 3;
    dynamic_llava_schedule keep_all{};
    keep_all.vision_keep = 1.0;
    keep_all.output_keep = 1.0;
    for (pass_kind pass : all_passes) {
      for (std::int64_t t : {0, 1, 17, 300}) {
        const trace a = schedule_trace(c, keep_all, req, pass, t);
        const trace b = schedule_trace(c, dense_schedule{}, req, pass, t);
        CHECK(a.layers == b.layers);
        CHECK(a.logit_rows == b.logit_rows);
      }
    }
    // The same through explicit decisions.
    keep_all.output_decisions.assign(400, 1);
    keep_all.output_keep = 0.0;  // ignored when decisions are given
    const trace a = schedule_trace(c, keep_all, req, pass_kind::decode_kv_cache, 299);
    CHECK(a.layers ==
          schedule_trace(c, dense_schedule{}, req, pass_kind::decode_kv_cache, 299).layers);
  }

  TEST_CASE("cost: explicit output decisions") {
    const llava_sizes c = llava_1_5_7b();
    const request req{};
    dynamic_llava_schedule d{};
    d.output_decisions = {1, 0, 0, 1, 1};
    const std::int64_t kept_p = 170;
    CHECK(kv(schedule_trace(c, d, req, pass_kind::decode_kv_cache, 0), 2) == kept_p + 1);
    CHECK(kv(schedule_trace(c, d, req, pass_kind::decode_kv_cache, 2), 2) == kept_p + 1);
    CHECK(kv(schedule_trace(c, d, req, pass_kind::decode_kv_cache, 4), 2) == kept_p + 3);
    CHECK(rows(schedule_trace(c, d, req, pass_kind::decode_no_cache, 5), 2) == kept_p + 3 + 1);
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, d, req, pass_kind::decode_kv_cache, 5),
                         doctest::Contains("output_decisions holds 5 tokens, the step needs 6"),
                         dynllava::error);
    d.output_decisions = {1, 2};
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, d, req, pass_kind::prefill),
                         doctest::Contains("output_decisions[1] must be 0 or 1, got 2"),
                         dynllava::error);
  }

  TEST_CASE("cost: a batch trace is the sum of its sequences' traces") {
    const llava_sizes c = llava_1_5_7b();
    request one{};
    request four = one;
    four.batch = 4;
    for (const schedule& s : {schedule{dense_schedule{}}, schedule{fastv_schedule{}},
                              schedule{dynamic_llava_schedule{}}, schedule{h2o_schedule{}}}) {
      for (pass_kind pass : all_passes) {
        if (!supports(s, pass)) continue;
        trace sum;
        for (int b = 0; b < 4; ++b) sum += schedule_trace(c, s, one, pass, 9);
        CHECK(sum == schedule_trace(c, s, four, pass, 9));
      }
    }
  }

  TEST_CASE("cost: H2O keeps a budget in layers >= full_layers, KV cache only") {
    const llava_sizes c = llava_1_5_7b();
    const request req{};
    const h2o_schedule h{};  // 50%, recent 32, 10 full layers
    const trace pre = schedule_trace(c, h, req, pass_kind::prefill);
    CHECK(rows(pre, 20) == 631);  // dense prefill
    CHECK(kv(pre, 9) == 631);
    CHECK(kv(pre, 10) == 315);
    const trace kv9 = schedule_trace(c, h, req, pass_kind::decode_kv_cache, 9);
    CHECK(pairs(kv9, 10) == (631 + 9) / 2 + 1);
    CHECK(kv(kv9, 10) == (631 + 10) / 2);
    CHECK_FALSE(supports(h, pass_kind::decode_no_cache));
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, h, req, pass_kind::decode_no_cache, 0),
                         doctest::Contains("decode without KV cache is not defined"),
                         dynllava::error);
    // Short contexts keep the recent window whole.
    request tiny{0, 10, 0, 1};
    CHECK(kv(schedule_trace(c, h, tiny, pass_kind::prefill), 10) == 10);
  }

  TEST_CASE("cost: costs grow with output length; sparse schedules cost less") {
    const llava_sizes c = llava_1_5_13b();
    request req{};
    req.batch = 2;
    const schedule schedules[] = {dense_schedule{}, fastv_schedule{}, dynamic_llava_schedule{},
                                  h2o_schedule{}};
    std::vector<std::vector<length_point>> sweeps;
    for (const schedule& s : schedules) {
      const auto points = cost_vs_output_length(c, s, req, 512, 64);
      REQUIRE(points.size() == 9);
      CHECK(points.back().output_tokens == 512);
      for (std::size_t i = 1; i < points.size(); ++i) {
        CHECK(points[i].total_flops_kv_cache > points[i - 1].total_flops_kv_cache);
        CHECK(points[i].step_flops_kv_cache > points[i - 1].step_flops_kv_cache);
        CHECK(points[i].kv_cache_bytes > points[i - 1].kv_cache_bytes);
        if (supports(s, pass_kind::decode_no_cache)) {
          CHECK(*points[i].total_flops_no_cache > *points[i - 1].total_flops_no_cache);
          CHECK(*points[i].step_flops_no_cache > *points[i - 1].step_flops_no_cache);
        } else {
          CHECK_FALSE(points[i].total_flops_no_cache.has_value());
        }
      }
      CHECK(points.front().total_flops_kv_cache == points.front().prefill_flops);
      sweeps.push_back(points);
    }
    // The sweep's running sums and bytes agree with single traces.
    const trace step0 = schedule_trace(c, schedules[2], req, pass_kind::decode_kv_cache, 0);
    CHECK(sweeps[2][0].step_flops_kv_cache == exact_flops(c, step0).total());
    const trace step63 = schedule_trace(c, schedules[2], req, pass_kind::decode_kv_cache, 63);
    CHECK(sweeps[2][1].kv_cache_bytes == kv_cache_bytes(c, step63));
    // Order at 512 tokens: Dynamic-LLaVA < FastV < dense, for compute without cache and memory.
    const auto& dense = sweeps[0].back();
    const auto& fastv = sweeps[1].back();
    const auto& dyn = sweeps[2].back();
    CHECK(*dyn.total_flops_no_cache < *fastv.total_flops_no_cache);
    CHECK(*fastv.total_flops_no_cache < *dense.total_flops_no_cache);
    CHECK(dyn.kv_cache_bytes < fastv.kv_cache_bytes);
    CHECK(fastv.kv_cache_bytes < dense.kv_cache_bytes);
    CHECK(sweeps[3].back().kv_cache_bytes < dense.kv_cache_bytes);

    CHECK(cost_vs_output_length(c, schedules[0], req, 0, 64).size() == 1);
    CHECK(cost_vs_output_length(c, schedules[0], req, 100, 64).size() == 2);
    CHECK_THROWS_WITH_AS((void)cost_vs_output_length(c, schedules[0], req, 10, 0),
                         doctest::Contains("stride must be > 0, got 0"), dynllava::error);
    CHECK_THROWS_AS((void)cost_vs_output_length(c, schedules[0], req, -1, 1), dynllava::error);
  }

  TEST_CASE("cost: invalid schedules and requests are errors with the expected range") {
    const llava_sizes c = llava_1_5_7b();
    const request req{};
    dynamic_llava_schedule d{};
    d.vision_keep = 1.5;
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, d, req, pass_kind::prefill),
                         doctest::Contains("dynamic-llava: vision_keep must be in [0, 1], got 1.5"),
                         dynllava::error);
    d.vision_keep = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS((void)schedule_trace(c, d, req, pass_kind::prefill), dynllava::error);
    d = {};
    d.sparse_layer = 33;
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, d, req, pass_kind::prefill),
                         doctest::Contains("sparse_layer must be in [0, 32], got 33"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, fastv_schedule{-1, 0.25}, req, pass_kind::prefill),
                         doctest::Contains("fastv: layer must be in [0, 32], got -1"),
                         dynllava::error);
    CHECK_THROWS_WITH_AS(
        (void)schedule_trace(c, h2o_schedule{0.5, -3, 10}, req, pass_kind::prefill),
        doctest::Contains("h2o: recent must be >= 0, got -3"), dynllava::error);
    CHECK_THROWS_WITH_AS(
        (void)schedule_trace(c, dense_schedule{}, req, pass_kind::decode_kv_cache, -1),
        doctest::Contains("step must be >= 0, got -1"), dynllava::error);
    request bad = req;
    bad.batch = 0;
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, dense_schedule{}, bad, pass_kind::prefill),
                         doctest::Contains("batch must be > 0, got 0"), dynllava::error);
    bad = request{0, 0, 0, 1};
    CHECK_THROWS_WITH_AS((void)schedule_trace(c, dense_schedule{}, bad, pass_kind::prefill),
                         doctest::Contains("at least one token"), dynllava::error);

    // Edge: sparse layer == layers means no sparse layer and no predictor work.
    d = {};
    d.sparse_layer = 32;
    const trace t = schedule_trace(c, d, req, pass_kind::prefill);
    CHECK(t.layers == schedule_trace(c, dense_schedule{}, req, pass_kind::prefill).layers);
    CHECK(t.image_tokens_scored == 0);
    CHECK(schedule_name(d) == "dynamic-llava");
    CHECK(to_string(pass_kind::decode_kv_cache) == "decode_kv_cache");
  }
}

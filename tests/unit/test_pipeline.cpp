// SPDX-License-Identifier: Apache-2.0
/// The METHOD.md 4a invariants on a small random LLaMA decoder with random predictors.
#include <dynllava/cost/exact_flops.hpp>
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/schedule_trace.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>

#include "support/pipeline_world.hpp"

#include <set>

using namespace dynllava;
using namespace dynllava::test;

TEST_SUITE("cpu") {
  TEST_CASE("pipeline: decode without KV cache == decode with KV cache (argmax rule)") {
    const auto& w = the_world();
    const sparsifier_options opts{};
    auto cache = make_cache(w, 2);
    kv_session session(w.model, cache, online_gate_policy{opts.sparse_layer}, &w.image, &w.output,
                       opts);
    const auto in = w.input({0, 1});
    std::vector<float> logits = session.prefill(in.view(w.lc.hidden), in.table());
    CHECK(session.image_kept().indptr ==
          std::vector<index_t>{0, 4, 6});  // floor(20*.2), floor(10*.2)
    {
      const auto nc = decode_without_cache(w.model, &w.image, &w.output, in.view(w.lc.hidden),
                                           in.table(), opts);
      CHECK(max_abs_diff(nc, logits) < 1e-5);
    }
    std::vector<std::vector<std::int32_t>> generated(2);
    for (int step = 0; step < 8; ++step) {
      const auto next = greedy_tokens(logits, w.lc.vocab);
      for (std::size_t b = 0; b < 2; ++b) generated[b].push_back(next[b]);
      logits = session.decode(make_host_span(next));
      const auto full = w.input({0, 1}, generated);
      host_selection kept;
      const auto nc = decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden),
                                           full.table(), opts, nullptr, &kept);
      CAPTURE(step);
      CHECK(max_abs_diff(nc, logits) < 1e-5);
      // the kept outputs of the no-cache step are exactly the KV mode's earlier keep decisions
      for (std::size_t b = 0; b < 2; ++b) {
        std::vector<index_t> from_kv;
        for (int s = 0; s < step; ++s) {
          if (session.decisions()[static_cast<std::size_t>(s) * 2 + b]) from_kv.push_back(s);
        }
        CHECK(std::vector<index_t>(kept.positions.begin() + kept.indptr[b],
                                   kept.positions.begin() + kept.indptr[b + 1]) == from_kv);
      }
    }
    const auto decisions = session.decisions();
    const auto kept_count = std::count(decisions.begin(), decisions.end(), 1);
    MESSAGE("output tokens kept by the gate: " << kept_count << " of " << decisions.size());
    CHECK(kept_count > 0);                                              // the gate keeps some
    CHECK(kept_count < static_cast<std::ptrdiff_t>(decisions.size()));  // and drops some
    CHECK(session.stats().output_tokens == 16);
  }

  TEST_CASE("pipeline: keep-all equals the dense model exactly") {
    const auto& w = the_world();
    sparsifier_options dense_opts;
    dense_opts.prune_images = false;
    dense_opts.gate_outputs = false;
    sparsifier_options open_opts;
    open_opts.vision_keep_ratio = 1.0;
    open_opts.gate_outputs = false;
    auto c1 = make_cache(w, 2), c2 = make_cache(w, 2);
    kv_session dense(w.model, c1, full_cache_policy{}, &w.image, &w.output, dense_opts);
    kv_session open(w.model, c2, online_gate_policy{2}, &w.image, &w.output, open_opts);
    const auto in = w.input({0, 1});
    auto a = dense.prefill(in.view(w.lc.hidden), in.table());
    auto b = open.prefill(in.view(w.lc.hidden), in.table());
    CHECK(a == b);
    for (int step = 0; step < 5; ++step) {
      const auto next = greedy_tokens(a, w.lc.vocab);
      a = dense.decode(make_host_span(next));
      b = open.decode(make_host_span(next));
      CHECK(a == b);
    }
    CHECK(bytes_held(c1) == bytes_held(c2));
  }

  TEST_CASE("pipeline: a ragged batch gives each sequence what it gets alone") {
    const auto& w = the_world();
    const sparsifier_options opts{};
    auto cb = make_cache(w, 2);
    kv_session batch(w.model, cb, online_gate_policy{2}, &w.image, &w.output, opts);
    const auto in = w.input({0, 1});
    auto lb = batch.prefill(in.view(w.lc.hidden), in.table());
    std::vector<std::vector<float>> la(2);
    std::vector<paged_kv_cache> caches;
    caches.push_back(make_cache(w, 1));
    caches.push_back(make_cache(w, 1));
    std::vector<kv_session<llama_model, paged_kv_cache, online_gate_policy, image_predictor,
                           output_predictor>>
        alone;
    for (std::size_t b = 0; b < 2; ++b) {
      alone.emplace_back(w.model, caches[b], online_gate_policy{2}, &w.image, &w.output, opts);
      const auto one = w.input({b});
      la[b] = alone[b].prefill(one.view(w.lc.hidden), one.table());
    }
    const auto V = static_cast<std::ptrdiff_t>(w.lc.vocab);
    for (int step = 0; step < 4; ++step) {
      for (std::size_t b = 0; b < 2; ++b) {
        CHECK(std::equal(la[b].begin(), la[b].end(),
                         lb.begin() + static_cast<std::ptrdiff_t>(b) * V));
      }
      const auto next = greedy_tokens(lb, w.lc.vocab);
      lb = batch.decode(make_host_span(next));
      for (std::size_t b = 0; b < 2; ++b) {
        const std::vector<std::int32_t> t{next[b]};
        la[b] = alone[b].decode(make_host_span(t));
      }
    }
  }

  TEST_CASE("pipeline: caches hold every token below the sparse layer, only kept ones above") {
    const auto& w = the_world();
    auto cache = make_cache(w, 2);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const auto in = w.input({0, 1});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    for (int step = 0; step < 6; ++step)
      logits = session.decode(make_host_span(greedy_tokens(logits, w.lc.vocab)));
    const std::vector<index_t> prompt_len{27, 15}, n_img{20, 10};
    for (std::size_t b = 0; b < 2; ++b) {
      std::set<index_t> kept_positions;  // original positions that layers >= 2 may hold
      for (index_t p = 0; p < prompt_len[b]; ++p) {
        if (p < 3 || p >= 3 + n_img[b]) kept_positions.insert(p);
      }
      for (index_t i = session.image_kept().indptr[b]; i < session.image_kept().indptr[b + 1];
           ++i) {
        kept_positions.insert(3 + session.image_kept().positions[static_cast<std::size_t>(i)]);
      }
      for (int s = 0; s < 6; ++s) {
        if (session.decisions()[static_cast<std::size_t>(s) * 2 + b])
          kept_positions.insert(prompt_len[b] + s);
      }
      for (index_t l = 0; l < w.lc.layers; ++l) {
        std::vector<index_t> held;
        for (index_t i = 0; i < cache.length(l, b); ++i) held.push_back(cache.position(l, b, i));
        CAPTURE(l);
        if (l < 2) {
          CHECK(held.size() == static_cast<std::size_t>(prompt_len[b] + 6));
          for (std::size_t i = 0; i < held.size(); ++i) CHECK(held[i] == static_cast<index_t>(i));
        } else {
          CHECK(held == std::vector<index_t>(kept_positions.begin(), kept_positions.end()));
        }
      }
    }
    // run statistics: rows computed per layer
    const auto& st = session.stats();
    CHECK(st.rows_per_layer[0] == 27 + 15 + 12);
    CHECK(st.rows_per_layer[3] == (27 - 20 + 4) + (15 - 10 + 2) + 12);
  }

  TEST_CASE("pipeline: bad input is a clear error") {
    const auto& w = the_world();
    auto cache = make_cache(w, 2);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    auto in = w.input({0, 1});
    in.segs[2].kind = K::image;  // prompt 0 now ends with an image token
    CHECK_THROWS_WITH_AS(session.prefill(in.view(w.lc.hidden), in.table()),
                         doctest::Contains("must be non-empty and end with text"), error);
    const std::vector<std::int32_t> one{1};
    CHECK_THROWS_WITH_AS(session.decode(make_host_span(one)),
                         doctest::Contains("one token per sequence (2), got 1"), error);
    auto small = paged_kv_cache({2, 2, 32, 4, 10});
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, small, online_gate_policy{2}, &w.image, &w.output, {})),
        doctest::Contains("does not fit the model"), error);
    // a null predictor where the options use it
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, online_gate_policy{2}, nullptr, &w.output, {})),
        doctest::Contains(
            "prune_images with vision_rule::predictor needs an image predictor, got null"),
        error);
    CHECK_THROWS_WITH_AS((kv_session(w.model, cache, online_gate_policy{2}, &w.image, nullptr, {})),
                         doctest::Contains("gate_outputs needs an output predictor, got null"),
                         error);
    CHECK_THROWS_WITH_AS(
        decode_without_cache(w.model, &w.image, nullptr, in.view(w.lc.hidden), in.table(), {}),
        doctest::Contains("decode_without_cache: gate_outputs needs an output predictor"), error);
    // the policy's gate layer and the options' sparse layer disagree
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, online_gate_policy{3}, &w.image, &w.output, {})),
        doctest::Contains(
            "gate_outputs is on, but the policy caches gated-out tokens in layer 2 (at or above "
            "sparse_layer 2); use online_gate_policy{2}"),
        error);
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, online_gate_policy{100}, &w.image, &w.output, {})),
        doctest::Contains("gate_outputs is on, but the policy caches gated-out tokens in layer 2"),
        error);
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, full_cache_policy{}, &w.image, &w.output, {})),
        doctest::Contains("gate_outputs = false for a policy that ignores the gate"), error);
    // bad policy settings are caught before anything is cached
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, h2o_policy{2.0}, nullptr, nullptr, dense_options())),
        doctest::Contains("h2o_policy: ratio must be in [0, 1], got 2"), error);
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, streaming_policy{-1, 4}, nullptr, nullptr, dense_options())),
        doctest::Contains("streaming_policy: sinks (-1) and window (4) must be >= 0"), error);
    CHECK(held_tokens(cache, 0) == 0);
    // generated tokens go through decode(), not a prompt
    auto with_output = w.input({0, 1}, {{1}, {2}});
    CHECK_THROWS_WITH_AS(session.prefill(with_output.view(w.lc.hidden), with_output.table()),
                         doctest::Contains("generated tokens go through decode()"), error);
    // a user segment after the model's output must start a new turn
    auto unlabelled = w.input({0, 1}, {{1}, {2}});
    unlabelled.segs.push_back({K::instruction, unlabelled.segs.back().end(), 1, 0});
    unlabelled.seg_indptr.back() += 1;
    unlabelled.rows.insert(unlabelled.rows.end(), w.lc.hidden, 0.0f);
    unlabelled.indptr.back() += 1;
    CHECK_THROWS_WITH_AS(
        decode_without_cache(w.model, &w.image, &w.output, unlabelled.view(w.lc.hidden),
                             unlabelled.table(), {}),
        doctest::Contains(
            "follows the model's output, so it starts a new turn: its turn must be > 0, got 0"),
        error);
    // the model checks the cache it is given
    auto narrow = paged_kv_cache({4, 2, 8, 4, 10});
    std::vector<float> h(in.rows.begin(), in.rows.end()), k(h.size()), v(h.size());
    std::vector<index_t> pos(h.size() / 32, 0);
    CHECK_THROWS_WITH_AS(
        w.model.layer(0, {make_host_span(in.indptr), make_host_span(h), 32},
                      make_host_span(std::as_const(pos)), &narrow, make_host_span(k),
                      make_host_span(v)),
        doctest::Contains("must hold the rows' 2 sequences, layer 0 and width H = 32"), error);
    auto shallow = paged_kv_cache({2, 2, 32, 4, 10});
    CHECK_THROWS_WITH_AS(w.model.layer(3, {make_host_span(in.indptr), make_host_span(h), 32},
                                       make_host_span(std::as_const(pos)), &shallow,
                                       make_host_span(k), make_host_span(v)),
                         doctest::Contains("(2 sequences, 2 layers, width 32) must hold"), error);
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, online_gate_policy{1}, &w.image, &w.output, {})),
        doctest::Contains("layer 1 is below sparse_layer 2 and must cache every token"), error);
    // rows and segments that agree in total but not per sequence
    const auto good = w.input({0, 1});
    auto merged = good;
    merged.indptr = {0, good.indptr.back()};
    merged.seg_indptr = {0, good.seg_indptr.back()};
    CHECK_THROWS_WITH_AS(decode_without_cache(w.model, &w.image, &w.output,
                                              merged.view(w.lc.hidden), good.table(), {}),
                         doctest::Contains("rows hold 1 sequences, the segments 2"), error);
    auto swapped = good;
    swapped.indptr = {0, 15, good.indptr.back()};
    CHECK_THROWS_WITH_AS(decode_without_cache(w.model, &w.image, &w.output,
                                              swapped.view(w.lc.hidden), good.table(), {}),
                         doctest::Contains("sequence 0 has 15 rows, its segments 27"), error);
    // weights that do not fit the config
    auto bad = random_llama_weights(w.lc, 1);
    bad.layers[2].w_up.weight = nn::stored_matrix(std::vector<float>(63 * 32), 63, 32);
    CHECK_THROWS_WITH_AS(llama_model(w.lc, std::move(bad)),
                         doctest::Contains("model.layers.2.mlp.up_proj.weight must be [64, 32] "
                                           "([64, 32] as a matrix), got [63, 32]"),
                         error);
    auto bad_head = random_llama_weights(w.lc, 1);
    bad_head.lm_head.out = 49;
    CHECK_THROWS_WITH_AS(llama_model(w.lc, std::move(bad_head)),
                         doctest::Contains("lm_head must be"), error);
  }
}

TEST_SUITE("cpu") {
  TEST_CASE(
      "pipeline: what it kept and held equals what the cost model predicts for the same "
      "decisions") {
    const auto& w = the_world();
    auto cache = make_cache(w, 1);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    trace_recorder session_work;
    session.observe(&session_work);
    const auto in = w.input({0});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    std::vector<std::int32_t> generated;
    for (int step = 0; step < 8; ++step) {
      const auto next = greedy_tokens(logits, w.lc.vocab);
      generated.push_back(next[0]);
      logits = session.decode(make_host_span(next));
    }
    const cost::llava_sizes cc = cost_config_of(w);
    const cost::request req{3, 20, 4, 1};
    cost::dynamic_llava_schedule d;
    d.sparse_layer = 2;
    d.vision_keep = 0.2;
    d.output_decisions = session.decisions();
    const auto& traces = session_work.traces();
    REQUIRE(traces.size() == 9);
    CHECK(traces[0] == cost::schedule_trace(cc, d, req, cost::pass_kind::prefill));
    for (std::int64_t t = 0; t < 8; ++t) {
      CAPTURE(t);
      CHECK(traces[static_cast<std::size_t>(t + 1)] ==
            cost::schedule_trace(cc, d, req, cost::pass_kind::decode_kv_cache, t));
    }
    // the KV bytes actually held equal the cost model's bytes for the last trace
    CHECK(static_cast<std::int64_t>(bytes_held(cache)) == cost::kv_cache_bytes(cc, traces.back()));
    // decode without KV cache: same decisions, each step's work is the model's no-cache step (the
    // image predictor ran once, in the prompt's pass, and its selection is reused)
    no_cache_session nc(w.model, 1, &w.image, &w.output, {});
    const auto prompt = w.input({0});
    trace_recorder nc_work;
    nc.observe(&nc_work);
    nc.prefill(prompt.view(w.lc.hidden), prompt.table());
    // the prompt's pass is the prefill's work with nothing cached
    auto prompt_pass = cost::schedule_trace(cc, d, req, cost::pass_kind::prefill);
    for (auto& layer : prompt_pass.layers) layer.kv_tokens = 0;
    REQUIRE(nc_work.traces().size() == 1);
    CHECK(nc_work.traces()[0] == prompt_pass);
    for (std::int64_t t = 0; t < 8; ++t) {
      CAPTURE(t);
      const std::int32_t token = generated[static_cast<std::size_t>(t)];
      nc.decode(host_span<const std::int32_t>(&token, 1));
      REQUIRE(nc_work.traces().size() == static_cast<std::size_t>(t + 2));
      CHECK(nc_work.traces().back() ==
            cost::schedule_trace(cc, d, req, cost::pass_kind::decode_no_cache, t));
    }
    // the stateless step ranks the image again: the same step plus one image-predictor pass
    const auto full = w.input({0}, {generated});
    trace_recorder once;
    decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(), {},
                         nullptr, nullptr, &once);
    auto expected = cost::schedule_trace(cc, d, req, cost::pass_kind::decode_no_cache, 7);
    expected.image_tokens_scored = 20;
    expected.image_attention_pairs = 20 * 20;
    CHECK(once.traces().at(0) == expected);
  }
}

TEST_SUITE("cpu") {
  TEST_CASE(
      "pipeline: a new user turn is cached in full and never pruned; KV == no-cache across turns") {
    const auto& w = the_world();
    auto cache = make_cache(w, 1);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const auto in = w.input({0});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    std::vector<std::int32_t> turn1;
    for (int s = 0; s < 3; ++s) {
      turn1.push_back(greedy_tokens(logits, w.lc.vocab)[0]);
      logits = session.decode(host_span<const std::int32_t>(&turn1.back(), 1));
    }
    // turn 2: four instruction tokens, then two generated tokens
    const std::vector<std::int32_t> question{7, 8, 9, 10};
    const auto H = static_cast<std::size_t>(w.lc.hidden);
    std::vector<float> q_rows(question.size() * H);
    w.model.embed(make_host_span(question), make_host_span(q_rows));
    const std::vector<index_t> q_indptr{0, 4}, q_seg_indptr{0, 1};
    const std::vector<segment> q_seg{{K::instruction, 0, 4, 1}};
    const index_t held_before = cache.length(3, 0);
    logits = session.prefill(
        {make_host_span(q_indptr), make_host_span(std::as_const(q_rows)), w.lc.hidden},
        {make_host_span(q_seg_indptr), make_host_span(q_seg)});
    for (index_t l = 0; l < w.lc.layers; ++l) {  // every layer caches the whole new turn
      CHECK(cache.position(l, 0, cache.length(l, 0) - 1) == 27 + 3 + 3);
    }
    CHECK(cache.length(3, 0) == held_before + 4);
    std::vector<std::int32_t> turn2;
    for (int s = 0; s < 2; ++s) {
      turn2.push_back(greedy_tokens(logits, w.lc.vocab)[0]);
      logits = session.decode(host_span<const std::int32_t>(&turn2.back(), 1));
    }
    // the same conversation recomputed without cache
    auto full = w.input({0}, {turn1});
    std::vector<std::int32_t> rest = question;
    rest.insert(rest.end(), turn2.begin(), turn2.end());
    std::vector<float> e(rest.size() * H);
    w.model.embed(make_host_span(std::as_const(rest)), make_host_span(e));
    full.rows.insert(full.rows.end(), e.begin(), e.end());
    const index_t len = full.indptr.back();
    full.segs.push_back({K::instruction, len, 4, 1});
    full.segs.push_back({K::output, len + 4, 2, 1});
    full.seg_indptr.back() = static_cast<index_t>(full.segs.size());
    full.indptr.back() = len + 6;
    host_selection kept;
    const auto nc = decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden),
                                         full.table(), {}, nullptr, &kept);
    CHECK(max_abs_diff(nc, logits) < 1e-5);
    std::vector<index_t> from_kv;
    for (std::size_t s = 0; s + 1 < session.decisions().size(); ++s) {
      if (session.decisions()[s]) from_kv.push_back(static_cast<index_t>(s));
    }
    CHECK(kept.positions == from_kv);
  }
}

namespace {

/// A decoder that offers exactly what the `decoder` concept asks and nothing more (no config(),
/// no heads(), no probes): it forwards to the reference model.
struct bare_decoder {
  const llama_model& m;
  index_t layers() const { return m.layers(); }
  index_t hidden() const { return m.hidden(); }
  index_t vocab() const { return m.vocab(); }
  void embed(host_t, host_span<const std::int32_t> t, host_span<float> out) const {
    m.embed(t, out);
  }
  template <host_kv_storage C>
  void layer(host_t, index_t l, host_ragged_rows<float> rows, host_span<const index_t> pos,
             const C* cache, host_span<float> k, host_span<float> v) const {
    m.layer(l, rows, pos, cache, k, v);
  }
  void logits(host_t, host_span<const float> rows, host_span<float> out) const {
    m.logits(rows, out);
  }
};
static_assert(decoder<bare_decoder, host_t, paged_kv_cache> &&
              !probing_decoder<bare_decoder, host_t, paged_kv_cache>);

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE(
      "pipeline: any model of the decoder concept drives both modes (a bare one gives the "
      "reference's logits)") {
    const auto& w = the_world();
    const bare_decoder bare{w.model};
    auto c1 = make_cache(w, 2), c2 = make_cache(w, 2);
    kv_session ref(w.model, c1, online_gate_policy{2}, &w.image, &w.output, {});
    kv_session mine(bare, c2, online_gate_policy{2}, &w.image, &w.output, {});
    const auto in = w.input({0, 1});
    auto a = ref.prefill(in.view(w.lc.hidden), in.table());
    CHECK(mine.prefill(in.view(w.lc.hidden), in.table()) == a);
    for (int step = 0; step < 3; ++step) {
      const auto next = greedy_tokens(a, w.lc.vocab);
      a = ref.decode(make_host_span(next));
      CHECK(mine.decode(make_host_span(next)) == a);
    }
    CHECK(decode_without_cache(bare, &w.image, &w.output, in.view(w.lc.hidden), in.table(), {}) ==
          decode_without_cache(w.model, &w.image, &w.output, in.view(w.lc.hidden), in.table(), {}));
    // a model that takes another KV type names it
    CHECK(decode_without_cache<bare_decoder, paged_kv_cache>(
              bare, &w.image, &w.output, in.view(w.lc.hidden), in.table(), {}) ==
          decode_without_cache(w.model, &w.image, &w.output, in.view(w.lc.hidden), in.table(), {}));
    sparsifier_options fastv;
    fastv.vision = vision_rule::fastv;
    fastv.sparse_layer = 3;
    fastv.gate_outputs = false;
    auto c3 = make_cache(w, 2);
    CHECK_THROWS_WITH_AS((kv_session(bare, c3, full_cache_policy{}, nullptr, nullptr, fastv)),
                         doctest::Contains("vision_rule::fastv needs a probing_decoder"), error);
  }

  TEST_CASE("pipeline: a gate that keeps every token equals the dense model exactly") {
    const auto& w = the_world();
    auto wts = random_output_predictor_weights(w.pc, 3);
    wts.head[3].bias[0] += 1e4f;  // logit0 >> logit1: keep
    const output_predictor keep_all(w.pc, std::move(wts));
    sparsifier_options open;
    open.vision_keep_ratio = 1.0;
    auto c1 = make_cache(w, 2), c2 = make_cache(w, 2);
    kv_session dense(w.model, c1, full_cache_policy{}, nullptr, nullptr, dense_options());
    kv_session gated(w.model, c2, online_gate_policy{2}, &w.image, &keep_all, open);
    trace_recorder gated_work;
    gated.observe(&gated_work);
    const auto in = w.input({0, 1});
    auto a = dense.prefill(in.view(w.lc.hidden), in.table());
    CHECK(gated.prefill(in.view(w.lc.hidden), in.table()) == a);
    std::vector<std::vector<std::int32_t>> generated(2);
    for (int step = 0; step < 4; ++step) {
      const auto next = greedy_tokens(a, w.lc.vocab);
      for (std::size_t b = 0; b < 2; ++b) generated[b].push_back(next[b]);
      a = dense.decode(make_host_span(next));
      CHECK(gated.decode(make_host_span(next)) == a);
    }
    CHECK(std::count(gated.decisions().begin(), gated.decisions().end(), 1) == 8);
    CHECK(gated_work.traces()[1].output_tokens_scored == 2);  // the gate ran and kept everything
  }
}

TEST_SUITE("cpu") {
  TEST_CASE(
      "pipeline: an image in a later turn is ranked on its own, with and without KV cache alike") {
    const auto& w = the_world();
    const auto H = static_cast<std::size_t>(w.lc.hidden);
    auto cache = make_cache(w, 1);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const auto in = w.input({0});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    std::vector<std::int32_t> turn1;
    for (int s = 0; s < 2; ++s) {
      turn1.push_back(greedy_tokens(logits, w.lc.vocab)[0]);
      logits = session.decode(host_span<const std::int32_t>(&turn1.back(), 1));
    }
    // turn 2: [instruction 2 | image 10 (the second prompt's image rows) | instruction 2]
    const std::vector<std::int32_t> before{7, 8}, after{9, 10};
    std::vector<float> t2(2 * H);
    w.model.embed(make_host_span(before), make_host_span(t2));
    const auto& img = w.prompt_rows[1];
    t2.insert(t2.end(), img.begin() + static_cast<std::ptrdiff_t>(3 * H),
              img.begin() + static_cast<std::ptrdiff_t>(13 * H));
    std::vector<float> e(2 * H);
    w.model.embed(make_host_span(after), make_host_span(e));
    t2.insert(t2.end(), e.begin(), e.end());
    const std::vector<index_t> t2_indptr{0, 14}, t2_seg_indptr{0, 3};
    const std::vector<segment> t2_seg{
        {K::instruction, 0, 2, 1}, {K::image, 2, 10, 1}, {K::instruction, 12, 2, 1}};
    logits =
        session.prefill({make_host_span(t2_indptr), make_host_span(std::as_const(t2)), w.lc.hidden},
                        {make_host_span(t2_seg_indptr), make_host_span(t2_seg)});
    CHECK(session.image_kept().positions.size() == 2);  // floor(10 * 0.2) of this turn's image
    std::vector<std::int32_t> turn2;
    for (int s = 0; s < 2; ++s) {
      turn2.push_back(greedy_tokens(logits, w.lc.vocab)[0]);
      logits = session.decode(host_span<const std::int32_t>(&turn2.back(), 1));
    }
    // the same conversation without cache: both images in one context
    auto full = w.input({0}, {turn1});
    index_t len = full.indptr.back();
    full.rows.insert(full.rows.end(), t2.begin(), t2.end());
    for (const segment& s : t2_seg) full.segs.push_back({s.kind, len + s.begin, s.length, 1});
    len += 14;
    std::vector<float> o2(turn2.size() * H);
    w.model.embed(make_host_span(std::as_const(turn2)), make_host_span(o2));
    full.rows.insert(full.rows.end(), o2.begin(), o2.end());
    full.segs.push_back({K::output, len, 2, 1});
    full.seg_indptr.back() = static_cast<index_t>(full.segs.size());
    full.indptr.back() = len + 2;
    run_stats st;
    const auto nc = decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden),
                                         full.table(), {}, &st);
    CHECK(st.image_tokens == 30);
    CHECK(st.image_kept == 4 + 2);  // each turn's image keeps its own 20%
    CHECK(max_abs_diff(nc, logits) < 1e-5);
  }

  TEST_CASE(
      "pipeline: the released rule keeps each sequence's top-k by raw logit0, k the batch max of "
      "argmax keeps") {
    const auto& w = the_world();
    const auto H = static_cast<std::size_t>(w.lc.hidden);
    const auto full = w.input({0, 1}, {{1, 2, 3, 4, 5, 6, 7}, {8, 9, 10}});
    // by hand: layers 0 and 1 over everything, then the output predictor on each sequence's
    // generated tokens but the newest
    std::vector<float> h = full.rows, k(h.size()), v(h.size());
    std::vector<index_t> pos(h.size() / H);
    for (std::size_t b = 0; b < 2; ++b) {
      for (index_t i = full.indptr[b]; i < full.indptr[b + 1]; ++i)
        pos[static_cast<std::size_t>(i)] = i - full.indptr[b];
    }
    const paged_kv_cache* none = nullptr;
    for (index_t l = 0; l < 2; ++l) {
      w.model.layer(l, {make_host_span(full.indptr), make_host_span(h), w.lc.hidden},
                    make_host_span(std::as_const(pos)), none, make_host_span(k), make_host_span(v));
    }
    const std::vector<index_t> first{27, full.indptr[1] + 15}, count{6, 2}, cand_indptr{0, 6, 8};
    std::vector<float> x;
    for (std::size_t b = 0; b < 2; ++b) {
      x.insert(x.end(),
               h.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(first[b]) * H),
               h.begin() +
                   static_cast<std::ptrdiff_t>(static_cast<std::size_t>(first[b] + count[b]) * H));
    }
    std::vector<float> lg(16);
    w.output.logits(host,
                    {make_host_span(cand_indptr), make_host_span(std::as_const(x)), w.lc.hidden},
                    make_host_span(lg));
    std::vector<std::vector<index_t>> argmax_set(2), released_set(2);
    index_t kmax = 0;
    for (std::size_t b = 0; b < 2; ++b) {
      std::vector<std::pair<float, index_t>> by_logit0;
      for (index_t i = 0; i < count[b]; ++i) {
        const auto r = static_cast<std::size_t>(cand_indptr[b] + i);
        if (lg[2 * r] > lg[2 * r + 1]) argmax_set[b].push_back(i);
        by_logit0.push_back({-lg[2 * r], i});  // descending logit0, ties to the earlier token
      }
      kmax = std::max(kmax, static_cast<index_t>(argmax_set[b].size()));
      std::sort(by_logit0.begin(), by_logit0.end());
      for (std::size_t j = 0; j < by_logit0.size(); ++j)
        released_set[b].push_back(by_logit0[j].second);
    }
    for (std::size_t b = 0; b < 2; ++b) {
      released_set[b].resize(static_cast<std::size_t>(std::min(kmax, count[b])));
      std::sort(released_set[b].begin(), released_set[b].end());
    }
    sparsifier_options released;
    released.rule = output_rule::released_batch_max_topk;
    host_selection kept_released, kept_argmax;
    decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(),
                         released, nullptr, &kept_released);
    decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(),
                         sparsifier_options{}, nullptr, &kept_argmax);
    for (std::size_t b = 0; b < 2; ++b) {
      CAPTURE(b);
      const auto row = [b](const host_selection& s) {
        return std::vector<index_t>(s.positions.begin() + s.indptr[b],
                                    s.positions.begin() + s.indptr[b + 1]);
      };
      CHECK(row(kept_argmax) == argmax_set[b]);
      CHECK(row(kept_released) == released_set[b]);
    }
    MESSAGE("argmax keeps " << argmax_set[0].size() << " and " << argmax_set[1].size()
                            << "; the released rule keeps " << released_set[0].size() << " and "
                            << released_set[1].size());
    CHECK(kept_released.positions != kept_argmax.positions);  // on this input the rules differ
  }
}

TEST_SUITE("cpu") {
  TEST_CASE("hooks: shapes that disagree are clear errors") {
    const auto& w = the_world();
    const auto in = w.input({0, 1});
    const std::vector<float> short_hidden(in.rows.begin(), in.rows.end() - 1);
    CHECK_THROWS_WITH_AS(
        cpu::select_images(w.image, make_host_span(short_hidden), in.table(), 0.2),
        doctest::Contains(
            "select_images: hidden must be [rows = 42, H = 32] = 1344 values, got 1343"),
        error);
    CHECK_THROWS_WITH_AS(cpu::select_outputs(w.output, make_host_span(short_hidden), in.table(),
                                             output_rule::per_sequence_argmax),
                         doctest::Contains("select_outputs: hidden must be"), error);
    CHECK_THROWS_WITH_AS(cpu::select_images(w.image, make_host_span(in.rows), in.table(), 1.5),
                         doctest::Contains("must be in [0, 1]"), error);
    const std::vector<index_t> one_seq{0, 42};
    const std::vector<float> q(2 * 32);
    CHECK_THROWS_WITH_AS(
        cpu::select_images_fastv(fastv_scorer{4, 8}, make_host_span(q),
                                 {make_host_span(one_seq), make_host_span(in.rows), 32}, in.table(),
                                 0.25),
        doctest::Contains(
            "keys (42 rows, 1 sequences) must match the segments (42 rows, 2 sequences)"),
        error);
    // the one-call hooks agree with their parts
    host_selection kept;
    const auto ctx = cpu::prune_prefill(w.image, make_host_span(in.rows), in.table(), 0.2, &kept);
    CHECK(kept.positions ==
          cpu::select_images(w.image, make_host_span(in.rows), in.table(), 0.2).positions);
    CHECK(ctx.indptr == std::vector<index_t>{0, 27 - 20 + 4, 27 - 20 + 4 + 15 - 10 + 2});
  }
}

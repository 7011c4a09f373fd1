// SPDX-License-Identifier: Apache-2.0
/// The METHOD.md 4a invariants on a small random LLaMA decoder with random predictors.
#include <dynllava/cost/exact_flops.hpp>
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/schedule_trace.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>

#include "support/pipeline_world.hpp"

#include <set>

using namespace dynllava;
using namespace dynllava::test;

TEST_SUITE("cpu") {
  TEST_CASE("pipeline: decode without KV cache == decode with KV cache (argmax rule)") {
    const auto& w = the_world();
    const sparsifier_options opts{};
    auto cache = make_cache(w, 2);
    kv_session session(w.model, cache, online_gate_policy{opts.sparse_layer}, &w.image, &w.output, opts);
    const auto in = w.input({0, 1});
    std::vector<float> logits = session.prefill(in.view(w.lc.hidden), in.table());
    CHECK(session.image_kept().indptr == std::vector<index_t>{0, 4, 6});  // floor(20*.2), floor(10*.2)
    {
      const auto nc = decode_without_cache(w.model, &w.image, &w.output, in.view(w.lc.hidden), in.table(), opts);
      CHECK(max_abs_diff(nc, logits) < 1e-5);
    }
    std::vector<std::vector<std::int32_t>> generated(2);
    for (int step = 0; step < 8; ++step) {
      const auto next = argmax_tokens(logits, w.lc.vocab);
      for (std::size_t b = 0; b < 2; ++b) generated[b].push_back(next[b]);
      logits = session.decode(make_host_span(next));
      const auto full = w.input({0, 1}, generated);
      host_selection kept;
      const auto nc = decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(),
                                           opts, nullptr, &kept);
      CAPTURE(step);
      CHECK(max_abs_diff(nc, logits) < 1e-5);
      // the kept outputs of the no-cache step are exactly the KV mode's earlier keep decisions
      for (std::size_t b = 0; b < 2; ++b) {
        std::vector<index_t> from_kv;
        for (int s = 0; s < step; ++s) {
          if (session.decisions()[static_cast<std::size_t>(s) * 2 + b]) from_kv.push_back(s);
        }
        CHECK(std::vector<index_t>(kept.positions.begin() + kept.indptr[b], kept.positions.begin() + kept.indptr[b + 1]) ==
              from_kv);
      }
    }
    const auto decisions = session.decisions();
    const auto kept_count = std::count(decisions.begin(), decisions.end(), 1);
    MESSAGE("output tokens kept by the gate: " << kept_count << " of " << decisions.size());
    CHECK(kept_count > 0);                                               // the gate keeps some
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
      const auto next = argmax_tokens(a, w.lc.vocab);
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
    std::vector<kv_session<llama_model, paged_kv_cache, online_gate_policy>> alone;
    for (std::size_t b = 0; b < 2; ++b) {
      alone.emplace_back(w.model, caches[b], online_gate_policy{2}, &w.image, &w.output, opts);
      const auto one = w.input({b});
      la[b] = alone[b].prefill(one.view(w.lc.hidden), one.table());
    }
    const auto V = static_cast<std::ptrdiff_t>(w.lc.vocab);
    for (int step = 0; step < 4; ++step) {
      for (std::size_t b = 0; b < 2; ++b) {
        CHECK(std::equal(la[b].begin(), la[b].end(), lb.begin() + static_cast<std::ptrdiff_t>(b) * V));
      }
      const auto next = argmax_tokens(lb, w.lc.vocab);
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
    for (int step = 0; step < 6; ++step) logits = session.decode(make_host_span(argmax_tokens(logits, w.lc.vocab)));
    const std::vector<index_t> prompt_len{27, 15}, n_img{20, 10};
    for (std::size_t b = 0; b < 2; ++b) {
      std::set<index_t> kept_positions;  // original positions that layers >= 2 may hold
      for (index_t p = 0; p < prompt_len[b]; ++p) {
        if (p < 3 || p >= 3 + n_img[b]) kept_positions.insert(p);
      }
      for (index_t i = session.image_kept().indptr[b]; i < session.image_kept().indptr[b + 1]; ++i) {
        kept_positions.insert(3 + session.image_kept().positions[static_cast<std::size_t>(i)]);
      }
      for (int s = 0; s < 6; ++s) {
        if (session.decisions()[static_cast<std::size_t>(s) * 2 + b]) kept_positions.insert(prompt_len[b] + s);
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

  TEST_CASE("pipeline: the released batch-max top-k rule is available and differs in kind") {
    const auto& w = the_world();
    sparsifier_options released;
    released.rule = output_rule::released_batch_max_topk;
    const auto full = w.input({0, 1}, {{1, 2, 3, 4, 5, 6, 7}, {8, 9, 10}});
    host_selection kept_released, kept_argmax;
    decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(), released, nullptr,
                         &kept_released);
    decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(), sparsifier_options{},
                         nullptr, &kept_argmax);
    index_t kmax = 0;
    for (std::size_t b = 0; b < 2; ++b) kmax = std::max(kmax, kept_argmax.indptr[b + 1] - kept_argmax.indptr[b]);
    CHECK(kept_released.indptr[1] - kept_released.indptr[0] == std::min<index_t>(kmax, 6));
    CHECK(kept_released.indptr[2] - kept_released.indptr[1] == std::min<index_t>(kmax, 2));
  }

  TEST_CASE("pipeline: bad input is a clear error") {
    const auto& w = the_world();
    auto cache = make_cache(w, 2);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    auto in = w.input({0, 1});
    in.segs[2].kind = K::image;  // prompt 0 now ends with an image token
    CHECK_THROWS_WITH_AS(session.prefill(in.view(w.lc.hidden), in.table()), doctest::Contains("must be non-empty and end with text"),
                         error);
    const std::vector<std::int32_t> one{1};
    CHECK_THROWS_WITH_AS(session.decode(make_host_span(one)), doctest::Contains("one token per sequence (2), got 1"), error);
    auto small = paged_kv_cache({2, 2, 32, 4, 10});
    CHECK_THROWS_WITH_AS((kv_session(w.model, small, online_gate_policy{2}, &w.image, &w.output, {})),
                         doctest::Contains("does not fit the model"), error);
  }
}


TEST_SUITE("cpu") {
  TEST_CASE("pipeline: what it kept and held equals what the cost model predicts for the same decisions") {
    const auto& w = the_world();
    auto cache = make_cache(w, 1);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const auto in = w.input({0});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    std::vector<std::int32_t> generated;
    for (int step = 0; step < 8; ++step) {
      const auto next = argmax_tokens(logits, w.lc.vocab);
      generated.push_back(next[0]);
      logits = session.decode(make_host_span(next));
    }
    const cost::llama_config cc = cost_config_of(w);
    const cost::request req{3, 20, 4, 1};
    cost::dynamic_llava_schedule d;
    d.sparse_layer = 2;
    d.vision_keep = 0.2;
    d.output_decisions = session.decisions();
    const auto& traces = session.traces();
    REQUIRE(traces.size() == 9);
    CHECK(traces[0] == cost::schedule_trace(cc, d, req, cost::pass_kind::prefill));
    for (std::int64_t t = 0; t < 8; ++t) {
      CAPTURE(t);
      CHECK(traces[static_cast<std::size_t>(t + 1)] ==
            cost::schedule_trace(cc, d, req, cost::pass_kind::decode_kv_cache, t));
    }
    // the KV bytes actually held equal the cost model's bytes for the last trace
    CHECK(static_cast<std::int64_t>(bytes_held(cache)) == cost::kv_cache_bytes(cc, traces.back()));
    // decode without KV cache at the last step: same decisions, the model's trace again
    const auto full = w.input({0}, {generated});
    cost::trace nc;
    decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(), {}, nullptr, nullptr,
                         &nc);
    CHECK(nc == cost::schedule_trace(cc, d, req, cost::pass_kind::decode_no_cache, 7));
  }
}

TEST_SUITE("cpu") {
  TEST_CASE("pipeline: a new user turn is cached in full and never pruned; KV == no-cache across turns") {
    const auto& w = the_world();
    auto cache = make_cache(w, 1);
    kv_session session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const auto in = w.input({0});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    std::vector<std::int32_t> turn1;
    for (int s = 0; s < 3; ++s) {
      turn1.push_back(argmax_tokens(logits, w.lc.vocab)[0]);
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
    logits = session.prefill({make_host_span(q_indptr), make_host_span(std::as_const(q_rows)), w.lc.hidden},
                             {make_host_span(q_seg_indptr), make_host_span(q_seg)});
    for (index_t l = 0; l < w.lc.layers; ++l) {  // every layer caches the whole new turn
      CHECK(cache.position(l, 0, cache.length(l, 0) - 1) == 27 + 3 + 3);
    }
    CHECK(cache.length(3, 0) == held_before + 4);
    std::vector<std::int32_t> turn2;
    for (int s = 0; s < 2; ++s) {
      turn2.push_back(argmax_tokens(logits, w.lc.vocab)[0]);
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
    const auto nc = decode_without_cache(w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(), {},
                                         nullptr, &kept);
    CHECK(max_abs_diff(nc, logits) < 1e-5);
    std::vector<index_t> from_kv;
    for (std::size_t s = 0; s + 1 < session.decisions().size(); ++s) {
      if (session.decisions()[s]) from_kv.push_back(static_cast<index_t>(s));
    }
    CHECK(kept.positions == from_kv);
  }
}

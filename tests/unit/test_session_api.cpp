// SPDX-License-Identifier: Apache-2.0
// The session API: the generate loop (greedy, sampling, EOS, budget, streaming callback), the
// decision views after each call, and the guards checked before anything changes.
#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>

#include "support/pipeline_world.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

using namespace dynllava;
using namespace dynllava::test;

static_assert(decoding_session<kv_session<llama_model, paged_kv_cache, online_gate_policy,
                                          image_predictor, output_predictor>>);
static_assert(decoding_session<no_cache_session<llama_model, image_predictor, output_predictor>>);

namespace {

/// Counts what a driver reports.
struct counting_observer final : pipeline_observer {
  int calls = 0, image_runs = 0, output_runs = 0, layer_calls = 0;
  index_t image_tokens = 0;
  void begin_call(index_t) override { ++calls; }
  void layer(index_t, host_span<const index_t>, host_span<const index_t>) override {
    ++layer_calls;
  }
  void image_predictor(host_span<const index_t> groups) override {
    ++image_runs;
    image_tokens += groups.empty() ? 0 : groups[groups.size() - 1];
  }
  void output_predictor(std::size_t) override { ++output_runs; }
};

/// `llama_model` behind a decoder that throws from its `call`-th layer call (counted from 0).
struct flaky_decoder {
  const llama_model& m;
  mutable int fail_at = -1;
  mutable int calls = 0;
  index_t layers() const { return m.layers(); }
  index_t hidden() const { return m.hidden(); }
  index_t vocab() const { return m.vocab(); }
  void embed(host_t, host_span<const std::int32_t> t, host_span<float> out) const {
    m.embed(host, t, out);
  }
  void layer(host_t, index_t l, host_ragged_rows<float> rows, host_span<const index_t> pos,
             const paged_kv_cache* cache, host_span<float> k, host_span<float> v) const {
    if (calls++ == fail_at) DYNLLAVA_FAIL("flaky_decoder: engine failure in layer {}", l);
    m.layer(host, l, rows, pos, cache, k, v);
  }
  void logits(host_t, host_span<const float> rows, host_span<float> out) const {
    m.logits(host, rows, out);
  }
};
static_assert(decoder<flaky_decoder, host_t, paged_kv_cache>);

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE(
      "generate: greedy equals a hand-written loop; the callback streams every token in order") {
    const auto& w = the_world();
    const auto in = w.input({0, 1});
    auto c1 = make_cache(w, 2), c2 = make_cache(w, 2);
    kv_session s1(w.model, c1, online_gate_policy{2}, &w.image, &w.output, {});
    kv_session s2(w.model, c2, online_gate_policy{2}, &w.image, &w.output, {});
    std::vector<std::pair<std::size_t, std::int32_t>> streamed;
    const auto g = generate(s1, in.view(w.lc.hidden), in.table(),
                            {.max_new_tokens = 5, .eos = std::nullopt, .sampling = {}},
                            [&](std::size_t b, std::int32_t t) { streamed.emplace_back(b, t); });
    std::vector<std::vector<std::int32_t>> manual(2);
    auto logits = s2.prefill(in.view(w.lc.hidden), in.table());
    for (int step = 0; step < 5; ++step) {
      const auto next = greedy_tokens(logits, w.lc.vocab);
      for (std::size_t b = 0; b < 2; ++b) manual[b].push_back(next[b]);
      if (step < 4) logits = s2.decode(make_host_span(next));
    }
    CHECK(g.tokens == manual);
    CHECK(g.stopped_at_eos == std::vector<std::uint8_t>{0, 0});
    REQUIRE(streamed.size() == 10);
    for (std::size_t i = 0; i < 10; ++i) {
      CHECK(streamed[i].first == i % 2);
      CHECK(streamed[i].second == manual[i % 2][i / 2]);
    }
    // the last chosen tokens are not decoded: 4 steps after the prompt
    CHECK(s1.decisions().size() == 4 * 2);
  }

  TEST_CASE("generate: EOS stops a sequence (EOS included), the other runs to the budget") {
    const auto& w = the_world();
    const auto in = w.input({0, 1});
    auto c0 = make_cache(w, 2);
    kv_session probe(w.model, c0, online_gate_policy{2}, &w.image, &w.output, {});
    const auto free_run = generate(probe, in.view(w.lc.hidden), in.table(),
                                   {.max_new_tokens = 6, .eos = std::nullopt, .sampling = {}});
    // pick sequence 0's third token as EOS, unless sequence 1 generates it earlier
    const std::int32_t eos = free_run.tokens[0][2];
    auto c1 = make_cache(w, 2);
    kv_session s(w.model, c1, online_gate_policy{2}, &w.image, &w.output, {});
    const auto g = generate(s, in.view(w.lc.hidden), in.table(),
                            {.max_new_tokens = 6, .eos = eos, .sampling = {}});
    for (std::size_t b = 0; b < 2; ++b) {
      CAPTURE(b);
      const auto& ref = free_run.tokens[b];
      const auto hit = std::find(ref.begin(), ref.end(), eos);
      if (hit == ref.end()) {
        CHECK(g.tokens[b] == ref);
        CHECK(g.stopped_at_eos[b] == 0);
      } else {
        // identical up to and including the first EOS (a stopped sequence keeps feeding its EOS,
        // which changes nothing that came before)
        CHECK(g.tokens[b] == std::vector<std::int32_t>(ref.begin(), hit + 1));
        CHECK(g.stopped_at_eos[b] == 1);
      }
    }
    CHECK(g.stopped_at_eos[0] == 1);
    // a budget of 0 runs the prompt only
    auto c2 = make_cache(w, 2);
    kv_session z(w.model, c2, online_gate_policy{2}, &w.image, &w.output, {});
    const auto none = generate(z, in.view(w.lc.hidden), in.table(),
                               {.max_new_tokens = 0, .eos = std::nullopt, .sampling = {}});
    CHECK(none.tokens == std::vector<std::vector<std::int32_t>>(2));
    CHECK(z.prefilled());
  }

  TEST_CASE(
      "generate: sampling is reproducible by seed, batch == alone, and differs across seeds") {
    const auto& w = the_world();
    auto run = [&](std::vector<std::size_t> which, std::uint64_t seed, float top_p) {
      const auto in = w.input(which);
      auto cache = make_cache(w, which.size());
      kv_session s(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
      return generate(s, in.view(w.lc.hidden), in.table(),
                      {.max_new_tokens = 8,
                       .eos = std::nullopt,
                       .sampling = {.temperature = 1.5f, .top_p = top_p, .seed = seed}});
    };
    const auto a = run({0, 1}, 7, 0.9f);
    CHECK(a.tokens == run({0, 1}, 7, 0.9f).tokens);
    CHECK(a.tokens[0] == run({0}, 7, 0.9f).tokens[0]);  // sequence 0 draws the same alone
    CHECK(a.tokens != run({0, 1}, 8, 0.9f).tokens);
    // a nucleus of one token is greedy
    const auto in = w.input({0, 1});
    auto cache = make_cache(w, 2);
    kv_session s(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const auto greedy = generate(s, in.view(w.lc.hidden), in.table(),
                                 {.max_new_tokens = 8, .eos = std::nullopt, .sampling = {}});
    CHECK(run({0, 1}, 3, 1e-6f).tokens == greedy.tokens);
  }

  TEST_CASE("token_sampler: greedy ties and NaN, nucleus, frequencies follow the softmax") {
    const std::vector<float> tie{1.0f, 3.0f, 3.0f, NAN};
    CHECK(token_sampler::greedy(make_host_span(tie)) == 1);
    const std::vector<float> nan_first{NAN, -1.0f, 2.0f};
    CHECK(token_sampler::greedy(make_host_span(nan_first)) == 2);
    CHECK(greedy_tokens(std::vector<float>{0, 1, 5, 4, 3, 9}, 3) ==
          std::vector<std::int32_t>{2, 2});
    CHECK_THROWS_WITH_AS(greedy_tokens(std::vector<float>{0, 1, 5, 4}, 3),
                         doctest::Contains("whole rows of vocab = 3"), error);
    // p = softmax([0, log 3]) = [0.25, 0.75]
    token_sampler s({.temperature = 1.0f, .top_p = 1.0f, .seed = 11}, 0);
    const std::vector<float> two{0.0f, std::log(3.0f), NAN};
    int ones = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) ones += s.next(make_host_span(two)) == 1;
    const double sigma = std::sqrt(n * 0.75 * 0.25);
    CHECK(std::abs(ones - 0.75 * n) < 5 * sigma);
    // top_p = 0.7 keeps only the 0.75 token
    token_sampler nucleus({.temperature = 1.0f, .top_p = 0.7f, .seed = 11}, 0);
    for (int i = 0; i < 100; ++i) CHECK(nucleus.next(make_host_span(two)) == 1);
    CHECK_THROWS_WITH_AS((token_sampler({.temperature = -1.0f, .top_p = 1.0f, .seed = 0}, 0)),
                         doctest::Contains("temperature must be finite and >= 0, got -1"), error);
    CHECK_THROWS_WITH_AS((token_sampler({.temperature = 1.0f, .top_p = 0.0f, .seed = 0}, 0)),
                         doctest::Contains("top_p must be in (0, 1], got 0"), error);
    const std::vector<float> none{-INFINITY, NAN};
    CHECK_THROWS_WITH_AS(s.next(make_host_span(none)), doctest::Contains("no finite logit"), error);
  }

  TEST_CASE(
      "decision views: image logits and margins, gate logits and margins, cache lengths and "
      "bytes") {
    const auto& w = the_world();
    const auto in = w.input({0, 1});
    auto cache = make_cache(w, 2);
    kv_session s(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    auto logits = s.prefill(in.view(w.lc.hidden), in.table());
    const auto& img = s.image_decisions();
    REQUIRE(img.indptr == std::vector<index_t>{0, 20, 30});
    REQUIRE(img.logits.size() == 60);
    REQUIRE(img.scores.size() == 30);
    for (std::size_t i = 0; i < 30; ++i)
      CHECK(img.scores[i] == img.logits[2 * i] - img.logits[2 * i + 1]);
    CHECK(img.kept().positions == s.image_kept().positions);
    CHECK(img.kept().indptr == std::vector<index_t>{0, 4, 6});  // floor(20 * 0.2), floor(10 * 0.2)
    // the kept tokens are the top margins of each sequence
    for (std::size_t b = 0; b < 2; ++b) {
      float lowest_kept = INFINITY, highest_dropped = -INFINITY;
      for (index_t i = img.indptr[b]; i < img.indptr[b + 1]; ++i) {
        const auto u = static_cast<std::size_t>(i);
        if (img.keep[u] != 0) {
          lowest_kept = std::min(lowest_kept, img.scores[u]);
        } else {
          highest_dropped = std::max(highest_dropped, img.scores[u]);
        }
      }
      CHECK(lowest_kept >= highest_dropped);
    }
    // the same logits as the image predictor on the image rows after layers 0 and 1, run here
    {
      std::vector<float> h(in.rows);
      std::vector<index_t> pos;
      for (std::size_t b = 0; b < 2; ++b) {
        for (index_t i = 0; i < in.indptr[b + 1] - in.indptr[b]; ++i) pos.push_back(i);
      }
      std::vector<float> k(h.size()), v(h.size());
      const paged_kv_cache* none = nullptr;
      for (index_t l = 0; l < 2; ++l) {
        w.model.layer(l, {make_host_span(in.indptr), make_host_span(h), w.lc.hidden},
                      make_host_span(std::as_const(pos)), none, make_host_span(k),
                      make_host_span(v));
      }
      const auto H = static_cast<std::size_t>(w.lc.hidden);
      std::vector<float> x;
      for (auto [first, n] : {std::pair<std::size_t, std::size_t>{3, 20}, {27 + 3, 10}}) {
        x.insert(x.end(), h.begin() + static_cast<std::ptrdiff_t>(first * H),
                 h.begin() + static_cast<std::ptrdiff_t>((first + n) * H));
      }
      const std::vector<index_t> groups{0, 20, 30};
      std::vector<float> expected(60);
      w.image.logits(host, {make_host_span(groups), make_host_span(std::as_const(x)), w.lc.hidden},
                     make_host_span(expected));
      CHECK(max_abs_diff(img.logits, expected) < 1e-6);
    }
    const std::vector<index_t> lengths_before = s.cache_lengths();
    CHECK(lengths_before.size() == 4 * 2);
    CHECK(lengths_before[0] == 27);          // layer 0, sequence 0: every prompt token
    CHECK(lengths_before[2 * 2 + 0] == 11);  // layer 2, sequence 0: 3 + 4 kept images + 4
    CHECK(s.bytes_held() == bytes_held(cache));
    int kept = 0, dropped = 0;
    for (int step = 0; step < 8; ++step) {
      logits = s.decode(make_host_span(greedy_tokens(logits, w.lc.vocab)));
      const auto& g = s.gate_decisions();
      REQUIRE(g.indptr == std::vector<index_t>{0, 1, 2});
      REQUIRE(g.logits.size() == 4);
      for (std::size_t b = 0; b < 2; ++b) {
        CHECK(g.scores[b] == g.logits[2 * b] - g.logits[2 * b + 1]);
        CHECK((g.keep[b] != 0) == (g.logits[2 * b] > g.logits[2 * b + 1]));
        CHECK(g.keep[b] == s.decisions()[s.decisions().size() - 2 + b]);
        (g.keep[b] ? kept : dropped) += 1;
      }
      const auto lengths = s.cache_lengths();
      for (std::size_t b = 0; b < 2; ++b) {
        CHECK(lengths[b] == cache.length(0, b));
        CHECK(lengths[3 * 2 + b] == cache.length(3, b));
      }
    }
    CHECK(kept > 0);
    CHECK(dropped > 0);
    // the whole history: every step's gate logits, step-major, agreeing with the keep flags
    REQUIRE(s.gate_logits().size() == 8 * 2 * 2);
    REQUIRE(s.decisions().size() == 8 * 2);
    for (std::size_t i = 0; i < 16; ++i) {
      CHECK((s.decisions()[i] != 0) == (s.gate_logits()[2 * i] > s.gate_logits()[2 * i + 1]));
    }
    const auto& last = s.gate_decisions().logits;
    CHECK(std::equal(last.begin(), last.end(), s.gate_logits().end() - 4));
  }

  TEST_CASE("guards: decode before prefill, in both sessions, changes nothing") {
    const auto& w = the_world();
    auto cache = make_cache(w, 1);
    kv_session s(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const std::vector<std::int32_t> t{1};
    CHECK_THROWS_WITH_AS(s.decode(make_host_span(t)),
                         doctest::Contains("kv_session::decode: call prefill() first"), error);
    CHECK(cache.length(0, 0) == 0);
    no_cache_session nc(w.model, 1, &w.image, &w.output, {});
    CHECK_THROWS_WITH_AS(nc.decode(make_host_span(t)),
                         doctest::Contains("no_cache_session::decode: call prefill() first"),
                         error);
    CHECK_FALSE(nc.prefilled());
  }

  TEST_CASE("guards: segments of another batch are refused before anything changes") {
    const auto& w = the_world();
    auto cache = make_cache(w, 2);
    kv_session s(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    const auto one = w.input({0});
    // the rows say two sequences (the second empty), the segments one
    const std::vector<index_t> indptr{0, one.indptr[1], one.indptr[1]};
    CHECK_THROWS_WITH_AS(
        s.prefill({make_host_span(indptr), make_host_span(one.rows), w.lc.hidden}, one.table()),
        doctest::Contains("1 sequences) and the cache (2 sequences)"), error);
    for (index_t l = 0; l < w.lc.layers; ++l) CHECK(held_tokens(cache, l) == 0);
    CHECK_FALSE(s.prefilled());
  }

  TEST_CASE("guards: after a call that failed midway, the session refuses to go on") {
    const auto& w = the_world();
    const auto in = w.input({0});
    // room for the prompt in one layer only: layer 0 is appended, layer 1 runs out of pages
    const index_t pages = (in.indptr[1] + 3) / 4;
    paged_kv_cache cache({w.lc.layers, 1, w.lc.hidden, 4, pages});
    kv_session s(w.model, cache, full_cache_policy{}, nullptr, nullptr,
                 {.prune_images = false, .gate_outputs = false});
    CHECK_THROWS_WITH_AS(s.prefill(in.view(w.lc.hidden), in.table()),
                         doctest::Contains("paged_kv_cache::append: layer 1 needs"), error);
    CHECK(held_tokens(cache, 0) == in.indptr[1]);  // layer 0 took the prompt, layer 1 nothing
    CHECK(held_tokens(cache, 1) == 0);
    const std::vector<std::int32_t> t{1};
    CHECK_THROWS_WITH_AS(s.decode(make_host_span(t)),
                         doctest::Contains("kv_session::decode: an earlier call failed midway"),
                         error);
    CHECK_THROWS_WITH_AS(s.prefill(in.view(w.lc.hidden), in.table()),
                         doctest::Contains("kv_session::prefill: an earlier call failed midway"),
                         error);
    CHECK(held_tokens(cache, 0) == in.indptr[1]);  // nothing appended twice
  }

  TEST_CASE("guards: a call refused by a full cache's first append changes nothing") {
    const auto& w = the_world();
    const auto in = w.input({1});  // 15 rows
    const sparsifier_options dense{.prune_images = false, .gate_outputs = false};
    {  // prefill: the cache is too small for the prompt
      contiguous_kv_cache cache({w.lc.layers, 1, w.lc.hidden, 10});
      kv_session s(w.model, cache, full_cache_policy{}, nullptr, nullptr, dense);
      CHECK_THROWS_WITH_AS(s.prefill(in.view(w.lc.hidden), in.table()),
                           doctest::Contains("holds 0 of 10 tokens and cannot take 15 more"),
                           error);
      CHECK_FALSE(s.prefilled());
      for (index_t l = 0; l < w.lc.layers; ++l) CHECK(held_tokens(cache, l) == 0);
      const std::vector<std::int32_t> t{1};
      CHECK_THROWS_WITH_AS(s.decode(make_host_span(t)),
                           doctest::Contains("kv_session::decode: call prefill() first"), error);
    }
    // decode: room for the prompt and one token; the second step is refused at layer 0
    contiguous_kv_cache cache({w.lc.layers, 1, w.lc.hidden, 16});
    kv_session s(w.model, cache, full_cache_policy{}, nullptr, nullptr, dense);
    s.prefill(in.view(w.lc.hidden), in.table());
    const std::vector<std::int32_t> t{7};
    s.decode(make_host_span(t));
    const auto lengths = s.cache_lengths();
    const auto decisions = s.decisions();
    const auto gate_logits = s.gate_logits();
    const auto stats = s.stats();
    for (int attempt = 0; attempt < 2; ++attempt) {  // the same error again, not "failed midway"
      CHECK_THROWS_WITH_AS(s.decode(make_host_span(t)),
                           doctest::Contains("holds 16 of 16 tokens and cannot take 1 more"),
                           error);
      CHECK(s.cache_lengths() == lengths);
      CHECK(s.decisions() == decisions);
      CHECK(s.gate_logits().size() == gate_logits.size());
      CHECK(s.stats().output_tokens == stats.output_tokens);
      CHECK(s.stats().rows_per_layer == stats.rows_per_layer);
    }
  }

  TEST_CASE("guards: a decoder that throws before the first append leaves either session usable") {
    const auto& w = the_world();
    const auto in = w.input({1});
    const sparsifier_options dense{.prune_images = false, .gate_outputs = false};
    const std::vector<std::int32_t> t{7};
    // references: the same calls on a decoder that never fails
    const flaky_decoder sound{w.model};
    auto ref_cache = make_cache(w, 1);
    kv_session ref(sound, ref_cache, full_cache_policy{}, nullptr, nullptr, dense);
    ref.prefill(in.view(w.lc.hidden), in.table());
    const auto ref_logits = ref.decode(make_host_span(t));
    no_cache_session nc_ref(sound, 1, nullptr, nullptr, dense);
    nc_ref.prefill(in.view(w.lc.hidden), in.table());
    const auto nc_ref_logits = nc_ref.decode(make_host_span(t));

    const flaky_decoder flaky{w.model};
    auto cache = make_cache(w, 1);
    kv_session s(flaky, cache, full_cache_policy{}, nullptr, nullptr, dense);
    s.prefill(in.view(w.lc.hidden), in.table());
    flaky.fail_at = flaky.calls;  // the decode step's first layer
    CHECK_THROWS_WITH_AS(s.decode(make_host_span(t)),
                         doctest::Contains("flaky_decoder: engine failure in layer 0"), error);
    CHECK(s.decisions().empty());
    CHECK(held_tokens(cache, 0) == in.indptr[1]);
    CHECK(s.decode(make_host_span(t)) == ref_logits);  // usable, and as if it had not failed

    no_cache_session nc(flaky, 1, nullptr, nullptr, dense);
    flaky.fail_at = flaky.calls + 1;  // the prompt's second layer
    CHECK_THROWS_WITH_AS(nc.prefill(in.view(w.lc.hidden), in.table()),
                         doctest::Contains("flaky_decoder: engine failure in layer 1"), error);
    CHECK_FALSE(nc.prefilled());
    CHECK(nc.current().rows.empty());
    nc.prefill(in.view(w.lc.hidden), in.table());
    CHECK(nc.current().rows.size() == in.rows.size());
    flaky.fail_at = flaky.calls + 2;  // the decode step, layer 2
    CHECK_THROWS_WITH_AS(nc.decode(make_host_span(t)),
                         doctest::Contains("flaky_decoder: engine failure in layer 2"), error);
    CHECK(nc.current().rows.size() == in.rows.size());  // the token was not kept
    CHECK(nc.current().segments.size() == in.segs.size());
    CHECK(nc.decode(make_host_span(t)) == nc_ref_logits);

    // the stateless step adds to the caller's statistics only when it succeeds
    run_stats stats;
    decode_without_cache(flaky, nullptr, nullptr, in.view(w.lc.hidden), in.table(), dense, &stats);
    const auto before = stats.rows_per_layer;
    REQUIRE(before.size() == static_cast<std::size_t>(w.model.layers()));
    flaky.fail_at = flaky.calls + 2;
    CHECK_THROWS_WITH_AS(decode_without_cache(flaky, nullptr, nullptr, in.view(w.lc.hidden),
                                              in.table(), dense, &stats),
                         doctest::Contains("flaky_decoder: engine failure in layer 2"), error);
    CHECK(stats.rows_per_layer == before);
  }

  TEST_CASE(
      "no-cache session: the image predictor runs once per prompt; logits and decisions equal the "
      "stateless step") {
    const auto& w = the_world();
    const auto in = w.input({0, 1});
    no_cache_session nc(w.model, 2, &w.image, &w.output, {});
    counting_observer seen;
    nc.observe(&seen);
    auto logits = nc.prefill(in.view(w.lc.hidden), in.table());
    CHECK(seen.image_runs == 1);
    std::vector<std::vector<std::int32_t>> generated(2);
    for (int step = 0; step < 5; ++step) {
      const auto next = greedy_tokens(logits, w.lc.vocab);
      for (std::size_t b = 0; b < 2; ++b) generated[b].push_back(next[b]);
      logits = nc.decode(make_host_span(next));
      const auto full = w.input({0, 1}, generated);
      host_selection kept;
      const auto stateless = decode_without_cache(
          w.model, &w.image, &w.output, full.view(w.lc.hidden), full.table(), {}, nullptr, &kept);
      CHECK(logits == stateless);  // same computation, bit for bit
      CHECK(nc.output_decisions().kept().positions == kept.positions);
    }
    CHECK(seen.calls == 6);
    CHECK(seen.image_runs == 1);
    CHECK(seen.output_runs == 6);
    CHECK(seen.layer_calls == 6 * 4);
    CHECK(seen.image_tokens == 30);
    // a new user turn: only its own image is ranked; the earlier decisions stay as they were
    const token_decisions first = nc.image_decisions();
    const auto more = w.input({1, 0});
    nc.prefill(more.view(w.lc.hidden), more.table());
    CHECK(seen.image_runs == 2);
    CHECK(seen.image_tokens == 30 + 30);
    const auto& both = nc.image_decisions();
    REQUIRE(both.indptr == std::vector<index_t>{0, 30, 60});  // both turns' images
    for (std::size_t b = 0; b < 2; ++b) {
      const index_t n_old = first.indptr[b + 1] - first.indptr[b];
      for (index_t i = 0; i < n_old; ++i) {
        CHECK(both.keep[static_cast<std::size_t>(both.indptr[b] + i)] ==
              first.keep[static_cast<std::size_t>(first.indptr[b] + i)]);
        CHECK(both.logits[2 * static_cast<std::size_t>(both.indptr[b] + i)] ==
              first.logits[2 * static_cast<std::size_t>(first.indptr[b] + i)]);
      }
    }
    // the new turn's image gets its own floor(n * 0.2): 4 + 2 in sequence 0, 2 + 4 in 1
    CHECK(both.kept().indptr == std::vector<index_t>{0, 4 + 2, 12});
    // a prompt without images ranks nothing
    const std::vector<segment> text_only{{segment_kind::instruction, 0, 2, 0}};
    std::vector<float> rows(2 * 2 * static_cast<std::size_t>(w.lc.hidden), 0.25f);
    const std::vector<index_t> indptr{0, 2, 4}, seg_indptr{0, 1, 2};
    std::vector<segment> segs{text_only[0], text_only[0]};
    nc.prefill({make_host_span(indptr), make_host_span(rows), w.lc.hidden},
               {make_host_span(seg_indptr), make_host_span(segs)});
    CHECK(seen.image_runs == 2);
    CHECK(nc.image_decisions().keep == both.keep);
  }

  TEST_CASE(
      "guards: prompts ending with an image, token ids outside the vocabulary, a used cache") {
    const auto& w = the_world();
    const auto in = w.input({0});
    // [system 3 | image 20]: the last row would be an image row
    std::vector<float> rows(in.rows.begin(), in.rows.begin() + 23 * w.lc.hidden);
    const std::vector<index_t> indptr{0, 23}, seg_indptr{0, 2};
    const std::vector<segment> segs{{segment_kind::system, 0, 3, 0},
                                    {segment_kind::image, 3, 20, 0}};
    const host_ragged_rows<const float> view{make_host_span(indptr), make_host_span(rows),
                                             w.lc.hidden};
    const segment_table<host_space> table{make_host_span(seg_indptr), make_host_span(segs)};
    no_cache_session nc(w.model, 1, &w.image, &w.output, {});
    CHECK_THROWS_WITH_AS(nc.prefill(view, table), doctest::Contains("prompt 0 must end with text"),
                         error);
    CHECK_FALSE(nc.prefilled());
    CHECK(nc.current().rows.empty());
    CHECK_THROWS_WITH_AS(decode_without_cache(w.model, &w.image, &w.output, view, table, {}),
                         doctest::Contains("sequence 0 ends with an image token"), error);
    auto cache = make_cache(w, 1);
    kv_session kv(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    CHECK_THROWS_WITH_AS(kv.prefill(view, table),
                         doctest::Contains("must be non-empty and end with text"), error);
    // token ids
    kv.prefill(in.view(w.lc.hidden), in.table());
    nc.prefill(in.view(w.lc.hidden), in.table());
    const auto lengths = kv.cache_lengths();
    for (std::int32_t bad : {-1, 50}) {
      const std::vector<std::int32_t> t{bad};
      CHECK_THROWS_WITH_AS(kv.decode(make_host_span(t)),
                           doctest::Contains("is outside the vocabulary [0, 50)"), error);
      CHECK_THROWS_WITH_AS(nc.decode(make_host_span(t)),
                           doctest::Contains("is outside the vocabulary [0, 50)"), error);
    }
    CHECK(kv.cache_lengths() == lengths);
    CHECK(nc.current().rows.size() == in.rows.size());
    // a session starts from an empty cache
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {})),
        doctest::Contains("a session needs an empty cache (layer 0, sequence 0 holds 27 tokens); "
                          "27 were appended"),
        error);
  }

  TEST_CASE(
      "gate decisions start empty after each prompt; generate checks what a session returns") {
    const auto& w = the_world();
    const auto in = w.input({0});
    auto cache = make_cache(w, 1);
    kv_session kv(w.model, cache, online_gate_policy{2}, &w.image, &w.output, {});
    auto logits = kv.prefill(in.view(w.lc.hidden), in.table());
    CHECK(kv.gate_decisions().candidates() == 0);
    kv.decode(make_host_span(greedy_tokens(logits, w.lc.vocab)));
    CHECK(kv.gate_decisions().candidates() == 1);
    const std::vector<segment> turn{{segment_kind::instruction, 0, 2, 0}};
    std::vector<float> rows(2 * static_cast<std::size_t>(w.lc.hidden), 0.5f);
    const std::vector<index_t> indptr{0, 2}, seg_indptr{0, 1};
    kv.prefill({make_host_span(indptr), make_host_span(rows), w.lc.hidden},
               {make_host_span(seg_indptr), make_host_span(turn)});
    CHECK(kv.gate_decisions().candidates() == 0);

    struct short_session {
      std::size_t batch() const { return 2; }
      index_t vocab() const { return 5; }
      std::vector<float> prefill(host_ragged_rows<const float>, segment_table<host_space>) {
        return std::vector<float>(9, 0.0f);  // one value short of 2 x 5
      }
      std::vector<float> decode(host_span<const std::int32_t>) { return std::vector<float>(10); }
    } fake;
    static_assert(decoding_session<short_session>);
    CHECK_THROWS_WITH_AS(
        generate(fake, {}, {}, {.max_new_tokens = 3, .eos = std::nullopt, .sampling = {}}),
        doctest::Contains(
            "the session's prefill returned 9 logits, expected batch x vocab = 2 x 5"),
        error);
    // an infinite logit takes all the mass
    token_sampler s({.temperature = 1.0f, .top_p = 1.0f, .seed = 3}, 0);
    const std::vector<float> inf{0.0f, INFINITY, 1.0f, INFINITY};
    for (int i = 0; i < 10; ++i) CHECK(s.next(make_host_span(inf)) == 1);
  }
}

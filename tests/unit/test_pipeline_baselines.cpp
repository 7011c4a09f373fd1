// SPDX-License-Identifier: Apache-2.0
/// The training-free baselines through the pipeline (FastV, H2O, FastV + H2O, StreamingLLM) on
/// the small random decoder of support/pipeline_world.hpp, each against an independent
/// hand-run and against the cost model.
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/schedule_trace.hpp>
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>

#include "support/pipeline_world.hpp"

#include <algorithm>
#include <concepts>
#include <set>

using namespace dynllava;
using namespace dynllava::test;

static_assert(probing_decoder<llama_model, host_t, paged_kv_cache>);
static_assert(probing_decoder<llama_model, host_t, contiguous_kv_cache>);

TEST_SUITE("cpu") {
  TEST_CASE("pipeline: StreamingLLM keeps exactly its sinks and window after every step") {
    const auto& w = the_world();
    auto cache = make_cache(w, 2);
    sparsifier_options dense;
    dense.prune_images = false;
    dense.gate_outputs = false;
    const streaming_policy stream{4, 10};
    kv_session session(w.model, cache, stream, &w.image, &w.output, dense);
    const auto in = w.input({0, 1});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    const std::vector<index_t> prompt_len{27, 15};
    for (int step = -1; step < 6; ++step) {  // -1: right after the prefill
      if (step >= 0) logits = session.decode(make_host_span(greedy_tokens(logits, w.lc.vocab)));
      for (std::size_t b = 0; b < 2; ++b) {
        const index_t seen = prompt_len[b] + step + 1;
        for (index_t l = 0; l < w.lc.layers; ++l) {
          REQUIRE(cache.length(l, b) == std::min<index_t>(seen, 14));
          for (index_t i = 0; i < cache.length(l, b); ++i) {
            const index_t expected = i < 4 ? i : seen - (cache.length(l, b) - i);
            CHECK(cache.position(l, b, i) == expected);
          }
        }
      }
    }
  }
}

TEST_SUITE("cpu") {
  TEST_CASE(
      "pipeline: FastV (K = 3, keep 25%) ranks images by the last token's attention; cost "
      "matches") {
    const auto& w = the_world();
    sparsifier_options fastv;
    fastv.vision = vision_rule::fastv;
    fastv.sparse_layer = 3;
    fastv.vision_keep_ratio = 0.25;
    fastv.gate_outputs = false;
    auto cache = make_cache(w, 1);
    kv_session session(w.model, cache, full_cache_policy{}, nullptr, nullptr, fastv);
    trace_recorder session_work;
    session.observe(&session_work);
    const auto in = w.input({0});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    CHECK(session.image_kept().positions.size() == 5);  // floor(20 * 0.25)
    // independent: run layers 0..2 by hand, take layer 2's queries and keys, score, top 5
    const auto H = static_cast<std::size_t>(w.lc.hidden);
    std::vector<float> h = in.rows, k(h.size()), v(h.size()), q(h.size());
    std::vector<index_t> pos(h.size() / H);
    for (std::size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<index_t>(i);
    const paged_kv_cache* none = nullptr;
    for (index_t l = 0; l < 3; ++l) {
      w.model.layer(l, {make_host_span(in.indptr), make_host_span(h), w.lc.hidden},
                    make_host_span(std::as_const(pos)), none, make_host_span(k), make_host_span(v),
                    {l == 2 ? make_host_span(q) : host_span<float>{}, {}});
    }
    const std::vector<float> last_q(q.end() - static_cast<std::ptrdiff_t>(H), q.end());
    const auto cands = cpu::candidate_rows(in.table(), K::image);
    std::vector<float> scores(cands.positions.size());
    fastv_scorer{w.lc.heads, w.lc.head_dim}.score(
        host, make_host_span(last_q),
        {make_host_span(in.indptr), make_host_span(std::as_const(k)), w.lc.hidden}, cands.view(),
        make_host_span(scores));
    CHECK(session.image_kept().positions ==
          cpu::topk({make_host_span(cands.indptr), make_host_span(std::as_const(scores))},
                    keep_count(5))
              .positions);
    for (int step = 0; step < 4; ++step)
      logits = session.decode(make_host_span(greedy_tokens(logits, w.lc.vocab)));
    const cost::llava_sizes cc = cost_config_of(w);
    const cost::request req{3, 20, 4, 1};
    const cost::fastv_schedule f{3, 0.25};
    CHECK(session_work.traces()[0] == cost::schedule_trace(cc, f, req, cost::pass_kind::prefill));
    for (std::int64_t t = 0; t < 4; ++t) {
      CHECK(session_work.traces()[static_cast<std::size_t>(t + 1)] ==
            cost::schedule_trace(cc, f, req, cost::pass_kind::decode_kv_cache, t));
    }
    CHECK(static_cast<std::int64_t>(bytes_held(cache)) ==
          cost::kv_cache_bytes(cc, session_work.traces().back()));
  }
}

namespace {

/// Attention each of `keys` (`[cached + rows, H]`: cached keys, then the call's) received from the
/// call's `rows` queries (`q`, `[rows, H]`), summed over heads; row `r` sees keys
/// `[0, cached + r]`. Computed with `fastv_scorer`, independently of the decoder's probe.
std::vector<double> received_attention(const world& w, const float* q,
                                       const std::vector<float>& keys, std::size_t cached,
                                       std::size_t rows) {
  const auto H = static_cast<std::size_t>(w.lc.hidden);
  const fastv_scorer attention{w.lc.heads, w.lc.head_dim};
  std::vector<double> mass(cached + rows, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t ctx = cached + r + 1;
    const std::vector<index_t> indptr{0, static_cast<index_t>(ctx)};
    std::vector<index_t> all(ctx);
    for (std::size_t j = 0; j < ctx; ++j) all[j] = static_cast<index_t>(j);
    std::vector<float> p(ctx);
    attention.score(
        host, host_span<const float>(q + r * H, H),
        {make_host_span(indptr), host_span<const float>(keys.data(), ctx * H), w.lc.hidden},
        {make_host_span(indptr), make_host_span(std::as_const(all))}, make_host_span(p));
    for (std::size_t j = 0; j < ctx; ++j) mass[j] += static_cast<double>(p[j]) * w.lc.heads;
  }
  return mass;
}

/// H2O by hand for one sequence: every layer's cache, the attention each held token received so
/// far (from `received_attention`), and `h2o_policy` applied after every call.
struct h2o_reference {
  const world& w;
  h2o_policy policy;
  paged_kv_cache cache;
  std::vector<std::vector<double>> mass;  // [layer][held]
  index_t next = 0;

  h2o_reference(const world& world_, h2o_policy p)
      : w(world_),
        policy(p),
        cache(make_cache(world_, 1)),
        mass(static_cast<std::size_t>(world_.lc.layers)) {}

  /// Runs `h` (`[n, H]`, the call's input rows) through every layer; returns the last row's logits.
  std::vector<float> run(std::vector<float> h) {
    const auto H = static_cast<std::size_t>(w.lc.hidden);
    const std::size_t n = h.size() / H;
    const std::vector<index_t> indptr{0, static_cast<index_t>(n)};
    std::vector<index_t> pos(n);
    for (std::size_t i = 0; i < n; ++i) pos[i] = next + static_cast<index_t>(i);
    std::vector<float> k(h.size()), v(h.size()), q(h.size());
    for (index_t l = 0; l < w.lc.layers; ++l) {
      const auto held = static_cast<std::size_t>(cache.length(l, 0));
      std::vector<float> keys;
      for (std::size_t i = 0; i < held; ++i) {
        const float* key = cache.key(l, 0, static_cast<index_t>(i));
        keys.insert(keys.end(), key, key + H);
      }
      w.model.layer(l, {make_host_span(indptr), make_host_span(h), w.lc.hidden},
                    make_host_span(std::as_const(pos)), &cache, make_host_span(k),
                    make_host_span(v), {make_host_span(q), {}});
      keys.insert(keys.end(), k.begin(), k.end());
      const auto add = received_attention(w, q.data(), keys, held, n);
      for (std::size_t r = 0; r < n; ++r)
        cache.append(l, 0, k.data() + r * H, v.data() + r * H, pos[r]);
      auto& m = mass[static_cast<std::size_t>(l)];
      m.resize(held + n, 0.0);
      for (std::size_t j = 0; j < m.size(); ++j) m[j] += add[j];
    }
    for (index_t l = 0; l < w.lc.layers; ++l) {
      auto& m = mass[static_cast<std::size_t>(l)];
      const std::vector<float> scores(m.begin(), m.end());
      std::vector<index_t> kept;
      cpu::enforce_retention(cache, policy, l, 0, make_host_span(scores), &kept);
      std::vector<double> survivors;
      for (index_t i : kept) survivors.push_back(m[static_cast<std::size_t>(i)]);
      m = std::move(survivors);
    }
    next += static_cast<index_t>(n);
    std::vector<float> out(static_cast<std::size_t>(w.lc.vocab));
    w.model.logits(host_span<const float>(h.data() + (n - 1) * H, H), make_host_span(out));
    return out;
  }
};

std::vector<index_t> held_positions(const paged_kv_cache& c, index_t l, std::size_t b) {
  std::vector<index_t> out;
  for (index_t i = 0; i < c.length(l, b); ++i) out.push_back(c.position(l, b, i));
  return out;
}

/// H2O's cache size after `seen` tokens (the cost model's formula, written out again).
index_t h2o_size(index_t seen, double ratio, index_t recent) {
  return std::min(seen, std::max(recent, static_cast<index_t>(std::floor(seen * ratio))));
}

const std::vector<index_t> prompt_len{27, 15};

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("llama_model: layer probes hand out the queries and the attention each key received") {
    const auto& w = the_world();
    const auto H = static_cast<std::size_t>(w.lc.hidden);
    const auto in = w.input({0, 1});
    auto cache = make_cache(w, 2);
    std::vector<float> h = in.rows, k(h.size()), v(h.size()), q(h.size());
    std::vector<index_t> pos(h.size() / H);
    for (std::size_t b = 0; b < 2; ++b) {
      for (index_t i = in.indptr[b]; i < in.indptr[b + 1]; ++i)
        pos[static_cast<std::size_t>(i)] = i - in.indptr[b];
    }
    std::vector<float> mass(pos.size());
    w.model.layer(0, {make_host_span(in.indptr), make_host_span(h), w.lc.hidden},
                  make_host_span(std::as_const(pos)), &cache, make_host_span(k), make_host_span(v),
                  {make_host_span(q), make_host_span(mass)});
    for (std::size_t b = 0; b < 2; ++b) {
      const auto first = static_cast<std::size_t>(in.indptr[b]);
      const auto n = static_cast<std::size_t>(in.indptr[b + 1]) - first;
      const std::vector<float> keys(k.begin() + static_cast<std::ptrdiff_t>(first * H),
                                    k.begin() + static_cast<std::ptrdiff_t>((first + n) * H));
      const auto expected = received_attention(w, q.data() + first * H, keys, 0, n);
      double total = 0;
      for (std::size_t j = 0; j < n; ++j) {
        CHECK(mass[first + j] == doctest::Approx(expected[j]).epsilon(1e-5));
        total += mass[first + j];
      }
      CHECK(total == doctest::Approx(static_cast<double>(n) * w.lc.heads)
                         .epsilon(1e-5));  // rows sum to 1 per head
      for (std::size_t r = first; r < first + n; ++r)
        cache.append(0, b, k.data() + r * H, v.data() + r * H, pos[r]);
    }
    // one new row per sequence over the cache: cached keys first, then the row itself
    const std::vector<std::int32_t> next{3, 4};
    const std::vector<index_t> one{0, 1, 2}, npos{27, 15};
    std::vector<float> h1(2 * H), k1(2 * H), v1(2 * H), q1(2 * H), m1(27 + 1 + 15 + 1);
    w.model.embed(make_host_span(next), make_host_span(h1));
    w.model.layer(0, {make_host_span(one), make_host_span(h1), w.lc.hidden}, make_host_span(npos),
                  &cache, make_host_span(k1), make_host_span(v1),
                  {make_host_span(q1), make_host_span(m1)});
    std::size_t at = 0;
    for (std::size_t b = 0; b < 2; ++b) {
      const auto held = static_cast<std::size_t>(cache.length(0, b));
      std::vector<float> keys;
      for (index_t i = 0; i < cache.length(0, b); ++i)
        keys.insert(keys.end(), cache.key(0, b, i), cache.key(0, b, i) + H);
      keys.insert(keys.end(), k1.begin() + static_cast<std::ptrdiff_t>(b * H),
                  k1.begin() + static_cast<std::ptrdiff_t>((b + 1) * H));
      const auto expected = received_attention(w, q1.data() + b * H, keys, held, 1);
      for (std::size_t j = 0; j <= held; ++j)
        CHECK(m1[at + j] == doctest::Approx(expected[j]).epsilon(1e-5));
      at += held + 1;
    }
    std::vector<float> short_mass(m1.size() - 1);
    CHECK_THROWS_WITH_AS(w.model.layer(0, {make_host_span(one), make_host_span(h1), w.lc.hidden},
                                       make_host_span(npos), &cache, make_host_span(k1),
                                       make_host_span(v1), {{}, make_host_span(short_mass)}),
                         doctest::Contains("probes.key_attention must hold at least 44 values"),
                         error);
    // A longer buffer (sized by a bound): the same first entries, the rest left as they were.
    std::vector<float> long_mass(m1.size() + 5, -7.0f), k2(k1.size()), v2(v1.size());
    std::vector<float> h2(2 * H);
    w.model.embed(make_host_span(next), make_host_span(h2));
    w.model.layer(0, {make_host_span(one), make_host_span(h2), w.lc.hidden}, make_host_span(npos),
                  &cache, make_host_span(k2), make_host_span(v2), {{}, make_host_span(long_mass)});
    CHECK(std::equal(m1.begin(), m1.end(), long_mass.begin()));
    CHECK(std::all_of(long_mass.begin() + static_cast<std::ptrdiff_t>(m1.size()), long_mass.end(),
                      [](float x) { return x == -7.0f; }));
  }

  TEST_CASE(
      "pipeline: H2O keeps its budget of heavy hitters and recent tokens, as a hand-run does; cost "
      "matches") {
    const auto& w = the_world();
    const h2o_policy policy{0.5, 4, 1};
    auto cache = make_cache(w, 2);
    kv_session session(w.model, cache, policy, nullptr, nullptr, dense_options());
    trace_recorder session_work;
    session.observe(&session_work);
    const auto in = w.input({0, 1});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    std::vector<h2o_reference> ref;
    std::vector<std::vector<float>> ref_logits;
    for (std::size_t b = 0; b < 2; ++b) {
      ref.emplace_back(w, policy);
      ref_logits.push_back(ref[b].run(w.prompt_rows[b]));
    }
    const auto V = static_cast<std::ptrdiff_t>(w.lc.vocab);
    for (int step = -1; step < 6; ++step) {  // -1: right after the prefill
      CAPTURE(step);
      if (step >= 0) {
        const auto next = greedy_tokens(logits, w.lc.vocab);
        logits = session.decode(make_host_span(next));
        for (std::size_t b = 0; b < 2; ++b) {
          std::vector<float> e(static_cast<std::size_t>(w.lc.hidden));
          w.model.embed(host_span<const std::int32_t>(&next[b], 1), make_host_span(e));
          ref_logits[b] = ref[b].run(e);
        }
      }
      for (std::size_t b = 0; b < 2; ++b) {
        const std::vector<float> mine(logits.begin() + static_cast<std::ptrdiff_t>(b) * V,
                                      logits.begin() + static_cast<std::ptrdiff_t>(b + 1) * V);
        CHECK(max_abs_diff(mine, ref_logits[b]) < 1e-5);
        const index_t seen = prompt_len[b] + step + 1;
        for (index_t l = 0; l < w.lc.layers; ++l) {
          CAPTURE(l);
          CHECK(cache.length(l, b) == (l < 1 ? seen : h2o_size(seen, 0.5, 4)));
          CHECK(held_positions(cache, l, b) == held_positions(ref[b].cache, l, 0));
        }
      }
    }
    // heavy hitters are not just the newest tokens: some survivors are older than the window
    CHECK(held_positions(cache, 3, 0).front() <
          prompt_len[0] + 6 - h2o_size(prompt_len[0] + 6, 0.5, 4));
    // the work and the bytes: the cost model's H2O schedule, summed over the two prompts
    const cost::llava_sizes cc = cost_config_of(w);
    const cost::h2o_schedule hs{0.5, 4, 1};
    const cost::request r0{3, 20, 4, 1}, r1{3, 10, 2, 1};
    auto expected = [&](cost::pass_kind pass, std::int64_t t) {
      cost::trace sum;
      sum += cost::schedule_trace(cc, hs, r0, pass, t);
      sum += cost::schedule_trace(cc, hs, r1, pass, t);
      return sum;
    };
    REQUIRE(session_work.traces().size() == 7);
    CHECK(session_work.traces()[0] == expected(cost::pass_kind::prefill, 0));
    for (std::int64_t t = 0; t < 6; ++t) {
      CHECK(session_work.traces()[static_cast<std::size_t>(t + 1)] ==
            expected(cost::pass_kind::decode_kv_cache, t));
    }
    CHECK(static_cast<std::int64_t>(bytes_held(cache)) ==
          cost::kv_cache_bytes(cc, session_work.traces().back()));
  }

  TEST_CASE("pipeline: H2O with a budget of everything equals the dense model exactly") {
    const auto& w = the_world();
    auto c1 = make_cache(w, 2), c2 = make_cache(w, 2);
    kv_session dense(w.model, c1, full_cache_policy{}, nullptr, nullptr, dense_options());
    kv_session h2o(w.model, c2, h2o_policy{1.0, 0, 0}, nullptr, nullptr, dense_options());
    const auto in = w.input({0, 1});
    auto a = dense.prefill(in.view(w.lc.hidden), in.table());
    auto b = h2o.prefill(in.view(w.lc.hidden), in.table());
    CHECK(a == b);
    for (int step = 0; step < 4; ++step) {
      const auto next = greedy_tokens(a, w.lc.vocab);
      a = dense.decode(make_host_span(next));
      b = h2o.decode(make_host_span(next));
      CHECK(a == b);
    }
    CHECK(bytes_held(c1) == bytes_held(c2));
  }

  TEST_CASE(
      "pipeline: FastV + H2O cuts the image once in prefill, then keeps H2O's budget of what "
      "remains") {
    const auto& w = the_world();
    const h2o_policy policy{0.5, 4, 2};
    auto cache = make_cache(w, 2), fastv_cache = make_cache(w, 2);
    kv_session session(w.model, cache, policy, nullptr, nullptr, fastv_options());
    trace_recorder session_work;
    session.observe(&session_work);
    kv_session fastv_only(w.model, fastv_cache, full_cache_policy{}, nullptr, nullptr,
                          fastv_options());
    const auto in = w.input({0, 1});
    auto logits = session.prefill(in.view(w.lc.hidden), in.table());
    fastv_only.prefill(in.view(w.lc.hidden), in.table());
    CHECK(session.image_kept().positions ==
          fastv_only.image_kept().positions);  // H2O evicts after the cut
    const std::vector<index_t> n_img{20, 10}, kept_prompt{27 - 20 + 5, 15 - 10 + 2};
    for (int step = -1; step < 5; ++step) {
      CAPTURE(step);
      if (step >= 0) logits = session.decode(make_host_span(greedy_tokens(logits, w.lc.vocab)));
      for (std::size_t b = 0; b < 2; ++b) {
        std::set<index_t> fastv_context;  // positions layers >= K may hold
        for (index_t p = 0; p < prompt_len[b] + step + 1; ++p) {
          if (p < 3 || p >= 3 + n_img[b]) fastv_context.insert(p);
        }
        for (index_t i = session.image_kept().indptr[b]; i < session.image_kept().indptr[b + 1];
             ++i) {
          fastv_context.insert(3 + session.image_kept().positions[static_cast<std::size_t>(i)]);
        }
        for (index_t l = 0; l < w.lc.layers; ++l) {
          CAPTURE(l);
          const index_t seen = (l < 3 ? prompt_len[b] : kept_prompt[b]) + step + 1;
          CHECK(cache.length(l, b) == (l < 2 ? seen : h2o_size(seen, 0.5, 4)));
          if (l >= 3) {
            for (index_t p : held_positions(cache, l, b)) CHECK(fastv_context.count(p) == 1);
          }
        }
      }
    }
    // rows computed per layer are FastV's: H2O changes what is held, not what is computed
    const cost::llava_sizes cc = cost_config_of(w);
    const cost::fastv_schedule f{3, 0.25};
    for (std::size_t i = 0; i < session_work.traces().size(); ++i) {
      const auto pass = i == 0 ? cost::pass_kind::prefill : cost::pass_kind::decode_kv_cache;
      const auto t = i == 0 ? std::int64_t{0} : static_cast<std::int64_t>(i) - 1;
      cost::trace sum;
      sum += cost::schedule_trace(cc, f, {3, 20, 4, 1}, pass, t);
      sum += cost::schedule_trace(cc, f, {3, 10, 2, 1}, pass, t);
      for (std::size_t l = 0; l < sum.layers.size(); ++l) {
        CHECK(session_work.traces()[i].layers[l].query_rows == sum.layers[l].query_rows);
      }
    }
  }

  TEST_CASE(
      "pipeline: FastV without KV cache ranks images by the newest token's attention at every "
      "step") {
    const auto& w = the_world();
    const auto opts = fastv_options();
    const auto H = static_cast<std::size_t>(w.lc.hidden);
    // on the prompt alone it is the KV-cache prefill
    {
      auto cache = make_cache(w, 2);
      kv_session session(w.model, cache, full_cache_policy{}, nullptr, nullptr, opts);
      const auto in = w.input({0, 1});
      const auto kv = session.prefill(in.view(w.lc.hidden), in.table());
      CHECK(max_abs_diff(decode_without_cache(w.model, nullptr, nullptr, in.view(w.lc.hidden),
                                              in.table(), opts),
                         kv) < 1e-6);
    }
    // with three generated tokens: by hand, layers 0..2, the newest row's attention, top 5 images
    const std::vector<std::int32_t> generated{5, 9, 11};
    const auto full = w.input({0}, {generated});
    std::vector<float> h = full.rows, k(h.size()), v(h.size()), q(h.size());
    const std::size_t n = h.size() / H;
    std::vector<index_t> pos(n);
    for (std::size_t i = 0; i < n; ++i) pos[i] = static_cast<index_t>(i);
    const paged_kv_cache* none = nullptr;
    for (index_t l = 0; l < 3; ++l) {
      w.model.layer(l, {make_host_span(full.indptr), make_host_span(h), w.lc.hidden},
                    make_host_span(std::as_const(pos)), none, make_host_span(k), make_host_span(v),
                    {make_host_span(q), {}});
    }
    const auto cands = cpu::candidate_rows(full.table(), K::image);
    std::vector<float> scores(cands.positions.size());
    fastv_scorer{w.lc.heads, w.lc.head_dim}.score(
        host, host_span<const float>(q.data() + (n - 1) * H, H),
        {make_host_span(full.indptr), make_host_span(std::as_const(k)), w.lc.hidden}, cands.view(),
        make_host_span(scores));
    const auto kept = cpu::topk(
        {make_host_span(cands.indptr), make_host_span(std::as_const(scores))}, keep_count(5));
    std::vector<index_t> rows;
    for (std::size_t i = 0; i < n; ++i) {
      const bool image = i >= 3 && i < 23;
      if (!image || std::count(kept.positions.begin(), kept.positions.end(),
                               static_cast<index_t>(i - 3)) == 1) {
        rows.push_back(static_cast<index_t>(i));
      }
    }
    std::vector<float> hk(rows.size() * H), kk(hk.size()), vk(hk.size());
    cpu::gather_rows(host_span<const float>(h.data(), h.size()), w.lc.hidden, make_host_span(rows),
                     make_host_span(hk));
    const std::vector<index_t> kindptr{0, static_cast<index_t>(rows.size())};
    for (index_t l = 3; l < w.lc.layers; ++l) {
      w.model.layer(l, {make_host_span(kindptr), make_host_span(hk), w.lc.hidden},
                    make_host_span(std::as_const(rows)), none, make_host_span(kk),
                    make_host_span(vk));
    }
    std::vector<float> expected(static_cast<std::size_t>(w.lc.vocab));
    w.model.logits(host_span<const float>(hk.data() + (rows.size() - 1) * H, H),
                   make_host_span(expected));
    run_stats stats;
    trace_recorder work;
    const auto got = decode_without_cache(w.model, nullptr, nullptr, full.view(w.lc.hidden),
                                          full.table(), opts, &stats, nullptr, &work);
    CHECK(max_abs_diff(got, expected) < 1e-6);
    CHECK(stats.image_kept == 5);
    REQUIRE(work.traces().size() == 1);
    CHECK(work.traces()[0] == cost::schedule_trace(cost_config_of(w), cost::fastv_schedule{3, 0.25},
                                                   {3, 20, 4, 1}, cost::pass_kind::decode_no_cache,
                                                   2));
    // a ragged batch gives each sequence what it gets alone
    const auto both = w.input({0, 1}, {generated, {7}});
    const auto batch =
        decode_without_cache(w.model, nullptr, nullptr, both.view(w.lc.hidden), both.table(), opts);
    const auto alone = w.input({1}, {{7}});
    const auto one = decode_without_cache(w.model, nullptr, nullptr, alone.view(w.lc.hidden),
                                          alone.table(), opts);
    CHECK(std::equal(got.begin(), got.end(), batch.begin()));
    CHECK(std::equal(one.begin(), one.end(), batch.begin() + w.lc.vocab));
  }

  TEST_CASE("pipeline: baselines reject what they cannot run, with a clear error") {
    const auto& w = the_world();
    auto opts = fastv_options();
    opts.sparse_layer = 0;
    auto cache = make_cache(w, 1);
    CHECK_THROWS_WITH_AS((kv_session(w.model, cache, full_cache_policy{}, nullptr, nullptr, opts)),
                         doctest::Contains("sparse_layer must be >= 1, got 0"), error);
    const auto in = w.input({0});
    CHECK_THROWS_WITH_AS(
        decode_without_cache(w.model, nullptr, nullptr, in.view(w.lc.hidden), in.table(), opts),
        doctest::Contains("decode_without_cache: vision_rule::fastv reads the attention"), error);
    // FastV ranks by attention: a predictor in the image slot would be ignored, so it is refused
    const auto fastv = fastv_options();
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, full_cache_policy{}, &w.image, nullptr, fastv)),
        doctest::Contains("kv_session: vision_rule::fastv ranks image tokens by attention"), error);
    CHECK_THROWS_WITH_AS(
        decode_without_cache(w.model, &w.image, nullptr, in.view(w.lc.hidden), in.table(), fastv),
        doctest::Contains("vision_rule::fastv ranks image tokens by attention"), error);
    const std::vector<float> kv(static_cast<std::size_t>(w.lc.hidden), 0.0f);
    cache.append(0, 0, kv.data(), kv.data(), 0);
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, h2o_policy{}, nullptr, nullptr, dense_options())),
        doctest::Contains("needs an empty cache (layer 0, sequence 0 holds 1 tokens)"), error);
  }
}

namespace dynllava::test_policy_scorer {

/// An accumulator written here, not the bundled one: H2O's sums (delegated), counting its
/// `accumulate` calls; with `negate` its scores are the negated sums (the least attended rank
/// first).
template <bool negate>
class counting_scorer {
 public:
  inline static int accumulate_calls = 0;
  explicit counting_scorer(std::size_t batch) : inner_(batch) {}
  host_span<const index_t> lengths() const noexcept { return inner_.lengths(); }
  void append(host_t, host_span<const index_t> counts) { inner_.append(host, counts); }
  void accumulate(host_t, host_ragged<const float> probs) {
    ++accumulate_calls;
    inner_.accumulate(host, probs);
  }
  void retain(host_t, host_ragged<const index_t> kept) { inner_.retain(host, kept); }
  void scores(host_t, host_span<float> out) const {
    inner_.scores(host, out);
    if constexpr (negate) {
      for (float& x : out) x = -x;
    }
  }
  void score(host_t, host_ragged_rows<const float> hidden, host_span<float> out) const {
    inner_.score(host, hidden, out);
    if constexpr (negate) {
      for (float& x : out) x = -x;
    }
  }

 private:
  h2o_scorer inner_;
};
static_assert(stateful_token_scorer<counting_scorer<false>, host_t>);

/// H2O's budget, ranked by the accumulator above.
template <bool negate>
struct own_scorer_policy : h2o_policy {
  using scorer_type = counting_scorer<negate>;
};

}  // namespace dynllava::test_policy_scorer

namespace dynllava {
template <bool negate>
inline constexpr bool kv_policy_needs_scores<test_policy_scorer::own_scorer_policy<negate>> = true;
}  // namespace dynllava

TEST_SUITE("cpu") {
  TEST_CASE("pipeline: a policy that names its own scorer_type is ranked by it, one per layer") {
    using namespace dynllava::test_policy_scorer;
    const auto& w = the_world();
    static_assert(std::same_as<session_scorer_t<h2o_policy>, h2o_scorer>);
    static_assert(std::same_as<session_scorer_t<own_scorer_policy<true>>, counting_scorer<true>>);
    const h2o_policy plain{0.5, 4, 1};
    auto run = [&](auto policy, std::vector<std::vector<index_t>>& held) {
      auto cache = make_cache(w, 2);
      kv_session session(w.model, cache, policy, nullptr, nullptr, dense_options());
      const auto in = w.input({0, 1});
      auto logits = session.prefill(in.view(w.lc.hidden), in.table());
      for (int step = 0; step < 6; ++step) {
        const auto next = greedy_tokens(logits, w.lc.vocab);
        logits = session.decode(make_host_span(next));
      }
      for (index_t l = 0; l < w.lc.layers; ++l)
        for (std::size_t b = 0; b < 2; ++b) held.push_back(held_positions(cache, l, b));
      return logits;
    };
    std::vector<std::vector<index_t>> held_plain, held_same, held_negated;
    const auto logits_plain = run(plain, held_plain);
    counting_scorer<false>::accumulate_calls = 0;
    own_scorer_policy<false> same;
    static_cast<h2o_policy&>(same) = plain;
    const auto logits_same = run(same, held_same);
    // Every layer of every call (the prefill and 6 steps) fed the policy's own accumulator, and
    // with H2O's scores it keeps what H2O keeps, bit for bit.
    CHECK(counting_scorer<false>::accumulate_calls == 7 * w.lc.layers);
    CHECK(logits_same == logits_plain);
    CHECK(held_same == held_plain);
    // Ranked by the negated sums, the compressed layers keep other tokens (same budget).
    own_scorer_policy<true> negated;
    static_cast<h2o_policy&>(negated) = plain;
    run(negated, held_negated);
    REQUIRE(held_negated.size() == held_plain.size());
    bool differs = false;
    for (std::size_t i = 0; i < held_plain.size(); ++i) {
      CHECK(held_negated[i].size() == held_plain[i].size());
      differs = differs || held_negated[i] != held_plain[i];
    }
    CHECK(differs);
    // Layer 0 is uncompressed: every token, whatever the scores.
    CHECK(held_negated[0] == held_plain[0]);
  }
}

namespace dynllava::test_attention_slot {

/// An attention scorer written here: FastV's scores (delegated), counting its calls; with
/// `negate` the negated scores (the least attended image tokens rank first).
template <bool negate>
struct counting_attention {
  fastv_scorer inner;
  mutable int calls = 0;
  void score(host_t, host_span<const float> q, host_ragged_rows<const float> k,
             host_ragged<const index_t> c, host_span<float> out) const {
    ++calls;
    inner.score(host, q, k, c, out);
    if constexpr (negate) {
      for (float& x : out) x = -x;
    }
  }
};
static_assert(attention_scorer<counting_attention<true>, host_t>);
static_assert(image_ranker<counting_attention<true>, host_t> &&
              !two_way_predictor<counting_attention<true>, host_t>);

}  // namespace dynllava::test_attention_slot

TEST_SUITE("cpu") {
  TEST_CASE("pipeline: an attention scorer in the image slot ranks with vision_rule::fastv") {
    using namespace dynllava::test_attention_slot;
    const auto& w = the_world();
    const auto opts = fastv_options();
    const auto in = w.input({0, 1});
    const counting_attention<false> same{{w.lc.heads, w.lc.head_dim}};
    const counting_attention<true> negated{{w.lc.heads, w.lc.head_dim}};
    auto prefill = [&](const auto* scorer, host_selection& kept) {
      auto cache = make_cache(w, 2);
      kv_session session(w.model, cache, full_cache_policy{}, scorer, nullptr, opts);
      auto logits = session.prefill(in.view(w.lc.hidden), in.table());
      kept = session.image_kept();
      return logits;
    };
    host_selection kept_bundled, kept_same, kept_negated;
    const auto logits_bundled = prefill(static_cast<const fastv_scorer*>(nullptr), kept_bundled);
    const auto logits_same = prefill(&same, kept_same);
    CHECK(same.calls == 1);  // one prefill, one call for the whole batch
    CHECK(logits_same == logits_bundled);
    CHECK(kept_same.indptr == kept_bundled.indptr);
    CHECK(kept_same.positions == kept_bundled.positions);
    prefill(&negated, kept_negated);
    CHECK(negated.calls == 1);
    CHECK(kept_negated.indptr == kept_bundled.indptr);  // the same budget per image
    CHECK(kept_negated.positions != kept_bundled.positions);
    // Without KV cache: the stateless step and the session take it too, with the same result.
    const auto nc_bundled =
        decode_without_cache(w.model, nullptr, nullptr, in.view(w.lc.hidden), in.table(), opts);
    CHECK(decode_without_cache(w.model, &same, nullptr, in.view(w.lc.hidden), in.table(), opts) ==
          nc_bundled);
    CHECK(same.calls == 2);
    no_cache_session nc(w.model, 2, &negated, nullptr, opts);
    nc.prefill(in.view(w.lc.hidden), in.table());
    CHECK(negated.calls == 2);
    CHECK(nc.image_decisions().kept().positions == kept_negated.positions);
    // It cannot stand in for the image predictor: refused before anything runs.
    auto predictor_rule = dense_options();
    predictor_rule.prune_images = true;
    auto cache = make_cache(w, 2);
    CHECK_THROWS_WITH_AS(
        (kv_session(w.model, cache, full_cache_policy{}, &same, nullptr, predictor_rule)),
        doctest::Contains("vision_rule::predictor needs a token_scorer (e.g. a two_way_predictor) "
                          "as image ranker"),
        error);
    CHECK(same.calls == 2);
    // A FastV scorer of another width than the model's: refused before anything is cached.
    const fastv_scorer wrong{w.lc.heads, 2 * w.lc.head_dim};
    const std::string width_error =
        "the FastV scorer reads queries and keys of width " + std::to_string(2 * w.lc.hidden) +
        " (heads * head_dim), but the model's hidden width is " + std::to_string(w.lc.hidden);
    CHECK_THROWS_WITH_AS((kv_session(w.model, cache, full_cache_policy{}, &wrong, nullptr, opts)),
                         doctest::Contains(width_error.c_str()), error);
    CHECK(held_tokens(cache, 0) == 0);
    CHECK_THROWS_WITH_AS(
        decode_without_cache(w.model, &wrong, nullptr, in.view(w.lc.hidden), in.table(), opts),
        doctest::Contains(width_error.c_str()), error);
    CHECK_THROWS_WITH_AS((no_cache_session(w.model, 2, &wrong, nullptr, opts)),
                         doctest::Contains(width_error.c_str()), error);
    // the width is only checked where the scorer is used
    auto dense = opts;
    dense.prune_images = false;
    kv_session unused(w.model, cache, full_cache_policy{}, &wrong, nullptr, dense);
    CHECK(unused.prefill(in.view(w.lc.hidden), in.table()).size() == 2 * unused.vocab());
  }
}

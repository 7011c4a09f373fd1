// SPDX-License-Identifier: Apache-2.0
// The seams hold: a decoder and a predictor written here (not the bundled ones) drive both
// inference modes through the concepts, and the modes agree (METHOD.md 4a).
#include <dynllava/dynllava.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

using namespace dynllava;

namespace {

/// A KV cache that offers only the layer-level calls of `kv_storage` (no token-by-token access)
/// and, under its own name, the storage the toy decoder below reads: the drivers must not need
/// more than the concept.
class layer_only_cache {
 public:
  using memory_space = host_space;
  using value_type = float;
  explicit layer_only_cache(const contiguous_kv_config& c) : c_(c) {}
  index_t layers() const { return c_.layers(); }
  std::size_t batch() const { return c_.batch(); }
  index_t width() const { return c_.width(); }
  host_span<const index_t> lengths(index_t l) const { return c_.lengths(l); }
  host_span<const index_t> appended_counts(index_t l) const { return c_.appended_counts(l); }
  void append(host_t, index_t l, host_span<const index_t> indptr, host_span<const float> k,
              host_span<const float> v, host_span<const std::uint8_t> keep,
              host_span<const index_t> positions) {
    c_.append(host, l, indptr, k, v, keep, positions);
    ++appends;
  }
  void retain(host_t, index_t l, host_ragged<const index_t> kept) {
    c_.retain(host, l, kept);
    ++retains;
  }
  /// What the decoder reads (a model knows its own cache).
  const contiguous_kv_cache& storage() const { return c_; }
  int appends = 0, retains = 0;

 private:
  contiguous_kv_cache c_;
};
static_assert(kv_storage<layer_only_cache, host_t>);
static_assert(!host_kv_storage<layer_only_cache>);

template <host_kv_storage C>
const C& storage_of(const C& c) {
  return c;
}
const contiguous_kv_cache& storage_of(const layer_only_cache& c) { return c.storage(); }

/// A tiny attention decoder: per layer, q = k = v = the row scaled by a layer factor plus a
/// position term; each row adds the softmax-weighted values of what it may see (the layer's
/// cache for its sequence, then the call's rows of its sequence up to itself).
struct toy_decoder {
  index_t layers() const { return 3; }
  index_t hidden() const { return 4; }
  index_t vocab() const { return 7; }

  void embed(host_t, host_span<const std::int32_t> tokens, host_span<float> out) const {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      for (std::size_t j = 0; j < 4; ++j)
        out[i * 4 + j] =
            std::sin(0.7f * static_cast<float>(tokens[i] + 1) * static_cast<float>(j + 1));
    }
  }

  template <kv_storage<host_t> C>
  void layer(host_t, index_t l, host_ragged_rows<float> rows, host_span<const index_t> pos,
             const C* cache_or_null, host_span<float> k, host_span<float> v) const {
    const auto* cache = cache_or_null == nullptr ? nullptr : &storage_of(*cache_or_null);
    const float scale = 1.0f + 0.25f * static_cast<float>(l);
    const std::vector<float> in(rows.values.begin(), rows.values.end());
    for (std::size_t r = 0; r < rows.rows(); ++r) {
      for (std::size_t j = 0; j < 4; ++j) {
        k[r * 4 + j] = scale * in[r * 4 + j] + 0.01f * static_cast<float>(pos[r]);
        v[r * 4 + j] = in[r * 4 + j];
      }
    }
    for (std::size_t b = 0; b < rows.batch(); ++b) {
      const index_t cached = cache == nullptr ? 0 : cache->length(l, b);
      for (index_t r = rows.indptr[b]; r < rows.indptr[b + 1]; ++r) {
        const float* q = &k[static_cast<std::size_t>(r) * 4];
        std::vector<double> w;
        std::vector<const float*> vals;
        auto see = [&](const float* key, const float* val) {
          double d = 0;
          for (std::size_t j = 0; j < 4; ++j) d += static_cast<double>(q[j]) * key[j];
          w.push_back(d / 2.0);
          vals.push_back(val);
        };
        for (index_t i = 0; i < cached; ++i) see(cache->key(l, b, i), cache->value(l, b, i));
        for (index_t s = rows.indptr[b]; s <= r; ++s) {
          see(&k[static_cast<std::size_t>(s) * 4], &v[static_cast<std::size_t>(s) * 4]);
        }
        double mx = w[0], sum = 0;
        for (double x : w) mx = std::max(mx, x);
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (std::size_t j = 0; j < 4; ++j) {
          double acc = 0;
          for (std::size_t i = 0; i < w.size(); ++i) acc += w[i] / sum * vals[i][j];
          rows.values[static_cast<std::size_t>(r) * 4 + j] =
              in[static_cast<std::size_t>(r) * 4 + j] + static_cast<float>(acc);
        }
      }
    }
  }

  void logits(host_t, host_span<const float> rows, host_span<float> out) const {
    for (std::size_t r = 0; r < rows.size() / 4; ++r) {
      for (std::size_t t = 0; t < 7; ++t) {
        double acc = 0;
        for (std::size_t j = 0; j < 4; ++j)
          acc += rows[r * 4 + j] * std::cos(static_cast<double>(t * 4 + j));
        out[r * 7 + t] = static_cast<float>(acc);
      }
    }
  }
};
static_assert(decoder<toy_decoder, host_t, contiguous_kv_cache>);
static_assert(decoder<toy_decoder, host_t, layer_only_cache>);
static_assert(!probing_decoder<toy_decoder, host_t, contiguous_kv_cache>);

/// A 2-way predictor: logit0 = w . h, logit1 = bias.
struct toy_predictor {
  std::vector<float> w;
  float bias = 0.0f;
  index_t hidden() const { return static_cast<index_t>(w.size()); }
  void logits(host_t, host_ragged_rows<const float> h, host_span<float> out) const {
    for (std::size_t r = 0; r < h.rows(); ++r) {
      double acc = 0;
      for (std::size_t j = 0; j < w.size(); ++j) acc += static_cast<double>(w[j]) * h.row(r)[j];
      out[2 * r] = static_cast<float>(acc);
      out[2 * r + 1] = bias;
    }
  }
  void score(host_t, host_ragged_rows<const float> h, host_span<float> out) const {
    std::vector<float> l(2 * h.rows());
    logits(host, h, make_host_span(l));
    for (std::size_t r = 0; r < h.rows(); ++r) out[r] = l[2 * r] - l[2 * r + 1];
  }
};
static_assert(two_way_predictor<toy_predictor, host_t>);

using K = segment_kind;

/// One prompt per sequence: [system 2 | image n | instruction 2], image rows from a formula.
struct toy_prompt {
  std::vector<float> rows;
  std::vector<index_t> indptr{0}, seg_indptr{0};
  std::vector<segment> segs;
  explicit toy_prompt(const std::vector<index_t>& images) {
    const toy_decoder m;
    for (std::size_t b = 0; b < images.size(); ++b) {
      const index_t n = images[b];
      auto text = [&](std::int32_t first) {
        const std::vector<std::int32_t> ids{first, static_cast<std::int32_t>((first + 3) % 7)};
        std::vector<float> e(8);
        m.embed(host, make_host_span(ids), make_host_span(e));
        rows.insert(rows.end(), e.begin(), e.end());
      };
      text(static_cast<std::int32_t>(b + 1));
      for (index_t i = 0; i < n * 4; ++i)
        rows.push_back(std::cos(0.37f * static_cast<float>(i) + static_cast<float>(b)));
      text(static_cast<std::int32_t>(b + 2));
      const std::vector<segment> s{
          {K::system, 0, 2, 0}, {K::image, 2, n, 0}, {K::instruction, 2 + n, 2, 0}};
      segs.insert(segs.end(), s.begin(), s.end());
      seg_indptr.push_back(static_cast<index_t>(segs.size()));
      indptr.push_back(indptr.back() + n + 4);
    }
  }
  host_ragged_rows<const float> view() const {
    return {make_host_span(indptr), make_host_span(rows), 4};
  }
  segment_table<host_space> table() const {
    return {make_host_span(seg_indptr), make_host_span(segs)};
  }
};

sparsifier_options toy_options() {
  sparsifier_options o;
  o.sparse_layer = 1;
  o.vision_keep_ratio = 0.5;
  return o;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("seams: a decoder and predictors defined here drive both modes, which agree") {
    const toy_decoder m;
    const toy_predictor image{{0.5f, -1.0f, 0.25f, 1.0f}, 0.0f};
    const toy_predictor output{{1.0f, 0.5f, -0.5f, 0.25f}, 0.1f};
    const toy_prompt prompt({6, 9});
    contiguous_kv_cache cache({3, 2, 4, 64});
    kv_session kv(m, cache, online_gate_policy{1}, &image, &output, toy_options());
    no_cache_session nc(m, 2, &image, &output, toy_options());
    auto a = kv.prefill(prompt.view(), prompt.table());
    auto b = nc.prefill(prompt.view(), prompt.table());
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));
    CHECK(kv.image_kept().positions == nc.image_decisions().kept().positions);
    CHECK(kv.image_kept().positions.size() == 3 + 4);  // floor(6 / 2) + floor(9 / 2)
    int dropped = 0, kept = 0;
    for (int step = 0; step < 8; ++step) {
      CAPTURE(step);
      const auto next = greedy_tokens(a, m.vocab());
      CHECK(next == greedy_tokens(b, m.vocab()));
      a = kv.decode(make_host_span(next));
      b = nc.decode(make_host_span(next));
      for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));
      for (auto k : kv.gate_decisions().keep) (k ? kept : dropped) += 1;
    }
    // both gate outcomes occurred, so the output gate really pruned the context
    CHECK(dropped > 0);
    CHECK(kept > 0);
    // the no-cache mode kept what the gate kept: its last step's candidates are the steps 0..6
    const auto& outs = nc.output_decisions();
    for (std::size_t s = 0; s < 2; ++s) {
      for (index_t t = 0; t < 7; ++t) {
        CHECK(outs.keep[static_cast<std::size_t>(outs.indptr[s] + t)] ==
              kv.decisions()[static_cast<std::size_t>(t) * 2 + s]);
      }
    }
  }

  TEST_CASE("seams: a plain token_scorer ranks the drivers' image tokens (L2 norm here)") {
    const toy_decoder m;
    const l2_norm_scorer l2{};
    const toy_predictor output{{1.0f, 0.5f, -0.5f, 0.25f}, 0.1f};
    static_assert(image_ranker<l2_norm_scorer, host_t> &&
                  !two_way_predictor<l2_norm_scorer, host_t>);
    const toy_prompt prompt({6, 9});
    contiguous_kv_cache cache({3, 2, 4, 64});
    kv_session kv(m, cache, online_gate_policy{1}, &l2, &output, toy_options());
    no_cache_session nc(m, 2, &l2, &output, toy_options());
    const auto a = kv.prefill(prompt.view(), prompt.table());
    const auto b = nc.prefill(prompt.view(), prompt.table());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));
    // the hidden states entering sparse layer 1: layer 0 of the toy decoder over the prompt
    std::vector<float> h(prompt.rows);
    std::vector<index_t> pos;
    for (std::size_t s = 0; s < 2; ++s) {
      for (index_t i = 0; i < prompt.indptr[s + 1] - prompt.indptr[s]; ++i) pos.push_back(i);
    }
    std::vector<float> k(h.size()), v(h.size());
    m.layer(host, 0, host_ragged_rows<float>{make_host_span(prompt.indptr), make_host_span(h), 4},
            make_host_span(std::as_const(pos)), static_cast<const contiguous_kv_cache*>(nullptr),
            make_host_span(k), make_host_span(v));
    const auto expected =
        cpu::select_images(l2, make_host_span(std::as_const(h)), prompt.table(), 0.5);
    CHECK(kv.image_kept().positions == expected.positions);
    CHECK(nc.image_decisions().kept().positions == expected.positions);
    CHECK(kv.image_decisions().logits.empty());  // a scorer has scores, no logits
    CHECK(kv.image_decisions().scores.size() == 6 + 9);
  }

  TEST_CASE("seams: kv_session refuses the no-cache output rule instead of ignoring it") {
    const toy_decoder m;
    const toy_predictor image{{0.5f, -1.0f, 0.25f, 1.0f}, 0.0f};
    const toy_predictor output{{1.0f, 0.5f, -0.5f, 0.25f}, 0.1f};
    auto o = toy_options();
    o.rule = output_rule::released_batch_max_topk;
    contiguous_kv_cache cache({3, 2, 4, 64});
    CHECK_THROWS_WITH_AS((kv_session(m, cache, online_gate_policy{1}, &image, &output, o)),
                         doctest::Contains("with a cache the online gate decides each token once"),
                         error);
    no_cache_session nc(m, 2, &image, &output, o);  // its rule: accepted
    CHECK_FALSE(nc.prefilled());
  }

  TEST_CASE("seams: sparse_layer == layers prunes nothing and runs no predictor, in both modes") {
    const toy_decoder m;
    struct counting_predictor : toy_predictor {
      mutable int calls = 0;
      void logits(host_t, host_ragged_rows<const float> h, host_span<float> out) const {
        ++calls;
        toy_predictor::logits(host, h, out);
      }
      void score(host_t, host_ragged_rows<const float> h, host_span<float> out) const {
        ++calls;
        toy_predictor::score(host, h, out);
      }
    };
    const counting_predictor image{{{0.5f, -1.0f, 0.25f, 1.0f}, 0.0f}};
    const counting_predictor output{{{1.0f, 0.5f, -0.5f, 0.25f}, 0.1f}};
    const toy_prompt prompt({6, 9});
    auto top = toy_options();
    top.sparse_layer = m.layers();
    auto dense = top;
    dense.prune_images = false;
    dense.gate_outputs = false;
    contiguous_kv_cache cache({3, 2, 4, 64}), dense_cache({3, 2, 4, 64});
    kv_session kv(m, cache, full_cache_policy{}, &image, &output, top);
    kv_session reference(m, dense_cache, full_cache_policy{}, nullptr, nullptr, dense);
    no_cache_session nc(m, 2, &image, &output, top);
    auto a = kv.prefill(prompt.view(), prompt.table());
    auto b = nc.prefill(prompt.view(), prompt.table());
    auto r = reference.prefill(prompt.view(), prompt.table());
    for (int step = 0; step < 4; ++step) {
      CHECK(a == r);
      for (std::size_t i = 0; i < a.size(); ++i) CHECK(b[i] == doctest::Approx(r[i]).epsilon(1e-5));
      const auto next = greedy_tokens(r, m.vocab());
      a = kv.decode(make_host_span(next));
      b = nc.decode(make_host_span(next));
      r = reference.decode(make_host_span(next));
    }
    CHECK(image.calls == 0);
    CHECK(output.calls == 0);
    // what the sessions report: every image token kept, no logits, every token cached
    CHECK(kv.image_decisions().logits.empty());
    CHECK(kv.image_decisions().kept().positions.size() == 6 + 9);
    CHECK(nc.image_decisions().kept().positions.size() == 6 + 9);
    CHECK(kv.stats().image_kept == kv.stats().image_tokens);
    CHECK(kv.cache_lengths() == reference.cache_lengths());
  }

  TEST_CASE("seams: kv_session drives a cache through the layer-level calls of kv_storage only") {
    const toy_decoder m;
    const toy_predictor image{{0.5f, -1.0f, 0.25f, 1.0f}, 0.0f};
    const toy_predictor output{{1.0f, 0.5f, -0.5f, 0.25f}, 0.1f};
    const toy_prompt prompt({6, 9});
    auto no_gate = toy_options();
    no_gate.gate_outputs = false;
    auto both = [&](auto policy, const sparsifier_options& o) {
      contiguous_kv_cache plain({3, 2, 4, 64});
      layer_only_cache layered({3, 2, 4, 64});
      kv_session a(m, plain, policy, &image, &output, o);
      kv_session b(m, layered, policy, &image, &output, o);
      auto x = a.prefill(prompt.view(), prompt.table());
      auto y = b.prefill(prompt.view(), prompt.table());
      for (int step = 0; step < 6; ++step) {
        CHECK(x == y);  // bit for bit: the same appends and evictions
        CHECK(a.cache_lengths() == b.cache_lengths());
        const auto next = greedy_tokens(x, m.vocab());
        x = a.decode(make_host_span(next));
        y = b.decode(make_host_span(next));
      }
      CHECK(x == y);
      CHECK(a.bytes_held() == b.bytes_held());
      CHECK(layered.appends == 7 * 3);  // one layer-level append per layer and call
      return layered.retains;
    };
    CHECK(both(online_gate_policy{1}, toy_options()) == 0);  // never evicts
    CHECK(both(streaming_policy{1, 3}, no_gate) == 7 * 3);   // every layer after every call
  }

  TEST_CASE("seams: the generate loop runs any session the same way") {
    const toy_decoder m;
    const toy_predictor image{{0.5f, -1.0f, 0.25f, 1.0f}, 0.0f};
    const toy_predictor output{{1.0f, 0.5f, -0.5f, 0.25f}, 0.1f};
    const toy_prompt prompt({5});
    contiguous_kv_cache cache({3, 1, 4, 64});
    kv_session kv(m, cache, online_gate_policy{1}, &image, &output, toy_options());
    no_cache_session nc(m, 1, &image, &output, toy_options());
    const generate_options go{.max_new_tokens = 6, .eos = std::nullopt, .sampling = {}};
    const auto x = generate(kv, prompt.view(), prompt.table(), go);
    const auto y = generate(nc, prompt.view(), prompt.table(), go);
    CHECK(x.tokens == y.tokens);
    CHECK(x.tokens[0].size() == 6);
  }

  TEST_CASE("seams: a predictor of another width than the model is refused before anything runs") {
    const toy_decoder m;
    const toy_predictor wide{{1, 2, 3, 4, 5}, 0.0f};
    const toy_predictor good{{1, 2, 3, 4}, 0.0f};
    contiguous_kv_cache cache({3, 1, 4, 16});
    CHECK_THROWS_WITH_AS(
        (kv_session(m, cache, online_gate_policy{1}, &wide, &good, toy_options())),
        doctest::Contains("the image predictor reads width 5, but the model's hidden width is 4"),
        error);
    CHECK_THROWS_WITH_AS(
        (kv_session(m, cache, online_gate_policy{1}, &good, &wide, toy_options())),
        doctest::Contains("the output predictor reads width 5, but the model's hidden width is 4"),
        error);
    CHECK_THROWS_WITH_AS((no_cache_session(m, 1, &wide, &good, toy_options())),
                         doctest::Contains("the image predictor reads width 5"), error);
    CHECK(cache.length(0, 0) == 0);
    // a predictor the options do not use is not checked (dense text)
    sparsifier_options dense_text = toy_options();
    dense_text.gate_outputs = false;
    kv_session fine(m, cache, full_cache_policy{}, &good, nullptr, [&] {
      auto o = dense_text;
      o.sparse_layer = 1;
      return o;
    }());
    CHECK_FALSE(fine.prefilled());
  }
}

TEST_SUITE("cpu") {
  TEST_CASE("seams: the image hook ranks by any token_scorer (L2 norm here), per turn") {
    const toy_prompt prompt({6, 9});
    const l2_norm_scorer l2{};
    token_decisions seen;
    const auto kept =
        cpu::select_images(l2, make_host_span(prompt.rows), prompt.table(), 0.5, &seen);
    CHECK(seen.logits.empty());  // not a 2-way predictor: scores only
    REQUIRE(seen.scores.size() == 15);
    CHECK(kept.indptr == std::vector<index_t>{0, 3, 7});
    CHECK(seen.kept().positions == kept.positions);
    // the kept tokens of each sequence are its largest L2 norms, computed here
    for (std::size_t b = 0; b < 2; ++b) {
      const index_t n = b == 0 ? 6 : 9;
      const std::size_t first_row = b == 0 ? 2 : 10 + 2;
      std::vector<std::pair<float, index_t>> norms;
      for (index_t i = 0; i < n; ++i) {
        double acc = 0;
        for (std::size_t j = 0; j < 4; ++j) {
          const float x = prompt.rows[(first_row + static_cast<std::size_t>(i)) * 4 + j];
          acc += static_cast<double>(x) * x;
        }
        norms.emplace_back(static_cast<float>(std::sqrt(acc)), i);
      }
      std::stable_sort(norms.begin(), norms.end(),
                       [](auto a, auto c) { return a.first > c.first; });
      std::vector<index_t> expected;
      for (index_t i = 0; i < n / 2; ++i)
        expected.push_back(norms[static_cast<std::size_t>(i)].second);
      std::sort(expected.begin(), expected.end());
      const std::vector<index_t> got(kept.positions.begin() + kept.indptr[b],
                                     kept.positions.begin() + kept.indptr[b + 1]);
      CHECK(got == expected);
    }
  }
}

namespace {

/// The toy decoder as an engine's model would be: `layer` takes one concrete storage type only.
struct paged_only_decoder {
  toy_decoder m;
  index_t layers() const { return m.layers(); }
  index_t hidden() const { return m.hidden(); }
  index_t vocab() const { return m.vocab(); }
  void embed(host_t, host_span<const std::int32_t> t, host_span<float> out) const {
    m.embed(host, t, out);
  }
  void layer(host_t, index_t l, host_ragged_rows<float> rows, host_span<const index_t> pos,
             const paged_kv_cache* cache, host_span<float> k, host_span<float> v) const {
    m.layer(host, l, rows, pos, cache, k, v);
  }
  void logits(host_t, host_span<const float> rows, host_span<float> out) const {
    m.logits(host, rows, out);
  }
};
static_assert(decoder<paged_only_decoder, host_t, paged_kv_cache>);
static_assert(!decoder<paged_only_decoder, host_t, contiguous_kv_cache>);

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("seams: the no-cache drivers need no cache type from a model that takes only its own") {
    const paged_only_decoder engine{};
    const toy_decoder m;
    const toy_predictor image{{0.5f, -1.0f, 0.25f, 1.0f}, 0.0f};
    const toy_predictor output{{1.0f, 0.5f, -0.5f, 0.25f}, 0.1f};
    const toy_prompt prompt({6});
    no_cache_session a(engine, 1, &image, &output, toy_options());  // deduces paged_kv_cache
    no_cache_session b(m, 1, &image, &output, toy_options());
    CHECK(a.prefill(prompt.view(), prompt.table()) == b.prefill(prompt.view(), prompt.table()));
    CHECK(decode_without_cache(engine, &image, &output, prompt.view(), prompt.table(),
                               toy_options()) ==
          decode_without_cache(m, &image, &output, prompt.view(), prompt.table(), toy_options()));
  }
}

// SPDX-License-Identifier: Apache-2.0
// The KV mode's decode step written once for every execution tag (pipeline/decode_step.hpp),
// instantiated with the host tag and a decoder defined by the tests: it equals a step assembled
// token by token from the host calls (the per-token gated append, per-sequence retention), for
// the online gate, StreamingLLM and the full cache; bad arguments are refused before anything
// changes. (Predictor seeds 9 and 19 give this toy model both decisions; most seeds give one.)
#include <dynllava/dynllava.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/random_weights.hpp>

#include <support/toy_decoder.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace dynllava;
using test::toy_hidden;
using test::toy_host_decoder;
using test::toy_layers;
using test::toy_vocab;

namespace {

static_assert(decoder<toy_host_decoder, host_t, contiguous_kv_cache>);
static_assert(layer_hooks<no_layer_hooks<host_t>, host_t>);
static_assert(two_way_predictor<no_predictor, host_t>);

/// Whether `decode_step` accepts these hooks with this policy.
template <class Policy, class Hooks>
constexpr bool steps_with = requires(contiguous_kv_cache& cache, const Policy& policy,
                                     decode_buffers<host_t, float> buf, Hooks& hooks) {
  decode_step(host, toy_host_decoder{}, cache, policy, static_cast<const no_predictor*>(nullptr),
              index_t{0}, host_span<const std::int32_t>{}, host_span<const index_t>{}, buf,
              host_span<float>{}, hooks);
};
/// Hooks that supply retention scores (here: none; what matters is that they may).
struct scoring_hooks : no_layer_hooks<host_t> {};
// a policy that ranks by scores needs hooks that can supply them: not the default ones
static_assert(steps_with<streaming_policy, no_layer_hooks<host_t>>);
static_assert(!steps_with<h2o_policy, no_layer_hooks<host_t>>);
static_assert(!steps_with<h2o_policy, const no_layer_hooks<host_t>>);
static_assert(steps_with<h2o_policy, scoring_hooks>);

constexpr std::size_t batch = 4;
constexpr index_t capacity = 64;

predictor_config toy_predictor_config() {
  predictor_config c;
  c.hidden = toy_hidden;
  c.output_head = {16, 8, 8};
  return c;
}

contiguous_kv_cache empty_cache() {
  return contiguous_kv_cache({toy_layers, batch, toy_hidden, capacity});
}

/// Host buffers of a decode step over the test's batch.
host_decode_buffers step_buffers() {
  host_decode_buffers buf;
  buf.resize(batch, toy_hidden, batch * static_cast<std::size_t>(capacity));
  return buf;
}

/// The same step assembled token by token: the gate's logits before layer `sparse`, the
/// per-token `cpu::gated_append`, per-sequence `cpu::enforce_retention`.
template <class Policy, class Output>
std::vector<float> reference_step(contiguous_kv_cache& cache, const Policy& policy,
                                  const Output* output, index_t sparse,
                                  const std::vector<std::int32_t>& tokens,
                                  const std::vector<index_t>& pos, std::vector<float>& gate_logits,
                                  std::vector<std::uint8_t>& keep) {
  const toy_host_decoder m;
  const std::vector<index_t> indptr{0, 1, 2, 3, 4};
  std::vector<float> h(batch * toy_hidden), k(h.size()), v(h.size());
  m.embed(host, make_host_span(tokens), make_host_span(h));
  keep.assign(batch, 1);
  for (index_t l = 0; l < toy_layers; ++l) {
    if (l == sparse && output != nullptr) {
      gate_logits.assign(2 * batch, 0.0f);
      output->logits(host, {make_host_span(indptr), make_host_span(std::as_const(h)), toy_hidden},
                     make_host_span(gate_logits));
      for (std::size_t b = 0; b < batch; ++b)
        keep[b] = gate_logits[2 * b] > gate_logits[2 * b + 1] ? 1 : 0;
    }
    m.layer(host, l, {make_host_span(indptr), make_host_span(h), toy_hidden}, make_host_span(pos),
            &cache, make_host_span(k), make_host_span(v));
    cpu::gated_append(cache, policy, l, make_host_span(indptr), make_host_span(std::as_const(k)),
                      make_host_span(std::as_const(v)), make_host_span(std::as_const(keep)),
                      make_host_span(pos));
  }
  for (index_t l = 0; l < toy_layers; ++l) {
    if (!policy.evicts(l)) continue;
    for (std::size_t b = 0; b < batch; ++b) cpu::enforce_retention(cache, policy, l, b);
  }
  std::vector<float> logits(batch * toy_vocab);
  m.logits(host, make_host_span(std::as_const(h)), make_host_span(logits));
  return logits;
}

/// The caches hold the same tokens: lengths, positions, keys and values per (layer, sequence).
void check_same_cache(const contiguous_kv_cache& got, const contiguous_kv_cache& expected) {
  for (index_t l = 0; l < toy_layers; ++l) {
    for (std::size_t b = 0; b < batch; ++b) {
      REQUIRE(got.length(l, b) == expected.length(l, b));
      CHECK(got.appended(l, b) == expected.appended(l, b));
      for (index_t i = 0; i < got.length(l, b); ++i) {
        CHECK(got.position(l, b, i) == expected.position(l, b, i));
        for (index_t j = 0; j < toy_hidden; ++j) {
          CHECK(got.key(l, b, i)[j] == expected.key(l, b, i)[j]);
          CHECK(got.value(l, b, i)[j] == expected.value(l, b, i)[j]);
        }
      }
    }
  }
}

/// Tokens of step `s`.
std::vector<std::int32_t> tokens_at(int s) {
  std::vector<std::int32_t> t(batch);
  for (std::size_t b = 0; b < batch; ++b)
    t[b] = static_cast<std::int32_t>((5 * s + 3 * static_cast<int>(b) + 1) % toy_vocab);
  return t;
}

/// Runs `steps` decode steps through `decode_step(host, ...)` and through the token-by-token
/// reference, checking logits, gate outputs and caches after each.
template <class Policy, class Output>
void check_against_reference(const Policy& policy, const Output* output, index_t sparse,
                             int steps) {
  const toy_host_decoder m;
  auto cache = empty_cache();
  auto expected_cache = empty_cache();
  auto buf = step_buffers();
  std::vector<index_t> pos(batch, 0);
  std::vector<float> logits(batch * toy_vocab), expected_gate;
  std::vector<std::uint8_t> expected_keep;
  int kept = 0, dropped = 0;
  for (int s = 0; s < steps; ++s) {
    CAPTURE(s);
    const auto tokens = tokens_at(s);
    decode_step(host, m, cache, policy, output, sparse, make_host_span(tokens),
                make_host_span(std::as_const(pos)), buf.view(), make_host_span(logits));
    const auto expected = reference_step(expected_cache, policy, output, sparse, tokens, pos,
                                         expected_gate, expected_keep);
    CHECK(logits == expected);
    if (output != nullptr && sparse < toy_layers) {
      CHECK(buf.gate_logits == expected_gate);
      CHECK(buf.keep == expected_keep);
      std::vector<index_t> kept_indptr{0};
      for (std::size_t b = 0; b < batch; ++b) {
        kept_indptr.push_back(kept_indptr.back() + expected_keep[b]);
        kept += expected_keep[b];
        dropped += 1 - expected_keep[b];
      }
      CHECK(buf.kept_indptr == kept_indptr);
    }
    check_same_cache(cache, expected_cache);
    advance_positions(host, make_host_span(pos));
  }
  if (output != nullptr && sparse < toy_layers) {
    // the inputs exercise both decisions
    CHECK(kept > 0);
    CHECK(dropped > 0);
  }
}

}  // namespace

TEST_CASE("decode_step (host): the online gate equals a step assembled token by token") {
  const auto c = toy_predictor_config();
  const output_predictor output(c, random_output_predictor_weights(c, 9));
  for (const index_t sparse : {0, 1, 2}) {
    CAPTURE(sparse);
    check_against_reference(online_gate_policy{sparse}, &output, sparse, 12);
  }
}

TEST_CASE("decode_step (host): StreamingLLM evictions and the full cache equal the reference") {
  const auto c = toy_predictor_config();
  const output_predictor output(c, random_output_predictor_weights(c, 19));
  check_against_reference(streaming_policy{1, 3}, static_cast<const no_predictor*>(nullptr), 1, 10);
  check_against_reference(full_cache_policy{}, static_cast<const no_predictor*>(nullptr), 1, 6);
  // sparse_layer == layers: no layer is gated, nothing runs the predictor
  check_against_reference(full_cache_policy{}, &output, toy_layers, 3);
  // without a gate the online gate's policy caches every token (every token counts as kept)
  check_against_reference(online_gate_policy{1}, static_cast<const no_predictor*>(nullptr), 1, 4);
}

TEST_CASE("decode_step (host): bad arguments are refused by name before anything changes") {
  const toy_host_decoder m;
  const auto c = toy_predictor_config();
  const output_predictor output(c, random_output_predictor_weights(c, 9));
  const online_gate_policy policy{1};
  auto cache = empty_cache();
  const auto tokens = tokens_at(0);
  const std::vector<index_t> pos(batch, 0);
  std::vector<float> logits(batch * toy_vocab);

  const auto refused_with = [&](const auto& pol, decode_buffers<host_t, float> b, const char* what,
                                host_span<const std::int32_t> t, host_span<const index_t> p,
                                host_span<float> out, const output_predictor* o, index_t sparse) {
    CAPTURE(what);
    bool threw = false;
    try {
      decode_step(host, m, cache, pol, o, sparse, t, p, b, out);
    } catch (const error& e) {
      threw = true;
      CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
    CHECK(threw);
    for (index_t l = 0; l < toy_layers; ++l) {
      for (std::size_t b2 = 0; b2 < batch; ++b2) CHECK(cache.length(l, b2) == 0);
    }
  };
  const auto refused =
      [&](decode_buffers<host_t, float> b, const char* what, host_span<const std::int32_t> t,
          host_span<const index_t> p, host_span<float> out, const output_predictor* o = nullptr,
          index_t sparse = 1) { refused_with(policy, b, what, t, p, out, o, sparse); };
  auto buf = step_buffers();
  const auto t = make_host_span(tokens);
  const auto p = make_host_span(pos);
  const auto out = make_host_span(logits);
  refused(buf.view(), "one token per sequence", t.subspan(0, batch - 1), p, out, &output);
  refused(buf.view(), "positions", t, p.subspan(0, batch - 1), out, &output);
  refused(buf.view(), "logits", t, p, out.subspan(0, 3), &output);
  refused(buf.view(), "sparse_layer", t, p, out, &output, toy_layers + 1);
  auto bad = buf.view();
  bad.hidden = bad.hidden.subspan(0, toy_hidden);
  refused(bad, "buf.hidden", t, p, out, &output);
  bad = buf.view();
  bad.gate.keep = {};
  refused(bad, "buf.gate.keep", t, p, out, &output);
  bad = buf.view();
  bad.retained_indptr = bad.retained_indptr.subspan(0, 2);
  refused(bad, "buf.retained_indptr", t, p, out, &output);
  // every buffer the step uses is checked before the first layer runs
  bad = buf.view();
  bad.keys = bad.keys.subspan(0, bad.keys.size() - 1);
  refused(bad, "buf.keys and buf.values", t, p, out, &output);
  bad = buf.view();
  bad.values = {};
  refused(bad, "buf.keys and buf.values", t, p, out, &output);
  bad = buf.view();
  bad.gate.logits = bad.gate.logits.subspan(0, 2);
  refused(bad, "buf.gate.logits must be [4, 2]", t, p, out, &output);
  bad = buf.view();
  bad.gate.kept_indptr = bad.gate.kept_indptr.subspan(0, batch);
  refused(bad, "buf.gate.kept_indptr", t, p, out, &output);
  bad = buf.view();
  bad.gate.kept_positions = bad.gate.kept_positions.subspan(0, 1);
  refused(bad, "buf.gate.kept_positions", t, p, out, &output);
  // StreamingLLM evicts: the retained lists need room for every token a layer holds
  bad = buf.view();
  bad.retained = bad.retained.subspan(0, batch - 1);
  refused_with(streaming_policy{1, 3}, bad, "buf.retained must hold the 4 tokens", t, p, out,
               nullptr, 1);
  // the policy and the gate disagree
  refused_with(online_gate_policy{0}, buf.view(),
               "layer 0 is below sparse_layer 1 and must cache every token", t, p, out, &output, 1);
  refused_with(online_gate_policy{2}, buf.view(),
               "an output predictor gates, but the policy caches gated-out tokens in layer 1", t, p,
               out, &output, 1);
  refused_with(full_cache_policy{}, buf.view(),
               "or no output predictor for a policy that ignores the gate", t, p, out, &output, 1);
  buf.indptr = {0, 1, 1, 3, 4};  // not one token per sequence
  refused(buf.view(), "buf.indptr[2]", t, p, out, &output);

  // a predictor of another width
  predictor_config wide = c;
  wide.hidden = 2 * toy_hidden;
  const output_predictor other(wide, random_output_predictor_weights(wide, 10));
  auto fine = step_buffers();
  refused(fine.view(), "reads width 16", t, p, out, &other);
}

TEST_CASE("decode_step (host): the layer hooks are called around every layer, in order") {
  /// Records the calls as strings.
  struct recording_hooks {
    std::vector<std::string> calls;
    layer_probes probes(index_t l) {
      calls.push_back("probes " + std::to_string(l));
      return {};
    }
    void appended(index_t l) { calls.push_back("appended " + std::to_string(l)); }
    host_ragged<const float> retention_scores(index_t l) {
      calls.push_back("scores " + std::to_string(l));
      return {};
    }
    void retained(index_t l, host_span<const index_t> kept_indptr, host_span<const index_t>) {
      calls.push_back("retained " + std::to_string(l) + " " +
                      std::to_string(kept_indptr[kept_indptr.size() - 1]));
    }
  };
  static_assert(layer_hooks<recording_hooks, host_t>);
  const toy_host_decoder m;
  std::vector<float> logits(batch * toy_vocab);
  const auto tokens = tokens_at(0);
  const std::vector<index_t> pos(batch, 0);

  auto cache = empty_cache();
  auto buf = step_buffers();
  recording_hooks streaming;
  decode_step(host, m, cache, streaming_policy{1, 3}, static_cast<const no_predictor*>(nullptr), 1,
              make_host_span(tokens), make_host_span(pos), buf.view(), make_host_span(logits),
              streaming);
  // StreamingLLM evicts in every layer (here nothing yet: 4 tokens held, one per sequence)
  CHECK(streaming.calls == std::vector<std::string>{"probes 0", "appended 0", "probes 1",
                                                    "appended 1", "probes 2", "appended 2",
                                                    "scores 0", "retained 0 4", "scores 1",
                                                    "retained 1 4", "scores 2", "retained 2 4"});

  auto gated_cache = empty_cache();
  const auto c = toy_predictor_config();
  const output_predictor output(c, random_output_predictor_weights(c, 9));
  recording_hooks gated;
  decode_step(host, m, gated_cache, online_gate_policy{1}, &output, 1, make_host_span(tokens),
              make_host_span(pos), buf.view(), make_host_span(logits), gated);
  // the online gate never evicts: no retention calls
  CHECK(gated.calls == std::vector<std::string>{"probes 0", "appended 0", "probes 1", "appended 1",
                                                "probes 2", "appended 2"});
}

// SPDX-License-Identifier: Apache-2.0
/// @file test_kv_policy_layer.cpp
/// @brief The layer-level half of `kv_policy` on the host policies (what the CUDA policies also
/// answer): `kept(host, ...)` equals `retain` sequence by sequence, with ragged batches, empty
/// sequences and adversarial scores; `evicts` says where a policy can drop a token; bad shapes
/// are errors naming the argument.
#include <dynllava/kvcache/policies/full_cache.hpp>
#include <dynllava/kvcache/policies/h2o.hpp>
#include <dynllava/kvcache/policies/online_gate.hpp>
#include <dynllava/kvcache/policies/streaming.hpp>

#include <support/errors.hpp>
#include <support/random.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace dynllava;
using dynllava::test::error_of;

namespace {

template <class P>
void check_kept_equals_retain(const P& policy, test::rng& g, index_t l) {
  constexpr std::size_t batch = 7;
  const auto held = test::random_lengths(g, batch, 90);
  std::vector<index_t> appended;
  for (index_t h : held) appended.push_back(h + static_cast<index_t>(g() % 50));
  const auto indptr = test::indptr_of(held);
  const auto scores =
      test::random_scores(g, static_cast<std::size_t>(indptr.back()), test::score_mix::adversarial);
  std::vector<index_t> out_indptr(batch + 1), out(static_cast<std::size_t>(indptr.back()));
  policy.kept(host, l, make_host_span(held), make_host_span(appended),
              host_ragged<const float>{make_host_span(indptr), make_host_span(scores)},
              make_host_span(out_indptr), make_host_span(out));
  CHECK(out_indptr[0] == 0);
  bool dropped = false;
  for (std::size_t b = 0; b < batch; ++b) {
    CAPTURE(b);
    std::vector<index_t> want(static_cast<std::size_t>(held[b]));
    const index_t n = policy.retain(
        l, kv_sequence_state{held[b], appended[b]},
        host_span<const float>(scores.data() + indptr[b], static_cast<std::size_t>(held[b])),
        make_host_span(want));
    want.resize(static_cast<std::size_t>(n));
    const std::vector<index_t> got(out.begin() + out_indptr[b], out.begin() + out_indptr[b + 1]);
    CHECK(got == want);
    dropped = dropped || n < held[b];
  }
  if (!policy.evicts(l)) CHECK_FALSE(dropped);
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("kv policy: layer-level kept equals retain sequence by sequence, for every policy") {
    static_assert(host_kv_policy<full_cache_policy> && host_kv_policy<online_gate_policy> &&
                  host_kv_policy<streaming_policy> && host_kv_policy<h2o_policy>);
    test::rng g(71);
    for (index_t l : {0, 1, 2, 5}) {
      CAPTURE(l);
      check_kept_equals_retain(full_cache_policy{}, g, l);
      check_kept_equals_retain(online_gate_policy{2}, g, l);
      check_kept_equals_retain(streaming_policy{4, 10}, g, l);
      check_kept_equals_retain(streaming_policy{0, 0}, g, l);
      check_kept_equals_retain(h2o_policy{0.4, 5, 2}, g, l);
      check_kept_equals_retain(h2o_policy{0.0, 0, 0}, g, l);
    }
    CHECK_FALSE(full_cache_policy{}.evicts(3));
    CHECK_FALSE(online_gate_policy{2}.evicts(3));
    CHECK(streaming_policy{}.evicts(0));
    CHECK_FALSE(h2o_policy{0.5, 4, 2}.evicts(1));
    CHECK(h2o_policy{0.5, 4, 2}.evicts(2));
  }

  TEST_CASE("kv policy: layer-level kept checks its shapes") {
    const std::vector<index_t> held{3, 2}, appended{3, 2}, indptr{0, 3, 5};
    const std::vector<float> scores(5, 1.0f);
    std::vector<index_t> out_indptr(3), out(5);
    const h2o_policy h2o{0.2, 1, 0};
    auto kept = [&](host_span<const index_t> a, host_ragged<const float> s, host_span<index_t> oi,
                    host_span<index_t> o) { h2o.kept(host, 0, make_host_span(held), a, s, oi, o); };
    const host_ragged<const float> ranked{make_host_span(indptr), make_host_span(scores)};
    CHECK(error_of([&] {
            kept(make_host_span(appended), ranked, host_span<index_t>(out_indptr.data(), 2),
                 make_host_span(out));
          })
              .find("h2o_policy::kept: appended and out_indptr must have batch = 2 and batch + 1 "
                    "entries, got 2 and 2") != std::string::npos);
    CHECK(error_of([&] {
            kept(make_host_span(appended),
                 host_ragged<const float>{make_host_span(indptr),
                                          host_span<const float>(scores.data(), 4)},
                 make_host_span(out_indptr), make_host_span(out));
          }).find("indptr[batch] must equal the number of elements it indexes (4), got 5") !=
          std::string::npos);
    const std::vector<index_t> other_indptr{0, 2, 5};
    CHECK(error_of([&] {
            kept(make_host_span(appended),
                 host_ragged<const float>{make_host_span(other_indptr), make_host_span(scores)},
                 make_host_span(out_indptr), make_host_span(out));
          }).find("scores of sequence 0 must have one entry per held token (3), got 2") !=
          std::string::npos);
    CHECK(error_of([&] {
            kept(make_host_span(appended), ranked, make_host_span(out_indptr),
                 host_span<index_t>(out.data(), 4));
          }).find("out must hold the 5 held tokens, got 4") != std::string::npos);
    const std::vector<index_t> fewer{2, 2};
    CHECK(error_of([&] {
            kept(make_host_span(fewer), ranked, make_host_span(out_indptr), make_host_span(out));
          }).find("sequence 0 holds 3 of 2 appended tokens") != std::string::npos);
    // H2O evicts here (budget 1 of 3) and has no scores: the per-sequence rule names them
    CHECK(error_of([&] {
            kept(make_host_span(appended), {}, make_host_span(out_indptr), make_host_span(out));
          }).find("scores must have one entry per held token") != std::string::npos);
    kept(make_host_span(appended), ranked, make_host_span(out_indptr), make_host_span(out));
    CHECK(out_indptr == std::vector<index_t>{0, 1, 2});
  }
}

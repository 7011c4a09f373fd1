// SPDX-License-Identifier: Apache-2.0
/// @file test_train_reference.cpp
/// @brief The CPU training operators against PyTorch autograd (fixture written by
/// tools/train_reference.py from the released Dynamic-LLaVA formulas, float64).
///
/// Tolerances: the fp64 instantiation must agree to 1e-9 (relative, absolute floor 1e-12; the
/// two sides sum in different orders); the fp32 instantiation to 2e-5 relative with an absolute
/// floor of 1e-6 (fp32 rounding of exp and of the row sums).
#include <dynllava/train/attention_mask.hpp>
#include <dynllava/train/budget_loss.hpp>
#include <dynllava/train/gumbel.hpp>
#include <dynllava/train/masked_softmax.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

using namespace dynllava;
using nlohmann::json;

namespace {

json load_fixture() {
  const std::string path = std::string(DYNLLAVA_FIXTURE_DIR) + "/train_reference.json";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  return json::parse(in);
}

template <class T>
std::vector<T> values(const json& j) {
  std::vector<T> out;
  for (const auto& v : j) out.push_back(static_cast<T>(v.get<double>()));
  return out;
}

template <class T>
void check_close(const std::vector<T>& got, const json& expected, double rel, double abs_floor,
                 const char* what) {
  const auto want = values<double>(expected);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]);
    const double tol = std::max(abs_floor, rel * std::abs(want[i]));
    CAPTURE(what);
    CAPTURE(i);
    CAPTURE(g);
    CAPTURE(want[i]);
    CHECK(std::abs(g - want[i]) <= tol);
  }
}

template <class T>
void run_masked_softmax(const json& c, double rel, double abs_floor) {
  const auto n = c["n"].get<index_t>();
  const auto heads = c["heads"].get<index_t>();
  const std::vector<index_t> indptr{0, n};
  masked_softmax_params p;
  p.heads = heads;
  p.causal = c["causal"].get<bool>();
  p.eps = c["eps"].get<double>();
  const auto scores = values<T>(c["scores"]);
  const auto keep = values<T>(c["keep"]);
  const auto up = values<T>(c["d_attn"]);
  const auto nn = static_cast<std::size_t>(n) * static_cast<std::size_t>(n);
  std::vector<T> mask(nn), attn(scores.size()), d_scores(scores.size()), d_mask(nn),
      d_keep(keep.size());
  // the released code applies the policy in sparse layers; the causal part of G is irrelevant
  // there (the causal bias zeroes those columns) and is what build_attention_mask writes
  cpu::build_attention_mask<T>(make_host_span(indptr), make_host_span(keep), make_host_span(mask),
                               {2, 2});
  cpu::masked_softmax_forward<T>(make_host_span(indptr), make_host_span(scores),
                                 make_host_span(std::as_const(mask)), make_host_span(attn), p);
  cpu::masked_softmax_backward<T>(make_host_span(indptr), make_host_span(scores),
                                  make_host_span(std::as_const(mask)), make_host_span(up),
                                  make_host_span(d_scores), make_host_span(d_mask), p);
  cpu::attention_mask_backward<T>(make_host_span(indptr), make_host_span(std::as_const(d_mask)),
                                  make_host_span(d_keep), {2, 2});
  if (!p.causal) {
    // without the causal bias the released policy applies to later columns too
    for (index_t i = 0; i < n; ++i) {
      for (index_t j = i + 1; j < n; ++j) {
        mask[static_cast<std::size_t>(i * n + j)] = keep[static_cast<std::size_t>(j)];
      }
    }
    cpu::masked_softmax_forward<T>(make_host_span(indptr), make_host_span(scores),
                                   make_host_span(std::as_const(mask)), make_host_span(attn), p);
    cpu::masked_softmax_backward<T>(make_host_span(indptr), make_host_span(scores),
                                    make_host_span(std::as_const(mask)), make_host_span(up),
                                    make_host_span(d_scores), make_host_span(d_mask), p);
    for (index_t j = 0; j < n; ++j) {
      T acc = T(0);
      for (index_t i = 0; i < n; ++i) {
        if (i != j) acc += d_mask[static_cast<std::size_t>(i * n + j)];
      }
      d_keep[static_cast<std::size_t>(j)] = acc;
    }
  }
  check_close(attn, c["attn"], rel, abs_floor, "attn");
  check_close(d_scores, c["d_scores"], rel, abs_floor, "d_scores");
  check_close(d_keep, c["d_keep"], rel, abs_floor, "d_keep");
}

template <class T>
void run_gumbel(const json& c, double rel, double abs_floor) {
  const auto logits = values<T>(c["logits"]);
  const auto noise = values<T>(c["noise"]);
  const auto d_keep = values<T>(c["d_keep"]);
  const double tau = c["tau"].get<double>();
  std::vector<T> keep(d_keep.size()), soft(d_keep.size()), d_logits(logits.size());
  cpu::gumbel_hard_forward<T>(make_host_span(logits), make_host_span(noise), tau,
                              make_host_span(keep), make_host_span(soft));
  cpu::gumbel_hard_backward<T>(make_host_span(logits), make_host_span(noise), tau,
                               make_host_span(d_keep), make_host_span(d_logits));
  check_close(keep, c["keep"], 0.0, 0.0, "keep");  // the one-hot decision matches exactly
  check_close(soft, c["soft"], rel, abs_floor, "soft");
  check_close(d_logits, c["d_logits"], rel, abs_floor, "d_logits");
}

template <class T>
void run_budget(const json& c, double rel, double abs_floor) {
  std::vector<index_t> img_indptr{0}, out_indptr{0};
  for (const auto& n : c["image_lengths"])
    img_indptr.push_back(img_indptr.back() + n.get<index_t>());
  for (const auto& n : c["output_lengths"])
    out_indptr.push_back(out_indptr.back() + n.get<index_t>());
  budget_loss_params p;
  p.image_keep_rate = c["image_keep_rate"].get<double>();
  p.output_keep_rate = c["output_keep_rate"].get<double>();
  p.min_output_tokens = c["min_output_tokens"].get<index_t>();
  p.weight = c["weight"].get<double>();
  const auto img = values<T>(c["image_mask"]);
  const auto out = values<T>(c["output_mask"]);
  std::vector<T> d_img(img.size()), d_out(out.size());
  const T loss = cpu::budget_loss_forward<T>(make_host_span(img_indptr), make_host_span(img),
                                             make_host_span(out_indptr), make_host_span(out), p);
  cpu::budget_loss_backward<T>(make_host_span(img_indptr), make_host_span(img),
                               make_host_span(out_indptr), make_host_span(out), T(1),
                               make_host_span(d_img), make_host_span(d_out), p);
  check_close(std::vector<T>{loss}, json::array({c["loss"]}), rel, abs_floor, "loss");
  check_close(d_img, c["d_image_mask"], rel, abs_floor, "d_image_mask");
  check_close(d_out, c["d_output_mask"], rel, abs_floor, "d_output_mask");
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("train operators match PyTorch autograd (fixture from tools/train_reference.py)") {
    const json f = load_fixture();
    REQUIRE(f["masked_softmax"].size() >= 4);
    REQUIRE(f["gumbel"].size() >= 2);
    REQUIRE(f["budget"].size() >= 2);
    SUBCASE("masked softmax, fp64") {
      for (const auto& c : f["masked_softmax"]) run_masked_softmax<double>(c, 1e-9, 1e-12);
    }
    SUBCASE("masked softmax, fp32") {
      for (const auto& c : f["masked_softmax"]) run_masked_softmax<float>(c, 2e-5, 1e-6);
    }
    SUBCASE("gumbel, fp64") {
      for (const auto& c : f["gumbel"]) run_gumbel<double>(c, 1e-9, 1e-12);
    }
    SUBCASE("gumbel, fp32") {
      for (const auto& c : f["gumbel"]) run_gumbel<float>(c, 2e-5, 1e-6);
    }
    SUBCASE("budget loss, fp64") {
      for (const auto& c : f["budget"]) run_budget<double>(c, 1e-9, 1e-12);
    }
    SUBCASE("budget loss, fp32") {
      for (const auto& c : f["budget"]) run_budget<float>(c, 2e-5, 1e-6);
    }
  }
}

// SPDX-License-Identifier: Apache-2.0
// The CLIP vision tower and the LLaVA projector: against a double-precision reference written
// here (direct convolution, textbook attention), against Hugging Face transformers'
// CLIPVisionModel and torch's Linear-GELU-Linear (tests/fixtures/clip, made by
// tools/clip_reference.py), and their errors.
#include <dynllava/core/clip_config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/io/load_clip.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/model/clip.hpp>
#include <dynllava/model/clip_weights.hpp>
#include <dynllava/model/llava_config.hpp>
#include <dynllava/model/projector.hpp>

#include "support/fixtures.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace dynllava;

namespace {

std::vector<float> random_pixels(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

using dvec = std::vector<double>;

/// Double-precision LayerNorm of `rows` rows of `d`.
dvec ref_layer_norm(const dvec& x, std::size_t d, const nn::layer_norm_weights& w, double eps) {
  dvec y(x.size());
  for (std::size_t r = 0; r < x.size() / d; ++r) {
    double mean = 0, var = 0;
    for (std::size_t i = 0; i < d; ++i) mean += x[r * d + i];
    mean /= static_cast<double>(d);
    for (std::size_t i = 0; i < d; ++i) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
    var /= static_cast<double>(d);
    for (std::size_t i = 0; i < d; ++i) {
      y[r * d + i] = (x[r * d + i] - mean) / std::sqrt(var + eps) * w.gamma[i] + w.beta[i];
    }
  }
  return y;
}

/// Double-precision `x W^T + b`.
dvec ref_linear(const dvec& x, const nn::linear_weights& w) {
  const auto in = static_cast<std::size_t>(w.in), out = static_cast<std::size_t>(w.out);
  const std::size_t rows = x.size() / in;
  dvec y(rows * out);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t o = 0; o < out; ++o) {
      double s = w.bias.empty() ? 0.0 : w.bias[o];
      for (std::size_t i = 0; i < in; ++i) s += x[r * in + i] * w.weight[o * in + i];
      y[r * out + o] = s;
    }
  }
  return y;
}

/// Hidden states `[T, D]` of layer `layer` for one image `px [C, S, S]`, computed the textbook
/// way: a direct convolution, then attention with explicit scores and softmax per head.
dvec ref_tower(const clip_config& c, const clip_weights& w, const float* px, index_t layer) {
  const auto D = static_cast<std::size_t>(c.hidden), C = static_cast<std::size_t>(c.channels);
  const auto S = static_cast<std::size_t>(c.image_size), P = static_cast<std::size_t>(c.patch_size);
  const auto G = static_cast<std::size_t>(c.grid()), T = G * G + 1;
  const auto heads = static_cast<std::size_t>(c.heads), hd = D / heads;
  dvec h(T * D);
  for (std::size_t d = 0; d < D; ++d) h[d] = w.class_embed[d];
  for (std::size_t gy = 0; gy < G; ++gy) {
    for (std::size_t gx = 0; gx < G; ++gx) {
      for (std::size_t d = 0; d < D; ++d) {
        double s = 0;
        for (std::size_t ch = 0; ch < C; ++ch) {
          for (std::size_t ky = 0; ky < P; ++ky) {
            for (std::size_t kx = 0; kx < P; ++kx) {
              s += static_cast<double>(w.patch_embed.weight[((d * C + ch) * P + ky) * P + kx]) *
                   px[(ch * S + gy * P + ky) * S + gx * P + kx];
            }
          }
        }
        h[(1 + gy * G + gx) * D + d] = s;
      }
    }
  }
  for (std::size_t i = 0; i < T * D; ++i) h[i] += w.position_embed[i];
  h = ref_layer_norm(h, D, w.pre_norm, c.layer_norm_eps);
  for (index_t l = 0; l < layer; ++l) {
    const auto& lw = w.layers[static_cast<std::size_t>(l)];
    const dvec x = ref_layer_norm(h, D, lw.norm1, c.layer_norm_eps);
    const dvec q = ref_linear(x, lw.q_proj), k = ref_linear(x, lw.k_proj),
               v = ref_linear(x, lw.v_proj);
    dvec att(T * D, 0.0);
    for (std::size_t hh = 0; hh < heads; ++hh) {
      for (std::size_t i = 0; i < T; ++i) {
        dvec p(T);
        double mx = -1e300, sum = 0;
        for (std::size_t j = 0; j < T; ++j) {
          double s = 0;
          for (std::size_t e = 0; e < hd; ++e) s += q[i * D + hh * hd + e] * k[j * D + hh * hd + e];
          p[j] = s / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, p[j]);
        }
        for (auto& pj : p) sum += (pj = std::exp(pj - mx));
        for (std::size_t j = 0; j < T; ++j) {
          for (std::size_t e = 0; e < hd; ++e) {
            att[i * D + hh * hd + e] += p[j] / sum * v[j * D + hh * hd + e];
          }
        }
      }
    }
    const dvec o = ref_linear(att, lw.out_proj);
    for (std::size_t i = 0; i < T * D; ++i) h[i] += o[i];
    dvec m = ref_linear(ref_layer_norm(h, D, lw.norm2, c.layer_norm_eps), lw.fc1);
    for (auto& z : m) {
      z = c.activation == clip_activation::quick_gelu
              ? z / (1.0 + std::exp(-1.702 * z))
              : 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
    }
    const dvec o2 = ref_linear(m, lw.fc2);
    for (std::size_t i = 0; i < T * D; ++i) h[i] += o2[i];
  }
  return h;
}

/// The largest `|a - b|` over the largest `|b|`.
template <class A, class B>
double relative_gap(const A& a, const B& b) {
  REQUIRE(a.size() == b.size());
  double gap = 0, top = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    gap = std::max(gap, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    top = std::max(top, std::abs(static_cast<double>(b[i])));
  }
  REQUIRE(top > 0);
  return gap / top;
}

/// Rows `[first, first + count)` of each of `images` blocks of `rows` rows of `d` values.
template <class V>
V take_rows(const V& x, std::size_t images, std::size_t rows, std::size_t first, std::size_t count,
            std::size_t d) {
  V out;
  for (std::size_t b = 0; b < images; ++b) {
    const auto* start = x.data() + (b * rows + first) * d;
    out.insert(out.end(), start, start + count * d);
  }
  return out;
}

/// The committed transformers fixture.
struct hf_fixture {
  std::filesystem::path dir = test::fixture_dir() / "clip";
  clip_config config;
  std::size_t batch = 0;
  index_t text_hidden = 0, projector_layer = 0;
  io::safetensors_file reference{dir / "reference.safetensors"};
  hf_fixture() {
    std::ifstream in(dir / "expected.json");
    const auto j = nlohmann::json::parse(in);
    config.image_size = j.at("image_size").get<index_t>();
    config.patch_size = j.at("patch_size").get<index_t>();
    config.channels = j.at("channels").get<index_t>();
    config.hidden = j.at("hidden").get<index_t>();
    config.layers = j.at("layers").get<index_t>();
    config.heads = j.at("heads").get<index_t>();
    config.intermediate = j.at("intermediate").get<index_t>();
    config.layer_norm_eps = j.at("layer_norm_eps").get<float>();
    REQUIRE(j.at("activation").get<std::string>() == "quick_gelu");
    config.activation = clip_activation::quick_gelu;
    batch = j.at("batch").get<std::size_t>();
    text_hidden = j.at("text_hidden").get<index_t>();
    projector_layer = j.at("projector_layer").get<index_t>();
  }
  projector_config projector() const {
    return {projector_type::mlp2x_gelu, config.hidden, text_hidden};
  }
};

const projector_names llava_names{"model.mm_projector.0", "model.mm_projector.2"};

}  // namespace

TEST_SUITE("clip") {
  TEST_CASE("clip tower: every layer and both features match a double-precision reference") {
    clip_config quick{28, 7, 3, 16, 2, 2, 24, 1e-5f, clip_activation::quick_gelu};
    clip_config exact{42, 14, 2, 16, 3, 4, 32, 1e-6f, clip_activation::gelu};
    for (const auto& c : {quick, exact}) {
      CAPTURE(c.image_size);
      const clip_weights w = random_clip_weights(c, 11);
      const clip_vision_tower tower(c, w);
      const std::size_t images = 3;
      const auto px = random_pixels(images * tower.pixels_per_image(), 5);
      const auto D = static_cast<std::size_t>(c.hidden);
      const auto T = static_cast<std::size_t>(c.num_positions());
      for (index_t layer = 0; layer <= c.layers; ++layer) {
        CAPTURE(layer);
        dvec ref;
        for (std::size_t b = 0; b < images; ++b) {
          const dvec r = ref_tower(c, w, px.data() + b * tower.pixels_per_image(), layer);
          ref.insert(ref.end(), r.begin(), r.end());
        }
        const auto all = tower.encode(px, images, layer, vision_select_feature::cls_patch);
        CHECK(relative_gap(all, ref) < 1e-5);
        const auto patches = tower.encode(px, images, layer, vision_select_feature::patch);
        CHECK(patches.size() == images * (T - 1) * D);
        CHECK(patches == take_rows(all, images, T, 1, T - 1, D));
      }
    }
  }

  TEST_CASE(
      "clip tower: an image's features depend neither on the batch nor on the layers held beyond "
      "the one taken") {
    const clip_config c{42, 14, 3, 16, 3, 4, 32, 1e-5f, clip_activation::quick_gelu};
    const clip_vision_tower full(c, random_clip_weights(c, 3));
    const clip_vision_tower first_two(c, random_clip_weights(c, 3, 2));
    CHECK(first_two.held_layers() == 2);
    const std::size_t per = full.pixels_per_image();
    const auto px = random_pixels(3 * per, 8);
    const auto batch = full.encode(px, 3, 2, vision_select_feature::patch);
    const std::size_t rows_d = static_cast<std::size_t>(c.num_patches() * c.hidden);
    for (std::size_t b = 0; b < 3; ++b) {
      const std::vector<float> one(px.begin() + static_cast<std::ptrdiff_t>(b * per),
                                   px.begin() + static_cast<std::ptrdiff_t>((b + 1) * per));
      const auto alone = full.encode(one, 1, 2, vision_select_feature::patch);
      CHECK(std::equal(alone.begin(), alone.end(),
                       batch.begin() + static_cast<std::ptrdiff_t>(b * rows_d)));
    }
    // The random table draws in order, so the two-layer tower holds the full one's first two.
    CHECK(first_two.encode(px, 3, 2, vision_select_feature::patch) == batch);
    CHECK(full.encode(px, 3, 3, vision_select_feature::patch) != batch);
    CHECK(full.encode(std::vector<float>{}, 0, 1, vision_select_feature::patch).empty());
  }

  TEST_CASE("clip tower: matches transformers' CLIPVisionModel hidden states") {
    const hf_fixture f;
    const io::checkpoint ckpt(f.dir / "model.safetensors");
    const clip_vision_tower tower(f.config, load_clip_weights(ckpt, f.config, "vision_model."));
    const auto px = f.reference.read_f32("pixel_values");
    const auto D = static_cast<std::size_t>(f.config.hidden);
    const auto T = static_cast<std::size_t>(f.config.num_positions());
    for (index_t layer = 0; layer <= f.config.layers; ++layer) {
      CAPTURE(layer);
      const auto expected = f.reference.read_f32("hidden_states." + std::to_string(layer));
      const auto all = tower.encode(px, f.batch, layer, vision_select_feature::cls_patch);
      CHECK(relative_gap(all, expected) < 1e-4);
      const auto patches = tower.encode(px, f.batch, layer, vision_select_feature::patch);
      CHECK(relative_gap(patches, take_rows(expected, f.batch, T, 1, T - 1, D)) < 1e-4);
    }
    // LLaVA's way: hold only the layers up to the selected one (-2 = the second-to-last).
    llava_config lc;
    lc.vision = f.config;
    const index_t select = lc.vision_layer();
    REQUIRE(select == f.config.layers - 1);
    const clip_vision_tower short_tower(f.config,
                                        load_clip_weights(ckpt, f.config, "vision_model.", select));
    CHECK(short_tower.held_layers() == select);
    CHECK(short_tower.encode(px, f.batch, select, vision_select_feature::patch) ==
          tower.encode(px, f.batch, select, vision_select_feature::patch));
  }

  TEST_CASE("projector: mlp2x_gelu matches torch and linear a double-precision reference") {
    const hf_fixture f;
    const io::checkpoint ckpt(f.dir / "projector.safetensors");
    const projector proj(f.projector(), load_projector_weights(ckpt, f.projector(), llava_names));
    const auto x = f.reference.read_f32("projector_input");
    const auto expected = f.reference.read_f32("projector_output");
    CHECK(relative_gap(proj.apply(x), expected) < 1e-4);

    // Tower then projector, as LLaVA runs them.
    const io::checkpoint tower_ckpt(f.dir / "model.safetensors");
    const clip_vision_tower tower(
        f.config, load_clip_weights(tower_ckpt, f.config, "vision_model.", f.projector_layer));
    const auto feats = tower.encode(f.reference.read_f32("pixel_values"), f.batch,
                                    f.projector_layer, vision_select_feature::patch);
    CHECK(relative_gap(proj.apply(feats), expected) < 1e-4);

    // `linear` reads only the first Linear.
    projector_config lin = f.projector();
    lin.type = projector_type::linear;
    const projector_weights lw = load_projector_weights(ckpt, lin, {"model.mm_projector.0", ""});
    CHECK(lw.second.weight.empty());
    const projector linear_proj(lin, lw);
    const dvec ref = ref_linear(dvec(x.begin(), x.end()), lw.first);
    CHECK(relative_gap(linear_proj.apply(x), ref) < 1e-5);
    CHECK(relative_gap(linear_proj.apply(x), expected) > 1e-2);  // not the mlp2x_gelu result

    // Random weights have the declared shapes.
    const projector_config rc{projector_type::mlp2x_gelu, 8, 12};
    const projector rp(rc, random_projector_weights(rc, 1));
    CHECK(rp.apply(random_pixels(3 * 8, 2)).size() == 3 * 12);
  }

  TEST_CASE("clip tower and projector: bad input and mismatched checkpoints are clear errors") {
    const hf_fixture f;
    const io::checkpoint ckpt(f.dir / "model.safetensors");
    const clip_vision_tower tower(f.config, load_clip_weights(ckpt, f.config, "vision_model.", 2));
    const std::vector<float> px(f.batch * tower.pixels_per_image(), 0.5f);
    CHECK_THROWS_WITH_AS(
        tower.encode(std::vector<float>(px.size() - 1), f.batch, 1, vision_select_feature::patch),
        doctest::Contains("pixel_values must be [images = 2, C = 3, S = 56, S = 56] (18816 "
                          "values), got 18815 values"),
        error);
    CHECK_THROWS_WITH_AS(tower.encode(px, f.batch, 3, vision_select_feature::patch),
                         doctest::Contains("layer 3 is not in [0, 2]"), error);
    CHECK_THROWS_WITH_AS(tower.encode(px, f.batch, -1, vision_select_feature::patch),
                         doctest::Contains("layer -1 is not in [0, 2]"), error);
    std::vector<float> out(10);
    CHECK_THROWS_WITH_AS(tower.encode(make_host_span(px), f.batch, 1, vision_select_feature::patch,
                                      make_host_span(out)),
                         doctest::Contains("out must be [images = 2, rows = 16, D = 32]"), error);

    // The config disagrees with the checkpoint.
    clip_config wide = f.config;
    wide.hidden = 64;
    wide.heads = 4;
    CHECK_THROWS_WITH_AS(
        load_clip_weights(ckpt, wide, "vision_model."),
        doctest::Contains("tensor \"vision_model.embeddings.patch_embedding.weight\" "
                          "has shape [32, 3, 14, 14], expected [64, 3, 14, 14]"),
        error);
    clip_config bigger = f.config;
    bigger.image_size = 70;
    CHECK_THROWS_WITH_AS(load_clip_weights(ckpt, bigger, "vision_model."),
                         doctest::Contains("position_embedding.weight\" has shape [17, 32], "
                                           "expected [26, 32]"),
                         error);
    clip_config deeper = f.config;
    deeper.layers = 4;
    CHECK_THROWS_WITH_AS(
        load_clip_weights(ckpt, deeper, "vision_model."),
        doctest::Contains(
            "missing tensor \"vision_model.encoder.layers.3.self_attn.q_proj.weight\""),
        error);
    CHECK_THROWS_WITH_AS(load_clip_weights(ckpt, f.config, "vision_tower.vision_model."),
                         doctest::Contains("missing tensor \""
                                           "vision_tower.vision_model.embeddings.patch_embedding"),
                         error);
    CHECK_THROWS_WITH_AS(load_clip_weights(ckpt, f.config, "vision_model.", 4),
                         doctest::Contains("4 layers requested of a 3-layer tower"), error);
    clip_config odd = f.config;
    odd.heads = 5;
    CHECK_THROWS_WITH_AS(load_clip_weights(ckpt, odd, "vision_model."),
                         doctest::Contains("must be a positive multiple of heads"), error);

    // Weights of another config given to the tower.
    clip_config small = f.config;
    small.intermediate = 48;
    CHECK_THROWS_WITH_AS(clip_vision_tower(small, random_clip_weights(f.config, 1)),
                         doctest::Contains("linear encoder.layers.0.mlp.fc1 must be [out = 48"),
                         error);
    clip_weights w = random_clip_weights(f.config, 1);
    w.position_embed.pop_back();
    CHECK_THROWS_WITH_AS(clip_vision_tower(f.config, w),
                         doctest::Contains("embeddings.position_embedding.weight must be [17, 32]"),
                         error);
    CHECK_THROWS_WITH_AS(clip_vision_tower(small, random_clip_weights(small, 1, 1))
                             .encode(px, f.batch, 2, vision_select_feature::patch),
                         doctest::Contains("layer 2 is not in [0, 1]"), error);

    // The projector.
    const io::checkpoint pckpt(f.dir / "projector.safetensors");
    CHECK_THROWS_WITH_AS(
        load_projector_weights(
            pckpt, f.projector(),
            {"multi_modal_projector.linear_1", "multi_modal_projector.linear_2"}),
        doctest::Contains("missing tensor \"multi_modal_projector.linear_1.weight\""), error);
    projector_config wrong = f.projector();
    wrong.text_hidden = 64;
    CHECK_THROWS_WITH_AS(
        load_projector_weights(pckpt, wrong, llava_names),
        doctest::Contains("tensor \"model.mm_projector.0.weight\" has shape [48, 32], "
                          "expected [64, 32]"),
        error);
    const projector proj(f.projector(), load_projector_weights(pckpt, f.projector(), llava_names));
    CHECK_THROWS_WITH_AS(proj.apply(std::vector<float>(33)),
                         doctest::Contains("x must be [rows, D = 32] and out [rows, H = 48]"),
                         error);
    projector_config lin = f.projector();
    lin.type = projector_type::linear;
    CHECK_THROWS_WITH_AS(projector(lin, load_projector_weights(pckpt, f.projector(), llava_names)),
                         doctest::Contains("a linear projector has no second Linear"), error);
    CHECK_THROWS_WITH_AS(projector_config({projector_type::linear, 0, 4}).validate(),
                         doctest::Contains("vision_hidden (0) and text_hidden (4) must be > 0"),
                         error);
  }
}

// SPDX-License-Identifier: Apache-2.0
// The nn/ blocks against straightforward double-precision formulas, and llama_model's
// cache-less overload.
#include <dynllava/core/error.hpp>
#include <dynllava/core/half.hpp>
#include <dynllava/core/keep_margin.hpp>
#include <dynllava/io/load_llama.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/model/llama.hpp>
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/attention.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/nn/exp.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/online_softmax.hpp>
#include <dynllava/nn/parallel.hpp>
#include <dynllava/nn/pointwise.hpp>
#include <dynllava/nn/rms_norm.hpp>
#include <dynllava/nn/rope.hpp>
#include <dynllava/nn/tensor_table.hpp>
#include <dynllava/nn/widen.hpp>

#include "support/fixtures.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace dynllava;

namespace {

std::vector<float> random_values(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

double max_abs_diff(const std::vector<float>& got, const std::vector<double>& ref) {
  REQUIRE(got.size() == ref.size());
  double e = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) e = std::max(e, std::abs(got[i] - ref[i]));
  return e;
}

/// Keys and values of `m` cached tokens, stored in reverse order so that the view is not
/// contiguous (each token is its own segment), except tokens 1 and 2, which lie back to back.
struct scattered_cache {
  std::vector<float> k, v;
  std::vector<std::size_t> slot;
  std::size_t width;
  scattered_cache(std::size_t m, std::size_t w, std::uint64_t seed)
      : k(random_values(m * w, seed)), v(random_values(m * w, seed + 1)), slot(m), width(w) {
    for (std::size_t i = 0; i < m; ++i) slot[i] = m - 1 - i;
    if (m >= 4) {
      slot[1] = 0;
      slot[2] = 1;
      slot[0] = m - 1;
      for (std::size_t i = 3; i < m; ++i) slot[i] = m - 1 - (i - 2);
    }
  }
  index_t size() const { return static_cast<index_t>(slot.size()); }
  const float* key(index_t i) const { return k.data() + slot[static_cast<std::size_t>(i)] * width; }
  const float* value(index_t i) const {
    return v.data() + slot[static_cast<std::size_t>(i)] * width;
  }
};
static_assert(nn::kv_view<scattered_cache>);

/// Double-precision attention of `n` rows over `m` cached keys then the rows' own.
template <class V>
std::vector<double> reference_attention(const V& cached, const std::vector<float>& q,
                                        const std::vector<float>& k, const std::vector<float>& v,
                                        std::size_t n, std::size_t heads, std::size_t hd,
                                        bool causal, std::vector<double>* mass) {
  const std::size_t w = heads * hd, m = static_cast<std::size_t>(cached.size());
  auto key = [&](std::size_t j) {
    return j < m ? cached.key(static_cast<index_t>(j)) : k.data() + (j - m) * w;
  };
  auto val = [&](std::size_t j) {
    return j < m ? cached.value(static_cast<index_t>(j)) : v.data() + (j - m) * w;
  };
  std::vector<double> out(n * w, 0.0);
  if (mass) mass->assign(m + n, 0.0);
  for (std::size_t r = 0; r < n; ++r) {
    const std::size_t visible = causal ? m + r + 1 : m + n;
    for (std::size_t h = 0; h < heads; ++h) {
      std::vector<double> s(visible);
      double mx = -INFINITY;
      for (std::size_t j = 0; j < visible; ++j) {
        double dot = 0.0;
        for (std::size_t c = 0; c < hd; ++c)
          dot += double(q[r * w + h * hd + c]) * key(j)[h * hd + c];
        s[j] = dot / std::sqrt(double(hd));
        mx = std::max(mx, s[j]);
      }
      double sum = 0.0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (std::size_t j = 0; j < visible; ++j) {
        const double p = s[j] / sum;
        if (mass) (*mass)[j] += p;
        for (std::size_t c = 0; c < hd; ++c) out[r * w + h * hd + c] += p * val(j)[h * hd + c];
      }
    }
  }
  return out;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("nn: stored_matrix keeps fp16 and bf16 in their width and widens them exactly") {
    // 1.5, -2, 0.099609375 (exact in both), +inf; f16 bits and bf16 bits, little-endian, at an
    // odd address.
    const std::vector<std::uint16_t> f16 = {0x3E00, 0xC000, 0x2E60, 0x7C00};
    const std::vector<std::uint16_t> bf16 = {0x3FC0, 0xC000, 0x3DCC, 0x7F80};
    for (const auto& [type, bits] :
         {std::pair{nn::element_type::f16, f16}, std::pair{nn::element_type::bf16, bf16}}) {
      std::vector<std::byte> buf(1 + 2 * bits.size());
      for (std::size_t i = 0; i < bits.size(); ++i) {
        buf[1 + 2 * i] = std::byte(bits[i] & 0xFF);
        buf[2 + 2 * i] = std::byte(bits[i] >> 8);
      }
      auto owner = std::make_shared<std::vector<std::byte>>(buf);
      const auto m = nn::stored_matrix::view(type, owner->data() + 1, 2, 2, owner);
      CHECK(m.f32() == nullptr);
      CHECK(m.bytes() == 8);
      CHECK(!m.owned());
      std::vector<float> out(4);
      m.widen_rows(0, 2, out.data());
      CHECK(out[0] == 1.5f);
      CHECK(out[1] == -2.0f);
      CHECK(std::abs(out[2] - 0.1f) < 1e-3f);
      CHECK(std::isinf(out[3]));
      CHECK(m[2] == out[2]);
      CHECK_THROWS_WITH_AS(const_cast<nn::stored_matrix&>(m).values(),
                           doctest::Contains("view of stored bytes is read-only"), error);
    }
    // An unaligned fp32 view is widened too, an aligned one is read in place.
    std::vector<float> v = {1, 2, 3, 4, 5, 6};
    auto owner = std::make_shared<std::vector<std::byte>>(4 * v.size() + 1);
    std::memcpy(owner->data() + 1, v.data(), 4 * v.size());
    const auto unaligned =
        nn::stored_matrix::view(nn::element_type::f32, owner->data() + 1, 2, 3, owner);
    CHECK(unaligned.f32() == nullptr);
    CHECK(unaligned == nn::stored_matrix(v, 2, 3));
    CHECK_THROWS_WITH_AS(nn::stored_matrix(v, 4, 2), doctest::Contains("6 values cannot be [4, 2]"),
                         error);
  }

  TEST_CASE("nn: exp_shifted is within 2 ulp of std::exp and the same on every path") {
    std::vector<float> xs;
    std::mt19937 gen(11);
    std::uniform_real_distribution<float> u(-100.0f, 90.0f);
    for (int i = 0; i < 100003; ++i) xs.push_back(u(gen));
    for (float f : {0.0f, -0.0f, 1.0f, -1.0f, 88.7f, 88.8f, -87.3f, -87.4f, -200.0f, INFINITY,
                    -INFINITY, NAN, 1e-8f, -1e-8f})
      xs.push_back(f);
    std::vector<float> fast = xs, one = xs;
    nn::exp_shifted(fast.data(), fast.size(), 0.25f);
    std::size_t differ = 0, bad = 0;
    double worst = 0.0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      one[i] = nn::detail::exp_one(xs[i] - 0.25f);
      const bool same =
          std::bit_cast<std::uint32_t>(fast[i]) == std::bit_cast<std::uint32_t>(one[i]) ||
          (std::isnan(fast[i]) && std::isnan(one[i]));
      differ += same ? 0 : 1;
      const float want = std::exp(xs[i] - 0.25f);
      if (std::isnan(want)) {
        bad += std::isnan(fast[i]) ? 0 : 1;
      } else if (want < 1.1754944e-38f) {
        bad += fast[i] == 0.0f ? 0 : 1;  // below FLT_MIN: 0
      } else if (std::isinf(want)) {
        bad += fast[i] == want ? 0 : 1;
      } else {
        worst = std::max(worst, std::abs(double(fast[i]) - want) / want);
      }
    }
    CHECK(differ == 0);  // the AVX2 path (where it runs) computes the portable path's values
    CHECK(bad == 0);
    CHECK(worst <= 2.5 * 5.96e-8);
  }

  TEST_CASE("nn: bulk widening of every fp16 and bf16 bit pattern equals the scalar conversion") {
    // All 65536 patterns, at an odd address, lengths that leave a tail after the 8-wide paths.
    std::vector<std::byte> bytes(1 + 2 * 65536);
    for (std::uint32_t b = 0; b < 65536; ++b) {
      bytes[1 + 2 * b] = std::byte(b & 0xFF);
      bytes[2 + 2 * b] = std::byte(b >> 8);
    }
    for (std::size_t n : {std::size_t{65536}, std::size_t{65531}, std::size_t{7}}) {
      std::vector<float> h(n), bf(n);
      nn::widen_f16(bytes.data() + 1, n, h.data());
      nn::widen_bf16(bytes.data() + 1, n, bf.data());
      std::size_t bad = 0;
      for (std::size_t b = 0; b < n; ++b) {
        const float eh = half_bits_to_float(static_cast<std::uint16_t>(b));
        const float eb = bfloat16_bits_to_float(static_cast<std::uint16_t>(b));
        const bool ok_h =
            std::isnan(eh) ? std::isnan(h[b])
                           : std::bit_cast<std::uint32_t>(eh) == std::bit_cast<std::uint32_t>(h[b]);
        const bool ok_b = std::isnan(eb) ? std::isnan(bf[b])
                                         : std::bit_cast<std::uint32_t>(eb) ==
                                               std::bit_cast<std::uint32_t>(bf[b]);
        bad += (ok_h ? 0 : 1) + (ok_b ? 0 : 1);
      }
      CHECK(bad == 0);
    }
  }

  TEST_CASE("nn: linear over bf16 and f16 weights equals linear over their fp32 values") {
    // in 4096: a GEMV takes blocks of 16 rows of W and a GEMM blocks of 256, so 300 outputs
    // span several blocks either way.
    const std::size_t in = 4096, out = 300;
    std::vector<float> wf = random_values(in * out, 7);
    for (auto type : {nn::element_type::bf16, nn::element_type::f16}) {
      // Store the values rounded to the type (the fp32 twin holds the same values).
      auto owner = std::make_shared<std::vector<std::byte>>(2 * wf.size());
      std::vector<float> exact(wf.size());
      for (std::size_t i = 0; i < wf.size(); ++i) {
        std::uint32_t u;
        std::memcpy(&u, &wf[i], 4);
        // bf16: the top half of the fp32 bits; f16: sign, an exponent giving magnitudes in
        // [2^-3, 2^1), and 10 mantissa bits of the fp32 value.
        const auto b = type == nn::element_type::bf16
                           ? static_cast<std::uint16_t>(u >> 16)
                           : static_cast<std::uint16_t>(((u >> 16) & 0x8000u) |
                                                        ((12u + i % 4u) << 10) | (u & 0x3FFu));
        (*owner)[2 * i] = std::byte(b & 0xFF);
        (*owner)[2 * i + 1] = std::byte(b >> 8);
        exact[i] =
            type == nn::element_type::bf16 ? bfloat16_bits_to_float(b) : half_bits_to_float(b);
      }
      const nn::linear_weights stored{
          nn::stored_matrix::view(type, owner->data(), static_cast<index_t>(out),
                                  static_cast<index_t>(in), owner),
          random_values(out, 8), static_cast<index_t>(in), static_cast<index_t>(out)};
      const nn::linear_weights twin{
          nn::stored_matrix(exact, static_cast<index_t>(out), static_cast<index_t>(in)),
          stored.bias, stored.in, stored.out};
      for (std::size_t rows : {1u, 5u}) {
        const auto x = random_values(rows * in, 9 + rows);
        const auto a = nn::linear(x, rows, stored);
        const auto b = nn::linear(x, rows, twin);
        std::vector<double> bd(b.begin(), b.end());
        CHECK(max_abs_diff(a, bd) < 1e-4);
      }
    }
  }

  TEST_CASE("nn: linear with and without bias, one row and many") {
    const std::size_t in = 37, out = 11;
    nn::linear_weights w{nn::stored_matrix(random_values(in * out, 1), 11, 37),
                         random_values(out, 2), 37, 11};
    for (std::size_t rows : {1u, 3u, 70u}) {
      const auto x = random_values(rows * in, 3 + rows);
      for (bool bias : {true, false}) {
        auto wb = w;
        if (!bias) wb.bias.clear();
        std::vector<double> ref(rows * out);
        for (std::size_t r = 0; r < rows; ++r) {
          for (std::size_t o = 0; o < out; ++o) {
            double s = bias ? w.bias[o] : 0.0;
            for (std::size_t i = 0; i < in; ++i) s += double(x[r * in + i]) * w.weight[o * in + i];
            ref[r * out + o] = s;
          }
        }
        std::vector<float> got(rows * out, NAN);  // NaN: never read, even without a bias
        nn::linear(x.data(), rows, wb, got.data());
        CHECK(max_abs_diff(got, ref) < 1e-5);
        CHECK(max_abs_diff(nn::linear(x, rows, wb), ref) < 1e-5);
      }
    }
    CHECK_THROWS_WITH_AS(nn::linear(std::vector<float>(5), 1, w),
                         doctest::Contains("x must hold rows * in = 37 values, got 5"), error);
  }

  TEST_CASE("nn: RMSNorm and LayerNorm") {
    const std::size_t rows = 4, d = 19;
    const auto x = random_values(rows * d, 5);
    const auto g = random_values(d, 6), b = random_values(d, 7);
    std::vector<double> rms(rows * d), ln(rows * d);
    for (std::size_t r = 0; r < rows; ++r) {
      double ss = 0, mean = 0, var = 0;
      for (std::size_t i = 0; i < d; ++i)
        ss += double(x[r * d + i]) * x[r * d + i], mean += x[r * d + i];
      const double dd = double(d);
      mean /= dd;
      for (std::size_t i = 0; i < d; ++i) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
      var /= dd;
      for (std::size_t i = 0; i < d; ++i) {
        rms[r * d + i] = x[r * d + i] / std::sqrt(ss / dd + 1e-5) * g[i];
        ln[r * d + i] = (x[r * d + i] - mean) / std::sqrt(var + 1e-5) * g[i] + b[i];
      }
    }
    std::vector<float> got(rows * d);
    nn::rms_norm(x.data(), rows, g, 1e-5f, got.data());
    CHECK(max_abs_diff(got, rms) < 1e-5);
    nn::layer_norm(x.data(), rows, nn::layer_norm_weights{g, b}, 1e-5f, got.data());
    CHECK(max_abs_diff(got, ln) < 1e-5);
  }

  TEST_CASE("nn: the pointwise formulas the CUDA twins share") {
    // nn/cuda/kernel_rows.cuh computes GELU, LayerNorm's outputs and the keep margin with these
    // host/device functions; the host blocks use the same ones.
    for (float x : {-6.0f, -1.5f, -0.3f, 0.0f, 0.2f, 1.0f, 4.5f, 1e30f}) {
      CHECK(nn::gelu(x) == nn::gelu_erf(x));
      CHECK(nn::gelu_erf(x) ==
            static_cast<float>(0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f))));
    }
    CHECK(std::isnan(nn::gelu_erf(NAN)));
    CHECK(nn::layer_norm_value(3.0f, 1.0f, 0.5f, 2.0f, -1.0f) == 1.0f);
    CHECK(keep_margin(2.5f, -1.0f) == 3.5f);
    CHECK(std::isnan(keep_margin(NAN, 0.0f)));
    CHECK(keep_margin(INFINITY, 0.0f) == INFINITY);
    // The host LayerNorm writes layer_norm_value of its (double-accumulated) statistics.
    const std::vector<float> x{1.0f, -2.0f, 4.0f, 0.5f}, g{1.0f, 2.0f, -0.5f, 1.5f},
        b{0.0f, 0.25f, -1.0f, 2.0f};
    std::vector<float> y(4);
    nn::layer_norm(x.data(), 1, nn::layer_norm_weights{g, b}, 1e-5f, y.data());
    double mean = 0, var = 0;
    for (float v : x) mean += v;
    mean /= 4;
    for (float v : x) var += (v - mean) * (v - mean);
    var /= 4;
    const auto inv = static_cast<float>(1.0 / std::sqrt(var + 1e-5));
    for (std::size_t i = 0; i < 4; ++i) {
      CHECK(y[i] == nn::layer_norm_value(x[i], static_cast<float>(mean), inv, g[i], b[i]));
    }
  }

  TEST_CASE("nn: GELU, quick GELU, SiLU, SwiGLU") {
    for (float x : {-6.0f, -1.5f, -0.3f, 0.0f, 0.2f, 1.0f, 4.5f}) {
      const double xd = x;
      CHECK(nn::gelu(x) ==
            doctest::Approx(0.5 * xd * (1.0 + std::erf(xd / std::sqrt(2.0)))).epsilon(1e-6));
      CHECK(nn::quick_gelu(x) == doctest::Approx(xd / (1.0 + std::exp(-1.702 * xd))).epsilon(1e-6));
      CHECK(nn::silu(x) == doctest::Approx(xd / (1.0 + std::exp(-xd))).epsilon(1e-6));
    }
    std::vector<float> gate{-2.0f, 0.5f, 3.0f}, up{1.5f, -2.0f, 0.25f};
    nn::swiglu_inplace(gate.data(), up.data(), gate.size());
    CHECK(gate[0] == doctest::Approx(-2.0 / (1.0 + std::exp(2.0)) * 1.5).epsilon(1e-6));
    CHECK(gate[1] == doctest::Approx(0.5 / (1.0 + std::exp(-0.5)) * -2.0).epsilon(1e-6));
    CHECK(gate[2] == doctest::Approx(3.0 / (1.0 + std::exp(-3.0)) * 0.25).epsilon(1e-6));
    std::vector<float> q{-1.0f, 2.0f};
    nn::quick_gelu_inplace(q.data(), q.size());
    CHECK(q[1] == doctest::Approx(2.0 / (1.0 + std::exp(-3.404)))
                      .epsilon(1e-6));  // the bulk forms over more than one chunk, values whose
                                        // exponential under- and overflows
    std::vector<float> xs = random_values(1000, 8), ups = random_values(1000, 9);
    for (auto& x : xs) x *= 30.0f;
    xs[0] = -200.0f;
    xs[1] = 200.0f;
    std::vector<float> qg = xs, sw = xs;
    nn::quick_gelu_inplace(qg.data(), qg.size());
    nn::swiglu_inplace(sw.data(), ups.data(), sw.size());
    std::size_t far = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double x = xs[i];
      // the exponent rounded to float, as computed (the rounding is amplified by exp itself)
      const double want_q = x / (1.0 + std::exp(double(-1.702f * xs[i]))),
                   want_s = x / (1.0 + std::exp(-x)) * ups[i];
      far += std::abs(qg[i] - want_q) <= 1e-6 * std::abs(want_q) + 1e-30 ? 0 : 1;
      far += std::abs(sw[i] - want_s) <= 1e-6 * std::abs(want_s) + 1e-30 ? 0 : 1;
    }
    CHECK(far == 0);
  }

  TEST_CASE("nn: RoPE from the table and past its end equals the rotate-half formula") {
    const std::size_t heads = 3, hd = 8;
    const nn::rope_table rope(static_cast<index_t>(hd), 10000.0, 16);
    CHECK(rope.positions() == 16);
    for (index_t pos : {0, 5, 15, 16, 300}) {  // 16 and 300: computed, not in the table
      auto x = random_values(heads * hd, 9 + static_cast<std::uint64_t>(pos));
      std::vector<double> ref(x.size());
      for (std::size_t h = 0; h < heads; ++h) {
        for (std::size_t i = 0; i < hd / 2; ++i) {
          const double a = std::pow(10000.0, -2.0 * double(i) / double(hd)) * pos;
          const double x0 = x[h * hd + i], x1 = x[h * hd + i + hd / 2];
          ref[h * hd + i] = x0 * std::cos(a) - x1 * std::sin(a);
          ref[h * hd + i + hd / 2] = x1 * std::cos(a) + x0 * std::sin(a);
        }
      }
      rope.apply(x.data(), heads, pos);
      CHECK(max_abs_diff(x, ref) < 1e-5);
    }
    CHECK_THROWS_WITH_AS(nn::rope_table(7, 10000.0, 4),
                         doctest::Contains("head_dim must be even and > 0, got 7"), error);
    std::vector<float> row(hd);
    CHECK_THROWS_WITH_AS(rope.apply(row.data(), 1, -1),
                         doctest::Contains("position must be >= 0, got -1"), error);
  }

  TEST_CASE("nn: attention, causal over a scattered cache and non-causal, one block and several") {
    const std::size_t heads = 2, hd = 4, w = heads * hd;
    struct shape {
      std::size_t m, n;
      bool causal;
    };
    for (const shape s : {shape{5, 4, true}, shape{0, 6, false}, shape{0, 140, true},
                          shape{7, 1, true}, shape{4, 130, false}}) {
      CAPTURE(s.m);
      CAPTURE(s.n);
      CAPTURE(s.causal);
      const scattered_cache cache(s.m, w, 20 + s.m);
      // q, k, v packed in one [n, 3w] buffer, as in the image predictor
      const auto qkv = random_values(s.n * 3 * w, 30 + s.n);
      std::vector<float> q(s.n * w), k(s.n * w), v(s.n * w);
      for (std::size_t r = 0; r < s.n; ++r) {
        std::copy_n(qkv.begin() + r * 3 * w, w, q.begin() + r * w);
        std::copy_n(qkv.begin() + r * 3 * w + w, w, k.begin() + r * w);
        std::copy_n(qkv.begin() + r * 3 * w + 2 * w, w, v.begin() + r * w);
      }
      std::vector<double> ref_mass;
      const auto ref = reference_attention(cache, q, k, v, s.n, heads, hd, s.causal, &ref_mass);
      std::vector<float> out(s.n * w, NAN), mass(s.m + s.n, 0.0f);
      nn::attention({static_cast<index_t>(heads), static_cast<index_t>(hd), s.causal}, cache,
                    {qkv.data(), 3 * w}, {qkv.data() + w, 3 * w}, {qkv.data() + 2 * w, 3 * w}, s.n,
                    out.data(), w, mass.data());
      CHECK(max_abs_diff(out, ref) < 1e-5);
      CHECK(max_abs_diff(mass, ref_mass) < 1e-4);
    }
  }

  TEST_CASE("nn: the CUDA attention kernel's row loop (online softmax) equals nn::attention") {
    // what bidirectional_attention_kernel runs per (query row, head), on the host
    const auto emulate = [](const std::vector<float>& qkv, std::size_t n, std::size_t heads,
                            std::size_t hd) {
      const std::size_t w = heads * hd;
      const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
      std::vector<float> out(n * w);
      for (std::size_t h = 0; h < heads; ++h) {
        for (std::size_t i = 0; i < n; ++i) {
          const float* q = qkv.data() + i * 3 * w + h * hd;
          std::vector<float> acc(hd, 0.0f);
          nn::online_softmax softmax;
          for (std::size_t j = 0; j < n; ++j) {
            const float* k = qkv.data() + j * 3 * w + w + h * hd;
            const float* v = qkv.data() + j * 3 * w + 2 * w + h * hd;
            float dot = 0.0f;
            for (std::size_t c = 0; c < hd; ++c) dot += q[c] * k[c];
            const nn::online_softmax_step step = softmax.add(dot * scale);
            for (std::size_t c = 0; c < hd; ++c)
              acc[c] = acc[c] * step.rescale + step.weight * v[c];
          }
          for (std::size_t c = 0; c < hd; ++c) out[i * w + h * hd + c] = acc[c] / softmax.sum();
        }
      }
      return out;
    };
    struct shape {
      std::size_t n, heads, hd;
      float spread;  // scales the queries: large values make the running maximum move a lot
    };
    for (const shape s : {shape{1, 8, 8, 1.0f}, shape{33, 8, 8, 1.0f}, shape{97, 2, 64, 1.0f},
                          shape{40, 4, 16, 60.0f}, shape{577, 1, 8, 3.0f}}) {
      CAPTURE(s.n);
      CAPTURE(s.spread);
      const std::size_t w = s.heads * s.hd;
      auto qkv = random_values(s.n * 3 * w, 40 + s.n);
      for (std::size_t r = 0; r < s.n; ++r) {
        for (std::size_t c = 0; c < w; ++c) qkv[r * 3 * w + c] *= s.spread;
      }
      std::vector<float> expected(s.n * w);
      nn::attention({static_cast<index_t>(s.heads), static_cast<index_t>(s.hd), false},
                    nn::no_cached_kv{}, {qkv.data(), 3 * w}, {qkv.data() + w, 3 * w},
                    {qkv.data() + 2 * w, 3 * w}, s.n, expected.data(), w);
      const auto got = emulate(qkv, s.n, s.heads, s.hd);
      double worst = 0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - expected[i]));
      }
      CHECK(worst < 2e-5);
    }
  }

  TEST_CASE("nn: online_softmax steps: -inf logits weigh nothing, rescaling is exact") {
    nn::online_softmax s;
    auto step = s.add(-INFINITY);
    CHECK(step.rescale == 1.0f);
    CHECK(step.weight == 0.0f);
    CHECK(s.sum() == 0.0f);  // only -inf so far: the weighted sum is 0 / 0, as torch gives NaN
    step = s.add(2.0f);
    CHECK(step.rescale == 0.0f);  // the nothing accumulated so far stays nothing
    CHECK(step.weight == 1.0f);
    step = s.add(-INFINITY);
    CHECK(step.rescale == 1.0f);
    CHECK(step.weight == 0.0f);
    step = s.add(2.0f + std::log(3.0f));  // a new maximum: the old terms shrink by 1/3
    CHECK(step.rescale == doctest::Approx(1.0f / 3.0f));
    CHECK(step.weight == 1.0f);
    CHECK(s.sum() == doctest::Approx(1.0f + 1.0f / 3.0f));
    step = s.add(0.0f);  // below the maximum: weight exp(0 - max), nothing rescaled
    CHECK(step.rescale == 1.0f);
    CHECK(step.weight == doctest::Approx(std::exp(-(2.0f + std::log(3.0f)))));
  }

  TEST_CASE("nn: exp_shifted_sum and row_max are the same on every path, lane sums in order") {
    std::mt19937 gen(5);
    std::uniform_real_distribution<float> u(-30.0f, 30.0f);
    for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9},
                          std::size_t{23}, std::size_t{577}, std::size_t{100003}}) {
      CAPTURE(n);
      std::vector<float> xs(n);
      for (auto& x : xs) x = u(gen);
      const float mx = nn::row_max(xs.data(), n);
      CHECK(mx == *std::max_element(xs.begin(), xs.end()));
      std::vector<float> fused = xs, plain = xs;
      const float sum = nn::exp_shifted_sum(fused.data(), n, mx);
      nn::exp_shifted(plain.data(), n, mx);
      CHECK(fused == plain);
      // the AVX2 path (where it runs) adds exactly as the portable lanes do
      CHECK(std::bit_cast<std::uint32_t>(sum) ==
            std::bit_cast<std::uint32_t>(nn::detail::lane_sum(plain.data(), n)));
      double ref = 0.0;
      for (float x : plain) ref += x;
      CHECK(std::abs(sum - ref) <= 1e-5 * ref);
    }
  }

  TEST_CASE("nn: parallel_for runs every task once and rethrows a task's exception") {
    for (std::size_t workers : {std::size_t{1}, std::size_t{2}, std::size_t{5}}) {
      CAPTURE(workers);
      std::vector<int> runs(37, 0);
      std::vector<int> seen_worker(37, -1);
      nn::parallel_for(runs.size(), workers, [&](std::size_t t, std::size_t w) {
        ++runs[t];
        seen_worker[t] = static_cast<int>(w);
      });
      CHECK(std::count(runs.begin(), runs.end(), 1) == 37);
      for (int w : seen_worker) CHECK((w >= 0 && w < static_cast<int>(workers)));
      CHECK_THROWS_WITH_AS(nn::parallel_for(runs.size(), workers,
                                            [&](std::size_t t, std::size_t) {
                                              if (t == 3) throw error("task 3 failed");
                                            }),
                           doctest::Contains("task 3 failed"), error);
    }
    nn::parallel_for(0, 2, [](std::size_t, std::size_t) { FAIL("no task to run"); });
  }

  TEST_CASE("nn: parallel_for from inside a task, from two threads at once, and after fork") {
    nn::set_thread_count(3);
    // nested: the inner call finds the pool busy and starts its own threads
    std::vector<std::atomic<int>> runs(8 * 5);
    nn::parallel_for(8, 3, [&](std::size_t t, std::size_t) {
      nn::parallel_for(5, 2, [&](std::size_t u, std::size_t) { ++runs[t * 5 + u]; });
    });
    for (const auto& r : runs) CHECK(r.load() == 1);
    // concurrent callers: one gets the pool, the other its own threads; both complete
    std::vector<std::atomic<int>> a(200), b(200);
    for (int round = 0; round < 20; ++round) {
      std::thread other(
          [&] { nn::parallel_for(a.size(), 3, [&](std::size_t t, std::size_t) { ++a[t]; }); });
      nn::parallel_for(b.size(), 3, [&](std::size_t t, std::size_t) { ++b[t]; });
      other.join();
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].load() == 20);
      CHECK(b[i].load() == 20);
    }
    // a child process has none of the pool's threads: its calls start their own
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      std::atomic<int> sum{0};
      nn::parallel_for(10, 3, [&](std::size_t t, std::size_t) { sum += static_cast<int>(t); });
      _exit(sum.load() == 45 ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    nn::set_thread_count(1);
  }

  TEST_CASE("nn: linear, norms, activations and adds give the same bits on 1, 2 and 3 threads") {
    struct shape {
      std::size_t rows, in, out;
    };
    // GEMVs and GEMMs large enough to split, outputs not a multiple of the 64-column pieces
    const shape shapes[] = {
        {1, 512, 1000}, {1, 1024, 4100}, {7, 512, 3000}, {600, 512, 1000}, {577, 256, 4161}};
    for (const shape sh : shapes) {
      CAPTURE(sh.rows);
      CAPTURE(sh.out);
      const auto x = random_values(sh.rows * sh.in, 60 + sh.out);
      const auto wv = random_values(sh.in * sh.out, 61);
      auto owner = std::make_shared<std::vector<std::byte>>(2 * wv.size());
      for (std::size_t i = 0; i < wv.size(); ++i) {
        const auto h = static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(wv[i]) >> 16);
        std::memcpy(owner->data() + 2 * i, &h, 2);
      }
      const nn::linear_weights f32{
          nn::stored_matrix(wv, static_cast<index_t>(sh.out), static_cast<index_t>(sh.in)),
          random_values(sh.out, 62), static_cast<index_t>(sh.in), static_cast<index_t>(sh.out)};
      const nn::linear_weights b16{
          nn::stored_matrix::view(nn::element_type::bf16, owner->data(),
                                  static_cast<index_t>(sh.out), static_cast<index_t>(sh.in), owner),
          {},
          f32.in,
          f32.out};
      std::vector<std::vector<float>> got;
      for (int threads : {1, 2, 3}) {
        nn::set_thread_count(threads);
        got.push_back(nn::linear(x, sh.rows, f32));
        got.push_back(nn::linear(x, sh.rows, b16));
      }
      nn::set_thread_count(1);
      for (std::size_t i = 2; i < got.size(); ++i) CHECK(got[i] == got[i % 2]);
    }
    const std::size_t rows = 300, d = 1024, n = rows * d;
    const auto x = random_values(n, 70), y = random_values(n, 71);
    const nn::layer_norm_weights ln{random_values(d, 72), random_values(d, 73)};
    std::vector<std::vector<float>> got;
    for (int threads : {1, 2, 3}) {
      nn::set_thread_count(threads);
      std::vector<float> a(n), b(n), c = x, e = x, g = x, h = x;
      nn::layer_norm(x.data(), rows, ln, 1e-5f, a.data());
      nn::rms_norm(x.data(), rows, ln.gamma, 1e-6f, b.data());
      nn::quick_gelu_inplace(c.data(), n - 5);  // a ragged end
      nn::gelu_inplace(e.data(), n - 5);
      nn::swiglu_inplace(g.data(), y.data(), n - 3);
      nn::add_inplace(h.data(), y.data(), n - 1);
      for (auto* v : {&a, &b, &c, &e, &g, &h}) got.push_back(*v);
    }
    nn::set_thread_count(1);
    for (std::size_t i = 6; i < got.size(); ++i) CHECK(got[i] == got[i % 6]);
  }

  TEST_CASE("nn: attention on two threads equals one thread bit for bit, key mass included") {
    const std::size_t heads = 4, hd = 16, w = heads * hd;
    struct shape {
      std::size_t m, n;
      bool causal;
    };
    for (const shape s : {shape{0, 300, false}, shape{9, 290, true}, shape{600, 1, true}}) {
      CAPTURE(s.m);
      CAPTURE(s.n);
      CAPTURE(s.causal);
      const scattered_cache cache(s.m, w, 40 + s.m);
      const auto q = random_values(s.n * w, 50), k = random_values(s.n * w, 51),
                 v = random_values(s.n * w, 52);
      std::vector<double> ref_mass;
      const auto ref = reference_attention(cache, q, k, v, s.n, heads, hd, s.causal, &ref_mass);
      std::vector<std::vector<float>> outs, masses;
      for (int threads : {1, 2}) {
        nn::set_thread_count(threads);
        for (bool with_mass : {true, false}) {
          std::vector<float> out(s.n * w, NAN), mass(s.m + s.n, 0.5f);
          nn::attention({static_cast<index_t>(heads), static_cast<index_t>(hd), s.causal}, cache,
                        {q.data(), w}, {k.data(), w}, {v.data(), w}, s.n, out.data(), w,
                        with_mass ? mass.data() : nullptr);
          outs.push_back(out);
          if (with_mass) masses.push_back(mass);
        }
      }
      nn::set_thread_count(1);
      CHECK(nn::thread_count() == 1);
      for (const auto& o : outs) CHECK(o == outs.front());
      CHECK(masses[0] == masses[1]);
      CHECK(max_abs_diff(outs.front(), ref) < 1e-5);
      for (auto& x : masses[0]) x -= 0.5f;  // added to, not overwritten
      CHECK(max_abs_diff(masses[0], ref_mass) < 1e-3);
    }
  }

  TEST_CASE("nn: thread count and tensor tables") {
    CHECK_THROWS_WITH_AS(nn::set_thread_count(0), doctest::Contains("threads must be >= 1, got 0"),
                         error);
    nn::set_thread_count(1);
    CHECK(nn::thread_count() == 1);
    const llama_config c{16, 2, 2, 24, 10};
    CHECK(c.head_dim == 8);
    // the table gives names and shapes once; random init is deterministic in its order
    std::vector<std::string> names;
    llama_weights shaped;
    visit_tensors(shaped, c, [&](const nn::tensor_spec& s, auto&) {
      names.push_back(s.name + " " + s.shape_string());
    });
    CHECK(names.size() == 1 + 2 * 9 + 2);
    CHECK(names.front() == "model.embed_tokens.weight [10, 16]");
    CHECK(names[3] == "model.layers.0.self_attn.k_proj.weight [16, 16]");
    CHECK(names[8] == "model.layers.0.mlp.up_proj.weight [24, 16]");
    CHECK(names.back() == "lm_head.weight [10, 16]");
    CHECK(shaped.layers.size() == 2);
    CHECK(shaped.layers[1].w_down.in == 24);
    const auto a = random_llama_weights(c, 3), b = random_llama_weights(c, 3);
    CHECK(a.layers[1].w_up.weight == b.layers[1].w_up.weight);
    CHECK(a.embed == b.embed);
    auto bad = a;
    bad.layers.pop_back();
    CHECK_THROWS_WITH_AS(validate(bad, c),
                         doctest::Contains("llama weights: layers: expected 2 entries, got 1"),
                         error);
    bad = a;
    bad.final_norm.push_back(1.0f);
    CHECK_THROWS_WITH_AS(
        validate(bad, c),
        doctest::Contains("model.norm.weight must be [16] (16 values), got 17 values"), error);
  }

  TEST_CASE("llama_model: layer without a cache takes nullptr and equals an empty cache") {
    const llama_config c{16, 2, 2, 24, 10};
    const llama_model model(c, random_llama_weights(c, 4));
    const std::vector<index_t> indptr{0, 3, 5};
    const std::vector<index_t> pos{0, 1, 2, 0, 1};
    const auto h0 = random_values(5 * 16, 8);
    auto h1 = h0, h2 = h0;
    std::vector<float> k1(h0.size()), v1(h0.size()), k2(h0.size()), v2(h0.size());
    model.layer(1, {make_host_span(indptr), make_host_span(h1), 16}, make_host_span(pos), nullptr,
                make_host_span(k1), make_host_span(v1));
    contiguous_kv_cache empty({2, 2, 16, 8});
    model.layer(1, {make_host_span(indptr), make_host_span(h2), 16}, make_host_span(pos), &empty,
                make_host_span(k2), make_host_span(v2));
    CHECK(h1 == h2);
    CHECK(k1 == k2);
    CHECK(v1 == v2);
    CHECK(h1 != h0);
    // the decoder concept's tagged call takes nullptr too
    auto h3 = h0;
    std::vector<float> k3(h0.size()), v3(h0.size());
    model.layer(host, 1, {make_host_span(indptr), make_host_span(h3), 16}, make_host_span(pos),
                nullptr, make_host_span(k3), make_host_span(v3));
    CHECK(h3 == h1);
    CHECK(k3 == k1);
    llama_config odd = c;
    odd.head_dim = 4;  // 2 heads of 4 != hidden 16
    CHECK_THROWS_WITH_AS(llama_model(odd, random_llama_weights(c, 4)),
                         doctest::Contains("heads (2) * head_dim (4) must equal hidden (16)"),
                         error);
  }

  TEST_CASE("llama weights: a safetensors checkpoint written from the table loads back") {
    const llama_config c{8, 2, 2, 12, 5};
    const llama_weights w = random_llama_weights(c, 5);
    // header and data from the table itself, under a prefix, plus an unrelated tensor
    std::string header = "{", data;
    visit_tensors(w, c, [&](const nn::tensor_spec& s, const auto& stored) {
      std::vector<float> v(stored.size());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = stored[i];
      header += "\"lm." + s.name + "\":{\"dtype\":\"F32\",\"shape\":[";
      for (std::size_t i = 0; i < s.shape.size(); ++i)
        header += (i ? "," : "") + std::to_string(s.shape[i]);
      header += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
                std::to_string(data.size() + 4 * v.size()) + "]},";
      data.append(reinterpret_cast<const char*>(v.data()), 4 * v.size());
    });
    header += "\"vision.x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(data.size()) + "," + std::to_string(data.size() + 4) + "]}}";
    data.append(4, '\0');
    std::string bytes(8, '\0');
    for (std::size_t i = 0; i < 8; ++i)
      bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    test::temp_dir dir("llama-load");
    test::write_file(dir.path / "m.safetensors", bytes + header + data);
    const io::checkpoint ckpt(dir.path / "m.safetensors");
    const llama_weights got = load_llama_weights(ckpt, c, "lm.");
    CHECK(got.embed == w.embed);
    CHECK(got.layers[1].w_down.weight == w.layers[1].w_down.weight);
    CHECK(got.layers[1].w_down.in == 12);
    CHECK(got.lm_head.weight == w.lm_head.weight);
    CHECK(got.final_norm == w.final_norm);
    llama_config three = c;
    three.layers = 3;
    CHECK_THROWS_WITH_AS(
        load_llama_weights(ckpt, three, "lm."),
        doctest::Contains("missing tensor \"lm.model.layers.2.input_layernorm.weight\""), error);
    llama_config wide = c;
    wide.intermediate = 16;
    CHECK_THROWS_WITH_AS(
        load_llama_weights(ckpt, wide, "lm."),
        doctest::Contains(
            "lm.model.layers.0.mlp.gate_proj.weight\" has shape [12, 8], expected [16, 8]"),
        error);
  }
}

// SPDX-License-Identifier: Apache-2.0
/// @file clip_preprocess.cpp
/// @brief LLaVA-1.5 / CLIPImageProcessor preprocessing; see clip_preprocess.hpp.
#include "clip_preprocess.hpp"

#include <dynllava/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace dynllava::llava {
namespace {

/// PIL keeps 8 bits for the result and 2 for overflow of the (possibly negative) taps.
constexpr int precision_bits = 32 - 8 - 2;

/// PIL's bicubic kernel, a = -0.5, support 2.
double bicubic(double x) noexcept {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/// The taps of one resampling direction: output `i` reads inputs `first[i] .. first[i] +
/// count[i] - 1` with fixed-point weights `weights[i * ksize ..]`.
struct taps {
  int ksize = 0;
  std::vector<int> first;    // [out]
  std::vector<int> count;    // [out]
  std::vector<int> weights;  // [out, ksize]
};

/// PIL's `precompute_coeffs` and `normalize_coeffs_8bpc` for the box `[0, in)`.
taps make_taps(int in, int out) {
  const float in0 = 0.0F;
  const auto in1 = static_cast<float>(in);
  const double scale = static_cast<double>(in1 - in0) / out;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<std::size_t>(out));
  t.count.resize(static_cast<std::size_t>(out));
  t.weights.assign(static_cast<std::size_t>(out) * static_cast<std::size_t>(t.ksize), 0);
  std::vector<double> k(static_cast<std::size_t>(t.ksize));
  for (int xx = 0; xx < out; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = bicubic((x + xmin - center + 0.5) * ss);
      k[static_cast<std::size_t>(x)] = w;
      ww += w;
    }
    int* dst = t.weights.data() + static_cast<std::ptrdiff_t>(xx) * t.ksize;
    for (int x = 0; x < xmax; ++x) {
      double w = k[static_cast<std::size_t>(x)];
      if (ww != 0.0) w /= ww;
      const double fixed = w * (1 << precision_bits);
      dst[x] = static_cast<int>(w < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    t.first[static_cast<std::size_t>(xx)] = xmin;
    t.count[static_cast<std::size_t>(xx)] = std::max(xmax, 0);
  }
  return t;
}

std::uint8_t clip8(int v) noexcept {
  return static_cast<std::uint8_t>(std::clamp(v >> precision_bits, 0, 255));
}

/// Output `i`'s taps restricted to the inputs `[begin, end)` (the image on its canvas): the
/// inputs `[lo, lo + count)` they read there, their weights from `k`, and `outside`, the weight
/// sum of the taps that fall on the canvas around it.
struct split_tap {
  int lo = 0;
  int count = 0;
  const int* k = nullptr;
  int outside = 0;
};

split_tap split(const taps& t, std::size_t i, int begin, int end) noexcept {
  const int first = t.first[i];
  const int* k = &t.weights[i * static_cast<std::size_t>(t.ksize)];
  const int lo = std::clamp(first, begin, end);
  const int hi = std::clamp(first + t.count[i], begin, end);
  int outside = 0;
  for (int x = 0; x < t.count[i]; ++x) {
    if (first + x < lo || first + x >= hi) outside += k[x];
  }
  const int count = std::max(hi - lo, 0);
  return {lo, count, count > 0 ? k + (lo - first) : k, outside};
}

/// One output pixel from `count` inputs `stride` bytes apart plus `colour` weighted by
/// `colour_weight` (the taps that read a uniform canvas).
void convolve(const std::uint8_t* src, std::ptrdiff_t stride, const int* k, int count,
              std::array<std::uint8_t, 3> colour, int colour_weight, std::uint8_t* dst) noexcept {
  const int half = 1 << (precision_bits - 1);
  int s0 = half + colour[0] * colour_weight;
  int s1 = half + colour[1] * colour_weight;
  int s2 = half + colour[2] * colour_weight;
  for (int i = 0; i < count; ++i) {
    const std::uint8_t* p = src + i * stride;
    s0 += p[0] * k[i];
    s1 += p[1] * k[i];
    s2 += p[2] * k[i];
  }
  dst[0] = clip8(s0);
  dst[1] = clip8(s1);
  dst[2] = clip8(s2);
}

std::size_t bytes_of(std::int64_t w, std::int64_t h) { return static_cast<std::size_t>(w * h * 3); }

/// PIL's two-pass resize of a `canvas_w x canvas_h` canvas of `colour` with `image` at
/// `(ox, oy)`; the canvas is never materialised (every row of pure colour is resampled once).
rgb_image resize_on_canvas(const rgb_image& image, int canvas_w, int canvas_h, int ox, int oy,
                           std::array<std::uint8_t, 3> colour, int out_w, int out_h,
                           std::int64_t max_work_pixels) {
  DYNLLAVA_EXPECTS(out_w > 0 && out_h > 0, "resize_bicubic: the output size {}x{} is not positive",
                   out_w, out_h);
  DYNLLAVA_EXPECTS(
      std::int64_t{out_w} * canvas_h <= max_work_pixels &&
          std::int64_t{out_w} * out_h <= max_work_pixels,
      "resize_bicubic: resizing {}x{} to {}x{} needs more than the budget of {} work pixels",
      canvas_w, canvas_h, out_w, out_h, max_work_pixels);
  const bool need_horizontal = out_w != canvas_w;
  const bool need_vertical = out_h != canvas_h;
  const taps vert = make_taps(canvas_h, out_h);

  // Canvas row y: the image's row itself when it spans the canvas, else `row`, [canvas_w, 3],
  // which keeps the colour outside the image's columns (filled once, the image part rewritten).
  std::vector<std::uint8_t> row;
  bool dirty = false;  // `row` holds an image row
  const bool padded_columns = ox != 0 || canvas_w != image.width;
  const auto canvas_row = [&](int y) -> const std::uint8_t* {
    const bool inside = y >= oy && y < oy + image.height;
    if (inside && !padded_columns) return image.at(0, y - oy);
    if (row.empty()) {
      row.resize(bytes_of(canvas_w, 1));
      for (int x = 0; x < canvas_w; ++x) {
        std::copy(colour.begin(), colour.end(), &row[bytes_of(x, 1)]);
      }
    }
    const std::size_t from = bytes_of(ox, 1);
    const std::size_t span = bytes_of(image.width, 1);
    if (inside) {
      std::copy_n(image.at(0, y - oy), span, &row[from]);
      dirty = true;
    } else if (dirty) {
      for (int x = 0; x < image.width; ++x) {
        std::copy(colour.begin(), colour.end(), &row[from + bytes_of(x, 1)]);
      }
      dirty = false;
    }
    return row.data();
  };

  // Horizontal pass over the rows the vertical pass reads: [rows, out_w, 3]. A tap's sum splits
  // exactly (integer arithmetic) into the image columns it reads and `colour` times the weights
  // of the canvas columns outside the image, so each image row costs the image columns its taps
  // read, never the canvas width: a thin image on a wide padded square stays linear in its size.
  int row0 = 0;
  int rows = canvas_h;
  int width = canvas_w;
  std::vector<std::uint8_t> tmp;
  std::vector<std::uint8_t> colour_row;  // [width, 3]: what a canvas row of pure colour gives
  if (need_horizontal) {
    row0 = vert.first.front();
    rows = vert.first.back() + vert.count.back() - row0;
    width = out_w;
    const taps horiz = make_taps(canvas_w, out_w);
    // Per output column: its taps split at the image's columns, and what pure colour gives.
    std::vector<split_tap> columns(static_cast<std::size_t>(out_w));
    colour_row.resize(bytes_of(out_w, 1));
    for (int xx = 0; xx < out_w; ++xx) {
      const auto i = static_cast<std::size_t>(xx);
      columns[i] = split(horiz, i, ox, ox + image.width);
      int all = columns[i].outside;
      for (int x = 0; x < columns[i].count; ++x) all += columns[i].k[x];
      for (std::size_t c = 0; c < 3; ++c) {
        colour_row[bytes_of(xx, 1) + c] = clip8((1 << (precision_bits - 1)) + colour[c] * all);
      }
    }
    tmp.resize(bytes_of(out_w, rows));
    for (int y = 0; y < rows; ++y) {
      const int cy = row0 + y;
      std::uint8_t* dst = &tmp[bytes_of(out_w, y)];
      if (cy < oy || cy >= oy + image.height) {
        std::copy(colour_row.begin(), colour_row.end(), dst);
        continue;
      }
      const std::uint8_t* src = image.at(0, cy - oy);
      for (int xx = 0; xx < out_w; ++xx) {
        const split_tap& t = columns[static_cast<std::size_t>(xx)];
        std::uint8_t* out = dst + bytes_of(xx, 1);
        if (t.count == 0) {
          std::copy_n(&colour_row[bytes_of(xx, 1)], 3, out);
          continue;
        }
        convolve(src + bytes_of(t.lo - ox, 1), 3, t.k, t.count, colour, t.outside, out);
      }
    }
  } else {
    colour_row.resize(bytes_of(canvas_w, 1));
    for (int x = 0; x < canvas_w; ++x) {
      std::copy(colour.begin(), colour.end(), &colour_row[bytes_of(x, 1)]);
    }
    tmp.resize(bytes_of(canvas_w, canvas_h));
    for (int y = 0; y < canvas_h; ++y) {
      const std::uint8_t* src = canvas_row(y);
      std::copy_n(src, bytes_of(canvas_w, 1), &tmp[bytes_of(canvas_w, y)]);
    }
  }

  rgb_image out;
  out.width = out_w;
  out.height = out_h;
  if (!need_vertical) {
    out.pixels = std::move(tmp);
    return out;
  }
  // Vertical pass, split as the horizontal one: the image rows a tap reads, plus the padding
  // rows' value (`colour_row`) times their weight.
  out.pixels.resize(bytes_of(out_w, out_h));
  const auto stride = static_cast<std::ptrdiff_t>(bytes_of(width, 1));
  for (int yy = 0; yy < out_h; ++yy) {
    const auto i = static_cast<std::size_t>(yy);
    const split_tap t = split(vert, i, oy, oy + image.height);
    const std::uint8_t* src = t.count > 0 ? &tmp[bytes_of(width, t.lo - row0)] : tmp.data();
    for (int xx = 0; xx < out_w; ++xx) {
      const std::uint8_t* plain = &colour_row[bytes_of(xx, 1)];
      convolve(src + bytes_of(xx, 1), stride, t.k, t.count, {plain[0], plain[1], plain[2]},
               t.outside, &out.pixels[bytes_of(out_w, yy) + bytes_of(xx, 1)]);
    }
  }
  return out;
}

void expect_image(const rgb_image& image, const char* what) {
  DYNLLAVA_EXPECTS(image.width > 0 && image.height > 0 &&
                       image.pixels.size() == bytes_of(image.width, image.height),
                   "{}: the image must be non-empty with width * height * 3 bytes (got {}x{}, {} "
                   "bytes)",
                   what, image.width, image.height, image.pixels.size());
}

}  // namespace

void clip_preprocess_options::validate() const {
  DYNLLAVA_EXPECTS(aspect == image_aspect::pad || aspect == image_aspect::square,
                   "clip_preprocess_options: unknown aspect mode {}", static_cast<int>(aspect));
  DYNLLAVA_EXPECTS(shortest_edge > 0, "clip_preprocess_options: shortest_edge {} must be positive",
                   shortest_edge);
  DYNLLAVA_EXPECTS(crop_height > 0 && crop_width > 0 && crop_height <= shortest_edge &&
                       crop_width <= shortest_edge,
                   "clip_preprocess_options: the crop {}x{} must be positive and fit in "
                   "shortest_edge {}",
                   crop_width, crop_height, shortest_edge);
  DYNLLAVA_EXPECTS(std::isfinite(rescale_factor) && rescale_factor > 0,
                   "clip_preprocess_options: rescale_factor {} must be positive and finite",
                   rescale_factor);
  for (std::size_t c = 0; c < 3; ++c) {
    DYNLLAVA_EXPECTS(
        std::isfinite(image_mean[c]) && std::isfinite(image_std[c]) && image_std[c] > 0,
        "clip_preprocess_options: channel {}: mean {} and std {} must be finite, "
        "std positive",
        c, image_mean[c], image_std[c]);
  }
  DYNLLAVA_EXPECTS(max_work_pixels > 0,
                   "clip_preprocess_options: max_work_pixels {} must be positive", max_work_pixels);
}

clip_preprocess_options preprocess_options(const image_preprocess& p) {
  clip_preprocess_options o;
  o.aspect = p.aspect;
  o.shortest_edge = p.shortest_edge;
  o.crop_height = p.crop_height;
  o.crop_width = p.crop_width;
  o.pad_colour = p.pad_colour;
  o.rescale_factor = p.rescale_factor;
  o.image_mean = p.image_mean;
  o.image_std = p.image_std;
  o.validate();
  return o;
}

rgb_image expand_to_square(const rgb_image& image, std::array<std::uint8_t, 3> colour) {
  expect_image(image, "expand_to_square");
  if (image.width == image.height) return image;
  const index_t side = std::max(image.width, image.height);
  rgb_image out;
  out.width = side;
  out.height = side;
  out.pixels.resize(bytes_of(side, side));
  for (std::size_t i = 0; i < out.pixels.size(); i += 3) {
    std::copy(colour.begin(), colour.end(), &out.pixels[i]);
  }
  const index_t ox = (side - image.width) / 2;
  const index_t oy = (side - image.height) / 2;
  for (index_t y = 0; y < image.height; ++y) {
    std::copy_n(image.at(0, y), bytes_of(image.width, 1),
                &out.pixels[bytes_of(side, y + oy) + bytes_of(ox, 1)]);
  }
  return out;
}

std::pair<index_t, index_t> shortest_edge_size(index_t width, index_t height,
                                               index_t shortest_edge) {
  DYNLLAVA_EXPECTS(width > 0 && height > 0 && shortest_edge > 0,
                   "shortest_edge_size: sizes must be positive (got {}x{}, shortest edge {})",
                   width, height, shortest_edge);
  const index_t shorter = std::min(width, height);
  const index_t longer = std::max(width, height);
  const double scaled =
      static_cast<double>(std::int64_t{shortest_edge} * longer) / static_cast<double>(shorter);
  DYNLLAVA_EXPECTS(scaled < 2147483647.0,
                   "shortest_edge_size: {}x{} resized to a shortest edge of {} is too large", width,
                   height, shortest_edge);
  const auto other = static_cast<index_t>(scaled);
  return width <= height ? std::pair{shortest_edge, other} : std::pair{other, shortest_edge};
}

rgb_image resize_bicubic(const rgb_image& image, index_t width, index_t height,
                         std::int64_t max_work_pixels) {
  expect_image(image, "resize_bicubic");
  return resize_on_canvas(image, image.width, image.height, 0, 0, {}, width, height,
                          max_work_pixels);
}

rgb_image clip_resize_crop(const rgb_image& image, const clip_preprocess_options& options) {
  options.validate();
  expect_image(image, "clip_resize_crop");
  index_t canvas_w = image.width;
  index_t canvas_h = image.height;
  index_t ox = 0;
  index_t oy = 0;
  if (options.aspect == image_aspect::pad) {
    canvas_w = canvas_h = std::max(image.width, image.height);
    ox = (canvas_w - image.width) / 2;
    oy = (canvas_h - image.height) / 2;
  }
  const auto [out_w, out_h] = shortest_edge_size(canvas_w, canvas_h, options.shortest_edge);
  const rgb_image resized = resize_on_canvas(image, canvas_w, canvas_h, ox, oy, options.pad_colour,
                                             out_w, out_h, options.max_work_pixels);
  // transformers' center_crop: top = (H - h) // 2, left = (W - w) // 2.
  const index_t top = (resized.height - options.crop_height) / 2;
  const index_t left = (resized.width - options.crop_width) / 2;
  rgb_image out;
  out.width = options.crop_width;
  out.height = options.crop_height;
  out.pixels.resize(bytes_of(out.width, out.height));
  for (index_t y = 0; y < out.height; ++y) {
    std::copy_n(resized.at(left, top + y), bytes_of(out.width, 1),
                &out.pixels[bytes_of(out.width, y)]);
  }
  return out;
}

void clip_normalize(const rgb_image& image, const clip_preprocess_options& options,
                    std::span<float> out) {
  options.validate();
  expect_image(image, "clip_normalize");
  const std::size_t plane =
      static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height);
  DYNLLAVA_EXPECTS(out.size() == 3 * plane,
                   "clip_normalize: out holds {} floats, [3, {}, {}] needs {}", out.size(),
                   image.height, image.width, 3 * plane);
  for (std::size_t c = 0; c < 3; ++c) {
    const float mean = options.image_mean[c];
    const float sd = options.image_std[c];
    float* dst = out.data() + c * plane;
    for (std::size_t i = 0; i < plane; ++i) {
      // NumPy: float64(v) * scale, cast to float32, then (x - mean) / std in float32.
      const auto x =
          static_cast<float>(static_cast<double>(image.pixels[3 * i + c]) * options.rescale_factor);
      dst[i] = (x - mean) / sd;
    }
  }
}

std::vector<float> clip_pixel_values(const rgb_image& image,
                                     const clip_preprocess_options& options) {
  const rgb_image cropped = clip_resize_crop(image, options);
  std::vector<float> out(3 * static_cast<std::size_t>(cropped.width) *
                         static_cast<std::size_t>(cropped.height));
  clip_normalize(cropped, options, out);
  return out;
}

}  // namespace dynllava::llava

// SPDX-License-Identifier: Apache-2.0
// Image decoding and LLaVA-1.5 preprocessing against PIL + transformers' CLIPImageProcessor
// (fixtures written by tools/image_reference.py).
#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <clip_preprocess.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <image.hpp>
#include <iterator>
#include <random>
#include <string>
#include <vector>
#include <zlib.h>

namespace {

namespace ll = dynllava::llava;
const std::filesystem::path fixtures = std::filesystem::path(DYNLLAVA_FIXTURE_DIR) / "images";

std::vector<std::uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The largest |a - b| over two images of the same size.
int max_abs_diff(const ll::rgb_image& a, const ll::rgb_image& b) {
  REQUIRE(a.width == b.width);
  REQUIRE(a.height == b.height);
  int worst = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    worst = std::max(worst, std::abs(int{a.pixels[i]} - int{b.pixels[i]}));
  }
  return worst;
}

/// transformers' pixel_values for every 8-bit value: [3, 256].
std::vector<float> normalize_table() {
  const auto bytes = read_bytes(fixtures / "normalize_table.f32");
  REQUIRE(bytes.size() == 3 * 256 * sizeof(float));
  std::vector<float> t(3 * 256);
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<std::uint8_t*>(t.data()));
  return t;
}

/// The largest |ours - reference| where the reference is looked up at the reference 8-bit image.
double max_pixel_values_diff(const std::vector<float>& ours, const ll::rgb_image& ref8) {
  const auto table = normalize_table();
  const std::size_t plane =
      static_cast<std::size_t>(ref8.width) * static_cast<std::size_t>(ref8.height);
  REQUIRE(ours.size() == 3 * plane);
  double worst = 0;
  for (std::size_t c = 0; c < 3; ++c) {
    for (std::size_t i = 0; i < plane; ++i) {
      const float want = table[c * 256 + ref8.pixels[3 * i + c]];
      worst = std::max(worst, std::fabs(double{ours[c * plane + i]} - double{want}));
    }
  }
  return worst;
}

struct fixture_case {
  const char* file;
  const char* name;
  bool square;  // also has a <name>.square336.png reference
};
constexpr std::array<fixture_case, 12> png_cases{{
    {"landscape_64x48.png", "landscape_64x48", false},
    {"portrait_40x90.png", "portrait_40x90", true},
    {"wide_500x375.png", "wide_500x375", true},
    {"grey_70x50.png", "grey_70x50", false},
    {"rgba_48x64.png", "rgba_48x64", false},
    {"grey_alpha_36x20.png", "grey_alpha_36x20", false},
    {"palette_60x60.png", "palette_60x60", false},
    {"grey16_50x30.png", "grey16_50x30", false},
    {"rgb16_30x50.png", "rgb16_30x50", false},
    {"rgba16_20x12.png", "rgba16_20x12", false},
    {"grey_alpha16_12x20.png", "grey_alpha16_12x20", false},
    {"interlaced_27x13.png", "interlaced_27x13", false},  // Adam7
}};
constexpr std::array<fixture_case, 3> jpeg_cases{{
    {"baseline_120x90.jpg", "baseline_120x90", false},
    {"cmyk_48x32.jpg", "cmyk_48x32", false},  // Adobe CMYK: stb and PIL both invert
    {"progressive_90x120.jpg", "progressive_90x120", false},
}};

/// Rewrites the CRC of the PNG chunk starting at `pos` (its length field), so that a test can
/// corrupt a chunk's content and still reach the decoder.
void fix_crc(std::vector<std::uint8_t>& png, std::size_t pos) {
  const std::uint32_t length = (std::uint32_t{png[pos]} << 24) |
                               (std::uint32_t{png[pos + 1]} << 16) |
                               (std::uint32_t{png[pos + 2]} << 8) | png[pos + 3];
  const auto crc = static_cast<std::uint32_t>(crc32(0L, &png[pos + 4], length + 4));
  for (std::size_t i = 0; i < 4; ++i) {
    png[pos + 8 + length + i] = static_cast<std::uint8_t>(crc >> (24 - 8 * i));
  }
}

ll::rgb_image random_image(std::mt19937& rng, int w, int h) {
  ll::rgb_image img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
  std::uniform_int_distribution<int> d(0, 255);
  for (auto& p : img.pixels) p = static_cast<std::uint8_t>(d(rng));
  return img;
}

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const dynllava::error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("PNG decoding equals PIL's convert(\"RGB\") for every colour type") {
    for (const auto& c : png_cases) {
      CAPTURE(std::string(c.file));
      const auto ours = ll::load_image(fixtures / c.file);
      const auto pil = ll::load_image(fixtures / (std::string(c.name) + ".rgb.png"));
      CHECK(max_abs_diff(ours, pil) == 0);
    }
  }

  TEST_CASE("preprocessing equals transformers bit for bit in the 8-bit domain") {
    // From PIL's decoded pixels: the preprocessing alone, for PNG and JPEG sources.
    for (const auto* cases : {static_cast<const fixture_case*>(png_cases.data()),
                              static_cast<const fixture_case*>(jpeg_cases.data())}) {
      const std::size_t n = cases == png_cases.data() ? png_cases.size() : jpeg_cases.size();
      for (std::size_t i = 0; i < n; ++i) {
        const auto& c = cases[i];
        CAPTURE(std::string(c.file));
        const auto pil = ll::load_image(fixtures / (std::string(c.name) + ".rgb.png"));
        const auto ref = ll::load_image(fixtures / (std::string(c.name) + ".pad336.png"));
        const auto ours = ll::clip_resize_crop(pil);
        CHECK(max_abs_diff(ours, ref) == 0);
        if (c.square) {
          ll::clip_preprocess_options square;
          square.aspect = dynllava::image_aspect::square;
          const auto ref_sq = ll::load_image(fixtures / (std::string(c.name) + ".square336.png"));
          CHECK(max_abs_diff(ll::clip_resize_crop(pil, square), ref_sq) == 0);
        }
      }
    }
  }

  TEST_CASE("PNG files: pixel_values within 1e-6 of transformers (equal in practice)") {
    for (const auto& c : png_cases) {
      CAPTURE(std::string(c.file));
      const auto image = ll::load_image(fixtures / c.file);
      const auto ref = ll::load_image(fixtures / (std::string(c.name) + ".pad336.png"));
      const auto pv = ll::clip_pixel_values(image);
      CHECK(pv.size() == std::size_t{3} * 336 * 336);
      CHECK(max_pixel_values_diff(pv, ref) <= 1e-6);
    }
  }

  TEST_CASE("JPEG files: stb's decoder differs from libjpeg by a few levels") {
    // stb_image and libjpeg(-turbo), which PIL uses, both decode baseline and progressive
    // JPEG but round their IDCT and chroma upsampling differently. Measured on these
    // fixtures (4:2:0, quality 85-90): decoded pixels differ by at most 3 levels, the
    // 336x336 image after resizing by at most 4 (bicubic overshoot can add one), pixel_values
    // by at most 0.057. The bounds: 4 levels, and 4/255/min(std) = 0.060 in pixel_values.
    constexpr int max_levels = 4;
    const double max_pixel_value = max_levels / 255.0 / 0.26130258 + 1e-6;
    for (const auto& c : jpeg_cases) {
      CAPTURE(std::string(c.file));
      const auto ours = ll::load_image(fixtures / c.file);
      const auto pil = ll::load_image(fixtures / (std::string(c.name) + ".rgb.png"));
      const int decoded = max_abs_diff(ours, pil);
      CHECK(decoded <= max_levels);
      const auto ref = ll::load_image(fixtures / (std::string(c.name) + ".pad336.png"));
      const int resized = max_abs_diff(ll::clip_resize_crop(ours), ref);
      CHECK(resized <= max_levels);
      const double pv = max_pixel_values_diff(ll::clip_pixel_values(ours), ref);
      CHECK(pv <= max_pixel_value);
      MESSAGE(std::string(c.file), ": decoded max diff ", decoded, ", resized ", resized,
              ", pixel_values ", pv);
    }
  }

  TEST_CASE("the padded square is never materialised, yet the result equals padding first") {
    std::mt19937 rng(7);
    const ll::clip_preprocess_options opt;
    for (const auto& size : {std::pair{1, 1},
                             {2, 7},
                             {7, 2},
                             {335, 337},
                             {336, 100},
                             {100, 336},
                             {3, 5000},
                             {13, 900},
                             {901, 5},
                             {8, 3000},
                             {2500, 11},
                             {337, 336}}) {
      const auto [w, h] = size;
      CAPTURE(size.first);
      CAPTURE(size.second);
      const auto img = random_image(rng, w, h);
      const auto padded = ll::expand_to_square(img, opt.pad_colour);
      CHECK(padded.width == std::max(w, h));
      CHECK(padded.height == std::max(w, h));
      const auto direct = ll::resize_bicubic(padded, 336, 336);
      CHECK(max_abs_diff(ll::clip_resize_crop(img, opt), direct) == 0);
    }
  }

  TEST_CASE("a thin image on a wide padded square costs its own pixels, not the square's") {
    // 16 x 65536 pads to a 65536-wide square: resampling every canvas column of every image row
    // would be 65536 x 336 taps of ~780 columns (hours); the image's columns alone take a blink.
    std::mt19937 rng(11);
    const auto tall = random_image(rng, 16, 65536);
    ll::clip_preprocess_options opt;
    const auto out = ll::clip_resize_crop(tall, opt);
    CHECK(out.width == 336);
    CHECK(out.height == 336);
    // Its top and bottom rows are padding-only: the pad colour.
    CHECK(out.at(0, 0)[0] == opt.pad_colour[0]);
    CHECK(out.at(335, 335)[2] == opt.pad_colour[2]);
    // The wide case: the image spans the canvas columns, padding rows above and below.
    const auto wide = random_image(rng, 65536, 16);
    CHECK(ll::clip_resize_crop(wide, opt).width == 336);
  }

  TEST_CASE("expand_to_square pastes at the floor of the centre on the pad colour") {
    ll::rgb_image img;
    img.width = 2;
    img.height = 5;
    img.pixels.assign(30, 9);
    const auto sq = ll::expand_to_square(img, {122, 116, 104});
    REQUIRE(sq.width == 5);
    CHECK(sq.at(0, 0)[0] == 122);
    CHECK(sq.at(0, 0)[1] == 116);
    CHECK(sq.at(0, 0)[2] == 104);
    CHECK(sq.at(1, 0)[0] == 9);  // (5 - 2) / 2 = 1
    CHECK(sq.at(2, 4)[2] == 9);
    CHECK(sq.at(3, 4)[2] == 104);
  }

  TEST_CASE("shortest_edge_size truncates the long side as transformers does") {
    CHECK(ll::shortest_edge_size(500, 375, 336) == std::pair{448, 336});
    CHECK(ll::shortest_edge_size(40, 90, 336) == std::pair{336, 756});
    CHECK(ll::shortest_edge_size(3, 1000, 336) == std::pair{336, 112000});
    CHECK(ll::shortest_edge_size(7, 3, 336) == std::pair{784, 336});
    CHECK(ll::shortest_edge_size(336, 336, 336) == std::pair{336, 336});
    CHECK(ll::shortest_edge_size(1000, 999, 336) == std::pair{336, 336});  // 336.33 -> 336
  }

  TEST_CASE("resize_bicubic: identity, constant images and the size checks") {
    std::mt19937 rng(3);
    const auto img = random_image(rng, 17, 9);
    CHECK(max_abs_diff(ll::resize_bicubic(img, 17, 9), img) == 0);
    ll::rgb_image flat = img;
    std::fill(flat.pixels.begin(), flat.pixels.end(), std::uint8_t{200});
    for (const auto& [w, h] : {std::pair{3, 2}, {336, 336}, {40, 9}, {17, 1000}}) {
      const auto r = ll::resize_bicubic(flat, w, h);
      CHECK(std::all_of(r.pixels.begin(), r.pixels.end(), [](auto v) { return v == 200; }));
    }
    CHECK(error_of([&] { (void)ll::resize_bicubic(img, 0, 5); }).find("not positive") !=
          std::string::npos);
    CHECK(error_of([&] { (void)ll::resize_bicubic(img, 100000, 100000); }).find("budget") !=
          std::string::npos);
    ll::clip_preprocess_options opt;
    opt.aspect = dynllava::image_aspect::square;
    ll::rgb_image thin = random_image(rng, 1, 300000);  // 336 x 100.8M work pixels
    CHECK(error_of([&] { (void)ll::clip_resize_crop(thin, opt); }).find("budget") !=
          std::string::npos);
  }

  TEST_CASE("options are validated") {
    ll::clip_preprocess_options opt;
    std::mt19937 rng(1);
    const auto img = random_image(rng, 4, 4);
    opt.crop_height = 400;
    CHECK(error_of([&] { (void)ll::clip_pixel_values(img, opt); }).find("crop") !=
          std::string::npos);
    opt = {};
    opt.image_std[1] = 0;
    CHECK(error_of([&] { (void)ll::clip_pixel_values(img, opt); }).find("channel 1") !=
          std::string::npos);
    opt = {};
    opt.rescale_factor = std::nan("");
    CHECK(error_of([&] { (void)ll::clip_pixel_values(img, opt); }).find("rescale_factor") !=
          std::string::npos);
    ll::rgb_image bad;
    bad.width = 3;
    bad.height = 3;
    CHECK(error_of([&] { (void)ll::clip_pixel_values(bad); }).find("non-empty") !=
          std::string::npos);
    std::vector<float> small(5);
    CHECK(error_of([&] { ll::clip_normalize(img, {}, small); }).find("[3, 4, 4]") !=
          std::string::npos);
  }

  TEST_CASE("malformed input: clear errors naming the input") {
    const auto png = read_bytes(fixtures / "landscape_64x48.png");
    const auto jpg = read_bytes(fixtures / "baseline_120x90.jpg");
    const auto decode = [](const std::vector<std::uint8_t>& b, ll::image_limits l = {}) {
      return error_of([&] { (void)ll::decode_image(b, "in\nput\"x", l); });
    };
    // The name is quoted and escaped.
    CHECK(decode({}).find(R"("in\x0aput\"x")") != std::string::npos);
    CHECK(decode({}).find("not a PNG or JPEG") != std::string::npos);
    const std::vector<std::uint8_t> gif{'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0};
    CHECK(decode(gif).find("first bytes: 47 49 46 38 39 61 01 00") != std::string::npos);
    const std::vector<std::uint8_t> bmp{'B', 'M', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(decode(bmp).find("only PNG and JPEG") != std::string::npos);
    // Truncated files.
    for (const std::size_t keep : {8UL, 20UL, 40UL, png.size() / 2, png.size() - 13}) {
      CAPTURE(keep);
      const std::vector<std::uint8_t> cut(png.begin(), png.begin() + static_cast<long>(keep));
      CHECK(decode(cut).find("PNG") != std::string::npos);
    }
    for (const std::size_t keep : {3UL, 30UL, jpg.size() / 2, jpg.size() - 2}) {
      CAPTURE(keep);
      const std::vector<std::uint8_t> cut(jpg.begin(), jpg.begin() + static_cast<long>(keep));
      CHECK(decode(cut).find("JPEG") != std::string::npos);
    }
    // Corrupted zlib data in the PNG (its IDAT starts after the 33-byte header).
    auto broken = png;
    for (std::size_t i = 41; i < 60; ++i) broken[i] ^= 0x5a;
    CHECK(decode(broken).find(R"(chunk "IDAT" at byte 33 fails its CRC check)") !=
          std::string::npos);
    fix_crc(broken, 33);  // now stb's zlib decoder sees the damage
    CHECK(decode(broken).find("corrupt or unsupported PNG") != std::string::npos);
    // stb names an unknown critical chunk by its raw type bytes: they come out escaped.
    auto unknown = png;
    unknown[37] = 'Q';
    unknown[39] = 0x0c;  // "IDAT" -> "QD\x0cT": critical (upper-case first letter), unknown
    fix_crc(unknown, 33);
    CHECK(decode(unknown).find(R"(QD\x0cT PNG chunk not known)") != std::string::npos);
    auto no_end = png;
    no_end.resize(png.size() - 12);  // without IEND
    CHECK(decode(no_end).find("without an IEND chunk") != std::string::npos);
    // Declared dimensions over the budget: refused before decoding.
    auto huge = png;
    huge[16] = 0x00;  // width 0x00ff0000
    huge[17] = 0xff;
    huge[18] = 0x00;
    huge[19] = 0x00;
    const auto too_big = decode(huge);
    CHECK(too_big.find("refused before decoding") != std::string::npos);
    CHECK(too_big.find("16711680x48") != std::string::npos);
    auto huge_jpg = jpg;  // the frame header (SOF0, FF C0) declares 65535 x 65535
    const std::array<std::uint8_t, 2> sof0{0xff, 0xc0};
    const auto sof = std::search(huge_jpg.begin(), huge_jpg.end(), sof0.begin(), sof0.end());
    REQUIRE(sof != huge_jpg.end());
    std::fill(sof + 5, sof + 9, std::uint8_t{0xff});
    CHECK(decode(huge_jpg).find("65535x65535 = 4294836225 pixels exceed the budget") !=
          std::string::npos);
    // A Huffman table listing more than 256 codes (stb 2.27 would write past its tables).
    auto dht = jpg;
    const std::array<std::uint8_t, 2> dht_marker{0xff, 0xc4};
    const auto table = std::search(dht.begin(), dht.end(), dht_marker.begin(), dht_marker.end());
    REQUIRE(table != dht.end());
    std::fill(table + 5, table + 21, std::uint8_t{17});  // 16 counts of 17 = 272 codes
    CHECK(decode(dht).find("lists 272 codes (at most 256)") != std::string::npos);
    const auto fuzz_found = read_bytes(std::filesystem::path(DYNLLAVA_FUZZ_CORPUS_DIR) /
                                       "image_decode" / "dht_over_256_codes.jpg");
    CHECK(decode(fuzz_found).find("lists 371 codes") != std::string::npos);
    std::fill(huge.begin() + 16, huge.begin() + 24, std::uint8_t{0xff});  // 2^32 - 1 squared
    CHECK(decode(huge).find("4294967295x4294967295 = 18446744065119617025 pixels exceed") !=
          std::string::npos);
    auto zero = png;
    std::fill(zero.begin() + 16, zero.begin() + 20, std::uint8_t{0});
    fix_crc(zero, 8);
    CHECK(decode(zero).find("PNG header") != std::string::npos);
    ll::image_limits small;
    small.max_pixels = 64 * 48 - 1;
    CHECK(decode(png, small).find("64x48 = 3072 pixels exceed the budget of 3071") !=
          std::string::npos);
    small = {};
    small.max_file_bytes = 100;
    CHECK(decode(png, small).find("exceed the limit of 100 bytes") != std::string::npos);
    // A 16x16 PNG whose data inflates to 16 MiB: the decoder's allocations are capped.
    const auto bomb = read_bytes(fixtures / "bomb_16x16.png");
    CHECK(decode(bomb).find("outofmem") != std::string::npos);
  }

  TEST_CASE("load_image: missing files, directories, and the file size cap") {
    CHECK(error_of([] { (void)ll::load_image(fixtures / "no_such.png"); }).find("no such file") !=
          std::string::npos);
    CHECK(error_of([] { (void)ll::load_image(fixtures); }).find("a directory") !=
          std::string::npos);
    ll::image_limits l;
    l.max_file_bytes = 10;
    CHECK(error_of([&] {
            (void)ll::load_image(fixtures / "landscape_64x48.png", l);
          }).find("exceed the limit of 10 bytes") != std::string::npos);
    const auto ok = ll::load_image(fixtures / "landscape_64x48.png");
    CHECK(ok.width == 64);
    CHECK(ok.height == 48);
  }
}

TEST_SUITE("cpu") {
  TEST_CASE("the fuzzer's seed corpus: every file decodes or fails with dynllava::error") {
    namespace fs = std::filesystem;
    int decoded = 0;
    int refused = 0;
    for (const auto& entry :
         fs::directory_iterator(fs::path(DYNLLAVA_FUZZ_CORPUS_DIR) / "image_decode")) {
      CAPTURE(entry.path().filename().string());
      ll::image_limits limits;
      limits.max_pixels = std::int64_t{4} << 20;
      try {
        const auto image = ll::load_image(entry.path(), limits);
        CHECK(ll::clip_pixel_values(image).size() == std::size_t{3} * 336 * 336);
        ++decoded;
      } catch (const dynllava::error& e) {
        CHECK(std::string(e.what()).find(dynllava::quote_untrusted(entry.path().string())) !=
              std::string::npos);
        ++refused;
      }
    }
    CHECK(decoded >= 8);
    CHECK(refused >= 8);
  }
}

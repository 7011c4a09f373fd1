// SPDX-License-Identifier: Apache-2.0
// The Figure-6 page: escaping, the embedded PNGs decoded back, the checks on its inputs, and
// writing it to a file. (tests/browser renders it in headless Chromium.)
#include <dynllava/core/error.hpp>

#include "figure6_test_support.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <figure6_page.hpp>
#include <filesystem>
#include <fstream>
#include <image.hpp>
#include <iterator>
#include <string>
#include <unistd.h>
#include <utf8.hpp>
#include <vector>

namespace {

namespace ll = dynllava::llava;
using ll::test::solid_test_image;

constexpr std::uint8_t blue[3] = {30, 110, 200};

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) {
    ++n;
  }
  return n;
}

std::string error_of(const ll::figure6_page& page) {
  try {
    (void)ll::figure6_html(page);
  } catch (const dynllava::error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("figure6_html escapes the prompt, the tokens and the summary") {
  ll::figure6_page page;
  page.prompt = "<script>alert(\"x & y\")</script> 'q' caf\xC3\xA9";
  page.answer = {{"<b>", true, 1.25F},
                 {" & \"it\"", false, -0.5F},
                 {"\xFF\xC3(", true, std::nullopt},
                 {std::string("a\0b\x01", 4), true, std::nullopt},
                 {"\n", true, std::nullopt}};
  page.summary = {{"<img src=x onerror=alert(1)>", "1 & 2"}, {"kept", "'5' of \"9\""}};
  const std::string html = ll::figure6_html(page);

  // No markup from the inputs survives: the page's only tags are its own.
  CHECK(count(html, "<script") == 0);
  CHECK(count(html, "<b>") == 0);
  CHECK(count(html, "<img") == 0);  // no images in this page
  CHECK(html.find("&lt;script&gt;alert(&quot;x &amp; y&quot;)&lt;/script&gt; &#39;q&#39; "
                  "caf\xC3\xA9") != std::string::npos);
  CHECK(html.find(">&lt;b&gt;</span>") != std::string::npos);
  CHECK(html.find("> &amp; &quot;it&quot;</span>") != std::string::npos);
  // Invalid UTF-8 (a stray 0xFF, a lead byte without its continuation) and control characters
  // become U+FFFD, one per byte; a newline stays.
  CHECK(html.find(">\xEF\xBF\xBD\xEF\xBF\xBD(</span>") != std::string::npos);
  CHECK(html.find(">a\xEF\xBF\xBD"
                  "b\xEF\xBF\xBD</span>") != std::string::npos);
  CHECK(html.find(">\n</span>") != std::string::npos);
  CHECK(html.find('\0') == std::string::npos);
  CHECK(ll::detail::is_valid_utf8(html));
  CHECK(html.find("<td>&lt;img src=x onerror=alert(1)&gt;</td><td>1 &amp; 2</td>") !=
        std::string::npos);
  CHECK(html.find("<td>&#39;5&#39; of &quot;9&quot;</td>") != std::string::npos);
  // Nothing is fetched: no URL but the policy forbidding them.
  CHECK(count(html, "http") == 1);  // http-equiv
  CHECK(html.find("default-src 'none'") != std::string::npos);
}

TEST_CASE("figure6_html greys the tokens left out of the cache and shows each gate margin") {
  ll::figure6_page page;
  page.answer = {{"A", true, 1.25F},
                 {"B", false, -0.5F},
                 {"C", true, std::nullopt},
                 {"</s>", true, 2.0F, false}};
  const std::string html = ll::figure6_html(page);
  CHECK(html.find("<span class=\"tok\" title=\"gate margin +1.250; in the KV cache\">A</span>") !=
        std::string::npos);
  CHECK(html.find("<span class=\"tok evicted\" title=\"gate margin -0.500; not in the KV "
                  "cache\">B</span>") != std::string::npos);
  CHECK(html.find("<span class=\"tok\" title=\"not gated; in the KV cache\">C</span>") !=
        std::string::npos);
  CHECK(count(html, "class=\"tok evicted\"") == 1);
  CHECK(html.find(".tok.evicted { color: #a8a8a8; }") != std::string::npos);
  // The token generation ended on was never fed back: neither cached nor evicted.
  CHECK(html.find("<span class=\"tok unfed\" title=\"generation ended on it: never fed back, no "
                  "decision\">&lt;/s&gt;</span>") != std::string::npos);
  CHECK(html.find("2 of the 3 generated tokens fed back to the decoder entered the KV cache") !=
        std::string::npos);
  CHECK(html.find("Generation ended on the dotted token") != std::string::npos);
}

TEST_CASE("figure6_html without a KV cache speaks of the context; blank tokens stay hoverable") {
  ll::figure6_page page;
  page.kv_cache = false;
  page.answer = {{"", true, 0.75F},                 // a token without text of its own
                 {"A", false, -0.5F},               // dropped from the recomputed context
                 {"B", true, std::nullopt},         // the newest row fed back: never gated
                 {"", true, 1.0F, false, "</s>"}};  // EOS, never fed back
  const std::string html = ll::figure6_html(page);
  CHECK(html.find("KV cache") == std::string::npos);
  CHECK(html.find("<span class=\"tok blank\" title=\"gate margin +0.750; in the context of the "
                  "last step (no text of its own)\">\u00b7</span>") != std::string::npos);
  CHECK(html.find("<span class=\"tok evicted\" title=\"gate margin -0.500; dropped from the "
                  "context\">A</span>") != std::string::npos);
  CHECK(html.find("<span class=\"tok\" title=\"not gated; in the context of the last step\">B"
                  "</span>") != std::string::npos);
  CHECK(html.find("<span class=\"tok unfed blank\" title=\"generation ended on it (no text of "
                  "its own): never fed back, no decision\">&lt;/s&gt;</span>") !=
        std::string::npos);
  CHECK(html.find("2 of the 3 generated tokens fed back to the decoder stay in the recomputed "
                  "context of the last step") != std::string::npos);
}

TEST_CASE("figure6_html of an empty run is a complete page that says so") {
  const std::string html = ll::figure6_html({});
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("</html>") != std::string::npos);
  CHECK(html.find("No tokens were generated.") != std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  CHECK(html.find("<table") == std::string::npos);
}

TEST_CASE("figure6_html embeds each image as a PNG with its dropped patches whitened") {
  ll::figure6_page page;
  page.images.push_back(solid_test_image(48, 32, 4, blue));  // 12 x 8 pixel patches
  constexpr std::uint8_t red[3] = {210, 40, 40};
  page.images.push_back(solid_test_image(30, 30, 5, red));
  const std::string html = ll::figure6_html(page);
  const std::vector<std::string> uris = ll::test::png_data_uris(html);
  REQUIRE(uris.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CAPTURE(i);
    const ll::figure6_image& in = page.images[i];
    const auto png = ll::test::base64_decode(uris[i]);
    REQUIRE(png.has_value());
    const ll::rgb_image out = ll::decode_image(*png, "<figure6 page>");
    REQUIRE(out.width == in.width);
    REQUIRE(out.height == in.height);
    const int pw = in.width / in.grid;
    const int ph = in.height / in.grid;
    int dropped = 0;
    int mismatches = 0;
    for (int y = 0; y < in.height; ++y) {
      for (int x = 0; x < in.width; ++x) {
        const bool kept = in.kept[static_cast<std::size_t>((y / ph) * in.grid + x / pw)] != 0;
        const std::uint8_t* want =
            in.rgb.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(in.width) +
                             static_cast<std::size_t>(x)) *
                                3;
        for (int ch = 0; ch < 3; ++ch) {
          mismatches += out.at(x, y)[ch] != (kept ? want[ch] : 255) ? 1 : 0;
        }
        dropped += kept ? 0 : 1;
      }
    }
    CHECK(dropped > 0);
    CHECK(dropped < in.width * in.height);
    CHECK(mismatches == 0);
  }
  // Shown at natural size, with the kept count in the caption.
  CHECK(html.find("<img width=\"48\" height=\"32\"") != std::string::npos);
  CHECK(html.find("Image 1: 12 of 16 patches kept (4 x 4 grid)") != std::string::npos);
  CHECK(html.find("Image 2: 19 of 25 patches kept (5 x 5 grid)") != std::string::npos);
}

TEST_CASE("figure6_html's base64 covers every length modulo 3") {
  // Widths 1..6 of one row give PNGs of varied lengths; each must decode back exactly.
  for (int w = 1; w <= 6; ++w) {
    CAPTURE(w);
    ll::figure6_page page;
    ll::figure6_image img;
    img.width = w;
    img.height = 1;
    img.grid = 1;
    img.kept = {1};
    for (int x = 0; x < w * 3; ++x) img.rgb.push_back(static_cast<std::uint8_t>(x * 40));
    page.images.push_back(img);
    const auto uris = ll::test::png_data_uris(ll::figure6_html(page));
    REQUIRE(uris.size() == 1);
    const auto png = ll::test::base64_decode(uris[0]);
    REQUIRE(png.has_value());
    CHECK(ll::decode_image(*png, "<figure6 page>").pixels == img.rgb);
  }
}

TEST_CASE("figure6_html names the image and the mismatch when an image is inconsistent") {
  ll::figure6_page page;
  page.images.push_back(solid_test_image(24, 24, 4, blue));
  page.images.push_back(solid_test_image(24, 24, 4, blue));
  ll::figure6_image& bad = page.images[1];
  const std::string ok = error_of(page);
  CHECK(ok == "(no error)");

  SUBCASE("pixels") {
    bad.rgb.pop_back();
    const std::string e = error_of(page);
    CHECK(e.find("images[1] holds 1727 rgb bytes, expected width * height * 3 = 24 * 24 * 3 = "
                 "1728") != std::string::npos);
  }
  SUBCASE("patch flags") {
    bad.kept.push_back(1);
    CHECK(error_of(page).find("images[1] holds 17 patch flags, expected grid * grid = 4 * 4 = "
                              "16") != std::string::npos);
  }
  SUBCASE("a flag other than 0 or 1") {
    bad.kept[5] = 2;
    CHECK(error_of(page).find("images[1].kept[5] is 2, expected 0 or 1") != std::string::npos);
  }
  SUBCASE("a grid that does not divide the sides") {
    bad.grid = 5;
    bad.kept.assign(25, 1);
    CHECK(error_of(page).find("images[1] has grid 5, expected a positive divisor of its width "
                              "24 and height 24") != std::string::npos);
  }
  SUBCASE("a grid of zero") {
    bad.grid = 0;
    bad.kept.clear();
    CHECK(error_of(page).find("images[1] has grid 0") != std::string::npos);
  }
  SUBCASE("a non-square image whose grid divides only the width") {
    bad.height = 20;
    bad.rgb.resize(24 * 20 * 3);
    bad.grid = 6;
    bad.kept.assign(36, 1);
    CHECK(error_of(page).find("images[1] has grid 6, expected a positive divisor of its width "
                              "24 and height 20") != std::string::npos);
  }
  SUBCASE("sides") {
    bad.width = -24;
    CHECK(error_of(page).find("images[1] is -24 x 24 pixels, expected sides in 1..16384") !=
          std::string::npos);
  }
  SUBCASE("huge sides") {
    bad.width = 1 << 20;
    CHECK(error_of(page).find("images[1] is 1048576 x 24 pixels") != std::string::npos);
  }
}

TEST_CASE("write_figure6_html writes the page and names the file it cannot write") {
  ll::figure6_page page;
  page.prompt = "What is shown?";
  page.images.push_back(solid_test_image(24, 24, 4, blue));
  page.answer = {{"A", true, 0.5F}, {" square", false, -1.0F}};
  page.summary = {{"image tokens kept", "12 / 16"}};
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("dynllava_figure6_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::filesystem::path file = dir / "page.html";
  ll::write_figure6_html(file, page);
  std::ifstream in(file, std::ios::binary);
  const std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(written == ll::figure6_html(page));

  const std::filesystem::path missing = dir / "no such dir" / "page.html";
  try {
    ll::write_figure6_html(missing, page);
    FAIL("no error for a missing directory");
  } catch (const dynllava::error& e) {
    const std::string what = e.what();
    CHECK(what.find("cannot open \"" + missing.string() + "\" for writing") != std::string::npos);
    CHECK(what.find("No such file or directory") != std::string::npos);
  }
  // An inconsistent image is refused before the file is touched.
  page.images[0].kept.pop_back();
  const std::filesystem::path untouched = dir / "untouched.html";
  CHECK_THROWS_AS(ll::write_figure6_html(untouched, page), dynllava::error);
  CHECK(!std::filesystem::exists(untouched));
  std::filesystem::remove_all(dir);
}

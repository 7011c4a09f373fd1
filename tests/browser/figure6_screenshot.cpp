// SPDX-License-Identifier: Apache-2.0
// The Figure-6 page in a real browser: headless Chromium renders a page with a test image whose
// kept patches are one solid colour, takes a screenshot, and the checks below find the image in
// it and test every patch: dropped patches white, kept ones the image's colour, at natural size;
// and the answer's two tokens, each three full blocks (U+2588), the one that left the cache in
// the page's grey right after the cached one in the text colour.
//
// Chromium is found as $DYNLLAVA_CHROMIUM or on PATH (chromium, chromium-browser,
// google-chrome). Without it, or when it cannot take the screenshot, the program prints why and
// exits 77 (CTest: skipped); with DYNLLAVA_REQUIRE_BROWSER=1 that is a failure instead.
#define DOCTEST_CONFIG_IMPLEMENT
#include "../llava/figure6_test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <figure6_page.hpp>
#include <filesystem>
#include <fstream>
#include <image.hpp>
#include <iterator>
#include <optional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace ll = dynllava::llava;
namespace fs = std::filesystem;

constexpr std::uint8_t kept_colour[3] = {30, 110, 200};
constexpr int side = 336;  // LLaVA-1.5: 24 x 24 patches of 14 pixels
constexpr int grid = 24;
constexpr int window_w = 900;
constexpr int window_h = 800;
constexpr std::uint8_t text_colour[3] = {17, 17, 17};        // body { color: #111 }
constexpr std::uint8_t evicted_colour[3] = {168, 168, 168};  // .tok.evicted { color: #a8a8a8 }
constexpr const char* blocks = "\xE2\x96\x88\xE2\x96\x88\xE2\x96\x88";  // U+2588 x 3

ll::figure6_image test_image() { return ll::test::solid_test_image(side, side, grid, kept_colour); }

/// The screenshot, decoded (set by main before the checks run).
std::optional<ll::rgb_image> screenshot;

std::optional<fs::path> find_chromium() {
  if (const char* env = std::getenv("DYNLLAVA_CHROMIUM"); env != nullptr && *env != '\0') {
    return fs::path(env);
  }
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  const std::string dirs = path;
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    std::size_t start = 0;
    while (start <= dirs.size()) {
      const std::size_t end = std::min(dirs.find(':', start), dirs.size());
      const fs::path candidate = fs::path(dirs.substr(start, end - start)) / name;
      if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
      start = end + 1;
    }
  }
  return std::nullopt;
}

/// `s` in single quotes for /bin/sh.
std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string tail_of_file(const fs::path& p, std::size_t bytes) {
  std::ifstream in(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

bool near(const std::uint8_t* px, const std::uint8_t (&want)[3], int tolerance) {
  for (int ch = 0; ch < 3; ++ch) {
    if (std::abs(int{px[ch]} - int{want[ch]}) > tolerance) return false;
  }
  return true;
}

/// A bounding box of pixels; empty when x1 < x0.
struct box {
  int x0 = 0, y0 = 0, x1 = -1, y1 = -1;
};

/// The box around the pixels in columns [0, x_end) and rows [y_begin, y_end) that equal `c`
/// and whose four neighbours do too: the inside of a filled glyph, never an anti-aliased edge.
box interior_box(const ll::rgb_image& shot, const std::uint8_t (&c)[3], int x_end, int y_begin,
                 int y_end) {
  box b{shot.width, shot.height, -1, -1};
  for (int y = std::max(y_begin, 1); y < std::min<int>(y_end, shot.height - 1); ++y) {
    for (int x = 1; x < std::min<int>(x_end, shot.width - 1); ++x) {
      if (near(shot.at(x, y), c, 0) && near(shot.at(x - 1, y), c, 0) &&
          near(shot.at(x + 1, y), c, 0) && near(shot.at(x, y - 1), c, 0) &&
          near(shot.at(x, y + 1), c, 0)) {
        b.x0 = std::min(b.x0, x);
        b.y0 = std::min(b.y0, y);
        b.x1 = std::max(b.x1, x);
        b.y1 = std::max(b.y1, y);
      }
    }
  }
  return b;
}

/// Skip (77) or, under DYNLLAVA_REQUIRE_BROWSER=1, fail (1), after saying why.
int cannot_run(const std::string& why) {
  const char* require = std::getenv("DYNLLAVA_REQUIRE_BROWSER");
  const bool required = require != nullptr && std::string(require) == "1";
  std::fprintf(stderr, "figure6 browser test %s: %s\n", required ? "FAILED" : "skipped",
               why.c_str());
  return required ? 1 : 77;
}

}  // namespace

TEST_CASE("Chromium shows the image at natural size, dropped patches white and kept ones not") {
  REQUIRE(screenshot.has_value());
  const ll::rgb_image& shot = *screenshot;
  const ll::figure6_image img = test_image();
  // The image is where the kept colour is: its bounding box in the screenshot.
  int x0 = shot.width, y0 = shot.height, x1 = -1, y1 = -1;
  for (int y = 0; y < shot.height; ++y) {
    for (int x = 0; x < shot.width; ++x) {
      if (near(shot.at(x, y), kept_colour, 6)) {
        x0 = std::min(x0, x);
        y0 = std::min(y0, y);
        x1 = std::max(x1, x);
        y1 = std::max(y1, y);
      }
    }
  }
  REQUIRE(x1 >= 0);
  // The corner patches are kept, so the box is the whole image, shown 1:1.
  REQUIRE(img.kept.front() == 1);
  REQUIRE(img.kept.back() == 1);
  CHECK(x1 - x0 + 1 == side);
  CHECK(y1 - y0 + 1 == side);
  const int patch = side / grid;
  int dropped_white = 0, dropped = 0, kept_coloured = 0, kept = 0;
  for (int r = 0; r < grid; ++r) {
    for (int c = 0; c < grid; ++c) {
      const bool is_kept = img.kept[static_cast<std::size_t>(r * grid + c)] != 0;
      // Every pixel of the patch but a 2-pixel rim (anti-aliasing at the edges).
      bool all_match = true;
      for (int y = r * patch + 2; y < (r + 1) * patch - 2; ++y) {
        for (int x = c * patch + 2; x < (c + 1) * patch - 2; ++x) {
          const std::uint8_t* px = shot.at(x0 + x, y0 + y);
          constexpr std::uint8_t white[3] = {255, 255, 255};
          all_match = all_match && (is_kept ? near(px, kept_colour, 6) : near(px, white, 3));
        }
      }
      (is_kept ? kept : dropped) += 1;
      (is_kept ? kept_coloured : dropped_white) += all_match ? 1 : 0;
    }
  }
  CHECK(dropped > 0);
  CHECK(kept > 0);
  CHECK(dropped_white == dropped);
  CHECK(kept_coloured == kept);
}

TEST_CASE("Chromium greys the answer's token that did not enter the cache") {
  REQUIRE(screenshot.has_value());
  const ll::rgb_image& shot = *screenshot;
  // Grey fills only the evicted token (legend, borders and labels use other greys).
  const box grey = interior_box(shot, evicted_colour, shot.width, 0, shot.height);
  REQUIRE(grey.x1 >= 0);
  CHECK(grey.x1 - grey.x0 + 1 >= 15);  // three blocks of a 16 px font
  CHECK(grey.y1 - grey.y0 + 1 >= 10);
  // Left of it on the same rows: the cached token, as wide and as tall, in the text colour.
  const box dark = interior_box(shot, text_colour, grey.x0, grey.y0 - 2, grey.y1 + 3);
  REQUIRE(dark.x1 >= 0);
  CHECK(dark.y0 == grey.y0);
  CHECK(dark.y1 == grey.y1);
  CHECK(grey.x0 - dark.x1 <= 5);  // interiors: the anti-aliased seam between them and one pixel
  CHECK(std::abs((dark.x1 - dark.x0) - (grey.x1 - grey.x0)) <= 2);
}

int main(int argc, char** argv) {
  const std::optional<fs::path> chromium = find_chromium();
  if (!chromium) {
    return cannot_run(
        "no Chromium on PATH (chromium, chromium-browser, google-chrome) and DYNLLAVA_CHROMIUM "
        "unset; Debian: apt-get install --no-install-recommends chromium");
  }
  const fs::path dir =
      fs::temp_directory_path() / ("dynllava_figure6_browser_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  ll::figure6_page page;
  page.prompt = "What colour is the square?";
  page.images.push_back(test_image());
  page.answer = {{blocks, true, 2.0F}, {blocks, false, -1.5F}};
  page.summary = {{"image tokens kept", "432 / 576"}};
  const fs::path html = dir / "page.html";
  const fs::path png = dir / "screenshot.png";
  const fs::path log = dir / "chromium.log";
  ll::write_figure6_html(html, page);
  // --no-sandbox: CI and containers run as root, where Chromium's sandbox refuses to start;
  // HOME: whatever Chromium writes there stays in the test's folder.
  const std::string command =
      "HOME=" + shell_quoted(dir.string()) + " timeout 120 " + shell_quoted(chromium->string()) +
      " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars"
      " --no-first-run --no-default-browser-check --force-device-scale-factor=1" +
      " --user-data-dir=" + shell_quoted((dir / "profile").string()) +
      " --screenshot=" + shell_quoted(png.string()) + " --window-size=" + std::to_string(window_w) +
      "," + std::to_string(window_h) + " " + shell_quoted("file://" + html.string()) + " >" +
      shell_quoted(log.string()) + " 2>&1";
  const int rc = std::system(command.c_str());
  if (rc != 0 || !fs::exists(png)) {
    const std::string status =
        rc == -1                                  ? "could not be started"
        : WIFEXITED(rc) && WEXITSTATUS(rc) == 124 ? std::string("ran past 120 s (timeout)")
        : WIFEXITED(rc)   ? "exited with status " + std::to_string(WEXITSTATUS(rc))
        : WIFSIGNALED(rc) ? "was killed by signal " + std::to_string(WTERMSIG(rc))
                          : "failed";
    const std::string why = "Chromium (" + chromium->string() + ") " + status +
                            " without a screenshot; its output ends:\n" + tail_of_file(log, 1500);
    fs::remove_all(dir);
    return cannot_run(why);
  }
  screenshot = ll::load_image(png);
  if (screenshot->width != window_w || screenshot->height != window_h) {
    std::fprintf(stderr, "note: screenshot is %d x %d for a %d x %d window\n",
                 static_cast<int>(screenshot->width), static_cast<int>(screenshot->height),
                 window_w, window_h);
  }
  doctest::Context context(argc, argv);
  const int result = context.run();
  if (result != 0) {
    std::fprintf(stderr, "figure6 browser test: the page and screenshot are kept in %s\n",
                 dir.c_str());
  } else {
    fs::remove_all(dir);
  }
  return result;
}

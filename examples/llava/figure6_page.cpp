// SPDX-License-Identifier: Apache-2.0
/// @file figure6_page.cpp
/// @brief The Figure-6 HTML page: PNGs through stb_image_write, base64 data URIs, escaped text.
#include "figure6_page.hpp"

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stb_image_write.h>
#include <string_view>

namespace dynllava::llava {
namespace {

/// Sides larger than this are refused (stb_image_write indexes rows with `int`).
constexpr int max_side = 16384;

/// Appends `s` as HTML text or attribute value: `& < > " '` as character references, each
/// byte that does not start well-formed UTF-8 and each C0 control other than tab, line feed and
/// carriage return (and DEL) as U+FFFD.
void append_escaped(std::string& out, std::string_view s) {
  static constexpr std::string_view replacement = "\xEF\xBF\xBD";
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = dynllava::detail::utf8_sequence(s, i);
    if (n == 0) {
      out += replacement;
      ++i;
      continue;
    }
    if (n == 1) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&#39;";
          break;
        case '\t':
        case '\n':
        case '\r':
          out += static_cast<char>(c);
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            out += replacement;
          } else {
            out += static_cast<char>(c);
          }
      }
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
}

std::string escaped(std::string_view s) {
  std::string out;
  append_escaped(out, s);
  return out;
}

void append_base64(std::string& out, const std::vector<std::uint8_t>& bytes) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8) |
                            std::uint32_t{bytes[i + 2]};
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (const std::size_t rest = bytes.size() - i; rest > 0) {
    std::uint32_t v = std::uint32_t{bytes[i]} << 16;
    if (rest == 2) v |= std::uint32_t{bytes[i + 1]} << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
}

/// Throws unless `img` is consistent: positive sides up to `max_side`, `grid` dividing both,
/// `width * height * 3` pixel bytes, `grid * grid` flags of 0 or 1.
void check_image(const figure6_image& img, std::size_t index) {
  DYNLLAVA_EXPECTS(
      img.width > 0 && img.height > 0 && img.width <= max_side && img.height <= max_side,
      "figure6_html: images[{}] is {} x {} pixels, expected sides in 1..{}", index, img.width,
      img.height, max_side);
  DYNLLAVA_EXPECTS(img.grid > 0 && img.width % img.grid == 0 && img.height % img.grid == 0,
                   "figure6_html: images[{}] has grid {}, expected a positive divisor of its "
                   "width {} and height {}",
                   index, img.grid, img.width, img.height);
  const std::size_t pixel_bytes =
      static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height) * 3;
  DYNLLAVA_EXPECTS(img.rgb.size() == pixel_bytes,
                   "figure6_html: images[{}] holds {} rgb bytes, expected width * height * 3 = "
                   "{} * {} * 3 = {}",
                   index, img.rgb.size(), img.width, img.height, pixel_bytes);
  const std::size_t patches =
      static_cast<std::size_t>(img.grid) * static_cast<std::size_t>(img.grid);
  DYNLLAVA_EXPECTS(img.kept.size() == patches,
                   "figure6_html: images[{}] holds {} patch flags, expected grid * grid = {} * "
                   "{} = {}",
                   index, img.kept.size(), img.grid, img.grid, patches);
  for (std::size_t p = 0; p < patches; ++p) {
    DYNLLAVA_EXPECTS(img.kept[p] <= 1, "figure6_html: images[{}].kept[{}] is {}, expected 0 or 1",
                     index, p, img.kept[p]);
  }
}

/// The image's pixels with every dropped patch set to white (255, 255, 255).
std::vector<std::uint8_t> whitened(const figure6_image& img) {
  std::vector<std::uint8_t> px = img.rgb;
  const auto w = static_cast<std::size_t>(img.width);
  const auto grid = static_cast<std::size_t>(img.grid);
  const std::size_t pw = w / grid;
  const std::size_t ph = static_cast<std::size_t>(img.height) / grid;
  for (std::size_t r = 0; r < grid; ++r) {
    for (std::size_t c = 0; c < grid; ++c) {
      if (img.kept[r * grid + c] != 0) continue;
      for (std::size_t y = r * ph; y < (r + 1) * ph; ++y) {
        std::memset(px.data() + (y * w + c * pw) * 3, 255, pw * 3);
      }
    }
  }
  return px;
}

void append_png(std::vector<std::uint8_t>* png, const void* data, int size) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  png->insert(png->end(), p, p + size);
}

std::vector<std::uint8_t> encode_png(const std::vector<std::uint8_t>& rgb, int width, int height,
                                     std::size_t index) {
  std::vector<std::uint8_t> png;
  const int ok = stbi_write_png_to_func(
      [](void* context, void* data, int size) {
        append_png(static_cast<std::vector<std::uint8_t>*>(context), data, size);
      },
      &png, width, height, 3, rgb.data(), width * 3);
  DYNLLAVA_EXPECTS(ok != 0 && !png.empty(),
                   "figure6_html: images[{}]: stb_image_write could not encode {} x {} pixels "
                   "as PNG (out of memory)",
                   index, width, height);
  return png;
}

constexpr std::string_view style = R"(
body { font-family: sans-serif; margin: 16px; color: #111; background: #fff; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 16px 0 6px; }
.text { white-space: pre-wrap; line-height: 1.5; margin: 0; max-width: 60em; }
.images { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; }
figure img { display: block; border: 1px solid #888; image-rendering: pixelated; }
figcaption { font-size: 13px; margin-top: 4px; }
.tok { border-radius: 2px; }
.tok:hover { outline: 1px solid #36c; background: #eef3ff; }
.tok.evicted { color: #a8a8a8; }
.tok.unfed { text-decoration: underline dotted #888; }
.tok.blank { font-size: 11px; font-style: italic; color: #777; }
.tok.blank.evicted { color: #c4c4c4; }
.legend { font-size: 13px; color: #555; margin-top: 6px; }
table { border-collapse: collapse; font-size: 14px; }
td { border: 1px solid #ccc; padding: 2px 8px; }
td:first-child { color: #444; }
)";

void append_image(std::string& out, const figure6_image& img, std::size_t index) {
  const std::vector<std::uint8_t> png = encode_png(whitened(img), img.width, img.height, index);
  std::size_t kept = 0;
  for (const std::uint8_t k : img.kept) kept += k;
  const std::size_t patches = img.kept.size();
  out += fmt::format(
      "<figure id=\"image-{}\"><img width=\"{}\" height=\"{}\" alt=\"image {} with its {} "
      "dropped patches whitened\" src=\"data:image/png;base64,",
      index + 1, img.width, img.height, index + 1, patches - kept);
  append_base64(out, png);
  out += fmt::format(
      "\"><figcaption>Image {}: {} of {} patches kept ({} x {} grid); dropped patches "
      "whitened</figcaption></figure>\n",
      index + 1, kept, patches, img.grid, img.grid);
}

void append_answer(std::string& out, const std::vector<figure6_token>& answer, bool kv_cache) {
  if (answer.empty()) {
    out += "<p class=\"legend\">No tokens were generated.</p>\n";
    return;
  }
  const char* in = kv_cache ? "in the KV cache" : "in the context of the last step";
  const char* out_of = kv_cache ? "not in the KV cache" : "dropped from the context";
  std::size_t cached = 0;
  std::size_t fed = 0;
  out += "<p class=\"text answer\">";
  for (const figure6_token& t : answer) {
    const bool blank = t.text.empty();
    const std::string note = blank ? " (no text of its own)" : "";
    if (!t.fed_back) {
      out += fmt::format(
          "<span class=\"tok unfed{}\" title=\"generation ended on it{}: never fed back, no "
          "decision\">",
          blank ? " blank" : "", note);
    } else {
      ++fed;
      cached += t.in_cache ? 1 : 0;
      const char* where = t.in_cache ? in : out_of;
      const std::string title =
          t.margin ? fmt::format("gate margin {:+.3f}; {}{}", *t.margin, where, note)
                   : fmt::format("not gated; {}{}", where, note);
      out += fmt::format("<span class=\"tok{}{}\" title=\"{}\">", t.in_cache ? "" : " evicted",
                         blank ? " blank" : "", title);
    }
    if (blank) {
      append_escaped(out, t.blank_label.empty() ? std::string("\u00b7") : t.blank_label);
    } else {
      append_escaped(out, t.text);
    }
    out += "</span>";
  }
  bool blanks = false;
  for (const figure6_token& t : answer) blanks = blanks || t.text.empty();
  out += fmt::format(
      "</p>\n<p class=\"legend\">{} of the {} generated tokens fed back to the decoder {}{}.{}{} "
      "Hover a token for its output gate margin (logit0 - logit1).</p>\n",
      cached, fed,
      kv_cache ? "entered the KV cache" : "stay in the recomputed context of the last step",
      cached < fed ? "; the others are greyed" : "",
      fed < answer.size() ? " Generation ended on the dotted token: it was never fed back." : "",
      blanks ? " Small italic marks stand for tokens without text of their own." : "");
}

}  // namespace

std::string figure6_html(const figure6_page& page) {
  for (std::size_t i = 0; i < page.images.size(); ++i) check_image(page.images[i], i);

  std::string out;
  out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  // Nothing but the embedded images and the inline style may load.
  out +=
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src "
      "data:; style-src 'unsafe-inline'\">\n";
  out += "<title>Dynamic-LLaVA: what the model kept</title>\n<style>";
  out += style;
  out += "</style>\n</head>\n<body>\n<h1>Dynamic-LLaVA: what the model kept</h1>\n";
  out += "<h2>Prompt</h2>\n<p class=\"text prompt\">";
  append_escaped(out, page.prompt);
  out += "</p>\n";
  if (!page.images.empty()) {
    out += "<h2>Images as the model saw them</h2>\n<div class=\"images\">\n";
    for (std::size_t i = 0; i < page.images.size(); ++i) append_image(out, page.images[i], i);
    out += "</div>\n";
  }
  out += "<h2>Answer</h2>\n";
  append_answer(out, page.answer, page.kv_cache);
  if (!page.summary.empty()) {
    out += "<h2>Summary</h2>\n<table class=\"summary\">\n";
    for (const auto& [name, value] : page.summary) {
      out += fmt::format("<tr><td>{}</td><td>{}</td></tr>\n", escaped(name), escaped(value));
    }
    out += "</table>\n";
  }
  out += "</body>\n</html>\n";
  return out;
}

void write_figure6_html(const std::filesystem::path& out, const figure6_page& page) {
  const std::string html = figure6_html(page);
  struct closer {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  errno = 0;
  std::unique_ptr<std::FILE, closer> f(std::fopen(out.c_str(), "wb"));
  DYNLLAVA_EXPECTS(f != nullptr, "write_figure6_html: cannot open {} for writing: {}",
                   quote_untrusted(out.string()), std::strerror(errno));
  const bool written = std::fwrite(html.data(), 1, html.size(), f.get()) == html.size();
  const int write_errno = errno;
  const bool closed = std::fclose(f.release()) == 0;
  DYNLLAVA_EXPECTS(written && closed, "write_figure6_html: cannot write {}: {}",
                   quote_untrusted(out.string()), std::strerror(written ? errno : write_errno));
}

}  // namespace dynllava::llava

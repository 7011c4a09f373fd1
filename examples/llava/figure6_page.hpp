// SPDX-License-Identifier: Apache-2.0
/// @file figure6_page.hpp
/// @brief The paper's Figure-6 view of one run as a self-contained HTML page: each input image
/// as the model saw it with its dropped patches whitened, the answer with the generated tokens
/// that did not enter the KV cache greyed (hover: the gate margin), and the run's summary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dynllava::llava {

/// One input image as the vision tower saw it, and which of its patches the image predictor
/// kept.
struct figure6_image {
  int width = 0;                   ///< pixels (336 for LLaVA-1.5)
  int height = 0;                  ///< pixels
  std::vector<std::uint8_t> rgb;   ///< [height, width, 3] row-major 8-bit RGB, host, owned
  int grid = 0;                    ///< patches per side (image size / patch size, 24)
  std::vector<std::uint8_t> kept;  ///< [grid * grid] row-major; 1 = kept, 0 = dropped
};

/// One generated token.
struct figure6_token {
  std::string text;  ///< its decoded text (UTF-8; may be empty for partial bytes)
  /// Its keys and values entered the KV cache (without a KV cache: it stays in the recomputed
  /// context of the last step).
  bool in_cache = true;
  std::optional<float> margin;  ///< the output gate's margin (logit0 - logit1), when gated
  /// False for a token generation ended on (it was never fed back to the decoder, so it has
  /// no keys or values and no cache decision; `in_cache` and `margin` are ignored).
  bool fed_back = true;
  /// Shown instead of an empty `text` (e.g. "</s>" for the end of sequence; "" = a dot), so
  /// that every token can be hovered.
  std::string blank_label{};
};

/// Everything the page shows.
struct figure6_page {
  std::string prompt;                 ///< the user's question, as typed
  bool kv_cache = true;               ///< decoded with a KV cache (else: context recomputed)
  std::vector<figure6_image> images;  ///< in prompt order
  std::vector<figure6_token> answer;  ///< in generation order
  /// The summary table: (name, value) rows in display order.
  std::vector<std::pair<std::string, std::string>> summary;
};

/// @brief The page as one HTML document (images embedded as PNG data URIs; no scripts or
/// styles from the network). All text is HTML-escaped.
/// @throws dynllava::error when an image's sizes, pixels or patch flags are inconsistent.
[[nodiscard]] std::string figure6_html(const figure6_page& page);

/// @brief Writes `figure6_html(page)` to `out`.
/// @throws dynllava::error naming `out` when it cannot be written.
void write_figure6_html(const std::filesystem::path& out, const figure6_page& page);

}  // namespace dynllava::llava

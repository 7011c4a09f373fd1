// SPDX-License-Identifier: Apache-2.0
/// @file prompt_rows.hpp
/// @brief Turns a batch of token sequences with image placeholders, and the images' features,
/// into what the drivers take: the prompt's input rows and its segments.
///
/// Placeholder ids in a sequence stand for images: a single placeholder per image (as the released
/// LLaVA code's `tokenizer_image_token` writes it) or `image_rows` per image (as Hugging Face
/// processors expand it). A run of `k * image_rows` placeholders is `k` expanded images; a run
/// shorter than `image_rows` is one image per placeholder; any other run is an error. Text rows are
/// the decoder's embeddings; an image's rows are its features, in the order the images appear in
/// the batch (sequence 0's first, ...).
#pragma once

#include <dynllava/context/segments.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace dynllava {

/// How `build_prompt_rows` reads the tokens.
struct prompt_rows_options {
  std::int64_t image_token_id = -200;  ///< the placeholder id
  index_t image_rows = 576;            ///< feature rows per image
  /// True for a conversation's first prompt: text before its first image is the system prompt.
  /// False for a later turn appended to a cached conversation: all its text is instruction.
  bool first_prompt = true;
};

/// @brief A batch's prompt rows and segments. Host memory, owning.
///
/// Segments of a sequence: text before the first image is `system` (first prompt) or
/// `instruction`; every image is an `image` segment; text after an image is `instruction`. The
/// `k`-th image of a sequence (0-based) and the text after it have turn `k`; so each image is
/// ranked on its own (context/image_groups.hpp).
struct prompt_rows {
  index_t hidden = 0;                      ///< H, the row width
  std::vector<index_t> row_indptr{0};      ///< [batch + 1]
  std::vector<float> rows;                 ///< [row_indptr[batch], H]
  std::vector<index_t> segment_indptr{0};  ///< [batch + 1]
  std::vector<segment> segments;
  std::vector<index_t> image_begin;  ///< [images] first row of each image, local to its sequence

  /// The rows as the drivers take them.
  host_ragged_rows<const float> view() const noexcept {
    return {make_host_span(row_indptr), make_host_span(rows), hidden};
  }
  /// The segments as the drivers take them.
  segment_table<host_space> segment_view() const noexcept {
    return {make_host_span(segment_indptr), make_host_span(segments)};
  }
};

/// @brief What `build_prompt_rows` needs of a model (requirements 1-2 of `decoder` on the
/// host), for `const M& m`:
///   1. `m.hidden()` is the width H of a row;
///   2. `m.embed(host, tokens, out)` writes `[n, H]` rows for `n` token ids.
template <class M>
concept token_embedder = requires(const M& m, host_span<const std::int32_t> tokens,
                                  host_span<float> out) {
  { m.hidden() } -> std::convertible_to<index_t>;
  m.embed(host, tokens, out);
};

/// @brief Builds the prompt rows of a batch.
/// @param m         embeds the text tokens
/// @param tokens    [batch] ragged token ids; placeholders mark the images
/// @param features  [images, o.image_rows, H] host: every image's rows, in batch order
/// @throws dynllava::error when a sequence is empty, a placeholder run has another length than
///         1 or `image_rows`, the number of images and of features disagree, or a text id does
///         not fit `int32` (the decoder checks its vocabulary).
template <token_embedder M>
prompt_rows build_prompt_rows(const M& m, host_ragged<const std::int64_t> tokens,
                              host_span<const float> features, const prompt_rows_options& o = {}) {
  validate(tokens, "build_prompt_rows: tokens");
  DYNLLAVA_EXPECTS(o.image_rows > 0, "build_prompt_rows: image_rows must be > 0, got {}",
                   o.image_rows);
  prompt_rows p;
  p.hidden = static_cast<index_t>(m.hidden());
  const auto H = static_cast<std::size_t>(p.hidden);
  const std::size_t per_image = static_cast<std::size_t>(o.image_rows) * H;
  DYNLLAVA_EXPECTS(features.size() % per_image == 0,
                   "build_prompt_rows: features must hold whole images of {} x {} values, got {} "
                   "values",
                   o.image_rows, H, features.size());
  const std::size_t images = features.size() / per_image;
  std::size_t image = 0;
  std::vector<std::int32_t> text;
  long long total = 0;
  for (std::size_t b = 0; b < tokens.batch(); ++b) {
    const auto seq = tokens.row(b);
    DYNLLAVA_EXPECTS(!seq.empty(), "build_prompt_rows: sequence {} is empty", b);
    index_t row = 0, turn = 0, seen = 0;
    std::size_t i = 0;
    while (i < seq.size()) {
      std::size_t j = i;
      const bool is_image = seq[i] == o.image_token_id;
      while (j < seq.size() && (seq[j] == o.image_token_id) == is_image) ++j;
      const auto run = static_cast<index_t>(j - i);
      if (is_image) {
        // k * image_rows placeholders: k expanded images; fewer than image_rows: one image each.
        const bool expanded = run % o.image_rows == 0;
        DYNLLAVA_EXPECTS(expanded || run < o.image_rows,
                         "build_prompt_rows: sequence {} has {} consecutive image placeholders at "
                         "token {}; an image is 1 placeholder or {} (image_rows)",
                         b, run, i, o.image_rows);
        const index_t count = expanded ? run / o.image_rows : run;
        for (index_t k = 0; k < count; ++k) {
          DYNLLAVA_EXPECTS(image < images,
                           "build_prompt_rows: the tokens hold more images than the {} given "
                           "features",
                           images);
          if (seen > 0) ++turn;
          ++seen;
          const float* f = features.data() + image * per_image;
          p.rows.insert(p.rows.end(), f, f + per_image);
          p.segments.push_back({segment_kind::image, row, o.image_rows, turn});
          p.image_begin.push_back(row);
          row += o.image_rows;
          ++image;
        }
      } else {
        text.clear();
        for (std::size_t t = i; t < j; ++t) {
          DYNLLAVA_EXPECTS(seq[t] >= std::numeric_limits<std::int32_t>::min() &&
                               seq[t] <= std::numeric_limits<std::int32_t>::max(),
                           "build_prompt_rows: sequence {} token {} = {} is not a valid id", b, t,
                           seq[t]);
          text.push_back(static_cast<std::int32_t>(seq[t]));
        }
        const std::size_t at = p.rows.size();
        p.rows.resize(at + text.size() * H);
        m.embed(host, make_host_span(std::as_const(text)),
                host_span<float>(p.rows.data() + at, text.size() * H));
        const auto kind =
            seen == 0 && o.first_prompt ? segment_kind::system : segment_kind::instruction;
        p.segments.push_back({kind, row, run, turn});
        row += run;
      }
      i = j;
    }
    total += row;
    DYNLLAVA_EXPECTS(total <= std::numeric_limits<index_t>::max(),
                     "build_prompt_rows: the batch holds more than {} rows",
                     std::numeric_limits<index_t>::max());
    p.row_indptr.push_back(static_cast<index_t>(total));
    p.segment_indptr.push_back(static_cast<index_t>(p.segments.size()));
  }
  DYNLLAVA_EXPECTS(image == images,
                   "build_prompt_rows: {} images' features were given but the tokens hold {} "
                   "images",
                   images, image);
  return p;
}

}  // namespace dynllava

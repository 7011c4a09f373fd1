// SPDX-License-Identifier: Apache-2.0
#include "figure6_view.hpp"

#include <dynllava/core/error.hpp>

#include <cmath>
#include <cstddef>

namespace dynllava::llava {

figure6_page make_figure6_page(const loaded_model& m, const request& req,
                               const prepared_request& prepared, const sequence_result& r,
                               const std::vector<std::string>& pieces, const run_summary& summary) {
  const llava_config& c = m.folder.config;
  const index_t grid = c.vision.image_size / c.vision.patch_size;
  const auto rows = static_cast<std::size_t>(c.image_tokens());
  const auto patches = static_cast<std::size_t>(grid) * static_cast<std::size_t>(grid);
  // Image rows are the patch grid, row-major, after the class token when the model keeps it.
  DYNLLAVA_EXPECTS(rows == patches || rows == patches + 1,
                   "--visualize: {} image rows per image are not a {} x {} patch grid", rows, grid,
                   grid);
  DYNLLAVA_EXPECTS(r.image_keep.size() == rows * prepared.views.size(),
                   "--visualize: {} image keep flags for {} images of {} rows", r.image_keep.size(),
                   prepared.views.size(), rows);
  figure6_page page;
  page.prompt = req.prompt;
  page.kv_cache = summary.settings.kv_cache;
  for (std::size_t i = 0; i < prepared.views.size(); ++i) {
    const rgb_image& v = prepared.views[i];
    figure6_image img;
    img.width = static_cast<int>(v.width);
    img.height = static_cast<int>(v.height);
    img.rgb = v.pixels;
    img.grid = static_cast<int>(grid);
    const auto first =
        r.image_keep.begin() + static_cast<std::ptrdiff_t>(i * rows + rows - patches);
    img.kept.assign(first, first + static_cast<std::ptrdiff_t>(patches));
    page.images.push_back(std::move(img));
  }
  for (std::size_t k = 0; k < r.tokens.size() && k < pieces.size(); ++k) {
    figure6_token t;
    t.text = pieces[k];
    if (r.tokens[k] == static_cast<std::int32_t>(c.eos_token_id)) t.blank_label = "</s>";
    if (k < r.output_keep.size()) {
      t.in_cache = r.output_keep[k] != 0;
      if (!std::isnan(r.output_margin[k])) t.margin = r.output_margin[k];
    } else {
      t.fed_back = false;  // the token generation ended on
    }
    page.answer.push_back(std::move(t));
  }
  page.summary = summary_rows(summary);
  return page;
}

}  // namespace dynllava::llava

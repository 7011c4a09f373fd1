// SPDX-License-Identifier: Apache-2.0
/// @file figure6_view.hpp
/// @brief Fills the Figure-6 page (`figure6_page.hpp`) of one answer of `dynllava-llava`.
#pragma once

#include "figure6_page.hpp"
#include "request_runner.hpp"
#include "run_summary.hpp"

#include <string>
#include <vector>

namespace dynllava::llava {

/// @brief The page of one answer: each image as the tower saw it with the image predictor's
/// (or FastV's) keep flags per patch; each generated token with its text (`pieces`, from
/// `answer_stream`), whether it entered the KV cache and its gate margin (a token without a
/// decision, the newest, counts as cached: nothing dropped it); the summary rows.
/// @throws dynllava::error when the keep flags do not cover the images (a model whose image
/// rows are not the patch grid, with or without the class token).
[[nodiscard]] figure6_page make_figure6_page(const loaded_model& m, const request& req,
                                             const prepared_request& prepared,
                                             const sequence_result& r,
                                             const std::vector<std::string>& pieces,
                                             const run_summary& summary);

}  // namespace dynllava::llava

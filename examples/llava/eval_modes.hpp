// SPDX-License-Identifier: Apache-2.0
/// @file eval_modes.hpp
/// @brief `dynllava-llava-eval`'s measurement: held-out questions answered greedily in the dense,
/// Dynamic-LLaVA and random-115 modes through the library's drivers, tallied per mode (exact
/// answers, image rows kept, kept rows on objects).
#pragma once

#include "heldout_set.hpp"
#include "request_runner.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace dynllava::llava {

/// What answers the questions.
enum class eval_mode : std::uint8_t {
  dense,    ///< every token kept (`run_batch`, mode dense)
  dynamic,  ///< Dynamic-LLaVA: image predictor and output-text gate (`run_batch`, mode dynamic)
  random,   ///< floor(image rows * vision_keep_rate) random image rows kept at the sparse layer
};

[[nodiscard]] std::string_view to_string(eval_mode mode) noexcept;
/// @throws dynllava::error naming `--modes` and the accepted names.
[[nodiscard]] eval_mode parse_eval_mode(std::string_view text);

struct eval_settings {
  std::size_t batch = 8;   ///< questions per ragged batch, >= 1
  std::uint64_t seed = 0;  ///< the random mode's scores
  index_t margin = 2;      ///< tokens generated past each answer's length
};

struct kind_tally {
  std::size_t questions = 0;
  std::size_t exact = 0;
};

/// One mode over the questions.
struct mode_report {
  eval_mode mode = eval_mode::dense;
  std::size_t questions = 0;
  std::size_t exact = 0;
  std::map<std::string, kind_tally> kinds;
  std::int64_t image_rows = 0;      ///< image rows over all questions
  std::int64_t kept_rows = 0;       ///< of those, kept at the sparse layer (all when dense)
  std::int64_t kept_on_object = 0;  ///< kept rows whose patch touches an object
  std::int64_t object_rows = 0;     ///< rows whose patch touches an object
  std::vector<std::size_t> wrong;   ///< file lines of the questions not answered exactly
  double seconds = 0;

  [[nodiscard]] double exact_rate() const noexcept;
  [[nodiscard]] double kept_on_object_rate() const noexcept;  ///< kept_on_object / kept_rows
  [[nodiscard]] double object_share() const noexcept;         ///< object_rows / image_rows
};

/// @brief Tokenises every question through `prepare_request` (its vicuna_v1 prompt with one
/// image) and checks the ids against the file's "prompt_ids".
/// @throws dynllava::error naming `FILE:LINE` and the first differing position.
void check_prompts(const loaded_model& m, const std::vector<heldout_item>& items,
                   const std::string& file);

/// @brief Answers `items` greedily in `mode`, `settings.batch` at a time, each with at most
/// len(answer_ids) + margin new tokens; an answer is exact when the generated ids (EOS included)
/// equal "answer_ids".
/// @throws dynllava::error for a model without the predictors `mode` needs, or what the drivers
///         throw.
[[nodiscard]] mode_report evaluate_mode(const loaded_model& m,
                                        const std::vector<heldout_item>& items, eval_mode mode,
                                        const eval_settings& settings);

/// @brief The random mode's run of one batch: `kv_session` with a `random_image_scorer` (seeded
/// by `seed` and each sequence's index) as image predictor, the options of Dynamic-LLaVA's image
/// pruning, no output gate, the full cache. Greedy.
[[nodiscard]] std::vector<sequence_result> run_random_batch(
    const loaded_model& m, const std::vector<prepared_request>& batch, index_t max_new_tokens,
    std::uint64_t seed);

}  // namespace dynllava::llava

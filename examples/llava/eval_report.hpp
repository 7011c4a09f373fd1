// SPDX-License-Identifier: Apache-2.0
/// @file eval_report.hpp
/// @brief What `dynllava-llava-eval` prints: each mode's tallies, the dense / Dynamic-LLaVA
/// difference and issue #16's targets (>= 90% exact answers with Dynamic-LLaVA, within 2 points
/// of dense; kept rows on objects >= 3x the objects' share of all patches).
#pragma once

#include "eval_modes.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace dynllava::llava {

/// The targets, each `nullopt` when a mode it needs was not run.
struct eval_targets {
  std::optional<double> dense_minus_dynamic_points;  ///< 100 * (dense - dynamic) exact rates
  std::optional<bool> dynamic_exact_90;              ///< dynamic exact >= 0.90
  std::optional<bool> within_2_points;               ///< dynamic >= dense - 2 points
  std::optional<bool> on_object_3x;                  ///< dynamic kept-on-object >= 3 x share
  [[nodiscard]] bool all_met() const noexcept;       ///< every target known and met
};

[[nodiscard]] eval_targets check_targets(const std::vector<mode_report>& modes);

/// `{"file", "questions", "modes": [...], "targets": {...}}`.
[[nodiscard]] nlohmann::json report_json(const std::string& file,
                                         const std::vector<mode_report>& modes);

/// A table per mode and the targets, for people.
void print_report(std::ostream& os, const std::string& file, const std::vector<mode_report>& modes);

}  // namespace dynllava::llava

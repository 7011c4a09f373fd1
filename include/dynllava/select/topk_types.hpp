// SPDX-License-Identifier: Apache-2.0
/// @file topk_types.hpp
/// @brief Options of budgeted top-k selection (the budget itself is core/budget.hpp).
#pragma once

#include <dynllava/core/tie_break.hpp>

namespace dynllava {

/// Options shared by every top-k backend.
struct topk_options {
  tie_break tie = tie_break::smaller_position;  ///< order among equal scores
};

}  // namespace dynllava

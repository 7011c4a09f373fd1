// SPDX-License-Identifier: Apache-2.0
/// @file predictor_config.hpp
/// @brief Moved to core/predictor_config.hpp (the cost model needs it too); this forwarding
/// header keeps old includes compiling and can go once none remain.
#pragma once

#include <dynllava/core/predictor_config.hpp>

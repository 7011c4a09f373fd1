// SPDX-License-Identifier: Apache-2.0
// An nn-tier header reaching the io tier's package: header_tiers_are_separate must reject it.
#pragma once
#include <nlohmann/json.hpp>

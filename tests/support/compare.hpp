// SPDX-License-Identifier: Apache-2.0
/// @file compare.hpp
/// @brief Tests: comparing float results of two backends to rounding.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <vector>

namespace dynllava::test {

/// Checks `|got - expected| <= tol * (1 + |expected|)` everywhere (NaN never passes).
inline void check_close(const std::vector<float>& got, const std::vector<float>& expected,
                        float tol) {
  REQUIRE(got.size() == expected.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - expected[i]) <= tol * (1.0f + std::fabs(expected[i])))) ++bad;
  }
  CHECK(bad == 0);
}

}  // namespace dynllava::test

// SPDX-License-Identifier: Apache-2.0
/// @file errors.hpp
/// @brief `error_of(f)`: the message of the `dynllava::error` that `f()` throws, for tests.
#pragma once

#include <dynllava/core/error.hpp>

#include <string>

namespace dynllava::test {

/// The `what()` of the `dynllava::error` thrown by `f()`, or "<no error>".
inline std::string error_of(auto&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace dynllava::test

// SPDX-License-Identifier: Apache-2.0
/// @file error.hpp
/// @brief `dynllava::error` and the boundary-check macro `DYNLLAVA_EXPECTS`.
///
/// Host-level calls validate their arguments at the public boundary and throw `dynllava::error`
/// with a formatted message that names the function, the argument and the expected versus actual
/// value. Device-level calls (`dynllava::cuda::*`) never throw; they return `cudaError_t`.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace dynllava {

/// Exception thrown by every host-level dynllava call on invalid input or failure.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {

/// The file name without its directories (messages must not carry the build machine's paths).
constexpr const char* file_basename(const char* path) noexcept {
  const char* base = path;
  for (const char* p = path; *p != '\0'; ++p) {
    if (*p == '/' || *p == '\\') base = p + 1;
  }
  return base;
}

[[noreturn]] inline void throw_error(const char* file, int line, const std::string& message) {
  throw error(fmt::format("dynllava: {} [{}:{}]", message, file_basename(file), line));
}

}  // namespace detail
}  // namespace dynllava

/// Throws `dynllava::error` with an fmt-formatted message when `cond` is false. The message
/// ends with `[file.hpp:line]` of the check.
/// Example: `DYNLLAVA_EXPECTS(k <= n, "topk: k ({}) must not exceed n ({}) for sequence {}", k, n,
/// b);`
#define DYNLLAVA_EXPECTS(cond, ...)                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      ::dynllava::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
    }                                                                                  \
  } while (false)

/// Throws `dynllava::error` unconditionally with an fmt-formatted message.
#define DYNLLAVA_FAIL(...) \
  ::dynllava::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))

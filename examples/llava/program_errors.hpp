// SPDX-License-Identifier: Apache-2.0
/// @file program_errors.hpp
/// @brief How the LLaVA programs report failures: one line on stderr naming the program, and an
/// exit code, never an exception dump.
#pragma once

#include <functional>
#include <string_view>

namespace dynllava::llava {

/// @brief Writes `<program>: error: <message>` as one line on stderr (line breaks become
/// spaces; the library's "dynllava: " prefix is dropped), after flushing stdout.
void print_error(std::string_view program, std::string_view message);

/// @brief Runs `body` and returns its exit code; any exception it lets out is printed with
/// `print_error` (out of memory as "out of memory") and gives exit code 1.
[[nodiscard]] int run_reporting_errors(std::string_view program,
                                       const std::function<int()>& body) noexcept;

}  // namespace dynllava::llava

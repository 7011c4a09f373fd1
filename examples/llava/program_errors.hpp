// SPDX-License-Identifier: Apache-2.0
/// @file program_errors.hpp
/// @brief How the LLaVA programs report failures: one line on stderr naming the program, and an
/// exit code, never an exception dump.
#pragma once

#include <dynllava/core/error.hpp>

#include <functional>
#include <optional>
#include <string_view>

namespace CLI {
class App;
}  // namespace CLI

namespace dynllava::llava {

/// A problem with what the command line (or a `--batch` line) asks for that can only be seen
/// after the model is loaded (a prompt longer than the model's positions): exit code 2.
class usage_error : public dynllava::error {
 public:
  using dynllava::error::error;
};

/// The message of `e` without the library's "dynllava: " prefix.
[[nodiscard]] std::string_view message_of(const std::exception& e) noexcept;

/// @brief Writes `<program>: error: <message>` as one line on stderr (line breaks become
/// spaces; the library's "dynllava: " prefix is dropped), after flushing stdout.
void print_error(std::string_view program, std::string_view message);

/// @brief Runs `body` and returns its exit code; any exception it lets out is printed with
/// `print_error` (out of memory as "out of memory") and gives exit code 1 (`usage_error`: 2).
[[nodiscard]] int run_reporting_errors(std::string_view program,
                                       const std::function<int()>& body) noexcept;

/// @brief Parses the command line into `app`'s options. Returns nothing to go on, or the exit
/// code to end with: 0 after --help or --version (printed), 2 after a parse error (printed with
/// `print_error`).
[[nodiscard]] std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv,
                                                    std::string_view program);

/// @brief Runs `check` (what validates the command line and the files it names): a
/// dynllava::error it throws is printed with `print_error` and gives exit code 2; returns
/// nothing when it passes.
[[nodiscard]] std::optional<int> check_usage(std::string_view program,
                                             const std::function<void()>& check);

}  // namespace dynllava::llava

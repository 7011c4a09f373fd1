// SPDX-License-Identifier: Apache-2.0
#include "program_errors.hpp"

#include <dynllava/core/error.hpp>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>
#include <new>
#include <string>

namespace dynllava::llava {

std::string_view message_of(const std::exception& e) noexcept {
  std::string_view what = e.what();
  if (what.starts_with("dynllava: ")) what.remove_prefix(10);
  return what;
}

void print_error(std::string_view program, std::string_view message) {
  if (message.starts_with("dynllava: ")) message.remove_prefix(10);
  // The library's messages end with the check's source location (" [file.cpp:38]"), which
  // helps a developer, not someone running the program.
  if (message.ends_with(']')) {
    const auto open = message.rfind(" [");
    const auto colon = message.rfind(':');
    if (open != std::string_view::npos && colon != std::string_view::npos && colon > open &&
        message.find_first_not_of("0123456789", colon + 1) == message.size() - 1) {
      message = message.substr(0, open);
    }
  }
  std::string line(message);
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::fflush(stdout);
  std::cerr << program << ": error: " << line << '\n';
}

int run_reporting_errors(std::string_view program, const std::function<int()>& body) noexcept {
  try {
    try {
      return body();
    } catch (const usage_error& e) {
      print_error(program, e.what());
      return 2;
    } catch (const std::bad_alloc&) {
      print_error(program, "out of memory");
    } catch (const std::exception& e) {  // dynllava::error and the rest
      print_error(program, e.what());
    } catch (...) {
      print_error(program, "unknown failure");
    }
  } catch (...) {  // printing itself failed
  }
  return 1;
}

std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv,
                                      std::string_view program) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    print_error(program, e.what());
    return 2;
  }
  return std::nullopt;
}

std::optional<int> check_usage(std::string_view program, const std::function<void()>& check) {
  try {
    check();
  } catch (const dynllava::error& e) {
    print_error(program, e.what());
    return 2;
  }
  return std::nullopt;
}

}  // namespace dynllava::llava

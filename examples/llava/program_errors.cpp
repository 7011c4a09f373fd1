// SPDX-License-Identifier: Apache-2.0
#include "program_errors.hpp"

#include <cstdio>
#include <exception>
#include <iostream>
#include <new>
#include <string>

namespace dynllava::llava {

void print_error(std::string_view program, std::string_view message) {
  if (message.starts_with("dynllava: ")) message.remove_prefix(10);
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

}  // namespace dynllava::llava

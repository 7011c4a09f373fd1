// SPDX-License-Identifier: Apache-2.0
/// @file peak_rss.hpp
/// @brief The process's peak resident set, for the benchmarks' memory counters.
#pragma once

#include <fstream>
#include <string>

namespace dynllava::bench {

/// The process's peak resident set (VmHWM) in bytes, 0 where /proc does not say.
inline double peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      double kb = 0;
      in >> kb;
      return kb * 1024.0;
    }
    std::getline(in, key);
  }
  return 0.0;
}

}  // namespace dynllava::bench

// SPDX-License-Identifier: Apache-2.0
// Shared by the fuzz targets: what every error message of a loader must satisfy.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace dynllava::fuzz {

/// Aborts (a fuzzer finding) unless `what` is printable: untrusted text must come out escaped
/// (no control character, NUL included) and capped (a message stays under 8 KiB).
inline void check_message(std::string_view what) {
  bool ok = what.size() < 8192;
  for (const char c : what) ok = ok && static_cast<unsigned char>(c) >= 0x20;
  if (!ok) {
    std::fprintf(stderr, "unprintable or oversized error message (%zu bytes)\n", what.size());
    std::abort();
  }
}

}  // namespace dynllava::fuzz

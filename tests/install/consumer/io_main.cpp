// SPDX-License-Identifier: Apache-2.0
// Uses the installed io tier (and through it the nn tier): opening a missing checkpoint throws
// dynllava::error naming the path.
#include <dynllava/io.hpp>

#include <cstdio>
#include <string>

int main() {
  bool ok = false;
  try {
    const dynllava::io::checkpoint ckpt("/nonexistent/dynllava-consumer.safetensors");
  } catch (const dynllava::error& e) {
    ok = std::string(e.what()).find("dynllava-consumer.safetensors") != std::string::npos;
  }
  std::printf("consumer_io: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}

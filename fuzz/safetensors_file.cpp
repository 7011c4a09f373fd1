// SPDX-License-Identifier: Apache-2.0
// Fuzz target: arbitrary bytes as a .safetensors file, validated from memory (no file I/O).
// Every tensor of an accepted file is viewed and widened; every error message is checked.
#include <dynllava/io/safetensors.hpp>

#include "check_message.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dynllava;
  try {
    const io::safetensors_file f(std::span(reinterpret_cast<const std::byte*>(data), size),
                                 "input.safetensors");
    float buf[64];
    for (const auto& t : f.tensors()) {
      const io::tensor_view v = f.view(t);
      if (v.bytes.size() != t.elements() * io::size_of(t.type) || f.find(t.name) != &t) {
        std::abort();
      }
      if (!io::is_widenable(v.type)) continue;
      for (std::size_t i = 0; i < v.elements(); i += 64) {
        io::widen_to_f32(v, i, std::min<std::size_t>(64, v.elements() - i), buf);
      }
    }
  } catch (const error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}

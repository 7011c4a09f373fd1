// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: a LLaVA config.json (io/read_llava_config.hpp). The input is read as a LLaVA
// config, as a CLIP config, as a preprocessor_config.json, and, when it holds a NUL-free split
// point "\n---\n", as a LLaVA config with the rest as its CLIP config. Malformed input must end in
// dynllava::error; anything else (a crash, another exception, a sanitizer report, a hang) is a
// finding.
#include <dynllava/io/read_clip_config.hpp>
#include <dynllava/io/read_image_preprocess.hpp>
#include <dynllava/io/read_llava_config.hpp>

#include "check_message.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const dynllava::llava_config c = dynllava::io::parse_llava_config(text, "config.json");
    c.validate();  // whatever the reader accepts is a valid configuration
  } catch (const dynllava::error& e) {
    dynllava::fuzz::check_message(e.what());
  }
  try {
    dynllava::io::parse_clip_config(text, "clip/config.json").validate();
  } catch (const dynllava::error& e) {
    dynllava::fuzz::check_message(e.what());
  }
  try {  // the same text as a preprocessor_config.json (io/read_image_preprocess.hpp)
    const dynllava::image_preprocess p =
        dynllava::io::parse_preprocessor_config(text, "preprocessor_config.json", 336);
    if (p.crop_height != 336 || p.crop_width != 336 || p.crop_height > p.shortest_edge ||
        !(p.rescale_factor > 0.0)) {
      std::abort();  // accepted but not what the tower takes
    }
  } catch (const dynllava::error& e) {
    dynllava::fuzz::check_message(e.what());
  }
  if (const auto split = text.find("\n---\n"); split != std::string_view::npos) {
    try {
      dynllava::io::parse_llava_config(
          text.substr(0, split), "config.json",
          dynllava::io::json_text{text.substr(split + 5), "clip/config.json"})
          .validate();
    } catch (const dynllava::error& e) {
      dynllava::fuzz::check_message(e.what());
    }
  }
  return 0;
}

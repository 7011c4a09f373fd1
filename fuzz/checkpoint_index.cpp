// SPDX-License-Identifier: Apache-2.0
// Fuzz target: arbitrary bytes as model.safetensors.index.json in a folder that holds two valid
// shards (a.safetensors: x F32 [2], y BF16 [1]; b.safetensors: z F16 [2, 1]), a symbolic link
// to a shard (link.safetensors) and a sub-folder (sub). Accepted checkpoints are read whole;
// every error message is checked.
#include <dynllava/io/safetensors.hpp>

#include "check_message.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace {

namespace fs = std::filesystem;

std::string safetensors_bytes(std::string_view header, std::string_view data) {
  std::string out(8, '\0');
  for (std::size_t i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return out.append(header).append(data);
}

void write(const fs::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The folder, made once per process and removed at exit (a pointer that is never destroyed,
/// so that the exit handler can still use it).
const fs::path& folder() {
  static const fs::path* dir = [] {
    std::string tmpl = (fs::temp_directory_path() / "dynllava-fuzz-index-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    const auto* d_ptr = new fs::path(tmpl);
    const fs::path& d = *d_ptr;
    write(d / "a.safetensors",
          safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("y":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}})",
                            std::string_view("\0\0\x80\x3f\0\0\0\xc0\x80\x3f", 10)));
    write(d / "b.safetensors",
          safetensors_bytes(R"({"z":{"dtype":"F16","shape":[2,1],"data_offsets":[0,4]}})",
                            std::string_view("\x00\x3c\x00\xc0", 4)));
    fs::create_symlink("a.safetensors", d / "link.safetensors");
    fs::create_directory(d / "sub");
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(folder(), ec);
    });
    return d_ptr;
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dynllava;
  const fs::path& dir = folder();
  write(dir / "model.safetensors.index.json",
        std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    const io::checkpoint ck(dir);
    for (const auto& name : ck.names()) {
      if (ck.read_f32(name).size() != ck.find(name)->elements()) std::abort();
    }
  } catch (const error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}

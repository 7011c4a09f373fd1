// SPDX-License-Identifier: Apache-2.0
/// @file safetensors.hpp
/// @brief A validating reader of safetensors files and sharded checkpoints (index JSON).
///
/// Format: an 8-byte little-endian header length `n`, `n` bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the
/// data buffer. Everything is validated when a file is opened, before any tensor is read: a
/// truncated file, a header that is not JSON or not the expected shape, unknown dtypes, sizes
/// that disagree with shapes, offsets outside the buffer, overlapping tensors or holes in the
/// buffer are all rejected with a `dynllava::error` naming the file and the tensor. Reads never
/// go out of bounds. Tensors are read on demand (no mapping, no whole-file load).
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/half.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dynllava::io {

/// Element type of a stored tensor.
enum class dtype : std::uint8_t {
  f64,
  f32,
  f16,
  bf16,
  i64,
  i32,
  i16,
  i8,
  u64,
  u32,
  u16,
  u8,
  boolean,
  f8_e4m3,
  f8_e5m2
};

/// Bytes per element.
constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
    case dtype::f64:
    case dtype::i64:
    case dtype::u64:
      return 8;
    case dtype::f32:
    case dtype::i32:
    case dtype::u32:
      return 4;
    case dtype::f16:
    case dtype::bf16:
    case dtype::i16:
    case dtype::u16:
      return 2;
    default:
      return 1;
  }
}

/// The safetensors name of a dtype ("F32", "BF16", ...).
constexpr std::string_view to_string(dtype t) noexcept {
  constexpr std::string_view names[] = {"F64", "F32", "F16",  "BF16",    "I64",
                                        "I32", "I16", "I8",   "U64",     "U32",
                                        "U16", "U8",  "BOOL", "F8_E4M3", "F8_E5M2"};
  return names[static_cast<std::size_t>(t)];
}

/// Parses a safetensors dtype name; nullopt when unknown.
inline std::optional<dtype> parse_dtype(std::string_view s) noexcept {
  for (int i = 0; i <= static_cast<int>(dtype::f8_e5m2); ++i) {
    if (to_string(static_cast<dtype>(i)) == s) return static_cast<dtype>(i);
  }
  return std::nullopt;
}

/// One tensor's entry in a safetensors header.
struct tensor_info {
  std::string name;
  io::dtype type = dtype::f32;
  std::vector<std::int64_t> shape;  ///< row-major extents
  std::uint64_t begin = 0;          ///< byte offset in the data buffer
  std::uint64_t end = 0;            ///< one past the last byte

  std::uint64_t elements() const noexcept {
    std::uint64_t n = 1;
    for (auto d : shape) n *= static_cast<std::uint64_t>(d);
    return n;
  }
};

/// Formats a shape as "[a, b, c]".
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// @brief One safetensors file, validated on open; tensors are read on demand.
class safetensors_file {
 public:
  /// Largest JSON header accepted (the format's own reference limit is 100 MB).
  static constexpr std::uint64_t max_header_bytes = 100ull << 20;

  /// Opens and validates `path`. @throws dynllava::error describing the first defect found.
  explicit safetensors_file(std::filesystem::path path) : path_(std::move(path)) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path_, ec);
    DYNLLAVA_EXPECTS(!ec, "safetensors: cannot open {}: {}", path_.string(), ec.message());
    file_size_ = size;
    std::ifstream in(path_, std::ios::binary);
    DYNLLAVA_EXPECTS(in.good(), "safetensors: cannot open {}", path_.string());
    DYNLLAVA_EXPECTS(file_size_ >= 8, "safetensors: {} is truncated: {} bytes, no header length",
                     path_.string(), file_size_);
    unsigned char len_bytes[8];
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    DYNLLAVA_EXPECTS(header_len <= max_header_bytes,
                     "safetensors: {}: header length {} exceeds the limit of {} bytes",
                     path_.string(), header_len, max_header_bytes);
    DYNLLAVA_EXPECTS(header_len <= file_size_ - 8,
                     "safetensors: {} is truncated: header length {} but only {} bytes follow",
                     path_.string(), header_len, file_size_ - 8);
    std::string header(static_cast<std::size_t>(header_len), '\0');
    in.read(header.data(), static_cast<std::streamsize>(header_len));
    DYNLLAVA_EXPECTS(in.good(), "safetensors: {}: reading the header failed", path_.string());
    data_offset_ = 8 + header_len;
    parse_header(header);
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  /// Every tensor, sorted by name.
  const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  /// The `__metadata__` map (empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  /// The entry of `name`, or null.
  const tensor_info* find(std::string_view name) const noexcept {
    const auto it =
        std::lower_bound(tensors_.begin(), tensors_.end(), name,
                         [](const tensor_info& t, std::string_view n) { return t.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
  }

  /// Raw bytes of a tensor. @throws dynllava::error when absent or on a read failure.
  std::vector<std::byte> read_bytes(const tensor_info& t) const {
    std::vector<std::byte> out(static_cast<std::size_t>(t.end - t.begin));
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(data_offset_ + t.begin));
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
    DYNLLAVA_EXPECTS(in.good() || out.empty(), "safetensors: {}: reading tensor {} failed",
                     path_.string(), t.name);
    return out;
  }

  /// @brief Reads a floating-point tensor as fp32 (F32 as is, F16 and BF16 converted exactly).
  /// @throws dynllava::error when absent or of another dtype.
  std::vector<float> read_f32(std::string_view name) const {
    const tensor_info* t = find(name);
    DYNLLAVA_EXPECTS(t != nullptr, "safetensors: {} has no tensor named {}", path_.string(), name);
    return to_f32(*t, read_bytes(*t), path_.string());
  }

  /// Converts raw little-endian F32/F16/BF16 bytes to fp32. @throws dynllava::error otherwise.
  static std::vector<float> to_f32(const tensor_info& t, const std::vector<std::byte>& bytes,
                                   const std::string& where) {
    std::vector<float> out(static_cast<std::size_t>(t.elements()));
    switch (t.type) {
      case dtype::f32:
        if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * 4);
        break;
      case dtype::f16:
      case dtype::bf16:
        for (std::size_t i = 0; i < out.size(); ++i) {
          const auto lo = static_cast<std::uint16_t>(bytes[2 * i]);
          const auto hi = static_cast<std::uint16_t>(bytes[2 * i + 1]);
          const auto bits = static_cast<std::uint16_t>(lo | (hi << 8));
          out[i] = t.type == dtype::f16 ? half_bits_to_float(bits) : bfloat16_bits_to_float(bits);
        }
        break;
      default:
        DYNLLAVA_FAIL("safetensors: {}: tensor {} has dtype {}; expected F32, F16 or BF16", where,
                      t.name, to_string(t.type));
    }
    return out;
  }

 private:
  void parse_header(const std::string& header) {
    const std::string& file = path_.string();
    DYNLLAVA_EXPECTS(header.find('\0') == std::string::npos,
                     "safetensors: {}: the header contains NUL bytes", file);
    // The format nests three levels (header -> entry -> shape / offsets); deeper input is
    // rejected while parsing, so hostile nesting costs neither stack nor memory. Top-level keys
    // must be unique (nlohmann would silently keep the last).
    bool too_deep = false;
    std::string duplicate;
    std::set<std::string> keys;
    const nlohmann::json::parser_callback_t guard =
        [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
          if (depth > 3) {
            too_deep = true;
            return false;
          }
          if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
            if (!keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
              duplicate = parsed.get<std::string>();
            }
          }
          return true;
        };
    const nlohmann::json j = nlohmann::json::parse(header, guard, /*allow_exceptions=*/false);
    DYNLLAVA_EXPECTS(!too_deep, "safetensors: {}: the header nests deeper than the format allows",
                     file);
    DYNLLAVA_EXPECTS(!j.is_discarded(), "safetensors: {}: the header is not valid JSON", file);
    DYNLLAVA_EXPECTS(duplicate.empty(), "safetensors: {}: tensor {} is listed twice", file,
                     duplicate);
    DYNLLAVA_EXPECTS(j.is_object(), "safetensors: {}: the header must be a JSON object, got {}",
                     file, j.type_name());
    const std::uint64_t data_size = file_size_ - data_offset_;
    for (const auto& [name, entry] : j.items()) {
      if (name == "__metadata__") {
        DYNLLAVA_EXPECTS(entry.is_object(), "safetensors: {}: __metadata__ must be an object",
                         file);
        for (const auto& [k, v] : entry.items()) {
          DYNLLAVA_EXPECTS(v.is_string(), "safetensors: {}: __metadata__.{} must be a string", file,
                           k);
          metadata_[k] = v.get<std::string>();
        }
        continue;
      }
      DYNLLAVA_EXPECTS(entry.is_object(), "safetensors: {}: entry {} must be an object", file,
                       name);
      tensor_info t;
      t.name = name;
      const auto dt = entry.find("dtype");
      DYNLLAVA_EXPECTS(dt != entry.end() && dt->is_string(),
                       "safetensors: {}: tensor {} has no string dtype", file, name);
      const auto parsed = parse_dtype(dt->get<std::string>());
      DYNLLAVA_EXPECTS(parsed.has_value(), "safetensors: {}: tensor {} has unknown dtype {}", file,
                       name, dt->get<std::string>());
      t.type = *parsed;
      const auto shape = entry.find("shape");
      DYNLLAVA_EXPECTS(shape != entry.end() && shape->is_array(),
                       "safetensors: {}: tensor {} has no shape array", file, name);
      std::uint64_t elements = 1;
      for (const auto& d : *shape) {
        DYNLLAVA_EXPECTS(d.is_number_unsigned(),
                         "safetensors: {}: tensor {} has a shape entry that is not a non-negative "
                         "integer ({}{})",
                         file, name, d.type_name(),
                         d.is_number_integer() ? ": " + std::to_string(d.get<std::int64_t>()) : "");
        const auto v = d.get<std::uint64_t>();
        DYNLLAVA_EXPECTS(v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
                         "safetensors: {}: tensor {} has a shape entry {} beyond int64", file, name,
                         v);
        DYNLLAVA_EXPECTS(v == 0 || elements <= std::numeric_limits<std::uint64_t>::max() / 8 / v,
                         "safetensors: {}: tensor {} has an impossibly large shape", file, name);
        elements *= v;
        t.shape.push_back(static_cast<std::int64_t>(v));
      }
      const auto off = entry.find("data_offsets");
      DYNLLAVA_EXPECTS(off != entry.end() && off->is_array() && off->size() == 2 &&
                           (*off)[0].is_number_unsigned() && (*off)[1].is_number_unsigned(),
                       "safetensors: {}: tensor {} needs data_offsets [begin, end] of non-negative "
                       "integers",
                       file, name);
      t.begin = (*off)[0].get<std::uint64_t>();
      t.end = (*off)[1].get<std::uint64_t>();
      DYNLLAVA_EXPECTS(t.begin <= t.end,
                       "safetensors: {}: tensor {} has data_offsets [{}, {}] with "
                       "begin > end",
                       file, name, t.begin, t.end);
      DYNLLAVA_EXPECTS(t.end <= data_size,
                       "safetensors: {}: tensor {} ends at byte {} but the data buffer holds {} "
                       "bytes (truncated file?)",
                       file, name, t.end, data_size);
      DYNLLAVA_EXPECTS(t.end - t.begin == elements * size_of(t.type),
                       "safetensors: {}: tensor {} ({} {}) needs {} bytes, its offsets span {}",
                       file, name, to_string(t.type), shape_string(t.shape),
                       elements * size_of(t.type), t.end - t.begin);
      tensors_.push_back(std::move(t));
    }
    // The buffer must be covered exactly: no overlaps, no holes.
    std::vector<const tensor_info*> by_offset;
    for (const auto& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const tensor_info* a, const tensor_info* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::uint64_t expected = 0;
    const tensor_info* prev = nullptr;
    for (const tensor_info* t : by_offset) {
      DYNLLAVA_EXPECTS(t->begin >= expected,
                       "safetensors: {}: tensors {} and {} overlap (bytes [{}, {}) and [{}, {}))",
                       file, prev ? prev->name : "", t->name, prev ? prev->begin : 0,
                       prev ? prev->end : 0, t->begin, t->end);
      DYNLLAVA_EXPECTS(t->begin == expected,
                       "safetensors: {}: bytes [{}, {}) of the data buffer belong to no tensor",
                       file, expected, t->begin);
      expected = t->end;
      prev = t;
    }
    DYNLLAVA_EXPECTS(expected == data_size,
                     "safetensors: {}: the data buffer holds {} bytes but the tensors cover {}",
                     file, data_size, expected);
    std::sort(tensors_.begin(), tensors_.end(),
              [](const tensor_info& a, const tensor_info& b) { return a.name < b.name; });
  }

  std::filesystem::path path_;
  std::uint64_t file_size_ = 0;
  std::uint64_t data_offset_ = 0;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// @brief A checkpoint: one safetensors file, or the shards of a `*.safetensors.index.json`.
class checkpoint {
 public:
  /// @brief Opens a checkpoint.
  /// @param path a `.safetensors` file; a `*.index.json`; or a directory holding either
  ///        `model.safetensors.index.json`, or `*.safetensors` files (all opened).
  /// @throws dynllava::error on a missing path, a malformed index or shard, a tensor the index
  ///         maps to a shard that lacks it, or a tensor present in two shards.
  explicit checkpoint(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    DYNLLAVA_EXPECTS(fs::exists(path), "checkpoint: {} does not exist", path.string());
    if (fs::is_directory(path)) {
      const auto index = path / "model.safetensors.index.json";
      if (fs::exists(index)) {
        open_index(index);
        return;
      }
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(path)) {
        if (e.path().extension() == ".safetensors") files.push_back(e.path());
      }
      DYNLLAVA_EXPECTS(!files.empty(), "checkpoint: {} holds no .safetensors file and no index",
                       path.string());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) add_shard(f, nullptr);
    } else if (path.extension() == ".json") {
      open_index(path);
    } else {
      add_shard(path, nullptr);
    }
  }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, s] : where_) out.push_back(n);
    return out;
  }
  /// The entry of `name`, or null.
  const tensor_info* find(std::string_view name) const {
    const auto it = where_.find(std::string(name));
    return it == where_.end() ? nullptr : shards_[it->second]->find(name);
  }
  /// Reads a floating-point tensor as fp32. @throws dynllava::error when absent or not
  /// F32/F16/BF16.
  std::vector<float> read_f32(std::string_view name) const {
    const auto it = where_.find(std::string(name));
    DYNLLAVA_EXPECTS(it != where_.end(), "checkpoint: no tensor named {}", name);
    return shards_[it->second]->read_f32(name);
  }
  /// @brief Reads a tensor as fp32 and checks its shape.
  /// @throws dynllava::error naming the tensor, the expected and the actual shape.
  std::vector<float> read_f32(std::string_view name, const std::vector<std::int64_t>& shape) const {
    const tensor_info* t = find(name);
    DYNLLAVA_EXPECTS(t != nullptr, "checkpoint: missing tensor {} (expected shape {})", name,
                     shape_string(shape));
    DYNLLAVA_EXPECTS(t->shape == shape, "checkpoint: tensor {} has shape {}, expected {}", name,
                     shape_string(t->shape), shape_string(shape));
    return read_f32(name);
  }

 private:
  void open_index(const std::filesystem::path& index) {
    std::ifstream in(index);
    DYNLLAVA_EXPECTS(in.good(), "checkpoint: cannot open {}", index.string());
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    DYNLLAVA_EXPECTS(!j.is_discarded(), "checkpoint: {} is not valid JSON", index.string());
    DYNLLAVA_EXPECTS(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                     "checkpoint: {} has no weight_map object", index.string());
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& [name, file] : j["weight_map"].items()) {
      DYNLLAVA_EXPECTS(file.is_string(), "checkpoint: {}: weight_map.{} must be a file name",
                       index.string(), name);
      const auto f = file.get<std::string>();
      const std::filesystem::path rel(f);
      bool inside = !f.empty() && !rel.is_absolute();
      for (const auto& part : rel) inside = inside && part != "..";
      if (inside) {  // resolve symbolic links too: the shard must really live in the folder
        std::error_code ec;
        const auto root = std::filesystem::weakly_canonical(index.parent_path(), ec);
        const auto shard = std::filesystem::weakly_canonical(index.parent_path() / rel, ec);
        const auto r = root.native();
        inside = !ec && shard.native().compare(0, r.size(), r) == 0 &&
                 (shard.native().size() == r.size() || shard.native()[r.size()] == '/');
      }
      DYNLLAVA_EXPECTS(inside,
                       "checkpoint: {}: weight_map.{} = {} must be a file inside the "
                       "checkpoint folder",
                       index.string(), name, f);
      by_shard[f].push_back(name);
    }
    for (const auto& [file, tensors] : by_shard) {
      DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(index.parent_path() / file),
                       "checkpoint: {} maps {} tensors (e.g. {}) to {}, which is missing",
                       index.string(), tensors.size(), tensors.front(), file);
      add_shard(index.parent_path() / file, &tensors);
    }
  }

  void add_shard(const std::filesystem::path& file, const std::vector<std::string>* expected) {
    auto shard = std::make_unique<safetensors_file>(file);
    const std::size_t id = shards_.size();
    if (expected != nullptr) {
      for (const auto& name : *expected) {
        DYNLLAVA_EXPECTS(shard->find(name) != nullptr,
                         "checkpoint: the index maps {} to {}, which has no such tensor", name,
                         file.string());
      }
    }
    for (const auto& t : shard->tensors()) {
      if (expected != nullptr &&
          std::find(expected->begin(), expected->end(), t.name) == expected->end()) {
        continue;  // present in the shard but mapped elsewhere (or not at all): index wins
      }
      const auto [it, inserted] = where_.emplace(t.name, id);
      DYNLLAVA_EXPECTS(inserted, "checkpoint: tensor {} appears in {} and {}", t.name,
                       shards_[it->second]->path().string(), file.string());
    }
    shards_.push_back(std::move(shard));
  }

  std::vector<std::unique_ptr<safetensors_file>> shards_;
  std::map<std::string, std::size_t, std::less<>> where_;
};

}  // namespace dynllava::io

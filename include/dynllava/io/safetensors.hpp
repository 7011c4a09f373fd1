// SPDX-License-Identifier: Apache-2.0
/// @file safetensors.hpp
/// @brief A validating, memory-mapping reader of safetensors files and sharded checkpoints.
///
/// Format: an 8-byte little-endian header length `n`, `n` bytes of JSON (safetensors_header.hpp),
/// then the data buffer. Each file is mapped read-only (mapped_file.hpp) and validated when
/// opened, before any tensor is read: a truncated file, a header that is not JSON or not the
/// expected shape, unknown dtypes, sizes that disagree with shapes, offsets outside the buffer,
/// overlapping tensors or holes in the buffer are rejected with a `dynllava::error` naming the
/// file and the tensor. Tensors are then viewed in place (`tensor_view`: F16/BF16 stay in their
/// stored width, widened to fp32 at use), so a 14 GB bf16 checkpoint costs address space, not
/// 28 GB of fp32 memory. Reads never go out of bounds.
///
/// Limits and choices:
/// - header: at most `safetensors_file::max_header_bytes` (100 MB), no NUL byte, parsed in time
///   linear in its size (SAX, no DOM), at most 3 levels of nesting, at most `max_rank` (16)
///   dimensions per tensor, no unknown entry fields, no name listed twice;
/// - tensor data is not necessarily aligned (the format does not align it): views are bytes and
///   widen_to_f32 reads them with memcpy;
/// - a sharded checkpoint's index must describe its shards exactly: every tensor the index maps
///   to a shard is in that shard, and every tensor of a shard is mapped to it. A tensor stored in
///   two shards is an error naming both (also when the index picks one of them);
/// - an index entry must be a plain file name in the index's folder; that file may be a
///   symbolic link (the Hugging Face hub cache links `snapshots/<rev>/*` to `../../blobs/<sha>`),
///   but a name with a folder, `..` or an absolute path is refused;
/// - untrusted strings (names, dtypes, keys, file names) are printed quoted and escaped
///   (untrusted_text.hpp).
///
/// Ownership: a `checkpoint` (or `safetensors_file`) owns its mappings; views and spans it hands
/// out are valid until it is destroyed. Files must not be modified while open.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/io/checkpoint_index.hpp>
#include <dynllava/io/mapped_file.hpp>
#include <dynllava/io/safetensors_header.hpp>
#include <dynllava/nn/widen.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dynllava::io {

static_assert(std::endian::native == std::endian::little,
              "the safetensors reader assumes a little-endian host");

/// @brief A non-owning view of one stored tensor (host memory, read-only, any alignment).
/// Valid while the file or checkpoint it came from is alive.
struct tensor_view {
  std::string_view name;
  io::dtype type = dtype::f32;
  std::span<const std::int64_t> shape;  ///< row-major extents
  std::span<const std::byte> bytes;     ///< elements() * size_of(type) little-endian bytes

  std::size_t elements() const noexcept { return bytes.size() / size_of(type); }
};

/// True for the dtypes widen_to_f32 reads (F32, F16, BF16).
constexpr bool is_widenable(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16;
}

/// @brief Writes elements [first, first + count) of `v` to `out` as fp32 (F32 copied, F16 and
/// BF16 widened exactly). `out` must hold `count` floats.
/// @throws dynllava::error when the dtype is not F32/F16/BF16 or the range exceeds the tensor.
inline void widen_to_f32(const tensor_view& v, std::size_t first, std::size_t count, float* out) {
  DYNLLAVA_EXPECTS(is_widenable(v.type), "tensor {} has dtype {}; expected F32, F16 or BF16",
                   quote_untrusted(v.name), to_string(v.type));
  const std::size_t n = v.elements();
  DYNLLAVA_EXPECTS(first <= n && count <= n - first,
                   "tensor {}: elements [{}, {} + {}) are outside its {} elements",
                   quote_untrusted(v.name), first, first, count, n);
  if (count == 0) return;
  const std::byte* src = v.bytes.data() + first * size_of(v.type);
  if (v.type == dtype::f32) {
    std::memcpy(out, src, count * sizeof(float));
    return;
  }
  if (v.type == dtype::f16) {
    nn::widen_f16(src, count, out);
  } else {
    nn::widen_bf16(src, count, out);
  }
}

/// All elements of `v` as fp32. @throws dynllava::error unless F32, F16 or BF16.
inline std::vector<float> widen_to_f32(const tensor_view& v) {
  DYNLLAVA_EXPECTS(is_widenable(v.type), "tensor {} has dtype {}; expected F32, F16 or BF16",
                   quote_untrusted(v.name), to_string(v.type));
  std::vector<float> out(v.elements());
  widen_to_f32(v, 0, out.size(), out.data());
  return out;
}

/// @brief One safetensors file, validated on open; tensors are viewed in place.
class safetensors_file {
 public:
  /// Largest JSON header accepted (the format's own reference limit is 100 MB).
  static constexpr std::uint64_t max_header_bytes = 100ull << 20;

  /// Maps and validates `path` (symbolic links followed). @throws dynllava::error describing the
  /// first defect found, or when `path` is missing or a directory.
  explicit safetensors_file(std::filesystem::path path)
      : path_(std::move(path)), where_(quote_untrusted(path_.string())) {
    map_.emplace(path_);
    bytes_ = map_->bytes();
    parse();
  }

  /// @brief Validates a file already in memory, e.g. from a fuzzer; `bytes` are borrowed and must
  /// outlive this object. `name` is used in messages only.
  safetensors_file(std::span<const std::byte> bytes, std::string name)
      : path_(name), where_(quote_untrusted(name)), bytes_(bytes) {
    parse();
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  /// Every tensor, sorted by name.
  const std::vector<tensor_info>& tensors() const noexcept { return header_.tensors; }
  /// The `__metadata__` map (empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }

  /// The entry of `name`, or null.
  const tensor_info* find(std::string_view name) const noexcept {
    const auto& ts = header_.tensors;
    const auto it =
        std::lower_bound(ts.begin(), ts.end(), name,
                         [](const tensor_info& t, std::string_view n) { return t.name < n; });
    return it != ts.end() && it->name == name ? &*it : nullptr;
  }

  /// The view of an entry of this file (no copy).
  tensor_view view(const tensor_info& t) const noexcept {
    return {t.name, t.type, t.shape,
            bytes_.subspan(static_cast<std::size_t>(data_offset_ + t.begin),
                           static_cast<std::size_t>(t.end - t.begin))};
  }
  /// The view of `name`. @throws dynllava::error when absent.
  tensor_view view(std::string_view name) const {
    const tensor_info* t = find(name);
    DYNLLAVA_EXPECTS(t != nullptr, "safetensors: {} has no tensor named {}", where_,
                     quote_untrusted(name));
    return view(*t);
  }

  /// A copy of a tensor's raw bytes.
  std::vector<std::byte> read_bytes(const tensor_info& t) const {
    const auto b = view(t).bytes;
    return {b.begin(), b.end()};
  }

  /// @brief Reads a floating-point tensor as fp32 (F32 as is, F16 and BF16 converted exactly).
  /// @throws dynllava::error when absent or of another dtype.
  std::vector<float> read_f32(std::string_view name) const {
    try {
      return widen_to_f32(view(name));
    } catch (const std::bad_alloc&) {
      DYNLLAVA_FAIL("safetensors: {}: out of memory reading tensor {}", where_,
                    quote_untrusted(name));
    }
  }

 private:
  void parse() {
    const std::uint64_t size = bytes_.size();
    DYNLLAVA_EXPECTS(size >= 8, "safetensors: {} is truncated: {} bytes, no header length", where_,
                     size);
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) {
      header_len =
          (header_len << 8) | static_cast<std::uint8_t>(bytes_[static_cast<std::size_t>(i)]);
    }
    DYNLLAVA_EXPECTS(header_len <= max_header_bytes,
                     "safetensors: {}: header length {} exceeds the limit of {} bytes", where_,
                     header_len, max_header_bytes);
    DYNLLAVA_EXPECTS(header_len <= size - 8,
                     "safetensors: {} is truncated: header length {} but only {} bytes follow",
                     where_, header_len, size - 8);
    data_offset_ = 8 + header_len;
    const std::string_view json(reinterpret_cast<const char*>(bytes_.data()) + 8,
                                static_cast<std::size_t>(header_len));
    header_ = parse_safetensors_header(json, size - data_offset_, where_);
  }

  std::filesystem::path path_;
  std::string where_;  ///< the path, quoted for messages
  std::optional<mapped_file> map_;
  std::span<const std::byte> bytes_;
  std::uint64_t data_offset_ = 0;
  safetensors_header header_;
};

/// @brief A checkpoint: one safetensors file, or the shards of a `*.safetensors.index.json`.
/// Owns the shards' mappings; views are valid while it lives.
class checkpoint {
 public:
  /// @brief Opens a checkpoint.
  /// @param path a `.safetensors` file; a `*.index.json`; or a directory holding either
  ///        `model.safetensors.index.json`, or `*.safetensors` files (all opened).
  /// @throws dynllava::error on a missing path, a malformed index or shard, a tensor the index
  ///         maps to a shard that lacks it, a shard tensor the index does not map to that shard,
  ///         or a tensor present in two shards.
  explicit checkpoint(const std::filesystem::path& path) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto st = fs::status(path, ec);
    DYNLLAVA_EXPECTS(fs::exists(st), "checkpoint: {} does not exist",
                     quote_untrusted(path.string()));
    if (fs::is_directory(st)) {
      const auto index = path / "model.safetensors.index.json";
      if (fs::exists(fs::symlink_status(index, ec))) {
        open_index(index);
        return;
      }
      std::vector<fs::path> files;
      bool pickled = false;  // PyTorch's pytorch_model*.bin: not read (pickle), named in the error
      for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".safetensors") files.push_back(it->path());
        pickled = pickled || it->path().extension() == ".bin";
      }
      DYNLLAVA_EXPECTS(!ec, "checkpoint: cannot list {}: {}", quote_untrusted(path.string()),
                       ec.message());
      DYNLLAVA_EXPECTS(
          !files.empty(), "checkpoint: {} holds no .safetensors file and no index{}",
          quote_untrusted(path.string()),
          pickled ? " (PyTorch .bin files are not read: convert them to safetensors)" : "");
      std::sort(files.begin(), files.end());
      for (const auto& f : files) add_shard(f);
    } else if (path.extension() == ".json") {
      open_index(path);
    } else {
      add_shard(path);
    }
  }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(where_.size());
    for (const auto& [n, s] : where_) out.push_back(n);
    return out;
  }
  /// The entry of `name`, or null.
  const tensor_info* find(std::string_view name) const {
    const auto it = where_.find(name);
    return it == where_.end() ? nullptr : shards_[it->second]->find(name);
  }
  /// The view of `name` (no copy). @throws dynllava::error when absent.
  tensor_view view(std::string_view name) const {
    const auto it = where_.find(name);
    DYNLLAVA_EXPECTS(it != where_.end(), "checkpoint: no tensor named {}", quote_untrusted(name));
    return shards_[it->second]->view(name);
  }
  /// @brief The shard that holds `name`, shared: it keeps the mapping (and every view into it)
  /// alive after the checkpoint is gone. @throws dynllava::error when absent.
  std::shared_ptr<const safetensors_file> shard_of(std::string_view name) const {
    const auto it = where_.find(name);
    DYNLLAVA_EXPECTS(it != where_.end(), "checkpoint: no tensor named {}", quote_untrusted(name));
    return shards_[it->second];
  }
  /// @brief The view of `name`, checking its shape.
  /// @throws dynllava::error naming the tensor, the expected and the actual shape.
  tensor_view view(std::string_view name, std::span<const std::int64_t> shape) const {
    const tensor_info* t = find(name);
    DYNLLAVA_EXPECTS(t != nullptr, "checkpoint: {}: missing tensor {} (expected shape {})",
                     quote_untrusted(path_.string()), quote_untrusted(name), shape_string(shape));
    DYNLLAVA_EXPECTS(std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end()),
                     "checkpoint: {}: tensor {} has shape {}, expected {}", shard_label(name),
                     quote_untrusted(name), shape_string(t->shape), shape_string(shape));
    return view(name);
  }
  /// Reads a floating-point tensor as fp32. @throws dynllava::error when absent or not
  /// F32/F16/BF16 (naming its shard).
  std::vector<float> read_f32(std::string_view name) const { return to_f32(view(name)); }
  /// @brief Reads a tensor as fp32 and checks its shape.
  /// @throws dynllava::error naming the shard, the tensor, the expected and the actual shape or
  /// dtype.
  std::vector<float> read_f32(std::string_view name, const std::vector<std::int64_t>& shape) const {
    return to_f32(view(name, shape));
  }
  /// The path of the shard holding `name`, quoted for messages. @throws when absent.
  std::string shard_label(std::string_view name) const {
    return quote_untrusted(shard_of(name)->path().string());
  }
  /// What the checkpoint was opened from (a folder, an index or a file).
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::vector<float> to_f32(const tensor_view& v) const {
    DYNLLAVA_EXPECTS(is_widenable(v.type),
                     "checkpoint: {}: tensor {} has dtype {}, expected F32, F16 or BF16",
                     shard_label(v.name), quote_untrusted(v.name), to_string(v.type));
    try {
      return widen_to_f32(v);
    } catch (const std::bad_alloc&) {
      DYNLLAVA_FAIL("checkpoint: {}: out of memory reading tensor {}", shard_label(v.name),
                    quote_untrusted(v.name));
    }
  }

  void open_index(const std::filesystem::path& index) {
    const std::string where = quote_untrusted(index.string());
    std::vector<index_entry> entries;
    {
      const mapped_file map(index);
      const auto b = map.bytes();
      entries = parse_checkpoint_index(
          std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), where);
    }
    // Group by shard; each group stays sorted by tensor name.
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& e : entries) by_shard[e.file].push_back(e.tensor);
    const auto folder = index.parent_path();
    // Every shard must be there before any is opened: otherwise a tensor of a present shard
    // that the index maps to a missing one would be reported as stored in two shards.
    for (const auto& [file, tensors] : by_shard) {
      const auto p = folder / file;
      std::error_code ec;
      const auto st = std::filesystem::status(p, ec);  // follows links
      DYNLLAVA_EXPECTS(std::filesystem::exists(st),
                       "checkpoint: {} maps {} tensors (e.g. {}) to {}, which is missing (or a "
                       "broken link): no file {}",
                       where, tensors.size(), quote_untrusted(tensors.front()),
                       quote_untrusted(file), quote_untrusted(p.string()));
      DYNLLAVA_EXPECTS(!std::filesystem::is_directory(st),
                       "checkpoint: {} maps {} tensors (e.g. {}) to {}, which is a directory",
                       where, tensors.size(), quote_untrusted(tensors.front()),
                       quote_untrusted(file));
    }
    for (const auto& [file, tensors] : by_shard) {
      const std::size_t id = add_shard(folder / file);
      // The shard must hold exactly the tensors mapped to it (both lists sorted: one merge).
      const auto& held = shards_[id]->tensors();
      auto h = held.begin();
      for (const auto& name : tensors) {
        while (h != held.end() && h->name < name) unmapped(*h++, file, entries, where);
        DYNLLAVA_EXPECTS(h != held.end() && h->name == name,
                         "checkpoint: the index maps {} to {}, which has no such tensor",
                         quote_untrusted(name), quote_untrusted(file));
        ++h;
      }
      while (h != held.end()) unmapped(*h++, file, entries, where);
    }
  }

  /// A tensor of shard `file` that the index does not map to it. @throws dynllava::error.
  static void unmapped(const tensor_info& t, const std::string& file,
                       const std::vector<index_entry>& entries, const std::string& where) {
    const auto it =
        std::lower_bound(entries.begin(), entries.end(), t.name,
                         [](const index_entry& e, const std::string& n) { return e.tensor < n; });
    DYNLLAVA_EXPECTS(it == entries.end() || it->tensor != t.name,
                     "checkpoint: {} holds tensor {}, which the index {} maps to {}: a tensor "
                     "must be stored in one shard only",
                     quote_untrusted(file), quote_untrusted(t.name), where,
                     quote_untrusted(it->file));
    DYNLLAVA_FAIL("checkpoint: {} holds tensor {}, which the index {} does not list",
                  quote_untrusted(file), quote_untrusted(t.name), where);
  }

  /// Opens a shard and records its tensors; a name already recorded is an error.
  std::size_t add_shard(const std::filesystem::path& file) {
    auto shard = std::make_unique<safetensors_file>(file);
    const std::size_t id = shards_.size();
    for (const auto& t : shard->tensors()) {
      const auto [it, inserted] = where_.emplace(t.name, id);
      DYNLLAVA_EXPECTS(
          inserted, "checkpoint: tensor {} is stored in both {} and {}", quote_untrusted(t.name),
          quote_untrusted(shards_[it->second]->path().string()), quote_untrusted(file.string()));
    }
    shards_.push_back(std::move(shard));
    return id;
  }

  std::filesystem::path path_;
  std::vector<std::shared_ptr<const safetensors_file>> shards_;
  std::map<std::string, std::size_t, std::less<>> where_;
};

}  // namespace dynllava::io

// SPDX-License-Identifier: Apache-2.0
/// @file stored_matrix.hpp
/// @brief A weight matrix kept in the width it was stored in (fp32, fp16 or bf16), widened to
/// fp32 block by block where it is used.
///
/// A 7B checkpoint is about 14 GB in bf16 and 28 GB in fp32; keeping the big matrices (Linear
/// weights, embeddings) in their stored width is what lets it run on a 24 GB machine. A matrix
/// either owns fp32 values (random weights, tests, converted small checkpoints) or views
/// little-endian elements that something else owns (a memory-mapped checkpoint shard), kept
/// alive by a shared owner handle.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/half.hpp>
#include <dynllava/nn/widen.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace dynllava::nn {

/// Element type of a stored matrix.
enum class element_type : std::uint8_t { f32, f16, bf16 };

/// Bytes per element.
constexpr std::size_t size_of(element_type t) noexcept { return t == element_type::f32 ? 4 : 2; }

/// "f32", "f16" or "bf16".
constexpr std::string_view to_string(element_type t) noexcept {
  return t == element_type::f32 ? "f32" : t == element_type::f16 ? "f16" : "bf16";
}

/// @brief `[rows, cols]` row-major weights, host memory, in fp32, fp16 or bf16.
///
/// Owned fp32 (the default, from a vector) or a non-owning view of stored bytes that `owner`
/// keeps alive. Copies share a view's bytes and copy owned values.
class stored_matrix {
 public:
  stored_matrix() = default;

  /// Owned fp32 values; `values.size()` must be `rows * cols`.
  stored_matrix(std::vector<float> values, index_t rows, index_t cols)
      : owned_(std::move(values)), rows_(rows), cols_(cols) {
    DYNLLAVA_EXPECTS(rows >= 0 && cols >= 0 && owned_.size() == count(rows, cols),
                     "stored_matrix: {} values cannot be [{}, {}]", owned_.size(), rows, cols);
  }

  /// @brief A view of `rows * cols` little-endian elements of type `t` at `bytes` (any
  /// alignment), valid while `owner` lives.
  static stored_matrix view(element_type t, const std::byte* bytes, index_t rows, index_t cols,
                            std::shared_ptr<const void> owner) {
    DYNLLAVA_EXPECTS(rows >= 0 && cols >= 0, "stored_matrix::view: shape [{}, {}] is negative",
                     rows, cols);
    DYNLLAVA_EXPECTS(bytes != nullptr || count(rows, cols) == 0,
                     "stored_matrix::view: null bytes for [{}, {}]", rows, cols);
    stored_matrix m;
    m.type_ = t;
    m.bytes_ = bytes;
    m.owner_ = std::move(owner);
    m.rows_ = rows;
    m.cols_ = cols;
    return m;
  }

  index_t rows() const noexcept { return rows_; }
  index_t cols() const noexcept { return cols_; }
  /// Elements, `rows * cols`.
  std::size_t size() const noexcept { return count(rows_, cols_); }
  bool empty() const noexcept { return size() == 0; }
  element_type type() const noexcept { return type_; }
  /// True when the values are owned (fp32); false for a view.
  bool owned() const noexcept { return bytes_ == nullptr; }
  /// Bytes the values take in memory (owned or viewed).
  std::size_t bytes() const noexcept { return size() * size_of(type_); }

  /// The fp32 values when they can be read in place (owned, or a 4-byte-aligned fp32 view),
  /// else null: widen them with `widen_rows`.
  const float* f32() const noexcept {
    if (owned()) return owned_.data();
    if (type_ == element_type::f32 &&
        reinterpret_cast<std::uintptr_t>(bytes_) % alignof(float) == 0)
      return reinterpret_cast<const float*>(bytes_);
    return nullptr;
  }

  /// @brief Rows `[first, first + n)` as fp32 into `out [n, cols]` (exact for every type).
  /// @pre `0 <= first`, `first + n <= rows()`.
  void widen_rows(index_t first, index_t n, float* out) const noexcept {
    const std::size_t begin = static_cast<std::size_t>(first) * static_cast<std::size_t>(cols_);
    const std::size_t len = static_cast<std::size_t>(n) * static_cast<std::size_t>(cols_);
    if (owned()) {
      if (len != 0) std::memcpy(out, owned_.data() + begin, len * sizeof(float));
      return;
    }
    const std::byte* p = bytes_ + begin * size_of(type_);
    switch (type_) {
      case element_type::f32:
        if (len != 0) std::memcpy(out, p, len * sizeof(float));
        break;
      case element_type::f16:
        widen_f16(p, len, out);
        break;
      case element_type::bf16:
        widen_bf16(p, len, out);
        break;
    }
  }

  /// Element `i` of the row-major values, widened. @pre `i < size()`.
  float operator[](std::size_t i) const noexcept {
    if (owned()) return owned_[i];
    const std::byte* p = bytes_ + i * size_of(type_);
    switch (type_) {
      case element_type::f32: {
        float v;
        std::memcpy(&v, p, sizeof v);
        return v;
      }
      case element_type::f16:
        return half_bits_to_float(detail::load_u16(p));
      case element_type::bf16:
        return bfloat16_bits_to_float(detail::load_u16(p));
    }
    return 0.0f;
  }

  /// @brief The owned fp32 values, for filling and editing.
  /// @throws dynllava::error for a view (its bytes are read-only).
  std::vector<float>& values() {
    DYNLLAVA_EXPECTS(owned(), "stored_matrix::values: a {} view of stored bytes is read-only",
                     to_string(type_));
    return owned_;
  }

  /// Same shape and the same values (widened), whatever the storage.
  friend bool operator==(const stored_matrix& a, const stored_matrix& b) noexcept {
    if (a.rows_ != b.rows_ || a.cols_ != b.cols_) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!(a[i] == b[i])) return false;
    }
    return true;
  }

 private:
  static std::size_t count(index_t rows, index_t cols) noexcept {
    return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  }
  std::vector<float> owned_;
  const std::byte* bytes_ = nullptr;  ///< null: owned
  std::shared_ptr<const void> owner_;
  element_type type_ = element_type::f32;
  index_t rows_ = 0;
  index_t cols_ = 0;
};

}  // namespace dynllava::nn

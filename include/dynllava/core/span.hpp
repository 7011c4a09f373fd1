// SPDX-License-Identifier: Apache-2.0
/// @file span.hpp
/// @brief Non-owning 1-D views whose memory space is part of the type.
///
/// `host_span<T>` and `device_span<T>` are distinct types with no conversion between them: a
/// function that reads device memory cannot be handed a host pointer by accident. Both are
/// trivially copyable (pointer + size) and are passed to kernels by value.
#pragma once

#include <dynllava/core/config.hpp>

#include <concepts>
#include <cstddef>
#include <type_traits>
#include <vector>

namespace dynllava {

/// Memory space tag: ordinary host memory (pageable or pinned).
struct host_space {
  static constexpr const char* name = "host";
};
/// Memory space tag: CUDA device memory (or managed memory used from the device).
struct device_space {
  static constexpr const char* name = "device";
};

/// A memory space tag: `host_space` or `device_space`.
template <class S>
concept memory_space = std::same_as<S, host_space> || std::same_as<S, device_space>;

/// @brief A contiguous run of `size()` elements of `T` in memory space `Space`.
/// @tparam T element type (add `const` for read-only views)
/// @tparam Space `host_space` or `device_space`
/// Does not own its memory. Converts implicitly only from `span<U, Space>` with `T = const U`.
template <class T, memory_space Space>
class span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using space = Space;

  constexpr span() noexcept = default;
  /// Views `size` elements at `data`, which must live in `Space`.
  DYNLLAVA_HOST_DEVICE constexpr span(T* data, std::size_t size) noexcept
      : data_(data), size_(size) {}
  /// Adds `const` to the element type; same memory space only.
  template <class U>
  requires(!std::same_as<U, T> && std::same_as<const U, T>)
      DYNLLAVA_HOST_DEVICE constexpr span(span<U, Space> other) noexcept  // NOLINT: implicit
      : data_(other.data()), size_(other.size()) {}

  DYNLLAVA_HOST_DEVICE constexpr T* data() const noexcept { return data_; }
  DYNLLAVA_HOST_DEVICE constexpr std::size_t size() const noexcept { return size_; }
  DYNLLAVA_HOST_DEVICE constexpr bool empty() const noexcept { return size_ == 0; }
  DYNLLAVA_HOST_DEVICE constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
  DYNLLAVA_HOST_DEVICE constexpr T* begin() const noexcept { return data_; }
  DYNLLAVA_HOST_DEVICE constexpr T* end() const noexcept { return data_ + size_; }
  /// Elements `[offset, offset + count)`. @pre `offset + count <= size()`.
  DYNLLAVA_HOST_DEVICE constexpr span subspan(std::size_t offset,
                                              std::size_t count) const noexcept {
    return span(data_ + offset, count);
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

template <class T>
using host_span = span<T, host_space>;
template <class T>
using device_span = span<T, device_space>;

static_assert(std::is_trivially_copyable_v<host_span<float>>);
static_assert(std::is_trivially_copyable_v<device_span<const float>>);
static_assert(std::is_convertible_v<host_span<float>, host_span<const float>>);
static_assert(!std::is_convertible_v<host_span<float>, device_span<float>>);
static_assert(!std::is_convertible_v<device_span<float>, host_span<const float>>);
static_assert(!std::is_convertible_v<host_span<const float>, host_span<float>>);

/// Host view of a `std::vector` (mutable or read-only according to the vector's constness).
template <class T, class A>
host_span<T> make_host_span(std::vector<T, A>& v) noexcept {
  return host_span<T>(v.data(), v.size());
}
template <class T, class A>
host_span<const T> make_host_span(const std::vector<T, A>& v) noexcept {
  return host_span<const T>(v.data(), v.size());
}

}  // namespace dynllava

// SPDX-License-Identifier: Apache-2.0
/// @file contiguous_kv_cache.hpp
/// @brief An owning contiguous ragged KV cache on the host (fp32): each (layer, sequence) owns
/// `capacity` rows; overflow is an error. Compaction moves kept rows to the front in place.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/contiguous_kv_view.hpp>
#include <dynllava/kvcache/kv_layout_checks.hpp>
#include <dynllava/kvcache/kv_storage.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace dynllava {

struct contiguous_kv_config {
  index_t layers = 1;
  std::size_t batch = 1;
  index_t width = 1;     ///< heads * head_dim
  index_t capacity = 0;  ///< tokens per (layer, sequence)
};

class contiguous_kv_cache {
 public:
  /// Keys, values and positions live in host memory.
  using memory_space = host_space;
  /// Stored element of K and V.
  using value_type = float;

  /// @throws dynllava::error on a non-positive size.
  explicit contiguous_kv_cache(const contiguous_kv_config& c) : c_(c) {
    DYNLLAVA_EXPECTS(c.layers > 0 && c.width > 0 && c.capacity >= 0,
                     "contiguous_kv_cache: layers ({}) and width ({}) must be > 0, capacity ({}) "
                     ">= 0",
                     c.layers, c.width, c.capacity);
    const std::size_t rows =
        static_cast<std::size_t>(c.layers) * c.batch * static_cast<std::size_t>(c.capacity);
    k_.resize(rows * static_cast<std::size_t>(c.width));
    v_.resize(k_.size());
    pos_.resize(rows);
    len_.assign(static_cast<std::size_t>(c.layers) * c.batch, 0);
    seen_ = len_;
  }

  index_t layers() const noexcept { return c_.layers; }
  std::size_t batch() const noexcept { return c_.batch; }
  index_t width() const noexcept { return c_.width; }
  index_t capacity() const noexcept { return c_.capacity; }
  index_t length(index_t l, std::size_t b) const noexcept { return len_[at(l, b)]; }
  index_t appended(index_t l, std::size_t b) const noexcept { return seen_[at(l, b)]; }
  /// Tokens held by layer `l`, per sequence (`[batch]`; follows later appends and evictions).
  /// @throws dynllava::error on a layer outside [0, layers).
  host_span<const index_t> lengths(index_t l) const { return counts(len_, l, "lengths"); }
  /// Tokens ever appended to layer `l`, per sequence (`[batch]`).
  host_span<const index_t> appended_counts(index_t l) const {
    return counts(seen_, l, "appended_counts");
  }
  const float* key(index_t l, std::size_t b, index_t i) const noexcept {
    return k_.data() + row(l, b, i) * w();
  }
  const float* value(index_t l, std::size_t b, index_t i) const noexcept {
    return v_.data() + row(l, b, i) * w();
  }
  index_t position(index_t l, std::size_t b, index_t i) const noexcept {
    return pos_[row(l, b, i)];
  }

  /// Appends one token. @throws dynllava::error when (layer, sequence) is full.
  void append(index_t l, std::size_t b, const float* k, const float* v, index_t position) {
    detail::check_layer_sequence("contiguous_kv_cache::append", l, c_.layers, b, c_.batch);
    const std::size_t s = at(l, b);
    DYNLLAVA_EXPECTS(len_[s] < c_.capacity,
                     "contiguous_kv_cache: layer {} sequence {} is full ({} tokens); evict or "
                     "allocate a larger capacity",
                     l, b, c_.capacity);
    const std::size_t r = row(l, b, len_[s]);
    std::copy(k, k + w(), k_.data() + r * w());
    std::copy(v, v + w(), v_.data() + r * w());
    pos_[r] = position;
    ++len_[s];
    ++seen_[s];
  }

  /// Keeps the tokens at `kept` (ascending local positions), compacting in place.
  void retain(index_t l, std::size_t b, host_span<const index_t> kept) {
    detail::check_layer_sequence("contiguous_kv_cache::retain", l, c_.layers, b, c_.batch);
    const std::size_t s = at(l, b);
    detail::check_kept("contiguous_kv_cache::retain", kept, len_[s]);
    for (std::size_t j = 0; j < kept.size(); ++j) {
      const std::size_t from = row(l, b, kept[j]);
      const std::size_t to = row(l, b, static_cast<index_t>(j));
      if (from == to) continue;
      detail::copy_token(k_.data(), v_.data(), pos_.data(), w(), from, to);
    }
    len_[s] = static_cast<index_t>(kept.size());
  }

  /// @brief Layer-level gated append (`kv_storage` requirement 4): sequence `b`'s new tokens
  /// `indptr[b] .. indptr[b + 1]` enter layer `l` in order, each only when `keep` is empty or
  /// `keep[t] != 0`. All or nothing: every argument and each sequence's room are checked first.
  /// @param[in] indptr [batch + 1] host; @param[in] k, v [tokens, width] host;
  /// @param[in] keep [tokens] host or empty; @param[in] positions [tokens] host
  /// @throws dynllava::error naming the argument, or the sequence without room (nothing changed).
  void append(host_t, index_t l, host_span<const index_t> indptr, host_span<const float> k,
              host_span<const float> v, host_span<const std::uint8_t> keep,
              host_span<const index_t> positions) {
    detail::check_layer_append("contiguous_kv_cache::append", l, c_.layers, c_.batch, c_.width,
                               indptr, k, v, keep, positions);
    for (std::size_t b = 0; b < c_.batch; ++b) {
      const index_t held = len_[at(l, b)];
      const index_t add = detail::admitted_tokens(indptr, keep, b);
      DYNLLAVA_EXPECTS(add <= c_.capacity - held,
                       "contiguous_kv_cache::append: layer {} sequence {} holds {} of {} tokens "
                       "and cannot take {} more; nothing was appended (evict, or allocate a "
                       "larger capacity)",
                       l, b, held, c_.capacity, add);
    }
    detail::append_admitted(*this, l, indptr, k, v, keep, positions);
  }

  /// @brief Layer-level compaction (`kv_storage` requirement 5): sequence `b` keeps the tokens
  /// at `kept.row(b)` (strictly ascending local positions). Every list is checked first.
  /// @throws dynllava::error naming the list (nothing changed).
  void retain(host_t, index_t l, host_ragged<const index_t> kept) {
    detail::check_layer_kept("contiguous_kv_cache::retain", l, c_.layers, kept, lengths(l));
    for (std::size_t b = 0; b < c_.batch; ++b) retain(l, b, kept.row(b));
  }

  /// @brief View of layer `l` (`contiguous_kv_view.hpp`): it points into this cache's storage,
  /// so it follows later appends and evictions, and stays valid as long as the cache.
  /// @throws dynllava::error on a layer outside [0, layers).
  contiguous_kv_view<float, host_space> view(index_t l) {
    detail::check_layer_sequence("contiguous_kv_cache::view", l, c_.layers, 0,
                                 std::max<std::size_t>(c_.batch, 1));
    const std::size_t first = row(l, 0, 0);
    const std::size_t rows = c_.batch * static_cast<std::size_t>(c_.capacity);
    return {{k_.data() + first * w(), rows * w()},
            {v_.data() + first * w(), rows * w()},
            {pos_.data() + first, rows},
            {len_.data() + at(l, 0), c_.batch},
            c_.capacity,
            c_.width};
  }

 private:
  host_span<const index_t> counts(const std::vector<index_t>& v, index_t l,
                                  const char* what) const {
    DYNLLAVA_EXPECTS(l >= 0 && l < c_.layers, "{}::{}: layer {} is not in [0, {})",
                     "contiguous_kv_cache", what, l, c_.layers);
    return {v.data() + at(l, 0), c_.batch};
  }
  std::size_t w() const noexcept { return static_cast<std::size_t>(c_.width); }
  std::size_t at(index_t l, std::size_t b) const noexcept {
    return static_cast<std::size_t>(l) * c_.batch + b;
  }
  std::size_t row(index_t l, std::size_t b, index_t i) const noexcept {
    return at(l, b) * static_cast<std::size_t>(c_.capacity) + static_cast<std::size_t>(i);
  }
  contiguous_kv_config c_;
  std::vector<float> k_, v_;
  std::vector<index_t> pos_;
  std::vector<index_t> len_, seen_;
};
static_assert(host_kv_storage<contiguous_kv_cache>);

}  // namespace dynllava

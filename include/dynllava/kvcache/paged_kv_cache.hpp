// SPDX-License-Identifier: Apache-2.0
/// @file paged_kv_cache.hpp
/// @brief An owning paged KV cache on the host (fp32): one page pool shared by every layer and
/// sequence, per-layer page lists (so layers may hold different lengths), compaction that frees
/// whole pages back to the pool, and FlashInfer-layout views per layer.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/kvcache/kv_layout_checks.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/kvcache/page_pool.hpp>
#include <dynllava/kvcache/paged_kv_view.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace dynllava {

struct paged_kv_config {
  index_t layers = 1;
  std::size_t batch = 1;
  index_t width = 1;       ///< heads * head_dim
  index_t page_size = 16;  ///< tokens per page, >= 1
  index_t num_pages = 0;   ///< pool capacity shared by all layers and sequences
};

class paged_kv_cache {
 public:
  /// Keys, values and positions live in host memory.
  using memory_space = host_space;
  /// Stored element of K and V.
  using value_type = float;

  /// @throws dynllava::error on a non-positive size.
  explicit paged_kv_cache(const paged_kv_config& c) : c_(c), pool_(c.num_pages) {
    DYNLLAVA_EXPECTS(c.layers > 0 && c.width > 0 && c.page_size > 0,
                     "paged_kv_cache: layers ({}), width ({}) and page_size ({}) must be > 0",
                     c.layers, c.width, c.page_size);
    const std::size_t rows =
        static_cast<std::size_t>(c.num_pages) * static_cast<std::size_t>(c.page_size);
    k_.resize(rows * static_cast<std::size_t>(c.width));
    v_.resize(k_.size());
    pos_.resize(rows);
    const auto lb = static_cast<std::size_t>(c.layers) * c.batch;
    pages_.resize(lb);
    len_.assign(lb, 0);
    seen_.assign(lb, 0);
    tables_.resize(static_cast<std::size_t>(c.layers));
  }

  index_t layers() const noexcept { return c_.layers; }
  std::size_t batch() const noexcept { return c_.batch; }
  index_t width() const noexcept { return c_.width; }
  index_t page_size() const noexcept { return c_.page_size; }
  const page_pool& pool() const noexcept { return pool_; }

  index_t length(index_t l, std::size_t b) const noexcept { return len_[at(l, b)]; }
  index_t appended(index_t l, std::size_t b) const noexcept { return seen_[at(l, b)]; }
  /// Tokens held by layer `l`, per sequence (`[batch]`; follows later appends and evictions).
  /// @throws dynllava::error on a layer outside [0, layers).
  host_span<const index_t> lengths(index_t l) const { return counts(len_, l, "lengths"); }
  /// Tokens ever appended to layer `l`, per sequence (`[batch]`).
  host_span<const index_t> appended_counts(index_t l) const {
    return counts(seen_, l, "appended_counts");
  }
  /// Page ids of (layer, sequence), in token order.
  const std::vector<index_t>& pages(index_t l, std::size_t b) const noexcept {
    return pages_[at(l, b)];
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

  /// Appends one token. @throws dynllava::error on a bad layer/sequence or when the pool is empty.
  void append(index_t l, std::size_t b, const float* k, const float* v, index_t position) {
    detail::check_layer_sequence("paged_kv_cache::append", l, c_.layers, b, c_.batch);
    const std::size_t s = at(l, b);
    if (len_[s] % c_.page_size == 0) pages_[s].push_back(pool_.allocate());
    const std::size_t r = row(l, b, len_[s]);
    std::copy(k, k + w(), k_.data() + r * w());
    std::copy(v, v + w(), v_.data() + r * w());
    pos_[r] = position;
    ++len_[s];
    ++seen_[s];
  }

  /// Keeps the tokens at `kept` (ascending local positions), compacting in place; pages that
  /// become empty return to the pool. @throws dynllava::error on invalid positions.
  void retain(index_t l, std::size_t b, host_span<const index_t> kept) {
    detail::check_layer_sequence("paged_kv_cache::retain", l, c_.layers, b, c_.batch);
    const std::size_t s = at(l, b);
    detail::check_kept("paged_kv_cache::retain", kept, len_[s]);
    for (std::size_t j = 0; j < kept.size(); ++j) {
      const auto dst = static_cast<index_t>(j);
      if (kept[j] == dst) continue;
      const std::size_t from = row(l, b, kept[j]);
      const std::size_t to = row(l, b, dst);
      detail::copy_token(k_.data(), v_.data(), pos_.data(), w(), from, to);
    }
    len_[s] = static_cast<index_t>(kept.size());
    const auto needed = static_cast<std::size_t>((len_[s] + c_.page_size - 1) / c_.page_size);
    while (pages_[s].size() > needed) {
      pool_.release(pages_[s].back());
      pages_[s].pop_back();
    }
  }

  /// @brief Layer-level gated append (`kv_storage` requirement 4): sequence `b`'s new tokens
  /// `indptr[b] .. indptr[b + 1]` enter layer `l` in order, each only when `keep` is empty or
  /// `keep[t] != 0`. All or nothing: every argument and the free pages are checked first.
  /// @param[in] indptr [batch + 1] host; @param[in] k, v [tokens, width] host;
  /// @param[in] keep [tokens] host or empty; @param[in] positions [tokens] host
  /// @throws dynllava::error naming the argument, or the sequence without room (nothing changed).
  void append(host_t, index_t l, host_span<const index_t> indptr, host_span<const float> k,
              host_span<const float> v, host_span<const std::uint8_t> keep,
              host_span<const index_t> positions) {
    detail::check_layer_append("paged_kv_cache::append", l, c_.layers, c_.batch, c_.width, indptr,
                               k, v, keep, positions);
    long long pages = 0;
    for (std::size_t b = 0; b < c_.batch; ++b) {
      const long long held = len_[at(l, b)];
      const long long add = detail::admitted_tokens(indptr, keep, b);
      const long long ps = c_.page_size;
      pages += (held + add + ps - 1) / ps - static_cast<long long>(pages_[at(l, b)].size());
    }
    DYNLLAVA_EXPECTS(pages <= pool_.free_pages(),
                     "paged_kv_cache::append: layer {} needs {} new pages, {} of {} are free; "
                     "nothing was appended (evict, or give the cache more pages)",
                     l, pages, pool_.free_pages(), pool_.capacity());
    detail::append_admitted(*this, l, indptr, k, v, keep, positions);
  }

  /// @brief Layer-level compaction (`kv_storage` requirement 5): sequence `b` keeps the tokens
  /// at `kept.row(b)` (strictly ascending local positions). Every list is checked first.
  /// @throws dynllava::error naming the list (nothing changed).
  void retain(host_t, index_t l, host_ragged<const index_t> kept) {
    detail::check_layer_kept("paged_kv_cache::retain", l, c_.layers, kept, lengths(l));
    for (std::size_t b = 0; b < c_.batch; ++b) retain(l, b, kept.row(b));
  }

  /// @brief FlashInfer-layout view of layer `l` (its page table is rebuilt on each call; the
  /// view stays valid until the next `view(l)`, `append` or `retain` on that layer).
  paged_kv_view<float, host_space> view(index_t l) {
    detail::check_layer_sequence("paged_kv_cache::view", l, c_.layers, 0,
                                 std::max<std::size_t>(c_.batch, 1));
    auto& t = tables_[static_cast<std::size_t>(l)];
    t.indptr.assign(1, 0);
    t.indices.clear();
    t.last.clear();
    for (std::size_t b = 0; b < c_.batch; ++b) {
      const auto& p = pages_[at(l, b)];
      t.indices.insert(t.indices.end(), p.begin(), p.end());
      t.indptr.push_back(static_cast<index_t>(t.indices.size()));
      const index_t n = length(l, b);
      t.last.push_back(n == 0 ? 0 : (n - 1) % c_.page_size + 1);
    }
    return {make_host_span(k_),
            make_host_span(v_),
            make_host_span(pos_),
            make_host_span(std::as_const(t.indptr)),
            make_host_span(std::as_const(t.indices)),
            make_host_span(std::as_const(t.last)),
            c_.page_size,
            c_.width};
  }

 private:
  host_span<const index_t> counts(const std::vector<index_t>& v, index_t l,
                                  const char* what) const {
    DYNLLAVA_EXPECTS(l >= 0 && l < c_.layers, "{}::{}: layer {} is not in [0, {})",
                     "paged_kv_cache", what, l, c_.layers);
    return {v.data() + at(l, 0), c_.batch};
  }
  struct table {
    std::vector<index_t> indptr, indices, last;
  };
  std::size_t w() const noexcept { return static_cast<std::size_t>(c_.width); }
  std::size_t at(index_t l, std::size_t b) const noexcept {
    return static_cast<std::size_t>(l) * c_.batch + b;
  }
  std::size_t row(index_t l, std::size_t b, index_t i) const noexcept {
    const index_t page = pages_[at(l, b)][static_cast<std::size_t>(i / c_.page_size)];
    return static_cast<std::size_t>(page) * static_cast<std::size_t>(c_.page_size) +
           static_cast<std::size_t>(i % c_.page_size);
  }

  paged_kv_config c_;
  page_pool pool_;
  std::vector<float> k_, v_;
  std::vector<index_t> pos_;
  std::vector<std::vector<index_t>> pages_;  // [layers * batch]
  std::vector<index_t> len_, seen_;          // [layers * batch]
  std::vector<table> tables_;                // [layers]
};
static_assert(host_kv_storage<paged_kv_cache>);

}  // namespace dynllava

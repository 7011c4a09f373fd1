// SPDX-License-Identifier: Apache-2.0
/// @file page_pool.hpp
/// @brief A fixed pool of KV pages with a free list: allocation never grows memory, running out
/// is an error (never a silent overwrite), freed pages are reused first (LIFO, deterministic).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>

#include <vector>

namespace dynllava {

class page_pool {
 public:
  /// A pool of `num_pages` pages, ids `0 .. num_pages - 1`, all free.
  explicit page_pool(index_t num_pages = 0) {
    DYNLLAVA_EXPECTS(num_pages >= 0, "page_pool: num_pages must be >= 0, got {}", num_pages);
    free_.reserve(static_cast<std::size_t>(num_pages));
    for (index_t p = num_pages; p-- > 0;) free_.push_back(p);  // page 0 is handed out first
    in_use_.assign(static_cast<std::size_t>(num_pages), false);
    capacity_ = num_pages;
  }

  index_t capacity() const noexcept { return capacity_; }
  index_t free_pages() const noexcept { return static_cast<index_t>(free_.size()); }
  index_t used_pages() const noexcept { return capacity_ - free_pages(); }

  /// Takes a free page. @throws dynllava::error when none is left ("capacity overflow").
  index_t allocate() {
    DYNLLAVA_EXPECTS(!free_.empty(),
                     "page_pool: out of KV pages (all {} in use); evict, or give the cache more "
                     "pages",
                     capacity_);
    const index_t p = free_.back();
    free_.pop_back();
    in_use_[static_cast<std::size_t>(p)] = true;
    return p;
  }

  /// Returns a page to the pool. @throws dynllava::error on an invalid or already free page.
  void release(index_t page) {
    DYNLLAVA_EXPECTS(page >= 0 && page < capacity_, "page_pool: page {} is not in [0, {})", page,
                     capacity_);
    DYNLLAVA_EXPECTS(in_use_[static_cast<std::size_t>(page)],
                     "page_pool: page {} is not in use "
                     "(released twice?)",
                     page);
    in_use_[static_cast<std::size_t>(page)] = false;
    free_.push_back(page);
  }

 private:
  std::vector<index_t> free_;
  std::vector<bool> in_use_;
  index_t capacity_ = 0;
};

}  // namespace dynllava

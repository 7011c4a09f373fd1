// SPDX-License-Identifier: Apache-2.0
/// @file selection.hpp
/// @brief `host_selection`: an owning CSR list of kept positions per sequence.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/ragged.hpp>

#include <vector>

namespace dynllava {

/// @brief Kept positions of a ragged batch, owned on the host.
/// `positions[indptr[b] .. indptr[b + 1])` are the kept positions of sequence `b`, local to that
/// sequence (0 = its first candidate) and strictly ascending.
struct host_selection {
  std::vector<index_t> indptr;     ///< [batch + 1]
  std::vector<index_t> positions;  ///< [indptr[batch]]

  /// Read-only CSR view.
  host_ragged<const index_t> view() const noexcept {
    return {make_host_span(indptr), make_host_span(positions)};
  }
  /// Number of sequences.
  std::size_t batch() const noexcept { return indptr.empty() ? 0 : indptr.size() - 1; }

  /// The selection that keeps everything: positions `0 .. n_b - 1` for each sequence of `indptr`.
  static host_selection keep_all(const std::vector<index_t>& indptr) {
    host_selection s{indptr, {}};
    for (std::size_t b = 0; b + 1 < indptr.size(); ++b) {
      for (index_t i = 0; i < indptr[b + 1] - indptr[b]; ++i) s.positions.push_back(i);
    }
    return s;
  }
};

}  // namespace dynllava

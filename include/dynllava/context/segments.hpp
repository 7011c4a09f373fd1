// SPDX-License-Identifier: Apache-2.0
/// @file segments.hpp
/// @brief A sequence's segments (system, image, instruction, output; per turn) and which of them
/// may be pruned.
///
/// A sequence's rows are the concatenation of its segments, in order. Only image tokens (in
/// prefill, and again at every step of decoding without KV cache) and generated output tokens
/// (in decoding) are candidates for pruning; system prompts and user instructions never are.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>
#include <type_traits>

namespace dynllava {

/// What a run of tokens is.
enum class segment_kind : std::uint8_t {
  system,       ///< system prompt (never pruned)
  image,        ///< vision tokens (pruned by budgeted top-k)
  instruction,  ///< user text of a turn (never pruned)
  output,       ///< generated tokens (pruned by the output gate in decode)
};

constexpr std::string_view to_string(segment_kind k) noexcept {
  switch (k) {
    case segment_kind::system:
      return "system";
    case segment_kind::image:
      return "image";
    case segment_kind::instruction:
      return "instruction";
    case segment_kind::output:
      return "output";
  }
  return "unknown segment kind";
}
inline std::ostream& operator<<(std::ostream& os, segment_kind k) { return os << to_string(k); }

/// True for the kinds that Dynamic-LLaVA may prune at all (image and output).
DYNLLAVA_HOST_DEVICE constexpr bool is_prunable(segment_kind k) noexcept {
  return k == segment_kind::image || k == segment_kind::output;
}

/// @brief One run of tokens of one kind. Trivially copyable.
struct segment {
  segment_kind kind = segment_kind::system;
  index_t begin = 0;   ///< first row, local to the sequence
  index_t length = 0;  ///< number of rows, >= 0
  index_t turn = 0;    ///< conversation turn the segment belongs to (0-based)

  DYNLLAVA_HOST_DEVICE constexpr index_t end() const noexcept { return begin + length; }
};
static_assert(std::is_trivially_copyable_v<segment>);

/// @brief Segments of every sequence of a batch, CSR by sequence.
/// Sequence `b`'s segments are `segments[indptr[b] .. indptr[b + 1])`, contiguous and in order:
/// the first begins at row 0 and each begins where the previous ends.
template <memory_space Space>
struct segment_table {
  span<const index_t, Space> indptr;    ///< [batch + 1]
  span<const segment, Space> segments;  ///< [indptr[batch]]

  DYNLLAVA_HOST_DEVICE constexpr std::size_t batch() const noexcept {
    return indptr.size() == 0 ? 0 : indptr.size() - 1;
  }
  /// Rows of sequence `b` (the end of its last segment). @pre `b < batch()`.
  DYNLLAVA_HOST_DEVICE constexpr index_t length(std::size_t b) const noexcept {
    return indptr[b + 1] == indptr[b] ? 0 : segments[indptr[b + 1] - 1].end();
  }
};

/// @brief Validates a host segment table: CSR offsets, non-negative lengths, contiguity, known
/// kinds, non-decreasing turns (a user segment after an output segment must start a new turn),
/// and `index_t` overflow of the total.
/// @return total rows of the batch (the sum of every sequence's length)
/// @throws dynllava::error naming the sequence, the segment and the offending value.
inline index_t validate(segment_table<host_space> table, const char* what) {
  validate_indptr(table.indptr, table.segments.size(), what);
  long long total = 0;
  for (std::size_t b = 0; b < table.batch(); ++b) {
    index_t expected_begin = 0;
    index_t last_turn = 0;
    bool after_output = false;
    for (index_t s = table.indptr[b]; s < table.indptr[b + 1]; ++s) {
      const segment& seg = table.segments[static_cast<std::size_t>(s)];
      DYNLLAVA_EXPECTS(
          static_cast<unsigned>(seg.kind) <= static_cast<unsigned>(segment_kind::output),
          "{}: sequence {} segment {} has an unknown kind {}", what, b, s - table.indptr[b],
          static_cast<unsigned>(seg.kind));
      DYNLLAVA_EXPECTS(seg.length >= 0, "{}: sequence {} segment {} has a negative length {}", what,
                       b, s - table.indptr[b], seg.length);
      DYNLLAVA_EXPECTS(seg.begin == expected_begin,
                       "{}: sequence {} segment {} must begin at row {} (where the previous one "
                       "ends), got {}",
                       what, b, s - table.indptr[b], expected_begin, seg.begin);
      DYNLLAVA_EXPECTS(seg.turn >= 0, "{}: sequence {} segment {} has a negative turn {}", what, b,
                       s - table.indptr[b], seg.turn);
      DYNLLAVA_EXPECTS(seg.turn >= last_turn,
                       "{}: sequence {} segment {} has turn {} after turn {}; turns must not "
                       "decrease",
                       what, b, s - table.indptr[b], seg.turn, last_turn);
      DYNLLAVA_EXPECTS(!after_output || seg.kind == segment_kind::output || seg.turn > last_turn,
                       "{}: sequence {} segment {} follows the model's output, so it starts a new "
                       "turn: its turn must be > {}, got {}",
                       what, b, s - table.indptr[b], last_turn, seg.turn);
      DYNLLAVA_EXPECTS(
          static_cast<long long>(seg.begin) + seg.length <= std::numeric_limits<index_t>::max(),
          "{}: sequence {} is longer than the index_t maximum", what, b);
      expected_begin = seg.end();
      last_turn = seg.turn;
      after_output = seg.kind == segment_kind::output;
    }
    total += expected_begin;
    DYNLLAVA_EXPECTS(total <= std::numeric_limits<index_t>::max(),
                     "{}: the batch holds {} rows, more than the index_t maximum {}", what, total,
                     std::numeric_limits<index_t>::max());
  }
  return static_cast<index_t>(total);
}

}  // namespace dynllava

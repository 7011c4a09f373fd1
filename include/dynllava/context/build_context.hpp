// SPDX-License-Identifier: Apache-2.0
/// @file build_context.hpp
/// @brief From segments and per-kind selections to a `sparse_context_view`, on the CPU.
///
/// The flow at the sparse layer, per pruned kind:
///   1. `cpu::candidate_rows` lists each sequence's candidate rows of that kind (in row order);
///   2. the caller gathers those rows, scores them and selects (top-k, gate) -> kept positions,
///      local to each sequence's candidate list;
///   3. `cpu::build_sparse_context` merges every never-pruned row with the kept candidates.
#pragma once

#include <dynllava/context/segments.hpp>
#include <dynllava/context/sparse_context_view.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/selection.hpp>
#include <dynllava/core/span.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <limits>
#include <optional>
#include <vector>

namespace dynllava {

/// The kept candidates of one prunable kind.
struct kind_selection {
  segment_kind kind = segment_kind::image;  ///< `image` or `output`
  /// [batch + 1] / [kept]: kept positions, local to each sequence's candidate list of `kind`
  /// (as enumerated by `cpu::candidate_rows` with the same `pin_last_output`), ascending.
  host_ragged<const index_t> kept;
};

/// Options of candidate enumeration and context building.
struct context_options {
  /// When the final row of a sequence is an output token, it is never a candidate and always
  /// kept (decode without KV cache: the newest token always attends and is attended).
  bool pin_last_output = false;
  /// [batch] host, optional: position id of each sequence's row 0 (default 0). Used when the
  /// rows continue an earlier context, e.g. a new turn after a cached conversation.
  std::optional<host_span<const index_t>> position_offsets{};
};

/// True when row `r` of sequence `b` is the pinned final output row.
inline bool is_pinned_row(segment_table<host_space> table, std::size_t b, const segment& seg,
                          index_t r, const context_options& options) {
  return options.pin_last_output && seg.kind == segment_kind::output && r == table.length(b) - 1;
}

namespace cpu {

/// @brief Phase 1 of candidate enumeration: candidate counts per sequence as CSR offsets.
/// @param[in] table host segment table (validated)
/// @param[in] kind `image` or `output`
/// @param[out] out_indptr [batch + 1] host
/// @return total candidates
/// @throws dynllava::error on an invalid table, a never-prunable kind or a wrong `out_indptr` size.
inline index_t candidate_plan(segment_table<host_space> table, segment_kind kind,
                              host_span<index_t> out_indptr, const context_options& options = {}) {
  validate(table, "candidate_rows: segments");
  DYNLLAVA_EXPECTS(is_prunable(kind), "candidate_rows: kind must be image or output, got {} ({})",
                   to_string(kind), static_cast<unsigned>(kind));
  DYNLLAVA_EXPECTS(out_indptr.size() == table.batch() + 1,
                   "candidate_rows: out_indptr must have batch + 1 = {} entries, got {}",
                   table.batch() + 1, out_indptr.size());
  out_indptr[0] = 0;
  for (std::size_t b = 0; b < table.batch(); ++b) {
    index_t n = 0;
    for (index_t s = table.indptr[b]; s < table.indptr[b + 1]; ++s) {
      const segment& seg = table.segments[static_cast<std::size_t>(s)];
      if (seg.kind != kind) continue;
      n += seg.length;
      if (seg.length > 0 && is_pinned_row(table, b, seg, seg.end() - 1, options)) --n;
    }
    out_indptr[b + 1] = out_indptr[b] + n;
  }
  return out_indptr[table.batch()];
}

/// @brief Candidate rows of `kind` per sequence: local row numbers, ascending, CSR.
/// @param[out] out_indptr [batch + 1] host
/// @param[out] out_rows [>= candidates] host
/// @return total candidates
/// @throws dynllava::error as `candidate_plan`, and when `out_rows` is too small.
inline index_t candidate_rows(segment_table<host_space> table, segment_kind kind,
                              host_span<index_t> out_indptr, host_span<index_t> out_rows,
                              const context_options& options = {}) {
  const index_t total = candidate_plan(table, kind, out_indptr, options);
  DYNLLAVA_EXPECTS(out_rows.size() >= static_cast<std::size_t>(total),
                   "candidate_rows: out_rows must hold at least {} entries, got {}", total,
                   out_rows.size());
  for (std::size_t b = 0; b < table.batch(); ++b) {
    index_t o = out_indptr[b];
    for (index_t s = table.indptr[b]; s < table.indptr[b + 1]; ++s) {
      const segment& seg = table.segments[static_cast<std::size_t>(s)];
      if (seg.kind != kind) continue;
      for (index_t r = seg.begin; r < seg.end(); ++r) {
        if (!is_pinned_row(table, b, seg, r, options)) out_rows[static_cast<std::size_t>(o++)] = r;
      }
    }
  }
  return total;
}

/// Candidate rows returned as an owning selection (`positions` are local rows). @see candidate_rows
inline host_selection candidate_rows(segment_table<host_space> table, segment_kind kind,
                                     const context_options& options = {}) {
  host_selection out;
  out.indptr.resize(table.batch() + 1);
  out.positions.resize(
      static_cast<std::size_t>(candidate_plan(table, kind, make_host_span(out.indptr), options)));
  candidate_rows(table, kind, make_host_span(out.indptr), make_host_span(out.positions), options);
  return out;
}

/// @brief Global rows (into the packed batch) of local candidate rows: sequence `b`'s rows start
/// after the rows of sequences `0 .. b-1`. @pre `candidates` came from `candidate_rows(table,
/// ...)`.
inline std::vector<index_t> global_rows(const host_selection& candidates,
                                        segment_table<host_space> table) {
  std::vector<index_t> out;
  out.reserve(candidates.positions.size());
  index_t base = 0;
  for (std::size_t b = 0; b < candidates.batch(); ++b) {
    for (index_t i = candidates.indptr[b]; i < candidates.indptr[b + 1]; ++i) {
      out.push_back(base + candidates.positions[static_cast<std::size_t>(i)]);
    }
    base += table.length(b);
  }
  return out;
}

/// @brief Builds the sparse context: every row of a kind not listed in `pruned` (and the pinned
/// final output row) is kept; rows of a listed kind are kept iff selected.
/// @param[in] table host segment table; sequence `b` occupies global rows starting at the sum of
///            the lengths of sequences `0 .. b-1`
/// @param[in] pruned at most one selection per prunable kind (image, output)
/// @param[out] out_indptr [batch + 1] host
/// @param[out] out_rows [>= kept] host, global source rows
/// @param[out] out_positions [>= kept] host, original positions
/// @return total kept rows
/// @post on a throw, the outputs may be partly written and must not be used
/// @throws dynllava::error on an invalid table, a never-prunable or repeated kind, a selection
///         whose batch, order or range does not match the candidates, too small outputs, or
///         wrongly sized position offsets.
inline index_t build_sparse_context(segment_table<host_space> table,
                                    host_span<const kind_selection> pruned,
                                    host_span<index_t> out_indptr, host_span<index_t> out_rows,
                                    host_span<index_t> out_positions,
                                    const context_options& options = {}) {
  validate(table, "build_sparse_context: segments");
  const std::size_t batch = table.batch();
  DYNLLAVA_EXPECTS(out_indptr.size() == batch + 1,
                   "build_sparse_context: out_indptr must have batch + 1 = {} entries, got {}",
                   batch + 1, out_indptr.size());
  if (options.position_offsets) {
    DYNLLAVA_EXPECTS(options.position_offsets->size() == batch,
                     "build_sparse_context: position_offsets must have one entry per sequence "
                     "({}), got {}",
                     batch, options.position_offsets->size());
    for (std::size_t b = 0; b < batch; ++b) {
      const index_t off = (*options.position_offsets)[b];
      DYNLLAVA_EXPECTS(off >= 0 && static_cast<long long>(off) + table.length(b) <=
                                       std::numeric_limits<index_t>::max(),
                       "build_sparse_context: position_offsets[{}] = {} must be >= 0 and leave "
                       "room for the sequence's {} rows below the index_t maximum",
                       b, off, table.length(b));
    }
  }
  // Index of the selection for each kind, or -1 when the kind is kept whole.
  std::array<int, 4> which{-1, -1, -1, -1};
  for (std::size_t p = 0; p < pruned.size(); ++p) {
    const kind_selection& sel = pruned[p];
    DYNLLAVA_EXPECTS(is_prunable(sel.kind),
                     "build_sparse_context: pruned[{}].kind must be image or output, got {} ({})",
                     p, to_string(sel.kind), static_cast<unsigned>(sel.kind));
    const auto k = static_cast<std::size_t>(sel.kind);
    DYNLLAVA_EXPECTS(which[k] < 0,
                     "build_sparse_context: kind {} is listed twice (pruned[{}] "
                     "and pruned[{}])",
                     to_string(sel.kind), which[k], p);
    which[k] = static_cast<int>(p);
    validate(sel.kept, "build_sparse_context: pruned[].kept");
    DYNLLAVA_EXPECTS(sel.kept.batch() == batch,
                     "build_sparse_context: pruned[{}] ({}) covers {} sequences, expected {}", p,
                     to_string(sel.kind), sel.kept.batch(), batch);
  }
  const std::size_t capacity = std::min(out_rows.size(), out_positions.size());
  std::array<index_t, 4> cursor{};
  std::array<index_t, 4> candidate{};
  index_t o = 0;
  index_t row_base = 0;
  out_indptr[0] = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const index_t pos_base = options.position_offsets ? (*options.position_offsets)[b] : 0;
    for (std::size_t p = 0; p < pruned.size(); ++p) {
      const auto k = static_cast<std::size_t>(pruned[p].kind);
      cursor[k] = pruned[p].kept.indptr[b];
      candidate[k] = 0;
    }
    for (index_t s = table.indptr[b]; s < table.indptr[b + 1]; ++s) {
      const segment& seg = table.segments[static_cast<std::size_t>(s)];
      const auto k = static_cast<std::size_t>(seg.kind);
      for (index_t r = seg.begin; r < seg.end(); ++r) {
        bool keep = true;
        if (which[k] >= 0 && !is_pinned_row(table, b, seg, r, options)) {
          const auto& kept = pruned[static_cast<std::size_t>(which[k])].kept;
          const index_t end = kept.indptr[b + 1];
          const index_t c = candidate[k]++;
          keep = cursor[k] < end && kept.values[static_cast<std::size_t>(cursor[k])] == c;
          if (keep) {
            ++cursor[k];
            DYNLLAVA_EXPECTS(
                cursor[k] == end || kept.values[static_cast<std::size_t>(cursor[k])] > c,
                "build_sparse_context: {} kept positions of sequence {} must be "
                "strictly ascending, got {} after {}",
                to_string(seg.kind), b, kept.values[static_cast<std::size_t>(cursor[k])], c);
          }
        }
        if (!keep) continue;
        DYNLLAVA_EXPECTS(static_cast<std::size_t>(o) < capacity,
                         "build_sparse_context: out_rows/out_positions hold {} entries, too few "
                         "for the kept rows (the batch has {} rows; that many always suffice)",
                         capacity, validate(table, "build_sparse_context: segments"));
        out_rows[static_cast<std::size_t>(o)] = row_base + r;
        out_positions[static_cast<std::size_t>(o)] = pos_base + r;
        ++o;
      }
    }
    for (std::size_t p = 0; p < pruned.size(); ++p) {
      const auto k = static_cast<std::size_t>(pruned[p].kind);
      const index_t end = pruned[p].kept.indptr[b + 1];
      DYNLLAVA_EXPECTS(
          cursor[k] == end,
          "build_sparse_context: {} kept position {} of sequence {} is not a valid "
          "candidate (the sequence has {} {} candidates; positions must ascend)",
          to_string(pruned[p].kind),
          cursor[k] < end ? pruned[p].kept.values[static_cast<std::size_t>(cursor[k])] : -1, b,
          candidate[k], to_string(pruned[p].kind));
    }
    row_base += table.length(b);
    out_indptr[b + 1] = o;
  }
  return o;
}

/// Builds an owning sparse context. @see build_sparse_context
inline host_sparse_context build_sparse_context(segment_table<host_space> table,
                                                host_span<const kind_selection> pruned,
                                                const context_options& options = {}) {
  const index_t rows = validate(table, "build_sparse_context: segments");
  host_sparse_context ctx;
  ctx.indptr.resize(table.batch() + 1);
  ctx.rows.resize(static_cast<std::size_t>(rows));
  ctx.positions.resize(static_cast<std::size_t>(rows));
  const index_t kept =
      build_sparse_context(table, pruned, make_host_span(ctx.indptr), make_host_span(ctx.rows),
                           make_host_span(ctx.positions), options);
  ctx.rows.resize(static_cast<std::size_t>(kept));
  ctx.positions.resize(static_cast<std::size_t>(kept));
  return ctx;
}

}  // namespace cpu
}  // namespace dynllava

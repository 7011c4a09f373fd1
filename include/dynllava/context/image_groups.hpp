// SPDX-License-Identifier: Apache-2.0
/// @file image_groups.hpp
/// @brief `image_groups`: each sequence's image candidates split by conversation turn, so that
/// every turn's image is ranked on its own.
#pragma once

#include <dynllava/context/segments.hpp>
#include <dynllava/core/config.hpp>
#include <dynllava/core/span.hpp>

#include <cstddef>
#include <vector>

namespace dynllava {

/// @brief Each sequence's image candidates split into groups, one per turn (a run of image
/// segments with the same `turn`, in segment order). Each group is ranked on its own (its own
/// predictor call, its own top-k), in prefill with KV cache, where a turn's image arrives in its
/// own call, and without KV cache alike, so both modes keep the same tokens. Host memory, owning.
struct image_groups {
  std::vector<index_t> indptr{0};     ///< [groups + 1] CSR over the candidates, in their order
  std::vector<std::size_t> sequence;  ///< [groups] the sequence of each group
};

namespace cpu {

/// Groups of `segments`' image candidates by turn (see `image_groups`). @pre `segments` valid.
inline image_groups group_images_by_turn(segment_table<host_space> segments) {
  image_groups g;
  for (std::size_t b = 0; b < segments.batch(); ++b) {
    bool open = false;
    index_t turn = 0;
    for (index_t i = segments.indptr[b]; i < segments.indptr[b + 1]; ++i) {
      const segment& seg = segments.segments[static_cast<std::size_t>(i)];
      if (seg.kind != segment_kind::image) continue;
      if (!open || seg.turn != turn) {
        g.indptr.push_back(g.indptr.back());
        g.sequence.push_back(b);
        open = true;
        turn = seg.turn;
      }
      g.indptr.back() += seg.length;
    }
  }
  return g;
}

}  // namespace cpu
}  // namespace dynllava

// SPDX-License-Identifier: Apache-2.0
/// @file image_ranker.hpp
/// @brief `image_ranker`: what the drivers (`kv_session`, `no_cache_session`,
/// `decode_without_cache`) accept in their image slot, and `image_argument`, the pointer (or
/// `nullptr`) that they take for it.
#pragma once

#include <dynllava/core/execution.hpp>
#include <dynllava/pipeline/no_predictor.hpp>
#include <dynllava/score/concepts.hpp>

#include <type_traits>

namespace dynllava {

/// @brief What ranks a driver's image tokens at the sparse layer.
///
/// Requirements: `S` models one of
///   1. `two_way_predictor<S, Tag>` (the image predictor): ranks with `vision_rule::predictor` by
///      the margin `logit0 - logit1`, and the decision views report its logits; its width is
///      checked against the model's;
///   2. `token_scorer<S, Tag>` (an engine's own ranker, `l2_norm_scorer`, `random_scorer`): ranks
///      with `vision_rule::predictor` by its score (no logits to report);
///   3. `attention_scorer<S, Tag>` (FastV-like): ranks with `vision_rule::fastv` by the last full
///      layer's queries and keys, in place of the bundled `fastv_scorer`.
/// The drivers run on the host (`Tag = host_t`); a ranker of a rule other than the options' is
/// refused before anything runs.
template <class S, class Tag>
concept image_ranker = token_scorer<S, Tag> || attention_scorer<S, Tag>;

/// An image argument of a host driver: a pointer to an `image_ranker<S, host_t>`, or `nullptr`.
template <class T>
concept image_argument =
    (std::is_null_pointer_v<std::remove_cvref_t<T>> ||
     std::is_pointer_v<std::remove_cvref_t<T>>)&&image_ranker<predictor_type_t<T>, host_t>;

}  // namespace dynllava

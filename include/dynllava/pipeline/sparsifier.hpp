// SPDX-License-Identifier: Apache-2.0
/// @file sparsifier.hpp
/// @brief The Dynamic-LLaVA inference modes over any `decoder`, on the host: prefill with
/// vision pruning and decode with the online KV gate (`kv_session`), and decode without KV
/// cache with output-text sparsification (`decode_without_cache`). METHOD.md sections 2 and 4.
///
/// Layers `0 .. sparse_layer-1` always see the whole context; at `sparse_layer` the predictors
/// read the hidden states entering it and decide once for all layers above; kept rows keep
/// their original positions. Dropped tokens still advance the position counter.
#pragma once

#include <dynllava/pipeline/decode_without_cache.hpp>
#include <dynllava/pipeline/hooks.hpp>
#include <dynllava/pipeline/kv_session.hpp>
#include <dynllava/pipeline/sparsifier_options.hpp>

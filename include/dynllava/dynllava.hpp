// SPDX-License-Identifier: Apache-2.0
/// @file dynllava.hpp
/// @brief Umbrella header of the host tier: every `.hpp` of dynllava (no CUDA includes).
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/core/workspace.hpp>

#include <dynllava/select/concepts.hpp>
#include <dynllava/select/gate.hpp>
#include <dynllava/select/selection.hpp>
#include <dynllava/select/topk.hpp>
#include <dynllava/select/topk_types.hpp>

#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>
#include <dynllava/context/segments.hpp>
#include <dynllava/context/sparse_context_view.hpp>

#include <dynllava/train/attention_layout.hpp>
#include <dynllava/train/attention_mask.hpp>
#include <dynllava/train/budget_loss.hpp>
#include <dynllava/train/gumbel.hpp>
#include <dynllava/train/masked_softmax.hpp>
#include <dynllava/train/philox.hpp>

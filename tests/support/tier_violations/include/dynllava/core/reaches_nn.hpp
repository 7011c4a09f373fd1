// SPDX-License-Identifier: Apache-2.0
// A host-tier header including an nn-tier header: header_tiers_are_separate must reject it.
#pragma once
#include <dynllava/nn/uses_blas.hpp>

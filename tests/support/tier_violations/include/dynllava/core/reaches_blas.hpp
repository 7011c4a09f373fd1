// SPDX-License-Identifier: Apache-2.0
// A host-tier header reaching the nn tier's package: header_tiers_are_separate must reject it.
#pragma once
#include <cblas.h>

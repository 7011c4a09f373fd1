// SPDX-License-Identifier: Apache-2.0
// An nn-tier header using BLAS: allowed.
#pragma once
#include <cblas.h>

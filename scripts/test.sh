#!/usr/bin/env bash
# Sets up, builds everything (CUDA compiled when nvcc is present) and runs the test suite.
# GPU tests report "skipped" on a machine without a GPU; set DYNLLAVA_REQUIRE_GPU=1 to make
# that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cmake --preset default
cmake --build --preset default
ctest --preset default

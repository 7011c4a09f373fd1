#!/usr/bin/env bash
# Sets up, builds and runs dynllava's main job: the selection pipeline on a synthetic
# LLaVA-shaped batch (until the LLaVA-1.5 example exists). Extra arguments go to the demo,
# e.g. `bash scripts/demo.sh --seed 7 --keep-ratio 0.25`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu --target dynllava_select_demo
./build/cpu/examples/dynllava_select_demo "$@"

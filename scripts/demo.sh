#!/usr/bin/env bash
# Sets up, builds and runs dynllava's main job: the LLaVA program on the bundled tiny trained
# Dynamic-LLaVA (models/tiny-dynamic-llava) and a sample picture. It streams the answer, prints
# what was pruned and what it cost, and writes the paper's Figure-6 view of the run to
# build/figure6.html. Arguments, when given, replace the sample question and mode (the model and
# the Figure-6 output stay), e.g.
# `bash scripts/demo.sh --image models/tiny-dynamic-llava/samples/sample-2.png --prompt "Is there a cross?" --mode dense`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu --target dynllava-llava
model=models/tiny-dynamic-llava
question=(--image "$model/samples/sample-1.png" --prompt "How many shapes are there?" --mode dynamic)
(($#)) && question=("$@")
./build/cpu/examples/llava/dynllava-llava --model "$model" --visualize build/figure6.html "${question[@]}"
echo "demo: the Figure-6 view of this run is $(pwd)/build/figure6.html (open it in a browser)"

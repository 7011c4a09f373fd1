#!/usr/bin/env bash
# Sets up, builds and runs dynllava's main job: the LLaVA program on the bundled tiny trained
# Dynamic-LLaVA (models/tiny-dynamic-llava) and a sample picture. It streams the answer, prints
# what was pruned and what it cost, and writes the paper's Figure-6 view of the run to
# build/figure6.html. Arguments, when given, replace the sample question (the model stays; the
# sample picture stays unless an --image is given; the Figure-6 view is written when at most one
# --image is), e.g.
# `bash scripts/demo.sh --image models/tiny-dynamic-llava/samples/sample-2.png --prompt "Is there a cross?" --mode dense`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu --target dynllava-llava
model=models/tiny-dynamic-llava
sample=(--image "$model/samples/sample-3.png")
question=("${sample[@]}" --prompt "Describe the image." --mode dynamic)
images=0
for arg in "$@"; do [[ $arg == --image ]] && images=$((images + 1)); done
if (($#)); then
  question=("$@")
  ((images == 0)) && question=("${sample[@]}" "$@")
fi
view=()
((images <= 1)) && view=(--visualize build/figure6.html)
./build/cpu/examples/llava/dynllava-llava --model "$model" "${view[@]}" "${question[@]}"
if ((images <= 1)); then
  echo "demo: the Figure-6 view of this run is $(pwd)/build/figure6.html (open it in a browser)"
fi

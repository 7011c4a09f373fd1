#!/usr/bin/env bash
# Sets up, builds and runs dynllava's main job: the LLaVA program on the bundled tiny trained
# Dynamic-LLaVA (models/tiny-dynamic-llava) and a sample picture. It streams the answer, prints
# what was pruned and what it cost, and writes the paper's Figure-6 view of the run to
# build/figure6.html. Arguments, when given, are passed on to the program: the model stays, the
# sample picture stays unless an --image is given, the sample question stays unless a --prompt
# (or --batch) is given, and the Figure-6 view is written when at most one --image is, e.g.
# `bash scripts/demo.sh --image models/tiny-dynamic-llava/samples/sample-2.png --prompt "Is there a cross?" --mode dense`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu --target dynllava-llava
model=models/tiny-dynamic-llava
sample_image=(--image "$model/samples/sample-3.png")
sample_prompt=(--prompt "Describe the image.")
images=0 prompt=0 batch=0 info=0
for arg in "$@"; do
  case $arg in
    --image | --image=*) images=$((images + 1)) ;;
    --prompt | --prompt=*) prompt=1 ;;
    --batch | --batch=*) batch=1 ;;
    -h | --help | --version) info=1 ;;
  esac
done
args=("$@")
view=()
if ((info == 0 && batch == 0)); then
  ((prompt == 0)) && args=("${sample_prompt[@]}" "${args[@]}")
  ((images == 0)) && args=("${sample_image[@]}" "${args[@]}")
  ((images <= 1)) && view=(--visualize build/figure6.html)
fi
./build/cpu/examples/llava/dynllava-llava --model "$model" "${view[@]}" "${args[@]}"
if ((${#view[@]})); then
  echo "demo: the Figure-6 view of this run is $(pwd)/build/figure6.html (open it in a browser)"
fi

#!/usr/bin/env bash
# GPU kit, step 2 (on the GPU machine, one command, finishes within about 9 minutes):
#
#   bash scripts/gpu_kit/run.sh "$OUT"                 # GPU machine: every step must pass
#   bash scripts/gpu_kit/run.sh OUT_DIR --allow-no-gpu # CI guard on a machine without a GPU
#
# Needs the working tree plus gpu-kit/ (made by scripts/gpu_kit/prepare.sh from the same tree).
# The prebuilt binaries need the glibc named in gpu-kit/MANIFEST.txt; a binary that cannot load
# here, a kit prepared from a different tree, or DYNLLAVA_KIT_REBUILD=1 makes this script
# rebuild the binaries with this machine's nvcc from the tree and gpu-kit/include.
#
# Writes at most 8 files into the output folder:
#   summary.log      one line per step (PASS / FAIL / SKIP, seconds, detail), device, manifest
#   device.txt       nvidia-smi and the device properties
#   tests.log        the GPU tests (DYNLLAVA_REQUIRE_GPU=1)
#   memcheck.log     the GPU tests under compute-sanitizer memcheck (with leak check)
#   racecheck.log    the GPU tests under compute-sanitizer racecheck
#   bench_cuda.json  Google Benchmark JSON of the CUDA benchmarks (every repetition + aggregates)
#   bench_torch.json the PyTorch peers on the same shapes, in the same JSON layout
# Exit status 0 only when every step passed; on a GPU machine a skipped step is a failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: run.sh OUT_DIR [--allow-no-gpu]}
allow_no_gpu=0
[[ ${2:-} == --allow-no-gpu ]] && allow_no_gpu=1
mkdir -p "$out"
out=$(cd "$out" && pwd)
kit="$root/gpu-kit"
summary="$out/summary.log"
: >"$summary"
failed=0
t0=$(date +%s)
deadline=$((t0 + ${DYNLLAVA_KIT_BUDGET_S:-540}))  # the device tool kills a command at 600 s
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=../env.sh
source "$root/scripts/env.sh"

log() { echo "$*" | tee -a "$summary"; }
oneline() { tr '\n' ' ' | tr -s ' ' | cut -c1-300; }
step() {  # step NAME STATUS SECONDS [DETAIL]; on a GPU machine a SKIP counts as a failure
  local status=$2
  if [[ $status == SKIP ]] && (( !allow_no_gpu )); then status=FAIL; fi
  log "$(printf '%-22s %-5s %4ss  %s' "$1" "$status" "$3" "${4:-}")"
  [[ $status == FAIL ]] && failed=1
  return 0
}
count() {  # count PATTERN FILE: matching lines, 0 when none or no file
  local n
  n=$(grep -c "$1" "$2" 2>/dev/null)
  echo "${n:-0}"
}
cap() {  # cap SECONDS: the step's cap, shortened to what is left before the deadline
  local left=$((deadline - $(date +%s) - 10))
  (( left < 1 )) && left=1
  echo $(( $1 < left ? $1 : left ))
}

if [[ ! -x $kit/bin/dynllava_gpu_tests ]]; then
  log "run: $kit/bin/dynllava_gpu_tests missing: run scripts/gpu_kit/prepare.sh in this tree and carry gpu-kit"
  exit 2
fi
log "dynllava GPU kit run, $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
sed 's/^/kit: /' "$kit/MANIFEST.txt" >>"$summary"

# --- device -----------------------------------------------------------------------------------
have_gpu=0
{
  echo "### nvidia-smi"
  timeout -k 5 20 nvidia-smi 2>&1 || echo "(nvidia-smi not available)"
  echo "### nvidia-smi -q"
  timeout -k 5 20 nvidia-smi -q 2>/dev/null | grep -E "Product Name|Driver Version|CUDA Version|MIG Mode|Current|Max Clocks|Total|Bus Id" || true
} >"$out/device.txt" 2>&1
if timeout -k 5 20 nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; fi
log "device: $( (timeout -k 5 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none) | head -1)"

# cuBLAS comes from this machine's CUDA toolkit (the kit cannot carry it).
nvcc_lib=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/../lib64
for d in "$nvcc_lib" /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d $d ]] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

# --- binaries: prebuilt, or rebuilt here --------------------------------------------------------
tree_hash=$(cd "$root" && find include tests bench -type f \( -name '*.hpp' -o -name '*.cuh' -o -name '*.cu' -o -name '*.cpp' \) | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
kit_hash=$(sed -n 's/^tree: //p' "$kit/MANIFEST.txt")
declare -A bin=([dynllava_gpu_tests]="$kit/bin/dynllava_gpu_tests" [dynllava_bench_cuda]="$kit/bin/dynllava_bench_cuda")
for name in dynllava_gpu_tests dynllava_bench_cuda; do
  reason=""
  if [[ ${DYNLLAVA_KIT_REBUILD:-0} == 1 ]]; then reason="DYNLLAVA_KIT_REBUILD=1"
  elif [[ $tree_hash != "$kit_hash" ]]; then reason="gpu-kit was prepared from another tree ($kit_hash, this tree $tree_hash)"
  elif missing=$(ldd "${bin[$name]}" 2>&1 | grep "not found"); [[ -n $missing ]]; then reason="cannot load: $(echo "$missing" | oneline)"
  fi
  [[ -z $reason ]] && continue
  log "run: rebuilding $name here: $reason"
  s=$(date +%s)
  src=("$root"/tests/cuda/*.cu)
  # the CPU twins of the CUDA predictors use OpenBLAS (carried in gpu-kit/lib)
  extra=(-lcublas -L"$kit/lib" -l:libopenblas.so.0 -Xlinker "-rpath=$kit/lib")
  if [[ $name == dynllava_bench_cuda ]]; then
    src=("$root"/bench/cuda/*.cu)
    extra=(-lcublas -L"$kit/lib" -l:libbenchmark.so.1debian -Xlinker "-rpath=$kit/lib")
  fi
  # Each .cu compiles in its own nvcc, as many at once as there are cores, then one link.
  mkdir -p "$work/obj-$name"
  if timeout -k 5 "$(cap "${DYNLLAVA_KIT_BUILD_CAP_S:-150}")" bash -c '
       set -euo pipefail
       root=$1 kit=$2 objdir=$3 exe=$4; shift 4
       extra=(); src=()
       for a in "$@"; do if [[ $a == *.cu ]]; then src+=("$a"); else extra+=("$a"); fi; done
       printf "%s\n" "${src[@]}" | xargs -P "$(nproc)" -I{} sh -c "nvcc -std=c++20 -O3 -DNDEBUG \
         -lineinfo -arch=sm_90 --expt-relaxed-constexpr -DFMT_HEADER_ONLY -DFMT_USE_CONSTEXPR=1 \
         -I\"$root/include\" -I\"$root/tests\" -I\"$kit/include\" -c {} \
         -o \"$objdir/\$(basename {}).o\""
       nvcc -arch=sm_90 "$objdir"/*.o -o "$exe" "${extra[@]}"
     ' _ "$root" "$kit" "$work/obj-$name" "$work/$name" "${src[@]}" "${extra[@]}" \
       >"$work/$name.build.log" 2>&1; then
    bin[$name]="$work/$name"
    step "build-$name" PASS $(( $(date +%s) - s ))
  else
    step "build-$name" FAIL $(( $(date +%s) - s )) "$(tail -5 "$work/$name.build.log" | oneline)"
    cat "$work/$name.build.log" >>"$out/tests.log"
    bin[$name]=""
  fi
done

# --- GPU tests --------------------------------------------------------------------------------
s=$(date +%s)
if [[ -n ${bin[dynllava_gpu_tests]} ]]; then
  DYNLLAVA_REQUIRE_GPU=$(( !allow_no_gpu || have_gpu )) timeout -k 5 "$(cap 90)" \
    "${bin[dynllava_gpu_tests]}" >>"$out/tests.log" 2>&1
  rc=$?
  if (( rc == 0 )); then
    have_gpu=1
    step gpu-tests PASS $(( $(date +%s) - s )) "$(grep -E '^\[doctest\] (test cases|assertions)' "$out/tests.log" | oneline)"
  elif (( rc == 77 && !have_gpu )); then
    step gpu-tests SKIP $(( $(date +%s) - s )) "exit 77: no device"
  else
    step gpu-tests FAIL $(( $(date +%s) - s )) "exit $rc; see tests.log"
  fi
  grep -E "^dynllava_gpu_tests: device" "$out/tests.log" >>"$out/device.txt" || true
else
  step gpu-tests FAIL 0 "no test binary"
fi

# --- compute-sanitizer: the runner (called last, below) ---------------------------------------
sanitizer=$(command -v compute-sanitizer || true)
nvcc_dir=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")
for c in "$nvcc_dir/compute-sanitizer" "$nvcc_dir/../compute-sanitizer/compute-sanitizer" \
         /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [[ -z $sanitizer && -x $c ]] && sanitizer=$c
done
sanitize() {  # sanitize TOOL CAP EXTRA...
  local tool=$1 limit=$2
  shift 2
  local s=$(date +%s)
  if (( !have_gpu )); then
    echo "no GPU: $tool not run" >"$out/$tool.log"
    step "$tool" SKIP 0 "no GPU"
    return
  fi
  if [[ -z $sanitizer || -z ${bin[dynllava_gpu_tests]} ]]; then
    echo "compute-sanitizer not found (PATH, $nvcc_dir, /usr/local/cuda)" >"$out/$tool.log"
    step "$tool" FAIL 0 "compute-sanitizer or the test binary not found"
    return
  fi
  local c
  c=$(cap "$limit")
  # Under the sanitizers (10-100x slower) the cases that only repeat checked kernels on larger
  # or other-typed inputs are left out: the 2^22-long rows and the fp16/bf16 top-k sweeps.
  DYNLLAVA_REQUIRE_GPU=1 timeout -k 5 "$c" "$sanitizer" --tool "$tool" --error-exitcode 99 "$@" \
    "${bin[dynllava_gpu_tests]}" "--test-case-exclude=*very long row*,*on the widened scores*" \
    >"$out/$tool.log" 2>&1
  local rc=$?
  local errors
  errors=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$out/$tool.log" | tail -2 | oneline)
  if (( rc == 0 )); then step "$tool" PASS $(( $(date +%s) - s )) "$errors"
  elif (( rc == 124 || rc == 137 )); then step "$tool" FAIL "$c" "timed out after ${c}s"
  else step "$tool" FAIL $(( $(date +%s) - s )) "exit $rc; $errors"
  fi
}

# --- benchmarks -------------------------------------------------------------------------------
# In chunks, most important first, each with its own JSON (merged into bench_cuda.json), so that
# a chunk cut by its cap costs only itself. The kit's grid is the issue's target shapes and a
# sample of the rest; DYNLLAVA_KIT_BENCH=full runs every registered case (longer than a kit run).
s=$(date +%s)
json="$out/bench_cuda.json"
py=$(command -v python3 || command -v python || true)
if [[ ${DYNLLAVA_KIT_BENCH:-kit} == full ]]; then
  chunks=(".")
  caps=(400)
else
  caps=(45 40 60 40)  # about 35, 25, 50 and 40 s expected (min_time 0.02, 3 repetitions)
  chunks=(
    "^bm_baseline_empty_launch|^bm_[a-z_]+/(1|8|64|256)/576/1/[01]/"   # top-k targets: n 576, k 115
    "^bm_[a-z_]+/(1|64)/16777216/0/0/"                                  # top-k target: n 2^24
    "gather|memcpy|append|copy_rows|predictor|dense_layer"              # the other groups
    "^bm_[a-z_]+/(8|64)/(2048|32768|1048576)/[01]/0/"                   # top-k, other n
  )
fi
bench_status=PASS bench_detail="" parts=()
if [[ -n ${bin[dynllava_bench_cuda]} ]]; then
  for i in "${!chunks[@]}"; do
    part="$work/bench_part$i.json"
    timeout -k 5 "$(cap "${caps[$i]}")" "${bin[dynllava_bench_cuda]}" --benchmark_filter="${chunks[$i]}" \
      --benchmark_min_time=0.02 --benchmark_repetitions=3 --benchmark_display_aggregates_only=true \
      --benchmark_out="$part" --benchmark_out_format=json >"$work/bench$i.txt" 2>&1
    rc=$?
    if (( rc != 0 )); then
      bench_status=FAIL
      bench_detail+="chunk $i exit $rc$( (( rc == 124 || rc == 137 )) && echo ' (cap)'): $(tail -2 "$work/bench$i.txt" | oneline); "
    fi
    # a chunk cut by its cap leaves unterminated JSON: only complete parts are merged
    [[ -s $part ]] && { [[ -z $py ]] || "$py" -c 'import json,sys; json.load(open(sys.argv[1]))' "$part" 2>/dev/null; } && parts+=("$part")
  done
  if (( ${#parts[@]} > 0 )); then
    "${py:-false}" - "$json" "${parts[@]}" <<'PY' || cp "${parts[0]}" "$json"
import json, sys
docs = [json.load(open(p)) for p in sys.argv[2:]]
merged = dict(context=docs[0].get("context", {}), benchmarks=[b for d in docs for b in d.get("benchmarks", [])])
json.dump(merged, open(sys.argv[1], "w"), indent=1)
PY
  fi
  total=$(count '"name":' "$json")
  errors=$(count '"error_occurred": true' "$json")
  no_device=$(count '"error_message": "no CUDA device"' "$json")
  if (( total == 0 )); then
    step bench-cuda FAIL $(( $(date +%s) - s )) "no results in bench_cuda.json; $bench_detail"
  elif (( have_gpu )); then
    if (( errors > 0 )); then step bench-cuda FAIL $(( $(date +%s) - s )) "$errors runs reported an error; see bench_cuda.json; $bench_detail"
    else step bench-cuda "$bench_status" $(( $(date +%s) - s )) "$total runs in ${#parts[@]} of ${#chunks[@]} chunks; $bench_detail"
    fi
  elif [[ $bench_status == FAIL ]]; then
    step bench-cuda FAIL $(( $(date +%s) - s )) "$bench_detail"
  elif (( no_device == total )); then
    step bench-cuda SKIP $(( $(date +%s) - s )) "all $total runs said 'no CUDA device' cleanly"
  else
    step bench-cuda FAIL $(( $(date +%s) - s )) "no GPU, but $(( total - no_device )) of $total runs did not say 'no CUDA device'"
  fi
else
  step bench-cuda FAIL 0 "no benchmark binary"
fi

# --- PyTorch peers ----------------------------------------------------------------------------
s=$(date +%s)
if [[ -n $py ]] && "$py" -c "import torch" >/dev/null 2>&1; then
  timeout -k 5 "$(cap 45)" "$py" "$root/bench/torch/peers.py" --out "$out/bench_torch.json" --grid "${DYNLLAVA_KIT_BENCH:-kit}" >"$work/torch.txt" 2>&1
  rc=$?
  if (( rc == 0 )); then step torch-peers PASS $(( $(date +%s) - s )) "$(tail -1 "$work/torch.txt" | oneline)"
  elif (( rc == 77 && !have_gpu )); then step torch-peers SKIP $(( $(date +%s) - s )) "torch without CUDA"
  elif (( rc == 124 || rc == 137 )); then step torch-peers FAIL $(( $(date +%s) - s )) "cap reached; bench_torch.json holds the shapes done: $(tail -1 "$work/torch.txt" | oneline)"
  else step torch-peers FAIL $(( $(date +%s) - s )) "exit $rc: $(tail -3 "$work/torch.txt" | oneline)"
  fi
else
  step torch-peers SKIP 0 "no python with torch"
fi

# --- compute-sanitizer (last: the slowest, and a cut run still reports what it found) ---------
sanitize memcheck 130 --leak-check full
sanitize racecheck 110

log "total: $(( $(date +%s) - t0 )) s; $( ((failed)) && echo FAILED || echo OK)"
exit "$failed"

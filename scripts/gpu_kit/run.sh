#!/usr/bin/env bash
# GPU kit, step 2 (on the GPU machine, one command, < 10 minutes):
#
#   bash scripts/gpu_kit/run.sh "$OUT"                 # GPU machine: everything must pass
#   bash scripts/gpu_kit/run.sh OUT_DIR --allow-no-gpu # CI guard on a machine without a GPU
#
# The prebuilt binaries need glibc >= the version in gpu-kit/MANIFEST.txt; when they cannot load
# (or DYNLLAVA_KIT_REBUILD=1), they are rebuilt here with nvcc from the tree and gpu-kit/include.
#
# Needs the working tree plus gpu-kit/ (made by scripts/gpu_kit/prepare.sh). Writes at most 8
# files into the output folder:
#   summary.log     one line per step (PASS / FAIL / SKIP, seconds), device, kit manifest
#   device.txt      nvidia-smi and the device properties
#   tests.log       the GPU tests (DYNLLAVA_REQUIRE_GPU=1)
#   memcheck.log    the GPU tests under compute-sanitizer memcheck (with leak check)
#   racecheck.log   the GPU tests under compute-sanitizer racecheck
#   bench_cuda.json Google Benchmark JSON of the CUDA benchmarks
#   bench_torch.json the PyTorch peers on the same shapes, in the same JSON layout
# Exit status: 0 when every step passed (or, with --allow-no-gpu, skipped as expected).
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

log() { echo "$*" | tee -a "$summary"; }
step() {  # step NAME STATUS SECONDS [DETAIL]
  log "$(printf '%-22s %-5s %4ss  %s' "$1" "$2" "$3" "${4:-}")"
  [[ $2 == FAIL ]] && failed=1
  return 0
}

if [[ ! -x $kit/bin/dynllava_gpu_tests ]]; then
  log "run: $kit/bin/dynllava_gpu_tests missing: run scripts/gpu_kit/prepare.sh first and carry gpu-kit"
  exit 2
fi
log "dynllava GPU kit run, $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
sed 's/^/kit: /' "$kit/MANIFEST.txt" >>"$summary"

# --- device -----------------------------------------------------------------------------------
have_gpu=0
{
  echo "### nvidia-smi"
  nvidia-smi 2>&1 || echo "(nvidia-smi not available)"
  echo "### nvidia-smi -q (selected)"
  nvidia-smi -q 2>/dev/null | grep -E "Product Name|Driver Version|CUDA Version|MIG Mode|Current *:|Max Clocks" -A0 || true
} >"$out/device.txt" 2>&1
if nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; fi
log "device: $( (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none) | head -1)"
if (( !have_gpu && !allow_no_gpu )); then
  log "run: no GPU visible and --allow-no-gpu not given"
  failed=1
fi

# --- binaries: prebuilt, or rebuilt here when this machine's glibc is too old -----------------
bin="$kit/bin"
if [[ ${DYNLLAVA_KIT_REBUILD:-0} == 1 ]] || ldd "$bin/dynllava_gpu_tests" 2>&1 | grep -q "not found"; then
  log "run: rebuilding the GPU binaries with this machine's nvcc ($( [[ ${DYNLLAVA_KIT_REBUILD:-0} == 1 ]] && echo 'DYNLLAVA_KIT_REBUILD=1' || ldd "$bin/dynllava_gpu_tests" 2>&1 | grep 'not found' | head -1 | xargs))"
  bin=$(mktemp -d)/bin
  mkdir -p "$bin"
  s=$(date +%s)
  flags=(-std=c++20 -O2 -arch=sm_90 --expt-relaxed-constexpr -DFMT_HEADER_ONLY -DFMT_USE_CONSTEXPR=1
         -I"$root/include" -I"$root/tests" -I"$kit/include")
  if nvcc "${flags[@]}" "$root"/tests/cuda/*.cu -o "$bin/dynllava_gpu_tests" >"$bin/build.log" 2>&1 &&
     nvcc "${flags[@]}" "$root"/bench/cuda/*.cu -o "$bin/dynllava_bench_cuda" -L"$kit/lib" \
       -l:libbenchmark.so.1debian -Xlinker -rpath="$kit/lib" >>"$bin/build.log" 2>&1; then
    step fallback-build PASS $(( $(date +%s) - s ))
  else
    step fallback-build FAIL $(( $(date +%s) - s )) "$(tail -3 "$bin/build.log" | xargs)"
    cp "$bin/build.log" "$out/tests.log"
    exit 1
  fi
fi

# --- GPU tests --------------------------------------------------------------------------------
s=$(date +%s)
DYNLLAVA_REQUIRE_GPU=$(( !allow_no_gpu || have_gpu )) timeout 120 "$bin/dynllava_gpu_tests" >"$out/tests.log" 2>&1
rc=$?
if (( rc == 0 )); then
  step gpu-tests PASS $(( $(date +%s) - s )) "$(grep -E '^\[doctest\] (test cases|assertions)' "$out/tests.log" | xargs)"
elif (( rc == 77 && allow_no_gpu && !have_gpu )); then
  step gpu-tests SKIP $(( $(date +%s) - s )) "exit 77: no device (expected here)"
else
  step gpu-tests FAIL $(( $(date +%s) - s )) "exit $rc; see tests.log"
fi

# --- compute-sanitizer ------------------------------------------------------------------------
sanitize() {  # sanitize TOOL SECONDS EXTRA...
  local tool=$1 cap=$2
  shift 2
  local s=$(date +%s)
  if ! command -v compute-sanitizer >/dev/null 2>&1; then
    echo "compute-sanitizer not available" >"$out/$tool.log"
    if (( have_gpu )); then step "$tool" FAIL 0 "compute-sanitizer not found"; else step "$tool" SKIP 0 "no compute-sanitizer (expected without a GPU)"; fi
    return
  fi
  DYNLLAVA_REQUIRE_GPU=1 timeout "$cap" compute-sanitizer --tool "$tool" --error-exitcode 99 "$@" \
    "$bin/dynllava_gpu_tests" >"$out/$tool.log" 2>&1
  local rc=$?
  local errors
  errors=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$out/$tool.log" | tail -2 | xargs)
  if (( rc == 0 )); then step "$tool" PASS $(( $(date +%s) - s )) "$errors"
  elif (( rc == 124 )); then step "$tool" FAIL "$cap" "timed out after ${cap}s"
  else step "$tool" FAIL $(( $(date +%s) - s )) "exit $rc; $errors"
  fi
}
if (( have_gpu )) || command -v compute-sanitizer >/dev/null 2>&1; then
  sanitize memcheck 180 --leak-check full
  sanitize racecheck 150
else
  echo "no GPU and no compute-sanitizer on this machine" | tee "$out/memcheck.log" >"$out/racecheck.log"
  step memcheck SKIP 0 "no GPU (expected here)"
  step racecheck SKIP 0 "no GPU (expected here)"
fi

# --- benchmarks -------------------------------------------------------------------------------
s=$(date +%s)
timeout 150 "$bin/dynllava_bench_cuda" --benchmark_min_time=0.05 --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_out="$out/bench_cuda.json" \
  --benchmark_out_format=json >"$out/bench_cuda.txt" 2>&1
rc=$?
skipped=$(grep -c "no CUDA device" "$out/bench_cuda.txt" || true)
if (( rc != 0 )); then
  step bench-cuda FAIL $(( $(date +%s) - s )) "exit $rc: $(tail -2 "$out/bench_cuda.txt" | xargs)"
elif (( have_gpu )); then
  if grep -q "error_occurred\": true" "$out/bench_cuda.json"; then
    step bench-cuda FAIL $(( $(date +%s) - s )) "a benchmark reported an error; see bench_cuda.json"
  else
    step bench-cuda PASS $(( $(date +%s) - s )) "$(grep -c '"name"' "$out/bench_cuda.json") results"
  fi
elif (( skipped > 0 )); then
  step bench-cuda SKIP $(( $(date +%s) - s )) "$skipped cases said 'no CUDA device' cleanly"
else
  step bench-cuda FAIL $(( $(date +%s) - s )) "no GPU, but the benchmarks did not say so"
fi
rm -f "$out/bench_cuda.txt"

# --- PyTorch peers ----------------------------------------------------------------------------
s=$(date +%s)
py=$(command -v python3 || command -v python || true)
if [[ -n $py ]] && "$py" -c "import torch" >/dev/null 2>&1; then
  timeout 120 "$py" "$root/bench/torch/peers.py" --out "$out/bench_torch.json" >"$out/torch.txt" 2>&1
  rc=$?
  if (( rc == 0 )); then step torch-peers PASS $(( $(date +%s) - s )) "$(tail -1 "$out/torch.txt")"
  elif (( rc == 77 && !have_gpu )); then step torch-peers SKIP $(( $(date +%s) - s )) "torch without CUDA (expected here)"
  else step torch-peers FAIL $(( $(date +%s) - s )) "exit $rc: $(tail -2 "$out/torch.txt" | xargs)"
  fi
  rm -f "$out/torch.txt"
elif (( have_gpu )); then
  step torch-peers FAIL 0 "python with torch not found"
else
  step torch-peers SKIP 0 "no torch on this machine (expected here)"
fi

log "total: $(( $(date +%s) - t0 )) s; $( ((failed)) && echo FAILED || echo OK)"
exit "$failed"

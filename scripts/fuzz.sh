#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`: clang++-14, ASan + UBSan) and runs each for the
# given number of seconds (default 60) on a copy of its committed corpus (fuzz/corpus/<name>/).
# Fails when any target crashes, leaks, times out or runs out of memory; the reproducer is left
# in build/fuzz/findings/<name>/ (add it to the corpus once fixed).
# Usage: scripts/fuzz.sh [seconds] [target...]   (needs: scripts/setup.sh --with-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
source scripts/env.sh
bash scripts/setup.sh --with-fuzz  # idempotent: clang 14 and libFuzzer
cmake --preset fuzz >/dev/null
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in fuzz/corpus/*/; do targets+=("$(basename "$f")"); done
fi
cmake --build --preset fuzz --target "${targets[@]/#/fuzz_}"
summary=()
failed=0
for t in "${targets[@]}"; do
  work="build/fuzz/work/$t"
  findings="build/fuzz/findings/$t"
  rm -rf "$work" "$findings"
  mkdir -p "$work" "$findings"
  cp -r "fuzz/corpus/$t/." "$work/"
  echo "::: fuzz $t for ${seconds} s"
  start=$(date +%s)
  if ./build/fuzz/fuzz/fuzz_"$t" "$work" -max_total_time="$seconds" -rss_limit_mb=2048 \
       -timeout=10 -print_final_stats=1 -artifact_prefix="$findings/" \
       >"build/fuzz/$t.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "build/fuzz/$t.log" | grep -o '[0-9]*$' || echo "?")
    summary+=("$t: ok, $runs runs in $(( $(date +%s) - start )) s, corpus $(ls "$work" | wc -l) inputs")
  else
    failed=1
    tail -n 40 "build/fuzz/$t.log"
    summary+=("$t: FAILED (log build/fuzz/$t.log, reproducer in $findings/: $(ls "$findings" | head -3 | tr '\n' ' '))")
  fi
done
echo "::: fuzz summary"
printf '  %s\n' "${summary[@]}"
exit "$failed"

#!/usr/bin/env bash
# Formats every C++ file of the project with its .clang-format (clang-format from Debian).
# `--check` changes nothing and fails, listing the files, when one is not formatted (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
command -v clang-format >/dev/null 2>&1 || bash scripts/setup.sh --with-format
mapfile -t files < <(git ls-files '*.hpp' '*.cpp' '*.cuh' '*.cu' '*.h')
if [[ $mode == --check ]]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]})); then
    printf 'not formatted (run bash scripts/format.sh): %s\n' "${bad[@]}" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files follow .clang-format ($(clang-format --version))"
else
  # Twice: clang-format 14 does not always reach its fixpoint in one pass when it regroups
  # includes, and the check above compares against one more pass.
  clang-format -i "${files[@]}"
  clang-format -i "${files[@]}"
fi

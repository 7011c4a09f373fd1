#!/usr/bin/env bash
# Installs everything dynllava builds with from Debian packages (idempotent).
# The CUDA toolkit (nvcc) is optional: without it the CUDA tier is simply not built.
# `--with-report` also installs what the GPU kit's report step needs (matplotlib for Debian's
# /usr/bin/python3); `--with-format` installs clang-format (scripts/format.sh); `--with-fuzz`
# installs clang 14 and its libFuzzer runtime (scripts/fuzz.sh).
set -euo pipefail
packages=(cmake ninja-build g++ libfmt-dev doctest-dev libbenchmark-dev nlohmann-json3-dev libopenblas-dev
          libsentencepiece-dev  # SentencePiece: the LLaVA example's tokenizer only
          libstb-dev zlib1g-dev  # stb_image, zlib: the LLaVA example's image decoding only
          libcli11-dev)  # CLI11: the options of the dynllava-llava program
for opt in "$@"; do
  case $opt in
    --with-report) packages+=(python3-matplotlib) ;;  # the GPU kit's report step
    --with-format) packages+=(clang-format) ;;        # scripts/format.sh
    --with-fuzz) packages+=(clang-14 libclang-rt-14-dev) ;;  # scripts/fuzz.sh
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Headless Chromium for the Figure-6 page's browser test (tests/browser); without its
# recommends it is about 120 MB. The test skips, saying why, where it is missing.
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing chromium (headless browser test)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium \
    >/dev/null
fi
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: note: nvcc is at /usr/local/cuda/bin but not on PATH; the scripts add it"
fi

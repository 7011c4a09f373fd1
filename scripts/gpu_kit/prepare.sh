#!/usr/bin/env bash
# GPU kit, step 1 (on the CPU machine): build everything the GPU machine needs into gpu-kit/
# (git-ignored; it travels with `carry: ["gpu-kit"]`).
#
#   gpu-kit/bin/   dynllava_gpu_tests, dynllava_bench_cuda, dynllava_bench_cpu: sm_90, CUDA runtime
#                  linked statically, libstdc++/libgcc static, fmt header-only, --as-needed.
#                  They need only libc/libm, the NVIDIA driver and (benches) the kit's lib/.
#   gpu-kit/lib/   libbenchmark.so.1debian (Debian ships no static libbenchmark) and, when a
#                  binary calls BLAS (dynllava_bench_cpu: the llama benchmark), Debian's
#                  libopenblas.so.0 with libgfortran.so.5 and libquadmath.so.0; found via RPATH.
#   gpu-kit/include/  fmt, doctest, benchmark and OpenBLAS's cblas.h, for the fallback build on the GPU
#                  machine when its glibc is older than what the prebuilt binaries need.
#   gpu-kit/MANIFEST.txt  commit, date, required glibc, sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
source scripts/env.sh
kit=gpu-kit
rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/lib" "$kit/include"

cmake --preset gpu-kit >/dev/null
cmake --build --preset gpu-kit

cp build/gpu-kit/tests/dynllava_gpu_tests build/gpu-kit/bench/dynllava_bench_cuda \
   build/gpu-kit/bench/dynllava_bench_cpu "$kit/bin/"
cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian "$kit/lib/"
# OpenBLAS (nn/ blocks) and its Fortran runtime, from where the binaries load them here.
blas_libs=(libopenblas.so.0 libgfortran.so.5 libquadmath.so.0)
for b in "$kit"/bin/*; do
  readelf -d "$b" | grep -q 'Shared library: \[libopenblas\.so\.0\]' || continue
  for lib in "${blas_libs[@]}"; do
    [[ -e $kit/lib/$lib ]] && continue
    path=$(ldd "$b" | awk -v l="$lib" '$1 == l { print $3 }')
    [[ -n $path ]] || { echo "prepare: $b needs $lib but ldd cannot find it" >&2; exit 1; }
    cp -L "$path" "$kit/lib/$lib"
  done
done
cp -r /usr/include/fmt /usr/include/doctest /usr/include/benchmark "$kit/include/"
# OpenBLAS's cblas.h (the umbrella headers include nn/blas.hpp) for the fallback build.
cblas_dir=$(dirname "$(realpath /usr/include/x86_64-linux-gnu/cblas.h)")
cp "$cblas_dir/cblas.h" "$cblas_dir/openblas_config.h" "$kit/include/"

# The binaries may need only libc, libm, the loader, the kit's libbenchmark and OpenBLAS, and
# cuBLAS from the GPU machine's CUDA toolkit (run.sh puts its lib64 on LD_LIBRARY_PATH; it is
# far too large to carry); libbenchmark itself needs the GPU machine's libstdc++ (GLIBCXX
# recorded in the manifest) and libgcc_s.
check_needed() {  # check_needed FILE REGEX
  while read -r lib; do
    if ! [[ $lib =~ $2 ]]; then
      echo "prepare: $1 needs $lib, which the GPU machine may not have" >&2
      exit 1
    fi
  done < <(readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
}
for b in "$kit"/bin/*; do
  check_needed "$b" '^(libc\.so\.6|libm\.so\.6|ld-linux-x86-64\.so\.2|libbenchmark\.so\.1debian|libopenblas\.so\.0|libcublas\.so\.13|libcublasLt\.so\.13)$'
done
check_needed "$kit/lib/libbenchmark.so.1debian" '^(libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1)$'
for lib in "${blas_libs[@]}"; do
  [[ -e $kit/lib/$lib ]] || continue
  check_needed "$kit/lib/$lib" '^(libc\.so\.6|libm\.so\.6|ld-linux-x86-64\.so\.2|libgcc_s\.so\.1|libgfortran\.so\.5|libquadmath\.so\.0)$'
done

glibc=$(for b in "$kit"/bin/* "$kit"/lib/*; do objdump -T "$b"; done | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)
{
  echo "dynllava GPU kit"
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- include tests bench || echo ' (+ uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(nvcc --version | tail -1)"
  echo "cuda architectures: 90"
  echo "tree: $(find include tests bench -type f \( -name '*.hpp' -o -name '*.cuh' -o -name '*.cu' -o -name '*.cpp' \) | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
  echo "libbenchmark needs: $(objdump -T "$kit/lib/libbenchmark.so.1debian" | grep -oE 'GLIBCXX_[0-9.]+' | sort -uV | tail -1) (the GPU machine's libstdc++)"
  echo "prebuilt binaries need: ${glibc}"
  du -sh "$kit"/bin/* "$kit"/lib/* | sed 's/^/size: /'
} > "$kit/MANIFEST.txt"
total=$(du -sm "$kit" | cut -f1)
if (( total > 56 )); then
  echo "prepare: $kit is ${total} MiB; the device tool carries at most 64 MiB with the tree" >&2
  exit 1
fi
cat "$kit/MANIFEST.txt"
echo "prepare: ready (${total} MiB). On the GPU machine: bash scripts/gpu_kit/run.sh \"\$OUT\"  (carry: gpu-kit)"

// SPDX-License-Identifier: Apache-2.0
// Prints the OpenBLAS kernels a program runs with after `nn::rerun_with_blas_core` (run by
// tests/unit/test_blas_core.cpp).
#include <dynllava/nn/blas_core.hpp>

#include <cstdio>
#include <cstdlib>

int main(int, char** argv) {
  dynllava::nn::rerun_with_blas_core(argv);
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  std::printf("%s\n%s\n", dynllava::nn::blas_core().c_str(), env != nullptr ? env : "");
  return 0;
}

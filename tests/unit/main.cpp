// SPDX-License-Identifier: Apache-2.0
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <dynllava/nn/blas.hpp>

int main(int argc, char** argv) {
  dynllava::nn::set_blas_threads(1);  // tests measure results, not speed; the machine is shared
  doctest::Context context(argc, argv);
  return context.run();
}

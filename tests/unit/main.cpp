// SPDX-License-Identifier: Apache-2.0
#define DOCTEST_CONFIG_IMPLEMENT
#include <dynllava/nn/blas.hpp>

#include <doctest/doctest.h>

int main(int argc, char** argv) {
  dynllava::nn::set_blas_threads(1);  // tests measure results, not speed; the machine is shared
  doctest::Context context(argc, argv);
  return context.run();
}

// SPDX-License-Identifier: Apache-2.0
#define DOCTEST_CONFIG_IMPLEMENT
#include <dynllava/nn/parallel.hpp>

#include <doctest/doctest.h>

int main(int argc, char** argv) {
  dynllava::nn::set_thread_count(1);  // tests measure results, not speed; the machine is shared
  doctest::Context context(argc, argv);
  return context.run();
}

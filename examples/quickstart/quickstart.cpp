// SPDX-License-Identifier: Apache-2.0
/// @file quickstart.cpp
/// @brief The README's example: budgeted top-k over a ragged batch. Built as a program and, with
/// DYNLLAVA_QUICKSTART_AS_TEST, as a unit test that checks what the README promises.
#include <dynllava/dynllava.hpp>

#include <cmath>
#include <vector>

namespace quickstart {

inline dynllava::host_selection run() {
  // example-begin
  using namespace dynllava;
  // Two sequences with 6 and 4 candidate image tokens, scored by a predictor (logit0 - logit1).
  std::vector<index_t> indptr = {0, 6, 10};
  std::vector<float> scores = {0.1f, 2.0f, -1.0f, 2.0f,     0.5f, NAN,  // sequence 0
                               3.0f, 3.0f, 1.0f,  -INFINITY};           // sequence 1
  host_ragged<const float> batch{make_host_span(indptr), make_host_span(scores)};

  // Keep floor(n * 0.5) tokens of each sequence: 3 and 2.
  host_selection kept = cpu::topk(batch, keep_ratio(0.5));
  // kept.indptr    == {0, 3, 5}
  // kept.positions == {1, 3, 4,  0, 1}: ascending; ties go to the earlier token; NaN ranks last.
  // example-end
  return kept;
}

}  // namespace quickstart

#if defined(DYNLLAVA_QUICKSTART_AS_TEST)
#include <doctest/doctest.h>
TEST_SUITE("cpu") {
  TEST_CASE("quickstart: the README example selects what the README says") {
    const auto kept = quickstart::run();
    CHECK(kept.indptr == std::vector<dynllava::index_t>{0, 3, 5});
    CHECK(kept.positions == std::vector<dynllava::index_t>{1, 3, 4, 0, 1});
  }
}
#else
#include <fmt/ranges.h>
int main() {
  const auto kept = quickstart::run();
  fmt::print("indptr    = {}\npositions = {}\n", kept.indptr, kept.positions);
  return 0;
}
#endif

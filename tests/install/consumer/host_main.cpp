// SPDX-License-Identifier: Apache-2.0
// Uses the installed host tier: top-k over a tiny ragged batch.
#include <dynllava/dynllava.hpp>

#include <cstdio>
#include <vector>

int main() {
  using namespace dynllava;
  const std::vector<index_t> indptr{0, 3};
  const std::vector<float> scores{1.0f, 3.0f, 2.0f};
  const auto kept = cpu::topk({make_host_span(indptr), make_host_span(scores)},
                              topk_budget<host_space>::keep_count(2));
  const bool ok = kept.positions == std::vector<index_t>{1, 2};
  std::printf("consumer_host: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}

// SPDX-License-Identifier: Apache-2.0
// Uses the installed CUDA tier: a gather and a top-k on the device. Exits 77 without a usable
// device. CCCL owns `::cuda`, so after `using namespace dynllava` the CUDA names are spelled
// through an alias (a bare `cuda::` is ambiguous).
#include <dynllava/dynllava.cuh>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

int main() {
  using namespace dynllava;
  namespace dc = dynllava::cuda;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    const char* require = std::getenv("DYNLLAVA_REQUIRE_GPU");
    const bool required = require != nullptr && *require != '\0' && std::strcmp(require, "0") != 0;
    std::printf("consumer_cuda: no CUDA device (%s); compiled and linked, %s\n",
                cudaGetErrorName(status),
                required ? "DYNLLAVA_REQUIRE_GPU is set: failing" : "skipping");
    return required ? 1 : 77;
  }
  dc::device_buffer<float> src(std::vector<float>{1, 2, 3, 4, 5, 6});
  dc::device_buffer<index_t> rows(std::vector<index_t>{2, 0});
  dc::device_buffer<float> dst(4);
  gather_rows(dc::on_stream{}, std::as_const(src).view(), 2, std::as_const(rows).view(),
              dst.view());
  // the best 2 of 6 scores, kept positions ascending
  dc::device_buffer<index_t> indptr(std::vector<index_t>{0, 6});
  dc::device_buffer<index_t> kept_indptr(2), kept(6);
  topk(dc::on_stream{},
       device_ragged<const float>{std::as_const(indptr).view(), std::as_const(src).view()}, 6,
       topk_budget<device_space>::keep_count(2), kept_indptr.view(), kept.view());
  const auto positions = kept.to_host();
  const bool ok = dst.to_host() == std::vector<float>{5, 6, 1, 2} &&
                  kept_indptr.to_host() == std::vector<index_t>{0, 2} && positions[0] == 4 &&
                  positions[1] == 5;
  std::printf("consumer_cuda: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}

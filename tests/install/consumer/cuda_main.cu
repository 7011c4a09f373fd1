// SPDX-License-Identifier: Apache-2.0
// Uses the installed CUDA tier: a gather on the device. Exits 77 without a usable device.
#include <dynllava/dynllava.cuh>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

int main() {
  using namespace dynllava;
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
  cuda::device_buffer<float> src(std::vector<float>{1, 2, 3, 4, 5, 6});
  cuda::device_buffer<index_t> rows(std::vector<index_t>{2, 0});
  cuda::device_buffer<float> dst(4);
  gather_rows(cuda::on_stream{}, std::as_const(src).view(), 2, std::as_const(rows).view(),
              dst.view());
  const bool ok = dst.to_host() == std::vector<float>{5, 6, 1, 2};
  std::printf("consumer_cuda: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}

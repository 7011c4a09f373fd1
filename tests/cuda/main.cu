// SPDX-License-Identifier: Apache-2.0
/// @file main.cu
/// @brief Main of the GPU test binary. Exits 77 (CTest "skipped") when no CUDA device is usable,
/// unless DYNLLAVA_REQUIRE_GPU=1, which turns the skip into a failure. Any device fault during
/// the tests is a failure, never a skip.
#define DOCTEST_CONFIG_IMPLEMENT
#include <dynllava/dynllava.cuh>

#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
  const char* require = std::getenv("DYNLLAVA_REQUIRE_GPU");
  const bool required = require != nullptr && std::strcmp(require, "0") != 0 && *require != '\0';
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    const bool no_device = status == cudaSuccess || dynllava::is_no_device_error(status);
    std::fprintf(stderr, "dynllava_gpu_tests: no usable CUDA device (%s: %s)\n",
                 cudaGetErrorName(status), cudaGetErrorString(status));
    if (!no_device) return 1;  // a broken device or driver is a failure, not a skip
    if (required) {
      std::fprintf(stderr, "dynllava_gpu_tests: DYNLLAVA_REQUIRE_GPU is set: failing\n");
      return 1;
    }
    std::fprintf(stderr, "dynllava_gpu_tests: skipped (exit 77)\n");
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    int driver = 0, runtime = 0;
    (void)cudaDriverGetVersion(&driver);
    (void)cudaRuntimeGetVersion(&runtime);
    std::fprintf(stderr,
                 "dynllava_gpu_tests: device 0: %s (sm_%d%d), %d SMs, %.1f GiB, L2 %d KiB, "
                 "%d-bit bus, driver %d, runtime %d\n",
                 prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                 static_cast<double>(prop.totalGlobalMem) / (1ull << 30), prop.l2CacheSize / 1024,
                 prop.memoryBusWidth, driver, runtime);
  }
  doctest::Context context(argc, argv);
  const int rc = context.run();
  // A sticky device fault must not pass silently.
  const cudaError_t last = cudaDeviceSynchronize();
  if (last != cudaSuccess) {
    std::fprintf(stderr, "dynllava_gpu_tests: device fault: %s\n", cudaGetErrorString(last));
    return 1;
  }
  return rc;
}

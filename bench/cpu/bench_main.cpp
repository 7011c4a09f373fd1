// SPDX-License-Identifier: Apache-2.0
/// @file bench_main.cpp
/// @brief `main` of the CPU benchmarks: reruns with the OpenBLAS kernels that fit the CPU when
/// OpenBLAS chose older ones (`nn::rerun_with_blas_core`), and records in the benchmark context
/// which kernels ran (`blas_core`), so that every result says what it measured.
#include <dynllava/nn/blas_core.hpp>

#include <benchmark/benchmark.h>

#include <string>

int main(int argc, char** argv) {
  dynllava::nn::rerun_with_blas_core(argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("blas_core", dynllava::nn::blas_core());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

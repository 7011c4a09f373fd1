// SPDX-License-Identifier: Apache-2.0
/// @file blas_core.hpp
/// @brief Which kernels OpenBLAS chose for this CPU, and the fix when it chose too old ones.
///
/// Debian's OpenBLAS is built for every x86-64 CPU and picks its kernels when it is loaded, by
/// CPU model. A CPU newer than the OpenBLAS release (Debian 12's 0.3.21 does not know Sapphire
/// Rapids, for example) gets the generic SSE3 kernels ("Prescott"): SGEMMs then run about 4x
/// slower than they could (measured: the LLaMA benchmark's prefill 2.10 s against 0.51 s with
/// the AVX-512 kernels). OpenBLAS reads the environment variable `OPENBLAS_CORETYPE` when it is
/// loaded, so the fix must come before the process starts: `blas_core_advice` names the kernels
/// that fit the CPU's instruction set, and `rerun_with_blas_core` re-executes a program with that
/// variable set.
#pragma once

#include <dynllava/core/config.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <string>
#include <string_view>

#if defined(__linux__)
#include <unistd.h>
#endif

extern "C" {
// Declared by OpenBLAS's cblas.h; repeated so that the dependency on OpenBLAS is explicit.
char* openblas_get_corename(void);
}

namespace dynllava::nn {

/// x86-64 vector instruction levels, in the order OpenBLAS's kernels need them.
enum class vector_isa : int {
  sse = 0,     ///< SSE2/SSE3 only (or not x86-64)
  avx = 1,     ///< AVX (Sandy Bridge)
  avx2 = 2,    ///< AVX2 + FMA (Haswell, Zen)
  avx512 = 3,  ///< AVX-512 F, CD, BW, DQ, VL (Skylake-X and later)
};

/// The instruction level of the CPU this runs on, as the OS enables it.
inline vector_isa cpu_vector_isa() noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return vector_isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return vector_isa::avx2;
  if (__builtin_cpu_supports("avx")) return vector_isa::avx;
#endif
  return vector_isa::sse;
}

/// The name of the kernels OpenBLAS chose (`openblas_get_corename`, e.g. "Haswell", "SkylakeX").
inline std::string blas_core() {
  const char* name = openblas_get_corename();
  return name != nullptr ? std::string(name) : std::string();
}

/// @brief The instruction level an OpenBLAS core name stands for; -1 for a name this table does
/// not know (then no advice is given). Case-insensitive.
inline int blas_core_isa(std::string_view core) noexcept {
  std::string lower(core);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  struct entry {
    std::string_view name;
    int isa;
  };
  static constexpr std::array<entry, 26> table{{
      {"katmai", 0},        {"coppermine", 0},     {"northwood", 0},
      {"prescott", 0},      {"banias", 0},         {"atom", 0},
      {"core2", 0},         {"penryn", 0},         {"dunnington", 0},
      {"nehalem", 0},       {"athlon", 0},         {"opteron", 0},
      {"opteron(sse3)", 0}, {"barcelona", 0},      {"nano", 0},
      {"bobcat", 0},        {"sandybridge", 1},    {"bulldozer", 1},
      {"piledriver", 1},    {"steamroller", 1},    {"haswell", 2},
      {"zen", 2},           {"excavator", 2},      {"skylakex", 3},
      {"cooperlake", 3},    {"sapphirerapids", 3},
  }};
  for (const entry& e : table) {
    if (e.name == lower) return e.isa;
  }
  return -1;
}

/// @brief The `OPENBLAS_CORETYPE` value whose kernels fit a CPU of level `cpu` when OpenBLAS
/// chose `core`; empty when `core` already fits (or is unknown to this table).
inline std::string_view blas_core_advice(std::string_view core, vector_isa cpu) noexcept {
  const int chosen = blas_core_isa(core);
  if (chosen < 0 || chosen >= static_cast<int>(cpu)) return {};
  switch (cpu) {
    case vector_isa::avx512:
      return "SkylakeX";
    case vector_isa::avx2:
      return "Haswell";
    case vector_isa::avx:
      return "Sandybridge";
    case vector_isa::sse:
      return {};
  }
  return {};
}

/// The advice for this process: what OpenBLAS chose against what this CPU has.
inline std::string_view blas_core_advice() {
  return blas_core_advice(blas_core(), cpu_vector_isa());
}

/// @brief For programs, first thing in `main`: when OpenBLAS chose kernels for an older
/// instruction set than the CPU has and `OPENBLAS_CORETYPE` is unset, re-executes the program
/// (`/proc/self/exe`, same arguments and environment) with `OPENBLAS_CORETYPE` set to the
/// advice. Returns normally when there is nothing to do, when the variable is already set (so it
/// runs at most once, and a user's choice wins), off Linux, or when the re-execution fails.
/// @param argv the program's `argv` (null-terminated)
inline void rerun_with_blas_core(char** argv) {
#if defined(__linux__)
  if (argv == nullptr || std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const std::string_view advice = blas_core_advice();
  if (advice.empty()) return;
  if (setenv("OPENBLAS_CORETYPE", std::string(advice).c_str(), 0) != 0) return;
  execv("/proc/self/exe", argv);
  // execv returned: it failed; run on with the kernels OpenBLAS chose (the variable set here
  // does not change them).
#else
  (void)argv;
#endif
}

}  // namespace dynllava::nn

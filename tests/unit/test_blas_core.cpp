// SPDX-License-Identifier: Apache-2.0
// nn/blas_core.hpp: the table of OpenBLAS kernels, the advice, and a program rerun with the
// kernels that fit the CPU.
#include <dynllava/nn/blas_core.hpp>

#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <utility>

using namespace dynllava;

namespace {

/// Runs `command` through the shell; its standard output's two lines (kernels, variable).
std::pair<std::string, std::string> probe(const std::string& command) {
  FILE* p = popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  REQUIRE(pclose(p) == 0);
  const auto nl = out.find('\n');
  REQUIRE(nl != std::string::npos);
  std::string second = out.substr(nl + 1);
  if (!second.empty() && second.back() == '\n') second.pop_back();
  return {out.substr(0, nl), second};
}

}  // namespace

TEST_CASE("blas_core_isa: OpenBLAS's core names, any case; unknown names are -1") {
  CHECK(nn::blas_core_isa("Prescott") == 0);
  CHECK(nn::blas_core_isa("NEHALEM") == 0);
  CHECK(nn::blas_core_isa("Sandybridge") == 1);
  CHECK(nn::blas_core_isa("Haswell") == 2);
  CHECK(nn::blas_core_isa("Zen") == 2);
  CHECK(nn::blas_core_isa("SkylakeX") == 3);
  CHECK(nn::blas_core_isa("cooperlake") == 3);
  CHECK(nn::blas_core_isa("Cortex-A57") == -1);
  CHECK(nn::blas_core_isa("") == -1);
}

TEST_CASE("blas_core_advice: kernels for the CPU's level only when OpenBLAS chose older ones") {
  using nn::vector_isa;
  CHECK(nn::blas_core_advice("Prescott", vector_isa::avx512) == "SkylakeX");
  CHECK(nn::blas_core_advice("Haswell", vector_isa::avx512) == "SkylakeX");
  CHECK(nn::blas_core_advice("Zen", vector_isa::avx512) == "SkylakeX");
  CHECK(nn::blas_core_advice("Prescott", vector_isa::avx2) == "Haswell");
  CHECK(nn::blas_core_advice("Nehalem", vector_isa::avx) == "Sandybridge");
  CHECK(nn::blas_core_advice("Prescott", vector_isa::sse).empty());
  CHECK(nn::blas_core_advice("SkylakeX", vector_isa::avx512).empty());
  CHECK(nn::blas_core_advice("Haswell", vector_isa::avx2).empty());
  CHECK(nn::blas_core_advice("SkylakeX", vector_isa::avx2).empty());  // the user's choice
  CHECK(nn::blas_core_advice("Cortex-A57", vector_isa::avx512).empty());
}

TEST_CASE("blas_core names the kernels of this process") { CHECK_FALSE(nn::blas_core().empty()); }

#if defined(DYNLLAVA_BLAS_CORE_PROBE) && defined(__linux__)
TEST_CASE(
    "rerun_with_blas_core: a program runs with kernels that fit the CPU; a set variable wins") {
  const std::string exe = DYNLLAVA_BLAS_CORE_PROBE;
  const int cpu = static_cast<int>(nn::cpu_vector_isa());
  {
    const auto [core, env] = probe("env -u OPENBLAS_CORETYPE '" + exe + "'");
    INFO("kernels: ", core, ", OPENBLAS_CORETYPE: ", env);
    const int isa = nn::blas_core_isa(core);
    CHECK((isa < 0 || isa >= cpu));
    // Set exactly when the program was rerun, and then to the advice, which OpenBLAS took.
    if (!env.empty()) CHECK(nn::blas_core_isa(env) == nn::blas_core_isa(core));
  }
  if (cpu >= static_cast<int>(nn::vector_isa::avx)) {
    const auto [core, env] = probe("OPENBLAS_CORETYPE=Nehalem '" + exe + "'");
    CHECK(env == "Nehalem");
    CHECK(nn::blas_core_isa(core) == 0);  // not rerun: the user's choice stands
  }
}
#endif

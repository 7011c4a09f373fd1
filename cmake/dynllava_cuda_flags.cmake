# SPDX-License-Identifier: Apache-2.0
# CUDA compile flags every consumer of dynllava::cuda needs, installed with the package.
#  - CMake 3.25 does not know cuda_std_20 for nvcc 13, so the standard is passed by hand
#    (and CMAKE_CXX_STANDARD_REQUIRED must stay off, or every CUDA target fails).
#  - fmt 9.1 needs FMT_USE_CONSTEXPR=1 in nvcc C++20 translation units.
function(dynllava_add_cuda_flags target)
  target_compile_options(${target} INTERFACE
    $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
  target_compile_definitions(${target} INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:FMT_USE_CONSTEXPR=1>)
endfunction()

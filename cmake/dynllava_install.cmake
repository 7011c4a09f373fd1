# SPDX-License-Identifier: Apache-2.0
# Install rules and the package config. Each tier has its own export file; a tier's
# dependencies (BLAS, nlohmann_json, CUDA) are found at the consumer's configure time
# (never baked in from the build machine), so a host-only consumer needs only fmt.
include(CMakePackageConfigHelpers)

set(DYNLLAVA_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/dynllava")

install(TARGETS dynllava EXPORT dynllavaTargets FILE_SET HEADERS)
install(EXPORT dynllavaTargets NAMESPACE dynllava:: DESTINATION "${DYNLLAVA_CMAKE_DIR}")

# One block per tier for the config: load its targets when the tiers it depends on were
# loaded and its package is found.
set(DYNLLAVA_CONFIG_TIERS "")
foreach(tier IN LISTS DYNLLAVA_TIERS)
  install(TARGETS dynllava_${tier} EXPORT dynllava_${tier}_targets FILE_SET HEADERS)
  install(EXPORT dynllava_${tier}_targets NAMESPACE dynllava:: FILE dynllava_${tier}_targets.cmake
          DESTINATION "${DYNLLAVA_CMAKE_DIR}")
  set(_found "")
  foreach(d IN LISTS DYNLLAVA_TIER_${tier}_DEPENDS)
    string(APPEND _found " AND dynllava_${d}_FOUND")
  endforeach()
  list(GET DYNLLAVA_TIER_${tier}_PACKAGE 0 _package)
  list(JOIN DYNLLAVA_TIER_${tier}_PACKAGE " " _package_args)
  string(APPEND DYNLLAVA_CONFIG_TIERS
    "set(dynllava_${tier}_FOUND FALSE)\n"
    "if(TRUE${_found})\n"
    "  find_package(${_package_args} QUIET)\n"
    "  if(${_package}_FOUND)\n"
    "    include(\"\${CMAKE_CURRENT_LIST_DIR}/dynllava_${tier}_targets.cmake\")\n"
    "    set(dynllava_${tier}_FOUND TRUE)\n"
    "  endif()\n"
    "endif()\n")
endforeach()

if(TARGET dynllava_cuda)
  install(TARGETS dynllava_cuda EXPORT dynllavaCudaTargets FILE_SET cuda_headers)
  install(EXPORT dynllavaCudaTargets NAMESPACE dynllava:: DESTINATION "${DYNLLAVA_CMAKE_DIR}")
endif()

configure_package_config_file(cmake/dynllavaConfig.cmake.in
  "${PROJECT_BINARY_DIR}/dynllavaConfig.cmake" INSTALL_DESTINATION "${DYNLLAVA_CMAKE_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/dynllavaConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/dynllavaConfig.cmake"
              "${PROJECT_BINARY_DIR}/dynllavaConfigVersion.cmake"
        DESTINATION "${DYNLLAVA_CMAKE_DIR}")

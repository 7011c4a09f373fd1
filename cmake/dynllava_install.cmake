# SPDX-License-Identifier: Apache-2.0
# Install rules and the package config. CUDA dependencies are found at the consumer's
# configure time (find_dependency), never baked in from the build machine.
include(CMakePackageConfigHelpers)

set(DYNLLAVA_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/dynllava")

install(TARGETS dynllava EXPORT dynllavaTargets FILE_SET HEADERS)
install(EXPORT dynllavaTargets NAMESPACE dynllava:: DESTINATION "${DYNLLAVA_CMAKE_DIR}")

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

# SPDX-License-Identifier: Apache-2.0
# Header tiers: INTERFACE targets that each hold the headers needing one more dependency.
#
#   dynllava_header_tier(<name> PACKAGE <find_package args> LINK <targets> [DEPENDS <tiers>]
#                        MARKER <regex> HEADERS <patterns>)
#
# finds the package (REQUIRED), and makes target `dynllava_<name>` (`dynllava::<name>`, exported
# as `<name>`) linking `dynllava::dynllava`, the tiers in DEPENDS and LINK. HEADERS are
# GLOB_RECURSE patterns relative to include/dynllava (`nn/*.hpp`, `score/x.hpp`); the headers
# they match leave the host tier. MARKER matches the package's own header paths: the test
# header_tiers_are_separate fails when a header of another tier reaches one. Tiers are declared
# in dependency order, then dynllava_finish_tiers() gives the host tier every unclaimed `.hpp`.
#
# For the tests, the install rules and the package config it sets:
#   DYNLLAVA_TIERS                 the tier names, in order
#   DYNLLAVA_TIER_<name>_HPP       the tier's headers (absolute paths); <name> `host` included
#   DYNLLAVA_TIER_<name>_PATTERNS, _MARKER, _DEPENDS, _PACKAGE
set(DYNLLAVA_TIERS "")
file(GLOB_RECURSE DYNLLAVA_TIER_host_HPP CONFIGURE_DEPENDS
     "${PROJECT_SOURCE_DIR}/include/dynllava/*.hpp")

function(dynllava_header_tier name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "MARKER" "PACKAGE;LINK;DEPENDS;HEADERS")
  find_package(${arg_PACKAGE} REQUIRED)
  set(hpp "")
  foreach(p IN LISTS arg_HEADERS)
    file(GLOB_RECURSE found CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/dynllava/${p}")
    list(APPEND hpp ${found})
  endforeach()
  list(REMOVE_DUPLICATES hpp)
  set(host ${DYNLLAVA_TIER_host_HPP})
  list(REMOVE_ITEM host ${hpp})

  add_library(dynllava_${name} INTERFACE)
  add_library(dynllava::${name} ALIAS dynllava_${name})
  set_target_properties(dynllava_${name} PROPERTIES EXPORT_NAME ${name})
  target_sources(dynllava_${name} INTERFACE FILE_SET HEADERS BASE_DIRS include FILES ${hpp})
  list(TRANSFORM arg_DEPENDS PREPEND dynllava_ OUTPUT_VARIABLE deps)
  target_link_libraries(dynllava_${name} INTERFACE dynllava ${deps} ${arg_LINK})

  set(DYNLLAVA_TIER_host_HPP ${host} PARENT_SCOPE)
  set(DYNLLAVA_TIER_${name}_HPP ${hpp} PARENT_SCOPE)
  set(DYNLLAVA_TIER_${name}_PATTERNS ${arg_HEADERS} PARENT_SCOPE)
  set(DYNLLAVA_TIER_${name}_MARKER "${arg_MARKER}" PARENT_SCOPE)
  set(DYNLLAVA_TIER_${name}_DEPENDS ${arg_DEPENDS} PARENT_SCOPE)
  set(DYNLLAVA_TIER_${name}_PACKAGE ${arg_PACKAGE} PARENT_SCOPE)
  set(DYNLLAVA_TIERS ${DYNLLAVA_TIERS} ${name} PARENT_SCOPE)
endfunction()

# Gives the host tier (dynllava::dynllava) its headers: every .hpp no other tier claimed.
function(dynllava_finish_tiers)
  target_sources(dynllava INTERFACE FILE_SET HEADERS BASE_DIRS include
                 FILES ${DYNLLAVA_TIER_host_HPP})
endfunction()

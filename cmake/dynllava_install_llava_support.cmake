# SPDX-License-Identifier: Apache-2.0
# Installs dynllava::llava_support, the LLaVA example's support library (tokenizer, conversation,
# prompt tokens, images, CLIP preprocessing), for find_package(dynllava) consumers: the static
# library, the headers of its sources under include/dynllava/llava/ (included as <tokenizer.hpp>,
# as in the build tree, or <dynllava/llava/tokenizer.hpp>), and its own export file, which the
# package config loads when the io tier, SentencePiece and zlib are found (component
# llava_support). Included from examples/llava/CMakeLists.txt once the target exists.
set(_llava_include "${CMAKE_INSTALL_INCLUDEDIR}/dynllava/llava")
set_target_properties(dynllava_llava_support PROPERTIES EXPORT_NAME llava_support)
target_include_directories(dynllava_llava_support INTERFACE
                           "$<INSTALL_INTERFACE:${_llava_include}>")
# The public headers: those of the library's own sources.
get_target_property(_llava_sources dynllava_llava_support SOURCES)
set(_llava_headers "")
foreach(src IN LISTS _llava_sources)
  get_filename_component(_stem "${src}" NAME_WE)
  if(EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${_stem}.hpp")
    list(APPEND _llava_headers "${CMAKE_CURRENT_SOURCE_DIR}/${_stem}.hpp")
  endif()
endforeach()
list(REMOVE_DUPLICATES _llava_headers)
install(FILES ${_llava_headers} DESTINATION "${_llava_include}")
install(TARGETS dynllava_llava_support EXPORT dynllava_llava_support_targets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(EXPORT dynllava_llava_support_targets NAMESPACE dynllava::
        FILE dynllava_llava_support_targets.cmake DESTINATION "${DYNLLAVA_CMAKE_DIR}")
unset(_llava_include)
unset(_llava_sources)
unset(_llava_headers)

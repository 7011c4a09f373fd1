# SPDX-License-Identifier: Apache-2.0
# The README's code example must be, line for line, the part of the compiled quickstart between
# "// example-begin" and "// example-end". Usage: cmake -DREADME=... -DSOURCE=... -P <this>
file(READ "${SOURCE}" src)
string(REGEX MATCH "// example-begin[^\n]*\n(.*)// example-end" _ "${src}")
set(snippet "${CMAKE_MATCH_1}")
if(snippet STREQUAL "")
  message(FATAL_ERROR "${SOURCE}: no example-begin/example-end block")
endif()
file(READ "${README}" readme)
string(FIND "${readme}" "${snippet}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not contain the quickstart example of ${SOURCE} verbatim; "
                      "copy the block between example-begin and example-end into README.md")
endif()
message(STATUS "README.md example matches ${SOURCE}")

# SPDX-License-Identifier: Apache-2.0
# Runs TOOL with ARGS (comma-separated) and passes when it exits 0, its standard output matches
# the regular expression EXPECTED, and (when FILE and REFERENCE are given) FILE, written by the
# tool, is byte-identical to REFERENCE.
string(REPLACE "," ";" _args "${ARGS}")
execute_process(COMMAND "${TOOL}" ${_args} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out
                ERROR_VARIABLE _err)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "exit status ${_rc}; error output:\n${_err}")
endif()
if(NOT _out MATCHES "${EXPECTED}")
  message(FATAL_ERROR "the output does not match '${EXPECTED}':\n${_out}")
endif()
if(DEFINED FILE)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${FILE}" "${REFERENCE}"
                  RESULT_VARIABLE _diff)
  if(NOT _diff EQUAL 0)
    message(FATAL_ERROR "${FILE} differs from ${REFERENCE}")
  endif()
endif()
message(STATUS "${_out}")

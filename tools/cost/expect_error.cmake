# SPDX-License-Identifier: Apache-2.0
# Runs TOOL with ARGS (comma-separated) and passes when it exits nonzero and its standard error
# contains EXPECTED (plain text, not a regex).
string(REPLACE "," ";" _args "${ARGS}")
execute_process(COMMAND "${TOOL}" ${_args} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out
                ERROR_VARIABLE _err)
if(_rc EQUAL 0)
  message(FATAL_ERROR "expected a failure, got exit status 0; output:\n${_out}")
endif()
string(FIND "${_err}" "${EXPECTED}" _at)
if(_at EQUAL -1)
  message(FATAL_ERROR "exit status ${_rc}, but the error does not contain '${EXPECTED}':\n${_err}")
endif()
message(STATUS "exit status ${_rc}: ${_err}")

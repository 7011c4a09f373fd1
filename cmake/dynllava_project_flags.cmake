# SPDX-License-Identifier: Apache-2.0
# Flags for the project's own binaries (tests, examples, benchmarks); not part of the package.
set(DYNLLAVA_WARNINGS -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Werror)
set(DYNLLAVA_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all
    -fno-omit-frame-pointer)

# Warnings as errors for host code, plus ASan/UBSan when DYNLLAVA_SANITIZE is on.
function(dynllava_host_target target)
  target_compile_options(${target} PRIVATE ${DYNLLAVA_WARNINGS})
  if(DYNLLAVA_SANITIZE)
    target_compile_options(${target} PRIVATE ${DYNLLAVA_SANITIZER_FLAGS})
    target_link_options(${target} PRIVATE ${DYNLLAVA_SANITIZER_FLAGS})
  endif()
endfunction()

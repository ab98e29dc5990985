# Builds TARGET in BUILD_DIR and checks the outcome (run by CTest with cmake -P).
#   EXPECT_SUCCESS=ON: the build must succeed.
#   otherwise: the build must fail with exactly one compiler error, and the output must match
#   EXPECT_TYPE (the message's class template, naming the offending type) and EXPECT_MESSAGE.
foreach(var BUILD_DIR TARGET)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_build.cmake: ${var} is not set")
  endif()
endforeach()

execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)

if(EXPECT_SUCCESS)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${TARGET} should compile but did not:\n${out}")
  endif()
  return()
endif()

if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but the codec should have refused its type")
endif()
# Count the markers, not whole lines: a message may hold ';', which CMake lists split on.
string(REGEX MATCHALL ": error: " errors "${out}")
list(LENGTH errors count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "${TARGET}: expected exactly one compiler error, got ${count}:\n${out}")
endif()
if(NOT out MATCHES "${EXPECT_TYPE}")
  message(FATAL_ERROR "${TARGET}: the output does not name `${EXPECT_TYPE}`:\n${out}")
endif()
if(NOT out MATCHES "${EXPECT_MESSAGE}")
  message(FATAL_ERROR "${TARGET}: the output lacks the message `${EXPECT_MESSAGE}`:\n${out}")
endif()
message(STATUS "${TARGET}: refused as expected")

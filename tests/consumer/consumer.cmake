# Included by every consumer project once flock::flock exists: the consumer program and its one
# test, plus flock_consumer_check_dependency() for the projects that build flock as a subproject.
if(NOT TARGET flock::flock)
  message(FATAL_ERROR "flock::flock is not defined")
endif()

# flock imposes no warning flag on its users (above all no -Werror: a new compiler's new warning must
# not break a user's build), whatever options flock itself was built with.
get_target_property(flock_consumer_options flock::flock INTERFACE_COMPILE_OPTIONS)
if(flock_consumer_options MATCHES "-W")
  message(FATAL_ERROR "flock::flock imposes warning flags on its users: ${flock_consumer_options}")
endif()

enable_testing()
add_executable(flock_consumer ${CMAKE_CURRENT_LIST_DIR}/main.cpp)
target_link_libraries(flock_consumer PRIVATE flock::flock)
add_test(NAME flock_consumer COMMAND flock_consumer)
if(FLOCK_CONSUMER_PCH)
  # What the README shows to cut each source's compile time: flock's header precompiled once.
  target_precompile_headers(flock_consumer PRIVATE <flock/flock.hpp>)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # g++ silently parses the header again when it cannot use the precompiled one: an error here.
    target_compile_options(flock_consumer PRIVATE -Winvalid-pch -Werror=invalid-pch)
  endif()
endif()

# flock_consumer_check_dependency(<flock source dir>): flock, pulled in as a dependency, defines
# nothing but its library targets (flock, and the optional flock_sqlite, flock_postgres): no tests,
# examples, benchmarks, nor flock_warnings. It registers no test, and leaves its test, example,
# bench, install and -Werror options off.
function(flock_consumer_check_dependency dir)
  set(targets "")
  set(tests "")
  set(pending "${dir}")
  while(pending)
    list(POP_FRONT pending d)
    get_property(t DIRECTORY "${d}" PROPERTY BUILDSYSTEM_TARGETS)
    get_property(n DIRECTORY "${d}" PROPERTY TESTS)
    get_property(sub DIRECTORY "${d}" PROPERTY SUBDIRECTORIES)
    list(APPEND targets ${t})
    list(APPEND tests ${n})
    list(APPEND pending ${sub})
  endwhile()
  foreach(target ${targets})
    get_target_property(type ${target} TYPE)
    if(NOT type STREQUAL "INTERFACE_LIBRARY" OR target STREQUAL "flock_warnings")
      message(FATAL_ERROR "flock as a dependency defined the target '${target}' (${type}); "
                          "expected only its libraries")
    endif()
  endforeach()
  if(NOT "flock" IN_LIST targets)
    message(FATAL_ERROR "flock as a dependency did not define its target 'flock'")
  endif()
  if(tests)
    message(FATAL_ERROR "flock as a dependency registered the tests '${tests}'")
  endif()
  foreach(option FLOCK_BUILD_TESTS FLOCK_BUILD_EXAMPLES FLOCK_BUILD_BENCH FLOCK_INSTALL FLOCK_WERROR)
    if(${option})
      message(FATAL_ERROR "${option} is ON for flock as a dependency, expected OFF by default")
    endif()
  endforeach()
  message(STATUS "flock as a dependency: targets '${targets}', no tests")
endfunction()

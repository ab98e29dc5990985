# Driver of one consumer test (cmake -P), registered by tests/consumer/CMakeLists.txt:
#
#   cmake -DMODE=<mode> -DSOURCE_DIR=<flock checkout> -DWORK_DIR=<scratch dir, wiped>
#         -DOUTER_BINARY_DIR=<flock's build dir> -DGENERATOR=<generator> [-DMAKE_PROGRAM=<ninja>]
#         -DCXX_COMPILER=<c++> [-Dfmt_DIR=<dir>] -DVERSION=<flock version> -DCTEST=<ctest>
#         [-DCOMPONENTS=<optional components built by the outer build, comma-separated>]
#         -P run.cmake
#
# Modes:
#   add_subdirectory  consumer project add_subdirectory(<checkout>)
#   fetchcontent      consumer project FetchContent_Declare(flock SOURCE_DIR <checkout>)
#   find_package      install flock into a fresh prefix, move the prefix (relocatable?), then
#                     find_package(flock CONFIG REQUIRED) from a consumer project
#   find_package_engine  the same with -DFLOCK_ENGINE=ON, the consumer linking flock::engine
#   vcpkg_port        run ports/flock/portfile.cmake with vcpkg_shim.cmake, lay the package out as
#                     vcpkg does (<root>/installed/x64-linux) and find_package it from there
#   install_off       -DFLOCK_INSTALL=OFF: cmake --install installs nothing
#   precompiled_header  add_subdirectory, the consumer precompiling <flock/flock.hpp>
#                     (target_precompile_headers, as the README shows), with an unusable
#                     precompiled header an error
#
# Every consumer is built and tested with `ctest --build-and-test`: its one test runs the program
# of main.cpp, which must print the squares of 1..10 and exit 0, and `ctest -N` must list that
# test alone. Installed trees are searched for absolute paths of this machine.
cmake_minimum_required(VERSION 3.21)

foreach(var MODE SOURCE_DIR WORK_DIR OUTER_BINARY_DIR GENERATOR CXX_COMPILER VERSION CTEST)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()

set(here ${CMAKE_CURRENT_LIST_DIR})
string(REPLACE "," ";" components "${COMPONENTS}")
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# Same generator, compiler and fmt as the outer build. Debug: the consumers need no optimization,
# and a multi-config generator is given the same configuration at build and test time.
set(config Debug)
set(flock_common_options -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
if(MAKE_PROGRAM)
  list(APPEND flock_common_options -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(fmt_DIR)
  list(APPEND flock_common_options -Dfmt_DIR=${fmt_DIR})
endif()
set(generator_options -G ${GENERATOR})

# flock_run(<what> <command>...): runs the command, stops the test with its output if it fails;
# the output (stdout and stderr) is left in flock_run_output.
function(flock_run what)
  message(STATUS "${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " cmd)
    message(FATAL_ERROR "${what} failed (${rc}):\n${cmd}\n${out}")
  endif()
  set(flock_run_output "${out}" PARENT_SCOPE)
endfunction()

# install_flock(<build dir> <prefix> [cmake options...]): configures flock as vcpkg's port does
# (tests, examples and benchmarks off), builds it and installs it into <prefix>.
function(install_flock build prefix)
  flock_run("configuring flock in ${build}" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${build}
            ${generator_options} ${flock_common_options} -DCMAKE_BUILD_TYPE=${config}
            -DFLOCK_BUILD_TESTS=OFF -DFLOCK_BUILD_EXAMPLES=OFF -DFLOCK_BUILD_BENCH=OFF ${ARGN})
  flock_run("building flock" ${CMAKE_COMMAND} --build ${build} --config ${config})
  flock_run("installing flock into ${prefix}" ${CMAKE_COMMAND} --install ${build} --config ${config}
            --prefix ${prefix})
endfunction()

# check_no_machine_paths(<tree>): no file of <tree> names the checkout, the build directories or
# the install prefix; an installed package must be relocatable.
function(check_no_machine_paths tree)
  set(paths ${SOURCE_DIR} ${OUTER_BINARY_DIR} ${WORK_DIR})
  foreach(p ${SOURCE_DIR} ${OUTER_BINARY_DIR} ${WORK_DIR})
    file(REAL_PATH "${p}" real)
    list(APPEND paths "${real}")
  endforeach()
  list(REMOVE_DUPLICATES paths)
  file(GLOB_RECURSE files "${tree}/*")
  if(NOT files)
    message(FATAL_ERROR "nothing installed in ${tree}")
  endif()
  foreach(f ${files})
    file(READ "${f}" content)
    foreach(p ${paths})
      string(FIND "${content}" "${p}" at)
      if(at GREATER_EQUAL 0)
        message(FATAL_ERROR "installed file ${f} contains the build machine path ${p}")
      endif()
    endforeach()
  endforeach()
  list(LENGTH files n)
  message(STATUS "no absolute path of this machine in the ${n} files of ${tree}")
endfunction()

# check_package(<prefix> [<optional component>...]): the headers and the CMake package are where
# users and vcpkg expect them, with exactly the optional components given, and the version file
# accepts consumers of any pointer size (ARCH_INDEPENDENT).
function(check_package prefix)
  foreach(component sqlite postgres mpi)
    set(file "${prefix}/share/flock/flock-${component}-targets.cmake")
    if(component IN_LIST ARGN AND NOT EXISTS "${file}")
      message(FATAL_ERROR "the optional component ${component} was built but not installed")
    elseif(NOT component IN_LIST ARGN AND EXISTS "${file}")
      message(FATAL_ERROR "the optional component ${component} was installed but not expected")
    elseif(component IN_LIST ARGN)
      message(STATUS "optional component ${component}: installed")
    else()
      message(STATUS "optional component ${component}: not installed, as expected")
    endif()
  endforeach()
  foreach(f include/flock/flock.hpp share/flock/flock-config.cmake
            share/flock/flock-config-version.cmake share/flock/flock-targets.cmake)
    if(NOT EXISTS "${prefix}/${f}")
      message(FATAL_ERROR "${prefix}/${f} was not installed")
    endif()
  endforeach()
  file(GLOB_RECURSE stray RELATIVE "${prefix}" "${prefix}/lib/*" "${prefix}/bin/*")
  if(stray)
    message(FATAL_ERROR "a header-only install put files in lib/ or bin/: ${stray}")
  endif()
  # What find_package(flock <VERSION>) does with the version file, asked by a 32-bit project.
  set(PACKAGE_FIND_NAME flock)
  set(PACKAGE_FIND_VERSION ${VERSION})
  string(REGEX MATCH "^[0-9]+" PACKAGE_FIND_VERSION_MAJOR "${VERSION}")
  set(CMAKE_SIZEOF_VOID_P 4)
  include("${prefix}/share/flock/flock-config-version.cmake")
  if(NOT PACKAGE_VERSION_COMPATIBLE OR PACKAGE_VERSION_UNSUITABLE OR NOT PACKAGE_VERSION STREQUAL VERSION)
    message(FATAL_ERROR "flock-config-version.cmake (version '${PACKAGE_VERSION}') rejects a "
                        "32-bit consumer asking for ${VERSION}: is it ARCH_INDEPENDENT?")
  endif()
endfunction()

# consume(<project> <binary dir> [cmake options...]): builds tests/consumer/<project> with
# ctest --build-and-test, runs its test, checks the program's output and that ctest -N lists
# only the consumer's test.
function(consume project bin)
  set(build_and_test ${CTEST} --build-and-test ${here}/${project} ${bin} --build-generator ${GENERATOR})
  if(MAKE_PROGRAM)
    list(APPEND build_and_test --build-makeprogram ${MAKE_PROGRAM})
  endif()
  flock_run("ctest --build-and-test ${project}" ${build_and_test} --build-project flock_consumer_${project}
            --build-config ${config} --build-options ${flock_common_options} -DCMAKE_BUILD_TYPE=${config} ${ARGN}
            --test-command ${CTEST} -C ${config} --output-on-failure -V)
  set(expected "flock consumer: [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]")
  string(FIND "${flock_run_output}" "${expected}" at)
  if(at LESS 0 OR NOT flock_run_output MATCHES "100% tests passed, 0 tests failed out of 1")
    message(FATAL_ERROR "the consumer's test did not print '${expected}' and pass:\n${flock_run_output}")
  endif()
  message(STATUS "the consumer's test passed and printed '${expected}'")

  execute_process(COMMAND ${CTEST} -N -C ${config} WORKING_DIRECTORY ${bin} OUTPUT_VARIABLE listed)
  if(NOT listed MATCHES "Test +#1: flock_consumer\n" OR NOT listed MATCHES "Total Tests: 1\n")
    message(FATAL_ERROR "ctest -N in the consumer should list its test alone:\n${listed}")
  endif()
  message(STATUS "ctest -N lists the consumer's test alone")
  # The targets built (each compiled target has a <name>.dir): only the consumer's program.
  # FetchContent's own sub-build (_deps/flock-subbuild, flock-populate) is not flock's.
  file(GLOB_RECURSE built LIST_DIRECTORIES true RELATIVE ${bin} "${bin}/*.dir")
  list(FILTER built INCLUDE REGEX "CMakeFiles/[^/]+\\.dir$")
  list(FILTER built EXCLUDE REGEX "^_deps/[^/]+-subbuild/")
  list(TRANSFORM built REPLACE ".*/([^/]+)\\.dir$" "\\1")
  if(NOT built STREQUAL "flock_consumer")
    message(FATAL_ERROR "built the targets '${built}', expected only flock_consumer")
  endif()
endfunction()

if(MODE STREQUAL "add_subdirectory" OR MODE STREQUAL "fetchcontent")
  consume(${MODE} ${WORK_DIR}/consumer -DFLOCK_SOURCE_DIR=${SOURCE_DIR})
  # As a dependency, FLOCK_INSTALL is off: installing the consumer installs nothing of flock.
  flock_run("installing the consumer project" ${CMAKE_COMMAND} --install ${WORK_DIR}/consumer
            --config ${config} --prefix ${WORK_DIR}/prefix)
  file(GLOB_RECURSE installed "${WORK_DIR}/prefix/*")
  if(installed)
    message(FATAL_ERROR "flock as a dependency installed files: ${installed}")
  endif()

elseif(MODE STREQUAL "precompiled_header")
  consume(add_subdirectory ${WORK_DIR}/consumer -DFLOCK_SOURCE_DIR=${SOURCE_DIR} -DFLOCK_CONSUMER_PCH=ON)
  # The header was precompiled, and the consumer's source compiled with it (consumer.cmake makes
  # a precompiled header that the compiler cannot use an error).
  file(GLOB_RECURSE pch "${WORK_DIR}/consumer/*cmake_pch.hxx.gch" "${WORK_DIR}/consumer/*cmake_pch.hxx.pch")
  if(NOT pch)
    message(FATAL_ERROR "no precompiled header was built in ${WORK_DIR}/consumer")
  endif()
  file(READ "${WORK_DIR}/consumer/CMakeFiles/flock_consumer.dir/cmake_pch.hxx" pch_source)
  if(NOT pch_source MATCHES "#include <flock/flock.hpp>")
    message(FATAL_ERROR "the precompiled header does not include <flock/flock.hpp>:\n${pch_source}")
  endif()
  message(STATUS "the consumer was compiled with <flock/flock.hpp> precompiled: ${pch}")

elseif(MODE STREQUAL "find_package")
  foreach(component sqlite postgres mpi)
    if(NOT component IN_LIST components)
      message(STATUS "flock: flock_${component} is not built here (its library was not found), "
                     "skipping its install and find_package test")
    endif()
  endforeach()
  install_flock(${WORK_DIR}/flock-build ${WORK_DIR}/stage)
  check_package(${WORK_DIR}/stage ${components})
  check_no_machine_paths(${WORK_DIR}/stage)
  # Use the install from elsewhere, with its build tree gone: the package must not depend on either.
  file(RENAME ${WORK_DIR}/stage ${WORK_DIR}/prefix)
  file(REMOVE_RECURSE ${WORK_DIR}/flock-build)
  consume(find_package ${WORK_DIR}/consumer -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
          -DFLOCK_EXPECTED_PREFIX=${WORK_DIR}/prefix -DFLOCK_EXPECTED_VERSION=${VERSION}
          -DFLOCK_EXPECTED_COMPONENTS=${COMPONENTS})

elseif(MODE STREQUAL "find_package_engine")
  # -DFLOCK_ENGINE=ON installs the compiled engine too; a consumer asks for it as a component and
  # links flock::engine, which must carry the library and FLOCK_COMPILED_ENGINE with it.
  install_flock(${WORK_DIR}/flock-build ${WORK_DIR}/stage -DFLOCK_ENGINE=ON)
  foreach(f lib/libflock_engine.a share/flock/flock-engine-targets.cmake)
    if(NOT EXISTS "${WORK_DIR}/stage/${f}")
      message(FATAL_ERROR "-DFLOCK_ENGINE=ON did not install ${f}")
    endif()
  endforeach()
  check_no_machine_paths(${WORK_DIR}/stage)
  file(RENAME ${WORK_DIR}/stage ${WORK_DIR}/prefix)
  file(REMOVE_RECURSE ${WORK_DIR}/flock-build)
  consume(find_package ${WORK_DIR}/consumer -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
          -DFLOCK_EXPECTED_PREFIX=${WORK_DIR}/prefix -DFLOCK_EXPECTED_VERSION=${VERSION}
          -DFLOCK_EXPECTED_COMPONENTS=engine)

elseif(MODE STREQUAL "vcpkg_port")
  set(port_dir ${SOURCE_DIR}/ports/flock)
  foreach(f vcpkg.json portfile.cmake usage)
    if(NOT EXISTS ${port_dir}/${f})
      message(FATAL_ERROR "${port_dir}/${f} is missing")
    endif()
  endforeach()
  # The manifest: same version as project(), Linux-like systems only, depends on fmt.
  file(READ ${port_dir}/vcpkg.json manifest)
  string(JSON name GET "${manifest}" name)
  string(JSON port_version GET "${manifest}" version)
  string(JSON supports GET "${manifest}" supports)
  string(JSON deps GET "${manifest}" dependencies)
  if(NOT name STREQUAL "flock" OR NOT port_version STREQUAL VERSION OR NOT supports STREQUAL "linux"
     OR NOT deps MATCHES "\"fmt\"")
    message(FATAL_ERROR "ports/flock/vcpkg.json: expected name flock, version ${VERSION}, supports "
                        "linux and a dependency on fmt; got ${name} ${port_version} '${supports}' ${deps}")
  endif()

  # vcpkg builds the port into packages/<port>_<triplet>, then copies that into installed/<triplet>.
  set(root ${WORK_DIR}/vcpkg)
  set(PORT flock)
  set(TARGET_TRIPLET x64-linux)
  set(CURRENT_PORT_DIR ${port_dir})
  set(CURRENT_PACKAGES_DIR ${root}/packages/${PORT}_${TARGET_TRIPLET})
  set(CURRENT_BUILDTREES_DIR ${root}/buildtrees/${PORT})
  set(CURRENT_INSTALLED_DIR ${root}/installed/${TARGET_TRIPLET})
  # `vcpkg install flock`: no optional feature, so no optional component even where SQLite or
  # libpq is on the system.
  set(FEATURES core)
  include(${here}/vcpkg_shim.cmake)
  message(STATUS "running ${port_dir}/portfile.cmake")
  include(${port_dir}/portfile.cmake)

  check_package(${CURRENT_PACKAGES_DIR}) # no features, no components
  foreach(f share/flock/usage share/flock/copyright)
    if(NOT EXISTS ${CURRENT_PACKAGES_DIR}/${f})
      message(FATAL_ERROR "the port did not install ${f}")
    endif()
  endforeach()
  file(READ ${SOURCE_DIR}/LICENSE license)
  file(READ ${CURRENT_PACKAGES_DIR}/share/flock/copyright copyright)
  if(NOT license STREQUAL copyright)
    message(FATAL_ERROR "share/flock/copyright is not the LICENSE")
  endif()
  if(EXISTS ${CURRENT_PACKAGES_DIR}/debug)
    message(FATAL_ERROR "the port left a debug/ directory")
  endif()
  check_no_machine_paths(${CURRENT_PACKAGES_DIR})

  file(COPY ${CURRENT_PACKAGES_DIR}/ DESTINATION ${CURRENT_INSTALLED_DIR})
  file(REMOVE_RECURSE ${CURRENT_PACKAGES_DIR} ${CURRENT_BUILDTREES_DIR})
  # fmt comes from the system here, as vcpkg's own fmt would come from the same prefix.
  consume(find_package ${WORK_DIR}/consumer -DCMAKE_PREFIX_PATH=${CURRENT_INSTALLED_DIR}
          -DFLOCK_EXPECTED_PREFIX=${CURRENT_INSTALLED_DIR} -DFLOCK_EXPECTED_VERSION=${VERSION})

elseif(MODE STREQUAL "install_off")
  install_flock(${WORK_DIR}/flock-build ${WORK_DIR}/prefix -DFLOCK_INSTALL=OFF)
  file(GLOB_RECURSE installed "${WORK_DIR}/prefix/*")
  if(installed)
    message(FATAL_ERROR "-DFLOCK_INSTALL=OFF still installed: ${installed}")
  endif()
  message(STATUS "-DFLOCK_INSTALL=OFF installs nothing")

else()
  message(FATAL_ERROR "run.cmake: unknown MODE '${MODE}'")
endif()

# Passed: the scratch directory is not needed any more.
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "consumer test '${MODE}' passed")

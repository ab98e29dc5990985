# The core header must stay the core: <flock/flock.hpp> includes neither the DataFrame nor the
# database headers, nor <filesystem> or fmt/format.h, each of which costs every program that
# includes it compile time it may not need (see the compile-time rows of scripts/bench).
# Run with -DCXX=... -DINCLUDE_DIR=... -DWORK_DIR=...; lists the headers with the compiler's -H.
file(MAKE_DIRECTORY ${WORK_DIR})
file(WRITE ${WORK_DIR}/core_includes.cpp "#include <flock/flock.hpp>\n")
execute_process(COMMAND ${CXX} -std=c++20 -I${INCLUDE_DIR} -fsyntax-only -H ${WORK_DIR}/core_includes.cpp
                RESULT_VARIABLE rc ERROR_VARIABLE headers OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "<flock/flock.hpp> alone does not compile:\n${headers}")
endif()
# The headers it must not pull in. bits/fs_path.h is libstdc++'s std::filesystem::path.
set(forbidden "flock/dataframe.hpp" "flock/dataframe_async.hpp" "flock/database.hpp"
    "flock/sqlite.hpp" "flock/postgres.hpp" "flock/mpi.hpp" "fmt/format.h" "bits/fs_path.h")
set(found "")
foreach(h IN LISTS forbidden)
  string(FIND "${headers}" "${h}" at)
  if(NOT at EQUAL -1)
    list(APPEND found ${h})
  endif()
endforeach()
if(found)
  message(FATAL_ERROR "<flock/flock.hpp> includes ${found}: keep the core header lean (see its "
                      "first comment)")
endif()
# The control: the same check finds what the DataFrame header does include, so a change of the
# compiler's -H output cannot make this test pass vacuously.
file(WRITE ${WORK_DIR}/dataframe_includes.cpp "#include <flock/dataframe.hpp>\n")
execute_process(COMMAND ${CXX} -std=c++20 -I${INCLUDE_DIR} -fsyntax-only -H ${WORK_DIR}/dataframe_includes.cpp
                RESULT_VARIABLE rc ERROR_VARIABLE headers OUTPUT_QUIET)
string(FIND "${headers}" "flock/dataframe_async.hpp" at)
if(NOT rc EQUAL 0 OR at EQUAL -1)
  message(FATAL_ERROR "control failed: -H of <flock/dataframe.hpp> does not list dataframe_async.hpp:\n${headers}")
endif()
# Against flock::engine (FLOCK_COMPILED_ENGINE) the core header declares the engine and includes
# none of the system headers only its definitions need (process spawning, sockets, terminals,
# threads): they stay out of a program's compile time and out of its namespace (their macros).
# Header-only, the same check finds them, so it cannot pass vacuously.
set(engine_only "spawn.h" "sys/socket.h" "termios.h" "sys/wait.h" "/thread\n")
foreach(mode header_only compiled)
  set(defines "")
  if(mode STREQUAL "compiled")
    set(defines -DFLOCK_COMPILED_ENGINE)
  endif()
  execute_process(COMMAND ${CXX} -std=c++20 -I${INCLUDE_DIR} ${defines} -fsyntax-only -H ${WORK_DIR}/core_includes.cpp
                  RESULT_VARIABLE rc ERROR_VARIABLE headers OUTPUT_QUIET)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "<flock/flock.hpp> ${defines} does not compile:\n${headers}")
  endif()
  set(found_${mode} "")
  foreach(h IN LISTS engine_only)
    string(FIND "${headers}" "${h}" at)
    if(NOT at EQUAL -1)
      list(APPEND found_${mode} ${h})
    endif()
  endforeach()
endforeach()
if(found_compiled)
  message(FATAL_ERROR "<flock/flock.hpp> with FLOCK_COMPILED_ENGINE includes ${found_compiled}: "
                      "only the engine's definitions need them (include them under "
                      "FLOCK_ENGINE_DEFINITIONS)")
endif()
if(NOT found_header_only STREQUAL engine_only)
  message(FATAL_ERROR "control failed: header-only, <flock/flock.hpp> includes only "
                      "'${found_header_only}' of '${engine_only}'")
endif()
file(REMOVE_RECURSE ${WORK_DIR})

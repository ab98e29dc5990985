# cmake -DNM=<nm> -DHEADER_ONLY=<object> -DCOMPILED=<object> -P engine_symbols.cmake
# The object built header-only defines flock's engine functions (the event loop, the worker loop,
# the launchers, the progress bar, worker output); the one built against flock::engine
# (FLOCK_COMPILED_ENGINE) defines none of them, only what the call instantiates for its types.
foreach(kind HEADER_ONLY COMPILED)
  execute_process(COMMAND ${NM} -C --defined-only ${${kind}} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE symbols ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} ${${kind}} failed: ${err}")
  endif()
  string(REGEX MATCHALL
         "[^\n]*flockmp::detail::(Engine|ProgressBar|OutputPipe|ForkLauncher|ForkserverLauncher|SpawnLauncher|Dispatch)::[^\n]*|[^\n]*flockmp::detail::workerLoop[^\n]*"
         engine_${kind} "${symbols}")
  list(LENGTH engine_${kind} count_${kind})
endforeach()
if(count_HEADER_ONLY EQUAL 0)
  message(FATAL_ERROR "the header-only object ${HEADER_ONLY} defines no flockmp::detail::Engine "
                      "function: this check cannot see them")
endif()
if(NOT count_COMPILED EQUAL 0)
  list(JOIN engine_COMPILED "\n" a)
  message(FATAL_ERROR "linked with flock::engine, ${COMPILED} still compiles flock's engine:\n${a}")
endif()
message(STATUS "header-only: ${count_HEADER_ONLY} engine functions compiled; with flock::engine: none")

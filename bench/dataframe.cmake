# bench/dataframe_bench.cpp: DataFrameAsync row-like apply over 1,000,000 rows against a serial
# loop. Included from bench/CMakeLists.txt; run build-bench/bench/dataframe_bench [rows].
add_executable(dataframe_bench ${CMAKE_CURRENT_LIST_DIR}/dataframe_bench.cpp)
target_link_libraries(dataframe_bench PRIVATE flock::flock)
if(TARGET flock_warnings)
  target_link_libraries(dataframe_bench PRIVATE flock_warnings)
endif()

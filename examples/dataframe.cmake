# examples/dataframe.cpp: DataFrameAsync row-like and block-like apply, and CSV. Included from
# examples/CMakeLists.txt after its loop; the loop's glob may already have made the target.
set(flock_expect_dataframe
    [=[row-like:.*foo  bar  new-var.*0    5    1     36.0.*3   20    4    576.0.*block-like:.*998  996004  8988004.*\[1000 rows x 2 columns\].*csv:.*foo,bar,new-var,label.*10,2,144.0,"b, with comma".*15,3,324.0,"c ""quoted""".*read back equal: true]=])
if(NOT TARGET example_dataframe)
  add_executable(example_dataframe ${CMAKE_CURRENT_LIST_DIR}/dataframe.cpp)
  set_target_properties(example_dataframe PROPERTIES OUTPUT_NAME dataframe)
  target_link_libraries(example_dataframe PRIVATE flock::flock)
  if(TARGET flock_warnings)
    target_link_libraries(example_dataframe PRIVATE flock_warnings)
  endif()
  if(TARGET flock_examples)
    add_dependencies(flock_examples example_dataframe)
  endif()
endif()
if(FLOCK_BUILD_TESTS)
  if(NOT TEST example_dataframe)
    add_test(NAME example_dataframe COMMAND example_dataframe)
  endif()
  set_tests_properties(example_dataframe PROPERTIES TIMEOUT 120 FAIL_REGULAR_EXPRESSION
                                                    "${flock_example_fail_regex}")
  set_tests_properties(example_dataframe PROPERTIES PASS_REGULAR_EXPRESSION
                                                    "${flock_expect_dataframe}")
endif()

# Stand-ins for the vcpkg helpers ports/flock/portfile.cmake calls, so that the consumer_vcpkg_port
# test can run the real portfile without vcpkg (not installable here). Each does what its vcpkg
# namesake does for a CMake port, minus vcpkg's toolchain file and triplet handling.
#
# Expects from the includer: CURRENT_PACKAGES_DIR, CURRENT_BUILDTREES_DIR, TARGET_TRIPLET, PORT,
# FEATURES (the features asked for, "core" at least), and flock_run(), generator_options and
# flock_common_options from run.cmake.

# -D<option>=ON for each FEATURES pair whose feature is asked for (OFF otherwise), and the reverse
# for INVERTED_FEATURES pairs.
function(vcpkg_check_features)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "OUT_FEATURE_OPTIONS" "FEATURES;INVERTED_FEATURES")
  set(out "")
  foreach(kind FEATURES INVERTED_FEATURES)
    set(pairs ${arg_${kind}})
    while(pairs)
      list(POP_FRONT pairs feature option)
      set(asked FALSE)
      if(feature IN_LIST FEATURES)
        set(asked TRUE)
      endif()
      if(kind STREQUAL "INVERTED_FEATURES")
        set(value OFF)
        if(NOT asked)
          set(value ON)
        endif()
      else()
        set(value ON)
        if(NOT asked)
          set(value OFF)
        endif()
      endif()
      list(APPEND out -D${option}=${value})
    endwhile()
  endforeach()
  set(${arg_OUT_FEATURE_OPTIONS} ${out} PARENT_SCOPE)
endfunction()

# Configures SOURCE_PATH once per configuration (release only when VCPKG_BUILD_TYPE is release),
# installing into CURRENT_PACKAGES_DIR (release) and CURRENT_PACKAGES_DIR/debug. Like vcpkg, it
# fails on options the project does not use.
function(vcpkg_cmake_configure)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "SOURCE_PATH" "OPTIONS;OPTIONS_RELEASE;OPTIONS_DEBUG")
  set(configs rel)
  if(NOT VCPKG_BUILD_TYPE STREQUAL "release")
    list(APPEND configs dbg)
  endif()
  foreach(config ${configs})
    if(config STREQUAL "rel")
      set(options -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=${CURRENT_PACKAGES_DIR} ${arg_OPTIONS_RELEASE})
    else()
      set(options -DCMAKE_BUILD_TYPE=Debug -DCMAKE_INSTALL_PREFIX=${CURRENT_PACKAGES_DIR}/debug ${arg_OPTIONS_DEBUG})
    endif()
    if(GENERATOR MATCHES "Multi-Config|Visual Studio|Xcode")
      list(FILTER options EXCLUDE REGEX "^-DCMAKE_BUILD_TYPE=") # unused there, so reported below
    endif()
    set(build "${CURRENT_BUILDTREES_DIR}/${TARGET_TRIPLET}-${config}")
    flock_run("vcpkg_cmake_configure (${config})" ${CMAKE_COMMAND} -S ${arg_SOURCE_PATH} -B ${build}
              ${generator_options} ${flock_common_options} ${options} ${arg_OPTIONS})
    if(flock_run_output MATCHES "Manually-specified variables were not used")
      message(FATAL_ERROR "the port passes options the project does not use:\n${flock_run_output}")
    endif()
  endforeach()
  set(vcpkg_shim_configs ${configs} PARENT_SCOPE)
endfunction()

# Builds the install target of every configured build tree.
macro(vcpkg_cmake_install)
  foreach(config ${vcpkg_shim_configs})
    if(config STREQUAL "rel")
      set(build_type Release)
    else()
      set(build_type Debug)
    endif()
    flock_run("vcpkg_cmake_install (${config})" ${CMAKE_COMMAND} --build
              "${CURRENT_BUILDTREES_DIR}/${TARGET_TRIPLET}-${config}" --target install --config ${build_type})
  endforeach()
endmacro()

# Moves the package config from CONFIG_PATH to share/<PACKAGE_NAME> (a no-op for flock, which
# installs it there already) and drops the debug copy.
function(vcpkg_cmake_config_fixup)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "CONFIG_PATH;PACKAGE_NAME" "")
  if(NOT arg_PACKAGE_NAME)
    set(arg_PACKAGE_NAME ${PORT})
  endif()
  set(from "${CURRENT_PACKAGES_DIR}/${arg_CONFIG_PATH}")
  set(to "${CURRENT_PACKAGES_DIR}/share/${arg_PACKAGE_NAME}")
  if(NOT IS_DIRECTORY "${from}")
    message(FATAL_ERROR "vcpkg_cmake_config_fixup: '${from}' does not exist")
  endif()
  if(NOT EXISTS "${from}/${arg_PACKAGE_NAME}-config.cmake" AND NOT EXISTS "${from}/${arg_PACKAGE_NAME}Config.cmake")
    message(FATAL_ERROR "vcpkg_cmake_config_fixup: no ${arg_PACKAGE_NAME}-config.cmake in '${from}'")
  endif()
  if(NOT from STREQUAL to)
    file(MAKE_DIRECTORY "${to}")
    file(GLOB files "${from}/*")
    file(COPY ${files} DESTINATION "${to}")
    file(REMOVE_RECURSE "${from}")
  endif()
  file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug/${arg_CONFIG_PATH}")
endfunction()

# Installs the license files as share/<PORT>/copyright.
function(vcpkg_install_copyright)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "" "FILE_LIST")
  set(text "")
  foreach(f ${arg_FILE_LIST})
    file(READ "${f}" content)
    string(APPEND text "${content}")
  endforeach()
  file(WRITE "${CURRENT_PACKAGES_DIR}/share/${PORT}/copyright" "${text}")
endfunction()

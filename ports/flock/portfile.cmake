# Overlay port for flock, built from the checkout this file lives in (ports/flock/ -> ../..):
#   vcpkg install flock --overlay-ports=<checkout>/ports
# A port for a registry would fetch a release instead:
#   vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO <owner>/flock REF "v${VERSION}" SHA512 <...>)
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

# Header only (and flock::engine, with the engine feature, is built for release only): one
# configuration is enough.
set(VCPKG_BUILD_TYPE release)

# The optional components come only from their feature, never from a library that happens to be
# on the build machine.
vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    engine FLOCK_ENGINE
  INVERTED_FEATURES
    sqlite CMAKE_DISABLE_FIND_PACKAGE_SQLite3
    postgresql CMAKE_DISABLE_FIND_PACKAGE_PostgreSQL
    mpi CMAKE_DISABLE_FIND_PACKAGE_MPI
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DFLOCK_BUILD_TESTS=OFF
    -DFLOCK_BUILD_EXAMPLES=OFF
    -DFLOCK_BUILD_BENCH=OFF
    ${FEATURE_OPTIONS}
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/flock)

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")

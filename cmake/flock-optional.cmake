# Optional components of flock: ready-made DatabaseAsync setups for SQLite and PostgreSQL, and
# apply across the ranks of an MPI job.
# Included from the top-level CMakeLists.txt after the flock target is defined. Each component is
# an INTERFACE target defined only where its library is found; a missing library is reported,
# never skipped silently, and the tests and examples that need it are left out.
#
#   target_link_libraries(app PRIVATE flock::sqlite)    # #include <flock/sqlite.hpp>
#   target_link_libraries(app PRIVATE flock::postgres)  # #include <flock/postgres.hpp>
#   target_link_libraries(app PRIVATE flock::mpi)       # #include <flock/mpi.hpp>

find_package(SQLite3 QUIET)
if(SQLite3_FOUND)
  add_library(flock_sqlite INTERFACE)
  add_library(flock::sqlite ALIAS flock_sqlite)
  set_target_properties(flock_sqlite PROPERTIES EXPORT_NAME sqlite)
  target_link_libraries(flock_sqlite INTERFACE flock::flock SQLite::SQLite3)
  # <flock/sqlite.hpp> refuses, with one #error naming this target, to compile without it.
  target_compile_definitions(flock_sqlite INTERFACE FLOCK_WITH_SQLITE=1)
  message(STATUS "flock: SQLite3 ${SQLite3_VERSION} found: flock::sqlite is available")
else()
  message(STATUS "flock: SQLite3 not found: flock::sqlite and its tests are skipped")
endif()

find_package(PostgreSQL QUIET)
if(PostgreSQL_FOUND)
  add_library(flock_postgres INTERFACE)
  add_library(flock::postgres ALIAS flock_postgres)
  set_target_properties(flock_postgres PROPERTIES EXPORT_NAME postgres)
  target_link_libraries(flock_postgres INTERFACE flock::flock PostgreSQL::PostgreSQL)
  target_compile_definitions(flock_postgres INTERFACE FLOCK_WITH_POSTGRES=1)
  message(STATUS "flock: PostgreSQL client library (libpq) ${PostgreSQL_VERSION_STRING} found: flock::postgres is available")
else()
  message(STATUS "flock: PostgreSQL client library (libpq) not found: flock::postgres and its tests are skipped")
endif()

# MPI (Open MPI or MPICH): flockmp::mpi::apply across the ranks of an MPI job. The C++ component
# of FindMPI is only the compiler wrapper's flags for C++; flock uses MPI's C API.
find_package(MPI QUIET COMPONENTS CXX)
if(MPI_CXX_FOUND)
  add_library(flock_mpi INTERFACE)
  add_library(flock::mpi ALIAS flock_mpi)
  set_target_properties(flock_mpi PROPERTIES EXPORT_NAME mpi)
  target_link_libraries(flock_mpi INTERFACE flock::flock MPI::MPI_CXX)
  target_compile_definitions(flock_mpi INTERFACE FLOCK_WITH_MPI=1)
  message(STATUS "flock: MPI ${MPI_CXX_VERSION} found: flock::mpi is available")
else()
  message(STATUS "flock: MPI not found (Debian: libopenmpi-dev openmpi-bin): flock::mpi, its tests and example are skipped")
endif()

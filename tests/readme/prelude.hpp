// The names README.md's excerpts (blocks marked <!-- fragment -->) use, declared once: each
// excerpt is compiled as the body of a function after this header (see CMakeLists.txt here).
#pragma once

#include <flock/flock.hpp>
#include <flock/dataframe_async.hpp>
#if defined(FLOCK_WITH_SQLITE)
#include <flock/sqlite.hpp>
#endif
#if defined(FLOCK_WITH_POSTGRES)
#include <flock/postgres.hpp>
#endif

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;

inline int square(int x) { return x * x; }
inline std::vector<int> xs{1, 2, 3};
inline std::vector<int> ids{1, 2, 3};
inline std::vector<std::vector<int>> batches{{1, 2}, {3}};
inline flockmp::BaseMultiProc pool{{.poolSize = 2}};

/// A database client of the user's own (the README's "MyDb").
struct MyDb {
  MyDb(const std::string& host, const std::string& user);
};

#if defined(FLOCK_WITH_SQLITE)
inline auto sqlite = flockmp::sqlite::setup("sqlite_con", "/var/data/app.db");
#endif
#if defined(FLOCK_WITH_POSTGRES)
inline auto pg = flockmp::postgres::setup("pg_con", "host=db dbname=app user=app");
#endif

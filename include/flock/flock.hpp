// flock: run any C++ callable over many inputs in parallel worker processes, results in input
// order. Include this header to get everything.
#pragma once

#include "codec.hpp"        // IWYU pragma: export
#include "database.hpp"     // IWYU pragma: export
#include "dataframe.hpp"    // IWYU pragma: export
#include "dataframe_async.hpp" // IWYU pragma: export
#include "error.hpp"        // IWYU pragma: export
#include "function_async.hpp" // IWYU pragma: export
#include "init.hpp"         // IWYU pragma: export
#include "insights.hpp"     // IWYU pragma: export
#include "list_async.hpp"   // IWYU pragma: export
#include "options.hpp"      // IWYU pragma: export
#include "pool.hpp"         // IWYU pragma: export

/// Version of flock, as major * 10000 + minor * 100 + patch.
#define FLOCK_VERSION 100

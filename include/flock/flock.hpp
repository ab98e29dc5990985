// flock: run any C++ callable over many inputs in parallel worker processes, results in input
// order. This is the core: FunctionAsync, ListAsync, BaseMultiProc (pools, streams, async calls),
// the codec, errors and options. As the seed keeps them in flockmp.dataframe and flockmp.database,
// DataFrames and databases have their own headers, so only programs that use them pay for their
// compile time: <flock/dataframe.hpp> (DataFrame, DataFrameAsync) and <flock/database.hpp>
// (DatabaseAsync, DatabaseSetup; with <flock/sqlite.hpp> or <flock/postgres.hpp>).
#pragma once

#include "codec.hpp"        // IWYU pragma: export
#include "current_input.hpp" // IWYU pragma: export
#include "error.hpp"        // IWYU pragma: export
#include "function_async.hpp" // IWYU pragma: export
#include "init.hpp"         // IWYU pragma: export
#include "insights.hpp"     // IWYU pragma: export
#include "list_async.hpp"   // IWYU pragma: export
#include "options.hpp"      // IWYU pragma: export
#include "pool.hpp"         // IWYU pragma: export

/// Version of flock, as major * 10000 + minor * 100 + patch.
#define FLOCK_VERSION 100

// flock::engine: the non-template part of flock (event loop, workers, launchers, progress,
// insights...) compiled once, for programs that link flock::engine instead of compiling it in
// every source file that calls flock (see include/flock/detail/config.hpp).
#define FLOCK_BUILDING_ENGINE
#include <flock/flock.hpp>

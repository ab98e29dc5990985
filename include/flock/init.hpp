// flock: flockmp::init, the hook at the top of main that Context::forkserver and Context::spawn
// need (it plays the role of Python's `if __name__ == "__main__"`).
#pragma once

#include <cstdlib>

#include "detail/backend.hpp"

namespace flockmp {

/// Call first thing in `main`, before the program starts threads, to use Context::forkserver and
/// Context::spawn:
///
///   int main(int argc, char** argv) {
///     flockmp::init(argc, argv);
///     ...
///
/// In a worker started by Context::spawn it does not return: the worker serves its pool and
/// exits. Otherwise it starts the forkserver (a small process that forks workers on request) and
/// returns. Calling it again does nothing. Throws flockmp::Error if the forkserver cannot start.
inline void init(int argc, char** argv) {
  if (const char* spec = std::getenv(detail::spawnedWorkerVariable)) detail::becomeSpawnedWorker(spec);
  auto& rt = detail::runtime();
  if (rt.initialized) return;
  rt.program = argc > 0 && argv != nullptr && argv[0] != nullptr ? argv[0] : "flock-worker";
  detail::startForkServer();
  rt.initialized = true;
}

} // namespace flockmp

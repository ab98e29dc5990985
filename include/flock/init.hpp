// flock: flockmp::init, the hook at the top of main that Context::forkserver and Context::spawn
// need (it plays the role of Python's `if __name__ == "__main__"`).
#pragma once

#include "detail/config.hpp"

#include <cstdlib>

#include "detail/backend.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <sys/wait.h>
#include <cerrno>
#include <mutex>
#endif

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
FLOCK_ENGINE_INLINE void init(int argc, char** argv);

} // namespace flockmp

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp {

FLOCK_ENGINE_INLINE void init(int argc, char** argv) {
  if (const char* spec = std::getenv(detail::spawnedWorkerVariable)) detail::becomeSpawnedWorker(spec);
  auto& rt = detail::runtime();
  if (rt.initialized) return;
  rt.program = argc > 0 && argv != nullptr && argv[0] != nullptr ? argv[0] : "flock-worker";
  detail::startForkServer();
  rt.initialized = true;
  // At a normal exit, close the server's channel and reap it (it kills what it still runs and
  // leaves): no process outlives the program, not even as a zombie for init to collect.
  std::atexit([] {
    auto& state = detail::runtime();
    if (state.serverPid <= 0) return;
    std::lock_guard lock(state.serverMutex);
    state.server = detail::Fd();
    while (::waitpid(state.serverPid, nullptr, 0) < 0 && errno == EINTR) {
    }
    state.serverPid = -1;
  });
}

} // namespace flockmp
#endif // FLOCK_ENGINE_DEFINITIONS

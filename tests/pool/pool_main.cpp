// The Catch2 main of the pool tests: flockmp::init first (it starts the forkserver, and turns a
// process started by Context::spawn into a worker before Catch2 sees its arguments).
#include <flock/flock.hpp>

#if defined(FLOCK_CATCH_V3)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char** argv) {
  flockmp::init(argc, argv);
  return Catch::Session().run(argc, argv);
}

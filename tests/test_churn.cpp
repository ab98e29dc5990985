// Many consecutive calls mixing successes and crashes: nothing accumulates (fds, children).
// A binary of its own: each call forks, and fork time grows with the parent's memory, which the
// other test binaries inflate (notably under AddressSanitizer's quarantine).
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/proc_stats.hpp"

using flockmp::test::DeadlockGuard;

#if defined(FLOCK_TEST_UNDER_SANITIZER)
constexpr int calls = 1'000; // each fork of a sanitized process costs ~20x more
#else
constexpr int calls = 10'000;
#endif

TEST_CASE("10,000 calls (1,000 under sanitizers) mixing successes and crashes leave fds and child processes flat", "[faults][resources]") {
  DeadlockGuard guard(900);
  (void)flockmp::FunctionAsync::tryApply(std::vector<int>{0, 1}, [](int x) { return x; }, {.poolSize = 2});
  const int fds = flockmp::test::openFdCount();
  const int children = flockmp::test::childProcessCount();
  std::size_t failures = 0, expected = 0;
  for (int call = 0; call < calls; ++call) {
    expected += (call % 7 == 0 ? 1u : 0u) + ((call + 1) % 7 == 0 ? 1u : 0u);
    auto outcomes = flockmp::FunctionAsync::tryApply(std::vector<int>{call, call + 1}, [](int x) {
      if (x % 7 == 0) std::abort();
      return x;
    }, {.poolSize = 2});
    for (auto& o : outcomes) failures += o.hasValue() ? 0 : 1;
  }
  CHECK(failures == expected);
  CHECK(flockmp::test::openFdCount() == fds);
  CHECK(flockmp::test::childProcessCount() == children);
}

// Test helper: fails the test (SIGALRM ends the binary, which CTest reports) instead of letting a
// deadlocked call hang the suite.
#pragma once

#include <unistd.h>

namespace flockmp::test {

struct DeadlockGuard {
  explicit DeadlockGuard(unsigned seconds = 120) { ::alarm(seconds); }
  ~DeadlockGuard() { ::alarm(0); }
  DeadlockGuard(const DeadlockGuard&) = delete;
  DeadlockGuard& operator=(const DeadlockGuard&) = delete;
};

} // namespace flockmp::test

// Runs one call with WorkerOutput::forward and the progress bar on, for test_worker_output to
// watch under a pseudo-terminal (script(1)). Inputs 0-3 print at once; inputs 4-7 wait for a gate
// that onProgress opens only once the bar is surely drawn (a previous onProgress call came at
// least 250 ms after the first one, so the bar, which shows after 200 ms, was updated just before
// the current call), so their lines must be written above a visible bar. No timing decides the
// outcome: the gate waits as long as it takes.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <vector>

#include <flock/function_async.hpp>

int main() {
  using Clock = std::chrono::steady_clock;
  int gate[2];
  if (::pipe(gate) != 0) return 2;
  std::optional<Clock::time_point> first, previous;
  bool opened = false;
  flockmp::Options o{.poolSize = 2, .batchSize = 1, .workerOutput = flockmp::WorkerOutput::forward};
  o.onProgress = [&](const flockmp::Progress&) {
    const auto now = Clock::now();
    if (!first) first = now;
    if (!opened && previous && *previous - *first >= std::chrono::milliseconds(250)) {
      opened = ::write(gate[1], "x", 1) == 1;
    }
    previous = now;
  };
  std::vector<int> xs{0, 1, 2, 3, 4, 5, 6, 7};
  const auto r = flockmp::FunctionAsync::apply(xs, [&](int i) {
    if (i >= 4) {
      pollfd p{gate[0], POLLIN, 0};
      while (::poll(&p, 1, -1) <= 0) {
      }
    }
    std::printf("worker line %d\n", i);
    std::fprintf(stderr, "worker err line %d\n", i);
    return i;
  }, o);
  std::printf("done %zu\n", r.size());
  return 0;
}

// Options::workerOutput for pools, under every context: a pool's workers get their output pipes
// when they start and keep them across calls. What a call's inputs print is written before the
// call returns (an unfinished line included), the initializer's and finalizer's lines are not
// lost, a crash cuts a line visibly, and the worker number survives a replacement. The test
// process's fds 1 and 2 are files while a call runs (StdCapture): nothing depends on timing.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <flock/flock.hpp>

#if defined(FLOCK_CATCH_V3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include "support/capture.hpp"
#include "support/deadlock_guard.hpp"
#include "support/test_util.hpp"

using flockmp::Context;
using flockmp::WorkerOutput;
using flockmp::test::DeadlockGuard;
using flockmp::test::linesOf;
using flockmp::test::nameOf;
using flockmp::test::range;
using flockmp::test::StdCapture;

namespace {

void sayHello() { std::printf("hello from pid %d\n", static_cast<int>(::getpid())); }
void sayBye() { std::fprintf(stderr, "bye from pid %d\n", static_cast<int>(::getpid())); }

int printIndex(int i) {
  std::printf("out %d\n", i);
  std::fprintf(stderr, "err %d\n", i);
  if (i == 5) std::printf("unfinished %d", i); // the call's last line has no newline
  return i;
}

int crashAt3(int i) {
  if (i == 3) {
    std::fprintf(stderr, "dying line");
    ::raise(SIGSEGV);
  }
  std::printf("ok %d\n", i);
  return i;
}

int count(const std::vector<std::string>& lines, const std::string& line) {
  return static_cast<int>(std::count(lines.begin(), lines.end(), line));
}

} // namespace

TEST_CASE("a pool forwards its workers' output within each call, at start and at close", "[pool][workerOutput]") {
  DeadlockGuard guard;
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  std::string out, err;
  std::vector<std::string> outLines, errLines;
  flockmp::Options o{.poolSize = 2, .context = context, .batchSize = 3, .workerOutput = WorkerOutput::prefix};
  o.initializer = &sayHello;
  o.finalizer = &sayBye;
  {
    flockmp::BaseMultiProc pool{o};
    for (int call = 0; call < 2; ++call) {
      CAPTURE(call);
      {
        StdCapture capture;
        pool.apply(range(6), &printIndex);
        std::tie(out, err) = capture.stop();
      }
      outLines = linesOf(out);
      errLines = linesOf(err);
      // Bug caught: a call's lines left in the pipes until the next call (or lost): each line of
      // this call is written before it returns, once, with its input.
      for (int i = 0; i < 6; ++i) {
        INFO(out);
        const auto w0 = "[worker 0, input " + std::to_string(i) + "] ";
        const auto w1 = "[worker 1, input " + std::to_string(i) + "] ";
        REQUIRE(count(outLines, w0 + "out " + std::to_string(i)) + count(outLines, w1 + "out " + std::to_string(i)) == 1);
        REQUIRE(count(errLines, w0 + "err " + std::to_string(i)) + count(errLines, w1 + "err " + std::to_string(i)) == 1);
      }
      // Bug caught: an unfinished line held back (or cut) at the end of a call.
      REQUIRE(count(outLines, "[worker 0, input 5] unfinished 5") + count(outLines, "[worker 1, input 5] unfinished 5") ==
              1);
      // The workers started in the first call: their initializers printed, outside any input.
      const auto hellos = std::count_if(outLines.begin(), outLines.end(), [](const std::string& l) {
        return l.starts_with("[worker ") && l.find("] hello from pid ") != std::string::npos &&
               l.find("input") == std::string::npos;
      });
      // Bug caught: initializer output lost, or printed again at each call.
      REQUIRE(hellos == (call == 0 ? 2 : 0));
      REQUIRE((out.empty() || out.back() == '\n'));
    }
    StdCapture capture;
    pool.close();
    std::tie(out, err) = capture.stop();
  }
  errLines = linesOf(err);
  // Bug caught: the finalizers' lines lost at close (the pipes not read while workers stop).
  REQUIRE(errLines.size() == 2);
  for (const auto& l : errLines) {
    INFO(l);
    REQUIRE(((l.starts_with("[worker 0] bye from pid ") || l.starts_with("[worker 1] bye from pid "))));
  }
  REQUIRE(errLines[0].substr(0, 10) != errLines[1].substr(0, 10));
}

TEST_CASE("a pool's crashed worker has its unfinished line printed, cut, and its replacement keeps its number",
          "[pool][workerOutput]") {
  DeadlockGuard guard;
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  std::string out, err;
  flockmp::BaseMultiProc pool{{.poolSize = 1, .context = context, .batchSize = 1, .workerOutput = WorkerOutput::prefix}};
  std::size_t failed = 0;
  {
    StdCapture capture;
    for (auto& r : pool.tryApply(range(6), &crashAt3)) failed += r ? 0 : 1;
    std::tie(out, err) = capture.stop();
  }
  REQUIRE(failed == 1);
  // Bug caught: the dead worker's unfinished line dropped or not marked as cut.
  REQUIRE(err == "[worker 0, input 3] dying line [cut: worker crashed]\n");
  const auto outLines = linesOf(out);
  // Bug caught: the replacement (the only slot, 0) numbered differently, or lines lost.
  REQUIRE(outLines.size() == 5);
  for (int i : {0, 1, 2, 4, 5})
    REQUIRE(count(outLines, "[worker 0, input " + std::to_string(i) + "] ok " + std::to_string(i)) == 1);
}

TEST_CASE("a pool with forward: lines reach the parent's same streams, unprefixed", "[pool][workerOutput]") {
  DeadlockGuard guard;
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  std::string out, err;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}}; // forward: the default
  {
    StdCapture capture;
    pool.apply(range(6), &printIndex);
    std::tie(out, err) = capture.stop();
  }
  std::set<std::string> outLines, errLines;
  for (auto& l : linesOf(out)) outLines.insert(l);
  for (auto& l : linesOf(err)) errLines.insert(l);
  // Bug caught: stdout lines sent to stderr (or the reverse), lines lost, a prefix in forward.
  REQUIRE(outLines == std::set<std::string>{"out 0", "out 1", "out 2", "out 3", "out 4", "out 5", "unfinished 5"});
  REQUIRE(errLines == std::set<std::string>{"err 0", "err 1", "err 2", "err 3", "err 4", "err 5"});
}

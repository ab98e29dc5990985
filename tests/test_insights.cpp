// Insights (Options::insights) of one-shot calls: they add up, they name the workers that ran the
// inputs, the slowest inputs are the slow ones, bytes follow result sizes, JSON and table are
// well formed, and a call that does not ask for them measures and sends nothing.
// (Pools under every context: tests/pool/test_pool_insights.cpp.)
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <flock/dataframe.hpp>
#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/insights_check.hpp"
#include "support/processes.hpp"
#include "support/test_util.hpp"

using flockmp::FailureKind;
using flockmp::FunctionAsync;
using flockmp::Insights;
using flockmp::test::failuresOf;
using flockmp::test::inputsByPid;
using flockmp::test::inputsByRow;
using flockmp::Options;

namespace {

/// A directory of its own, removed afterwards.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "flock_insights_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

} // namespace

TEST_CASE("insights of a one-shot call add up, with a failure and a crash whose worker is replaced", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  constexpr std::size_t n = 40;
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i);
  Insights in;
  // One worker: the crash at input 5 leaves inputs to run, so a replacement starts for sure.
  const auto outcomes = FunctionAsync::tryApply(
      xs,
      [](int x) -> std::int64_t {
        if (x == 5) flockmp::test::segfault();
        if (x == 11 || x == 12) throw std::runtime_error("bad");
        return ::getpid();
      },
      {.poolSize = 1, .checkProgress = false, .insights = &in});
  REQUIRE(outcomes.size() == n);
  flockmp::test::checkInsightsAddUp(in, n, 1);
  // The crash: one restart, two rows (the dead worker's and its replacement's), the dead one marked.
  CHECK(in.restarts == 1); // a death not counted, or counted twice
  CHECK(in.retries == 0);  // a retry counted without Options::retries
  REQUIRE(in.workers.size() == 2); // the replacement shares the dead worker's row, or has none
  CHECK(in.workers[0].ended);      // the dead worker not marked
  CHECK(!in.workers[1].ended);     // a worker that served to the end marked as ended
  // Pids in the rows are the pids that ran the inputs, each with the inputs it ran; the crashed
  // input counts on the worker that died running it (its failure names that pid).
  CHECK(inputsByRow(in) == inputsByPid(outcomes));
  REQUIRE(!outcomes[5]);
  CHECK(outcomes[5].failure().pid == in.workers[0].pid);
  // Results of 0..4 it had not sent yet ran again on the replacement: only what it sent counts.
  CHECK(in.workers[0].inputs >= 1);
  // Failures by kind match the call's: 1 crash, 2 exceptions.
  flockmp::test::checkFailureKinds(in, failuresOf(outcomes));
  CHECK(in.failuresOf(FailureKind::crashed) == 1);
  CHECK(in.failuresOf(FailureKind::exception) == 2);
  // Start-up is measured (a worker that became ready has a positive start-up time).
  CHECK(in.workers[0].startup.count() > 0);
  CHECK(in.workers[1].startup.count() > 0);
  // Bytes sent: each worker sent its results.
  CHECK(in.workers[1].bytesSent >= 30 * sizeof(std::int64_t));
  // Peak RSS is read (the surviving worker's VmHWM, the dead one's last report).
  CHECK(in.workers[1].peakRss > 0);
}

TEST_CASE("insights count retries and restarts when a crashed input is run again", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  TempDir dir;
  const std::string marker = (dir.path / "crashed").string();
  constexpr std::size_t n = 12;
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i);
  Insights in;
  // Input 3 crashes its first worker only (the marker file says it already did).
  const auto outcomes = FunctionAsync::tryApply(
      xs,
      [&marker](int x) -> std::int64_t {
        if (x == 3 && !std::filesystem::exists(marker)) {
          std::ofstream(marker) << "x";
          flockmp::test::segfault();
        }
        return ::getpid();
      },
      {.poolSize = 1, .retries = 1, .checkProgress = false, .insights = &in});
  flockmp::test::checkInsightsAddUp(in, n, 1);
  CHECK(failuresOf(outcomes).empty());
  CHECK(in.retries == 1);  // a retry not counted
  CHECK(in.restarts == 1); // the crash not counted as a restart
  REQUIRE(in.workers.size() == 2);
  // The retried input counts once, on the worker that ran it at last, not on the dead one.
  CHECK(*outcomes[3] == in.workers[1].pid);
  CHECK(in.workers[0].inputs <= 3);
  CHECK(inputsByRow(in) == inputsByPid(outcomes));
  flockmp::test::checkFailureKinds(in, {});
}

TEST_CASE("insights with several workers: times fit in the wall time, pids are those that ran inputs", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  constexpr std::size_t n = 2000;
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i);
  Insights in;
  const auto outcomes = FunctionAsync::tryApply(
      xs,
      [](int x) -> std::int64_t {
        if (x % 100 == 7) throw std::invalid_argument("seven");
        return ::getpid();
      },
      {.poolSize = 3, .checkProgress = false, .insights = &in});
  flockmp::test::checkInsightsAddUp(in, n, 3);
  CHECK(in.workers.size() == 3); // a row missing, or one for a worker never started
  CHECK(inputsByRow(in) == inputsByPid(outcomes));
  flockmp::test::checkFailureKinds(in, failuresOf(outcomes));
  CHECK(in.restarts == 0);
  for (const auto& w : in.workers) CHECK(!w.ended);
}

TEST_CASE("the 5 slowest inputs are the slow ones", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  // Five inputs sleep 250 ms (at least: sleep never returns early); the others return at once.
  // A fast input would have to be descheduled for 250 ms within its few microseconds to look
  // slower: the order does not depend on the load.
  const std::set<std::size_t> heavy{2, 9, 17, 23, 38};
  constexpr std::size_t n = 40;
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i);
  Insights in;
  const auto slowAt = [&heavy](int x) {
    if (heavy.count(static_cast<std::size_t>(x))) std::this_thread::sleep_for(std::chrono::milliseconds(250));
    return x;
  };
  const auto ys = FunctionAsync::apply(xs, slowAt, {.poolSize = 2, .checkProgress = false, .insights = &in});
  REQUIRE(ys.size() == n);
  flockmp::test::checkInsightsAddUp(in, n, 2);
  REQUIRE(in.slowest.size() == 5); // fewer kept than asked, or merged wrongly across batches
  std::set<std::size_t> got;
  for (const auto& s : in.slowest) {
    got.insert(s.index);
    // An input's time is its own: not shorter than its sleep (a clock read at the wrong place).
    CHECK(s.duration >= std::chrono::milliseconds(250));
  }
  CHECK(got == heavy); // a wrong index, a batch's time given to one input, the wrong ones kept
  // Each worker's task time includes the sleeps it ran.
  std::chrono::nanoseconds tasks{};
  for (const auto& w : in.workers) tasks += w.tasks;
  CHECK(tasks >= std::chrono::milliseconds(5 * 250));
}

TEST_CASE("insights: bytes sent grow with the size of the results", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  constexpr std::size_t n = 16;
  std::vector<int> xs(n, 0);
  const auto sent = [&](std::size_t bytes) {
    Insights in;
    const auto ys = FunctionAsync::apply(xs, [bytes](int) { return std::string(bytes, 'x'); },
                                         {.poolSize = 2, .checkProgress = false, .insights = &in});
    REQUIRE(ys.size() == n);
    flockmp::test::checkInsightsAddUp(in, n, 2);
    std::uint64_t total = 0;
    for (const auto& w : in.workers) total += w.bytesSent;
    return total;
  };
  const std::uint64_t small = sent(10), large = sent(1 << 20);
  CHECK(large >= n * (std::uint64_t{1} << 20)); // a result's bytes not counted (direct reads)
  CHECK(small >= n * 10);                         // the frames' bytes not counted
  CHECK(small < large);
}

TEST_CASE("insights of mapReduce and of a stream", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  constexpr std::size_t n = 500;
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i);
  SECTION("mapReduce") {
    Insights in;
    const auto sum = FunctionAsync::mapReduce(
        xs, [](int x) { return static_cast<long>(x); }, [](long a, long b) { return a + b; }, 0L,
        {.poolSize = 2, .checkProgress = false, .insights = &in});
    CHECK(sum == static_cast<long>(n * (n - 1) / 2));
    flockmp::test::checkInsightsAddUp(in, n, 2); // partial folds not counted as inputs
  }
  SECTION("imap") {
    Insights in;
    std::size_t seen = 0;
    {
      auto stream = FunctionAsync::imap(xs, [](int x) { return x + 1; }, {.poolSize = 2, .checkProgress = false, .insights = &in});
      for (int y : stream) {
        CHECK(y == static_cast<int>(seen) + 1);
        ++seen;
      }
    }
    CHECK(seen == n);
    flockmp::test::checkInsightsAddUp(in, n, 2); // a stream's call never published
  }
}

TEST_CASE("insights are filled when the call throws TaskError", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  std::vector<int> xs{0, 1, 2, 3};
  Insights in;
  CHECK_THROWS_AS(FunctionAsync::apply(xs, [](int x) {
                    if (x == 2) throw std::runtime_error("two");
                    return x;
                  }, {.poolSize = 2, .checkProgress = false, .insights = &in}),
                  flockmp::TaskError);
  // Not filled on the throwing path.
  flockmp::test::checkInsightsAddUp(in, xs.size(), 2);
  CHECK(in.failuresOf(FailureKind::exception) == 1);
}

TEST_CASE("insights count cancelled inputs as not run", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  std::stop_source stop;
  stop.request_stop(); // cancelled before it starts: no input reaches a worker
  std::vector<int> xs(10, 1);
  Insights in;
  const auto outs = FunctionAsync::tryApply(xs, [](int x) { return x; },
                                            {.poolSize = 2, .stopToken = stop.get_token(), .checkProgress = false, .insights = &in});
  std::size_t ran = 0;
  for (const auto& w : in.workers) ran += w.inputs;
  // Inputs resolved in the parent are neither lost nor given to a worker.
  CHECK(ran + in.notRun == xs.size());
  CHECK(in.inputs == xs.size());
  CHECK(in.failuresOf(FailureKind::cancelled) == failuresOf(outs).size());
}

TEST_CASE("a call that does not ask for insights leaves them alone; a worker times nothing unless asked", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  SECTION("the pointer of an earlier call is not written by a later call without it") {
    Insights in;
    std::vector<int> xs{1, 2, 3};
    (void)FunctionAsync::apply(xs, [](int x) { return x; }, {.poolSize = 2, .checkProgress = false, .insights = &in});
    REQUIRE(in.inputs == 3);
    in.inputs = 12345; // a sentinel
    (void)FunctionAsync::apply(xs, [](int x) { return x; }, {.poolSize = 2, .checkProgress = false});
    CHECK(in.inputs == 12345); // the engine kept the pointer across calls
  }
  SECTION("ResultWriter sends a timing frame only for a timed batch") {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    int cmd[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cmd) == 0);
    flockmp::detail::WorkerControl ctl;
    const auto kindsSent = [&](bool timed) {
      flockmp::detail::ResultWriter out(cmd[0], fds[0], ctl);
      out.batchStarted();
      out.timeInputs(timed);
      for (std::size_t i = 0; i < 8; ++i) {
        out.startInput(i);
        out.result<flockmp::BinaryCodec, int>(i, static_cast<int>(i));
      }
      out.batchTiming(0, 8);
      out.batchDone(0, 8, 1);
      out.flush();
      std::vector<std::byte> buf(1 << 16);
      const auto got = ::read(fds[1], buf.data(), buf.size());
      REQUIRE(got > 0);
      flockmp::detail::FrameReader reader;
      reader.feed(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(got)));
      std::vector<flockmp::detail::FrameKind> kinds;
      std::uint64_t timedCount = 0;
      while (auto f = reader.next()) {
        kinds.push_back(f->kind);
        if (f->kind == flockmp::detail::FrameKind::timing) {
          const auto head = flockmp::detail::headOf<flockmp::detail::TimingHead>(f->payload);
          timedCount = head.count;
          CHECK(head.begin == 0);
          CHECK(head.end == 8);
          CHECK(head.peakRss > 0);
        }
      }
      CHECK(reader.pending() == 0);
      return std::make_pair(kinds, timedCount);
    };
    using flockmp::detail::FrameKind;
    const auto [offKinds, offCount] = kindsSent(false);
    // Not asked: results and batchDone only, no timing frame (no extra bytes on the wire).
    CHECK(std::count(offKinds.begin(), offKinds.end(), FrameKind::timing) == 0);
    CHECK(offKinds.size() == 9);
    const auto [onKinds, onCount] = kindsSent(true);
    // Asked: exactly one timing frame, before batchDone, with the 5 slowest of 8 inputs.
    REQUIRE(onKinds.size() == 10);
    CHECK(onKinds[8] == FrameKind::timing);
    CHECK(onKinds[9] == FrameKind::batchDone);
    CHECK(onCount == 5);
    for (int fd : {fds[0], fds[1], cmd[0], cmd[1]}) ::close(fd);
  }
}

TEST_CASE("insights give a recycled worker and its successor a row each", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  constexpr std::size_t n = 35;
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i);
  Insights in;
  const auto outcomes = FunctionAsync::tryApply(xs, [](int) -> std::int64_t { return ::getpid(); },
                                                {.poolSize = 1, .maxTasksPerWorker = 10, .checkProgress = false, .insights = &in});
  flockmp::test::checkInsightsAddUp(in, n, 1);
  // Four workers in turn (10 + 10 + 10 + 5 inputs): a row each, the first three ended (recycled).
  REQUIRE(in.workers.size() == 4);
  for (std::size_t k = 0; k < 4; ++k) {
    CHECK(in.workers[k].ended == (k < 3)); // a recycled worker not marked, or the last one marked
    CHECK(in.workers[k].inputs == (k < 3 ? 10u : 5u));
  }
  CHECK(in.restarts == 0); // a recycling counted as a restart
  CHECK(inputsByRow(in) == inputsByPid(outcomes));
}

TEST_CASE("insights of DataFrameAsync, whose options nest Options", "[insights]") {
  flockmp::test::DeadlockGuard guard;
  std::vector<double> col(300);
  for (std::size_t i = 0; i < col.size(); ++i) col[i] = static_cast<double>(i);
  const flockmp::DataFrame df{{"x", col}};
  Insights in;
  const auto out = flockmp::DataFrameAsync::apply(df, [](const flockmp::Row& r) { return r.get<double>("x") * 2; },
                                                  {.poolSize = 2, .pool = {.checkProgress = false, .insights = &in}});
  CHECK(out.size() == col.size());
  std::size_t ran = 0;
  for (const auto& w : in.workers) ran += w.inputs;
  CHECK(ran == in.inputs); // the nested pointer not passed on to the call
  CHECK(in.inputs > 0);
  CHECK(in.workers.size() == 2);
}

TEST_CASE("byte counts are written in binary units: prose in messages, compact in the insights table", "[insights]") {
  using flockmp::detail::ByteStyle;
  using flockmp::detail::formatBytes;
  // Below 1 KiB: whole bytes (a threshold off by one would give "0.999 KiB").
  CHECK(formatBytes(1023) == "1023 bytes");
  CHECK(formatBytes(1023, ByteStyle::compact) == "1023B");
  // Each unit starts at its power of 1024, not of 1000.
  CHECK(formatBytes(4096) == "4 KiB");
  CHECK(formatBytes(4096, ByteStyle::compact) == "4KiB");
  CHECK(formatBytes(1024 * 1024) == "1 MiB");
  // Prose keeps four significant digits, the table three.
  CHECK(formatBytes(5'000'000) == "4.768 MiB");
  CHECK(formatBytes(5'000'000, ByteStyle::compact) == "4.77MiB");
  CHECK(formatBytes(std::uint64_t{3} << 29) == "1.5 GiB");
  CHECK(formatBytes(std::uint64_t{3} << 29, ByteStyle::compact) == "1.5GiB");
}

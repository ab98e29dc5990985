// Streaming calls (imap, imapUnordered and their try-variants), mapReduce and failFast, on pools
// and one-shot, under every context.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/proc_stats.hpp"
#include "support/processes.hpp"
#include "support/test_util.hpp"

#if !FLOCK_TEST_STD_VIEWS
// Most cases below are left out with this compiler (see test_util.hpp): some helpers go unused.
#pragma clang diagnostic ignored "-Wunused-function"
#pragma clang diagnostic ignored "-Wunused-const-variable"
#endif

using flockmp::Context;
using flockmp::FailureKind;
using flockmp::test::nameOf;

namespace {

#if defined(FLOCK_TEST_UNDER_SANITIZER)
constexpr int scale = 10; // a sanitized run is ~20x slower: the longest loops scale down
#else
constexpr int scale = 1;
#endif

/// What an input does: a value, a throw (x % 17 == 3), a crash (x == 50).
long faulty(int x) {
  if (x % 17 == 3) throw std::invalid_argument("bad " + std::to_string(x));
  if (x == 50) flockmp::test::segfault();
  return 10L * x;
}

long square(long x) { return x * x; }
long plus(long a, long b) { return a + b; }
long squareOrThrow(long x) {
  if (x % 100'000 == 7) throw std::runtime_error("seven");
  if (x == 123'457) flockmp::test::segfault();
  return x * x;
}

std::string label(int x) { return std::string(100, 'a') + std::to_string(x); }

/// An input that waits, in its worker, for a file (the test's signal to go on).
struct Gated {
  int x = 0;
  std::string gate;
};
int openGate(const Gated& g) {
  if (!g.gate.empty())
    for (int i = 0; i < 60'000 && !std::filesystem::exists(g.gate); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return g.x;
}

/// Hangs until killed, unless x < 5 (a value) or x == 5 (a throw).
int failAtFive(int x) {
  if (x == 5) throw std::runtime_error("five");
  if (x > 5)
    for (;;) ::pause();
  return x;
}

std::map<std::string, int> wordOf(const std::string& w) { return {{w, 1}}; }
std::map<std::string, int> addCounts(std::map<std::string, int> a, const std::map<std::string, int>& b) {
  for (const auto& [k, n] : b) a[k] += n;
  return a;
}

/// Checks one outcome of `faulty` on input x. Catches a result given to the wrong input, a lost
/// failure, or a failure of the wrong kind.
void checkFaulty(int x, const flockmp::Outcome<long>& o) {
  CAPTURE(x);
  if (x % 17 == 3) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::exception);
    CHECK(o.failure().message == "bad " + std::to_string(x));
  } else if (x == 50) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::crashed);
  } else {
    REQUIRE(o.hasValue());
    CHECK(*o == 10L * x);
  }
}

/// The inputs of [0, n) on which squareOrThrow fails.
std::vector<std::size_t> failingInputs(long n) {
  std::vector<std::size_t> failed;
  for (long x = 0; x < n; ++x)
    if (x % 100'000 == 7 || x == 123'457) failed.push_back(static_cast<std::size_t>(x));
  return failed;
}

/// Checks tryMapReduce of squareOrThrow over [0, n): the fold leaves out exactly the inputs
/// that failed, and each is reported once. Catches a partial fold lost or counted twice after a
/// crash (the stretch its worker had not sent runs again), and failures lost or repeated.
void checkFoldWithFailures(const flockmp::Reduced<long>& r, long n, long serial) {
  long expected = serial;
  const auto failed = failingInputs(n);
  for (const std::size_t x : failed) expected -= static_cast<long>(x * x);
  CHECK(r.value == expected);
  std::vector<std::size_t> got;
  for (const auto& f : r.failures) got.push_back(f.index);
  CHECK(got == failed);
}

} // namespace

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("every streaming form gives each input's outcome once, under every context, on a pool and one-shot",
          "[stream]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  const bool onPool = GENERATE(true, false);
  CAPTURE(nameOf(context), onPool);
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  const flockmp::Options oneShot{.poolSize = 2, .context = context};
  constexpr int n = 300;
  // A single-pass, unsized input range: read as the stream goes.
  auto inputs = [] { return std::views::iota(0) | std::views::take_while([](int x) { return x < n; }); };
  const flockmp::CallOptions small{.maxInFlight = 32};

  SECTION("tryImap: outcomes in input order") {
    int next = 0;
    auto check = [&](const flockmp::Outcome<long>& o) { checkFaulty(next++, o); };
    if (onPool)
      for (const auto& o : pool.tryImap(inputs(), faulty, small)) check(o);
    else
      for (const auto& o : flockmp::FunctionAsync::tryImap(inputs(), faulty, {.poolSize = 2, .context = context, .maxInFlight = 32}))
        check(o);
    CHECK(next == n); // catches a lost or extra item at the end
  }
  SECTION("tryImapUnordered: each index once, with its own outcome") {
    std::set<std::size_t> seen;
    auto check = [&](const flockmp::Indexed<flockmp::Outcome<long>>& item) {
      CHECK(seen.insert(item.index).second); // catches an index given twice
      checkFaulty(static_cast<int>(item.index), item.value);
    };
    if (onPool)
      for (const auto& item : pool.tryImapUnordered(inputs(), faulty, small)) check(item);
    else
      for (const auto& item : flockmp::FunctionAsync::tryImapUnordered(inputs(), faulty, oneShot)) check(item);
    CHECK(seen.size() == static_cast<std::size_t>(n));
  }
  SECTION("imap: values in order, then TaskError at the first failed input") {
    std::vector<long> got;
    try {
      if (onPool)
        for (long v : pool.imap(inputs(), faulty, small)) got.push_back(v);
      else
        for (long v : flockmp::FunctionAsync::imap(inputs(), faulty, oneShot)) got.push_back(v);
      FAIL("no TaskError");
    } catch (const flockmp::TaskError& e) {
      REQUIRE(e.failures().size() == 1);
      CHECK(e.failures()[0].index == 3); // the first failed input, not a later one
    }
    CHECK(got == std::vector<long>{0, 10, 20});
  }
  SECTION("imapUnordered: values with their index") {
    std::set<std::size_t> seen;
    auto ok = [](int x) { return x % 17 != 3 && x != 50; };
    auto valid = inputs() | std::views::filter(ok);
    if (onPool) {
      for (auto [i, v] : pool.imapUnordered(valid, faulty, small)) {
        seen.insert(i);
        CHECK(v % 10 == 0);
      }
    } else {
      for (auto [i, v] : flockmp::FunctionAsync::imapUnordered(valid, faulty, oneShot)) {
        seen.insert(i);
        CHECK(v % 10 == 0);
      }
    }
    // Indices count the inputs of the stream (the filtered range), 0..k-1.
    const auto k = static_cast<std::size_t>(std::ranges::distance(inputs() | std::views::filter(ok)));
    CHECK(seen.size() == k);
    CHECK(*seen.rbegin() == k - 1);
  }
  // The pool serves a plain call afterwards: the stream left it idle and whole.
  CHECK(pool.apply(std::vector<long>{3, 4}, square) == std::vector<long>{9, 16});
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("leaving a stream after 10 results leaves no process or fd behind; a pool keeps its workers",
          "[stream][lifecycle]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  const int fds = flockmp::test::openFdCount();
  const int children = flockmp::test::childProcessCount();
  {
    int got = 0;
    for (long v : flockmp::FunctionAsync::imap(std::views::iota(0L), square, {.poolSize = 2, .context = context})) {
      CHECK(v == static_cast<long>(got) * got);
      if (++got == 10) break;
    }
    CHECK(got == 10);
  }
  // Catches a worker or a channel of the one-shot stream left after the break.
  CHECK(flockmp::test::openFdCount() == fds);
  CHECK(flockmp::test::childProcessCount() == children);

  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  pool.start();
  const int poolFds = flockmp::test::openFdCount();
  const int poolChildren = flockmp::test::childProcessCount();
  for (int round = 0; round < 3; ++round) {
    int got = 0;
    for (long v : pool.imap(std::views::iota(0L), square)) {
      (void)v;
      if (++got == 10) break;
    }
  }
  CHECK(flockmp::test::openFdCount() == poolFds);
  CHECK(flockmp::test::childProcessCount() == poolChildren);
  CHECK(pool.workerPids().size() == 2);
  CHECK(pool.apply(std::vector<long>{5}, square) == std::vector<long>{25});
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("a slow input 0 with maxInFlight = 64: the stream holds 64 inputs, reads no more, and goes on after it",
          "[stream][bounds]") {
  const bool onPool = GENERATE(true, false);
  CAPTURE(onPool);
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir dir;
  const std::string gate = (dir.path / "gate").string();
  int reads = 0;
  int readsAtFirst = -1;
  auto inputs = std::views::iota(0, 1000) | std::views::transform([&](int i) {
                  ++reads;
                  return Gated{i, i == 0 ? gate : std::string()};
                });
  // Opens the gate once the stream has read 64 inputs (a stream that ignored the bound would
  // have read all 1000 by then): input 0 then finishes, and the stream goes on.
  const auto progress = [&](const flockmp::Progress&) {
    if (reads >= 64 && !std::filesystem::exists(gate)) std::ofstream(gate) << "go";
  };
  flockmp::BaseMultiProc pool{{.poolSize = 2}};
  int next = 0;
  auto check = [&](int v) {
    if (next == 0) readsAtFirst = reads;
    CHECK(v == next++);
  };
  if (onPool)
    for (int v : pool.imap(inputs, openGate, {.onProgress = progress, .maxInFlight = 64})) check(v);
  else
    for (int v : flockmp::FunctionAsync::imap(inputs, openGate, {.poolSize = 2, .onProgress = progress, .maxInFlight = 64}))
      check(v);
  CHECK(next == 1000);
  // 64 read while input 0 held the window: more breaks the bound (and fewer never opens the
  // gate: the call would end only through the gate's 60 s limit, and the count would be short).
  CHECK(readsAtFirst == 64);
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("an unbounded generator stopped after 1,000,000 results: the parent's memory does not grow with it",
          "[stream][bounds]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2}};
  const int total = 1'000'000 / scale;
  // Every result is a 110-byte string: kept, 1,000,000 of them would take over 100 MB.
  const auto peakGrowthKb = [&] {
    const long before = flockmp::test::residentKb();
    REQUIRE(flockmp::test::resetPeakResident());
    int got = 0;
    std::size_t bytes = 0;
    for (const std::string& s : pool.imap(std::views::iota(0), label, {.maxInFlight = 4096})) {
      bytes += s.size();
      if (++got == total) break;
    }
    CHECK(got == total);
    CHECK(bytes > static_cast<std::size_t>(total) * 100);
    return flockmp::test::peakResidentKb() - before;
  }();
  CAPTURE(peakGrowthKb);
#if !defined(FLOCK_TEST_UNDER_SANITIZER) // ASan keeps freed memory in quarantine
  CHECK(peakGrowthKb < 32 * 1024);
#endif
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("mapReduce over 10,000,000 inputs equals a serial fold; failures are left out and reported",
          "[mapreduce]") {
  flockmp::test::DeadlockGuard guard;
  const long n = 10'000'000 / scale;
  long serial = 0;
  for (long x = 0; x < n; ++x) serial += x * x;
  const auto xs = std::views::iota(0L, n);
  CHECK(flockmp::FunctionAsync::mapReduce(xs, square, plus, 0L, {.poolSize = 2}) == serial);

  // Throws and a crash (input 123,457) on the one-shot path.
  checkFoldWithFailures(flockmp::FunctionAsync::tryMapReduce(xs, squareOrThrow, plus, 0L, {.poolSize = 2}), n, serial);
  try {
    (void)flockmp::FunctionAsync::mapReduce(xs, squareOrThrow, plus, 0L, {.poolSize = 2});
    FAIL("no TaskError");
  } catch (const flockmp::TaskError& e) {
    CHECK(e.failures().size() == failingInputs(n).size());
  }
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("mapReduce on a pool under every context, and with a merge for a map accumulator", "[mapreduce][pool]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  const long n = 300'000 / scale;
  long serial = 0;
  for (long x = 0; x < n; ++x) serial += x * x;
  CHECK(pool.mapReduce(std::views::iota(0L, n), square, plus, 0L) == serial);
  // Failures (throws, and a crash at input 123,457 when it is in range) are left out and named.
  checkFoldWithFailures(pool.tryMapReduce(std::views::iota(0L, n), squareOrThrow, plus, 0L), n, serial);

  std::vector<std::string> words;
  for (int i = 0; i < 5000; ++i) words.push_back(i % 3 == 0 ? "a" : i % 3 == 1 ? "bb" : "ccc");
  const auto counts = pool.mapReduce(words, wordOf, addCounts, addCounts, std::map<std::string, int>{});
  CHECK(counts == std::map<std::string, int>{{"a", 1667}, {"bb", 1667}, {"ccc", 1666}});
  const auto oneShot = flockmp::FunctionAsync::mapReduce(words, wordOf, addCounts, std::map<std::string, int>{},
                                                         {.poolSize = 2, .context = context});
  CHECK(oneShot == counts);
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("failFast: the first failure cancels the rest, naming the input that failed", "[failfast]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .batchSize = 1}};
  // Inputs after 5 hang: without failFast this call would never end.
  auto check = [](std::size_t i, const flockmp::Outcome<int>& o) {
    CAPTURE(i);
    if (i == 5) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::exception);
    } else if (i > 5) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::cancelled);
      CHECK(o.failure().message == "input 5 failed and failFast is on");
    } else if (!o.hasValue()) {
      CHECK(o.failure().kind == FailureKind::cancelled); // still running when 5 failed
    } else {
      CHECK(*o == static_cast<int>(i));
    }
  };
  const auto out = pool.tryApply(flockmp::test::range(12), failAtFive, {.failFast = true});
  REQUIRE(out.size() == 12);
  for (std::size_t i = 0; i < out.size(); ++i) check(i, out[i]);

  std::size_t count = 0;
  for (const auto& o : pool.tryImap(std::views::iota(0, 12), failAtFive, {.failFast = true})) check(count++, o);
  CHECK(count == 12);
  // The pool replaced what the cancellation killed.
  CHECK(pool.apply(std::vector<long>{6}, square) == std::vector<long>{36});
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("a stream's progress has no total until its last input is read", "[stream][progress]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2}};
  std::vector<flockmp::Progress> seen;
  const auto record = [&](const flockmp::Progress& p) { seen.push_back(p); };
  int got = 0;
  for (long v : pool.imap(std::views::iota(0L), square, {.onProgress = record})) {
    (void)v;
    if (++got == 100) break;
  }
  REQUIRE_FALSE(seen.empty());
  CHECK_FALSE(seen.back().totalKnown); // an unbounded stream left early never knew its total
  CHECK(seen.back().done >= 100);
  seen.clear();
  for (long v : pool.imap(std::views::iota(0L, 500L), square, {.onProgress = record})) (void)v;
  REQUIRE_FALSE(seen.empty());
  CHECK(seen.back().totalKnown);
  CHECK(seen.back().total == 500);
  CHECK(seen.back().done == 500);
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("another call on a pool from the thread that iterates its stream is a clear error", "[stream][threads]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2}};
  auto s = pool.imap(std::views::iota(0L, 10L), square);
  try {
    (void)pool.apply(std::vector<long>{1}, square);
    FAIL("no error");
  } catch (const flockmp::Error& e) {
    CHECK(std::string(e.what()).find("running a stream (imap) in this thread") != std::string::npos);
  }
  long sum = 0;
  for (long v : s) sum += v;
  CHECK(sum == 285);
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("a computed input range is copied as raw bytes; an input whose computation throws fails alone",
          "[pool][shared]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2}};
  // std::views::iota: raw values made by the iterator, copied without the codec.
  const auto xs = std::views::iota(0L, 100'000L);
  const auto out = pool.apply(xs, square);
  REQUIRE(out.size() == 100'000);
  CHECK(out[99'999] == 99'999L * 99'999L);
  CHECK(pool.mapReduce(xs, square, plus, 0L) == std::accumulate(out.begin(), out.end(), 0L));
  // A transform that throws in the parent for input 37: that input fails (it could not be
  // made), the batch around it runs. Catches a copy that lets the exception end the call.
  const auto computed = std::views::iota(0L, 100L) | std::views::transform([](long x) {
                          if (x == 37) throw std::runtime_error("no 37");
                          return x;
                        });
  const auto outcomes = pool.tryApply(computed, square);
  REQUIRE(outcomes.size() == 100);
  for (long i = 0; i < 100; ++i) {
    CAPTURE(i);
    const auto& o = outcomes[static_cast<std::size_t>(i)];
    if (i == 37) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::codec);
      CHECK(o.failure().message.find("no 37") != std::string::npos);
    } else {
      REQUIRE(o.hasValue());
      CHECK(*o == i * i);
    }
  }
}
#endif

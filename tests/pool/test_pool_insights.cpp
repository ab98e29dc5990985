// Insights of a pool's calls (BaseMultiProc), under every context: they add up, name the pool's
// workers, keep the slowest inputs, and go where each call says (CallOptions::insights, else the
// pool's Options::insights).
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/insights_check.hpp"
#include "support/processes.hpp"
#include "support/test_util.hpp"

using flockmp::Context;
using flockmp::FailureKind;
using flockmp::Insights;
using flockmp::test::failuresOf;
using flockmp::test::inputsByPid;
using flockmp::test::inputsByRow;
using flockmp::test::nameOf;

namespace {

std::int64_t pidOrThrow(int x) {
  if (x % 50 == 7) throw std::invalid_argument("seven");
  return ::getpid();
}
std::int64_t pidOrCrash(int x) {
  if (x == 5) flockmp::test::segfault();
  return ::getpid();
}
/// Five inputs sleep 250 ms (never less); the others return at once (see test_insights.cpp).
bool isHeavy(int x) { return x == 1 || x == 8 || x == 14 || x == 22 || x == 29; }
int slowAt(int x) {
  if (isHeavy(x)) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  return x;
}
int plusOne(int x) { return x + 1; }

std::vector<int> iota(std::size_t n) {
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i);
  return xs;
}

} // namespace

TEST_CASE("a pool's insights add up and name its persistent workers, call after call, under every context",
          "[insights][pool]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  Insights poolLevel;
  poolLevel.inputs = 777; // a sentinel: per-call insights must not land here
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .checkProgress = false, .insights = &poolLevel}};
  const auto xs = iota(400);
  Insights first, second;
  const auto a = pool.tryApply(xs, &pidOrThrow, {.insights = &first});
  const auto b = pool.tryApply(xs, &pidOrThrow, {.insights = &second});
  CHECK(poolLevel.inputs == 777); // CallOptions::insights did not take precedence
  for (const auto* in : {&first, &second}) {
    flockmp::test::checkInsightsAddUp(*in, xs.size(), 2);
    CHECK(in->workers.size() == 2);
    CHECK(in->restarts == 0);
  }
  // Rows are the pids that ran the inputs, with the inputs each ran.
  CHECK(inputsByRow(first) == inputsByPid(a));
  CHECK(inputsByRow(second) == inputsByPid(b));
  flockmp::test::checkFailureKinds(first, failuresOf(a));
  flockmp::test::checkFailureKinds(second, failuresOf(b));
  // The same persistent workers serve both calls, and keep the start-up time they had.
  std::set<pid_t> p1, p2;
  for (const auto& w : first.workers) p1.insert(w.pid);
  for (const auto& w : second.workers) p2.insert(w.pid);
  CHECK(p1 == p2);
  std::map<pid_t, std::chrono::nanoseconds> startup;
  for (const auto& w : first.workers) {
    CHECK(w.startup.count() > 0); // readiness not reported through the control block
    startup[w.pid] = w.startup;
  }
  for (const auto& w : second.workers) CHECK(w.startup == startup[w.pid]);
  // Raw results through shared memory count as bytes sent too.
  Insights raw;
  const auto ys = pool.apply(xs, &plusOne, {.insights = &raw});
  REQUIRE(ys.size() == xs.size());
  flockmp::test::checkInsightsAddUp(raw, xs.size(), 2);
  std::uint64_t bytes = 0;
  for (const auto& w : raw.workers) bytes += w.bytesSent;
  CHECK(bytes >= xs.size() * sizeof(int));
  // A call without CallOptions::insights fills the pool's.
  (void)pool.apply(xs, &plusOne);
  CHECK(poolLevel.inputs == xs.size());
}

TEST_CASE("a pool's insights count a crash: the replacement has its own row, under every context", "[insights][pool]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  // One worker: the crash at input 5 leaves inputs to run, so a replacement starts for sure.
  flockmp::BaseMultiProc pool{{.poolSize = 1, .context = context, .checkProgress = false}};
  const auto xs = iota(40);
  Insights in;
  const auto outs = pool.tryApply(xs, &pidOrCrash, {.insights = &in});
  flockmp::test::checkInsightsAddUp(in, xs.size(), 1);
  CHECK(in.restarts == 1);
  REQUIRE(in.workers.size() == 2);
  CHECK(in.workers[0].ended);
  CHECK(!in.workers[1].ended);
  CHECK(inputsByRow(in) == inputsByPid(outs));
  CHECK(in.failuresOf(FailureKind::crashed) == 1);
  flockmp::test::checkFailureKinds(in, failuresOf(outs));
}

TEST_CASE("a pool's 5 slowest inputs are the slow ones, in calls and in streams, under every context",
          "[insights][pool]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .checkProgress = false}};
  const auto xs = iota(32);
  std::set<std::size_t> heavy;
  for (int x : xs)
    if (isHeavy(x)) heavy.insert(static_cast<std::size_t>(x));
  const auto check = [&](const Insights& in) {
    flockmp::test::checkInsightsAddUp(in, xs.size(), 2);
    std::set<std::size_t> got;
    for (const auto& s : in.slowest) {
      got.insert(s.index);
      CHECK(s.duration >= std::chrono::milliseconds(250)); // another input's time given to it
    }
    CHECK(got == heavy); // the slow ones not kept, or kept under the wrong index
  };
  SECTION("apply") {
    Insights in;
    (void)pool.apply(xs, &slowAt, {.insights = &in});
    check(in);
  }
  SECTION("imap") {
    Insights in;
    {
      std::size_t k = 0;
      for (int y : pool.imap(xs, &slowAt, {.insights = &in})) CHECK(y == static_cast<int>(k++));
    }
    check(in);
  }
}

TEST_CASE("a pool's async calls give their insights to their handles, never to the pool's pointer, under every context",
          "[insights][pool][async]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  Insights poolLevel;
  poolLevel.inputs = 777; // a sentinel: the driver thread must not write the pool's pointer
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .checkProgress = false, .insights = &poolLevel}};
  const auto xs = iota(400);

  SECTION("applyAsync: the rows are the pids that ran the inputs") {
    auto call = pool.applyAsync(xs, &pidOrThrow);
    const auto outs = call.tryGet();
    const Insights& in = call.insights(); // after tryGet: the handle keeps them
    flockmp::test::checkInsightsAddUp(in, xs.size(), 2);
    CHECK(inputsByRow(in) == inputsByPid(outs));             // rows not the call's workers, or counts lost
    flockmp::test::checkFailureKinds(in, failuresOf(outs));  // failures not counted by kind
    CHECK(poolLevel.inputs == 777);
  }
  SECTION("submit: a crash is a restart, and the replacement has its own row") {
    auto crash = pool.submit(&pidOrCrash, 5);
    CHECK(!crash.tryGet());
    const Insights& in = crash.insights();
    CHECK(in.inputs == 1);
    CHECK(in.restarts == 1);
    CHECK(in.failuresOf(FailureKind::crashed) == 1);
    CHECK(poolLevel.inputs == 777);
  }
  SECTION("two handles at once: each gets the insights of the call that ran its tasks") {
    auto many = pool.applyAsync(xs, &plusOne);
    auto one = pool.submit(&plusOne, 41);
    CHECK(one.get() == 42);
    CHECK(many.get().size() == xs.size());
    const Insights& a = many.insights();
    const Insights& b = one.insights();
    // Both ran in one open-ended call, or the submit came after the range's call had ended.
    if (a.inputs == xs.size() + 1) {
      CHECK(&a == &b); // one call's insights are shared, not copied per handle
    } else {
      CHECK(a.inputs == xs.size());
      CHECK(b.inputs == 1);
    }
  }
  SECTION("an empty range has empty insights at once") {
    auto call = pool.applyAsync(std::vector<int>{}, &plusOne);
    CHECK(call.insights().inputs == 0);
    CHECK(call.insights().workers.empty());
  }
}

TEST_CASE("async handles say why they have no insights", "[insights][pool][async]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 1, .checkProgress = false}};
  auto call = pool.applyAsync(iota(3), &plusOne);
  CHECK_THROWS_WITH(call.insights(), "flock: this pool gathers no insights: set its Options::insights");
  CHECK(call.get().size() == 3);
  CHECK_THROWS_WITH(call.insights(), "flock: this pool gathers no insights: set its Options::insights");
  flockmp::AsyncCall<int> none;
  CHECK_THROWS_WITH(none.insights(), "flock: this handle has no tasks (it was default-constructed or moved from)");
}

TEST_CASE("a pool closed with async tasks pending still gives their handles insights", "[insights][pool][async]") {
  flockmp::test::DeadlockGuard guard;
  Insights poolLevel;
  auto pool = std::make_unique<flockmp::BaseMultiProc>(
      flockmp::Options{.poolSize = 1, .checkProgress = false, .insights = &poolLevel});
  auto call = pool->applyAsync(iota(64), &slowAt);
  pool.reset(); // closes: what has not run is cancelled
  const auto outs = call.tryGet();
  const Insights& in = call.insights(); // would hang if a closed pool left the slot empty
  CHECK(in.inputs == outs.size());
  flockmp::test::checkFailureKinds(in, failuresOf(outs));
}

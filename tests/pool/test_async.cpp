// Asynchronous calls on a pool: submit (Future) and applyAsync (AsyncCall), under every context.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
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

using flockmp::Context;
using flockmp::FailureKind;
using flockmp::test::nameOf;

namespace {

int add(int a, int b) { return a + b; }
std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}
void crash(int) { flockmp::test::segfault(); }
int thrice(int x) {
  if (x % 5 == 4) throw std::domain_error("no " + std::to_string(x));
  return 3 * x;
}

bool waitForFile(const std::string& path, int ms) {
  for (int i = 0; i < ms && !std::filesystem::exists(path); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return std::filesystem::exists(path);
}
/// Waits (20 s at most) for `path`; true when it came.
bool awaitFile(const std::string& path) { return waitForFile(path, 20'000); }
/// Creates `path`.
bool createFile(const std::string& path) { return static_cast<bool>(std::ofstream(path) << "here"); }
/// Marks that it runs, then waits for the gate (60 s at most).
int gated(const std::string& started, const std::string& gate) {
  std::ofstream(started) << "running";
  return waitForFile(gate, 60'000) ? 1 : 0;
}

} // namespace

TEST_CASE("submit and applyAsync give values and failures by kind, under every context; a sync call waits for them",
          "[async]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  auto sum = pool.submit(add, 2, 40);
  auto text = pool.submit(repeat, std::string("ab"), 3);
  auto call = pool.applyAsync(flockmp::test::range(20), thrice);
  auto later = pool.submit(add, 1, 1);
  // The crash goes last, and this thread only waits until every task is done: the driver thread
  // may fork a replacement worker meanwhile, and under Context::fork a fork while this thread
  // allocates can copy a held allocator lock into the worker (AddressSanitizer's is not fork-safe).
  auto crashed = pool.submit(crash, 1);
  sum.wait();
  text.wait();
  call.wait();
  later.wait();
  crashed.wait();

  CHECK(sum.get() == 42);
  CHECK_FALSE(sum.valid()); // the value was taken
  CHECK(text.get() == "ababab");
  // A task whose worker segfaults is a crashed outcome, and get() throws it.
  const auto o = crashed.tryGet();
  REQUIRE_FALSE(o.hasValue());
  CHECK(o.failure().kind == FailureKind::crashed);
  CHECK(o.failure().type == "SIGSEGV");

  const auto outcomes = call.tryGet();
  REQUIRE(outcomes.size() == 20);
  for (int i = 0; i < 20; ++i) {
    CAPTURE(i);
    const auto& r = outcomes[static_cast<std::size_t>(i)];
    if (i % 5 == 4) {
      REQUIRE_FALSE(r.hasValue());
      CHECK(r.failure().kind == FailureKind::exception);
      CHECK(r.failure().index == static_cast<std::size_t>(i)); // the input's index in its own call
      CHECK(r.failure().message == "no " + std::to_string(i));
    } else {
      REQUIRE(r.hasValue());
      CHECK(*r == 3 * i);
    }
  }
  CHECK(later.get() == 2);
  // get() throws the failures of a call, keeping its outcomes.
  auto failing = pool.applyAsync(std::vector<int>{4, 1}, thrice);
  try {
    (void)failing.get();
    FAIL("no TaskError");
  } catch (const flockmp::TaskError& e) {
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].index == 0);
    CHECK(*e.outcomes<int>()[1] == 3);
  }
  // Sync calls and async calls take turns on the workers.
  auto more = pool.applyAsync(flockmp::test::range(100), thrice);
  CHECK(pool.apply(std::vector<int>{1, 2}, thrice) == std::vector<int>{3, 6});
  more.wait();
  const auto p = more.progress();
  CHECK(p.done == 100);
  CHECK(p.failed == 20);
  CHECK(p.total == 100);
}

TEST_CASE("under Context::fork, submit and applyAsync fork an idle pool's workers in the calling thread, not the "
          "driver's",
          "[async][threads]") {
  // A worker forked by the main thread has the parent-death signal; one forked by the driver
  // thread has none (the signal would follow that thread, see test_pool.cpp). A fork from the
  // driver could copy into the worker a lock that the caller held at that moment.
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc bySubmit{{.poolSize = 1}};
  CHECK(bySubmit.submit(flockmp::test::parentDeathSignal, 0).get() != 0);
  flockmp::BaseMultiProc byApplyAsync{{.poolSize = 1}};
  CHECK(byApplyAsync.applyAsync(std::vector<int>{0}, flockmp::test::parentDeathSignal).get() != std::vector<int>{0});
}

TEST_CASE("tasks of several handles run at once: one waits for a file another creates", "[async]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir dir;
  flockmp::BaseMultiProc pool{{.poolSize = 2}};
  const std::string path = (dir.path / "made").string();
  auto waiter = pool.submit(awaitFile, path);
  auto maker = pool.applyAsync(std::vector<std::string>{path}, createFile);
  // Handles run one after the other would leave the waiter waiting for its 20 s, then false.
  CHECK(waiter.get());
  CHECK(maker.get() == std::vector<bool>{true});
}

TEST_CASE("cancel: inputs not sent to a worker are reported cancelled, the running task finishes", "[async][cancel]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir dir;
  flockmp::BaseMultiProc pool{{.poolSize = 1}};
  const std::string started = (dir.path / "started").string();
  const std::string gate = (dir.path / "gate").string();
  auto running = pool.submit(gated, started, gate);
  REQUIRE(waitForFile(started, 20'000));
  // The only worker is busy: these ten wait in the parent until it is free.
  auto call = pool.applyAsync(flockmp::test::range(10), thrice);
  call.cancel();
  std::ofstream(gate) << "go";
  CHECK(running.get() == 1);
  const auto outcomes = call.tryGet();
  REQUIRE(outcomes.size() == 10);
  for (const auto& o : outcomes) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::cancelled);
  }
  CHECK(pool.submit(add, 1, 2).get() == 3); // the pool goes on
}

TEST_CASE("closing a pool with async work in flight cancels it all and leaves no process", "[async][lifecycle]") {
  const auto context = GENERATE(Context::fork, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir dir;
  const int children = flockmp::test::childProcessCount();
  const std::string started = (dir.path / "started").string();
  std::vector<flockmp::Future<int>> futures;
  flockmp::AsyncCall<int> call;
  {
    flockmp::BaseMultiProc pool{{.poolSize = 1, .context = context}};
    futures.push_back(pool.submit(gated, started, (dir.path / "never").string()));
    REQUIRE(waitForFile(started, 20'000));
    futures.push_back(pool.submit(add, 1, 2));
    call = pool.applyAsync(flockmp::test::range(5), thrice);
    pool.close();
    CHECK_THROWS_AS((void)pool.submit(add, 1, 2), flockmp::Error); // closed: a clear error
  }
  for (auto& f : futures) {
    const auto o = f.tryGet();
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::cancelled);
  }
  for (const auto& o : call.tryGet()) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::cancelled);
  }
  CHECK(flockmp::test::childProcessCount() == children);
}

TEST_CASE("waitFor times out on a running task and reports ready once it is done", "[async]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir dir;
  flockmp::BaseMultiProc pool{{.poolSize = 1}};
  const std::string started = (dir.path / "started").string();
  const std::string gate = (dir.path / "gate").string();
  auto f = pool.submit(gated, started, gate);
  REQUIRE(waitForFile(started, 20'000));
  // The task waits for the gate, which only this thread opens: it cannot be ready.
  CHECK(f.waitFor(std::chrono::milliseconds(20)) == std::future_status::timeout);
  CHECK_FALSE(f.ready());
  std::ofstream(gate) << "go";
  CHECK(f.waitFor(std::chrono::seconds(60)) == std::future_status::ready);
  CHECK(f.get() == 1);
}

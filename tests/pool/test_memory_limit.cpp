// Options::memoryLimit: an input that pushes its worker's resident memory past the limit fails
// with FailureKind::outOfMemory at its own index, the worker is replaced, the other inputs
// succeed; by `new`, by mmap-and-touch, by memory touched and never returned from, under fork and
// in pools under every context. Limits are set relative to the workers' own baseline (a forked
// test process, or one under AddressSanitizer, is already large).
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/test_util.hpp"

using flockmp::Context;
using flockmp::FailureKind;
using flockmp::test::nameOf;
using Catch::Matchers::Contains;

namespace {

constexpr std::uint64_t mib = std::uint64_t{1} << 20;

/// This process's resident memory, read here rather than through flock's own helpers.
std::uint64_t residentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}
/// This process's peak resident memory (VmHWM).
std::uint64_t peakBytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      std::uint64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

/// Writes one byte per page: stores through a volatile pointer cannot be optimised away.
void touch(char* p, std::uint64_t bytes) {
  volatile char* v = p;
  for (std::uint64_t i = 0; i < bytes; i += 4096) v[i] = 1;
}

enum class Mode : int {
  newTouch = 1,  ///< new, touch every page, delete, return: only the peak shows it
  mmapKeep = 2,  ///< mmap, touch, return holding it
  mmapBlock = 3, ///< mmap, touch, then block forever: only the parent can see it
  hugeNew = 4,   ///< new of a block four times the limit, never touched
  sigkill = 5,   ///< the worker kills itself with SIGKILL, as the kernel's OOM killer would
  mmapFree = 6,  ///< mmap, touch, munmap, return: the memory is surely given back (no allocator cache)
};

/// The input `at` does what `mode` says, reaching 64 MiB past `limit`; every input returns
/// (3x, its worker's pid). Carried to pool workers by the codec (an aggregate).
struct Hog {
  std::uint64_t limit = 0;
  int at = -1;
  int mode = 0;
  std::pair<long, long> operator()(int x) const {
    if (x == at) {
      const std::uint64_t rss = residentBytes();
      const std::uint64_t bytes = (limit > rss ? limit - rss : 0) + 64 * mib;
      switch (static_cast<Mode>(mode)) {
      case Mode::newTouch: {
        char* p = new char[bytes];
        touch(p, bytes);
        delete[] p;
        break;
      }
      case Mode::mmapKeep:
      case Mode::mmapFree:
      case Mode::mmapBlock: {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
        touch(static_cast<char*>(p), bytes);
        if (static_cast<Mode>(mode) == Mode::mmapBlock)
          for (;;) ::pause();
        if (static_cast<Mode>(mode) == Mode::mmapFree) ::munmap(p, bytes);
        break;
      }
      case Mode::hugeNew: {
        char* p = new char[4 * limit];
        touch(p, 4096);
        delete[] p;
        break;
      }
      case Mode::sigkill: std::raise(SIGKILL); break;
      }
    }
    return {3L * x, static_cast<long>(::getpid())};
  }
};

/// Each worker's peak resident memory, as the workers of `run` see it.
struct Probe {
  std::uint64_t operator()(int) const { return peakBytes(); }
};

/// The largest worker baseline plus a margin: inputs that do nothing stay under it, and a hog
/// reaches 64 MiB past it.
template <class Results>
std::uint64_t limitAbove(const Results& peaks) {
  return *std::max_element(peaks.begin(), peaks.end()) + 128 * mib;
}

/// The outcomes of a call with one hog at `at`: only it failed, with outOfMemory naming the
/// limit; every other input has its value; inputs after it ran on another worker.
template <class Outcomes>
void checkOneOutOfMemory(const Outcomes& out, int at, std::uint64_t limit, bool replacedChecked) {
  REQUIRE(out.size() > static_cast<std::size_t>(at));
  const auto& bad = out[static_cast<std::size_t>(at)];
  REQUIRE_FALSE(bad.hasValue());
  // Bugs caught: the hog reported as crashed / exception / timed out, or under another index.
  CHECK(bad.failure().kind == FailureKind::outOfMemory);
  CHECK(bad.failure().index == static_cast<std::size_t>(at));
  CHECK_THAT(bad.failure().message, Contains("memoryLimit of " + flockmp::detail::formatBytes(limit)));
  CHECK_THAT(bad.failure().describe(), Contains(fmt::format("input {}: out of memory", at)));
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i == static_cast<std::size_t>(at)) continue;
    CAPTURE(i);
    // Bug caught: neighbours lost, blamed, or wrong when the worker was replaced.
    REQUIRE(out[i].hasValue());
    CHECK(out[i]->first == 3L * static_cast<long>(i));
    // Bug caught: the worker past its limit kept serving inputs.
    if (replacedChecked && i > static_cast<std::size_t>(at)) CHECK(out[i]->second != bad.failure().pid);
  }
}

} // namespace

TEST_CASE("memoryLimit: an input whose new-and-touch goes past the limit is outOfMemory; neighbours succeed",
          "[memory_limit]") {
  flockmp::test::DeadlockGuard guard;
  const auto poolSize = GENERATE(1, 2);
  CAPTURE(poolSize);
  const std::uint64_t limit = limitAbove(flockmp::FunctionAsync::apply(flockmp::test::range(8), Probe{}, {.poolSize = poolSize}));
  const Hog hog{limit, 9, static_cast<int>(Mode::newTouch)};
  // One worker: the inputs after the hog can only run on its replacement.
  const auto out = flockmp::FunctionAsync::tryApply(flockmp::test::range(30), hog,
                                                    {.poolSize = poolSize, .memoryLimit = limit});
  checkOneOutOfMemory(out, 9, limit, poolSize == 1);
}

TEST_CASE("memoryLimit: mmap-and-touch past the limit (no new) is outOfMemory", "[memory_limit]") {
  flockmp::test::DeadlockGuard guard;
  const std::uint64_t limit = limitAbove(flockmp::FunctionAsync::apply(flockmp::test::range(8), Probe{}, {.poolSize = 1}));
  const auto out = flockmp::FunctionAsync::tryApply(flockmp::test::range(20), Hog{limit, 4, static_cast<int>(Mode::mmapKeep)},
                                                    {.poolSize = 1, .batchSize = 3, .memoryLimit = limit});
  checkOneOutOfMemory(out, 4, limit, true);
}

TEST_CASE("memoryLimit: an input that touches past the limit and never returns is outOfMemory, not a hang",
          "[memory_limit]") {
  // No timeOutError: only the memory limit can end the hog (the guard and CTest's timeout catch a
  // hang).
  flockmp::test::DeadlockGuard guard;
  const std::uint64_t limit = limitAbove(flockmp::FunctionAsync::apply(flockmp::test::range(8), Probe{}, {.poolSize = 2}));
  const auto out = flockmp::FunctionAsync::tryApply(flockmp::test::range(16), Hog{limit, 6, static_cast<int>(Mode::mmapBlock)},
                                                    {.poolSize = 2, .memoryLimit = limit});
  checkOneOutOfMemory(out, 6, limit, false);
  // The parent found it (the worker never got to check): its message says it killed it.
  CHECK_THAT(out[6].failure().message, Contains("killed"));
}

TEST_CASE("memoryLimit: a new that can never fit throws std::bad_alloc, reported as outOfMemory", "[memory_limit]") {
  if (!flockmp::detail::addressSpaceLimitUsable) {
    WARN("skipped: under AddressSanitizer/ThreadSanitizer the address space is not capped (they reserve terabytes), "
         "so an untouched new succeeds; the resident-memory checks are tested by the other cases");
    return;
  }
  flockmp::test::DeadlockGuard guard;
  const std::uint64_t limit = limitAbove(flockmp::FunctionAsync::apply(flockmp::test::range(4), Probe{}, {.poolSize = 1}));
  const auto out = flockmp::FunctionAsync::tryApply(flockmp::test::range(12), Hog{limit, 3, static_cast<int>(Mode::hugeNew)},
                                                    {.poolSize = 1, .memoryLimit = limit});
  checkOneOutOfMemory(out, 3, limit, true);
  // Bug caught: the bad_alloc reported as an exception rather than as the limit's doing.
  CHECK(out[3].failure().type == "std::bad_alloc");
  // Without a limit the same std::bad_alloc (past the machine's address space) is an exception.
  const auto plain = flockmp::FunctionAsync::tryApply(
      std::vector<int>{0}, [](int) { return std::vector<char>(std::size_t{1} << 62).size(); }, {.poolSize = 1});
  REQUIRE_FALSE(plain[0].hasValue());
  CHECK(plain[0].failure().kind == FailureKind::exception);
}

TEST_CASE("memoryLimit: a worker killed by SIGKILL from outside stays crashed, with the OOM killer as likely cause",
          "[memory_limit]") {
  flockmp::test::DeadlockGuard guard;
  const std::uint64_t limit = limitAbove(flockmp::FunctionAsync::apply(flockmp::test::range(4), Probe{}, {.poolSize = 1}));
  const auto out = flockmp::FunctionAsync::tryApply(flockmp::test::range(6), Hog{limit, 2, static_cast<int>(Mode::sigkill)},
                                                    {.poolSize = 1, .memoryLimit = limit});
  REQUIRE_FALSE(out[2].hasValue());
  // Bug caught: every SIGKILL under a memory limit taken for the limit's doing.
  CHECK(out[2].failure().kind == FailureKind::crashed);
  CHECK_THAT(out[2].failure().message, Contains("out-of-memory killer"));
  for (std::size_t i : {0u, 1u, 3u, 4u, 5u}) CHECK(out[i].hasValue());
}

TEST_CASE("memoryLimit: the worker's own check after each input sees memory touched and freed within it",
          "[memory_limit]") {
  // In a child process, so that the parent's poll cannot be what finds it: the peak, not the
  // memory held at the end, is what the worker checks.
  const std::uint64_t limit = residentBytes() + 96 * mib;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto& memory = flockmp::detail::memoryGuard();
    memory.arm(limit);
    int code = memory.overLimit() == 0 ? 0 : 1; // bug caught: a fresh worker already over
    const std::uint64_t bytes = limit - residentBytes() + 64 * mib;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) ::_exit(4);
    touch(static_cast<char*>(p), bytes);
    ::munmap(p, bytes);
    if (residentBytes() > limit) code |= 8; // the memory really was given back
    if (memory.overLimit() <= limit) code |= 2; // bug caught: the peak not seen once freed
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("memoryLimit in pools under every context: new, mmap, and a hog that blocks; the next call without a "
          "limit lets the same input run",
          "[memory_limit][pool]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard(300);
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  const std::uint64_t limit = limitAbove(pool.apply(flockmp::test::range(8), Probe{}, {.batchSize = 1}));
  for (Mode mode : {Mode::newTouch, Mode::mmapKeep, Mode::mmapBlock}) {
    CAPTURE(static_cast<int>(mode));
    const auto out = pool.tryApply(flockmp::test::range(24), Hog{limit, 11, static_cast<int>(mode)},
                                   {.memoryLimit = limit});
    checkOneOutOfMemory(out, 11, limit, false);
  }
  // The limit is the call's: without it the same input touches as much and succeeds (bug
  // caught: a pool worker keeping an earlier call's limit or peak).
  const auto free = pool.tryApply(flockmp::test::range(24), Hog{limit, 11, static_cast<int>(Mode::mmapFree)});
  for (const auto& o : free) CHECK(o.hasValue());
  // And with a limit again, inputs that stay under it pass although the workers touched more
  // before (the peak of an earlier call does not count).
  const auto under = pool.tryApply(flockmp::test::range(24), Hog{limit, -1, 0}, {.memoryLimit = limit});
  for (const auto& o : under) CHECK(o.hasValue());
}

TEST_CASE("memoryLimit: a value under 1 MiB is an OptionError; one under a worker's baseline fails its start clearly",
          "[memory_limit][options]") {
  flockmp::test::DeadlockGuard guard;
  // Bug caught: a count of megabytes (512) taken as bytes and failing every input obscurely.
  CHECK_THROWS_MATCHES(flockmp::FunctionAsync::apply(flockmp::test::range(4), Probe{}, {.memoryLimit = 512}),
                       flockmp::OptionError, Catch::Matchers::Message(
                           "flock: memoryLimit is in bytes and must be 0 (no limit) or at least 1048576 (got 512)"));
  // 1 MiB is below any worker's resident memory: no input can run, and the error says why
  // (bug caught: each input blamed as outOfMemory in turn, or a fork storm).
  const auto out = flockmp::FunctionAsync::tryApply(flockmp::test::range(4), Probe{},
                                                    {.poolSize = 1, .memoryLimit = mib, .restartBudget = {.maxRestarts = 2}});
  for (const auto& o : out) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::setup);
    CHECK_THAT(o.failure().message, Contains("memoryLimit (1 MiB) is below the worker's resident memory once started"));
  }
}

// Fault tolerance: a crash, hang or bad message costs one input, never the run. Every test runs
// under a deadlock guard: if the call hangs, SIGALRM ends the test binary and the test fails.
#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/test_util.hpp"
#include "support/deadlock_guard.hpp"
#include "support/proc_stats.hpp"
#include "support/processes.hpp"

using namespace std::chrono_literals;
using flockmp::FailureKind;
using flockmp::test::DeadlockGuard;
using flockmp::test::contains;

using flockmp::test::range;
using flockmp::test::TempDir;
using flockmp::test::alive;
using flockmp::test::inChild;
using flockmp::test::segfault;
using flockmp::test::waitGone;

namespace {

/// Writable pipes and sockets this process holds.
std::set<int> writablePipeFds() {
  std::set<int> fds;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (auto* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      int fd = std::atoi(e->d_name);
      struct stat st {};
      if (::fstat(fd, &st) == 0 &&
          ((S_ISFIFO(st.st_mode) && (::fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) || S_ISSOCK(st.st_mode)))
        fds.insert(fd);
    }
    ::closedir(d);
  }
  return fds;
}

/// Pipes the test process inherited (stdout under ctest, a harness's pipes...): not flock's.
const std::set<int>& inheritedPipes() {
  static const std::set<int> fds = writablePipeFds();
  return fds;
}

/// In a worker: its two channels (results, and commands, whose reverse direction the parent never
/// reads), the only pipes or sockets it holds that the test process did not already have.
std::vector<int> writablePipes() {
  std::vector<int> fds;
  for (int fd : writablePipeFds())
    if (!inheritedPipes().contains(fd)) fds.push_back(fd);
  return fds;
}



/// Checks that every input but `failed` has the value `expected(i)`.
template <class R, class F>
void checkOthersSucceeded(const std::vector<flockmp::Outcome<R>>& outcomes, const std::set<std::size_t>& failed, F expected) {
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (failed.contains(i)) {
      CHECK_FALSE(outcomes[i].hasValue());
    } else {
      REQUIRE(outcomes[i].hasValue());
      CHECK(*outcomes[i] == expected(i));
    }
  }
}

} // namespace

TEST_CASE("a segfault fails only its input, with SIGSEGV and the worker's pid", "[faults][crash]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(40), [](int x) {
    if (x == 17) segfault();
    return x * 3;
  }, {.poolSize = 2});
  REQUIRE(outcomes.size() == 40);
  const auto& f = outcomes[17].failure();
  CHECK(f.index == 17);
  CHECK(f.kind == FailureKind::crashed);
  CHECK(f.type == "SIGSEGV");
  CHECK(f.signal == SIGSEGV);
  CHECK(f.pid > 0);
  CHECK(f.pid != ::getpid());
  CHECK_THAT(f.message, contains("SIGSEGV"));
  checkOthersSucceeded(outcomes, {17}, [](std::size_t i) { return static_cast<int>(i) * 3; });
}

TEST_CASE("abort and other fatal signals are reported by name", "[faults][crash]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(30), [](int x) {
    if (x == 3) std::abort();
    if (x == 11) std::raise(SIGBUS);
    if (x == 25) std::raise(SIGFPE);
    return x;
  }, {.poolSize = 2});
  CHECK(outcomes[3].failure().type == "SIGABRT");
  CHECK(outcomes[11].failure().type == "SIGBUS");
  CHECK(outcomes[25].failure().type == "SIGFPE");
  checkOthersSucceeded(outcomes, {3, 11, 25}, [](std::size_t i) { return static_cast<int>(i); });
}

TEST_CASE("a crash replaces the worker and the call throws TaskError naming the input", "[faults][crash]") {
  DeadlockGuard guard;
  try {
    (void)flockmp::FunctionAsync::apply(range(10), [](int x) {
      if (x == 4) std::abort();
      return x;
    }, {.poolSize = 1});
    FAIL("no exception");
  } catch (const flockmp::TaskError& e) {
    CHECK_THAT(e.what(), contains("input 4: crashed SIGABRT"));
    REQUIRE(e.failures().size() == 1);
    // With one worker, inputs after the crash ran on its replacement.
    const auto& outcomes = e.outcomes<int>();
    CHECK(outcomes[9].value() == 9);
  }
}

TEST_CASE("exit and _exit in the middle of an input report the exit status", "[faults][exit]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(20), [](int x) {
    if (x == 5) ::_exit(3);
    if (x == 12) std::quick_exit(4);
    return x;
  }, {.poolSize = 2});
  const auto& f5 = outcomes[5].failure();
  CHECK(f5.kind == FailureKind::crashed);
  REQUIRE(f5.exitStatus.has_value());
  CHECK(*f5.exitStatus == 3);
  CHECK_THAT(f5.message, contains("exited with status 3"));
  CHECK(outcomes[12].failure().exitStatus == 4);
  checkOthersSucceeded(outcomes, {5, 12}, [](std::size_t i) { return static_cast<int>(i); });
}

TEST_CASE("an input running past timeOutError is killed and reported; the rest completes", "[faults][timeout]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(12), [](int x) {
    if (x == 2) std::this_thread::sleep_for(60s);
    return x + 100;
  }, {.poolSize = 2, .timeOutError = 300ms});
  const auto& f = outcomes[2].failure();
  CHECK(f.kind == FailureKind::timedOut);
  CHECK_THAT(f.message, contains("300ms"));
  CHECK_THAT(flockmp::TaskError({f}, std::vector<flockmp::Outcome<int>>{}).what(), contains("input 2: timed out"));
  checkOthersSucceeded(outcomes, {2}, [](std::size_t i) { return static_cast<int>(i) + 100; });
}

TEST_CASE("a timeout kills the worker's whole process group, grandchildren too", "[faults][timeout]") {
  DeadlockGuard guard;
  int pfd[2];
  REQUIRE(::pipe(pfd) == 0);
  auto outcomes = flockmp::FunctionAsync::tryApply(range(1), [&](int) {
    pid_t g = ::fork();
    if (g == 0) {
      ::pause();
      ::_exit(0);
    }
    [[maybe_unused]] auto w = ::write(pfd[1], &g, sizeof g);
    ::pause(); // hang until killed
    return 0;
  }, {.timeOutError = 200ms});
  ::close(pfd[1]);
  pid_t grandchild = 0;
  REQUIRE(::read(pfd[0], &grandchild, sizeof grandchild) == sizeof grandchild);
  ::close(pfd[0]);
  CHECK(outcomes[0].failure().kind == FailureKind::timedOut);
  CHECK(waitGone(grandchild));
}

TEST_CASE("an exception of any type keeps the worker serving", "[faults][exception]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(10), [](int x) {
    if (x == 2) throw std::logic_error("logic");
    if (x == 6) throw 3.5;
    return static_cast<int>(::getpid());
  }, {.poolSize = 1});
  CHECK(outcomes[2].failure().kind == FailureKind::exception);
  CHECK(outcomes[2].failure().type == "std::logic_error");
  CHECK(outcomes[2].failure().message == "logic");
  CHECK(outcomes[6].failure().type == "double");
  std::set<int> pids;
  for (std::size_t i = 0; i < 10; ++i)
    if (outcomes[i]) pids.insert(*outcomes[i]);
  CHECK(pids.size() == 1); // the same worker served every input
}

namespace {
struct Fragile {
  int value = 0;
  bool poisoned = false;
  template <class Ar>
  void serialize(Ar& ar) {
    if (poisoned) throw std::runtime_error("poisoned value");
    ar(value);
  }
  bool operator==(const Fragile& o) const { return value == o.value; }
};
} // namespace

TEST_CASE("a result the codec cannot encode fails its input with a codec error", "[faults][codec]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(8), [](int x) {
    return std::pair<Fragile, int>{Fragile{x, x == 5}, static_cast<int>(::getpid())};
  }, {.poolSize = 1});
  const auto& f = outcomes[5].failure();
  CHECK(f.kind == FailureKind::codec);
  CHECK_THAT(f.message, contains("poisoned value"));
  std::set<int> pids;
  for (std::size_t i = 0; i < 8; ++i) {
    if (i == 5) continue;
    REQUIRE(outcomes[i].hasValue());
    CHECK(outcomes[i]->first.value == static_cast<int>(i));
    pids.insert(outcomes[i]->second);
  }
  CHECK(pids.size() == 1);
}

TEST_CASE("a worker that writes garbage is replaced and its input fails with a protocol error", "[faults][protocol]") {
  DeadlockGuard guard;
  (void)inheritedPipes(); // computed in the parent, before any worker exists
  auto outcomes = flockmp::FunctionAsync::tryApply(range(20), [](int x) {
    if (x == 7) {
      const char junk[] = "this is not a frame, just garbage bytes in the channel";
      for (int fd : writablePipes()) [[maybe_unused]] auto w = ::write(fd, junk, sizeof junk);
      ::pause(); // still in flight when the parent notices
    }
    return x;
  }, {.poolSize = 2});
  const auto& f = outcomes[7].failure();
  CHECK(f.kind == FailureKind::protocol);
  CHECK_THAT(f.message, contains("corrupt frame"));
  checkOthersSucceeded(outcomes, {7}, [](std::size_t i) { return static_cast<int>(i); });
}

TEST_CASE("a truncated frame does not hang the parent", "[faults][protocol]") {
  DeadlockGuard guard;
  (void)inheritedPipes();
  auto outcomes = flockmp::FunctionAsync::tryApply(range(6), [](int x) {
    if (x == 3) {
      // A valid header announcing 4096 bytes, followed by far fewer.
      std::vector<std::byte> frame;
      flockmp::detail::FrameWriter w(frame);
      w.begin(flockmp::detail::FrameKind::result);
      w.append("0123456789", 10);
      std::uint64_t len = 4096;
      std::memcpy(frame.data() + 8, &len, sizeof len);
      for (int fd : writablePipes()) [[maybe_unused]] auto n = ::write(fd, frame.data(), frame.size());
    }
    return x;
  }, {.poolSize = 1, .batchSize = 1});
  REQUIRE_FALSE(outcomes[3].hasValue());
  CHECK(outcomes[3].failure().kind == FailureKind::protocol);
  CHECK_THAT(outcomes[3].failure().message, contains("truncated frame"));
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    // Inputs in flight on the corrupt worker fail with a protocol error; the rest succeed.
    if (outcomes[i]) CHECK(*outcomes[i] == static_cast<int>(i));
    else CHECK(outcomes[i].failure().kind == FailureKind::protocol);
  }
  CHECK(outcomes[0].hasValue());
  CHECK(outcomes[5].hasValue());
}

TEST_CASE("random frames from a worker are rejected, never crash the parent", "[faults][protocol][fuzz]") {
  DeadlockGuard guard(300);
  (void)inheritedPipes();
  for (unsigned seed = 0; seed < 40; ++seed) {
    auto outcomes = flockmp::FunctionAsync::tryApply(range(4), [seed](int x) {
      if (x == 1) {
        std::mt19937 rng(seed);
        std::vector<std::byte> bytes;
        flockmp::detail::FrameWriter w(bytes);
        for (int k = 0; k < 4; ++k) {
          w.begin(static_cast<flockmp::detail::FrameKind>(1 + rng() % 5));
          const std::size_t n = rng() % 40;
          for (std::size_t j = 0; j < n; ++j) {
            auto b = static_cast<std::byte>(rng() % 4 == 0 ? 0xff : rng() % 3);
            w.append(&b, 1);
          }
          w.end();
        }
        if (seed % 2) bytes[rng() % bytes.size()] = static_cast<std::byte>(rng());
        for (int fd : writablePipes()) [[maybe_unused]] auto n = ::write(fd, bytes.data(), bytes.size());
        ::pause();
      }
      return std::to_string(x);
    }, {.poolSize = 1, .batchSize = 1});
    REQUIRE(outcomes.size() == 4);
    // Whatever the bytes were, every input has an outcome and the others are right.
    CHECK_FALSE(outcomes[1].hasValue());
    CHECK(outcomes[0].value() == "0");
    CHECK(outcomes[3].value() == "3");
  }
}

TEST_CASE("a result larger than the socket buffer is delivered intact", "[faults][large]") {
  DeadlockGuard guard;
  auto r = flockmp::FunctionAsync::apply(range(3), [](int x) {
    std::string s(static_cast<std::size_t>(20 + x) << 20, '\0');
    for (std::size_t i = 0; i < s.size(); i += 4096) s[i] = static_cast<char>('a' + (i / 4096 + static_cast<std::size_t>(x)) % 26);
    return s;
  }, {.poolSize = 2});
  for (std::size_t x = 0; x < 3; ++x) {
    REQUIRE(r[x].size() == (20 + x) << 20);
    for (std::size_t i = 0; i < r[x].size(); i += 4096) REQUIRE(r[x][i] == static_cast<char>('a' + (i / 4096 + x) % 26));
  }
}

TEST_CASE("a grandchild that keeps the result channel open does not hang the call nor outlive it", "[faults][grandchild]") {
  DeadlockGuard guard;
  auto pids = flockmp::FunctionAsync::apply(range(4), [](int x) {
    if (x != 1) return 0;
    pid_t g = ::fork();
    if (g == 0) {
      ::pause(); // inherits every fd of the worker, its result channel included
      ::_exit(0);
    }
    return static_cast<int>(g);
  }, {.poolSize = 2});
  REQUIRE(pids[1] > 0);
  CHECK(waitGone(pids[1]));
}

TEST_CASE("a grandchild holding the result channel does not hide its worker's crash", "[faults][grandchild]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(4), [](int x) {
    if (x == 2) {
      if (::fork() == 0) {
        ::pause();
        ::_exit(0);
      }
      std::abort();
    }
    return x;
  }, {.poolSize = 1});
  CHECK(outcomes[2].failure().type == "SIGABRT");
  checkOthersSucceeded(outcomes, {2}, [](std::size_t i) { return static_cast<int>(i); });
}

TEST_CASE("a callable that starts threads does not hang the call", "[faults][threads]") {
  DeadlockGuard guard;
  auto r = flockmp::FunctionAsync::apply(range(6), [](int x) {
    std::thread([] { std::this_thread::sleep_for(3600s); }).detach();
    return x * 2;
  }, {.poolSize = 2});
  CHECK(r == std::vector<int>{0, 2, 4, 6, 8, 10});
}

TEST_CASE("a worker killed by SIGKILL (as the OOM killer does) is reported with a memory hint", "[faults][oom]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(5), [](int x) {
    if (x == 0) std::raise(SIGKILL);
    return x;
  }, {.poolSize = 1});
  const auto& f = outcomes[0].failure();
  CHECK(f.kind == FailureKind::crashed);
  CHECK(f.type == "SIGKILL");
  CHECK_THAT(f.message, contains("out-of-memory"));
  checkOthersSucceeded(outcomes, {0}, [](std::size_t i) { return static_cast<int>(i); });
}

namespace {
/// Runs `body` in a forked process of its own (a stand-in for a user's program) and returns its
/// wait status; the body reports worker pids through `pidPipe`.
template <class Body>
pid_t spawnProgram(Body body, int& pidPipeRead, bool ownGroup) {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (ownGroup) ::setpgid(0, 0);
    // A user's program starts with default dispositions, not the test framework's handlers.
    for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGABRT}) std::signal(sig, SIG_DFL);
    ::close(p[0]);
    body(p[1]);
    ::_exit(0);
  }
  if (ownGroup) ::setpgid(pid, pid);
  ::close(p[1]);
  pidPipeRead = p[0];
  return pid;
}

std::vector<pid_t> readPids(int fd, std::size_t n) {
  std::vector<pid_t> pids;
  while (pids.size() < n) {
    pid_t x;
    if (::read(fd, &x, sizeof x) != sizeof x) break;
    pids.push_back(x);
  }
  return pids;
}

void runSleepingWorkers(int pidPipe) {
  (void)flockmp::FunctionAsync::apply(range(2), [pidPipe](int) {
    pid_t me = ::getpid();
    [[maybe_unused]] auto w = ::write(pidPipe, &me, sizeof me);
    ::pause();
    return 0;
  }, {.poolSize = 2, .batchSize = 1});
}
} // namespace

TEST_CASE("when the parent process is killed, no worker survives it", "[faults][parent]") {
  DeadlockGuard guard;
  int rd = -1;
  pid_t program = spawnProgram(runSleepingWorkers, rd, false);
  auto workers = readPids(rd, 2);
  ::close(rd);
  REQUIRE(workers.size() == 2);
  ::kill(program, SIGKILL);
  int status = 0;
  ::waitpid(program, &status, 0);
  for (pid_t w : workers) CHECK(waitGone(w));
}

TEST_CASE("SIGINT to the terminal's process group leaves nothing running and nothing printed", "[faults][sigint]") {
  DeadlockGuard guard;
  int out[2];
  REQUIRE(::pipe(out) == 0);
  int rd = -1;
  pid_t program = spawnProgram(
      [&](int pidPipe) {
        ::dup2(out[1], 1);
        ::dup2(out[1], 2);
        ::close(out[0]);
        runSleepingWorkers(pidPipe);
      },
      rd, true);
  ::close(out[1]);
  auto workers = readPids(rd, 2);
  ::close(rd);
  if (workers.size() != 2 || ::getpgid(program) != program) ::kill(program, SIGKILL); // never leave it behind
  REQUIRE(workers.size() == 2);
  REQUIRE(::getpgid(program) == program);
  ::kill(-program, SIGINT); // what Ctrl-C does to the foreground job
  int status = 0;
  ::waitpid(program, &status, 0);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGINT);
  for (pid_t w : workers) CHECK(waitGone(w));
  std::string printed;
  char buf[256];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) printed.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  CHECK(printed.empty());
}

TEST_CASE("fork failing under RLIMIT_NPROC is a clear flockmp::Error and leaves no worker", "[faults][limits]") {
  DeadlockGuard guard;
  int code = inChild([] {
    // Root ignores RLIMIT_NPROC: become an unprivileged user first where we can.
    if (::geteuid() == 0) {
      if (auto* pw = ::getpwnam("nobody")) {
        if (::setgid(pw->pw_gid) != 0 || ::setuid(pw->pw_uid) != 0) return 2;
      } else {
        return 2;
      }
    }
    rlimit lim{1, 1};
    if (::setrlimit(RLIMIT_NPROC, &lim) != 0) return 3;
    try {
      (void)flockmp::FunctionAsync::apply(range(8), [](int x) { return x; }, {.poolSize = 4});
      return 4; // fork should have failed
    } catch (const flockmp::TaskError&) {
      return 5;
    } catch (const flockmp::Error& e) {
      std::string what = e.what();
      if (what.find("fork") == std::string::npos) return 6;
      if (what.find("Resource temporarily unavailable") == std::string::npos) return 7;
      return flockmp::test::childProcessCount() == 0 ? 0 : 8;
    }
  });
  CHECK(code == 0);
}

TEST_CASE("running out of file descriptors: no worker is a SystemError with the errno, one worker finishes the call", "[faults][limits]") {
  DeadlockGuard guard;
#ifdef FLOCK_TEST_UNDER_SANITIZER
  // UBSan's vptr check probes memory through a pipe of its own; with no fd left it reports every
  // object as having an invalid vptr.
  WARN("skipped under sanitizers: they need file descriptors of their own");
  return;
#endif
  // Each section runs in a child whose RLIMIT_NOFILE leaves room for exactly `spare` more fds; a
  // worker needs four sockets and a pidfd. The limit bounds fd numbers, not their count: the gaps
  // below the highest open fd are filled first.
  const auto withSpareFds = [](int spare, int expectedErrno, const char* operation) {
    return inChild([=] {
      int highest = -1;
      for (;;) {
        const int fd = ::open("/dev/null", O_RDONLY);
        if (fd < 0) return 2;
        if (fd > highest && ::fcntl(fd + 1, F_GETFD) < 0) {
          bool above = true; // no open fd above this one?
          for (int k = fd + 1; k < fd + 64; ++k) above = above && ::fcntl(k, F_GETFD) < 0;
          if (above) {
            highest = fd - 1;
            ::close(fd);
            break;
          }
        }
      }
      const int open = flockmp::test::openFdCount();
      rlimit lim{static_cast<rlim_t>(highest + 1 + spare), static_cast<rlim_t>(highest + 1 + spare)};
      if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 3;
      try {
        // inherit: these fd budgets count a worker's sockets and pidfd; WorkerOutput::forward
        // would add its two output pipes.
        auto r = flockmp::FunctionAsync::apply(range(8), [](int x) { return x * 3; },
                                               {.poolSize = 4, .workerOutput = flockmp::WorkerOutput::inherit});
        if (expectedErrno != 0) return 4; // starting should have failed
        // Bug caught: one worker failing to start must not fail or lose the call.
        for (int i = 0; i < 8; ++i)
          if (r[static_cast<std::size_t>(i)] != i * 3) return 5;
      } catch (const flockmp::SystemError& e) {
        if (expectedErrno == 0) return 6;
        // Bug caught: the errno lost, or only kept as text.
        if (e.code() != std::error_code(expectedErrno, std::generic_category())) return 7;
        const std::string what = e.what();
        if (what.find(operation) == std::string::npos) return 8;
        if (what.find("Too many open files") == std::string::npos) return 9;
        if (what.find("RLIMIT_NOFILE") == std::string::npos) return 10;
        // Bug caught: a hint that blames the kernel version for an fd limit.
        if (what.find("Linux 5.3") != std::string::npos) return 11;
      } catch (...) {
        return 12;
      }
      if (flockmp::test::childProcessCount() != 0) return 13;
      return flockmp::test::openFdCount() == open ? 0 : 14;
    });
  };
  SECTION("no room for a socket pair") { CHECK(withSpareFds(1, EMFILE, "socketpair") == 0); }
  SECTION("room for the sockets, not the pidfd") { CHECK(withSpareFds(4, EMFILE, "pidfd_open") == 0); }
  SECTION("room for one worker of four") { CHECK(withSpareFds(8, 0, "") == 0); }
}

TEST_CASE("workers that keep dying before any input end the call through the restart budget", "[faults][budget]") {
  DeadlockGuard guard;
  const int children = flockmp::test::childProcessCount();
  SECTION("an initializer that crashes") {
    auto outcomes = flockmp::FunctionAsync::tryApply(range(10), [](int x) { return x; },
                                                   {.poolSize = 2,
                                                    .restartBudget = {.maxRestarts = 5, .period = 60s},
                                                    .initializer = [] { std::abort(); }});
    for (const auto& o : outcomes) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::notRun);
      CHECK_THAT(o.failure().message, contains("restart budget exhausted"));
      CHECK_THAT(o.failure().message, contains("SIGABRT"));
    }
  }
  SECTION("an initializer that throws") {
    try {
      (void)flockmp::FunctionAsync::apply(range(10), [](int x) { return x; },
                                        {.poolSize = 2,
                                         .restartBudget = {.maxRestarts = 3, .period = 60s},
                                         .initializer = [] { throw std::runtime_error("cannot connect"); }});
      FAIL("no exception");
    } catch (const flockmp::TaskError& e) {
      REQUIRE(e.failures().size() == 10);
      CHECK(e.failures()[0].kind == FailureKind::setup);
      CHECK_THAT(e.what(), contains("cannot connect"));
    }
  }
  CHECK(flockmp::test::childProcessCount() == children);
}

TEST_CASE("an initializer runs once in each worker before its inputs", "[faults][initializer]") {
  DeadlockGuard guard;
  static int initialized = 0; // per process: the worker's copy is set by its initializer
  auto r = flockmp::FunctionAsync::apply(range(50), [](int) { return initialized; },
                                       {.poolSize = 2, .initializer = [] { initialized += 1; }});
  for (int v : r) CHECK(v == 1);
  CHECK(initialized == 0); // the parent's copy is untouched
}

TEST_CASE("a finalizer runs once in each worker that stops normally, recycled ones included", "[faults][initializer]") {
  DeadlockGuard guard;
  char dir[] = "/tmp/flock-final-XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string base = dir;
  auto pids = flockmp::FunctionAsync::apply(range(40), [](int) { return static_cast<int>(::getpid()); },
                                          {.poolSize = 2, .maxTasksPerWorker = 10, .finalizer = [base] {
                                             // Appends, so a finalizer that ran twice leaves two bytes.
                                             std::ofstream((base + "/" + std::to_string(::getpid())), std::ios::app) << 'f';
                                           }});
  std::set<int> workers(pids.begin(), pids.end());
  std::set<int> finalized;
  if (DIR* d = ::opendir(dir)) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') {
        finalized.insert(std::atoi(e->d_name));
        struct stat st {};
        CHECK(::stat((base + "/" + e->d_name).c_str(), &st) == 0);
        CHECK(st.st_size == 1);
      }
    ::closedir(d);
  }
  CHECK(workers.size() >= 4);
  // Every worker that ran inputs finalized. A replacement started while inputs were still queued may
  // find the queue emptied by its sibling: it stops normally too, so it finalizes without a result.
  CHECK(std::includes(finalized.begin(), finalized.end(), workers.begin(), workers.end()));
  CHECK(finalized.size() <= workers.size() + 2);
  for (int pid : finalized) std::remove((base + "/" + std::to_string(pid)).c_str());
  ::rmdir(dir);
}

TEST_CASE("maxTasksPerWorker recycles workers", "[faults][recycle]") {
  DeadlockGuard guard;
  auto pids = flockmp::FunctionAsync::apply(range(20), [](int) { return static_cast<int>(::getpid()); },
                                          {.poolSize = 2, .maxTasksPerWorker = 3});
  std::map<int, int> perPid;
  for (int p : pids) ++perPid[p];
  CHECK(perPid.size() >= 7);
  for (auto [pid, n] : perPid) CHECK(n <= 3);
}

TEST_CASE("retries run a crashed input again on a fresh worker", "[faults][retry]") {
  DeadlockGuard guard;
  char dir[] = "/tmp/flock-retry-XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string marker = std::string(dir) + "/crashed-once";
  auto crashOnce = [marker](int x) {
    if (x == 4 && ::access(marker.c_str(), F_OK) != 0) {
      std::fclose(std::fopen(marker.c_str(), "w"));
      std::abort();
    }
    return x;
  };
  SECTION("with a retry the input succeeds") {
    auto r = flockmp::FunctionAsync::apply(range(8), crashOnce, {.poolSize = 2, .retries = 1});
    CHECK(r == range(8));
  }
  SECTION("without, it fails") {
    auto outcomes = flockmp::FunctionAsync::tryApply(range(8), crashOnce, {.poolSize = 2});
    CHECK(outcomes[4].failure().type == "SIGABRT");
  }
  SECTION("an input that always crashes fails after its retries") {
    auto outcomes = flockmp::FunctionAsync::tryApply(range(3), [](int x) {
      if (x == 1) std::abort();
      return x;
    }, {.poolSize = 1, .retries = 2});
    CHECK(outcomes[1].failure().kind == FailureKind::crashed);
    CHECK(outcomes[2].value() == 2);
  }
  std::remove(marker.c_str());
  ::rmdir(dir);
}

TEST_CASE("cancellation through a stop_token reports unfinished inputs and stops the workers", "[faults][cancel]") {
  DeadlockGuard guard;
  const int children = flockmp::test::childProcessCount();
  std::stop_source source;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(200), [](int x) {
    std::this_thread::sleep_for(20ms);
    return x;
  }, {.poolSize = 2, .batchSize = 1, .stopToken = source.get_token(), .onProgress = [&](const flockmp::Progress& p) {
        if (p.done >= 4) source.request_stop();
      }});
  std::size_t done = 0, cancelled = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (outcomes[i]) {
      CHECK(*outcomes[i] == static_cast<int>(i));
      ++done;
    } else {
      CHECK(outcomes[i].failure().kind == FailureKind::cancelled);
      ++cancelled;
    }
  }
  CHECK(done >= 4);
  CHECK(cancelled > 0);
  CHECK(done + cancelled == 200);
  CHECK(flockmp::test::childProcessCount() == children);
}

TEST_CASE("destroying a call early (an exception from onProgress) kills and reaps its workers", "[faults][cleanup]") {
  DeadlockGuard guard;
  const int children = flockmp::test::childProcessCount();
  const int fds = flockmp::test::openFdCount();
  CHECK_THROWS_WITH(flockmp::FunctionAsync::apply(range(100), [](int x) {
    std::this_thread::sleep_for(20ms);
    return x;
  }, {.poolSize = 2, .onProgress = [](const flockmp::Progress& p) {
        if (p.done >= 2) throw std::runtime_error("user gave up");
      }}), "user gave up");
  CHECK(flockmp::test::childProcessCount() == children);
  CHECK(flockmp::test::openFdCount() == fds);
}

// Hostile tasks, hostile parents and odd environments: whatever a task, the application or the
// environment does, every input ends with its result or a failure that names it, and one bad
// input costs that input alone. Each test names the defect it guards against.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <new>
#include <set>
#include <sstream>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/proc_stats.hpp"
#include "support/processes.hpp"
#include "support/test_util.hpp"

using namespace std::chrono_literals;
using flockmp::FailureKind;
using flockmp::test::contains;
using flockmp::test::DeadlockGuard;
using flockmp::test::range;
using flockmp::test::TempDir;
using flockmp::test::inChild;
using flockmp::test::segfault;
using flockmp::test::waitGone;

namespace {


bool fileExists(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}

/// Bounded wait for a marker file (not a timing assertion: the bound only ends a broken run).
bool waitForFile(const std::filesystem::path& p, std::chrono::seconds limit = 20s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!fileExists(p)) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

void touch(const std::filesystem::path& p) { std::ofstream(p) << "x"; }

std::string readFile(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}


/// Every input but those in `failed` has the value `i * factor`.
template <class R>
bool othersSucceeded(const std::vector<flockmp::Outcome<R>>& outcomes, const std::set<std::size_t>& failed, int factor = 1) {
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (failed.contains(i) == outcomes[i].hasValue()) return false;
    if (outcomes[i] && *outcomes[i] != static_cast<int>(i) * factor) return false;
  }
  return true;
}

void closeFdsFrom3() { ::syscall(SYS_close_range, 3U, ~0U, 0U); }

} // namespace

TEST_CASE("a call nested inside a task runs like any other call", "[hostile][nested]") {
  DeadlockGuard guard;
  const int children = flockmp::test::childProcessCount();
  const int fds = flockmp::test::openFdCount();
  // Bug caught: a nested call's sockets reused the numbers of fds the worker had closed but still
  // had registered, and its workers closed their own channel (restart budget exhausted).
  auto outcomes = flockmp::FunctionAsync::tryApply(range(6), [](int x) {
    auto inner = flockmp::FunctionAsync::apply(range(5), [x](int y) { return x * y; }, {.poolSize = 2});
    int sum = 0;
    for (int v : inner) sum += v;
    return sum;
  }, {.poolSize = 2});
  REQUIRE(outcomes.size() == 6);
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    INFO("input " << i);
    REQUIRE(outcomes[i].hasValue());
    CHECK(*outcomes[i] == static_cast<int>(i) * 10); // x * (0 + 1 + 2 + 3 + 4)
  }
  CHECK(flockmp::test::childProcessCount() == children);
  CHECK(flockmp::test::openFdCount() == fds);
}

TEST_CASE("a task that closes every fd fails alone; the other inputs run on fresh workers", "[hostile][channel]") {
  DeadlockGuard guard;
  auto outcomes = flockmp::FunctionAsync::tryApply(range(30), [](int x) {
    if (x == 7) closeFdsFrom3();
    return x;
  }, {.poolSize = 2});
  // Bug caught: every unresolved input failed as "not run" and input 7 was never named.
  REQUIRE_FALSE(outcomes[7].hasValue());
  CHECK(outcomes[7].failure().kind == FailureKind::protocol);
  CHECK_THAT(outcomes[7].failure().message, contains("closed or replaced the worker's channel"));
  CHECK(othersSucceeded(outcomes, {7}));

  // Bug caught: what() naming an innocent input instead of the one that broke the channel.
  try {
    (void)flockmp::FunctionAsync::apply(range(30), [](int x) {
      if (x == 12) closeFdsFrom3();
      return x;
    }, {.poolSize = 2});
    FAIL("no exception");
  } catch (const flockmp::TaskError& e) {
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].index == 12);
    CHECK_THAT(std::string(e.what()), contains("input 12: protocol error"));
  }
}

TEST_CASE("frames never go into a file a task opened under the numbers of the channel it closed", "[hostile][channel]") {
  DeadlockGuard guard;
  TempDir dir;
  const auto victim = dir.path / "victim.txt";
  touch(victim);
  std::filesystem::resize_file(victim, 0);
  auto outcomes = flockmp::FunctionAsync::tryApply(range(12), [&victim](int x) {
    if (x == 4) {
      closeFdsFrom3();
      // The user's own files take the lowest numbers: the ones the channel had.
      for (int k = 0; k < 16; ++k) (void)::open(victim.c_str(), O_WRONLY | O_APPEND);
    }
    return x;
  }, {.poolSize = 1});
  CHECK(outcomes[4].failure().kind == FailureKind::protocol);
  CHECK(othersSucceeded(outcomes, {4}));
  // Bug caught: the worker writing result frames into the user's file.
  CHECK(std::filesystem::file_size(victim) == 0);
}

TEST_CASE("garbage written into the channel by a task that goes on fails that input alone", "[hostile][channel]") {
  DeadlockGuard guard;
  const auto runWithGarbageAt = [](int bad) {
    return flockmp::FunctionAsync::tryApply(range(30), [bad](int x) {
      if (x == bad) {
        const char junk[] = "this is not a frame, just garbage bytes in the channel";
        // The worker's result channel is a socket above fd 2; write to every socket it has.
        for (int fd = 3; fd < 64; ++fd) {
          struct stat st {};
          if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) [[maybe_unused]] auto w = ::write(fd, junk, sizeof junk);
        }
      }
      return x;
    }, {.poolSize = 2});
  };
  for (int bad : {0, 7, 29}) {
    INFO("garbage at input " << bad);
    auto outcomes = runWithGarbageAt(bad);
    const auto b = static_cast<std::size_t>(bad);
    // Bug caught: the inputs in flight with it (29 of them) failing as protocol errors.
    REQUIRE_FALSE(outcomes[b].hasValue());
    CHECK(outcomes[b].failure().kind == FailureKind::protocol);
    CHECK(othersSucceeded(outcomes, {b}));
  }
}

TEST_CASE("a crash is reported with its signal when the application ignores or reaps SIGCHLD", "[hostile][sigchld]") {
  DeadlockGuard guard;
  const auto crashReported = [] {
    auto outcomes = flockmp::FunctionAsync::tryApply(range(8), [](int x) {
      if (x == 2) segfault();
      return x;
    }, {.poolSize = 2});
    if (outcomes[2].hasValue()) return 3;
    const auto& f = outcomes[2].failure();
    // Bug caught: "crashed: the worker exited with status 0" (the status was lost).
    if (f.kind != FailureKind::crashed || f.signal != SIGSEGV || f.type != "SIGSEGV") return 4;
    if (!othersSucceeded(outcomes, {2})) return 5;
    return flockmp::test::childProcessCount() == 0 ? 0 : 6;
  };
  SECTION("SIGCHLD ignored") {
    CHECK(inChild([&] {
      std::signal(SIGCHLD, SIG_IGN);
      return crashReported();
    }) == 0);
  }
  SECTION("an application handler that reaps every child with waitpid(-1, ...)") {
    CHECK(inChild([&] {
      struct sigaction sa {};
      sa.sa_handler = [](int) {
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
      };
      ::sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      ::sigaction(SIGCHLD, &sa, nullptr);
      return crashReported();
    }) == 0);
  }
}

TEST_CASE("finished results reach the parent while their batch still runs, whatever their type", "[hostile][progress]") {
  DeadlockGuard guard;
  TempDir dir;
  const auto seen = dir.path / "parent-saw-5";
  // One worker, one batch of ten: input 5 waits until the parent has counted inputs 0-4 done.
  // Bug caught: int results were sent only when their batch ended, so the parent saw nothing
  // (and input 5 gave up waiting and returned -1).
  auto values = flockmp::FunctionAsync::apply(range(40), [&seen](int x) {
    std::this_thread::sleep_for(2ms);
    if (x == 5 && !waitForFile(seen)) return -1;
    return x;
  }, {.poolSize = 1, .onProgress = [&seen](const flockmp::Progress& p) {
        if (p.done >= 5 && !fileExists(seen)) touch(seen);
      }});
  CHECK(values == range(40));
}

TEST_CASE("a stop keeps every result that was finished before it", "[hostile][cancel]") {
  DeadlockGuard guard;
  TempDir dir;
  const auto reached = dir.path / "input-5-started";
  std::stop_source source;
  // Inputs 0-4 finish before input 5 starts and leaves the marker; the parent then stops the
  // call. Bug caught: int results still buffered in the worker were lost with it, and inputs 0-4
  // were reported cancelled.
  auto outcomes = flockmp::FunctionAsync::tryApply(range(40), [&reached](int x) {
    std::this_thread::sleep_for(2ms);
    if (x == 5) touch(reached);
    if (x >= 5) std::this_thread::sleep_for(200ms);
    return x;
  }, {.poolSize = 1, .stopToken = source.get_token(), .onProgress = [&](const flockmp::Progress&) {
        if (fileExists(reached)) source.request_stop();
      }});
  std::size_t kept = 0, cancelled = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (outcomes[i]) {
      CHECK(*outcomes[i] == static_cast<int>(i));
      ++kept;
    } else {
      CHECK(outcomes[i].failure().kind == FailureKind::cancelled);
      ++cancelled;
    }
  }
  for (std::size_t i = 0; i < 5; ++i) CHECK(outcomes[i].hasValue());
  CHECK(cancelled > 0);
  CHECK(kept + cancelled == 40);
}

TEST_CASE("a parent with fds 0-2 closed: channels stay above 2 and workers get valid stdio", "[hostile][stdio]") {
  DeadlockGuard guard;
  const int code = inChild([] {
    ::close(0);
    ::close(1);
    ::close(2);
    auto outcomes = flockmp::FunctionAsync::tryApply(range(8), [](int x) {
      // In the worker: 0-2 are open, 0 and (here) 1 are /dev/null.
      struct stat st {};
      for (int fd = 0; fd <= 2; ++fd)
        if (::fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3)) return -100 - fd;
      if (x == 3) segfault();
      // Bug caught: fd 1 was the worker's channel, so 4 MiB of output blocked until a timeout or
      // corrupted the stream.
      static const std::string chunk(1 << 16, 'o');
      for (int k = 0; k < 64; ++k)
        if (::write(1, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) return -200;
      return x;
    }, {.poolSize = 2, .onProgress = [](const flockmp::Progress&) {
          // The application logging to its (closed) stderr.
          std::fprintf(stderr, "progress\n");
        }});
    if (outcomes[3].hasValue() || outcomes[3].failure().signal != SIGSEGV) return 3;
    return othersSucceeded(outcomes, {3}) ? 0 : 4;
  });
  // Bug caught: tryApply threw "read from a worker failed: Connection reset by peer" (code 90).
  CHECK(code == 0);
}

TEST_CASE("workers read /dev/null as stdin, never the parent's stdin", "[hostile][stdio]") {
  DeadlockGuard guard;
  const int code = inChild([] {
    int p[2];
    if (::pipe(p) != 0) return 2;
    [[maybe_unused]] auto w = ::write(p[1], "data for the parent", 19);
    ::dup2(p[0], 0);
    auto values = flockmp::FunctionAsync::apply(range(4), [](int x) {
      char c;
      // Bug caught: workers inherited the parent's stdin (a terminal would stop them with SIGTTIN
      // and hang the call; here they would read the parent's data).
      if (::read(0, &c, 1) != 0) return -1;
      struct stat st {};
      if (::fstat(0, &st) != 0 || st.st_rdev != makedev(1, 3)) return -2;
      return x;
    }, {.poolSize = 2});
    if (values != range(4)) return 3;
    char buf[32];
    // The parent's own stdin is untouched.
    return ::read(0, buf, sizeof buf) == 19 ? 0 : 4;
  });
  CHECK(code == 0);
}

TEST_CASE("a replacement worker that cannot be forked is retried, then the rest is reported; finished results are kept", "[hostile][limits]") {
  DeadlockGuard guard;
  if (::geteuid() != 0) {
    WARN("skipped: needs root, to run as a user id of its own whose process count is known");
    return;
  }
  // The grandchild's pid, in memory shared by this process, the test's child and its workers, so
  // that this process kills the grandchild whatever happens.
  auto* gpid = static_cast<std::atomic<pid_t>*>(
      ::mmap(nullptr, sizeof(std::atomic<pid_t>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  REQUIRE(gpid != MAP_FAILED);
  new (gpid) std::atomic<pid_t>(0);
  // A user id no other process has (one per run: a killed grandchild of an earlier run may stay
  // a zombie where init does not reap), so that the test's child is its only process.
  const auto uid = static_cast<uid_t>(50'000 + ::getpid() % 10'000);
  const int code = inChild([gpid, uid] {
    // Orphans come back to this process, which reaps the grandchild at the end.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (::setgid(uid) != 0 || ::setuid(uid) != 0) return 2;
    rlimit hard{};
    ::getrlimit(RLIMIT_NPROC, &hard);
    // This process and one worker; a task raises its own copy of the limit to start a grandchild
    // that outlives the worker (setsid escapes the group kill) and holds the slot.
    rlimit lim{2, hard.rlim_max};
    if (::setrlimit(RLIMIT_NPROC, &lim) != 0) return 3;
    auto outcomes = flockmp::FunctionAsync::tryApply(range(40), [gpid](int x) {
      // Inputs of 2 ms: each result is sent as soon as it is ready, so inputs 0-19 have reached
      // the parent when input 20 crashes.
      std::this_thread::sleep_for(2ms);
      if (x == 20) {
        rlimit raised{};
        ::getrlimit(RLIMIT_NPROC, &raised);
        raised.rlim_cur = raised.rlim_max;
        ::setrlimit(RLIMIT_NPROC, &raised);
        const pid_t g = ::fork();
        if (g == 0) {
          ::setsid();
          for (;;) ::pause();
        }
        gpid->store(g);
        segfault();
      }
      return x;
    }, {.poolSize = 1, .restartBudget = {.maxRestarts = 3, .period = std::chrono::milliseconds(60'000)}});
    if (const pid_t g = gpid->load(); g > 0) {
      ::kill(g, SIGKILL);
      ::waitpid(g, nullptr, 0);
    }
    // Bug caught: the EAGAIN escaped as an exception and the 20 finished results were lost.
    for (std::size_t i = 0; i < 20; ++i)
      if (!outcomes[i] || *outcomes[i] != static_cast<int>(i)) return 4;
    if (outcomes[20] || outcomes[20].failure().signal != SIGSEGV) return 5;
    for (std::size_t i = 21; i < 40; ++i) {
      if (outcomes[i]) return 6;
      const auto& f = outcomes[i].failure();
      if (f.kind != FailureKind::notRun) return 7;
      if (f.message.find("could not start a replacement worker") == std::string::npos) return 8;
      if (f.message.find("Resource temporarily unavailable") == std::string::npos) return 9;
    }
    return 0;
  });
  if (const pid_t g = gpid->load(); g > 0) ::kill(g, SIGKILL);
  ::munmap(gpid, sizeof(std::atomic<pid_t>));
  CHECK(code == 0);
}

TEST_CASE("an initializer that hangs is ended by the setup limit and reported as a setup failure", "[hostile][initializer]") {
  DeadlockGuard guard;
  const int children = flockmp::test::childProcessCount();
  const auto hang = [] {
    for (;;) ::pause();
  };
  SECTION("timeOutError bounds it when setupTimeout is not given") {
    // Bug caught: the call hung forever even with timeOutError set.
    auto outcomes = flockmp::FunctionAsync::tryApply(range(5), [](int x) { return x; },
                                                   {.poolSize = 1,
                                                    .timeOutError = 200ms,
                                                    .restartBudget = {.maxRestarts = 2, .period = std::chrono::milliseconds(60'000)},
                                                    .initializer = hang});
    for (const auto& o : outcomes) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::setup);
      CHECK_THAT(o.failure().message, contains("did not finish within 200ms (timeOutError)"));
    }
  }
  SECTION("setupTimeout, alone") {
    auto outcomes = flockmp::FunctionAsync::tryApply(range(5), [](int x) { return x; },
                                                   {.poolSize = 2,
                                                    .restartBudget = {.maxRestarts = 3, .period = std::chrono::milliseconds(60'000)},
                                                    .initializer = hang,
                                                    .setupTimeout = 100ms});
    for (const auto& o : outcomes) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::setup);
      CHECK_THAT(o.failure().message, contains("did not finish within 100ms (setupTimeout)"));
    }
  }
  CHECK(flockmp::test::childProcessCount() == children);
}

TEST_CASE("an initializer that fails slowly still ends the call (failures in a row count)", "[hostile][initializer]") {
  DeadlockGuard guard;
  // Each worker fails after 300 ms, so never more than one within the 100 ms period: only the
  // count in a row can end this call. Bug caught: replacing such workers forever.
  auto outcomes = flockmp::FunctionAsync::tryApply(range(4), [](int x) { return x; },
                                                 {.poolSize = 1,
                                                  .restartBudget = {.maxRestarts = 2, .period = std::chrono::milliseconds(100)},
                                                  .initializer = [] {
                                                    std::this_thread::sleep_for(300ms);
                                                    throw std::runtime_error("database unreachable");
                                                  }});
  for (const auto& o : outcomes) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::setup);
    CHECK_THAT(o.failure().message, contains("database unreachable"));
  }
}

TEST_CASE("what workers print reaches a file or a pipe, once", "[hostile][stdio]") {
  DeadlockGuard guard;
  TempDir dir;
  const auto out = dir.path / "stdout.txt";
  const int code = inChild([&out] {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ::dup2(fd, 1) < 0) return 2;
    ::close(fd);
    // Bug caught: workers left with _exit and their fully buffered stdout was lost.
    flockmp::FunctionAsync::apply(range(20), [](int x) {
      std::printf("printf %d\n", x);
      std::cout << "cout " << x << '\n';
    }, {.poolSize = 2});
    std::fflush(nullptr);
    return 0;
  });
  REQUIRE(code == 0);
  const std::string text = readFile(out);
  for (int x = 0; x < 20; ++x) {
    INFO("input " << x);
    for (const std::string& line : {"printf " + std::to_string(x) + "\n", "cout " + std::to_string(x) + "\n"}) {
      const auto at = text.find(line);
      CHECK(at != std::string::npos);
      CHECK(text.find(line, at + 1) == std::string::npos); // printed once, not twice
    }
  }
}

TEST_CASE("when the parent is killed, what a worker started dies with the worker", "[hostile][parent]") {
  DeadlockGuard guard;
  int p[2];
  REQUIRE(::pipe(p) == 0);
  std::fflush(nullptr);
  const pid_t program = ::fork();
  REQUIRE(program >= 0);
  if (program == 0) {
    ::close(p[0]);
    (void)flockmp::FunctionAsync::apply(range(1), [fd = p[1]](int) {
      const pid_t g = ::fork();
      if (g == 0) {
        for (;;) ::pause();
      }
      const pid_t pids[2] = {::getpid(), g};
      [[maybe_unused]] auto w = ::write(fd, pids, sizeof pids);
      for (;;) ::pause();
      return 0;
    }, {.poolSize = 1});
    ::_exit(0);
  }
  ::close(p[1]);
  pid_t pids[2] = {0, 0};
  const bool got = ::read(p[0], pids, sizeof pids) == sizeof pids;
  ::close(p[0]);
  ::kill(program, SIGKILL);
  ::waitpid(program, nullptr, 0);
  REQUIRE(got);
  CHECK(waitGone(pids[0]));
  // Bug caught: PDEATHSIG killed only the worker; its child lived on as an orphan.
  const bool grandchildGone = waitGone(pids[1]);
  if (!grandchildGone) ::kill(pids[1], SIGKILL);
  CHECK(grandchildGone);
}

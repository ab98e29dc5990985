// Test helpers about processes: a real crash, whether a process is still alive, and running a
// piece of a test in a child process of its own.
#pragma once

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <thread>

namespace flockmp::test {

/// A real segmentation fault: a store into a page mapped without access. (A null store would be
/// caught by UBSan's null check before it faulted.)
inline void segfault() {
  void* p = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  *static_cast<volatile int*>(p) = 1;
}

/// A task: this worker's parent-death signal (0 when it has none). A worker forked by a thread
/// other than main has none (the signal would follow that thread).
inline int parentDeathSignal(int) {
  int sig = 0;
  ::prctl(PR_GET_PDEATHSIG, &sig);
  return sig;
}

/// A process that exists and is not a zombie.
inline bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

/// Bounded wait (not a timing assertion): true once the process is gone.
inline bool waitGone(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (alive(pid)) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

/// Runs `body` in a forked child (so that what it does to signals, fds, limits and user ids stays
/// there) and returns its exit code; the body reports by returning a code, 0 for success, and
/// an exception is 90. A deadlock ends the child through SIGALRM, reported as 128 + SIGALRM.
/// Returns -1 when the fork fails.
template <class Body>
int inChild(Body body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::alarm(120);
    // A user's program starts with default dispositions, not the test framework's handlers.
    for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGABRT, SIGCHLD}) std::signal(sig, SIG_DFL);
    int code = 1;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      code = 90;
    } catch (...) {
      code = 90;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace flockmp::test

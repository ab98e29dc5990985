// flock: how a worker process comes to exist. The pool asks a Launcher for a worker and gets a
// WorkerProcess (pid, pidfd, command and result channels); what happens inside the worker is the
// WorkerMain it hands over. Context::fork is implemented here; forkserver and spawn are further
// Launcher implementations behind the same seam.
#pragma once

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <memory>

#include <fmt/format.h>

#include "detail/posix.hpp"
#include "error.hpp"
#include "options.hpp"

namespace flockmp {

/// The parent's handle on one worker process. Destroying it does not kill the process; the pool
/// does that explicitly (kill the process group, then reap), so that order is always right.
struct WorkerProcess {
  pid_t pid = -1;
  detail::Fd pidfd;      ///< readable when the process has exited
  detail::Fd commands;   ///< parent writes frames here (a socket: MSG_NOSIGNAL, no SIGPIPE)
  detail::Fd results;    ///< parent reads frames here (non-blocking socket end)
};

/// What runs inside a worker: reads commands from `commandFd`, writes frames to `resultFd`.
/// It must not return normally to the caller's stack frames; the launcher _exits after it.
using WorkerMain = void (*)(void* context, int commandFd, int resultFd);

/// Starts workers. One launcher per call; implementations differ in where the worker's code and
/// data come from.
class Launcher {
public:
  virtual ~Launcher() = default;
  /// Start one worker running `main(context, ...)`. Throws flockmp::Error naming what failed.
  virtual WorkerProcess launch(WorkerMain main, void* context) = 0;
};

namespace detail {

/// Runs in the child right after fork: make the worker an independent, well-behaved process.
inline void prepareForkedChild(pid_t parent, const sigset_t& parentMask) noexcept {
  // Fatal signals get their default action so that a crash is reported as the signal itself
  // (sanitizer runtimes or the application may have installed handlers that would exit instead).
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS, SIGINT, SIGTERM,
                  SIGQUIT, SIGHUP, SIGPIPE, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2}) {
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
  (void)parentMask;
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Own process group: a timeout kills the worker and anything it started; the terminal's
  // Ctrl-C goes to the parent, which decides.
  ::setpgid(0, 0);
  // Die with the parent. PDEATHSIG races with a parent that died before this line: re-check.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(workerInternalErrorExit);
}

} // namespace detail

/// Context::fork: workers are forked from the calling process when the call starts, so the
/// callable (with its captures) and the inputs are already in their copy-on-write memory.
class ForkLauncher final : public Launcher {
public:
  WorkerProcess launch(WorkerMain main, void* context) override {
    int cmd[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cmd) < 0) detail::throwErrno("socketpair for a worker");
    detail::Fd parentCmd(cmd[0], true), childCmd(cmd[1]);
    // Results travel over a stream socket, not a pipe: a pipe writer holds the pipe's lock for
    // its whole copy and the reading parent spins on it (measured here: 17 % of the parent's
    // time for 1 KB strings); a socket's sender copies into its own buffers.
    int res[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0) detail::throwErrno("socketpair for a worker");
    detail::Fd parentRes(res[0], true), childRes(res[1]);
    // Larger buffers let big results stream with fewer wake-ups; the kernel caps them
    // (net.core.wmem_max / rmem_max) and a refusal is harmless.
    const int bufferBytes = 1 << 20;
    ::setsockopt(res[1], SOL_SOCKET, SO_SNDBUF, &bufferBytes, sizeof bufferBytes);
    ::setsockopt(res[0], SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof bufferBytes);

    // Buffered output must not be printed twice (once by the parent, once by the child).
    std::fflush(nullptr);
    // Block signals across fork so the child cannot run one of the parent's handlers before it
    // has reset them.
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      int err = errno;
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      detail::throwErrno("fork of a worker process", err);
    }
    if (pid == 0) {
      detail::prepareForkedChild(parent, old);
      // Close the parent's end of every flock channel in this process (other workers' too),
      // keep only this worker's own ends.
      detail::FdRegistry::closeAllInChild();
      int in = childCmd.release(), out = childRes.release();
      parentCmd.release();
      parentRes.release();
      try {
        main(context, in, out);
      } catch (...) {
        ::_exit(detail::workerInternalErrorExit);
      }
      ::_exit(0);
    }
    ::setpgid(pid, pid); // also done in the child; whichever runs first wins the race
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);

    WorkerProcess w;
    w.pid = pid;
    int pfd = detail::pidfdOpen(pid);
    if (pfd < 0) {
      int err = errno;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      detail::throwErrno("pidfd_open for a worker (flock needs Linux 5.3 or later)", err);
    }
    w.pidfd = detail::Fd(pfd, true);
    w.commands = std::move(parentCmd);
    w.results = std::move(parentRes);
    detail::setNonBlocking(w.results.get());
    return w;
  }
};

/// The launcher for a context. Context::forkserver and Context::spawn need a portable callable
/// and are not available in this release: asking for them throws flockmp::Error.
inline std::unique_ptr<Launcher> makeLauncher(Context c) {
  switch (c) {
  case Context::fork: return std::make_unique<ForkLauncher>();
  case Context::forkserver:
    throw Error("flock: Context::forkserver is not available in this release; use Context::fork");
  case Context::spawn:
    throw Error("flock: Context::spawn is not available in this release; use Context::fork");
  }
  throw Error("flock: unknown Context value");
}

} // namespace flockmp

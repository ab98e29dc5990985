// flock: how a worker process comes to exist. The pool asks a Launcher for a worker and gets a
// WorkerProcess (pid, pidfd, command and result channels); what happens inside the worker is the
// WorkerMain it hands over. Context::fork is implemented here; forkserver and spawn are further
// Launcher implementations behind the same seam.
#pragma once

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
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

/// The signal a worker receives when the thread that forked it exits (PR_SET_PDEATHSIG). Not
/// SIGKILL: the worker's handler kills its whole process group, so that what the task started
/// (a shell, a helper) dies with it instead of living on as an orphan.
inline int parentDeathSignal() noexcept { return SIGRTMIN + 7; }

/// Kills the worker's process group, the worker included (async-signal-safe).
inline void onParentDeath(int) noexcept { ::kill(0, SIGKILL); }

/// Gives the worker valid fds 0-2: stdin is always /dev/null (a worker is in a background process
/// group, and reading the terminal would stop it with SIGTTIN); stdout and stderr stay the
/// parent's, or /dev/null where the parent had them closed.
inline void prepareChildStdio() noexcept {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fd != 0 && ::fcntl(fd, F_GETFD) >= 0) continue;
    const int null = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (null < 0 || null == fd) continue;
    ::dup2(null, fd);
    ::close(null);
  }
}

/// Runs in the child right after fork: make the worker an independent, well-behaved process.
inline void prepareForkedChild(pid_t parent) noexcept {
  // Fatal signals get their default action so that a crash is reported as the signal itself
  // (sanitizer runtimes or the application may have installed handlers that would exit instead).
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS, SIGINT, SIGTERM,
                  SIGQUIT, SIGHUP, SIGPIPE, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2}) {
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
  struct sigaction death {};
  death.sa_handler = &onParentDeath;
  ::sigemptyset(&death.sa_mask);
  ::sigaction(parentDeathSignal(), &death, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Own process group: a timeout kills the worker and anything it started; the terminal's
  // Ctrl-C goes to the parent, which decides.
  ::setpgid(0, 0);
  prepareChildStdio();
  // Die with the parent. PDEATHSIG races with a parent that died before this line: re-check.
  ::prctl(PR_SET_PDEATHSIG, parentDeathSignal());
  if (::getppid() != parent) ::_exit(workerInternalErrorExit);
}

/// True when nobody but flock will collect the exit status of a child created with plain fork:
/// SIGCHLD has its default action. Under SIG_IGN or SA_NOCLDWAIT the kernel discards the status,
/// and an application handler may reap every child with waitpid(-1, ...).
inline bool sigchldIsDefault() noexcept {
  struct sigaction sa {};
  if (::sigaction(SIGCHLD, nullptr, &sa) != 0) return false;
  return (sa.sa_flags & SA_SIGINFO) == 0 && sa.sa_handler == SIG_DFL && (sa.sa_flags & SA_NOCLDWAIT) == 0;
}

/// The kernel's struct clone_args (linux/sched.h, which clashes with glibc's sched.h).
struct CloneArgs {
  std::uint64_t flags = 0, pidfd = 0, childTid = 0, parentTid = 0, exitSignal = 0, stack = 0, stackSize = 0,
                tls = 0;
};

/// A fork-like clone3 that returns a pidfd and sends no signal at exit: such a child is neither
/// reaped automatically under SIGCHLD = SIG_IGN nor taken by an application's waitpid(-1, ...);
/// only waitid(P_PIDFD, ..., __WALL) collects it, so its status stays flock's. Returns -1 with
/// errno set on failure (ENOSYS before Linux 5.3).
inline pid_t cloneWithPidfd(int* pidfd) noexcept {
#ifdef SYS_clone3
  CloneArgs args;
  args.flags = 0x00001000; // CLONE_PIDFD
  args.pidfd = reinterpret_cast<std::uintptr_t>(pidfd);
  return static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof args));
#else
  (void)pidfd;
  errno = ENOSYS;
  return -1;
#endif
}

} // namespace detail

/// Context::fork: workers are forked from the calling process when the call starts, so the
/// callable (with its captures) and the inputs are already in their copy-on-write memory.
///
/// With SIGCHLD at its default action, workers are made by glibc's fork (which keeps malloc and
/// stdio consistent in the child of a multithreaded parent and runs pthread_atfork handlers).
/// When the application ignores or handles SIGCHLD, they are made by clone3 with no exit signal
/// instead, so that a crash is still reported with its signal; pthread_atfork handlers do not run
/// in those workers.
class ForkLauncher final : public Launcher {
public:
  WorkerProcess launch(WorkerMain main, void* context) override {
    int cmd[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cmd) < 0) detail::throwErrno("socketpair for a worker");
    detail::Fd parentCmd(detail::aboveStdio(cmd[0], "moving a worker channel above fd 2"), true);
    detail::Fd childCmd(detail::aboveStdio(cmd[1], "moving a worker channel above fd 2"));
    // Results travel over a stream socket, not a pipe: a pipe writer holds the pipe's lock for
    // its whole copy and the reading parent spins on it (measured here: 17 % of the parent's
    // time for 1 KB strings); a socket's sender copies into its own buffers.
    int res[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0) detail::throwErrno("socketpair for a worker");
    detail::Fd parentRes(detail::aboveStdio(res[0], "moving a worker channel above fd 2"), true);
    detail::Fd childRes(detail::aboveStdio(res[1], "moving a worker channel above fd 2"));
    // Larger buffers let big results stream with fewer wake-ups; the kernel caps them
    // (net.core.wmem_max / rmem_max) and a refusal is harmless.
    const int bufferBytes = 1 << 20;
    ::setsockopt(childRes.get(), SOL_SOCKET, SO_SNDBUF, &bufferBytes, sizeof bufferBytes);
    ::setsockopt(parentRes.get(), SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof bufferBytes);

    // Buffered output must not be printed twice (once by the parent, once by the child).
    std::fflush(nullptr);
    const bool plainFork = detail::sigchldIsDefault();
    // Block signals across fork so the child cannot run one of the parent's handlers before it
    // has reset them.
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    const pid_t parent = ::getpid();
    int pfd = -1;
    const pid_t pid = plainFork ? ::fork() : detail::cloneWithPidfd(&pfd);
    if (pid < 0) {
      int err = errno;
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      detail::throwErrno("fork of a worker process", err);
    }
    if (pid == 0) {
      detail::prepareForkedChild(parent);
      // Close the parent's end of every flock channel in this process (other workers' too),
      // keep only this worker's own ends, and register those: a call made inside a task has
      // workers of its own, which must not hold this worker's channel.
      detail::FdRegistry::closeAllInChild();
      int in = childCmd.release(), out = childRes.release();
      parentCmd.release();
      parentRes.release();
      detail::FdRegistry::add(in);
      detail::FdRegistry::add(out);
      int code = 0;
      try {
        main(context, in, out);
      } catch (...) {
        code = detail::workerInternalErrorExit;
      }
      detail::flushStdio();
      ::_exit(code);
    }
    ::setpgid(pid, pid); // also done in the child; whichever runs first wins the race
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);

    WorkerProcess w;
    w.pid = pid;
    if (plainFork) {
      pfd = detail::pidfdOpen(pid);
      if (pfd < 0) {
        int err = errno;
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        detail::throwErrno("pidfd_open for a worker", err);
      }
    }
    try {
      w.pidfd = detail::Fd(detail::aboveStdio(pfd, "moving a pidfd above fd 2"), true);
    } catch (...) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, __WALL);
      throw;
    }
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

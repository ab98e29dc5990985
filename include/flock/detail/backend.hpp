// flock internals: the backend seam, how a worker process comes to exist. The pool asks a Launcher for a worker and gets a
// WorkerProcess (pid, pidfd, command and result channels); what happens inside the worker is the
// WorkerMain it hands over. Context::fork is implemented here; forkserver and spawn are further
// Launcher implementations behind the same seam.
#pragma once

#include "config.hpp"

#include <sys/prctl.h>

#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <cstdint>
#include <memory>

#include <fmt/core.h>

#include "../error.hpp"
#include "../options.hpp"
#include "posix.hpp"
#include "worker.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <fcntl.h>
#include <spawn.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <mutex>
#include <cstdio>
#include <exception>
#endif

namespace flockmp::detail {

/// The parent's handle on one worker process. Destroying it does not kill the process; the pool
/// does that explicitly (kill the process group, then reap), so that order is always right.
struct WorkerProcess {
  pid_t pid = -1;
  Fd pidfd;      ///< readable when the process has exited
  Fd commands;   ///< parent writes frames here (a socket: MSG_NOSIGNAL, no SIGPIPE)
  Fd results;    ///< parent reads frames here (non-blocking socket end)
};

/// What runs inside a worker: reads commands from `commandFd`, writes frames to `resultFd`.
/// It must not return normally to the caller's stack frames; the launcher _exits after it.
using WorkerMain = void (*)(void* context, int commandFd, int resultFd);

/// What a new worker needs. A forked worker runs `main(context, ...)`, code and data it
/// inherited; a forkserver or spawn worker inherited nothing and maps the pool's control blocks
/// from `controlFd` (it then reads its setup frame and serves portable calls).
struct WorkerStart {
  WorkerMain main = nullptr;
  void* context = nullptr;
  int controlFd = -1;
  std::size_t controlBytes = 0;
  std::size_t slot = 0;
  /// Kill the worker when the thread that starts it exits (PR_SET_PDEATHSIG, which follows the
  /// thread, not the process). Off for a pool's worker started from a thread other than main:
  /// that thread may end long before the pool; such a worker leaves when its channel closes.
  bool dieWithThread = true;
  /// Under WorkerOutput::forward and prefix: the write ends of the pipes that become the
  /// worker's stdout and stderr (the parent reads the other ends); -1: the parent's own.
  int stdoutFd = -1;
  int stderrFd = -1;
};

/// In a new worker: make `out` and `err` (pipes to the parent) its stdout and stderr, and close
/// the originals. Nothing when they are -1 (WorkerOutput::inherit).
FLOCK_ENGINE_INLINE void installWorkerStdio(int out, int err) noexcept;

/// The backend seam: starts workers and collects their exit. Implementations differ in where a
/// worker's code and data come from (Context::fork, forkserver, spawn).
class Launcher {
public:
  virtual ~Launcher() = default;
  /// Start one worker. Throws flockmp::Error naming what failed.
  virtual WorkerProcess launch(const WorkerStart& start) = 0;
  /// The wait status of a worker that has exited or was killed; nullopt when another wait call
  /// collected it.
  virtual std::optional<int> reap(WorkerProcess& w) noexcept { return reapPidfd(w.pidfd.get()); }
  /// True when workers did not inherit the pool (forkserver, spawn): they need a setup frame.
  [[nodiscard]] virtual bool portable() const noexcept { return false; }
};


/// The signal a worker receives when the thread that forked it exits (PR_SET_PDEATHSIG). Not
/// SIGKILL: the worker's handler kills its whole process group, so that what the task started
/// (a shell, a helper) dies with it instead of living on as an orphan.
inline int parentDeathSignal() noexcept { return SIGRTMIN + 7; }

/// Kills the worker's process group, the worker included (async-signal-safe).
inline void onParentDeath(int) noexcept { ::kill(0, SIGKILL); }

/// Gives the worker valid fds 0-2: stdin is always /dev/null (a worker is in a background process
/// group, and reading the terminal would stop it with SIGTTIN); stdout and stderr stay the
/// parent's, or /dev/null where the parent had them closed.
FLOCK_ENGINE_INLINE void prepareChildStdio() noexcept;

/// Fatal signals get their default action so that a crash is reported as the signal itself
/// (sanitizer runtimes or the application may have installed handlers that would exit instead);
/// the parent's death kills the worker's group (see parentDeathSignal).
FLOCK_ENGINE_INLINE void resetWorkerSignals() noexcept;

/// Die with the parent. PDEATHSIG races with a parent that died before it was set: re-check.
inline void dieWithParent(pid_t parent) noexcept {
  ::prctl(PR_SET_PDEATHSIG, parentDeathSignal());
  if (::getppid() != parent) ::_exit(workerInternalErrorExit);
}

/// Runs in the child right after fork: make the worker an independent, well-behaved process.
FLOCK_ENGINE_INLINE void prepareForkedChild(pid_t parent, bool dieWithThread = true) noexcept;

/// A worker's two channels: the parent keeps one end of each, the worker gets the other.
struct ChannelPair {
  Fd parentCommands, childCommands, parentResults, childResults;
};

FLOCK_ENGINE_INLINE ChannelPair makeChannels();

/// A pidfd for a child just started; when none can be had, the child is killed and reaped (no
/// worker is left unowned) and flockmp::Error says why.
FLOCK_ENGINE_INLINE int pidfdOrKill(pid_t pid);

/// The parent's handle once the worker runs: its channel ends, and a pidfd (closing the pid
/// down if that fails, so that no worker is left unowned).
FLOCK_ENGINE_INLINE WorkerProcess adoptWorker(pid_t pid, int pidfd, ChannelPair& c);

/// True when nobody but flock will collect the exit status of a child created with plain fork:
/// SIGCHLD has its default action. Under SIG_IGN or SA_NOCLDWAIT the kernel discards the status,
/// and an application handler may reap every child with waitpid(-1, ...).
FLOCK_ENGINE_INLINE bool sigchldIsDefault() noexcept;

/// The kernel's struct clone_args (linux/sched.h, which clashes with glibc's sched.h).
struct CloneArgs {
  std::uint64_t flags = 0, pidfd = 0, childTid = 0, parentTid = 0, exitSignal = 0, stack = 0, stackSize = 0,
                tls = 0;
};

/// A fork-like clone3 that returns a pidfd and sends no signal at exit: such a child is neither
/// reaped automatically under SIGCHLD = SIG_IGN nor taken by an application's waitpid(-1, ...);
/// only waitid(P_PIDFD, ..., __WALL) collects it, so its status stays flock's. Returns -1 with
/// errno set on failure (ENOSYS before Linux 5.3).
FLOCK_ENGINE_INLINE pid_t cloneWithPidfd(int* pidfd) noexcept;


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
  WorkerProcess launch(const WorkerStart& start) override;
};


/// The environment variable that tells a program image started by Context::spawn that it is a
/// worker: "commandFd,resultFd,controlFd,controlBytes,slot,parentPid,dieWithThread".
inline constexpr const char* spawnedWorkerVariable = "FLOCKMP_WORKER";

/// What flockmp::init recorded: whether it ran, the program's name for spawned workers, and the
/// channel to the forkserver.
struct Runtime {
  bool initialized = false;
  std::string program;
  Fd server;
  pid_t serverPid = -1;
  std::mutex serverMutex; // one request and its reply at a time
};

inline Runtime& runtime() {
  static Runtime r;
  return r;
}

/// A request to the forkserver, and its reply. `launch` comes with three fds (the worker's
/// command and result channel ends and the control blocks' memfd); its reply with a pidfd.
struct ServerRequest {
  enum Kind : std::uint32_t { launch = 1, reap = 2 } kind{};
  std::uint32_t pad = 0;
  std::uint64_t a = 0; // launch: control bytes; reap: pid
  std::uint64_t b = 0; // launch: slot
};
struct ServerReply {
  std::int64_t value = 0;  // launch: pid, or -errno; reap: 1 when the status was collected
  std::int32_t status = 0; // reap: wait status
  std::int32_t pad = 0;
};

/// The most fds a forkserver request carries: the worker's two channel ends, the control
/// blocks' memfd, and (WorkerOutput::forward, prefix) its stdout and stderr pipes.
inline constexpr int maxPassedFds = 5;

/// Sends one message with up to maxPassedFds fds over a SOCK_SEQPACKET socket. False when the peer is gone.
FLOCK_ENGINE_INLINE bool sendWithFds(int sock, const void* data, std::size_t n, const int* fds,
                                     int count) noexcept;

/// Receives one message and up to maxPassedFds fds (close-on-exec). Returns the byte count, 0 at EOF, -1
/// on error; `count` is set to the fds received.
FLOCK_ENGINE_INLINE ssize_t receiveWithFds(int sock, void* data, std::size_t n, int* fds,
                                           int& count) noexcept;

/// The forkserver: a single-threaded copy of the program made by flockmp::init, before the
/// application started threads. It forks workers on request (they inherit nothing of the
/// application's later state, and no lock another thread held) and reaps them for the parent.
/// It leaves when the parent closes its channel (the parent exited), killing what is left.
[[noreturn]] FLOCK_ENGINE_INLINE void forkServerLoop(int sock);

FLOCK_ENGINE_INLINE void startForkServer();

/// In a program image started by Context::spawn: become the worker its parent asked for.
[[noreturn]] FLOCK_ENGINE_INLINE void becomeSpawnedWorker(const char* spec);

FLOCK_ENGINE_INLINE Error initMissing(Context c);


/// Context::forkserver: workers are forked by the forkserver that flockmp::init started, so they
/// hold no lock another thread of the application held, and cost no page-table copy of a large
/// parent. Their exit status comes from the server.
class ForkserverLauncher final : public Launcher {
public:
  ForkserverLauncher() {
    if (!runtime().initialized) throw initMissing(Context::forkserver);
  }

  WorkerProcess launch(const WorkerStart& start) override;

  std::optional<int> reap(WorkerProcess& w) noexcept override;

  [[nodiscard]] bool portable() const noexcept override { return true; }

private:
  static void exchange(const ServerRequest& req, const int* fds, int count, ServerReply& reply,
                       int* pidfd);
};

/// Context::spawn: each worker is a fresh execution of the program image (/proc/self/exe), which
/// flockmp::init diverts into the worker loop before the application's main code runs. Started
/// with posix_spawn, so the cost does not grow with the parent's memory.
class SpawnLauncher final : public Launcher {
public:
  SpawnLauncher() {
    if (!runtime().initialized) throw initMissing(Context::spawn);
  }

  WorkerProcess launch(const WorkerStart& start) override;

  [[nodiscard]] bool portable() const noexcept override { return true; }
};

/// The launcher for a context. Throws flockmp::Error when forkserver or spawn is asked for but
/// flockmp::init was not called.
FLOCK_ENGINE_INLINE std::unique_ptr<Launcher> makeLauncher(Context c);

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void installWorkerStdio(int out, int err) noexcept {
  if (out < 0 || err < 0) return;
  ::dup2(out, 1);
  ::dup2(err, 2);
  if (out > 2) ::close(out);
  if (err > 2) ::close(err);
}

FLOCK_ENGINE_INLINE void prepareChildStdio() noexcept {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fd != 0 && ::fcntl(fd, F_GETFD) >= 0) continue;
    const int null = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (null < 0 || null == fd) continue;
    ::dup2(null, fd);
    ::close(null);
  }
}

FLOCK_ENGINE_INLINE void resetWorkerSignals() noexcept {
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
}

FLOCK_ENGINE_INLINE void prepareForkedChild(pid_t parent, bool dieWithThread) noexcept {
  resetWorkerSignals();
  // Own process group: a timeout kills the worker and anything it started; the terminal's
  // Ctrl-C goes to the parent, which decides.
  ::setpgid(0, 0);
  prepareChildStdio();
  if (dieWithThread) dieWithParent(parent);
  else if (::getppid() != parent) ::_exit(workerInternalErrorExit);
}

FLOCK_ENGINE_INLINE ChannelPair makeChannels() {
  ChannelPair c;
  int cmd[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cmd) < 0) throwErrno("socketpair for a worker");
  c.parentCommands = Fd(aboveStdio(cmd[0], "moving a worker channel above fd 2"), true);
  c.childCommands = Fd(aboveStdio(cmd[1], "moving a worker channel above fd 2"));
  // Results travel over a stream socket, not a pipe: a pipe writer holds the pipe's lock for
  // its whole copy and the reading parent spins on it (measured here: 17 % of the parent's
  // time for 1 KB strings); a socket's sender copies into its own buffers.
  int res[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res) < 0) throwErrno("socketpair for a worker");
  c.parentResults = Fd(aboveStdio(res[0], "moving a worker channel above fd 2"), true);
  c.childResults = Fd(aboveStdio(res[1], "moving a worker channel above fd 2"));
  // Larger buffers let big results stream with fewer wake-ups; the kernel caps them
  // (net.core.wmem_max / rmem_max) and a refusal is harmless. Pools send inputs the other way.
  const int bufferBytes = 1 << 20;
  ::setsockopt(c.childResults.get(), SOL_SOCKET, SO_SNDBUF, &bufferBytes, sizeof bufferBytes);
  ::setsockopt(c.parentResults.get(), SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof bufferBytes);
  return c;
}

FLOCK_ENGINE_INLINE int pidfdOrKill(pid_t pid) {
  const int pfd = pidfdOpen(pid);
  if (pfd < 0) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throwErrno("pidfd_open for a worker", err);
  }
  return pfd;
}

FLOCK_ENGINE_INLINE WorkerProcess adoptWorker(pid_t pid, int pidfd, ChannelPair& c) {
  WorkerProcess w;
  w.pid = pid;
  try {
    w.pidfd = Fd(aboveStdio(pidfd, "moving a pidfd above fd 2"), true);
  } catch (...) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, __WALL);
    throw;
  }
  w.commands = std::move(c.parentCommands);
  w.results = std::move(c.parentResults);
  setNonBlocking(w.results.get());
  return w;
}

FLOCK_ENGINE_INLINE bool sigchldIsDefault() noexcept {
  struct sigaction sa {};
  if (::sigaction(SIGCHLD, nullptr, &sa) != 0) return false;
  return (sa.sa_flags & SA_SIGINFO) == 0 && sa.sa_handler == SIG_DFL && (sa.sa_flags & SA_NOCLDWAIT) == 0;
}

FLOCK_ENGINE_INLINE pid_t cloneWithPidfd(int* pidfd) noexcept {
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

FLOCK_ENGINE_INLINE WorkerProcess ForkLauncher::launch(const WorkerStart& start) {
  auto c = makeChannels();
  // Buffered output must not be printed twice (once by the parent, once by the child).
  std::fflush(nullptr);
  const bool plainFork = sigchldIsDefault();
  // Block signals across fork so the child cannot run one of the parent's handlers before it
  // has reset them.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t parent = ::getpid();
  int pfd = -1;
  const pid_t pid = plainFork ? ::fork() : cloneWithPidfd(&pfd);
  if (pid < 0) {
    int err = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throwErrno("fork of a worker process", err);
  }
  if (pid == 0) {
    prepareForkedChild(parent, start.dieWithThread);
    FdRegistry::remove(start.stdoutFd); // installed as fd 1 and 2, not closed below
    FdRegistry::remove(start.stderrFd);
    installWorkerStdio(start.stdoutFd, start.stderrFd);
    // Close the parent's end of every flock channel in this process (other workers' too),
    // keep only this worker's own ends, and register those: a call made inside a task has
    // workers of its own, which must not hold this worker's channel.
    FdRegistry::closeAllInChild();
    int in = c.childCommands.release(), out = c.childResults.release();
    c.parentCommands.release();
    c.parentResults.release();
    FdRegistry::add(in);
    FdRegistry::add(out);
    int code = 0;
    try {
      start.main(start.context, in, out);
    } catch (...) {
      code = workerInternalErrorExit;
    }
    flushStdio();
    ::_exit(code);
  }
  ::setpgid(pid, pid); // also done in the child; whichever runs first wins the race
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);

  if (plainFork) {
    pfd = pidfdOrKill(pid);
  }
  return adoptWorker(pid, pfd, c);
}

FLOCK_ENGINE_INLINE bool sendWithFds(int sock, const void* data, std::size_t n, const int* fds,
                                     int count) noexcept {
  iovec iov{const_cast<void*>(data), n};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * maxPassedFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (count > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<std::size_t>(count));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<std::size_t>(count));
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * static_cast<std::size_t>(count));
  }
  for (;;) {
    const ssize_t r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (r >= 0) return static_cast<std::size_t>(r) == n;
    if (errno != EINTR) return false;
  }
}

FLOCK_ENGINE_INLINE ssize_t receiveWithFds(int sock, void* data, std::size_t n, int* fds,
                                           int& count) noexcept {
  iovec iov{data, n};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * maxPassedFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  count = 0;
  ssize_t r;
  do {
    r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const int k = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * static_cast<std::size_t>(i), sizeof fd);
      if (count < maxPassedFds) fds[count++] = fd;
      else ::close(fd);
    }
  }
  return r;
}

[[noreturn]] FLOCK_ENGINE_INLINE void forkServerLoop(int sock) {
  struct Child {
    pid_t pid;
    int pidfd;
  };
  std::vector<Child> children;
  const pid_t self = ::getpid();
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGCHLD, &dfl, nullptr);
  for (;;) {
    ServerRequest req;
    int fds[maxPassedFds];
    int count = 0;
    const ssize_t r = receiveWithFds(sock, &req, sizeof req, fds, count);
    if (r <= 0) break;
    ServerReply reply;
    int replyFd = -1;
    if (r == sizeof req && req.kind == ServerRequest::launch && (count == 3 || count == 5)) {
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      if (pid == 0) {
        prepareForkedChild(self);
        if (count == 5) installWorkerStdio(fds[3], fds[4]);
        ::close(sock);
        for (const auto& c : children) ::close(c.pidfd);
        FdRegistry::closeAllInChild();
        FdRegistry::add(fds[0]);
        FdRegistry::add(fds[1]);
        portableWorkerMain(fds[0], fds[1], fds[2], static_cast<std::size_t>(req.a), static_cast<std::size_t>(req.b));
      }
      if (pid < 0) {
        reply.value = -errno;
      } else {
        ::setpgid(pid, pid);
        const int pfd = pidfdOpen(pid);
        if (pfd < 0) {
          reply.value = -errno;
          ::kill(pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
        } else {
          children.push_back({pid, pfd});
          reply.value = pid;
          replyFd = pfd;
        }
      }
    } else if (r == sizeof req && req.kind == ServerRequest::reap) {
      auto it = std::find_if(children.begin(), children.end(),
                             [&](const Child& c) { return c.pid == static_cast<pid_t>(req.a); });
      if (it != children.end()) {
        if (auto status = reapPidfd(it->pidfd)) {
          reply.value = 1;
          reply.status = *status;
        }
        ::close(it->pidfd);
        children.erase(it);
      }
    }
    for (int i = 0; i < count; ++i) ::close(fds[i]);
    if (!sendWithFds(sock, &reply, sizeof reply, &replyFd, replyFd >= 0 ? 1 : 0)) break;
  }
  for (const auto& c : children) {
    ::kill(-c.pid, SIGKILL);
    ::kill(c.pid, SIGKILL);
    (void)reapPidfd(c.pidfd);
  }
  ::_exit(0);
}

FLOCK_ENGINE_INLINE void startForkServer() {
  auto& rt = runtime();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throwErrno("socketpair for the forkserver");
  Fd ours(aboveStdio(sv[0], "moving the forkserver channel above fd 2"), true);
  Fd theirs(aboveStdio(sv[1], "moving the forkserver channel above fd 2"));
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throwErrno("fork of the forkserver");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    // Close (and forget) the parent's registered fds, this channel's other end included: the
    // fds the server later receives may get those numbers.
    ours.release();
    FdRegistry::closeAllInChild();
    prepareChildStdio();
    forkServerLoop(theirs.release());
  }
  rt.server = std::move(ours);
  rt.serverPid = pid;
}

[[noreturn]] FLOCK_ENGINE_INLINE void becomeSpawnedWorker(const char* spec) {
  unsigned long long v[7] = {};
  if (std::sscanf(spec, "%llu,%llu,%llu,%llu,%llu,%llu,%llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) != 7)
    ::_exit(workerInternalErrorExit);
  ::unsetenv(spawnedWorkerVariable); // a call made inside a task starts workers of its own
  resetWorkerSignals();
  prepareChildStdio();
  if (v[6] != 0) dieWithParent(static_cast<pid_t>(v[5]));
  else if (::getppid() != static_cast<pid_t>(v[5])) ::_exit(workerInternalErrorExit);
  const int in = static_cast<int>(v[0]), out = static_cast<int>(v[1]);
  ::fcntl(in, F_SETFD, FD_CLOEXEC);
  ::fcntl(out, F_SETFD, FD_CLOEXEC);
  FdRegistry::add(in);
  FdRegistry::add(out);
  portableWorkerMain(in, out, static_cast<int>(v[2]), static_cast<std::size_t>(v[3]), static_cast<std::size_t>(v[4]));
}

FLOCK_ENGINE_INLINE Error initMissing(Context c) {
  return Error(fmt::format(
      "flock: Context::{} needs flockmp::init(argc, argv) as the first statement of main (it starts the "
      "forkserver before any thread and lets spawned workers skip your main); see README, \"Pools and contexts\"",
      c == Context::spawn ? "spawn" : "forkserver"));
}

FLOCK_ENGINE_INLINE WorkerProcess ForkserverLauncher::launch(const WorkerStart& start) {
  auto c = makeChannels();
  auto& rt = runtime();
  ServerRequest req{ServerRequest::launch, 0, start.controlBytes, start.slot};
  const int fds[maxPassedFds] = {c.childCommands.get(), c.childResults.get(), start.controlFd,
                                 start.stdoutFd, start.stderrFd};
  ServerReply reply;
  int pidfd = -1;
  {
    std::lock_guard lock(rt.serverMutex);
    exchange(req, fds, start.stdoutFd >= 0 && start.stderrFd >= 0 ? 5 : 3, reply, &pidfd);
  }
  if (reply.value <= 0) {
    if (pidfd >= 0) ::close(pidfd);
    throwErrno("fork of a worker by the forkserver", static_cast<int>(-reply.value));
  }
  if (pidfd < 0) throw Error("flock: the forkserver started a worker but sent no pidfd for it");
  return adoptWorker(static_cast<pid_t>(reply.value), pidfd, c);
}

FLOCK_ENGINE_INLINE std::optional<int> ForkserverLauncher::reap(WorkerProcess& w) noexcept {
  auto& rt = runtime();
  ServerRequest req{ServerRequest::reap, 0, static_cast<std::uint64_t>(w.pid), 0};
  ServerReply reply;
  try {
    std::lock_guard lock(rt.serverMutex);
    exchange(req, nullptr, 0, reply, nullptr);
  } catch (...) {
    return std::nullopt;
  }
  if (reply.value != 1) return std::nullopt;
  return reply.status;
}

FLOCK_ENGINE_INLINE void ForkserverLauncher::exchange(const ServerRequest& req, const int* fds,
                                                      int count, ServerReply& reply, int* pidfd) {
  auto& rt = runtime();
  const int sock = rt.server.get();
  if (sock < 0 || !sendWithFds(sock, &req, sizeof req, fds, count))
    throw Error("flock: the forkserver is gone (was it killed?); workers of Context::forkserver cannot start");
  int got[maxPassedFds];
  int n = 0;
  const ssize_t r = receiveWithFds(sock, &reply, sizeof reply, got, n);
  for (int i = 0; i < n; ++i) {
    if (pidfd && *pidfd < 0) *pidfd = got[i];
    else ::close(got[i]);
  }
  if (r != sizeof reply)
    throw Error("flock: the forkserver is gone (was it killed?); no reply to a request");
}

FLOCK_ENGINE_INLINE WorkerProcess SpawnLauncher::launch(const WorkerStart& start) {
  auto c = makeChannels();
  const int in = c.childCommands.get(), out = c.childResults.get();
  const std::string spec = fmt::format("{}={},{},{},{},{},{},{}", spawnedWorkerVariable, in, out,
                                       start.controlFd, start.controlBytes, start.slot, ::getpid(),
                                       start.dieWithThread ? 1 : 0);
  std::vector<char*> env;
  const std::string_view prefix = std::string_view(spawnedWorkerVariable);
  for (char** e = environ; e && *e; ++e) {
    const std::string_view entry(*e);
    if (entry.starts_with(prefix) && entry.size() > prefix.size() && entry[prefix.size()] == '=')
      continue;
    env.push_back(*e);
  }
  env.push_back(const_cast<char*>(spec.c_str()));
  env.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attr);
  struct Cleanup {
    posix_spawn_file_actions_t* a;
    posix_spawnattr_t* t;
    ~Cleanup() {
      ::posix_spawn_file_actions_destroy(a);
      ::posix_spawnattr_destroy(t);
    }
  } cleanup{&actions, &attr};
  // dup2 of an fd onto itself clears its close-on-exec flag in the child only.
  for (int fd : {in, out, start.controlFd}) ::posix_spawn_file_actions_adddup2(&actions, fd, fd);
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (start.stdoutFd >= 0 && start.stderrFd >= 0) {
    ::posix_spawn_file_actions_adddup2(&actions, start.stdoutFd, 1);
    ::posix_spawn_file_actions_adddup2(&actions, start.stderrFd, 2);
  }
  sigset_t none, defaults;
  ::sigemptyset(&none);
  ::sigfillset(&defaults);
  ::sigdelset(&defaults, SIGKILL);
  ::sigdelset(&defaults, SIGSTOP);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  ::posix_spawnattr_setpgroup(&attr, 0);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
  std::string program = runtime().program;
  char* argv[] = {program.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv, env.data());
  if (rc != 0) throwErrno("posix_spawn of a worker (Context::spawn)", rc);
  const int pfd = pidfdOrKill(pid);
  return adoptWorker(pid, pfd, c);
}

FLOCK_ENGINE_INLINE std::unique_ptr<Launcher> makeLauncher(Context c) {
  switch (c) {
  case Context::fork: return std::make_unique<ForkLauncher>();
  case Context::forkserver: return std::make_unique<ForkserverLauncher>();
  case Context::spawn: return std::make_unique<SpawnLauncher>();
  }
  throw Error("flock: unknown Context value");
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

// flock internals: thin RAII over the POSIX pieces the engine uses (fds, pipes, shared memory),
// and errno reporting that names what failed.
#pragma once

#include "config.hpp"

#include <fcntl.h>

#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/core.h>

#include "../error.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#endif

namespace flockmp::detail {

/// Exit code of a worker whose own loop failed (not the user's callable).
inline constexpr int workerInternalErrorExit = 121;
/// Exit code of a worker that found its channel to the parent closed or replaced by a task (a
/// task that closes every fd, say): it cannot report anything else.
inline constexpr int workerChannelLostExit = 122;
/// Exit code of a worker that went past Options::memoryLimit while running an input (the input
/// and the peak are in its control block).
inline constexpr int workerOutOfMemoryExit = 123;

/// Writes out what the process's stdio and iostreams buffer. A worker leaves with _exit, which
/// would drop it (stdout to a file or a pipe is fully buffered).
FLOCK_ENGINE_INLINE void flushStdio() noexcept;

/// What to do about an errno, when the errno alone says it: "" for the others. Only the errno
/// decides, so that a hint never blames the wrong cause.
FLOCK_ENGINE_INLINE std::string_view errnoHint(int err) noexcept;

/// flockmp::SystemError naming the operation and the errno text: "flock: fork of a worker
/// process failed: Resource temporarily unavailable (errno 11); a process limit ...".
[[noreturn]] inline void throwErrno(std::string_view what, int err = errno) {
  throw SystemError(fmt::format("flock: {} failed: {} (errno {}){}", what, std::strerror(err), err, errnoHint(err)),
                    std::error_code(err, std::generic_category()));
}

/// Parent-side fds of every live flock pool in this process. A worker forked by one pool closes
/// them all, so that no worker keeps another worker's channel open (which would hide EOF). Kept
/// lock-free because a child of a multithreaded parent must not take locks after fork.
class FdRegistry {
public:
  static constexpr std::size_t capacity = 4096;

  static void add(int fd) noexcept;
  static void remove(int fd) noexcept;
  /// In a freshly forked child: close every registered fd and forget it (async-signal-safe).
  /// Forgetting matters as much as closing: a call made inside the worker (a nested call) gets
  /// new fds with these numbers, and its own workers must not close them by mistake.
  static void closeAllInChild() noexcept;

private:
  // Each slot holds fd + 1, so the zero-initialized array means "empty" with no init code.
  static inline std::atomic<int> slots_[capacity]{};
};

/// A move-only file descriptor; the destructor closes it. `registered` fds are parent-side pool
/// fds that every forked worker closes (see FdRegistry).
class Fd {
public:
  Fd() noexcept = default;
  explicit Fd(int fd, bool registered = false) noexcept : fd_(fd), registered_(registered) {
    if (registered_ && fd_ >= 0) FdRegistry::add(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)), registered_(o.registered_) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
      registered_ = o.registered_;
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void reset() noexcept;
  /// Forget the fd without closing it (used in a child that is about to _exit anyway).
  int release() noexcept { return std::exchange(fd_, -1); }

private:
  int fd_ = -1;
  bool registered_ = false;
};

/// `fd`, moved to a number above 2 (close-on-exec) if it sits on 0-2: a parent started with
/// stdin, stdout or stderr closed (daemons) gets its next fds there, and a worker's channel on
/// fd 1 would receive whatever the task prints. Closes `fd` on failure too.
FLOCK_ENGINE_INLINE int aboveStdio(int fd, std::string_view what);

inline void setNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throwErrno("fcntl(O_NONBLOCK)");
}

/// pidfd_open(2): an fd that becomes readable when the process exits (Linux 5.3+). glibc 2.36
/// has a wrapper, older ones don't, so use the raw syscall.
FLOCK_ENGINE_INLINE int pidfdOpen(pid_t pid) noexcept;

/// Collects the exit of the child behind `pidfd` (blocking): its wait status, to read with
/// WIFEXITED and friends, or nullopt when the status is gone (collected by someone else).
/// waitid(P_PIDFD) with __WALL also collects children made by clone3 with no exit signal.
FLOCK_ENGINE_INLINE std::optional<int> reapPidfd(int pidfd) noexcept;

/// Anonymous shared memory that survives fork as *shared* (not copy-on-write): workers write
/// into it and the parent sees the bytes without any copy through a pipe.
class SharedRegion {
public:
  SharedRegion() noexcept = default;
  explicit SharedRegion(std::size_t bytes);
  /// Shared memory that a process which was not forked from this one can map too: backed by a
  /// memfd, whose descriptor (fd()) is handed to it.
  static SharedRegion withFd(std::size_t bytes);
  SharedRegion(SharedRegion&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), fd_(std::move(o.fd_)) {}
  SharedRegion& operator=(SharedRegion&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      fd_ = std::move(o.fd_);
    }
    return *this;
  }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  ~SharedRegion() { reset(); }

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// The memfd behind a region made by withFd(); -1 otherwise.
  [[nodiscard]] int fd() const noexcept { return fd_ ? fd_.get() : -1; }
  void reset() noexcept;
private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  Fd fd_;
};

/// How the kernel hands out transparent huge pages to anonymous memory, read once from sysfs.
enum class ThpMode { always, madvise, never };

/// True when glibc was told at start to advise its heap into transparent huge pages.
FLOCK_ENGINE_INLINE bool mallocAdvisesHugePages() noexcept;

FLOCK_ENGINE_INLINE ThpMode thpMode() noexcept;

/// The parent-side buffer a call fills with results while its workers run. Two pieces of advice
/// to the kernel, both best effort (if madvise refuses, nothing changes):
/// - Its whole pages are kept out of every child forked while it is held (`MADV_DONTFORK`), and
///   given back to fork on release. A result buffer that a worker inherits is shared
///   copy-on-write, so each parent write into it faults and copies a page, and each fork copies
///   its page-table entries; memory malloc reuses from an earlier call is exactly such a buffer.
///   Only the pages wholly inside the buffer are marked: its edges may share a page with other
///   objects the workers need.
/// - Where transparent huge pages are opt-in (`madvise` mode), its whole 2 MiB pages are asked to
///   be huge (`MADV_HUGEPAGE`). Every byte of the buffer is written, so nothing is wasted, and a
///   first touch then costs one fault per 2 MiB instead of 512: for 80 MB of results this is most
///   of the parent's time. Release turns the advice off again (`MADV_NOHUGEPAGE`, which in
///   `madvise` mode is what unadvised memory gets): the pages already huge stay huge for as long
///   as the user keeps them, but memory malloc later reuses there, perhaps sparsely, is not
///   gathered into huge pages. The exception is a heap glibc itself puts in huge pages
///   (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), where the advice was already on.
class ResultPages {
public:
  /// Below this, the syscalls (and the split of the memory mapping) cost more than they save.
  static constexpr std::size_t minBytes = std::size_t{256} << 10;
  static constexpr std::uintptr_t hugePageBytes = std::uintptr_t{2} << 20;

  ResultPages() noexcept = default;
  ResultPages(const void* data, std::size_t bytes) noexcept;
  ResultPages(ResultPages&& o) noexcept { *this = std::move(o); }
  ResultPages& operator=(ResultPages&& o) noexcept {
    if (this != &o) {
      release();
      begin_ = std::exchange(o.begin_, nullptr);
      size_ = std::exchange(o.size_, 0);
      hugeBegin_ = std::exchange(o.hugeBegin_, nullptr);
      hugeBytes_ = std::exchange(o.hugeBytes_, 0);
    }
    return *this;
  }
  ResultPages(const ResultPages&) = delete;
  ResultPages& operator=(const ResultPages&) = delete;
  ~ResultPages() { release(); }

  /// Must run before the buffer is freed or handed to the user: malloc would reuse those pages
  /// for objects that later children do need.
  void release() noexcept;
  /// True while the pages are kept out of children.
  [[nodiscard]] bool active() const noexcept { return begin_ != nullptr; }
  [[nodiscard]] const void* begin() const noexcept { return begin_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// Bytes asked to be huge pages (0 when THP is off, always on, or the buffer has no whole one).
  [[nodiscard]] std::size_t hugeBytes() const noexcept { return hugeBytes_; }

private:
  void* begin_ = nullptr;
  std::size_t size_ = 0;
  void* hugeBegin_ = nullptr;
  std::size_t hugeBytes_ = 0;
};

/// "SIGSEGV" for 11, or "signal 42" for one without a name.
inline std::string signalName(int sig) {
  if (const char* abbrev = ::sigabbrev_np(sig)) return fmt::format("SIG{}", abbrev);
  return fmt::format("signal {}", sig);
}

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void flushStdio() noexcept {
  try {
    std::cout.flush();
    std::clog.flush();
  } catch (...) {
    // A stream set to throw on failure; C stdio below is flushed regardless.
  }
  std::fflush(nullptr);
}

FLOCK_ENGINE_INLINE std::string_view errnoHint(int err) noexcept {
  switch (err) {
  case EMFILE: return "; the process's open-file limit is reached (raise RLIMIT_NOFILE, e.g. ulimit -n)";
  case ENFILE: return "; the system-wide open-file limit is reached";
  case EAGAIN: return "; a process limit (RLIMIT_NPROC, pids cgroup) or memory is exhausted";
  case ENOMEM: return "; out of memory";
  case ENOSYS: return "; this kernel lacks the system call (flock needs Linux 5.3 or later)";
  default: return "";
  }
}

FLOCK_ENGINE_INLINE void FdRegistry::add(int fd) noexcept {
  for (auto& slot : slots_) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1, std::memory_order_acq_rel)) return;
  }
  // Full: the fd is still close-on-exec; only fork-without-exec children could inherit it.
}

FLOCK_ENGINE_INLINE void FdRegistry::remove(int fd) noexcept {
  for (auto& slot : slots_) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return;
  }
}

FLOCK_ENGINE_INLINE void FdRegistry::closeAllInChild() noexcept {
  for (auto& slot : slots_) {
    int v = slot.load(std::memory_order_relaxed);
    if (v > 0) ::close(v - 1);
    slot.store(0, std::memory_order_relaxed);
  }
}

FLOCK_ENGINE_INLINE void Fd::reset() noexcept {
  if (fd_ >= 0) {
    if (registered_) FdRegistry::remove(fd_);
    ::close(fd_);
    fd_ = -1;
  }
}

FLOCK_ENGINE_INLINE int aboveStdio(int fd, std::string_view what) {
  if (fd < 0 || fd > 2) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  const int err = errno;
  ::close(fd);
  if (moved < 0) throwErrno(what, err);
  return moved;
}

FLOCK_ENGINE_INLINE int pidfdOpen(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

FLOCK_ENGINE_INLINE std::optional<int> reapPidfd(int pidfd) noexcept {
  constexpr auto pPidfd = static_cast<idtype_t>(3); // P_PIDFD (Linux 5.4), not named by older headers
  siginfo_t info{};
  while (::waitid(pPidfd, static_cast<id_t>(pidfd), &info, WEXITED | __WALL) != 0)
    if (errno != EINTR) return std::nullopt;
  switch (info.si_code) {
  case CLD_EXITED: return (info.si_status & 0xff) << 8;
  case CLD_KILLED: return info.si_status & 0x7f;
  case CLD_DUMPED: return (info.si_status & 0x7f) | 0x80;
  default: return std::nullopt;
  }
}

FLOCK_ENGINE_INLINE SharedRegion::SharedRegion(std::size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throwErrno(fmt::format("mmap of {} bytes of shared memory", bytes));
  data_ = p;
}

FLOCK_ENGINE_INLINE SharedRegion SharedRegion::withFd(std::size_t bytes) {
  SharedRegion r;
  const int fd = static_cast<int>(::syscall(SYS_memfd_create, "flock-controls", MFD_CLOEXEC));
  if (fd < 0) throwErrno("memfd_create for the workers' control blocks");
  r.fd_ = Fd(aboveStdio(fd, "moving a memfd above fd 2"), true);
  if (::ftruncate(r.fd_.get(), static_cast<off_t>(bytes)) != 0)
    throwErrno("ftruncate of the workers' control blocks");
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd_.get(), 0);
  if (p == MAP_FAILED) throwErrno(fmt::format("mmap of {} bytes of shared memory", bytes));
  r.data_ = p;
  r.size_ = bytes;
  return r;
}

FLOCK_ENGINE_INLINE void SharedRegion::reset() noexcept {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  fd_ = Fd();
}

FLOCK_ENGINE_INLINE bool mallocAdvisesHugePages() noexcept {
  static const bool advised = [] {
    const char* t = std::getenv("GLIBC_TUNABLES");
    return t != nullptr && std::string_view(t).find("glibc.malloc.hugetlb=1") != std::string_view::npos;
  }();
  return advised;
}

FLOCK_ENGINE_INLINE ThpMode thpMode() noexcept {
  static const ThpMode mode = [] {
    // The file reads "always [madvise] never": the bracketed word is the mode in force.
    char text[128] = {};
    const int fd = ::open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ThpMode::never;
    const ssize_t got = ::read(fd, text, sizeof text - 1);
    ::close(fd);
    if (got <= 0) return ThpMode::never;
    const std::string_view v(text, static_cast<std::size_t>(got));
    if (v.find("[always]") != std::string_view::npos) return ThpMode::always;
    if (v.find("[madvise]") != std::string_view::npos) return ThpMode::madvise;
    return ThpMode::never;
  }();
  return mode;
}

FLOCK_ENGINE_INLINE ResultPages::ResultPages(const void* data, std::size_t bytes) noexcept {
  if (data == nullptr || bytes < minBytes) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = (reinterpret_cast<std::uintptr_t>(data) + page - 1) & ~(page - 1);
  const auto last = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(page - 1);
  if (last <= first) return;
  if (::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTFORK) != 0) return;
  begin_ = reinterpret_cast<void*>(first);
  size_ = last - first;
  const auto hugeFirst = (first + hugePageBytes - 1) & ~(hugePageBytes - 1);
  const auto hugeLast = last & ~(hugePageBytes - 1);
  if (thpMode() == ThpMode::madvise && hugeLast > hugeFirst &&
      ::madvise(reinterpret_cast<void*>(hugeFirst), hugeLast - hugeFirst, MADV_HUGEPAGE) == 0) {
    hugeBegin_ = reinterpret_cast<void*>(hugeFirst);
    hugeBytes_ = hugeLast - hugeFirst;
  }
}

FLOCK_ENGINE_INLINE void ResultPages::release() noexcept {
  if (begin_ != nullptr) (void)::madvise(begin_, size_, MADV_DOFORK);
  if (hugeBegin_ != nullptr && !mallocAdvisesHugePages())
    (void)::madvise(hugeBegin_, hugeBytes_, MADV_NOHUGEPAGE);
  begin_ = nullptr;
  size_ = 0;
  hugeBegin_ = nullptr;
  hugeBytes_ = 0;
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

// flock internals: Options::workerOutput. Under forward and prefix, a worker's stdout and stderr
// are pipes; the parent reads them in its event loop (engine.hpp) and writes whole lines to its
// own stdout and stderr.
//
// Under prefix, the parent must know which input was running when each byte was written, even
// when a batch holds many inputs. The worker tells it in the pipes themselves, so the position is
// exact: when an input starts, it flushes its stdio and writes a marker to each pipe (a NUL byte,
// the worker's 64-bit nonce and the input's index; index -1 when no input runs). The nonce is
// random per worker and written by the parent into the worker's control block, so task output
// mistaken for a marker would have to contain those 8 random bytes after a NUL.
#pragma once

#include "config.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "posix.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#endif

namespace flockmp::detail {

/// A marker in a prefix-mode pipe: NUL, the worker's nonce, the input index (host order).
inline constexpr std::size_t outputMarkerBytes = 1 + 8 + 8;

/// A fresh random nonce for a worker's markers (never 0: 0 means "no markers").
FLOCK_ENGINE_INLINE std::uint64_t newOutputNonce() noexcept;

/// Worker side, prefix mode: where markers go (the pipes the worker started with, duplicated so
/// that a task redirecting its fd 1 does not receive them) and the nonce. A process global:
/// one worker per process.
struct WorkerStdio {
  std::uint64_t nonce = 0; // 0: no markers (inherit, forward, or not a worker)
  int fds[2] = {-1, -1};
};
inline WorkerStdio workerStdioState{};
inline WorkerStdio& workerStdio() noexcept { return workerStdioState; }

/// Worker side: flush what the task printed so far (stdout and stderr only: the task's own
/// files are its business), so that it goes out before the next marker.
FLOCK_ENGINE_INLINE void flushStdStreams() noexcept;

/// Worker side, prefix mode: input `index` starts (-1: no input runs from now on).
FLOCK_ENGINE_INLINE void markOutput(std::int64_t index) noexcept;

/// Worker side, at start: with a nonce (prefix mode), keep private copies of fds 1 and 2 (the
/// pipes to the parent) for the markers, and mark that no input runs yet.
FLOCK_ENGINE_INLINE void setUpWorkerStdio(std::uint64_t nonce) noexcept;

/// Parent side: writes all of `s` to the application's `fd` (its stdout or stderr), waiting when
/// the descriptor is non-blocking and full, as the application's own printf would. SIGPIPE is
/// blocked in this thread meanwhile (and the one a broken pipe raised is consumed): text for a
/// stream nobody reads any more is dropped, and the application is not killed by a library.
/// Other errors drop the text too: worker output never fails a call.
FLOCK_ENGINE_INLINE void writeForwarded(int fd, std::string_view s) noexcept;

/// Parent side: one of a worker's output pipes (its stdout or its stderr), cut into lines.
class OutputPipe {
public:
  OutputPipe() = default;
  OutputPipe(Fd fd, int worker, bool prefix, std::uint64_t nonce) noexcept
      : fd_(std::move(fd)), worker_(worker), prefix_(prefix), nonce_(nonce) {}

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] bool open() const noexcept { return static_cast<bool>(fd_) && !eof_; }

  /// Reads what the pipe holds now (at most about `budget` bytes, in large non-blocking reads)
  /// and appends the lines it completes to `out`. Returns the bytes read (0: nothing now, or
  /// the end of the pipe).
  std::size_t read(std::string& out, std::size_t budget = std::size_t{1} << 20);

  /// The worker is gone, or its call is over: read what the pipe holds (bounded, should a
  /// process the task left behind keep writing), then write an unfinished line with `cut`
  /// appended (e.g. " [cut: worker crashed]"; empty: nothing) and a newline, so that no line
  /// waits for a later call. With `close`, the pipe is closed afterwards.
  void finish(std::string& out, std::string_view cut, bool close);

private:
  /// Handles `n` bytes just read.
  void parse(const char* data, std::size_t n, std::string& out);

  /// Prefix mode: lines into line_ (emitted at their newline), markers into current_; a
  /// possible marker cut by the end of the read waits in buf_.
  void parsePrefixed(const char* p, const char* const end, std::string& out);

  void appendToLine(const char* p, std::size_t n);

  /// line_ is complete (it ends with a newline): out gets it, with its prefix.
  void emit(std::string& out);

  Fd fd_;
  int worker_ = 0;
  bool prefix_ = false;
  std::uint64_t nonce_ = 0;
  bool eof_ = false;
  std::string buf_;           // forward: the unfinished line; prefix: a possible marker cut by a read
  std::string line_;          // prefix: the unfinished line, markers removed
  bool started_ = false;      // line_ has a first byte (it may be empty only in forward settle)
  std::int64_t lineInput_ = -1;
  std::int64_t current_ = -1; // the input running, as the last marker said
};

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE std::uint64_t newOutputNonce() noexcept {
  std::uint64_t v = 0;
  if (::getrandom(&v, sizeof v, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof v)) {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    v = (static_cast<std::uint64_t>(ts.tv_nsec) << 20) ^ static_cast<std::uint64_t>(ts.tv_sec) ^
        (static_cast<std::uint64_t>(::getpid()) << 40) ^ 0x9e3779b97f4a7c15u;
  }
  return v == 0 ? 1 : v;
}

FLOCK_ENGINE_INLINE void flushStdStreams() noexcept {
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
    // A stream set to throw on failure; C stdio below is flushed regardless.
  }
  std::fflush(stdout);
  std::fflush(stderr);
}

FLOCK_ENGINE_INLINE void markOutput(std::int64_t index) noexcept {
  auto& w = workerStdio();
  if (w.nonce == 0) return;
  flushStdStreams();
  unsigned char m[outputMarkerBytes];
  m[0] = 0;
  std::memcpy(m + 1, &w.nonce, 8);
  std::memcpy(m + 9, &index, 8);
  for (int fd : w.fds) {
    // Under PIPE_BUF: written whole, never mixed into another writer's bytes.
    while (::write(fd, m, sizeof m) < 0 && errno == EINTR) {
    }
  }
}

FLOCK_ENGINE_INLINE void setUpWorkerStdio(std::uint64_t nonce) noexcept {
  auto& w = workerStdio();
  w.nonce = 0;
  if (nonce == 0) return;
  for (int k = 0; k < 2; ++k) {
    w.fds[k] = ::fcntl(k + 1, F_DUPFD_CLOEXEC, 3);
    if (w.fds[k] < 0) return; // no markers: lines get no input
    FdRegistry::add(w.fds[k]); // a nested call's workers must not hold this pipe
  }
  w.nonce = nonce;
}

FLOCK_ENGINE_INLINE void writeForwarded(int fd, std::string_view s) noexcept {
  if (s.empty()) return;
  sigset_t block, old, pending;
  ::sigemptyset(&block);
  ::sigaddset(&block, SIGPIPE);
  const bool masked = ::pthread_sigmask(SIG_BLOCK, &block, &old) == 0;
  ::sigemptyset(&pending);
  const bool pipePending = masked && ::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE) == 1;
  bool broken = false;
  while (!s.empty()) {
    const ssize_t w = ::write(fd, s.data(), s.size());
    if (w > 0) {
      s.remove_prefix(static_cast<std::size_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
      continue;
    }
    broken = w < 0 && errno == EPIPE;
    break;
  }
  if (masked) {
    if (broken && !pipePending) {
      const timespec zero{};
      while (::sigtimedwait(&block, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
}

FLOCK_ENGINE_INLINE std::size_t OutputPipe::read(std::string& out, std::size_t budget) {
  static thread_local char chunk[1 << 16];
  std::size_t got = 0;
  while (open() && got < budget) {
    const ssize_t r = ::read(fd_.get(), chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) eof_ = true;
      break;
    }
    got += static_cast<std::size_t>(r);
    parse(chunk, static_cast<std::size_t>(r), out);
  }
  return got;
}

FLOCK_ENGINE_INLINE void OutputPipe::finish(std::string& out, std::string_view cut, bool close) {
  read(out, std::size_t{16} << 20);
  if (close) fd_.reset();
  if (!prefix_) {
    if (buf_.empty()) return;
    line_.assign(buf_.data(), buf_.size()); // forward mode keeps the unfinished line in buf_
    started_ = true;
  } else if (!buf_.empty()) {
    appendToLine(buf_.data(), buf_.size()); // a partial marker still held is task output
  }
  buf_.clear();
  if (!started_) return;
  line_ += cut;
  line_ += '\n';
  emit(out);
}

FLOCK_ENGINE_INLINE void OutputPipe::parse(const char* data, std::size_t n, std::string& out) {
  if (!prefix_) {
    // Forward: whole lines go out as they are, in one append; the unfinished one waits in buf_.
    const void* nl = ::memrchr(data, '\n', n);
    if (nl == nullptr) {
      buf_.append(data, n);
      return;
    }
    const auto end = static_cast<std::size_t>(static_cast<const char*>(nl) - data) + 1;
    out += buf_;
    out.append(data, end);
    buf_.assign(data + end, n - end);
    return;
  }
  if (buf_.empty()) {
    parsePrefixed(data, data + n, out);
    return;
  }
  std::string joined; // a partial marker held from the last read, then these bytes
  joined.swap(buf_);
  joined.append(data, n);
  parsePrefixed(joined.data(), joined.data() + joined.size(), out);
}

FLOCK_ENGINE_INLINE void OutputPipe::parsePrefixed(const char* p, const char* const end,
                                                   std::string& out) {
  while (p < end) {
    const auto n = static_cast<std::size_t>(end - p);
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
    const char* z =
        static_cast<const char*>(std::memchr(p, '\0', nl ? static_cast<std::size_t>(nl - p) : n));
    if (z == nullptr) {
      if (nl == nullptr) {
        appendToLine(p, n);
        return;
      }
      appendToLine(p, static_cast<std::size_t>(nl - p) + 1);
      emit(out);
      p = nl + 1;
      continue;
    }
    appendToLine(p, static_cast<std::size_t>(z - p));
    if (static_cast<std::size_t>(end - z) < outputMarkerBytes) {
      buf_.assign(z, static_cast<std::size_t>(end - z)); // perhaps a marker: the next read says
      return;
    }
    std::uint64_t nonce = 0;
    std::memcpy(&nonce, z + 1, 8);
    if (nonce == nonce_) {
      std::memcpy(&current_, z + 9, 8);
      p = z + outputMarkerBytes;
    } else {
      appendToLine(z, 1); // a NUL the task wrote
      p = z + 1;
    }
  }
}

FLOCK_ENGINE_INLINE void OutputPipe::appendToLine(const char* p, std::size_t n) {
  if (n == 0) return;
  if (!started_) {
    started_ = true;
    lineInput_ = current_;
  }
  line_.append(p, n);
}

FLOCK_ENGINE_INLINE void OutputPipe::emit(std::string& out) {
  if (prefix_) {
    if (lineInput_ >= 0)
      out += "[worker " + std::to_string(worker_) + ", input " + std::to_string(lineInput_) + "] ";
    else out += "[worker " + std::to_string(worker_) + "] ";
  }
  out += line_;
  line_.clear();
  started_ = false;
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

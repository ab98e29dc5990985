// flock: the progress bar of `Options::checkProgress` (the seed's option). Drawn on stderr, only
// when stderr is a terminal, from the calling thread's event loop: no extra thread, because
// threads in a process that forks are a hazard. Progress output never kills, blocks or fails a
// call: see ProgressOutput.
#pragma once

#include "detail/config.hpp"

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/core.h>

#include "options.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#endif

namespace flockmp::detail {

/// Where progress text goes: a file descriptor the application owns (stderr), written so that
/// progress never kills, blocks or fails the call, whatever is on the other end (a pipe into a
/// `head` that exited, a stuck log collector, a terminal suspended with Ctrl-S, a background job).
///
/// - Never blocks. The application's descriptor is usually blocking, and its O_NONBLOCK flag
///   belongs to an open file description it shares with the application (and its children):
///   flipping it, even for one write, would make the application's own writes fail with EAGAIN
///   meanwhile. So a pipe or terminal is opened again through /proc/self/fd/N, which gives flock
///   a description of its own to the same pipe or terminal, opened O_NONBLOCK: a write that
///   would wait returns EAGAIN and that text is dropped. (A regular file is written directly:
///   reopening it would lose the shared offset and O_APPEND.) A socket (journald's stderr) is
///   written with send(MSG_DONTWAIT). Where reopening is impossible (no /proc, a terminal in
///   exclusive mode, a pty master, another user's pipe), a write happens only when poll says the
///   descriptor has room now; another writer can fill it in between, so that fallback is best
///   effort.
/// - Never raises SIGPIPE. A library must not change the process's disposition, so SIGPIPE is
///   blocked in the calling thread around the write (the signal a write raises is sent to the
///   writing thread), and the one the write raised is consumed with a zero-timeout sigtimedwait,
///   unless one was already pending before (then it is the application's, and stays).
/// - Never stops the process with SIGTTOU. A terminal is written only when the process is in its
///   foreground process group (`app &` draws no bar, `fg` brings it back, as git's progress
///   does), with SIGTTOU blocked during the write against a job moved to the background meanwhile.
/// - Never fails. EAGAIN drops the text of this write; any other error (EPIPE, EIO, EBADF,
///   ENOSPC, a pipe with no reader left...) stops progress output for the rest of the call.
class ProgressOutput {
public:
  /// `reopen = false` skips the /proc reopening (to test the fallback).
  explicit ProgressOutput(int fd, bool reopen = true) noexcept : fd_(fd), reopen_(reopen) {}
  ProgressOutput(ProgressOutput&& o) noexcept
      : fd_(o.fd_), own_(std::exchange(o.own_, -1)), reopen_(o.reopen_), how_(o.how_),
        tty_(o.tty_) {}
  ProgressOutput& operator=(ProgressOutput&& o) noexcept {
    if (this != &o) {
      closeOwn();
      fd_ = o.fd_;
      own_ = std::exchange(o.own_, -1);
      reopen_ = o.reopen_;
      how_ = o.how_;
      tty_ = o.tty_;
    }
    return *this;
  }
  ProgressOutput(const ProgressOutput&) = delete;
  ProgressOutput& operator=(const ProgressOutput&) = delete;
  ~ProgressOutput() { closeOwn(); }

  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// An error ended progress output for this call.
  [[nodiscard]] bool stopped() const noexcept { return how_ == How::stopped; }

  /// Writes what the descriptor takes now of `s`; the rest is dropped. errno is left unchanged.
  void write(std::string_view s) noexcept;

private:
  enum class How {
    unknown, // not chosen yet: the first write chooses
    direct,  // write(2) on the application's descriptor (regular files, /dev/null...)
    send,    // a socket: send(MSG_DONTWAIT | MSG_NOSIGNAL)
    own,     // a pipe or terminal reopened non-blocking: write(2) on flock's own description
    polled,  // fallback: write(2) on the application's descriptor when poll says it has room
    stopped, // an error happened: nothing more is written
  };

  void choose() noexcept;

  /// A terminal is written only by its foreground process group (or when it is not this
  /// process's controlling terminal, which tcgetpgrp reports as an error).
  [[nodiscard]] bool foreground() const noexcept {
    const pid_t group = ::tcgetpgrp(fd_);
    return group < 0 || group == ::getpgrp();
  }

  void writeMasked(std::string_view s) noexcept;

  /// The write itself, with SIGPIPE and SIGTTOU blocked. True when it failed with EPIPE (and so
  /// raised SIGPIPE, unless it was a send with MSG_NOSIGNAL).
  bool writeNow(std::string_view s) noexcept;

  void stop() noexcept {
    how_ = How::stopped;
    closeOwn();
  }
  void closeOwn() noexcept {
    if (own_ >= 0) ::close(own_);
    own_ = -1;
  }

  int fd_;
  int own_ = -1; // flock's own non-blocking description of fd_'s pipe or terminal (How::own)
  bool reopen_ = true;
  How how_ = How::unknown;
  bool tty_ = false;
};

/// Renders progress on file descriptor 2 (through ProgressOutput). Two styles:
/// - `bar`: one line redrawn in place with `\r` (a terminal), finished with a newline;
/// - `lines`: a plain line at 25%, 50%, 75% and at the end (a log file, when asked for).
///
///   [=========>          ]  12/20  60%  35.2/s  elapsed 0:03  ETA 0:02
///
/// Nothing is drawn for a call that ends within `showAfter`, so quick calls in a loop do not
/// flood the terminal. The caller throttles updates (the engine calls at most ~10 times a second).
class ProgressBar {
public:
  using Clock = std::chrono::steady_clock;
  enum class Style {
    bar,
    lines
  };

  /// A bar is drawn only after the call has run this long.
  static constexpr std::chrono::milliseconds showAfter{200};

  /// The renderer a call with these options wants, if any: a bar when `checkProgress` is on and
  /// stderr is a terminal, plain lines when `progressLines` is on and it is not, else none.
  static std::optional<ProgressBar> forOptions(const Options& o, int fd = 2);

  ProgressBar(Style style, int fd, Clock::time_point start = Clock::now())
      : style_(style), out_(fd), start_(start) {}
  ProgressBar(ProgressBar&& o) noexcept
      : style_(o.style_), out_(std::move(o.out_)), start_(o.start_), shown_(o.shown_),
        finished_(o.finished_), hidden_(o.hidden_), last_(std::move(o.last_)), nextQuarter_(o.nextQuarter_),
        nextCount_(o.nextCount_) {
    o.shown_ = false; // the moved-from object must not end the line
  }
  ProgressBar& operator=(ProgressBar&& o) noexcept {
    if (this != &o) {
      endLine();
      style_ = o.style_;
      out_ = std::move(o.out_);
      start_ = o.start_;
      shown_ = std::exchange(o.shown_, false);
      finished_ = o.finished_;
      hidden_ = o.hidden_;
      last_ = std::move(o.last_);
      nextQuarter_ = o.nextQuarter_;
      nextCount_ = o.nextCount_;
    }
    return *this;
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  /// A bar left mid-line (the call threw) still ends with a newline.
  ~ProgressBar() { endLine(); }

  /// Draw the state of the call. `final`: the call is over (the bar gets its newline).
  void update(std::size_t done, std::size_t failed, std::size_t total, bool final,
              Clock::time_point now = Clock::now(), bool totalKnown = true);

  /// The text of the bar for these numbers, `width` columns at most (0: no bar, numbers only).
  static std::string render(std::size_t done, std::size_t failed, std::size_t total,
                            Clock::duration elapsed, std::size_t width);

  /// The numbers for a call whose total is not known yet (a stream): count, rate, elapsed time.
  static std::string renderCount(std::size_t done, std::size_t failed, Clock::duration elapsed);

  /// `m:ss` or `h:mm:ss`.
  static std::string formatTime(double seconds);

  static std::string formatRate(double perSecond);

  [[nodiscard]] bool shown() const noexcept { return shown_; }

  /// Other text (forwarded worker lines) is about to be written to the terminal: erase the bar
  /// so that the text starts on a clean line. Call restore() after it.
  void hide() noexcept;
  /// Draw the bar again, as it was, below the text written since hide().
  void restore() noexcept;

private:
  void endLine() noexcept {
    if (style_ == Style::bar && shown_ && !finished_) put("\n");
    shown_ = false;
  }

  std::size_t width() const;

  /// Progress is best effort: what cannot be written now is dropped (see ProgressOutput).
  void put(std::string_view s) noexcept { out_.write(s); }

  Style style_;
  ProgressOutput out_;
  Clock::time_point start_;
  bool shown_ = false;
  bool finished_ = false;
  bool hidden_ = false; // erased by hide(), not yet drawn again
  std::string last_;    // the bar as last drawn (bar style), for restore()
  unsigned nextQuarter_ = 1;
  std::size_t nextCount_ = 1000; // plain lines with no total: the next count that prints one
};

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void ProgressOutput::write(std::string_view s) noexcept {
  if (how_ == How::stopped) return;
  const int savedErrno = errno;
  if (how_ == How::unknown) choose();
  if (how_ != How::stopped && (!tty_ || foreground())) writeMasked(s);
  errno = savedErrno;
}

FLOCK_ENGINE_INLINE void ProgressOutput::choose() noexcept {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    stop();
    return;
  }
  if (S_ISSOCK(st.st_mode)) {
    how_ = How::send;
    return;
  }
  tty_ = ::isatty(fd_) == 1;
  if (!S_ISFIFO(st.st_mode) && !tty_) {
    how_ = How::direct; // a write to these neither blocks for long nor raises SIGPIPE
    return;
  }
  unsigned ptyNumber = 0;
  // A pty master reopened through /proc would be a new pty (/dev/ptmx), not this one.
  const bool ptyMaster = tty_ && ::ioctl(fd_, TIOCGPTN, &ptyNumber) == 0;
  how_ = How::polled;
  if (!reopen_ || ptyMaster) return;
  char path[40];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd_);
  const int own = ::open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (own < 0) {
    // O_WRONLY | O_NONBLOCK on a pipe nobody reads fails with ENXIO: writing would be EPIPE.
    if (errno == ENXIO && S_ISFIFO(st.st_mode)) stop();
    return;
  }
  struct stat ost {};
  if (::fstat(own, &ost) == 0 && ost.st_dev == st.st_dev && ost.st_ino == st.st_ino &&
      ost.st_rdev == st.st_rdev) {
    own_ = own;
    how_ = How::own;
    return;
  }
  ::close(own); // not the same file after all
}

FLOCK_ENGINE_INLINE void ProgressOutput::writeMasked(std::string_view s) noexcept {
  sigset_t block;
  ::sigemptyset(&block);
  ::sigaddset(&block, SIGPIPE);
  ::sigaddset(&block, SIGTTOU);
  sigset_t old;
  if (::pthread_sigmask(SIG_BLOCK, &block, &old) != 0) return;
  sigset_t pending;
  ::sigemptyset(&pending);
  const bool pipePending = ::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE) == 1;
  const bool brokenPipe = writeNow(s);
  if (brokenPipe && !pipePending) {
    sigset_t pipe;
    ::sigemptyset(&pipe);
    ::sigaddset(&pipe, SIGPIPE);
    const timespec zero{};
    while (::sigtimedwait(&pipe, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

FLOCK_ENGINE_INLINE bool ProgressOutput::writeNow(std::string_view s) noexcept {
  while (!s.empty()) {
    ssize_t w = -1;
    switch (how_) {
    case How::send:
      w = ::send(fd_, s.data(), s.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      break;
    case How::own:
      w = ::write(own_, s.data(), s.size());
      break;
    case How::direct:
      w = ::write(fd_, s.data(), s.size());
      break;
    case How::polled: {
      pollfd p{fd_, POLLOUT, 0};
      const int ready = ::poll(&p, 1, 0);
      if (ready < 0 || (ready > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0)) {
        stop(); // POLLERR: a pipe with no reader; POLLHUP: a terminal hung up
        return false;
      }
      if (ready == 0 || (p.revents & POLLOUT) == 0) return false; // no room now: dropped
      w = ::write(fd_, s.data(), s.size());
      break;
    }
    case How::unknown:
    case How::stopped:
      return false;
    }
    if (w > 0) {
      s.remove_prefix(static_cast<std::size_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false; // full: dropped
    const bool brokenPipe = w < 0 && errno == EPIPE && how_ != How::send;
    stop();
    return brokenPipe;
  }
  return false;
}

FLOCK_ENGINE_INLINE std::optional<ProgressBar> ProgressBar::forOptions(const Options& o, int fd) {
  if (!o.checkProgress) return std::nullopt;
  if (::isatty(fd)) return ProgressBar(Style::bar, fd);
  if (o.progressLines) return ProgressBar(Style::lines, fd);
  return std::nullopt;
}

FLOCK_ENGINE_INLINE void ProgressBar::update(std::size_t done, std::size_t failed,
                                             std::size_t total, bool final, Clock::time_point now,
                                             bool totalKnown) {
  if (finished_ || out_.stopped()) return;
  const auto elapsed = now - start_;
  if (style_ == Style::bar) {
    if (!shown_ && elapsed < showAfter) return;
    shown_ = true;
    // Appended piece by piece: GCC 12 at -O3 warns falsely (-Wrestrict) on "\r" + s + "...".
    std::string line = "\r";
    line += totalKnown ? render(done, failed, total, elapsed, width())
                       : renderCount(done, failed, elapsed);
    line += "\x1b[K";
    hidden_ = false;
    if (final) {
      line += '\n';
      finished_ = true;
    }
    put(line);
    last_ = std::move(line);
    return;
  }
  if (!totalKnown) {
    // Plain lines with no total: one at each power of ten from 1000 on, and one at the end.
    if (!final && (done < nextCount_)) return;
    if (final) finished_ = true;
    while (nextCount_ <= done) nextCount_ *= 10;
    shown_ = true;
    put("flock: " + renderCount(done, failed, elapsed) + "\n");
    return;
  }
  // Plain lines: one per quarter reached, and one at the end.
  const unsigned quarter = total == 0 ? 4u : static_cast<unsigned>(done * 4 / total);
  if (!final && (quarter < nextQuarter_ || quarter >= 4)) return; // 100% is the final line
  if (final) finished_ = true;
  nextQuarter_ = quarter + 1;
  shown_ = true;
  put("flock: " + render(done, failed, total, elapsed, 0) + "\n");
}

FLOCK_ENGINE_INLINE std::string ProgressBar::render(std::size_t done, std::size_t failed,
                                                    std::size_t total, Clock::duration elapsed,
                                                    std::size_t width) {
  const double secs = std::chrono::duration<double>(elapsed).count();
  const double frac = total == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(total);
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
  std::string eta = "--:--";
  if (done >= total)
    eta = formatTime(0);
  else if (done > 0 && rate > 0)
    eta = formatTime(static_cast<double>(total - done) / rate);
  std::string numbers = fmt::format("{:>{}}/{} {:>3.0f}%  {}/s  elapsed {}  ETA {}", done,
                                    std::to_string(total).size(), total, frac * 100.0,
                                    formatRate(rate), formatTime(secs), eta);
  if (failed > 0) numbers += fmt::format("  {} failed", failed);
  if (width == 0) return numbers;
  // The bar takes what the numbers leave, between 10 and 40 columns.
  const std::size_t room = width > numbers.size() + 4 ? width - numbers.size() - 4 : 0;
  if (room < 10) return numbers.size() < width ? numbers : numbers.substr(0, width - 1);
  const std::size_t barWidth = std::min<std::size_t>(room, 40);
  const auto filled = static_cast<std::size_t>(frac * static_cast<double>(barWidth));
  std::string bar(barWidth, ' ');
  std::fill_n(bar.begin(), filled, '=');
  if (filled < barWidth) bar[filled] = '>';
  return fmt::format("[{}] {}", bar, numbers);
}

FLOCK_ENGINE_INLINE std::string ProgressBar::renderCount(std::size_t done, std::size_t failed,
                                                         Clock::duration elapsed) {
  const double secs = std::chrono::duration<double>(elapsed).count();
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
  std::string numbers =
      fmt::format("{} done  {}/s  elapsed {}", done, formatRate(rate), formatTime(secs));
  if (failed > 0) numbers += fmt::format("  {} failed", failed);
  return numbers;
}

FLOCK_ENGINE_INLINE std::string ProgressBar::formatTime(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds) + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

FLOCK_ENGINE_INLINE std::string ProgressBar::formatRate(double perSecond) {
  if (perSecond >= 1e6) return fmt::format("{:.1f}M", perSecond / 1e6);
  if (perSecond >= 1e4) return fmt::format("{:.1f}k", perSecond / 1e3);
  if (perSecond >= 100) return fmt::format("{:.0f}", perSecond);
  return fmt::format("{:.1f}", perSecond);
}

FLOCK_ENGINE_INLINE void ProgressBar::hide() noexcept {
  if (style_ != Style::bar || !shown_ || finished_ || hidden_) return;
  put("\r\x1b[K");
  hidden_ = true;
}

FLOCK_ENGINE_INLINE void ProgressBar::restore() noexcept {
  if (!hidden_) return;
  hidden_ = false;
  put(last_);
}

FLOCK_ENGINE_INLINE std::size_t ProgressBar::width() const {
  winsize ws{};
  if (::ioctl(out_.fd(), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col - 1u;
  return 79;
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

// flock: the progress bar of `Options::checkProgress` (the seed's option). Drawn on stderr, only
// when stderr is a terminal, from the calling thread's event loop: no extra thread, because
// threads in a process that forks are a hazard.
#pragma once

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "options.hpp"

namespace flockmp::detail {

/// Renders progress on file descriptor 2. Two styles:
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
  static std::optional<ProgressBar> forOptions(const Options& o, int fd = 2) {
    if (!o.checkProgress) return std::nullopt;
    if (::isatty(fd)) return ProgressBar(Style::bar, fd);
    if (o.progressLines) return ProgressBar(Style::lines, fd);
    return std::nullopt;
  }

  ProgressBar(Style style, int fd, Clock::time_point start = Clock::now())
      : style_(style), fd_(fd), start_(start) {}
  ProgressBar(ProgressBar&& o) noexcept
      : style_(o.style_), fd_(o.fd_), start_(o.start_), shown_(o.shown_), finished_(o.finished_),
        nextQuarter_(o.nextQuarter_) {
    o.shown_ = false; // the moved-from object must not end the line
  }
  ProgressBar& operator=(ProgressBar&& o) noexcept {
    if (this != &o) {
      endLine();
      style_ = o.style_;
      fd_ = o.fd_;
      start_ = o.start_;
      shown_ = std::exchange(o.shown_, false);
      finished_ = o.finished_;
      nextQuarter_ = o.nextQuarter_;
    }
    return *this;
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  /// A bar left mid-line (the call threw) still ends with a newline.
  ~ProgressBar() { endLine(); }

  /// Draw the state of the call. `final`: the call is over (the bar gets its newline).
  void update(std::size_t done, std::size_t failed, std::size_t total, bool final,
              Clock::time_point now = Clock::now()) {
    if (finished_) return;
    const auto elapsed = now - start_;
    if (style_ == Style::bar) {
      if (!shown_ && elapsed < showAfter) return;
      shown_ = true;
      std::string line = "\r" + render(done, failed, total, elapsed, width()) + "\x1b[K";
      if (final) {
        line += '\n';
        finished_ = true;
      }
      put(line);
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

  /// The text of the bar for these numbers, `width` columns at most (0: no bar, numbers only).
  static std::string render(std::size_t done, std::size_t failed, std::size_t total,
                            Clock::duration elapsed, std::size_t width) {
    const double secs = std::chrono::duration<double>(elapsed).count();
    const double frac = total == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(total);
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
    std::string eta = "--:--";
    if (done >= total)
      eta = formatTime(0);
    else if (done > 0 && rate > 0)
      eta = formatTime(static_cast<double>(total - done) / rate);
    std::string numbers = fmt::format("{:>{}}/{} {:>3.0f}%  {}/s  elapsed {}  ETA {}", done,
                                      fmt::formatted_size("{}", total), total, frac * 100.0,
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

  /// `m:ss` or `h:mm:ss`.
  static std::string formatTime(double seconds) {
    const auto s = static_cast<long long>(std::max(0.0, seconds) + 0.5);
    if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    return fmt::format("{}:{:02}", s / 60, s % 60);
  }

  static std::string formatRate(double perSecond) {
    if (perSecond >= 1e6) return fmt::format("{:.1f}M", perSecond / 1e6);
    if (perSecond >= 1e4) return fmt::format("{:.1f}k", perSecond / 1e3);
    if (perSecond >= 100) return fmt::format("{:.0f}", perSecond);
    return fmt::format("{:.1f}", perSecond);
  }

  [[nodiscard]] bool shown() const noexcept { return shown_; }

private:
  void endLine() noexcept {
    if (style_ == Style::bar && shown_ && !finished_) put("\n");
    shown_ = false;
  }

  std::size_t width() const {
    winsize ws{};
    if (::ioctl(fd_, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col - 1u;
    return 79;
  }

  void put(std::string_view s) const noexcept {
    const int savedErrno = errno;
    while (!s.empty()) {
      const ssize_t w = ::write(fd_, s.data(), s.size());
      if (w < 0) {
        if (errno == EINTR) continue;
        break; // progress is best effort: a closed or full stderr must not fail the call
      }
      s.remove_prefix(static_cast<std::size_t>(w));
    }
    errno = savedErrno;
  }

  Style style_;
  int fd_;
  Clock::time_point start_;
  bool shown_ = false;
  bool finished_ = false;
  unsigned nextQuarter_ = 1;
};

} // namespace flockmp::detail

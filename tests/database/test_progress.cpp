// The progress bar of Options::checkProgress: its text, and what a real program prints under a
// pseudo-terminal (script(1) runs the probe in one and copies the screen bytes) and without one.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <flock/progress.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/test_util.hpp"

using namespace std::chrono_literals;
using flockmp::detail::ProgressBar;
using flockmp::detail::ProgressOutput;
using flockmp::test::contains;
using flockmp::test::DeadlockGuard;

namespace {

struct Run {
  std::string out;
  int status = -1;
};

/// Run a shell command and capture its standard output.
Run capture(const std::string& command) {
  Run r;
  std::FILE* p = ::popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  r.status = ::pclose(p);
  return r;
}

std::string probe(const std::string& mode) {
  return std::string(FLOCK_PROGRESS_PROBE) + " " + mode;
}

#if defined(FLOCK_SCRIPT_PROGRAM)
/// What the probe puts on a terminal (stdout and stderr both go to the pseudo-terminal).
Run underTerminal(const std::string& mode) {
  return capture(std::string(FLOCK_SCRIPT_PROGRAM) + " -qfec '" + probe(mode) +
                 "' /dev/null < /dev/null");
}
#endif

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// How a child process ended. `timedOut`: it was still running at the deadline and was killed.
struct Ended {
  bool timedOut = false;
  int status = 0;
  [[nodiscard]] bool exitedWith(int code) const {
    return !timedOut && WIFEXITED(status) && WEXITSTATUS(status) == code;
  }
  [[nodiscard]] std::string describe() const {
    if (timedOut) return "still running after the deadline (blocked), killed";
    if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
    if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
    return "status " + std::to_string(status);
  }
};

/// Waits for child `pid` at most `seconds` (a deadlock guard, not a timing check: the probe
/// takes half a second, the bound is 60): a call that blocks fails the test instead of hanging it.
Ended waitBounded(pid_t pid, int seconds = 60) {
  Ended e;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{pidfd, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count())));
      if (r > 0) break;
      if (r == 0) {
        e.timedOut = true;
        ::kill(pid, SIGKILL);
        break;
      }
      if (errno != EINTR) break;
    }
    ::close(pidfd);
  } else {
    ::alarm(static_cast<unsigned>(seconds)); // no pidfd (Linux < 5.3): SIGALRM ends the test binary
  }
  while (::waitpid(pid, &e.status, 0) < 0 && errno == EINTR) {
  }
  ::alarm(0);
  return e;
}

/// In a child process, about to become the "application": the signal state of a plain program
/// (default actions, nothing blocked), whatever the test runner left.
void plainSignals() {
  for (int sig : {SIGPIPE, SIGTTOU, SIGALRM}) ::signal(sig, SIG_DFL);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

/// Runs `body` in a child process with a plain program's signal state; what it returns is the
/// child's exit status (0: all its checks held).
template <class F>
Ended inChild(F body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    plainSignals();
    int status = 99;
    try {
      status = body();
    } catch (...) { // a failed REQUIRE: the child must not go on running the test suite
    }
    ::_exit(status);
  }
  REQUIRE(pid > 0);
  return waitBounded(pid);
}

/// Fills what `fd` writes into until it takes no more (no Catch macros: runs in children too);
/// the descriptor is left as blocking as it was. False when that failed.
bool fill(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return false;
  const std::string page(4096, 'x');
  while (::write(fd, page.data(), page.size()) > 0) {
  }
  while (::write(fd, "x", 1) > 0) {
  }
  const bool full = errno == EAGAIN;
  return ::fcntl(fd, F_SETFL, flags) == 0 && full;
}

/// Reads what `fd` holds now, without waiting.
std::string drain(int fd) {
  std::string all;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0 || (p.revents & POLLIN) == 0) break;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    all.append(buf, static_cast<std::size_t>(n));
  }
  return all;
}

/// Starts the probe in `mode` as a separate application whose stderr is `errFd` and whose stdout
/// goes to `outPath`.
pid_t startProbe(const char* mode, int errFd, const std::string& outPath) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out < 0 || in < 0 || ::dup2(out, 1) < 0 || ::dup2(in, 0) < 0 || ::dup2(errFd, 2) < 0)
      ::_exit(120);
    plainSignals();
    ::execl(FLOCK_PROGRESS_PROBE, "flock_progress_probe", mode, static_cast<char*>(nullptr));
    ::_exit(121);
  }
  return pid;
}

/// A pseudo-terminal: the master (the terminal emulator's side) and the slave (the program's).
struct Pty {
  int master = -1;
  int slave = -1;
  Pty() {
    master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(master >= 0);
    REQUIRE(::grantpt(master) == 0);
    REQUIRE(::unlockpt(master) == 0);
    char name[128];
    REQUIRE(::ptsname_r(master, name, sizeof name) == 0);
    slave = ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(slave >= 0);
  }
  ~Pty() {
    ::close(slave);
    ::close(master);
  }
  Pty(const Pty&) = delete;
  Pty& operator=(const Pty&) = delete;
};

} // namespace

TEST_CASE("the progress text shows done/total, percent, rate, elapsed time and ETA", "[progress]") {
  const auto text = ProgressBar::render(12, 0, 20, 3s, 100);
  CHECK_THAT(text, contains("12/20"));
  CHECK_THAT(text, contains(" 60%"));
  CHECK_THAT(text, contains("4.0/s"));
  CHECK_THAT(text, contains("elapsed 0:03"));
  CHECK_THAT(text, contains("ETA 0:02"));
  CHECK_THAT(text, contains("[========"));
  CHECK(text.size() <= 100);
  CHECK_THAT(ProgressBar::render(20, 3, 20, 5s, 100), contains("100%"));
  CHECK_THAT(ProgressBar::render(20, 3, 20, 5s, 100), contains("3 failed"));
  CHECK_THAT(ProgressBar::render(0, 0, 20, 1s, 100), contains("ETA --:--"));
  CHECK(ProgressBar::render(5, 0, 20, 1s, 0).find('[') ==
        std::string::npos);                                 // no bar: numbers only
  CHECK(ProgressBar::render(5, 0, 20, 1s, 30).size() < 30); // a narrow terminal
  CHECK(ProgressBar::formatTime(3725) == "1:02:05");
  CHECK(ProgressBar::formatRate(123456) == "123.5k");
}

TEST_CASE("plain progress lines appear at each quarter and at the end", "[progress]") {
  char path[] = "/tmp/flock-progress-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  {
    ProgressBar bar(ProgressBar::Style::lines, fd);
    for (std::size_t done = 0; done <= 20; ++done) bar.update(done, 0, 20, false);
    bar.update(20, 0, 20, true);
  }
  ::close(fd);
  const auto text = slurp(path);
  std::filesystem::remove(path);
  CHECK_THAT(text, contains("flock:  5/20  25%"));
  CHECK_THAT(text, contains("flock: 10/20  50%"));
  CHECK_THAT(text, contains("flock: 15/20  75%"));
  CHECK_THAT(text, contains("flock: 20/20 100%"));
  CHECK(std::count(text.begin(), text.end(), '\n') == 4);
}

TEST_CASE("a stream with no known total shows a count and a rate, no percent and no ETA", "[progress]") {
  const auto text = ProgressBar::renderCount(52000, 3, 2s);
  CHECK(text == "52000 done  26.0k/s  elapsed 0:02  3 failed");
  // Plain lines: one at each power of ten from 1000, and the last.
  char path[] = "/tmp/flock-progress-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  {
    ProgressBar bar(ProgressBar::Style::lines, fd);
    for (std::size_t done = 0; done <= 25000; done += 500) bar.update(done, 0, done, false, std::chrono::steady_clock::now(), false);
    bar.update(25000, 0, 25000, true, std::chrono::steady_clock::now(), false);
  }
  ::close(fd);
  const auto lines = slurp(path);
  std::filesystem::remove(path);
  CHECK_THAT(lines, contains("flock: 1000 done"));
  CHECK_THAT(lines, contains("flock: 10000 done"));
  CHECK_THAT(lines, contains("flock: 25000 done"));
  CHECK_THAT(lines, !contains("ETA"));
  CHECK(std::count(lines.begin(), lines.end(), '\n') == 3);
}

#if defined(FLOCK_SCRIPT_PROGRAM)
TEST_CASE("on a terminal, a call draws a live progress bar on stderr", "[progress][tty]") {
  DeadlockGuard guard(60);
  SECTION("FunctionAsync") {
    const auto r = underTerminal("function");
    INFO(r.out);
    CHECK(r.status == 0);
    CHECK_THAT(r.out, contains("sum=2470"));
    CHECK_THAT(r.out, contains("20/20"));
    CHECK_THAT(r.out, contains("100%"));
    CHECK_THAT(r.out, contains("ETA 0:00"));
    CHECK_THAT(r.out, contains("elapsed 0:0"));
    CHECK_THAT(r.out, contains("/s"));
    CHECK_THAT(r.out, contains("\r["));              // redrawn in place
    CHECK_THAT(r.out, contains("\x1b[K"));           // each redraw clears the rest of the line
    CHECK(r.out.find("sum=") > r.out.rfind("100%")); // the bar ended before the program went on
  }
  SECTION("failed inputs are counted") {
    const auto r = underTerminal("failing");
    INFO(r.out);
    CHECK_THAT(r.out, contains("20/20"));
    CHECK_THAT(r.out, contains("3 failed"));
  }
#if defined(FLOCK_PROBE_SQLITE)
  SECTION("DatabaseAsync") {
    const auto r = underTerminal("database");
    INFO(r.out);
    CHECK_THAT(r.out, contains("sum=2470"));
    CHECK_THAT(r.out, contains("20/20"));
    CHECK_THAT(r.out, contains("100%"));
  }
#endif
}

TEST_CASE("on a terminal, no bar is drawn when checkProgress is off or the call is quick",
          "[progress][tty]") {
  DeadlockGuard guard(60);
  for (const char* mode : {"off", "quick"}) {
    const auto r = underTerminal(mode);
    INFO(mode << ": " << r.out);
    CHECK(r.status == 0);
    CHECK_THAT(r.out, contains("sum="));
    CHECK(r.out.find("ETA") == std::string::npos);
    CHECK(r.out.find('%') == std::string::npos);
  }
}
#endif

TEST_CASE("without a terminal nothing is printed, or plain lines when asked", "[progress]") {
  DeadlockGuard guard(60);
  const auto err =
      std::filesystem::temp_directory_path() / ("flock-progress-" + std::to_string(::getpid()));
  SECTION("default") {
    const auto r = capture(probe("function") + " 2>" + err.string());
    CHECK(r.status == 0);
    CHECK(r.out == "sum=2470\n");
    CHECK(slurp(err).empty());
  }
  SECTION("progressLines") {
    const auto r = capture(probe("lines") + " 2>" + err.string());
    CHECK(r.out == "sum=2470\n");
    const auto text = slurp(err);
    INFO(text);
    CHECK_THAT(text, contains("flock: 20/20 100%"));
    CHECK(text.find('\r') == std::string::npos);
    CHECK(std::count(text.begin(), text.end(), '\n') <= 4);
  }
  std::filesystem::remove(err);
}

// Progress output must never kill, block or fail the call, whatever stderr is. The probe is the
// application; each test gives it a hostile stderr and checks that the call returns everything.

TEST_CASE("progress lines to a pipe nobody reads any more do not kill the application with SIGPIPE",
          "[progress][robust]") {
  flockmp::test::TempDir dir("flock-progress");
  const auto out = (dir.path / "out").string();
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  ::close(p[0]); // the reader is gone (a `| head` that exited)
  const pid_t pid = startProbe("lines", p[1], out);
  ::close(p[1]);
  const auto e = waitBounded(pid);
  INFO(e.describe());
  CHECK(e.exitedWith(0));
  CHECK(slurp(out) == "sum=2470\n");
}

TEST_CASE("progress lines to a full pipe nobody reads do not block the call", "[progress][robust]") {
  flockmp::test::TempDir dir("flock-progress");
  const auto out = (dir.path / "out").string();
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  REQUIRE(fill(p[1])); // a reader that stopped reading (a stuck log collector)
  const pid_t pid = startProbe("lines", p[1], out);
  const auto e = waitBounded(pid);
  INFO(e.describe());
  CHECK(e.exitedWith(0));
  CHECK(slurp(out) == "sum=2470\n");
  ::close(p[0]);
  ::close(p[1]);
}

TEST_CASE("the bar on a terminal whose output is stopped (Ctrl-S) does not block the call",
          "[progress][robust][tty]") {
  flockmp::test::TempDir dir("flock-progress");
  const auto out = (dir.path / "out").string();
  Pty pty;
  REQUIRE(::tcflow(pty.slave, TCOOFF) == 0); // output suspended: writes to the terminal wait
  const pid_t pid = startProbe("function", pty.slave, out);
  const auto e = waitBounded(pid);
  INFO(e.describe());
  CHECK(e.exitedWith(0));
  CHECK(slurp(out) == "sum=2470\n");
}

TEST_CASE("a background job draws no bar and is not stopped by SIGTTOU", "[progress][robust][tty]") {
  // The terminal has TOSTOP set (`stty tostop`): a write from a background process group stops
  // the whole job with SIGTTOU. The probe runs in the background of its controlling terminal.
  flockmp::test::TempDir dir("flock-progress");
  const auto out = (dir.path / "out").string();
  Pty pty;
  const pid_t session = ::fork();
  if (session == 0) {
    // A session leader (the "shell") with the pty as its controlling terminal, in the foreground.
    ::close(pty.master);
    termios t{};
    if (::setsid() < 0 || ::ioctl(pty.slave, TIOCSCTTY, 0) != 0 || ::tcgetattr(pty.slave, &t) != 0)
      ::_exit(110);
    t.c_lflag |= TOSTOP;
    if (::tcsetattr(pty.slave, TCSANOW, &t) != 0) ::_exit(111);
    const pid_t job = ::fork();
    if (job == 0) {
      ::setpgid(0, 0); // its own process group, not the terminal's foreground one: `probe &`
      const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (o < 0 || ::dup2(o, 1) < 0 || ::dup2(pty.slave, 2) < 0) ::_exit(112);
      plainSignals();
      ::execl(FLOCK_PROGRESS_PROBE, "flock_progress_probe", "function", static_cast<char*>(nullptr));
      ::_exit(113);
    }
    ::setpgid(job, job);
    int st = 0;
    while (::waitpid(job, &st, WUNTRACED) < 0 && errno == EINTR) {
    }
    if (WIFSTOPPED(st)) { // stopped by SIGTTOU: the job would wait for `fg` forever
      ::kill(job, SIGKILL);
      ::waitpid(job, &st, 0);
      ::_exit(100 + 1);
    }
    ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 102);
  }
  const auto e = waitBounded(session);
  INFO(e.describe() << " (101: the job was stopped by SIGTTOU)");
  CHECK(e.exitedWith(0));
  CHECK(slurp(out) == "sum=2470\n");
  // A pty keeps order: once a marker written now reaches the master, all the job wrote has too.
  REQUIRE(::write(pty.slave, "END", 3) == 3);
  std::string screen;
  for (int i = 0; i < 600 && screen.find("END") == std::string::npos; ++i) {
    pollfd p{pty.master, POLLIN, 0};
    ::poll(&p, 1, 100);
    screen += drain(pty.master);
  }
  INFO(screen);
  CHECK(screen == "END"); // no bar drawn over the foreground job's screen
}

// The writes themselves, on each path ProgressOutput takes: its own non-blocking description of
// the pipe or terminal (reopen), the poll fallback, send on a socket.

TEST_CASE("a progress write to a pipe whose reader left raises no SIGPIPE and keeps the "
          "application's signals",
          "[progress][robust]") {
  for (const bool reopen : {true, false}) {
    INFO((reopen ? "own non-blocking description" : "poll fallback"));
    // The application's SIGPIPE: 0 default action (it would die), 1 blocked, 2 blocked and
    // already pending (raised by the application itself before the write).
    for (const int app : {0, 1, 2}) {
      INFO("application's SIGPIPE state " << app);
      const auto e = inChild([reopen, app] {
        int p[2];
        if (::pipe(p) != 0) return 10;
        ProgressOutput out(p[1], reopen);
        out.write("first\n"); // the reader is still there
        if (drain(p[0]) != "first\n") return 11;
        ::close(p[0]); // now it is gone
        sigset_t pipe;
        ::sigemptyset(&pipe);
        ::sigaddset(&pipe, SIGPIPE);
        if (app >= 1) ::sigprocmask(SIG_BLOCK, &pipe, nullptr);
        if (app == 2) ::raise(SIGPIPE);
        out.write("second\n"); // EPIPE (or no write at all): must not kill the application
        if (!out.stopped()) return 12; // an error ends progress output for the call
        sigset_t pending;
        ::sigpending(&pending);
        const bool pipePending = ::sigismember(&pending, SIGPIPE) == 1;
        if (app == 1 && pipePending) return 13; // flock's SIGPIPE left for the application
        if (app == 2 && !pipePending) return 14; // the application's own SIGPIPE was taken
        if (app == 2) {
          const timespec zero{};
          ::sigtimedwait(&pipe, nullptr, &zero);
        }
        return 0;
      });
      INFO(e.describe());
      CHECK(e.exitedWith(0));
    }
  }
  SECTION("a socket whose peer left") {
    const auto e = inChild([] {
      int s[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM, 0, s) != 0) return 10;
      ::close(s[1]);
      ProgressOutput out(s[0]);
      out.write("line\n");
      return out.stopped() ? 0 : 12;
    });
    INFO(e.describe());
    CHECK(e.exitedWith(0));
  }
}

TEST_CASE("a progress write to a full pipe, socket or stopped terminal returns at once, drops the "
          "text, and writes again once there is room",
          "[progress][robust]") {
  // Each child reports a non-zero status when a check fails; a write that blocks is caught by
  // the bounded wait.
  for (const bool reopen : {true, false}) {
    INFO((reopen ? "own non-blocking description" : "poll fallback"));
    const auto e = inChild([reopen] {
      int p[2];
      if (::pipe(p) != 0 || !fill(p[1])) return 10;
      ProgressOutput out(p[1], reopen);
      out.write("dropped\n"); // would block
      if (out.stopped()) return 11;
      if (drain(p[0]).find_first_not_of('x') != std::string::npos) return 12; // nothing, not half
      out.write("kept\n");
      return drain(p[0]) == "kept\n" ? 0 : 13;
    });
    INFO(e.describe());
    CHECK(e.exitedWith(0));
  }
  SECTION("a socket") {
    const auto e = inChild([] {
      int s[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM, 0, s) != 0 || !fill(s[0])) return 10;
      ProgressOutput out(s[0]);
      out.write("dropped\n");
      if (out.stopped()) return 11;
      if (drain(s[1]).find_first_not_of('x') != std::string::npos) return 12;
      out.write("kept\n");
      return drain(s[1]) == "kept\n" ? 0 : 13;
    });
    INFO(e.describe());
    CHECK(e.exitedWith(0));
  }
  SECTION("a terminal") {
    for (const bool reopen : {true, false}) {
      INFO((reopen ? "own non-blocking description" : "poll fallback"));
      const auto e = inChild([reopen] {
        Pty pty;
        ::tcflow(pty.slave, TCOOFF); // Ctrl-S
        ProgressOutput out(pty.slave, reopen);
        out.write("dropped\n");
        if (out.stopped()) return 11;
        ::tcflow(pty.slave, TCOON); // Ctrl-Q
        out.write("kept");
        // A pty delivers through a kernel worker: wait (bounded) for the text to reach the master.
        std::string seen;
        for (int i = 0; i < 600 && seen.find("kept") == std::string::npos; ++i) {
          pollfd p{pty.master, POLLIN, 0};
          ::poll(&p, 1, 100);
          seen += drain(pty.master);
        }
        if (seen.find("dropped") != std::string::npos) return 12;
        return seen == "kept" ? 0 : 13;
      });
      INFO(e.describe());
      CHECK(e.exitedWith(0));
    }
  }
}

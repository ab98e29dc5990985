// The progress bar of Options::checkProgress: its text, and what a real program prints under a
// pseudo-terminal (script(1) runs the probe in one and copies the screen bytes) and without one.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <flock/progress.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"

using namespace std::chrono_literals;
using flockmp::detail::ProgressBar;
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

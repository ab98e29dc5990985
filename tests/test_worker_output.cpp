// Options::workerOutput for one-shot calls (Context::fork), streams and DatabaseAsync: forwarded
// lines stay whole and in order, nothing is lost when a worker crashes, prefix names the right
// worker and input, stdout stays stdout and stderr stays stderr, inherit is unchanged. The pool
// contexts are in tests/pool/test_pool_output.cpp; the progress bar under a pseudo-terminal is
// at the end of this file. The test process's fds 1 and 2 are files while a call runs
// (StdCapture), so nothing here depends on timing.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <flock/database.hpp>
#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/capture.hpp"
#include "support/deadlock_guard.hpp"
#include "support/test_util.hpp"

using flockmp::Options;
using flockmp::WorkerOutput;
using flockmp::test::DeadlockGuard;
using flockmp::test::linesOf;
using flockmp::test::range;
using flockmp::test::StdCapture;

namespace {

/// Writes all of `s` to `fd` with write(2) (bypassing stdio), in pieces of `piece` bytes.
void writePieces(int fd, const std::string& s, std::size_t piece) {
  for (std::size_t at = 0; at < s.size(); at += piece) {
    const std::size_t n = std::min(piece, s.size() - at);
    std::size_t done = 0;
    while (done < n) {
      const ssize_t w = ::write(fd, s.data() + at + done, n - done);
      if (w <= 0) std::abort();
      done += static_cast<std::size_t>(w);
    }
  }
}

/// The line a task prints: "<tag> pid=<pid> seq=<k> input=<i> line=<j> <payload>".
std::string taskLine(const char* tag, int input, int j, std::size_t payload) {
  static int seq = 0; // per worker process: lines must come out in this order
  return std::string(tag) + " pid=" + std::to_string(::getpid()) + " seq=" + std::to_string(seq++) +
         " input=" + std::to_string(input) + " line=" + std::to_string(j) + " " + std::string(payload, 'x') + "\n";
}

/// Payload length of line j of input i: every 7th input has one line of 100 KB (more than a
/// pipe's atomic write, and more than stdio's buffer), the others are short.
std::size_t payloadOf(int input, int j) { return (input % 7 == 0 && j == 1) ? 100'000 : static_cast<std::size_t>(j * 13); }

constexpr int linesPerInput = 6;

/// Each input prints its lines to stdout through stdio (buffered: flushed in arbitrary places)
/// and to stderr with write(2) in 1000-byte pieces (so a long line arrives in many writes).
int printLines(int i) {
  for (int j = 0; j < linesPerInput; ++j) {
    const std::string out = taskLine("out", i, j, payloadOf(i, j));
    std::fwrite(out.data(), 1, out.size(), stdout);
    writePieces(2, taskLine("err", i, j, payloadOf(i, j)), 1000);
  }
  return i;
}

struct Parsed {
  std::string tag;
  long pid = 0, seq = 0;
  int input = 0, line = 0;
  std::size_t payload = 0;
  bool ok = false;
};

Parsed parse(const std::string& line) {
  Parsed p;
  char tag[8] = {};
  int consumed = 0;
  if (std::sscanf(line.c_str(), "%3s pid=%ld seq=%ld input=%d line=%d %n", tag, &p.pid, &p.seq, &p.input, &p.line,
                  &consumed) != 5)
    return p;
  p.tag = tag;
  const std::string rest = line.substr(static_cast<std::size_t>(consumed));
  p.payload = rest.size();
  p.ok = rest.find_first_not_of('x') == std::string::npos;
  return p;
}

/// Checks the captured text of one stream: every line is whole and from `tag`, each (input, line)
/// appears exactly once, and each worker's lines come in the order it printed them.
void checkStream(const std::string& text, const char* tag, int inputs) {
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n'); // bug: an unterminated or lost last line
  std::set<std::pair<int, int>> seen;
  std::map<long, long> lastSeq;
  for (const auto& line : linesOf(text)) {
    const Parsed p = parse(line);
    INFO(line.substr(0, 120));
    // Bug caught: a line split by a read or write boundary, or mixed with another worker's line
    // (its payload would hold another line's text), or a line of the other stream.
    REQUIRE(p.ok);
    REQUIRE(p.tag == tag);
    REQUIRE(p.payload == payloadOf(p.input, p.line));
    // Bug caught: a line printed twice.
    REQUIRE(seen.insert({p.input, p.line}).second);
    // Bug caught: lines of one worker reordered (e.g. a partial line held back while later ones
    // went out).
    auto [it, fresh] = lastSeq.emplace(p.pid, p.seq);
    if (!fresh) {
      REQUIRE(p.seq > it->second);
      it->second = p.seq;
    }
  }
  // Bug caught: lines lost (the last chunk of a pipe, a worker's last batch).
  REQUIRE(seen.size() == static_cast<std::size_t>(inputs * linesPerInput));
}

bool fdIsPipe(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

} // namespace

TEST_CASE("forward keeps whole lines, in each worker's order, stdout to stdout and stderr to stderr",
          "[workerOutput][forward]") {
  DeadlockGuard guard;
  const int n = 70;
  const auto batch = GENERATE(std::size_t{0}, std::size_t{1}, std::size_t{5});
  CAPTURE(batch);
  std::vector<int> results;
  std::string out, err;
  {
    StdCapture capture;
    results = flockmp::FunctionAsync::apply(range(n), printLines,
                                            {.poolSize = 4, .batchSize = batch, .workerOutput = WorkerOutput::forward});
    std::tie(out, err) = capture.stop();
  }
  REQUIRE(results == range(n));
  checkStream(out, "out", n);
  checkStream(err, "err", n);
}

TEST_CASE("forward is the default, and workers' stdout and stderr are then pipes", "[workerOutput][forward]") {
  DeadlockGuard guard;
  StdCapture capture;
  const auto kinds = flockmp::FunctionAsync::apply(range(2), [](int) { return fdIsPipe(1) && fdIsPipe(2); }, {.poolSize = 2});
  capture.stop();
  // Bug caught: the default left workers on the parent's files (the bar would be garbled).
  REQUIRE(kinds == std::vector<bool>{true, true});
}

TEST_CASE("inherit: workers write to the parent's files themselves, flushed after each batch", "[workerOutput][inherit]") {
  DeadlockGuard guard;
  std::string out, err;
  std::vector<bool> onPipes;
  {
    StdCapture capture;
    onPipes = flockmp::FunctionAsync::apply(
        range(20),
        [](int i) {
          std::printf("inherit %d\n", i); // stdout to a file: fully buffered, never flushed here
          std::fprintf(stderr, "inherit-err %d\n", i);
          return fdIsPipe(1) || fdIsPipe(2);
        },
        {.poolSize = 2, .batchSize = 4, .workerOutput = WorkerOutput::inherit});
    std::tie(out, err) = capture.stop();
  }
  // Bug caught: inherit forwarded through pipes anyway.
  for (bool p : onPipes) REQUIRE_FALSE(p);
  std::set<std::string> outLines, errLines;
  for (auto& l : linesOf(out)) outLines.insert(l);
  for (auto& l : linesOf(err)) errLines.insert(l);
  // Bug caught: buffered output lost (a worker leaving with _exit without flushing).
  REQUIRE(outLines.size() == 20);
  REQUIRE(errLines.size() == 20);
  for (int i = 0; i < 20; ++i) {
    REQUIRE(outLines.count("inherit " + std::to_string(i)) == 1);
    REQUIRE(errLines.count("inherit-err " + std::to_string(i)) == 1);
  }
}

TEST_CASE("a line unfinished when its worker crashes is printed, marked as cut", "[workerOutput][crash]") {
  DeadlockGuard guard;
  const auto how = GENERATE(0, 1); // 0: SIGSEGV, 1: _exit(3)
  const auto mode = GENERATE(WorkerOutput::forward, WorkerOutput::prefix);
  CAPTURE(how, static_cast<int>(mode));
  std::string out, err;
  std::size_t failed = 0;
  {
    StdCapture capture;
    auto outcomes = flockmp::FunctionAsync::tryApply(
        range(6),
        [how](int i) {
          if (i == 3) {
            std::printf("whole out line\n");
            std::printf("partial out");
            std::fflush(stdout);
            writePieces(2, "whole err line\npartial err", 4);
            if (how == 0) ::raise(SIGSEGV);
            ::_exit(3);
          }
          std::printf("fine %d\n", i);
          return i;
        },
        {.poolSize = 2, .batchSize = 1, .workerOutput = mode});
    std::tie(out, err) = capture.stop();
    for (auto& o : outcomes) failed += o ? 0 : 1;
  }
  REQUIRE(failed == 1);
  const std::string pre = mode == WorkerOutput::prefix ? "[worker " : "";
  const auto outLines = linesOf(out), errLines = linesOf(err);
  auto has = [](const std::vector<std::string>& lines, const std::string& tail) {
    return std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
             return l.size() >= tail.size() && l.compare(l.size() - tail.size(), tail.size(), tail) == 0;
           }) == 1;
  };
  // Bug caught: the worker's last whole line lost with it (its pipe not read after the death).
  REQUIRE(has(outLines, "whole out line"));
  REQUIRE(has(errLines, "whole err line"));
  // Bug caught: an unfinished line dropped, or printed without saying it was cut.
  REQUIRE(has(outLines, "partial out [cut: worker crashed]"));
  REQUIRE(has(errLines, "partial err [cut: worker crashed]"));
  for (int i : {0, 1, 2, 4, 5}) REQUIRE(has(outLines, "fine " + std::to_string(i)));
  // Bug caught: text after a crash glued to the cut line (no newline after the mark).
  REQUIRE(out.back() == '\n');
  REQUIRE(err.back() == '\n');
}

TEST_CASE("an unfinished last line is printed with a newline, unmarked, when the call ends", "[workerOutput][forward]") {
  DeadlockGuard guard;
  std::string out, err;
  {
    StdCapture capture;
    flockmp::FunctionAsync::apply(range(1), [](int) {
      std::printf("no newline at the end");
      return 0;
    }, {.poolSize = 1});
    std::tie(out, err) = capture.stop();
  }
  // Bug caught: the tail lost at the end of a call, or marked as cut though nothing crashed.
  REQUIRE(out == "no newline at the end\n");
  REQUIRE(err.empty());
}

namespace {
/// Prefix test task: each input prints lines that name their own index, through stdio (not
/// flushed by the task) and through write(2), on both streams.
std::string prefixTask(int i) {
  std::printf("out of %d pid %d\n", i, static_cast<int>(::getpid()));
  std::printf("more out of %d\n", i);
  writePieces(2, "err of " + std::to_string(i) + " pid " + std::to_string(::getpid()) + "\n", 5);
  return std::to_string(::getpid());
}

/// Checks every prefixed line: its I equals the input the text names, and its N is the same for
/// all lines of one worker process and below `workers`. Returns the lines seen per input.
std::map<int, int> checkPrefixed(const std::string& text, int workers) {
  std::map<int, int> perInput;
  std::map<long, int> workerOfPid;
  for (const auto& line : linesOf(text)) {
    INFO(line);
    int w = -1, input = -1, named = -1, consumed = 0;
    REQUIRE(std::sscanf(line.c_str(), "[worker %d, input %d] %n", &w, &input, &consumed) == 2);
    const std::string rest = line.substr(static_cast<std::size_t>(consumed));
    long pid = -1;
    const bool withPid = std::sscanf(rest.c_str(), "%*s of %d pid %ld", &named, &pid) == 2;
    if (!withPid) REQUIRE(std::sscanf(rest.c_str(), "more out of %d", &named) == 1);
    // Bug caught: I off by one, or the batch's first input for every line of the batch.
    REQUIRE(input == named);
    // Bug caught: N outside the pool, or one worker called by two numbers.
    REQUIRE(w >= 0);
    REQUIRE(w < workers);
    if (withPid) {
      auto [it, fresh] = workerOfPid.emplace(pid, w);
      REQUIRE(it->second == w);
    }
    ++perInput[input];
  }
  return perInput;
}
} // namespace

TEST_CASE("prefix names the worker and the input of each line, batches of many inputs included",
          "[workerOutput][prefix]") {
  DeadlockGuard guard;
  const auto batch = GENERATE(std::size_t{1}, std::size_t{8}, std::size_t{0});
  CAPTURE(batch);
  const int n = 64;
  std::string out, err;
  {
    StdCapture capture;
    flockmp::FunctionAsync::apply(range(n), prefixTask,
                                  {.poolSize = 3, .batchSize = batch, .workerOutput = WorkerOutput::prefix});
    std::tie(out, err) = capture.stop();
  }
  const auto outs = checkPrefixed(out, 3);
  const auto errs = checkPrefixed(err, 3);
  // Bug caught: lines lost or attributed to no input.
  REQUIRE(outs.size() == static_cast<std::size_t>(n));
  REQUIRE(errs.size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    REQUIRE(outs.at(i) == 2);
    REQUIRE(errs.at(i) == 1);
  }
}

TEST_CASE("prefix: lines written outside any input carry the worker only", "[workerOutput][prefix]") {
  DeadlockGuard guard;
  std::string out, err;
  {
    StdCapture capture;
    Options o{.poolSize = 2, .workerOutput = WorkerOutput::prefix};
    o.initializer = [] { std::printf("hello from the initializer\n"); };
    o.finalizer = [] { std::fprintf(stderr, "bye from the finalizer\n"); };
    flockmp::FunctionAsync::apply(range(4), [](int i) { return i; }, o);
    std::tie(out, err) = capture.stop();
  }
  const auto outLines = linesOf(out), errLines = linesOf(err);
  // Bug caught: the initializer's lines given an input (the marker state not "none" at start),
  // or the finalizer's given the batch's last input (no marker after a batch).
  REQUIRE(outLines.size() == 2);
  REQUIRE(errLines.size() == 2);
  for (const auto& l : outLines) REQUIRE((l == "[worker 0] hello from the initializer" || l == "[worker 1] hello from the initializer"));
  for (const auto& l : errLines) REQUIRE((l == "[worker 0] bye from the finalizer" || l == "[worker 1] bye from the finalizer"));
  REQUIRE(outLines[0] != outLines[1]);
}

TEST_CASE("a worker printing megabytes in one input neither blocks nor loses output", "[workerOutput][forward]") {
  DeadlockGuard guard;
  std::string out, err;
  const std::size_t lines = 20000, width = 199; // 4 MB, far above a pipe's 64 KiB
  {
    StdCapture capture;
    flockmp::FunctionAsync::apply(range(2), [&](int i) {
      const std::string line(width, static_cast<char>('a' + i));
      for (std::size_t k = 0; k < lines; ++k) std::printf("%s\n", line.c_str());
      return i;
    }, {.poolSize = 2});
    std::tie(out, err) = capture.stop();
  }
  // Bug caught: a parent that reads a worker's pipe only between batches (the worker would block
  // on the full pipe forever: the deadlock guard fires), or drops what it cannot write at once.
  REQUIRE(out.size() == 2 * lines * (width + 1));
  std::size_t a = 0, b = 0;
  for (const auto& l : linesOf(out)) {
    REQUIRE(l.size() == width);
    REQUIRE(l.find_first_not_of(l[0]) == std::string::npos); // bug: lines of two workers mixed
    (l[0] == 'a' ? a : b) += 1;
  }
  REQUIRE(a == lines);
  REQUIRE(b == lines);
}

TEST_CASE("streams and DatabaseAsync forward their workers' output too", "[workerOutput][stream]") {
  DeadlockGuard guard;
  std::string out, err;
  {
    StdCapture capture;
    flockmp::BaseMultiProc pool{{.poolSize = 2, .workerOutput = WorkerOutput::prefix}};
    int sum = 0;
    for (int v : pool.imap(range(30), +[](int i) {
           std::printf("stream %d\n", i);
           return i;
         }))
      sum += v;
    flockmp::DatabaseSetup counter{"counter",
                                   [](const flockmp::Parameters&) { return 7; },
                                   flockmp::Parameters{}};
    flockmp::DatabaseAsync db{flockmp::DatabaseOptions{.pool = {.poolSize = 2, .workerOutput = WorkerOutput::prefix}},
                              counter};
    db.apply(range(10), [](int i, int& connection) {
      std::printf("database %d\n", i);
      return i + connection;
    });
    std::tie(out, err) = capture.stop();
    REQUIRE(sum == 435);
  }
  std::set<int> stream, database;
  for (const auto& line : linesOf(out)) {
    INFO(line);
    int w = -1, input = -1, named = -1;
    char what[16] = {};
    REQUIRE(std::sscanf(line.c_str(), "[worker %d, input %d] %15s %d", &w, &input, what, &named) == 4);
    REQUIRE(input == named); // bug caught: a stream's inputs (handed out as read) mislabelled
    (std::string(what) == "stream" ? stream : database).insert(named);
  }
  // Bug caught: a facade that bypasses the engine's forwarding (its output lost or inherited).
  REQUIRE(stream.size() == 30);
  REQUIRE(database.size() == 10);
}

#if defined(FLOCK_SCRIPT_PROGRAM) && defined(FLOCK_WORKER_OUTPUT_PROBE)
namespace {
/// The rows a terminal shows for `bytes`: `\r` returns to column 0, `\n` starts a new row,
/// `ESC [ K` erases to the end of the row, other bytes overwrite the cell under the cursor.
std::vector<std::string> screenOf(const std::string& bytes) {
  std::vector<std::string> rows(1);
  std::size_t col = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    auto& row = rows.back();
    if (c == '\r') {
      col = 0;
    } else if (c == '\n') {
      rows.emplace_back();
      col = 0;
    } else if (c == '\x1b' && bytes.compare(i, 3, "\x1b[K") == 0) {
      row.resize(std::min(row.size(), col));
      i += 2;
    } else {
      if (row.size() <= col) row.resize(col + 1, ' ');
      row[col++] = c;
    }
  }
  while (!rows.empty() && rows.back().empty()) rows.pop_back();
  return rows;
}
} // namespace

TEST_CASE("under a terminal, forwarded lines are written above the progress bar, which is drawn again below them",
          "[workerOutput][progress]") {
  DeadlockGuard guard;
  std::string raw;
  {
    const std::string command =
        std::string(FLOCK_SCRIPT_PROGRAM) + " -qfec '" + FLOCK_WORKER_OUTPUT_PROBE + "' /dev/null < /dev/null";
    std::FILE* p = ::popen(command.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) raw.append(buf, n);
    REQUIRE(::pclose(p) == 0);
  }
  INFO(raw);
  // Not vacuous: the probe prints lines 4-7 only after the bar is drawn, so the bar must have
  // been erased right before forwarded text at least once (bug caught: no erase, the line lands
  // after the bar's text on its row).
  REQUIRE(raw.find("\r\x1b[Kworker ") != std::string::npos);
  const auto rows = screenOf(raw);
  // Bug caught: a bar fragment left in a worker line's row (not erased, or erased after the
  // line), or a worker line cut by a bar redraw: each line is a whole row of its own.
  for (int i = 0; i < 8; ++i) {
    REQUIRE(std::count(rows.begin(), rows.end(), "worker line " + std::to_string(i)) == 1);
    REQUIRE(std::count(rows.begin(), rows.end(), "worker err line " + std::to_string(i)) == 1);
  }
  for (const auto& row : rows) {
    if (row.find("worker") == std::string::npos) continue;
    REQUIRE(row.find("ETA") == std::string::npos);
    REQUIRE(row.find('[') == std::string::npos);
  }
  // Bug caught: the bar not drawn again below the lines: the last rows are the final bar, then
  // the probe's own line.
  REQUIRE(rows.size() >= 2);
  REQUIRE(rows.back() == "done 8");
  const auto& bar = rows[rows.size() - 2];
  REQUIRE(bar.find("8/8") != std::string::npos);
  REQUIRE(bar.find("100%") != std::string::npos);
}
#endif

TEST_CASE("a workerOutput value outside the enum is an OptionError naming the option", "[workerOutput][options]") {
  // Bug caught: an unknown value silently treated as one of the three.
  std::string message;
  try {
    flockmp::FunctionAsync::apply(range(2), [](int i) { return i; }, {.workerOutput = static_cast<WorkerOutput>(7)});
  } catch (const flockmp::OptionError& e) {
    message = e.what();
  }
  REQUIRE(message.find("workerOutput") != std::string::npos);
}

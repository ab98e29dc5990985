// DatabaseAsync without a database server: connection lifecycle (once per worker, closed at a
// normal exit, fresh after recycling), argument order, setup failures and hung setups. The
// connections here are small real resources (files, pids); SQLite and PostgreSQL have their own
// test files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <flock/database.hpp>

#include "catch.hpp"
#include "support/test_util.hpp"
#include "support/deadlock_guard.hpp"
#include "support/proc_stats.hpp"

using namespace std::chrono_literals;
using flockmp::FailureKind;
using flockmp::test::contains;
using flockmp::test::DeadlockGuard;

using flockmp::test::range;
using flockmp::test::TempDir;

namespace {



/// Lines of every file in `dir` whose name starts with `prefix`.
std::multiset<std::string> filesWithPrefix(const std::filesystem::path& dir,
                                           const std::string& prefix) {
  std::multiset<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0)
      out.insert(e.path().filename().string().substr(prefix.size()));
  return out;
}

/// A connection that leaves a trace: a file `open-<pid>-<serial>` when opened, and
/// `close-<pid>-<serial>` when closed.
class Traced {
public:
  Traced(std::filesystem::path dir, std::string tag)
      : dir_(std::move(dir)), tag_(std::move(tag)), pid_(::getpid()) {
    static int serial = 0;
    serial_ = ++serial;
    touch("open-");
  }
  Traced(Traced&& o) noexcept
      : dir_(std::move(o.dir_)), tag_(std::move(o.tag_)), pid_(o.pid_),
        serial_(std::exchange(o.serial_, 0)) {}
  Traced& operator=(Traced&&) = delete;
  ~Traced() {
    if (serial_ != 0) touch("close-");
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] int serial() const { return serial_; }
  [[nodiscard]] const std::string& tag() const { return tag_; }

private:
  void touch(const std::string& what) const {
    const auto name =
        dir_ / fmt::format("{}{}-{}-{}", what, tag_, pid_, serial_);
    std::fclose(std::fopen(name.c_str(), "w"));
  }
  std::filesystem::path dir_;
  std::string tag_;
  pid_t pid_;
  int serial_;
};

auto tracedSetup(const std::string& name, const std::filesystem::path& dir) {
  return flockmp::DatabaseSetup{
      name,
      [](const flockmp::Parameters& p) { return Traced(p.at("dir"), p.at("tag")); },
      flockmp::Parameters{{"dir", dir.string()}, {"tag", name}}};
}

/// A second connection type, to check that several types mix.
struct Counter {
  int value = 0;
  pid_t pid = ::getpid();
};

/// The seed's BaseDatabaseSetup: a setup packaged once.
struct CounterSetup : flockmp::BaseDatabaseSetup<Counter> {
  CounterSetup() : BaseDatabaseSetup("counter", {{"start", "100"}}) {}
  Counter server(const flockmp::Parameters& p) const override {
    return Counter{std::stoi(p.at("start"))};
  }
};

} // namespace

TEST_CASE("a DatabaseSetup deduces its connection type from the server", "[database][setup]") {
  flockmp::DatabaseSetup s{
      "n",
      [](const flockmp::Parameters& p) { return std::stoi(p.at("x")); },
      flockmp::Parameters{{"x", "7"}}};
  static_assert(std::is_same_v<flockmp::ConnectionOf<decltype(s)>, int>);
  static_assert(flockmp::DatabaseSetupType<decltype(s)>);
  static_assert(flockmp::DatabaseSetupType<CounterSetup>);
  static_assert(std::is_same_v<flockmp::ConnectionOf<CounterSetup>, Counter>);
  static_assert(!flockmp::DatabaseSetupType<int>);
  CHECK(s.connect() == 7);
  CHECK(CounterSetup{}.connect().value == 100);
  flockmp::DatabaseSetup noParameters{"n", [] { return 3; }};
  CHECK(noParameters.connect() == 3);
#if FLOCK_TEST_DESIGNATED_CTAD
  // The README's form, with designators (C++20 aggregate deduction).
  flockmp::DatabaseSetup designated{.name = "d",
                                    .server = [](const flockmp::Parameters& p) { return p.at("x") + "!"; },
                                    .parameters = {{"x", "y"}}};
  CHECK(designated.connect() == "y!");
#endif
}

TEST_CASE("every worker opens each connection once and closes it when it stops",
          "[database][lifecycle]") {
  DeadlockGuard guard(120);
  TempDir dir;
  const int fdsBefore = flockmp::test::openFdCount();
  flockmp::DatabaseAsync db{
      {.poolSize = 3}, tracedSetup("first", dir.path), tracedSetup("second", dir.path)};
  auto seen = db.apply(range(60), [](int x, Traced& a, Traced& b) {
    if (a.pid() != ::getpid() || b.pid() != ::getpid())
      throw std::logic_error("connection from another process");
    if (a.tag() != "first" || b.tag() != "second")
      throw std::logic_error("connections out of setup order");
    return std::tuple{x, static_cast<int>(::getpid()), a.serial()};
  });
  REQUIRE(seen.size() == 60);
  std::set<int> pids;
  for (int i = 0; i < 60; ++i) {
    CHECK(std::get<0>(seen[static_cast<std::size_t>(i)]) == i);
    CHECK(std::get<2>(seen[static_cast<std::size_t>(i)]) == 1); // the one connection of its worker
    pids.insert(std::get<1>(seen[static_cast<std::size_t>(i)]));
  }
  CHECK(pids.size() <= 3);
  // One open and one close per worker and setup, none in the caller.
  const auto opens = filesWithPrefix(dir.path, "open-");
  const auto closes = filesWithPrefix(dir.path, "close-");
  CHECK(opens.size() == 2 * 3); // all 3 workers started, each opened both
  CHECK(closes == opens);
  for (const auto& o : opens) CHECK(o.find(std::to_string(::getpid())) == std::string::npos);
  CHECK(flockmp::test::childProcessCount() == 0);
  CHECK(flockmp::test::openFdCount() == fdsBefore);
}

TEST_CASE("tuple inputs are unpacked before the connections, which come in setup order",
          "[database][arguments]") {
  DeadlockGuard guard(60);
  TempDir dir;
  std::vector<std::pair<int, std::string>> items{{1, "a"}, {2, "b"}, {3, "c"}};
  flockmp::DatabaseAsync db{{.poolSize = 2}, CounterSetup{}, tracedSetup("t", dir.path)};
  auto r = db.apply(items, [](int n, const std::string& s, Counter& c, Traced& t) {
    c.value += n; // a connection keeps its state between the inputs of one worker
    return s + std::to_string(n) + t.tag() + (c.pid == ::getpid() ? "" : "!");
  });
  CHECK(r == std::vector<std::string>{"a1t", "b2t", "c3t"});
  // The whole pair is passed when the callable takes it.
  auto whole = db.apply(items, [](const std::pair<int, std::string>& p, Counter& c, Traced&) {
    return p.first + c.value;
  });
  CHECK(whole == std::vector<int>{101, 102, 103});
}

namespace {
struct Pricing {
  int markup;
  int price(int base, int qty, Counter& c) const { return (base + markup) * qty + c.value; }
};
} // namespace

TEST_CASE("an instance method takes the input, then the connections", "[database][api]") {
  DeadlockGuard guard(60);
  const Pricing pricing{5};
  flockmp::DatabaseAsync db{{.poolSize = 2}, CounterSetup{}};
  const std::vector<std::pair<int, int>> orders{{10, 1}, {20, 2}, {30, 3}};
  CHECK(db.apply(orders, &Pricing::price, pricing) == std::vector<int>{115, 150, 205});
  auto outcomes = db.tryApply(orders, &Pricing::price, &pricing);
  REQUIRE(outcomes.size() == 3);
  CHECK(*outcomes[2] == 205);
}

TEST_CASE("the seed's DatabaseAsync shapes construct", "[database][api]") {
  DeadlockGuard guard(60);
  flockmp::DatabaseSetup a{"a", [] { return 1; }};
  flockmp::DatabaseSetup b{
      "b",
      [](const flockmp::Parameters& p) { return std::string(p.at("v")); },
      flockmp::Parameters{{"v", "x"}}};
  flockmp::DatabaseAsync seedShape{std::tuple{a, b}, {.poolSize = 2}};
  flockmp::DatabaseAsync noOptions{a, b};
  flockmp::DatabaseAsync optionsFirst{{.poolSize = 2, .setupTimeout = std::nullopt}, a, b};
  auto fn = [](int x, int& one, std::string& v) { return v + std::to_string(x + one); };
  const std::vector<std::string> expected{"x1", "x2", "x3"};
  CHECK(seedShape.apply(std::vector{0, 1, 2}, fn) == expected);
  CHECK(noOptions.apply(std::vector{0, 1, 2}, fn) == expected);
  CHECK(optionsFirst.apply(std::vector{0, 1, 2}, fn) == expected);
  auto outcomes = optionsFirst.tryApply(std::vector{0, 1, 2}, fn);
  REQUIRE(outcomes.size() == 3);
  CHECK(*outcomes[2] == "x3");
}

TEST_CASE("a handle with its close function is a connection", "[database][lifecycle]") {
  DeadlockGuard guard(60);
  TempDir dir;
  using File = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;
  flockmp::DatabaseSetup log{"log",
                             
                                 [](const flockmp::Parameters& p) {
                                   const auto name =
                                       p.at("dir") + "/log-" + std::to_string(::getpid());
                                   return File(std::fopen(name.c_str(), "w"), &std::fclose);
                                 },
                             flockmp::Parameters{{"dir", dir.path.string()}}};
  flockmp::DatabaseAsync db{{.poolSize = 2}, log};
  db.apply(range(40), [](int x, File& f) { std::fprintf(f.get(), "%d\n", x); });
  // fclose at each worker's exit flushed its buffered lines: every input is in exactly one file.
  std::multiset<int> lines;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
    std::ifstream in(e.path());
    for (int v; in >> v;) lines.insert(v);
  }
  const auto all = range(40);
  CHECK(lines == std::multiset<int>(all.begin(), all.end()));
}

TEST_CASE("recycled workers close their connections and their replacements open fresh ones",
          "[database][lifecycle]") {
  DeadlockGuard guard(120);
  TempDir dir;
  flockmp::DatabaseAsync db{{.poolSize = 2, .pool = {.maxTasksPerWorker = 5}},
                            tracedSetup("c", dir.path)};
  auto serials = db.apply(range(30), [](int, Traced& t) {
    return std::pair{static_cast<int>(::getpid()), t.serial()};
  });
  std::set<int> pids;
  for (auto [pid, serial] : serials) {
    pids.insert(pid);
    CHECK(serial == 1);
  }
  CHECK(pids.size() >= 6); // 30 inputs, at most 5 per worker
  const auto opens = filesWithPrefix(dir.path, "open-");
  // Each worker that served inputs opened one connection. A replacement started while inputs were
  // still queued may find them all taken by its sibling: it opens and closes one without using it.
  for (int pid : pids) CHECK(opens.count(fmt::format("c-{}-1", pid)) == 1);
  CHECK(opens.size() <= pids.size() + 2);
  CHECK(filesWithPrefix(dir.path, "close-") == opens);
}

TEST_CASE("a crashed worker is replaced and the replacement opens a fresh connection",
          "[database][faults]") {
  DeadlockGuard guard(120);
  TempDir dir;
  // One worker: inputs after the crash can only run on its replacement, whatever the timing.
  flockmp::DatabaseAsync db{{.poolSize = 1}, tracedSetup("c", dir.path)};
  auto outcomes = db.tryApply(range(20), [](int x, Traced&) {
    if (x == 7) std::abort();
    return static_cast<int>(::getpid());
  });
  std::set<int> pids;
  pid_t crashed = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (i == 7) {
      REQUIRE_FALSE(outcomes[i].hasValue());
      CHECK(outcomes[i].failure().kind == FailureKind::crashed);
      crashed = outcomes[i].failure().pid;
    } else {
      REQUIRE(outcomes[i].hasValue());
      pids.insert(*outcomes[i]);
    }
  }
  pids.insert(crashed);     // it may have finished inputs before input 7
  CHECK(pids.size() == 2);  // the first worker and its replacement
  const auto opens = filesWithPrefix(dir.path, "open-");
  const auto closes = filesWithPrefix(dir.path, "close-");
  CHECK(opens.size() == pids.size());      // one connection per worker, the replacement's fresh
  CHECK(closes.size() == pids.size() - 1); // the crashed worker never closed its own
  for (const auto& c : closes)
    CHECK(c.find(fmt::format("-{}-", crashed)) == std::string::npos);
  for (int pid : pids) {
    int n = 0;
    for (const auto& o : opens) n += o.find(fmt::format("-{}-", pid)) != std::string::npos;
    CHECK(n == 1);
  }
  CHECK(flockmp::test::childProcessCount() == 0);
}

TEST_CASE(
    "a connection that cannot open is a setup failure naming the setup, the worker and the cause",
    "[database][faults]") {
  DeadlockGuard guard(60);
  const int fdsBefore = flockmp::test::openFdCount();
  flockmp::DatabaseSetup ok{"ok_con", [] { return 1; }};
  flockmp::DatabaseSetup bad{
      "bad_con", []() -> int { throw std::runtime_error("connection refused"); }};
  SECTION("apply throws a TaskError listing every input") {
    flockmp::DatabaseAsync db{
        {.poolSize = 2, .pool = {.restartBudget = {.maxRestarts = 3, .period = 60s}}}, ok, bad};
    try {
      db.apply(range(10), [](int x, int&, int&) { return x; });
      FAIL("no exception");
    } catch (const flockmp::TaskError& e) {
      REQUIRE(e.failures().size() == 10); // none silently skipped
      for (const auto& f : e.failures()) {
        CHECK(f.kind == FailureKind::setup);
        CHECK_THAT(f.message, contains("setup \"bad_con\" failed in worker "));
        CHECK_THAT(f.message, contains("std::runtime_error: connection refused"));
        CHECK_THAT(f.message, contains("flockmp::SetupError"));
      }
      CHECK_THAT(e.what(), contains("bad_con"));
    }
  }
  SECTION("without a setup timeout too, and with tryApply") {
    flockmp::DatabaseAsync db{{.poolSize = 2,
                               .setupTimeout = std::nullopt,
                               .pool = {.restartBudget = {.maxRestarts = 2}}},
                              bad};
    auto outcomes = db.tryApply(range(5), [](int x, int&) { return x; });
    REQUIRE(outcomes.size() == 5);
    for (const auto& o : outcomes) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::setup);
      CHECK_THAT(o.failure().message, contains("setup \"bad_con\" failed in worker "));
    }
  }
  CHECK(flockmp::test::childProcessCount() == 0);
  CHECK(flockmp::test::openFdCount() == fdsBefore);
}

TEST_CASE("a setup that hangs is ended by setupTimeout", "[database][faults][timeout]") {
  DeadlockGuard guard(60);
  flockmp::DatabaseSetup hang{"hung_con", []() -> int {
                                for (;;) std::this_thread::sleep_for(1h);
                              }};
  flockmp::DatabaseAsync db{
      {.poolSize = 2, .setupTimeout = 200ms, .pool = {.restartBudget = {.maxRestarts = 2}}},
      hang};
  const auto t0 = std::chrono::steady_clock::now();
  auto outcomes = db.tryApply(range(6), [](int x, int&) { return x; });
  const auto took = std::chrono::steady_clock::now() - t0;
  for (const auto& o : outcomes) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::setup);
    CHECK_THAT(o.failure().message, contains("setup \"hung_con\" failed in worker "));
    CHECK_THAT(o.failure().message, contains("timed out"));
  }
  CHECK(took < 10s);
  CHECK(flockmp::test::childProcessCount() == 0);
}

TEST_CASE("a failure inside a task is that input's own exception", "[database][faults]") {
  DeadlockGuard guard(60);
  flockmp::DatabaseAsync db{{.poolSize = 2}, CounterSetup{}};
  // A string result travels through the codec (int results take the raw path, tested elsewhere).
  auto outcomes = db.tryApply(range(8), [](int x, Counter& c) {
    if (x == 3) throw std::runtime_error("lost the connection");
    return std::to_string(x + c.value);
  });
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (i == 3) {
      CHECK(outcomes[i].failure().kind == FailureKind::exception);
      CHECK(outcomes[i].failure().type == "std::runtime_error");
      CHECK(outcomes[i].failure().message == "lost the connection");
    } else {
      CHECK(*outcomes[i] == std::to_string(i + 100));
    }
  }
}

namespace {
/// A connection that the input using it can break; it says so through alive().
struct Fragile {
  int serial = 0;
  bool broken = false;
  [[nodiscard]] bool alive() const { return !broken; }
};

/// A packaged setup that decides itself which connections are dead (a negative counter).
struct CheckedCounterSetup : flockmp::BaseDatabaseSetup<Counter> {
  CheckedCounterSetup() : BaseDatabaseSetup("checked", {}) {}
  Counter server(const flockmp::Parameters&) const override {
    static int opened = 0; // per worker process: the caller never connects
    return Counter{++opened * 100};
  }
  bool alive(const Counter& c) const override { return c.value >= 0; }
};
} // namespace

TEST_CASE("a connection that breaks is opened again before the worker's next input",
          "[database][faults]") {
  DeadlockGuard guard(60);
  flockmp::DatabaseSetup fragile{"fragile", [] {
    static int opened = 0; // per worker process: the caller never connects
    if (++opened == 2) throw std::runtime_error("server still down");
    return Fragile{opened};
  }};
  // One worker, one input per batch: the inputs run in order on the same connection slot.
  flockmp::DatabaseAsync db{{.poolSize = 1, .pool = {.batchSize = 1}}, fragile};
  auto outcomes = db.tryApply(range(10), [](int i, Fragile& c) {
    if (i == 3) {
      c.broken = true;
      throw std::runtime_error("connection lost");
    }
    if (i == 5) throw std::invalid_argument("a bad statement; the connection is fine");
    return c.serial;
  });
  REQUIRE(outcomes.size() == 10);
  for (int i : {0, 1, 2}) CHECK(*outcomes[static_cast<std::size_t>(i)] == 1);
  CHECK(outcomes[3].failure().message == "connection lost");
  // The first reopen fails ("server still down"): it is retried before input 4 runs, which gets
  // connection 3 instead of failing (a failed reopen must not consume an input).
  CHECK(*outcomes[4] == 3);
  CHECK(outcomes[5].failure().type == "std::invalid_argument");
  // An exception that leaves the connection alive does not reopen it: 6..9 share connection 3.
  for (int i : {6, 7, 8, 9}) CHECK(*outcomes[static_cast<std::size_t>(i)] == 3);

  // A packaged setup's own alive() decides.
  flockmp::DatabaseAsync checked{{.poolSize = 1, .pool = {.batchSize = 1}}, CheckedCounterSetup{}};
  auto values = checked.tryApply(range(5), [](int i, Counter& c) {
    if (i == 1) {
      c.value = -1;
      throw std::runtime_error("broken");
    }
    return c.value;
  });
  CHECK(*values[0] == 100);
  CHECK_FALSE(values[1].hasValue());
  for (int i : {2, 3, 4}) CHECK(*values[static_cast<std::size_t>(i)] == 200);
  CHECK(flockmp::test::childProcessCount() == 0);
}

TEST_CASE("waiting to reopen a connection never lets timeOutError kill the input that waits",
          "[database][faults][timeout]") {
  DeadlockGuard guard(60);
  flockmp::DatabaseSetup once{"once", [] {
    static int opened = 0; // per worker process: the caller never connects
    if (++opened > 1) throw std::runtime_error("server still down");
    return Fragile{opened};
  }};
  // The reopen deadline (setupTimeout) is far away, but an input may wait only half its
  // timeOutError: then it fails with a SetupError saying so, instead of being killed.
  flockmp::DatabaseAsync db{
      {.poolSize = 1, .setupTimeout = 60s, .pool = {.timeOutError = 2s, .batchSize = 1}}, once};
  auto outcomes = db.tryApply(range(4), [](int i, Fragile& c) {
    if (i == 1) {
      c.broken = true;
      throw std::runtime_error("connection lost");
    }
    return c.serial;
  });
  REQUIRE(outcomes.size() == 4);
  CHECK(*outcomes[0] == 1);
  CHECK(outcomes[1].failure().message == "connection lost");
  for (std::size_t i : {2u, 3u}) {
    const auto& f = outcomes[i].failure();
    INFO(f.describe());
    // Not timedOut: a per-input kill during the wait would fail the input as timed out and take
    // the worker with it.
    CHECK(f.kind == FailureKind::exception);
    CHECK(f.type == "flockmp::SetupError");
    CHECK_THAT(f.message, contains("setup \"once\" failed in worker "));
    CHECK_THAT(f.message, contains("reopening the connection after it broke: not open again after "
                                   "waiting "));
    CHECK_THAT(f.message, contains("(at most half its timeOutError of 2s)"));
    CHECK_THAT(f.message, contains("last error: std::runtime_error: server still down"));
  }
  // Both inputs ran on the first worker: it was never killed.
  CHECK(outcomes[2].failure().pid == outcomes[3].failure().pid);
  CHECK(flockmp::test::childProcessCount() == 0);
}

TEST_CASE("the caller's own initializer and finalizer run around the connections",
          "[database][lifecycle]") {
  DeadlockGuard guard(60);
  TempDir dir;
  static int initialized = 0;
  const auto base = dir.path.string();
  flockmp::DatabaseAsync db{
      {.poolSize = 2,
       .pool = {.initializer = [] { initialized = 1; },
                .finalizer = [base] { std::fclose(std::fopen((base + "/final").c_str(), "w")); }}},
      CounterSetup{}};
  auto r = db.apply(range(10), [](int, Counter&) { return initialized; });
  for (int v : r) CHECK(v == 1);
  CHECK(initialized == 0);
  CHECK(std::filesystem::exists(dir.path / "final"));
}

namespace {
/// An initializer that appends the worker's pid to `file` (one short O_APPEND write per worker:
/// lines from concurrent workers do not mix).
std::function<void()> recordStart(const std::filesystem::path& file) {
  return [file] {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot open " + file.string());
    const auto line = std::to_string(::getpid()) + "\n";
    const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    if (!written) throw std::runtime_error("cannot write " + file.string());
  };
}

/// The pids recorded by recordStart, one entry per line.
std::multiset<int> recordedPids(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::multiset<int> out;
  for (int pid; in >> pid;) out.insert(pid);
  return out;
}
} // namespace

TEST_CASE("poolSize is capped at the number of inputs (the seed's tests)",
          "[database][options]") {
  DeadlockGuard guard(300);
  flockmp::DatabaseSetup con{"con", [] { return static_cast<int>(::getpid()); }};
  TempDir dir;
  const auto started = dir.path / "started";
  // The caller's own initializer runs once in every worker that starts, after its connections
  // opened: the file counts the workers actually started. Nothing here crashes, times out or is
  // recycled, so no worker is replaced and the counts below are exact.
  SECTION("1,000 processes requested for 30 inputs") {
    flockmp::DatabaseAsync db{{.poolSize = 1000, .pool = {.initializer = recordStart(started)}},
                              con};
    auto r = db.apply(range(30), [](int x, int& pid) {
      return std::tuple{x, pid, static_cast<int>(::getpid())};
    });
    REQUIRE(r.size() == 30);
    const auto pids = recordedPids(started);
    // Exactly 30 workers: more is poolSize not capped at the inputs (up to 1,000 forks, each
    // opening connections), fewer is workers asked for and never started.
    CHECK(pids.size() == 30);
    // 30 different processes: fewer is a worker whose initializer (and connections) ran twice.
    CHECK(std::set<int>(pids.begin(), pids.end()).size() == 30);
    // Not the caller: connections must never be opened in the caller's process.
    CHECK(pids.count(static_cast<int>(::getpid())) == 0);
    for (int i = 0; i < 30; ++i) {
      const auto [x, connectionPid, ranIn] = r[static_cast<std::size_t>(i)];
      // Results in input order: a mix-up of results between inputs.
      CHECK(x == i);
      // The input ran on a connection its own worker opened: a connection opened in the caller
      // or in another process.
      CHECK(connectionPid == ranIn);
      // The input ran in a worker that started normally: an input run in the caller, or in a
      // process that skipped the setups and the initializer.
      CHECK(pids.count(ranIn) == 1);
    }
  }
  SECTION("60,000 inputs with 200 processes requested") {
#if defined(FLOCK_TEST_UNDER_SANITIZER)
    const int processes = 50; // a fork of a sanitized process costs ~20x more
#else
    const int processes = 200;
#endif
    flockmp::DatabaseAsync db{
        {.poolSize = processes, .pool = {.initializer = recordStart(started)}}, con};
    auto r = db.apply(range(60'000), [](int x, int&) { return x * 2; });
    REQUIRE(r.size() == 60'000);
    for (int i = 0; i < 60'000; i += 997) CHECK(r[static_cast<std::size_t>(i)] == 2 * i);
    CHECK(r.back() == 119'998);
    const auto pids = recordedPids(started);
    // Exactly poolSize workers, each once: a pool that starts fewer or more workers than asked
    // (with inputs to spare), or runs a worker's setups twice.
    CHECK(pids.size() == static_cast<std::size_t>(processes));
    CHECK(std::set<int>(pids.begin(), pids.end()).size() == pids.size());
  }
  CHECK(flockmp::test::childProcessCount() == 0);
}

TEST_CASE("bad DatabaseOptions are rejected", "[database][options]") {
  flockmp::DatabaseSetup con{"con", [] { return 1; }};
  using flockmp::DatabaseOptions;
  CHECK_THROWS_AS(flockmp::DatabaseAsync(DatabaseOptions{.poolSize = 0}, con),
                  flockmp::OptionError);
  CHECK_THROWS_AS(
      flockmp::DatabaseAsync(DatabaseOptions{.poolSize = 2, .pool = {.poolSize = 3}}, con),
      flockmp::OptionError);
  CHECK_THROWS_AS(flockmp::DatabaseAsync(DatabaseOptions{.setupTimeout = 0s}, con),
                  flockmp::OptionError);
  CHECK_THROWS_AS(flockmp::DatabaseAsync(DatabaseOptions{.pool = {.retries = -1}}, con),
                  flockmp::OptionError);
  // batchTransactions with a connection that has no begin()/commit()...: named, not ignored.
  try {
    flockmp::DatabaseAsync db(DatabaseOptions{.batchTransactions = true}, con);
    FAIL("no OptionError");
  } catch (const flockmp::OptionError& e) {
    CHECK_THAT(std::string(e.what()), contains("batchTransactions: the connections of setup \"con\" have no begin()"));
  }
  // The restart budget remembers enough setup timeouts to end the call.
  flockmp::DatabaseAsync db{
      {.setupTimeout = 2s, .pool = {.restartBudget = {.maxRestarts = 4, .period = 1s}}}, con};
  CHECK(db.poolOptions().restartBudget.period >= 10s);
}

namespace {
std::tuple<int, int, int> tracedRow(int x, Traced& a) { return std::tuple{x, static_cast<int>(::getpid()), a.serial()}; }
} // namespace

TEST_CASE("a persistent DatabaseAsync keeps its workers and their connections across calls, and closes them with "
          "it",
          "[database][lifecycle][pool]") {
  DeadlockGuard guard(120);
  TempDir dir;
  std::set<int> pids;
  {
    flockmp::DatabaseAsync db{{.poolSize = 2, .persistent = true}, tracedSetup("first", dir.path)};
    CHECK(db.workerPids().empty()); // nothing starts before the first call
    for (int call = 0; call < 3; ++call) {
      auto seen = call == 1 ? db.apply(range(20), tracedRow)
                            : db.apply(range(20), [](int x, Traced& a) { return tracedRow(x, a); });
      REQUIRE(seen.size() == 20);
      for (int i = 0; i < 20; ++i) {
        const auto& [x, pid, serial] = seen[static_cast<std::size_t>(i)];
        CHECK(x == i);
        CHECK(serial == 1); // catches connections opened again per call
        pids.insert(pid);
      }
    }
    // Two workers over three calls: catches workers forked per call.
    CHECK(pids.size() == 2);
    CHECK(filesWithPrefix(dir.path, "open-").size() == 2);
    CHECK(filesWithPrefix(dir.path, "close-").empty()); // still open between calls
  }
  // Destroying the DatabaseAsync stopped its workers, which closed their connections.
  CHECK(filesWithPrefix(dir.path, "close-") == filesWithPrefix(dir.path, "open-"));
  CHECK(flockmp::test::childProcessCount() == 0);
}

TEST_CASE("a persistent DatabaseAsync refuses a callable its workers cannot rebuild, naming the rule",
          "[database][options][pool]") {
  TempDir dir;
  flockmp::DatabaseAsync db{{.poolSize = 1, .persistent = true}, tracedSetup("first", dir.path)};
  int offset = 1;
  CHECK_THROWS_WITH(db.apply(range(3), [offset](int x, Traced&) { return x + offset; }),
                    contains("needs a callable its workers can rebuild"));
  CHECK_THROWS_AS(flockmp::DatabaseAsync({.pool = {.context = flockmp::Context::spawn}, .persistent = true},
                                         tracedSetup("first", dir.path)),
                  flockmp::OptionError);
}

namespace {
/// A connection of the user's own that logs what batchTransactions asks of it.
struct TxLog {
  int begins = 0, commits = 0, rollbacks = 0, savepoints = 0, releases = 0, undone = 0;
  bool inTransaction = false, inSavepoint = false;
  void begin() { ++begins; inTransaction = true; }
  void commit() { ++commits; inTransaction = false; }
  void rollback() { ++rollbacks; inTransaction = false; }
  void savepoint() { ++savepoints; inSavepoint = true; }
  void releaseSavepoint() { ++releases; inSavepoint = false; }
  void rollbackToSavepoint() { ++undone; inSavepoint = false; }
};
} // namespace

TEST_CASE("batchTransactions calls a user connection's begin, savepoint, release and commit around "
          "inputs", "[database][transactions]") {
  DeadlockGuard guard(60);
  flockmp::DatabaseSetup log{"log", [] { return TxLog{}; }};
  flockmp::DatabaseAsync db{{.poolSize = 2, .batchTransactions = true}, log};
  const auto seen = db.tryApply(range(60), [](int x, TxLog& t) {
    if (x % 7 == 0) throw std::runtime_error("fails");
    // Inside a transaction and a savepoint; every earlier input's savepoint closed; the
    // transactions before this one committed (none rolled back: nothing failed to commit).
    const bool ok = t.inTransaction && t.inSavepoint && t.savepoints == t.releases + t.undone + 1 &&
                    t.begins == t.commits + 1 && t.rollbacks == 0;
    return ok;
  });
  for (std::size_t i = 0; i < seen.size(); ++i) {
    INFO("input " << i);
    if (i % 7 == 0) {
      CHECK(!seen[i]);
      continue;
    }
    REQUIRE(seen[i]);
    // Bug caught: hooks not called, or a savepoint left open, or a thrown input not undone.
    CHECK(*seen[i]);
  }
  CHECK(flockmp::test::childProcessCount() == 0);
}

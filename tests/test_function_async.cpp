// FunctionAsync, ListAsync and BaseMultiProc: the seed's examples and the core guarantees
// (order, real processes, any range, errors that name the input).
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <list>
#include <map>
#include <numeric>
#include <ranges>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/proc_stats.hpp"
#include "support/test_util.hpp"

namespace {

int myFunction(int value) { return value * value; }

struct Test {
  // The seed documents [11, 44, 99, 176] for these pairs, which is (foo + bar) * foo.
  long compute(long foo, long bar) const { return (foo + bar) * foo; }
  static long twice(long x) { return 2 * x; }
  long offset = 0;
  long shifted(long x) const { return x + offset; }
};

struct Square {
  int operator()(int x) const { return x * x; }
};

struct Point {
  int x;
  double y;
  std::string label;
  bool operator==(const Point&) const = default;
};

std::vector<int> oneToTen() {
  std::vector<int> v(10);
  std::iota(v.begin(), v.end(), 1);
  return v;
}

const std::vector<int> seedSquares{1, 4, 9, 16, 25, 36, 49, 64, 81, 100};

} // namespace

TEST_CASE("a free function is applied to every input in order", "[api][seed]") {
  CHECK(flockmp::FunctionAsync::apply(oneToTen(), myFunction) == seedSquares);
  CHECK(flockmp::FunctionAsync::apply(oneToTen(), &myFunction) == seedSquares);
}

TEST_CASE("lambdas, capturing lambdas and function objects work", "[api][seed]") {
  auto items = oneToTen();
  CHECK(flockmp::FunctionAsync::apply(items, [](int x) { return x * x; }) == seedSquares);
  int base = 100;
  std::string suffix = "!";
  auto r = flockmp::FunctionAsync::apply(items, [base, &suffix](int x) { return std::to_string(base + x) + suffix; });
  REQUIRE(r.size() == 10);
  CHECK(r.front() == "101!");
  CHECK(r.back() == "110!");
  CHECK(flockmp::FunctionAsync::apply(items, Square{}) == seedSquares);
}

TEST_CASE("instance methods get their pair inputs unpacked", "[api][seed]") {
  Test inst;
  std::vector<std::pair<long, long>> pairs{{1, 10}, {2, 20}, {3, 30}, {4, 40}};
  const std::vector<long> expected{11, 44, 99, 176};
  CHECK(flockmp::FunctionAsync::apply(pairs, std::bind_front(&Test::compute, inst)) == expected);
  CHECK(flockmp::FunctionAsync::apply(pairs, &Test::compute, inst) == expected);
  std::vector<std::tuple<long, long>> tuples{{1, 10}, {2, 20}, {3, 30}, {4, 40}};
  CHECK(flockmp::FunctionAsync::apply(tuples, &Test::compute, inst) == expected);
}

TEST_CASE("the object bound to a method is the caller's, state included", "[api]") {
  Test inst;
  inst.offset = 1000;
  CHECK(flockmp::FunctionAsync::apply(std::vector<long>{1, 2, 3}, &Test::shifted, inst) == std::vector<long>{1001, 1002, 1003});
}

TEST_CASE("static member functions (the seed's class methods) work", "[api][seed]") {
  CHECK(flockmp::FunctionAsync::apply(std::vector<long>{1, 2, 3}, &Test::twice) == std::vector<long>{2, 4, 6});
}

TEST_CASE("a callable that takes the whole pair gets it whole", "[api]") {
  std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}};
  auto r = flockmp::FunctionAsync::apply(pairs, [](const std::pair<int, int>& p) { return p.first * 10 + p.second; });
  CHECK(r == std::vector<int>{12, 34});
}

TEST_CASE("ListAsync applies over a list with a pool size", "[api][seed]") {
  std::vector<int> list(2000);
  std::iota(list.begin(), list.end(), 0);
  auto r = flockmp::ListAsync::apply(list, [](int x) { return x * x / 10.0; }, {.poolSize = 4});
  REQUIRE(r.size() == 2000);
  for (int i = 0; i < 2000; ++i) REQUIRE(r[static_cast<std::size_t>(i)] == i * i / 10.0);
}

TEST_CASE("BaseMultiProc::executeAsync runs with its options", "[api][seed]") {
  flockmp::BaseMultiProc bp{{.poolSize = 5}};
  CHECK(bp.options().poolSize == 5);
  std::vector<int> iterator(10);
  std::iota(iterator.begin(), iterator.end(), 0);
  auto res = bp.executeAsync([](int x) { return x * x; }, iterator);
  CHECK(res == std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81});
  // The pool can be reused for further calls.
  CHECK(bp.executeAsync([](int x) { return -x; }, std::vector<int>{1, 2}) == std::vector<int>{-1, -2});
}

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("any input range works: span, array, list, set, views", "[api][ranges]") {
  std::vector<int> v{1, 2, 3, 4};
  CHECK(flockmp::FunctionAsync::apply(std::span<const int>(v), myFunction) == std::vector<int>{1, 4, 9, 16});
  std::array<int, 3> a{5, 6, 7};
  CHECK(flockmp::FunctionAsync::apply(a, myFunction) == std::vector<int>{25, 36, 49});
  std::list<int> l{2, 3};
  CHECK(flockmp::FunctionAsync::apply(l, myFunction) == std::vector<int>{4, 9});
  std::set<int> s{3, 1, 2};
  CHECK(flockmp::FunctionAsync::apply(s, myFunction) == std::vector<int>{1, 4, 9});
  CHECK(flockmp::FunctionAsync::apply(std::views::iota(0, 5), myFunction) == std::vector<int>{0, 1, 4, 9, 16});
  auto evens = v | std::views::filter([](int x) { return x % 2 == 0; });
  CHECK(flockmp::FunctionAsync::apply(evens, myFunction) == std::vector<int>{4, 16});
  auto plusOne = v | std::views::transform([](int x) { return x + 1; });
  CHECK(flockmp::FunctionAsync::apply(plusOne, myFunction) == std::vector<int>{4, 9, 16, 25});
  std::map<int, std::string> m{{1, "a"}, {2, "bb"}};
  auto lens = flockmp::FunctionAsync::apply(m, [](int k, const std::string& s) { return k * 10 + static_cast<int>(s.size()); });
  CHECK(lens == std::vector<int>{11, 22});
}
#endif

TEST_CASE("order is kept for a million inputs", "[api][order]") {
  std::vector<std::int64_t> xs(1'000'000);
  std::iota(xs.begin(), xs.end(), std::int64_t{0});
  auto r = flockmp::FunctionAsync::apply(xs, [](std::int64_t x) { return x * x; }, {.poolSize = 2});
  REQUIRE(r.size() == xs.size());
  for (std::size_t i = 0; i < r.size(); ++i) REQUIRE(r[i] == xs[i] * xs[i]);
}

TEST_CASE("order is kept with encoded results across many batches", "[api][order]") {
  std::vector<int> xs(20'000);
  std::iota(xs.begin(), xs.end(), 0);
  auto r = flockmp::FunctionAsync::apply(xs, [](int x) { return std::to_string(x); }, {.poolSize = 3});
  REQUIRE(r.size() == xs.size());
  for (std::size_t i = 0; i < r.size(); ++i) REQUIRE(r[i] == std::to_string(i));
}

TEST_CASE("strings, vectors and aggregates come back intact", "[api][codec]") {
  auto r = flockmp::FunctionAsync::apply(std::vector<int>{0, 1, 2, 3}, [](int i) {
    return std::vector<double>(static_cast<std::size_t>(i) * 1000, i + 0.5);
  });
  REQUIRE(r.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    REQUIRE(r[i].size() == i * 1000);
    for (double d : r[i]) REQUIRE(d == static_cast<double>(i) + 0.5);
  }
  auto points = flockmp::FunctionAsync::apply(std::vector<int>{1, 2}, [](int i) {
    return Point{i, i * 1.5, std::string(static_cast<std::size_t>(i), 'p')};
  });
  CHECK(points == std::vector<Point>{{1, 1.5, "p"}, {2, 3.0, "pp"}});
  auto nested = flockmp::FunctionAsync::apply(std::vector<int>{3}, [](int i) {
    return std::map<std::string, std::vector<int>>{{"k", std::vector<int>(static_cast<std::size_t>(i), 7)}};
  });
  CHECK(nested.at(0).at("k") == std::vector<int>{7, 7, 7});
}

TEST_CASE("work really runs in other processes", "[api][process]") {
  // A rendezvous: each input marks its worker's pid in a directory, then waits (bounded) until two
  // workers have marked theirs. Only two inputs running at the same time in two processes pass.
  const flockmp::test::TempDir dir("flock-rendezvous");
  // A deadlock guard only, one for the whole call (steady_clock is the same in every process).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto rendezvous = [&dir, deadline](int) {
    const auto pid = static_cast<int>(::getpid());
    std::ofstream(dir.path / std::to_string(pid)).put('x');
    while (std::chrono::steady_clock::now() < deadline) {
      const auto n = std::distance(std::filesystem::directory_iterator(dir.path), std::filesystem::directory_iterator{});
      if (n >= 2) return pid;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    throw std::runtime_error("no second worker ran an input at the same time");
  };
  std::vector<int> xs(64);
  auto pids = flockmp::FunctionAsync::apply(xs, rendezvous, {.poolSize = 2, .batchSize = 1});
  std::set<int> distinct(pids.begin(), pids.end());
  // Catches inputs run in the calling process (inline, no fork) for some or all of them.
  CHECK_FALSE(distinct.contains(static_cast<int>(::getpid())));
  // Catches a pool that runs inputs one process at a time (poolSize ignored, a single worker, or
  // workers run one after the other), and one that starts more workers than poolSize.
  CHECK(distinct.size() == 2);
}

TEST_CASE("more workers than inputs starts only as many workers as inputs", "[api][process]") {
  // Each worker process started appends its pid to a file, in its initializer.
  const flockmp::test::TempDir dir("flock-started");
  const auto started = (dir.path / "pids").string();
  flockmp::Options o{.poolSize = 16};
  o.initializer = [&started] {
    const int fd = ::open(started.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    const std::string line = std::to_string(::getpid()) + "\n";
    if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::runtime_error("cannot record the worker's pid");
    ::close(fd);
  };
  auto pids = flockmp::FunctionAsync::apply(std::vector<int>{1, 2, 3}, [](int) { return static_cast<int>(::getpid()); },
                                          o);
  std::ifstream in(started);
  std::vector<int> workers;
  for (int pid; in >> pid;) workers.push_back(pid);
  const std::set<int> distinctWorkers(workers.begin(), workers.end());
  // Catches a result per input missing or duplicated.
  CHECK(pids.size() == 3);
  // Catches starting poolSize (16) workers for 3 inputs, and starting fewer than one per input.
  CHECK(workers.size() == 3);
  // Catches a worker that ran its initializer twice while another never started.
  CHECK(distinctWorkers.size() == 3);
  // Catches the initializer run in the calling process instead of in workers.
  CHECK_FALSE(distinctWorkers.contains(static_cast<int>(::getpid())));
  // Catches inputs run by a process other than the workers started for this call.
  for (int pid : pids) CHECK(distinctWorkers.contains(pid));
}

TEST_CASE("empty input returns an empty result without forking", "[api]") {
  const int before = flockmp::test::childProcessCount();
  auto r = flockmp::FunctionAsync::apply(std::vector<int>{}, [](int x) { return x; });
  CHECK(r.empty());
  CHECK(flockmp::FunctionAsync::tryApply(std::vector<int>{}, [](int x) { return x; }).empty());
  CHECK(flockmp::test::childProcessCount() == before);
}

TEST_CASE("a void callable runs for every input", "[api]") {
  // Side effects of workers are only visible through something shared: files here.
  char dir[] = "/tmp/flock-void-XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  std::string base = dir;
  std::vector<int> xs{0, 1, 2, 3, 4, 5, 6, 7};
  flockmp::FunctionAsync::apply(xs, [&base](int i) {
    std::FILE* f = std::fopen((base + "/" + std::to_string(i)).c_str(), "w");
    if (!f) throw std::runtime_error("cannot create file");
    std::fprintf(f, "%d", i * i);
    std::fclose(f);
  });
  for (int i : xs) {
    std::string path = base + "/" + std::to_string(i);
    std::FILE* f = std::fopen(path.c_str(), "r");
    REQUIRE(f != nullptr);
    int v = -1;
    REQUIRE(std::fscanf(f, "%d", &v) == 1);
    std::fclose(f);
    CHECK(v == i * i);
    std::remove(path.c_str());
  }
  ::rmdir(dir);
}

TEST_CASE("an exception names the input index, its type and its message", "[api][errors]") {
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  auto fn = [](int x) {
    if (x == 42) throw std::invalid_argument("bad value 42");
    if (x == 77) throw std::out_of_range("too far");
    return x * 2;
  };
  try {
    (void)flockmp::FunctionAsync::apply(xs, fn, {.poolSize = 3});
    FAIL("no exception");
  } catch (const flockmp::TaskError& e) {
    std::string what = e.what();
    CHECK_THAT(what, flockmp::test::contains("input 42"));
    CHECK_THAT(what, flockmp::test::contains("std::invalid_argument"));
    CHECK_THAT(what, flockmp::test::contains("bad value 42"));
    CHECK_THAT(what, flockmp::test::contains("1 other failed input"));
    REQUIRE(e.failures().size() == 2);
    CHECK(e.failures()[0].index == 42);
    CHECK(e.failures()[0].kind == flockmp::FailureKind::exception);
    CHECK(e.failures()[0].type == "std::invalid_argument");
    CHECK(e.failures()[0].pid != ::getpid());
    CHECK(e.failures()[1].index == 77);
    CHECK(e.failures()[1].type == "std::out_of_range");
    CHECK(e.failures()[1].message == "too far");
    // Successful results are not lost.
    const auto& outcomes = e.outcomes<int>();
    REQUIRE(outcomes.size() == 100);
    CHECK(outcomes[41].value() == 82);
    CHECK_FALSE(outcomes[42].hasValue());
    CHECK(outcomes[99].value() == 198);
    CHECK_THROWS_AS(e.outcomes<double>(), flockmp::Error);
  }
}

TEST_CASE("exceptions of any type are reported", "[api][errors]") {
  struct Custom {};
  auto outcomes = flockmp::FunctionAsync::tryApply(std::vector<int>{0, 1, 2, 3}, [](int x) -> int {
    if (x == 1) throw 7;
    if (x == 2) throw std::string("a string");
    if (x == 3) throw Custom{};
    return x;
  });
  REQUIRE(outcomes.size() == 4);
  CHECK(outcomes[0].value() == 0);
  CHECK(outcomes[1].failure().type == "int");
  CHECK(outcomes[2].failure().type == "std::string");
  CHECK(outcomes[2].failure().message == "a string");
  CHECK_THAT(outcomes[3].failure().type, flockmp::test::contains("Custom"));
}

TEST_CASE("tryApply returns one outcome per input and does not throw", "[api][errors]") {
  std::vector<int> xs(50);
  std::iota(xs.begin(), xs.end(), 0);
  auto outcomes = flockmp::FunctionAsync::tryApply(xs, [](int x) {
    if (x % 10 == 3) throw std::runtime_error("x=" + std::to_string(x));
    return x + 1;
  });
  REQUIRE(outcomes.size() == 50);
  for (int i = 0; i < 50; ++i) {
    const auto& o = outcomes[static_cast<std::size_t>(i)];
    if (i % 10 == 3) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().index == static_cast<std::size_t>(i));
      CHECK(o.failure().message == "x=" + std::to_string(i));
      CHECK_THROWS_AS(o.value(), flockmp::Error);
    } else {
      REQUIRE(o.hasValue());
      CHECK(*o == i + 1);
    }
  }
  flockmp::BaseMultiProc bp{{.poolSize = 2}};
  auto viaPool = bp.tryExecuteAsync([](int x) { return x; }, std::vector<int>{1, 2});
  CHECK(viaPool[1].value() == 2);
}

TEST_CASE("bad options are rejected with a clear error", "[api][options]") {
  CHECK_THROWS_AS(flockmp::BaseMultiProc({.poolSize = 0}), flockmp::OptionError);
  CHECK_THROWS_AS(flockmp::FunctionAsync::apply(std::vector<int>{1}, myFunction, {.poolSize = -2}), flockmp::OptionError);
  CHECK_THROWS_WITH(flockmp::FunctionAsync::apply(std::vector<int>{1}, myFunction, {.poolSize = 0}),
                    flockmp::test::contains("poolSize"));
  CHECK_THROWS_AS(flockmp::FunctionAsync::apply(std::vector<int>{1}, myFunction, {.timeOutError = std::chrono::seconds(0)}),
                  flockmp::OptionError);
  CHECK_THROWS_AS(flockmp::FunctionAsync::apply(std::vector<int>{1}, myFunction, {.retries = -1}), flockmp::OptionError);
  CHECK_THROWS_WITH(flockmp::FunctionAsync::apply(std::vector<int>{1}, myFunction, {.setupTimeout = std::chrono::seconds(-1)}),
                    flockmp::test::contains("setupTimeout"));
  CHECK_THROWS_WITH(flockmp::FunctionAsync::apply(std::vector<int>{1}, myFunction,
                                                  {.restartBudget = {.period = std::chrono::milliseconds(0)}}),
                    flockmp::test::contains("restartBudget.period"));
  // Every exception flock throws derives from flockmp::Error, bad options included.
  CHECK_THROWS_AS(flockmp::FunctionAsync::apply(std::vector<int>{1}, myFunction, {.poolSize = 0}), flockmp::Error);
}

TEST_CASE("explicit chunk sizes give the same ordered results", "[api][batching]") {
  std::vector<int> xs(1001);
  std::iota(xs.begin(), xs.end(), 0);
  for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{5000}}) {
    auto r = flockmp::FunctionAsync::apply(xs, [](int x) { return 3 * x; }, {.poolSize = 2, .batchSize = chunk});
    REQUIRE(r.size() == xs.size());
    for (std::size_t i = 0; i < r.size(); ++i) REQUIRE(r[i] == 3 * xs[i]);
  }
  // One input, and exactly as many inputs as workers.
  CHECK(flockmp::FunctionAsync::apply(std::vector<int>{9}, myFunction) == std::vector<int>{81});
  CHECK(flockmp::FunctionAsync::apply(std::vector<int>{1, 2}, myFunction, {.poolSize = 2}) == std::vector<int>{1, 4});
}

TEST_CASE("500 consecutive calls leave open fds and child processes unchanged", "[api][resources]") {
  (void)flockmp::FunctionAsync::apply(std::vector<int>{1, 2}, myFunction, {.poolSize = 2}); // warm-up
  const int fds = flockmp::test::openFdCount();
  const int children = flockmp::test::childProcessCount();
  for (int i = 0; i < 500; ++i) {
    auto r = flockmp::FunctionAsync::apply(std::vector<int>{i, i + 1}, myFunction, {.poolSize = 2});
    REQUIRE(r[0] == i * i);
  }
  CHECK(flockmp::test::openFdCount() == fds);
  CHECK(flockmp::test::childProcessCount() == children);
}

namespace {
struct Odd {
  char c;
  double d;
  short s;
  bool operator==(const Odd&) const = default;
};
} // namespace

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("trivially copyable results of odd sizes cross raw blocks intact", "[api][raw]") {
  static_assert(flockmp::BinaryCodec::isRaw<Odd>);
  static_assert(flockmp::BinaryCodec::isRaw<std::array<int, 3>>);
  const int n = 300'000; // several 1 MiB blocks per batch, with elements straddling no boundary
  auto odd = flockmp::FunctionAsync::apply(std::views::iota(0, n), [](int i) {
    return Odd{static_cast<char>(i % 100), i * 0.5, static_cast<short>(i % 3000)};
  }, {.poolSize = 2});
  REQUIRE(odd.size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    REQUIRE(odd[static_cast<std::size_t>(i)] == Odd{static_cast<char>(i % 100), i * 0.5, static_cast<short>(i % 3000)});
  auto triples = flockmp::FunctionAsync::tryApply(std::views::iota(0, n), [](int i) {
    if (i % 99'991 == 5) throw std::runtime_error("split the block here");
    return std::array<int, 3>{i, -i, 2 * i};
  }, {.poolSize = 2});
  for (int i = 0; i < n; ++i) {
    const auto& o = triples[static_cast<std::size_t>(i)];
    if (i % 99'991 == 5) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().message == "split the block here");
    } else {
      REQUIRE(o.hasValue());
      REQUIRE(*o == std::array<int, 3>{i, -i, 2 * i});
    }
  }
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("raw results after an exception in a batch are stored intact and aligned", "[api][raw]") {
  // An exception ends a raw block early; the next block starts at an odd offset in the worker's
  // buffer. UBSan (in CI) checks that no result is written misaligned.
  auto outcomes = flockmp::FunctionAsync::tryApply(std::views::iota(std::size_t{0}, std::size_t{100}), [](std::size_t i) {
    if (i == 7 || i == 42) throw std::runtime_error("no");
    return static_cast<long>(i) * 3;
  }, {.batchSize = 10});
  std::size_t failures = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (i == 7 || i == 42) {
      CHECK_FALSE(outcomes[i].hasValue());
      ++failures;
    } else {
      REQUIRE(outcomes[i].hasValue());
      CHECK(*outcomes[i] == static_cast<long>(i) * 3);
    }
  }
  CHECK(failures == 2);
}
#endif

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("bool results come back as std::vector<bool>", "[api]") {
  std::vector<bool> r = flockmp::FunctionAsync::apply(std::views::iota(0, 1000), [](int i) { return i % 3 == 0; });
  REQUIRE(r.size() == 1000);
  for (int i = 0; i < 1000; ++i) REQUIRE(r[static_cast<std::size_t>(i)] == (i % 3 == 0));
}
#endif

TEST_CASE("one-shot calls under forkserver or spawn with a capturing callable are refused before any fork",
          "[api][options]") {
  // Catches a one-shot call that silently forks under another context, or starts anything first.
  const int children = flockmp::test::childProcessCount();
  int offset = 1;
  for (auto context : {flockmp::Context::forkserver, flockmp::Context::spawn}) {
    CHECK_THROWS_WITH(flockmp::FunctionAsync::apply(std::vector<int>{1, 2}, [offset](int x) { return x + offset; },
                                                    {.context = context}),
                      flockmp::test::contains("the workers do not inherit the callable"));
  }
  CHECK(flockmp::test::childProcessCount() == children);
}

TEST_CASE("a pool with forkserver or spawn but no flockmp::init is an error naming the fix, before any process",
          "[api][pool]") {
  // This binary's main does not call flockmp::init. Catches a pool that starts workers that
  // would run the application's main, or fails later with a vague error.
  const int children = flockmp::test::childProcessCount();
  for (auto context : {flockmp::Context::forkserver, flockmp::Context::spawn}) {
    CHECK_THROWS_WITH(flockmp::BaseMultiProc({.context = context}), flockmp::test::contains("flockmp::init(argc, argv)"));
    CHECK_THROWS_WITH(flockmp::FunctionAsync::apply(std::vector<int>{1, 2}, myFunction, {.context = context}),
                      flockmp::test::contains("flockmp::init(argc, argv)"));
  }
  CHECK(flockmp::test::childProcessCount() == children);
}

namespace {
/// Bytes of this process's mappings whose VmFlags (in /proc/self/smaps) include every one of `flags`.
std::size_t bytesFlagged(std::initializer_list<std::string_view> flags) {
  std::FILE* f = std::fopen("/proc/self/smaps", "r");
  REQUIRE(f != nullptr);
  std::size_t total = 0, size = 0;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long lo = 0, hi = 0;
    if (std::sscanf(line, "%llx-%llx ", &lo, &hi) == 2) {
      size = static_cast<std::size_t>(hi - lo);
    } else if (std::strncmp(line, "VmFlags:", 8) == 0) {
      // Two letters each, separated by spaces: compare whole words.
      std::set<std::string> present;
      for (char* word = std::strtok(line + 8, " \n"); word != nullptr; word = std::strtok(nullptr, " \n"))
        present.insert(word);
      if (std::all_of(flags.begin(), flags.end(), [&](std::string_view fl) { return present.contains(std::string(fl)); }))
        total += size;
    }
  }
  std::fclose(f);
  return total;
}

/// Bytes of this process's mappings that fork leaves out ("dc", from MADV_DONTFORK).
std::size_t dontForkBytes() { return bytesFlagged({"dc"}); }

/// Bytes of this process's mappings advised to be huge pages ("hg", from MADV_HUGEPAGE).
std::size_t hugeAdvisedBytes() { return bytesFlagged({"hg"}); }

/// Status of a child forked now that runs `fn` and exits 0.
template <class F>
int statusOfChild(F&& fn) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    fn();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}
} // namespace

namespace {
/// A result with no default constructor: stored as std::optional until the call ends.
struct Labelled {
  explicit Labelled(std::string t) : text(std::move(t)) {}
  std::string text;
};
} // namespace

template <>
struct flockmp::Serializer<Labelled> {
  static void encode(flockmp::ByteWriter& w, const Labelled& v) { flockmp::BinaryCodec::encode(w, v.text); }
  static Labelled decode(flockmp::ByteReader& r) { return Labelled{flockmp::BinaryCodec::decode<std::string>(r)}; }
};

TEST_CASE("encoded results, with or without a default constructor, keep order and failures", "[api][codec]") {
  auto text = [](int i) { return std::string(static_cast<std::size_t>(i % 50), static_cast<char>('a' + i % 26)); };
  const auto xs = flockmp::test::range(20'000);
  std::vector<std::string> strings = flockmp::FunctionAsync::apply(xs, text, {.poolSize = 2});
  std::vector<Labelled> labels = flockmp::FunctionAsync::apply(xs, [&](int i) { return Labelled{text(i)}; }, {.poolSize = 2});
  REQUIRE(strings.size() == xs.size());
  REQUIRE(labels.size() == xs.size());
  for (int i : xs) {
    REQUIRE(strings[static_cast<std::size_t>(i)] == text(i));
    REQUIRE(labels[static_cast<std::size_t>(i)].text == text(i));
  }
  auto bad = [](int i) { return i % 777 == 3; };
  auto s = flockmp::FunctionAsync::tryApply(xs, [&](int i) {
    if (bad(i)) throw std::runtime_error("bad " + std::to_string(i));
    return text(i);
  }, {.poolSize = 2});
  auto l = flockmp::FunctionAsync::tryApply(xs, [&](int i) {
    if (bad(i)) throw std::runtime_error("bad " + std::to_string(i));
    return Labelled{text(i)};
  }, {.poolSize = 2});
  for (int i : xs) {
    const auto k = static_cast<std::size_t>(i);
    REQUIRE(s[k].hasValue() == !bad(i));
    REQUIRE(l[k].hasValue() == !bad(i));
    if (bad(i)) {
      CHECK(s[k].failure().message == "bad " + std::to_string(i));
      CHECK(l[k].failure().index == k);
    } else {
      REQUIRE(*s[k] == text(i));
      REQUIRE(l[k]->text == text(i));
    }
  }
}

// Not under the sanitizers: their allocator keeps freed memory itself, out of malloc_trim's reach.
#if !defined(FLOCK_TEST_UNDER_SANITIZER)
TEST_CASE("a worker lets go of memory the parent freed, so the parent's writes copy no page", "[memory]") {
  // In a child of the test, so that the malloc tuning stays there: 64 MiB freed but kept by
  // malloc (as a long-running program's heap is). A worker that kept its copy-on-write share of
  // it would have it resident; one that let go has a few MiB.
  int st = statusOfChild([] {
    ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
    ::mallopt(M_MMAP_THRESHOLD, 1 << 30);
    std::vector<char*> blocks;
    for (int i = 0; i < 1024; ++i) {
      blocks.push_back(static_cast<char*>(std::malloc(64 << 10)));
      std::memset(blocks.back(), 1, 64 << 10);
    }
    char* guard = static_cast<char*>(std::malloc(64)); // keeps the freed blocks below the heap top
    for (char* b : blocks) std::free(b);
    auto rssKb = [](int) {
      std::FILE* f = std::fopen("/proc/self/status", "r");
      char line[256];
      long kb = -1;
      while (f && std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
      if (f) std::fclose(f);
      return kb;
    };
    const long parentKb = rssKb(0);
    const long workerKb = flockmp::FunctionAsync::apply(std::vector<int>{0}, rssKb, {.poolSize = 1}).at(0);
    std::free(guard);
    // The parent still holds the 64 MiB; the worker must not.
    ::_exit(parentKb > 64 * 1024 && workerKb > 0 && workerKb < parentKb - 48 * 1024 ? 0 : 2);
  });
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}
#endif

TEST_CASE("ResultPages keeps a buffer's whole pages out of children until released", "[memory]") {
  std::vector<std::int64_t> buf(1 << 20, 7); // 8 MiB
  {
    flockmp::detail::ResultPages small(buf.data(), 4096);
    CHECK_FALSE(small.active()); // too small to be worth a syscall
    CHECK(small.hugeBytes() == 0);
  }
  flockmp::detail::ResultPages guard(buf.data(), buf.size() * sizeof(std::int64_t));
  REQUIRE(guard.active());
  const auto* first = static_cast<const std::byte*>(guard.begin());
  const auto* data = reinterpret_cast<const std::byte*>(buf.data());
  CHECK(first >= data);
  CHECK(first + guard.size() <= data + buf.size() * sizeof(std::int64_t));
  CHECK(reinterpret_cast<std::uintptr_t>(first) % static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE)) == 0);
  CHECK(dontForkBytes() >= guard.size());
  // A child forked now has no such pages: reading one faults.
  const auto* mid = reinterpret_cast<const volatile std::int64_t*>(first + guard.size() / 2);
  int st = statusOfChild([mid] {
    std::signal(SIGSEGV, SIG_DFL); // die of it, not through the test framework's handler
    (void)*mid;
  });
  CHECK(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGSEGV);
  guard.release();
  CHECK_FALSE(guard.active());
  st = statusOfChild([&buf] { ::_exit(std::accumulate(buf.begin(), buf.end(), std::int64_t{0}) == 7 * (1 << 20) ? 0 : 1); });
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}

TEST_CASE("ResultPages asks for huge pages only where they are opt-in, and only for whole ones", "[memory]") {
  using flockmp::detail::ResultPages;
  using flockmp::detail::ThpMode;
  const std::size_t huge = ResultPages::hugePageBytes;
  // An anonymous mapping of our own, so that the test controls the alignment.
  const std::size_t bytes = 8 * huge;
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(map != MAP_FAILED);
  auto* base = static_cast<std::byte*>(map);
  const auto aligned = (reinterpret_cast<std::uintptr_t>(base) + huge - 1) & ~(huge - 1);
  auto* start = reinterpret_cast<std::byte*>(aligned) + 4096; // not on a huge page boundary
  const std::size_t before = hugeAdvisedBytes();
  const std::size_t offBefore = bytesFlagged({"nh"});
  const bool optIn = flockmp::detail::thpMode() == ThpMode::madvise;
  {
    // 1 MiB + 3 huge pages from a point past a boundary: two whole huge pages inside.
    ResultPages pages(start, 3 * huge + (1 << 20));
    REQUIRE(pages.active());
    if (optIn) {
      CHECK(pages.hugeBytes() == 2 * huge);
      CHECK(hugeAdvisedBytes() == before + 2 * huge);
      // The advice changes no byte: what is written reads back.
      std::memset(start, 0x5a, 3 * huge);
      CHECK(std::all_of(start, start + 3 * huge, [](std::byte b) { return b == std::byte{0x5a}; }));
    } else {
      // Off: nothing to ask. Always: every region gets them without asking.
      CHECK(pages.hugeBytes() == 0);
      CHECK(hugeAdvisedBytes() == before);
    }
  }
  // Released: the advice is off again, so memory reused there later is not gathered into huge pages.
  CHECK(hugeAdvisedBytes() == before);
  if (optIn && !flockmp::detail::mallocAdvisesHugePages()) CHECK(bytesFlagged({"nh"}) == offBefore + 2 * huge);
  {
    ResultPages noWholeHugePage(start, huge - 8192); // large enough to keep out of children, no whole huge page
    CHECK(noWholeHugePage.active());
    CHECK(noWholeHugePage.hugeBytes() == 0);
    // A move hands the pages over: only the new owner gives them back.
    ResultPages moved(std::move(noWholeHugePage));
    CHECK_FALSE(noWholeHugePage.active()); // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(moved.active());
    CHECK(dontForkBytes() >= moved.size());
  }
  ::munmap(map, bytes);
  CHECK(hugeAdvisedBytes() == before);
}

TEST_CASE("result storage is kept out of the workers during a call and handed back whole", "[api][raw][memory]") {
  const std::size_t before = dontForkBytes();
  const std::size_t hugeBefore = hugeAdvisedBytes();
  const std::size_t n = 1'000'000;
  std::vector<std::int64_t> xs(n);
  std::iota(xs.begin(), xs.end(), std::int64_t{0});
  for (int call = 0; call < 3; ++call) { // later calls get memory malloc reuses from earlier ones
    std::size_t during = 0, hugeDuring = 0; // hugeDuring: bytes both out of children and advised huge
    auto squares = flockmp::FunctionAsync::apply(xs, [](std::int64_t x) { return x * x; }, {
      .poolSize = 2,
      .onProgress = [&](const flockmp::Progress&) {
        during = std::max(during, dontForkBytes());
        hugeDuring = std::max(hugeDuring, bytesFlagged({"dc", "hg"}));
      },
    });
    CHECK(during >= before + n * sizeof(std::int64_t) - 2 * 4096); // the reserved results, while the call ran
    // 8,000,000 bytes of results hold at least 2 whole 2 MiB pages, wherever they start: asked to
    // be huge where that is opt-in.
    if (flockmp::detail::thpMode() == flockmp::detail::ThpMode::madvise)
      CHECK(hugeDuring >= 2 * flockmp::detail::ResultPages::hugePageBytes);
    CHECK(hugeAdvisedBytes() == hugeBefore); // and the advice taken back before apply returned
    CHECK(dontForkBytes() == before);                                 // given back before apply returned
    REQUIRE(squares.size() == n);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(squares[i] == xs[i] * xs[i]);
    // A process forked afterwards (by the user, or the next call's workers) sees every result.
    int st = statusOfChild([&] {
      for (std::size_t i = 0; i < n; ++i)
        if (squares[i] != xs[i] * xs[i]) ::_exit(1);
    });
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
  }
  // Every way out of a call gives the pages back: failures, and an exception from the parent side.
  auto outcomes = flockmp::FunctionAsync::tryApply(xs, [](std::int64_t x) {
    if (x == 123'456) throw std::runtime_error("one bad input");
    return x + 1;
  }, {.poolSize = 2});
  CHECK_FALSE(outcomes[123'456].hasValue());
  CHECK(*outcomes[123'457] == 123'458);
  CHECK(dontForkBytes() == before);
  CHECK_THROWS_WITH(flockmp::FunctionAsync::apply(xs, [](std::int64_t x) { return x; }, {
    .poolSize = 2,
    .onProgress = [](const flockmp::Progress&) { throw std::runtime_error("stop from the parent"); },
  }), "stop from the parent");
  CHECK(dontForkBytes() == before);
}

TEST_CASE("timeOutError and setupTimeout accept any std::chrono duration, floating point included", "[api][options]") {
  // Catches a brace-initializer error for duration<double> (a compile failure) and a wrong unit.
  const flockmp::Options a{.timeOutError = std::chrono::duration<double>(1.5)};
  CHECK(a.timeOutError->count() == 1'500'000'000);
  const flockmp::Options b{.timeOutError = std::chrono::minutes(2), .setupTimeout = std::chrono::duration<float, std::milli>(2.5f)};
  CHECK(b.timeOutError->count() == 120'000'000'000);
  CHECK(b.setupTimeout->count() == 2'500'000);
  CHECK(flockmp::FunctionAsync::apply(std::vector<int>{3}, myFunction, {.timeOutError = std::chrono::duration<double>(30)}) ==
        std::vector<int>{9});
}

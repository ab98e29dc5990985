// Pools (BaseMultiProc) under every context: persistent workers, portable callables, the fault
// matrix, and the lifecycle (many calls, deaths between calls, closing during a call, threads).
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/proc_stats.hpp"
#include "support/processes.hpp"
#include "support/test_util.hpp"

using flockmp::Context;
using flockmp::FailureKind;
using flockmp::test::nameOf;

namespace {

#if defined(FLOCK_TEST_UNDER_SANITIZER)
constexpr int scale = 5; // a sanitized process starts ~20x slower: the longest loops scale down
#else
constexpr int scale = 1;
#endif

int square(int x) { return x * x; }

struct Offset {
  static int apply(int x) { return x + 1000; }
};

/// A function object the codec carries (an aggregate of codable fields).
struct Affine {
  int a = 0;
  std::string tag;
  std::string operator()(int x) const { return tag + std::to_string(a * x); }
};

/// An empty function object: rebuilt by default construction.
struct Negate {
  long operator()(int x) const { return -static_cast<long>(x); }
};

/// A member function with a codable object.
struct Greeter {
  std::string greeting;
  std::string greet(const std::string& name) const { return greeting + ", " + name; }
};

/// What a fault-matrix input does.
struct Job {
  int x = 0;
  int action = 0; // 0 value, 1 throw, 2 segfault, 3 abort, 4 exit(3), 5 hang, 6 crash on the first try only
  std::string dir;
};

int runJob(const Job& j) {
  switch (j.action) {
  case 1: throw std::invalid_argument("bad input " + std::to_string(j.x));
  case 2: flockmp::test::segfault(); break;
  case 3: std::abort();
  case 4: std::fflush(nullptr); ::_exit(3);
  case 5:
    for (;;) ::pause();
  case 6: {
    // The first attempt leaves a marker and dies; a retry (another worker) finds it and succeeds.
    const std::string marker = j.dir + "/attempt-" + std::to_string(j.x);
    const int fd = ::open(marker.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd >= 0) {
      ::close(fd);
      flockmp::test::segfault();
    }
    break;
  }
  default: break;
  }
  return j.x * 3;
}

int workerPid(int) { return static_cast<int>(::getpid()); }

/// State of a worker's life: the initializer's runs, and where the finalizer leaves its mark.
int initRuns = 0;
std::string finalizerDir;
void countInit() { ++initRuns; }
void markFinalizer() {
  if (finalizerDir.empty()) return;
  std::ofstream(finalizerDir + "/fin-" + std::to_string(::getpid())) << "done";
}
std::pair<int, int> pidAndInits(const std::string& dir) {
  finalizerDir = dir;
  return {static_cast<int>(::getpid()), initRuns};
}

void failingInit() { throw std::runtime_error("cannot reach the database"); }

/// Waits for a marker file, then pauses: a call that is certainly running.
int touchAndHang(const std::string& path) {
  std::ofstream(path) << "running";
  for (;;) ::pause();
}

bool waitForFile(const std::string& path) {
  for (int i = 0; i < 20'000; ++i) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

std::mutex logMutex;
int logged(int x) {
  std::lock_guard lock(logMutex);
  std::fprintf(stderr, "%s", ""); // takes stdio's lock too
  return x + 1;
}

} // namespace

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("a pool's results come back in input order for every kind of portable callable", "[pool]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  const auto xs = flockmp::test::range(1000);
  // Each CHECK catches a callable rebuilt wrongly in the worker (wrong function, lost state) or
  // results out of order.
  std::vector<int> squares = pool.apply(xs, square);
  for (int i = 0; i < 1000; ++i) REQUIRE(squares[static_cast<std::size_t>(i)] == i * i);
  CHECK(pool.apply(xs, &square)[999] == 999 * 999);
  CHECK(pool.apply(xs, &Offset::apply)[7] == 1007);
  CHECK(pool.apply(xs, [](int x) { return x - 1; })[10] == 9);
  CHECK(pool.apply(xs, Negate{})[5] == -5);
  auto affine = pool.apply(std::vector<int>{1, 2, 3}, Affine{7, "a="});
  CHECK(affine == std::vector<std::string>{"a=7", "a=14", "a=21"});
  auto greetings = pool.apply(std::vector<std::string>{"Ada", "Linus"}, &Greeter::greet, Greeter{"Hello"});
  CHECK(greetings == std::vector<std::string>{"Hello, Ada", "Hello, Linus"});
  // Tuple-like inputs are unpacked; a void callable gives nothing back but runs every input.
  auto sums = pool.apply(std::vector<std::pair<int, int>>{{1, 2}, {30, 40}}, [](int a, int b) { return a + b; });
  CHECK(sums == std::vector<int>{3, 70});
  pool.apply(xs, [](int) {});
  // std::filesystem::path as input and result.
  auto paths = pool.apply(std::vector<std::filesystem::path>{"a/b", "/c"},
                          [](const std::filesystem::path& p) { return p / "x.log"; });
  CHECK(paths == std::vector<std::filesystem::path>{"a/b/x.log", "/c/x.log"});
  // The seed's argument order.
  CHECK(pool.executeAsync(square, std::vector<int>{4, 5}) == std::vector<int>{16, 25});
  // A single-pass range is read once.
  CHECK(pool.apply(std::views::iota(0, 5) | std::views::filter([](int x) { return x % 2 == 0; }), square) ==
        std::vector<int>{0, 4, 16});
}
#endif

TEST_CASE("a pool's workers outlive calls: the same pids serve every call, the initializer runs once per worker "
          "and the finalizer at close",
          "[pool][lifecycle]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::TempDir dir;
  std::set<int> pids;
  {
    flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .initializer = &countInit, .finalizer = &markFinalizer}};
    CHECK(pool.workerPids().empty()); // lazily started: catches workers started by the constructor
    pool.start();
    const auto started = pool.workerPids();
    REQUIRE(started.size() == 2);
    for (int call = 0; call < 3; ++call) {
      auto r = pool.apply(std::vector<std::string>(50, dir.path.string()), pidAndInits);
      for (auto [pid, inits] : r) {
        // Catches workers forked per call (a pid outside the started ones) and an initializer
        // run per call rather than once per worker life.
        CHECK(std::find(started.begin(), started.end(), pid) != started.end());
        CHECK(inits == 1);
        pids.insert(pid);
      }
    }
    CHECK(pool.workerPids() == started);
  }
  // Destruction stopped every worker normally: each ran its finalizer, and none is left.
  for (int pid : pids) {
    CHECK(std::filesystem::exists(dir.path / ("fin-" + std::to_string(pid))));
    CHECK(flockmp::test::waitGone(pid));
  }
}

namespace {

std::vector<Job> faultMatrixJobs(const std::string& dir) {
  std::vector<Job> jobs;
  for (int i = 0; i < 40; ++i) jobs.push_back({i, 0, dir});
  jobs[3].action = 1;
  jobs[11].action = 2;
  jobs[17].action = 3;
  jobs[23].action = 4;
  jobs[31].action = 5;
  return jobs;
}

void checkFaultMatrix(const std::vector<flockmp::Outcome<int>>& out) {
  REQUIRE(out.size() == 40);
  for (int i = 0; i < 40; ++i) {
    const auto& o = out[static_cast<std::size_t>(i)];
    CAPTURE(i);
    switch (i) {
    case 3:
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::exception);
      CHECK(o.failure().message == "bad input 3");
      break;
    case 11:
    case 17:
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::crashed);
      CHECK(o.failure().signal == (i == 11 ? SIGSEGV : SIGABRT)); // catches a status lost by the forkserver
      break;
    case 23:
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::crashed);
      CHECK(o.failure().exitStatus == 3);
      break;
    case 31:
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::timedOut);
      break;
    default:
      REQUIRE(o.hasValue());
      CHECK(*o == i * 3); // catches inputs lost or shifted when a worker is replaced mid-batch
    }
  }
}

} // namespace

TEST_CASE("the fault matrix on a pool: each fault costs its input only, and the pool serves the next call",
          "[pool][faults]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::TempDir dir;
  // setupTimeout apart from timeOutError: a worker start slowed by a loaded machine (a sanitized
  // program image under spawn) must not count as a failed setup.
  flockmp::BaseMultiProc pool{{.poolSize = 2,
                               .timeOutError = std::chrono::seconds(2),
                               .context = context,
                               .setupTimeout = std::chrono::seconds(120)}};
  checkFaultMatrix(pool.tryApply(faultMatrixJobs(dir.path.string()), runJob));
  // The dead workers were replaced: the next call on the same pool gets every result.
  std::vector<Job> clean;
  for (int i = 0; i < 40; ++i) clean.push_back({i, 0, dir.path.string()});
  auto again = pool.apply(clean, runJob);
  CHECK(again[39] == 39 * 3);
  CHECK(pool.workerPids().size() == 2);
}

TEST_CASE("the fault matrix on one-shot calls, under every context", "[oneshot][faults]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::TempDir dir;
  const int children = flockmp::test::childProcessCount();
  checkFaultMatrix(flockmp::FunctionAsync::tryApply(
      faultMatrixJobs(dir.path.string()), runJob,
      {.poolSize = 2, .timeOutError = std::chrono::seconds(2), .context = context, .setupTimeout = std::chrono::seconds(120)}));
  // A one-shot call under forkserver or spawn is a pool that lives for the call: nothing is left.
  CHECK(flockmp::test::childProcessCount() == children);
}

TEST_CASE("a pool retries an input whose worker crashed, on a fresh worker", "[pool][faults]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::TempDir dir;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .retries = 1}};
  std::vector<Job> jobs;
  for (int i = 0; i < 10; ++i) jobs.push_back({i, i == 4 ? 6 : 0, dir.path.string()});
  // Without the retry input 4 is `crashed`; catches retries not applied on pools.
  auto r = pool.apply(jobs, runJob);
  CHECK(r[4] == 12);
  // Per call: the pool's default of one retry holds for this call too, and CallOptions can turn it off.
  std::vector<Job> again{{50, 6, dir.path.string()}};
  auto o = pool.tryApply(again, runJob, {.retries = 0});
  REQUIRE_FALSE(o[0].hasValue());
  CHECK(o[0].failure().kind == FailureKind::crashed);
}

TEST_CASE("maxTasksPerWorker counts over a worker's life on a pool, across calls", "[pool][lifecycle]") {
  const auto context = GENERATE(Context::fork, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .batchSize = 1, .maxTasksPerWorker = 3}};
  std::map<int, int> perPid;
  for (int call = 0; call < 3; ++call)
    for (int pid : pool.apply(flockmp::test::range(5), workerPid)) ++perPid[pid];
  // 15 inputs, at most 3 per worker: catches a count reset per call (a worker would serve 5+).
  for (auto [pid, n] : perPid) CHECK(n <= 3);
  CHECK(perPid.size() >= 5);
}

TEST_CASE("a pool whose initializer always fails ends the call through the restart budget, naming the cause",
          "[pool][faults]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .restartBudget = {.maxRestarts = 3}, .initializer = &failingInit}};
  auto out = pool.tryApply(flockmp::test::range(6), square);
  REQUIRE(out.size() == 6);
  for (const auto& o : out) {
    REQUIRE_FALSE(o.hasValue());
    CHECK(o.failure().kind == FailureKind::setup);
    CHECK_THAT(o.failure().message, Catch::Matchers::Contains("cannot reach the database"));
  }
}

TEST_CASE("a pool call is cancelled by its stopToken: finished results are kept, the rest is cancelled, and the "
          "pool serves the next call",
          "[pool][cancel]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir dir;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .batchSize = 1}};
  std::vector<Job> jobs;
  for (int i = 0; i < 20; ++i) jobs.push_back({i, i >= 10 ? 5 : 0, dir.path.string()});
  std::stop_source stop;
  auto out = pool.tryApply(jobs, runJob,
                           {.stopToken = stop.get_token(), .onProgress = [&](const flockmp::Progress& p) {
                              if (p.done >= 10) stop.request_stop();
                            }});
  for (int i = 0; i < 20; ++i) {
    const auto& o = out[static_cast<std::size_t>(i)];
    if (i < 10) {
      REQUIRE(o.hasValue());
      CHECK(*o == i * 3);
    } else {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::cancelled);
    }
  }
  CHECK(pool.apply(flockmp::test::range(4), square) == std::vector<int>{0, 1, 4, 9});
}

TEST_CASE("1,000 calls on one pool leave the fds and the children as they were", "[pool][lifecycle]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  CHECK(pool.apply(std::vector<int>{1, 2}, square) == std::vector<int>{1, 4});
  const int fds = flockmp::test::openFdCount();
  const int children = flockmp::test::childProcessCount();
  const auto pids = pool.workerPids();
  for (int i = 0; i < 1000 / scale; ++i) {
    auto r = pool.apply(std::vector<int>{i, i + 1}, square);
    REQUIRE(r[1] == (i + 1) * (i + 1));
  }
  // Catches an fd or a process leaked per call, and workers restarted per call.
  CHECK(flockmp::test::openFdCount() == fds);
  CHECK(flockmp::test::childProcessCount() == children);
  CHECK(pool.workerPids() == pids);
}

TEST_CASE("a worker that dies between calls is replaced, and the next call loses nothing", "[pool][faults]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  pool.start();
  const auto before = pool.workerPids();
  REQUIRE(before.size() == 2);
  ::kill(before[0], SIGKILL);
  REQUIRE(flockmp::test::waitGone(before[0]));
  const auto xs = flockmp::test::range(200);
  auto r = pool.apply(xs, square);
  for (int i = 0; i < 200; ++i) REQUIRE(r[static_cast<std::size_t>(i)] == i * i);
  const auto after = pool.workerPids();
  CHECK(after.size() == 2);
  CHECK(std::find(after.begin(), after.end(), before[0]) == after.end());
}

TEST_CASE("destroying a pool while another thread is inside a call cancels that call and leaves no worker",
          "[pool][lifecycle]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir dir;
  const std::string marker = (dir.path / "running").string();
  auto pool = std::make_unique<flockmp::BaseMultiProc>(flockmp::Options{.poolSize = 2, .context = context});
  pool->start();
  const auto pids = pool->workerPids();
  std::vector<flockmp::Outcome<int>> out;
  std::thread caller([&] { out = pool->tryApply(std::vector<std::string>{marker}, touchAndHang); });
  REQUIRE(waitForFile(marker));
  pool.reset(); // waits for the call, which is cancelled
  caller.join();
  REQUIRE(out.size() == 1);
  REQUIRE_FALSE(out[0].hasValue());
  CHECK(out[0].failure().kind == FailureKind::cancelled);
  CHECK_THAT(out[0].failure().message, Catch::Matchers::Contains("pool was closed"));
  for (pid_t pid : pids) CHECK(flockmp::test::waitGone(pid));
}

TEST_CASE("a closed pool refuses calls with a clear error", "[pool][lifecycle]") {
  flockmp::BaseMultiProc pool{{.poolSize = 1}};
  CHECK(pool.apply(std::vector<int>{3}, square) == std::vector<int>{9});
  pool.close();
  CHECK_THROWS_WITH(pool.apply(std::vector<int>{3}, square), Catch::Matchers::Contains("this pool is closed"));
}

TEST_CASE("several threads may call one pool at once; each call gets its own results", "[pool][threads]") {
  const auto context = GENERATE(Context::fork, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  // Started before the threads: a fork while another thread allocates may copy that thread's
  // allocator lock into the worker (AddressSanitizer's allocator is not fork-safe).
  pool.start();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int call = 0; call < 25; ++call) {
        std::vector<int> xs(50);
        for (int i = 0; i < 50; ++i) xs[static_cast<std::size_t>(i)] = t * 10'000 + call * 100 + i;
        auto r = pool.apply(xs, square);
        for (int i = 0; i < 50; ++i)
          if (r[static_cast<std::size_t>(i)] != xs[static_cast<std::size_t>(i)] * xs[static_cast<std::size_t>(i)]) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0); // catches results of one thread's call delivered to another's
}

TEST_CASE("large inputs stream to a pool while results stream back (no deadlock on full sockets)", "[pool]") {
  const auto context = GENERATE(Context::fork, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .batchSize = 64}};
  std::vector<std::string> big;
  for (int i = 0; i < 256; ++i) big.push_back(std::string(100'000, static_cast<char>('a' + i % 26)));
  // Each result is as large as its input: both directions fill their socket buffers.
  auto r = pool.apply(big, [](const std::string& s) { return s + s.substr(0, 1); });
  REQUIRE(r.size() == 256);
  for (int i = 0; i < 256; ++i) {
    REQUIRE(r[static_cast<std::size_t>(i)].size() == 100'001);
    REQUIRE(r[static_cast<std::size_t>(i)].back() == static_cast<char>('a' + i % 26));
  }
}

TEST_CASE("forkserver and spawn pools serve 200 calls from a parent whose other threads keep malloc and a logging "
          "mutex busy",
          "[pool][threads]") {
  const auto context = GENERATE(Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard(300); // a hang fails the test instead of blocking CI
  std::atomic<bool> done{false};
  std::thread mallocer([&] {
    while (!done) {
      std::vector<std::unique_ptr<char[]>> v;
      for (int i = 0; i < 64; ++i) v.emplace_back(new char[static_cast<std::size_t>(64 + i * 512)]);
    }
  });
  std::thread logger([&] {
    while (!done) {
      std::lock_guard lock(logMutex);
      std::fprintf(stderr, "%s", "");
    }
  });
  {
    // One input per worker life: every call starts workers while the threads run.
    flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context, .maxTasksPerWorker = 1}};
    for (int call = 0; call < 200 / scale; ++call) {
      auto r = pool.apply(std::vector<int>{call, call + 1}, logged);
      REQUIRE(r == std::vector<int>{call + 1, call + 2});
    }
  }
  done = true;
  mallocer.join();
  logger.join();
}

TEST_CASE("a function from a library the workers have not loaded fails each input with an error naming the library",
          "[pool][portability]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 1, .context = context}};
  pool.start(); // the workers start before the library is loaded
  void* lib = ::dlopen(FLOCK_TEST_PLUGIN, RTLD_NOW);
  REQUIRE(lib != nullptr);
  auto fn = reinterpret_cast<int (*)(int)>(::dlsym(lib, "flockTestPluginSquare"));
  REQUIRE(fn != nullptr);
  auto out = pool.tryApply(std::vector<int>{1, 2, 3}, fn);
  for (const auto& o : out) {
    REQUIRE_FALSE(o.hasValue());
    CHECK_THAT(o.failure().message, Catch::Matchers::Contains("which this worker has not loaded") &&
                                        Catch::Matchers::Contains("flock_test_plugin"));
  }
  // The pool goes on with functions it can find.
  CHECK(pool.apply(std::vector<int>{3}, square) == std::vector<int>{9});
  ::dlclose(lib);
}

TEST_CASE("under forkserver and spawn the initializer must be a plain function: a capturing one is an OptionError",
          "[pool][options]") {
  int captured = 1;
  for (auto context : {Context::forkserver, Context::spawn}) {
    CHECK_THROWS_AS(flockmp::BaseMultiProc({.context = context, .initializer = [&captured] { ++captured; }}),
                    flockmp::OptionError);
    // A plain function is accepted.
    CHECK_NOTHROW(flockmp::BaseMultiProc({.context = context, .initializer = &countInit}));
  }
  // Under fork a capturing initializer is inherited, so it is fine.
  CHECK_NOTHROW(flockmp::BaseMultiProc({.initializer = [&captured] { ++captured; }}));
}

TEST_CASE("a pool's workers started from a thread that ends are not tied to that thread's life", "[pool][threads]") {
  // PR_SET_PDEATHSIG fires when the thread that started the worker exits, not the process: a
  // pool started from a short-lived thread would lose its workers with it.
  const auto context = GENERATE(Context::fork, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc fromThread{{.poolSize = 1, .context = context}};
  std::thread([&] { fromThread.start(); }).join();
  CHECK(fromThread.apply(std::vector<int>{0}, flockmp::test::parentDeathSignal) == std::vector<int>{0});
  // From the main thread (which lives as long as the process) the worker dies with the parent.
  flockmp::BaseMultiProc fromMain{{.poolSize = 1, .context = context}};
  CHECK(fromMain.apply(std::vector<int>{0}, flockmp::test::parentDeathSignal) != std::vector<int>{0});
}

namespace {
/// A codec that refuses to encode the int 13 (a user codec with a precondition).
struct PickyCodec {
  template <class T>
  static void encode(flockmp::ByteWriter& w, const T& v) {
    if constexpr (std::is_same_v<T, int>)
      if (v == 13) throw std::domain_error("13 is not carried");
    flockmp::BinaryCodec::encode(w, v);
  }
  template <class T>
  static T decode(flockmp::ByteReader& r) {
    return flockmp::BinaryCodec::decode<T>(r);
  }
};
} // namespace

TEST_CASE("an input the codec cannot encode fails alone, with its index; the others run", "[pool][codec]") {
  const auto context = GENERATE(Context::fork, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  auto out = pool.tryApply<PickyCodec>(flockmp::test::range(40), square);
  REQUIRE(out.size() == 40);
  for (int i = 0; i < 40; ++i) {
    const auto& o = out[static_cast<std::size_t>(i)];
    if (i == 13) {
      // Catches the whole call failing, or the batch around 13 lost.
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::codec);
      CHECK_THAT(o.failure().message, Catch::Matchers::Contains("13 is not carried"));
    } else {
      REQUIRE(o.hasValue());
      CHECK(*o == i * i);
    }
  }
}

namespace {
long crashOnMultiplesOf5000(long x) {
  if (x > 0 && x % 5000 == 0) flockmp::test::segfault();
  if (x > 0 && x % 7919 == 0) throw std::range_error("multiple of 7919");
  return x * 3;
}

std::size_t lengthOf(const std::string& s) { return s.size(); }
} // namespace

TEST_CASE("raw inputs through the shared input areas: every batch size, queued batches, and crashes that requeue",
          "[pool][shared]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  std::vector<long> xs(20'000);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<long>(i);
  // Small batches (many queued behind running ones, both areas of a worker in use), guided
  // batches, and batches too large for an area (sent through the socket instead).
  for (std::size_t chunk : {std::size_t{7}, std::size_t{0}, std::size_t{300'000}}) {
    CAPTURE(chunk);
    std::vector<long> big;
    if (chunk == 300'000) big.assign(600'000, 2); // 300,000 x 8 bytes > one area
    const auto& in = chunk == 300'000 ? big : xs;
    auto out = pool.tryApply(in, crashOnMultiplesOf5000, {.batchSize = chunk});
    REQUIRE(out.size() == in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (in[i] > 0 && in[i] % 5000 == 0) {
        // Catches an area reused while a requeued batch still needed it: a crash's neighbours
        // would then run on another batch's inputs.
        REQUIRE_FALSE(out[i].hasValue());
        CHECK(out[i].failure().signal == SIGSEGV);
      } else if (in[i] > 0 && in[i] % 7919 == 0) {
        // An exception ends a block of results stored in the shared area: catches the results
        // after it announced at the wrong place.
        REQUIRE_FALSE(out[i].hasValue());
        CHECK(out[i].failure().kind == FailureKind::exception);
      } else {
        REQUIRE(out[i].hasValue());
        REQUIRE(*out[i] == in[i] * 3);
      }
    }
  }
}

TEST_CASE("encoded inputs with raw results: the results come back through the shared area", "[pool][shared]") {
  const auto context = GENERATE(Context::fork, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  std::vector<std::string> words;
  for (int i = 0; i < 5000; ++i) words.push_back(std::string(static_cast<std::size_t>(i % 97), 'w'));
  auto lengths = pool.apply(words, lengthOf);
  REQUIRE(lengths.size() == words.size());
  for (std::size_t i = 0; i < words.size(); ++i) REQUIRE(lengths[i] == i % 97);
}

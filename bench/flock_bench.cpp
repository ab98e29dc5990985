// flock benchmark: the same workloads run serially, on in-process std::threads, and on flock's
// worker processes, in one run, so the ratios compare like with like on this machine.
//
//   scripts/bench            (or: build-bench/bench/flock_bench [--quick] [--results-only] [--faults-only]
//                             [--pools-only])
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <numeric>
#include <ranges>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include <flock/flock.hpp>


// Clang before 17 cannot use libstdc++ 12's <ranges> views; the streaming rows need them.
#if defined(__clang__) && __clang_major__ < 17 && defined(__GLIBCXX__)
#define FLOCK_BENCH_STD_VIEWS 0
#else
#define FLOCK_BENCH_STD_VIEWS 1
#endif
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

/// Best of `reps` wall times of `fn`.
template <class F>
double bestOf(int reps, F&& fn) {
  double best = 1e300;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    fn();
    best = std::min(best, seconds(Clock::now() - t0));
  }
  return best;
}

/// Fill out[i] = f(i) for i in [0, n) on `threads` std::threads (contiguous halves). With
/// `hugePages`, the output gets the advice flock gives its own result buffer (huge pages where
/// they are opt-in): the fair reference for what that advice is worth.
template <class R, class F>
std::vector<R> threadMap(std::size_t n, unsigned threads, F f, bool hugePages = false) {
  std::vector<R> out;
  out.reserve(n);
  flockmp::detail::ResultPages advice;
  if (hugePages) advice = flockmp::detail::ResultPages(out.data(), n * sizeof(R));
  out.resize(n);
  std::vector<std::jthread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::size_t b = n * t / threads, e = n * (t + 1) / threads;
      for (std::size_t i = b; i < e; ++i) out[i] = f(i);
    });
  }
  pool.clear();
  return out;
}

/// Pure computation of roughly `iterations` dependent steps (no memory traffic, no syscalls).
std::uint64_t spin(std::uint64_t iterations, std::uint64_t seed) {
  std::uint64_t x = seed | 1;
  for (std::uint64_t i = 0; i < iterations; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return x;
}

std::uint64_t calibrateSpinPerMs() {
  std::uint64_t iters = 1'000'000;
  for (;;) {
    auto t0 = Clock::now();
    volatile std::uint64_t sink = spin(iters, 1);
    (void)sink;
    double s = seconds(Clock::now() - t0);
    if (s > 0.05) return static_cast<std::uint64_t>(static_cast<double>(iters) / (s * 1000.0));
    iters *= 2;
  }
}

/// Writes all of `n` bytes to `fd` (retrying short writes and EINTR); false on error.
bool writeFully(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// Bytes per second through a pipe between two processes, measured now so that the throughput
/// ratio is against this machine (best of three: a shared VM's figure swings by 2x or more).
double pipeBandwidthOnce(std::size_t chunk, std::size_t total) {
  int p[2];
  if (::pipe(p) != 0) return 0;
  ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    std::vector<char> buf(chunk, 'x');
    for (std::size_t sent = 0; sent < total; sent += chunk)
      if (!writeFully(p[1], buf.data(), buf.size())) break;
    ::_exit(0);
  }
  ::close(p[1]);
  std::vector<char> buf(1 << 20);
  auto t0 = Clock::now();
  std::size_t got = 0;
  for (ssize_t r; (r = ::read(p[0], buf.data(), buf.size())) > 0;) got += static_cast<std::size_t>(r);
  double s = seconds(Clock::now() - t0);
  ::close(p[0]);
  ::waitpid(pid, nullptr, 0);
  return static_cast<double>(got) / s;
}

double pipeBandwidth(std::size_t chunk, std::size_t total) {
  double best = 0;
  for (int i = 0; i < 3; ++i) best = std::max(best, pipeBandwidthOnce(chunk, total));
  return best;
}

/// flock's throughput against the pipe, and against one CPU making the same results (the serial
/// column): the calling process builds every result in fresh memory on one CPU, so that rate
/// bounds what any transport can deliver into it.
std::string throughputNote(double flockBw, double serialBw, double pipeBw) {
  return fmt::format("{:.0f} MB/s = {:.0f}% of pipe bandwidth ({:.0f} MB/s); one CPU making them: {:.0f} MB/s = {:.0f}%",
                     flockBw / 1e6, 100.0 * flockBw / pipeBw, pipeBw / 1e6, serialBw / 1e6, 100.0 * serialBw / pipeBw);
}

struct Row {
  std::string workload;
  double serial, threads, flock;
  std::string note;
};

void printTable(const std::vector<Row>& rows, unsigned workers) {
  fmt::print("\n{:<44} {:>11} {:>11} {:>11} {:>13} {:>13}\n", "workload", "serial", "threads", "flock",
             "flock/threads", "serial/flock");
  for (const auto& r : rows) {
    fmt::print("{:<44} {:>10.2f}ms {:>10.2f}ms {:>10.2f}ms {:>13.2f} {:>13.2f}  {}\n", r.workload, r.serial * 1e3,
               r.threads * 1e3, r.flock * 1e3, r.flock / r.threads, r.serial / r.flock, r.note);
  }
  fmt::print("({} workers / threads; best of several runs; lower flock/threads is better)\n", workers);
}

/// Goodput under faults: N inputs of ~50 us of computation, of which 1% segfault (a store into a
/// PROT_NONE page) and 0.1% hang (a busy infinite loop, killed by timeOutError = 100 ms), on 2
/// workers; against the same call without faults. The faulty inputs are chosen by index, so the
/// expected accounting is exact: every input ends with its value or its failure, and only the
/// faulty ones fail. Returns false when the accounting is wrong.
bool faultsSection(bool quick, const std::string& pythonFaults) {
  using namespace std::chrono_literals;
  const std::size_t n = quick ? 10'000 : 100'000;
  const int workers = 2;
  const auto limit = 100ms;
  auto segfaults = [](std::uint64_t i) { return i % 100 == 37; };
  auto hangs = [](std::uint64_t i) { return i % 1000 == 501; };
  // A page no one may touch: each worker inherits it with the fork, and a store into it is a real
  // SIGSEGV from the MMU, not a raise(). No core files: a thousand of them would time the disk.
  auto* guard = static_cast<volatile char*>(::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (reinterpret_cast<void*>(const_cast<char*>(guard)) == MAP_FAILED) std::abort();
  rlimit noCore{0, 0};
  ::getrlimit(RLIMIT_CORE, &noCore);
  noCore.rlim_cur = 0;
  ::setrlimit(RLIMIT_CORE, &noCore);

  // Inputs started, counted across the workers in shared memory: more than N means inputs ran
  // again because a worker died holding results it had computed but not yet sent.
  void* shared = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) std::abort();
  auto* runs = new (shared) std::atomic<std::uint64_t>{0};

  const std::uint64_t perInput = std::max<std::uint64_t>(1, calibrateSpinPerMs() / 20); // ~50 us
  std::vector<std::uint64_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::uint64_t{0});
  auto clean = [perInput, runs](std::uint64_t i) {
    runs->fetch_add(1, std::memory_order_relaxed);
    return spin(perInput, i);
  };
  auto faulty = [perInput, runs, guard, segfaults, hangs](std::uint64_t i) {
    runs->fetch_add(1, std::memory_order_relaxed);
    if (segfaults(i)) *guard = 1;
    if (hangs(i)) {
      volatile std::uint64_t k = 0;
      for (;;) k = k + 1; // a busy hang: it holds its CPU, as a runaway loop does
    }
    return spin(perInput, i);
  };

  // The reference values (and the same work on 2 threads, which no fault would leave alive).
  std::vector<std::uint64_t> expect;
  const double threads = bestOf(1, [&] { expect = threadMap<std::uint64_t>(n, workers, [&](std::size_t i) { return clean(i); }); });

  // Every outcome checked: values against the reference, failures by index and kind.
  struct Tally {
    std::size_t values = 0, crashed = 0, timedOut = 0, other = 0, wrong = 0;
    std::string firstProblem;
  };
  auto tally = [&](const std::vector<flockmp::Outcome<std::uint64_t>>& out, bool withFaults) {
    Tally t;
    auto problem = [&t](std::string what) {
      ++t.wrong;
      if (t.firstProblem.empty()) t.firstProblem = std::move(what);
    };
    if (out.size() != n) problem(fmt::format("{} outcomes for {} inputs", out.size(), n));
    for (std::size_t i = 0; i < out.size(); ++i) {
      const bool segv = withFaults && segfaults(i), hang = withFaults && hangs(i);
      if (out[i].hasValue()) {
        ++t.values;
        if (segv || hang) problem(fmt::format("input {} should have failed", i));
        else if (*out[i] != expect[i]) problem(fmt::format("input {}: wrong value", i));
        continue;
      }
      const flockmp::Failure& f = out[i].failure();
      if (f.kind == flockmp::FailureKind::crashed) ++t.crashed;
      else if (f.kind == flockmp::FailureKind::timedOut) ++t.timedOut;
      else ++t.other;
      if (f.index != i) problem(fmt::format("outcome {} reports index {}", i, f.index));
      else if (segv && !(f.kind == flockmp::FailureKind::crashed && f.signal == SIGSEGV)) problem(f.describe());
      else if (hang && f.kind != flockmp::FailureKind::timedOut) problem(f.describe());
      else if (!segv && !hang) problem(f.describe());
    }
    return t;
  };

  const flockmp::Options opts{.poolSize = workers, .timeOutError = limit, .checkProgress = false};
  const int reps = quick ? 1 : 2;
  double clean_s = 1e300, faulty_s = 1e300;
  std::uint64_t cleanRuns = 0, faultyRuns = 0;
  Tally cleanT, faultyT;
  for (int r = 0; r < reps; ++r) { // alternated, best of each: a shared VM's load moves both alike
    runs->store(0);
    auto t0 = Clock::now();
    auto a = flockmp::FunctionAsync::tryApply(idx, clean, opts);
    const double ta = seconds(Clock::now() - t0);
    if (ta < clean_s) clean_s = ta, cleanRuns = runs->load();
    cleanT = tally(a, false);
    runs->store(0);
    t0 = Clock::now();
    auto b = flockmp::FunctionAsync::tryApply(idx, faulty, opts);
    const double tb = seconds(Clock::now() - t0);
    if (tb < faulty_s) faulty_s = tb, faultyRuns = runs->load();
    faultyT = tally(b, true);
    if (cleanT.wrong != 0 || faultyT.wrong != 0) break;
  }
  ::munmap(const_cast<char*>(guard), 4096);
  ::munmap(shared, 4096);

  const std::size_t wantCrashed = n / 100, wantTimedOut = n / 1000;
  const bool pass = cleanT.values == n && cleanT.wrong == 0 && faultyT.wrong == 0 &&
                    faultyT.values + faultyT.crashed + faultyT.timedOut + faultyT.other == n &&
                    faultyT.crashed == wantCrashed && faultyT.timedOut == wantTimedOut && faultyT.other == 0 &&
                    faultyT.values == n - wantCrashed - wantTimedOut;
  // Each hang holds one of the workers for at least the time limit: that much of the extra time
  // is the timeouts themselves, whatever the pool does. Inputs run again cost their work again.
  const double floor_s = static_cast<double>(wantTimedOut) * seconds(limit) / workers;
  const double extra = faulty_s - clean_s;
  const std::uint64_t rerun = faultyRuns > n ? faultyRuns - n : 0;
  const double rerun_s = static_cast<double>(rerun) * clean_s / static_cast<double>(n);
  const double perFaultMs = (extra - floor_s - rerun_s) * 1e3 / static_cast<double>(wantCrashed + wantTimedOut);
  const double goodClean = static_cast<double>(cleanT.values) / clean_s;
  const double goodFaulty = static_cast<double>(faultyT.values) / faulty_s;

  fmt::print("\ngoodput under faults: {} inputs x ~50 us of computation, {} workers, timeOutError {} ms\n", n, workers,
             limit.count());
  fmt::print("  faults: i % 100 == 37 segfaults (store into a PROT_NONE page), i % 1000 == 501 hangs (busy loop)\n");
  fmt::print("  accounting: {} values + {} crashed + {} timed out + {} other = {} of {} inputs "
             "(want {} + {} + {} + 0); {} wrong  {}\n",
             faultyT.values, faultyT.crashed, faultyT.timedOut, faultyT.other,
             faultyT.values + faultyT.crashed + faultyT.timedOut + faultyT.other, n, n - wantCrashed - wantTimedOut,
             wantCrashed, wantTimedOut, faultyT.wrong + cleanT.wrong, pass ? "PASS" : "FAIL");
  if (!faultyT.firstProblem.empty()) fmt::print("  first problem: {}\n", faultyT.firstProblem);
  if (!cleanT.firstProblem.empty()) fmt::print("  first problem without faults: {}\n", cleanT.firstProblem);
  fmt::print("  {:<32} {:>10} {:>20} {:>14}\n", "", "wall", "goodput", "inputs run");
  fmt::print("  {:<32} {:>8.0f}ms {:>11.0f} inputs/s {:>14}\n", "2 threads, no faults", threads * 1e3,
             static_cast<double>(n) / threads, n);
  fmt::print("  {:<32} {:>8.0f}ms {:>11.0f} inputs/s {:>14}\n", "flock, no faults", clean_s * 1e3, goodClean, cleanRuns);
  fmt::print("  {:<32} {:>8.0f}ms {:>11.0f} inputs/s {:>14}\n", "flock, 1% segfault + 0.1% hang", faulty_s * 1e3,
             goodFaulty, faultyRuns);
  fmt::print("  with faults / without: {:.2f}x wall, {:.0f}% of the goodput; extra {:.0f} ms =\n", faulty_s / clean_s,
             100.0 * goodFaulty / goodClean, extra * 1e3);
  fmt::print("    {:>6.0f} ms  the hangs' own floor ({} x {} ms of one of {} workers)\n", floor_s * 1e3, wantTimedOut,
             limit.count(), workers);
  fmt::print("    {:>6.0f} ms  {} inputs run again (computed, but their results were lost with a crashed or killed worker)\n",
             rerun_s * 1e3, rerun);
  fmt::print("    {:>6.0f} ms  the rest: {:.2f} ms per fault ({} crashes + {} hangs: detection, kill, fork, requeue)\n",
             (extra - floor_s - rerun_s) * 1e3, perFaultMs, wantCrashed, wantTimedOut);
  fmt::print("  ({:.1f} us of worker time per input without faults; flock figures the best of {} alternated run{})\n",
             clean_s * workers * 1e6 / static_cast<double>(n), reps, reps == 1 ? "" : "s");
  if (!pythonFaults.empty()) fmt::print("  Python, the same work with input 37 segfaulting: {}\n", pythonFaults);
  return pass;
}

} // namespace

/// Peak resident memory (KiB) of a child process that runs `fn` alone: the parent's own history
/// does not count, and neither do flock's workers (they are the child's children).
template <class F>
long peakRssOfChild(F&& fn) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    fn();
    std::fflush(nullptr);
    ::_exit(0);
  }
  int status = 0;
  rusage u{};
  ::wait4(pid, &status, 0, &u);
  return u.ru_maxrss;
}

/// Anonymous memory of this process in transparent huge pages, in KiB.
long anonHugeKb() {
  long kb = 0;
  if (std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
    std::fclose(f);
  }
  return kb;
}

/// 1 GiB resident in the calling process, as a large parent holds it: `smallPages` in 4 KiB pages
/// as malloc gives it, `hugePages` in transparent huge pages (madvise). Meant for a fresh child
/// that exits without freeing it. `hugeGib` is how much of it the kernel put in huge pages.
enum class Ballast { none, smallPages, hugePages };
struct BallastMemory {
  std::vector<char> small;
  double hugeGib = 0;
  explicit BallastMemory(Ballast mode) {
    const std::size_t gib = std::size_t{1} << 30;
    if (mode == Ballast::smallPages) small.assign(gib, 1);
    if (mode == Ballast::hugePages) {
      void* huge = ::mmap(nullptr, gib + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (huge == MAP_FAILED) std::abort();
      auto* aligned = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(huge) + (2 << 20) - 1) & ~std::uintptr_t((2 << 20) - 1));
      ::madvise(aligned, gib, MADV_HUGEPAGE);
      std::memset(aligned, 1, gib);
      hugeGib = static_cast<double>(anonHugeKb()) / (1024.0 * 1024.0);
    }
  }
};

/// Runs `fn` (which returns a trivially copyable T) in a fresh child of this process and hands
/// its value back; a value-initialised T when the child failed (its error is on stderr).
template <class T, class F>
T inFreshChild(F&& fn) {
  static_assert(std::is_trivially_copyable_v<T>);
  T v{};
  int p[2];
  if (::pipe(p) != 0) return v;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    int code = 0;
    try {
      const T r = fn();
      if (!writeFully(p[1], &r, sizeof r)) code = 1;
    } catch (const std::exception& e) {
      fmt::print(stderr, "flock_bench: a measuring child failed: {}\n", e.what());
      code = 1;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  ::close(p[1]);
  T got{};
  std::size_t have = 0;
  for (ssize_t r; have < sizeof got && (r = ::read(p[0], reinterpret_cast<char*>(&got) + have, sizeof got - have)) > 0;)
    have += static_cast<std::size_t>(r);
  ::close(p[0]);
  ::waitpid(pid, nullptr, 0);
  return have == sizeof got ? got : v;
}

double percentile(std::vector<double> t, double q) {
  if (t.empty()) return 0;
  std::sort(t.begin(), t.end());
  return t[std::min(t.size() - 1, static_cast<std::size_t>(static_cast<double>(t.size()) * q))];
}

// ---- Persistent pools (BaseMultiProc), under each Context ----

/// Median round trip of one byte between this process and a child over a socket pair, measured
/// now: the floor under any call that wakes a worker and waits for its answer (on a shared VM it
/// moves by 10x from one minute to the next, and a warm pool's call moves with it).
double socketRoundTrip(int trips) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(sv[0]);
    char c;
    while (::read(sv[1], &c, 1) == 1)
      if (::write(sv[1], &c, 1) != 1) break;
    ::_exit(0);
  }
  ::close(sv[1]);
  std::vector<double> t;
  char c = 0;
  for (int i = 0; i < trips; ++i) {
    const auto t0 = Clock::now();
    if (::write(sv[0], &c, 1) != 1 || ::read(sv[0], &c, 1) != 1) break;
    t.push_back(seconds(Clock::now() - t0));
  }
  ::close(sv[0]); // the child reads end-of-file and leaves
  ::waitpid(pid, nullptr, 0);
  return percentile(t, 0.5);
}


constexpr std::array<flockmp::Context, 3> poolContexts = {flockmp::Context::fork, flockmp::Context::forkserver,
                                                          flockmp::Context::spawn};

int squareInt(int x) { return x * x; }

/// One pool per context, in poolContexts order. A plain array of pools: std::optional or
/// std::unique_ptr of a BaseMultiProc trips clang's -Wdelete-non-abstract-non-virtual-dtor.
struct PoolTrio {
  explicit PoolTrio(int size)
      : pools{flockmp::BaseMultiProc{{.poolSize = size, .context = poolContexts[0]}},
              flockmp::BaseMultiProc{{.poolSize = size, .context = poolContexts[1]}},
              flockmp::BaseMultiProc{{.poolSize = size, .context = poolContexts[2]}}} {}
  flockmp::BaseMultiProc pools[3];
};

/// What one fresh child measures of pools, from a parent small or holding 1 GiB (Ballast).
struct PoolCallFigures {
  double oneShotMedian = 0, oneShotP90 = 0; // FunctionAsync::apply of 2 tiny inputs (forks 2 workers per call)
  double roundTrip = 0;                     // socketRoundTrip, next to the warm calls
  struct PerContext {
    double warmMedian = 0, warmP90 = 0; // a started, warmed-up pool of 2: apply of 2 tiny inputs
    double startReturns = 0;            // constructor + start() of a pool of 1, until start() returns
    double startFirstCall = 0;          // constructor + start() + the first apply of 1 tiny input
    double warmOneInput = 0;            // the next apply of 1 tiny input on that pool
  };
  std::array<PerContext, 3> ctx{};
};

/// The best (lowest) of two rounds' figures, field by field: a shared machine's load only adds.
PoolCallFigures lowerOf(const PoolCallFigures& a, const PoolCallFigures& b) {
  auto low = [](double x, double y) { return x <= 0 ? y : y <= 0 ? x : std::min(x, y); }; // 0: not measured
  PoolCallFigures f;
  f.oneShotMedian = low(a.oneShotMedian, b.oneShotMedian);
  f.oneShotP90 = low(a.oneShotP90, b.oneShotP90);
  f.roundTrip = low(a.roundTrip, b.roundTrip);
  for (std::size_t c = 0; c < f.ctx.size(); ++c) {
    const auto &x = a.ctx[c], &y = b.ctx[c];
    f.ctx[c] = {low(x.warmMedian, y.warmMedian), low(x.warmP90, y.warmP90), low(x.startReturns, y.startReturns),
                low(x.startFirstCall, y.startFirstCall), low(x.warmOneInput, y.warmOneInput)};
  }
  return f;
}

struct PoolCounts {
  int oneShotCalls, warmCalls, starts; // warmCalls and starts: per context
};

/// Runs in a fresh child. The contexts are interleaved call by call (and start by start), so that
/// the load of a shared machine falls on all three alike.
PoolCallFigures measurePoolCalls(Ballast mode, PoolCounts counts) {
  PoolCallFigures f;
  const BallastMemory ballast(mode);
  const std::vector<int> two = {1, 2}, one = {3};
  {
    std::vector<double> t;
    for (int i = 0; i < counts.oneShotCalls; ++i) {
      const auto t0 = Clock::now();
      auto r = flockmp::FunctionAsync::apply(two, squareInt, {.poolSize = 2});
      t.push_back(seconds(Clock::now() - t0));
      if (r[1] != 4) std::abort();
    }
    f.oneShotMedian = percentile(t, 0.5);
    f.oneShotP90 = percentile(t, 0.9);
  }
  {
    PoolTrio trio(2);
    for (auto& pool : trio.pools) {
      pool.start();
      if (pool.apply(two, [](int x) { return x * x; }) != std::vector<int>{1, 4}) std::abort(); // warm-up
    }
    f.roundTrip = socketRoundTrip(counts.warmCalls);
    std::array<std::vector<double>, 3> t;
    for (int i = 0; i < counts.warmCalls; ++i) {
      for (std::size_t c = 0; c < poolContexts.size(); ++c) {
        const auto t0 = Clock::now();
        auto r = trio.pools[c].apply(two, [](int x) { return x * x; });
        t[c].push_back(seconds(Clock::now() - t0));
        if (r[1] != 4) std::abort();
      }
    }
    for (std::size_t c = 0; c < poolContexts.size(); ++c) {
      f.ctx[c].warmMedian = percentile(t[c], 0.5);
      f.ctx[c].warmP90 = percentile(t[c], 0.9);
    }
  }
  std::array<std::vector<double>, 3> returns, first, warm;
  for (int k = 0; k < counts.starts; ++k) {
    for (std::size_t c = 0; c < poolContexts.size(); ++c) {
      const auto t0 = Clock::now();
      flockmp::BaseMultiProc p{{.poolSize = 1, .context = poolContexts[c]}};
      p.start();
      const auto t1 = Clock::now();
      auto a = p.apply(one, [](int x) { return x * x; });
      const auto t2 = Clock::now();
      auto b = p.apply(one, [](int x) { return x * x; });
      const auto t3 = Clock::now();
      if (a[0] != 9 || b[0] != 9) std::abort();
      returns[c].push_back(seconds(t1 - t0));
      first[c].push_back(seconds(t2 - t0));
      warm[c].push_back(seconds(t3 - t2));
    } // the pool closes here, outside the timed span
  }
  for (std::size_t c = 0; c < poolContexts.size(); ++c) {
    f.ctx[c].startReturns = percentile(returns[c], 0.5);
    f.ctx[c].startFirstCall = percentile(first[c], 0.5);
    f.ctx[c].warmOneInput = percentile(warm[c], 0.5);
  }
  return f;
}

struct PoolRow {
  std::string workload;
  std::array<double, 3> byContext; // seconds, per poolContexts entry; negative: not measured
  double reference;                // seconds; negative: none
  std::string note;
};

void printPoolTable(const std::vector<PoolRow>& rows) {
  fmt::print("\npersistent pools (BaseMultiProc; workers started and warmed up before the timed calls unless the "
             "row says start)\n");
  fmt::print("{:<64} {:>11} {:>11} {:>11} {:>11}\n", "workload", "fork", "forkserver", "spawn", "reference");
  auto cell = [](double s) { return s < 0 ? fmt::format("{:>11}", "-") : fmt::format("{:>9.3f}ms", s * 1e3); };
  for (const auto& r : rows) {
    fmt::print("{:<64} {} {} {} {}\n", r.workload, cell(r.byContext[0]), cell(r.byContext[1]), cell(r.byContext[2]),
               cell(r.reference));
    // The note, one clause ("; "-separated) a line.
    for (std::size_t b = 0; b < r.note.size();) {
      const std::size_t e = std::min(r.note.find("; ", b), r.note.size());
      fmt::print("    {}\n", r.note.substr(b, e - b));
      b = e + 2;
    }
  }
}

/// "fork 0.05, forkserver 0.05, spawn 0.06": a figure per context, formatted by `fn(i)`.
template <class F>
std::string perContext(F&& fn) {
  return fmt::format("fork {}, forkserver {}, spawn {}", fn(std::size_t{0}), fn(std::size_t{1}), fn(std::size_t{2}));
}

/// The rows of persistent pools. Call and start figures come from fresh children of this process,
/// a small one and one holding 1 GiB, alternated for a few rounds (each figure the best round's
/// median); the throughput row runs here.
std::vector<PoolRow> poolSection(bool quick) {
  std::vector<PoolRow> rows;
  const int rounds = quick ? 1 : 3;
  const PoolCounts smallCounts{quick ? 20 : 100, quick ? 200 : 1000, quick ? 5 : 20};
  const PoolCounts bigCounts{quick ? 0 : 5, smallCounts.warmCalls, quick ? 0 : 5};
  PoolCallFigures small, big;
  for (int round = 0; round < rounds; ++round) {
    small = lowerOf(small, inFreshChild<PoolCallFigures>([&] { return measurePoolCalls(Ballast::none, smallCounts); }));
    if (!quick)
      big = lowerOf(big, inFreshChild<PoolCallFigures>([&] { return measurePoolCalls(Ballast::smallPages, bigCounts); }));
  }
  const std::string ofRounds = rounds == 1 ? "" : fmt::format(", best of {}", rounds);

  // (a) The call overhead of a warm pool against a one-shot call, which forks its workers.
  {
    const double trip = small.roundTrip;
    PoolRow r{fmt::format("2 x tiny, warm pool of 2 (median of {}{})", smallCounts.warmCalls, ofRounds), {},
              small.oneShotMedian, ""};
    for (std::size_t c = 0; c < 3; ++c) r.byContext[c] = small.ctx[c].warmMedian;
    r.note = fmt::format("reference: one-shot FunctionAsync::apply, same 2 inputs (median of {}{}, p90 {:.3f} ms); "
                         "pool / one-shot: {}; pool p90: {}; target <= 0.100 ms; the floor of a call, one socket round trip "
                         "between two processes (median, same child): {:.1f} us",
                         smallCounts.oneShotCalls, ofRounds, small.oneShotP90 * 1e3,
                         perContext([&](std::size_t c) { return fmt::format("{:.3f}", small.ctx[c].warmMedian / small.oneShotMedian); }),
                         perContext([&](std::size_t c) { return fmt::format("{:.3f} ms", small.ctx[c].warmP90 * 1e3); }),
                         trip * 1e6);
    rows.push_back(r);
  }

  // (b) Throughput of a warm pool: 1,000,000 x x*x (int64), inputs and results through the
  // pool's sockets, against two threads over the same data in this process.
  {
    const std::size_t n = 1'000'000;
    const int reps = quick ? 3 : 10;
    std::vector<std::int64_t> xs(n);
    std::iota(xs.begin(), xs.end(), std::int64_t{0});
    const auto* in = xs.data();
    auto check = [&](const std::vector<std::int64_t>& out) {
      if (out.size() != n || out[n - 1] != in[n - 1] * in[n - 1] || out[n / 2] != in[n / 2] * in[n / 2]) std::abort();
    };
    PoolTrio trio(2);
    for (auto& pool : trio.pools) {
      pool.start();
      check(pool.apply(xs, [](std::int64_t x) { return x * x; })); // warm-up
    }
    // The methods alternate rep by rep (best of each), so that a shared machine's load falls on all.
    double threads = 1e300, oneShot = 1e300;
    PoolRow r{fmt::format("1,000,000 x  x*x (int64), warm pool of 2 (best of {})", reps), {1e300, 1e300, 1e300}, 0, ""};
    double inputsOnly = 1e300; // the fork pool with a void callable: only the inputs travel
    for (int rep = 0; rep < reps; ++rep) {
      threads = std::min(threads, bestOf(1, [&] {
        check(threadMap<std::int64_t>(n, 2, [in](std::size_t i) { return in[i] * in[i]; }));
      }));
      oneShot = std::min(oneShot, bestOf(1, [&] {
        check(flockmp::FunctionAsync::apply(xs, [](std::int64_t x) { return x * x; }, {.poolSize = 2}));
      }));
      for (std::size_t c = 0; c < poolContexts.size(); ++c)
        r.byContext[c] = std::min(r.byContext[c], bestOf(1, [&] {
          check(trio.pools[c].apply(xs, [](std::int64_t x) { return x * x; }));
        }));
      inputsOnly = std::min(inputsOnly, bestOf(1, [&] { trio.pools[0].apply(xs, [](std::int64_t) {}); }));
    }
    r.reference = threads;
    r.note = fmt::format("reference: 2 std::threads over the same data; pool / threads: {}; one-shot apply {:.2f} ms "
                         "(pool / one-shot: {}); the same call on the fork pool with a void callable (8 MB of inputs "
                         "sent, no results back): {:.2f} ms; target pool / threads <= 5",
                         perContext([&](std::size_t c) { return fmt::format("{:.2f}", r.byContext[c] / threads); }),
                         oneShot * 1e3,
                         perContext([&](std::size_t c) { return fmt::format("{:.2f}", r.byContext[c] / oneShot); }),
                         inputsOnly * 1e3);
    rows.push_back(r);
  }

  // (c) The same warm call from a parent with 1 GiB resident (4 KiB pages): no fork happens
  // in a warm call, so the target is the small parent's figure.
  if (!quick) {
    PoolRow r{fmt::format("2 x tiny, warm pool, 1 GiB parent (median of {}{})", bigCounts.warmCalls, ofRounds),
              {}, big.oneShotMedian, ""};
    for (std::size_t c = 0; c < 3; ++c) r.byContext[c] = big.ctx[c].warmMedian;
    r.note = fmt::format("reference: one-shot apply from the same 1 GiB parent (median of {}{}); 1 GiB / small parent: {}; "
                         "target 1.00; p90: {}; socket round trip {:.1f} us",
                         bigCounts.oneShotCalls, ofRounds,
                         perContext([&](std::size_t c) { return fmt::format("{:.2f}", big.ctx[c].warmMedian / small.ctx[c].warmMedian); }),
                         perContext([&](std::size_t c) { return fmt::format("{:.3f} ms", big.ctx[c].warmP90 * 1e3); }),
                         big.roundTrip * 1e6);
    rows.push_back(r);
  }

  // (d) Starting a worker: a fresh pool of 1, constructed, started, and its first call of one
  // tiny input answered; minus the next (warm) call of one input on it, that is the start.
  auto startRow = [&](const PoolCallFigures& f, const PoolCounts& counts, const char* parent) {
    PoolRow r{fmt::format("worker start, {} parent (median of {} pools{})", parent, counts.starts, ofRounds), {}, -1, ""};
    for (std::size_t c = 0; c < 3; ++c) r.byContext[c] = f.ctx[c].startFirstCall - f.ctx[c].warmOneInput;
    r.note = fmt::format("= (pool of 1 constructed + start() + first 1-input apply) - (a warm 1-input apply): "
                         "first {}; warm {}; start() alone returns after {}",
                         perContext([&](std::size_t c) { return fmt::format("{:.3f} ms", f.ctx[c].startFirstCall * 1e3); }),
                         perContext([&](std::size_t c) { return fmt::format("{:.3f} ms", f.ctx[c].warmOneInput * 1e3); }),
                         perContext([&](std::size_t c) { return fmt::format("{:.3f} ms", f.ctx[c].startReturns * 1e3); }));
    return r;
  };
  PoolRow s = startRow(small, smallCounts, "small");
  s.note += "; targets: forkserver <= 1 ms, spawn <= 10 ms";
  rows.push_back(s);
  if (!quick) rows.push_back(startRow(big, bigCounts, "1 GiB"));
  return rows;
}

/// Streaming and map-reduce rows (issue "Streaming and asynchronous calls"), each measured in
/// this process on a warm pool of 2 (or in a fresh child, for a peak RSS).
void streamSection(bool quick) {
#if FLOCK_BENCH_STD_VIEWS
  fmt::print("\nstreaming and map-reduce (pool of 2 unless said; each time the best of alternated runs)\n");
  const auto sq = [](std::int64_t x) { return x * x; };
  // (a) An unbounded generator through imap, stopped after N items: the parent's peak RSS (a
  // fresh child that does only this) and the time per item.
  {
    const std::int64_t n = quick ? 10'000'000 : 100'000'000;
    double perItemNs = 0;
    const long kb = peakRssOfChild([&] {
      flockmp::BaseMultiProc pool{{.poolSize = 2}};
      pool.start();
      const auto t0 = Clock::now();
      std::int64_t got = 0, sum = 0;
      for (std::int64_t v : pool.imap(std::views::iota(std::int64_t{0}), [](std::int64_t x) { return x * x; })) {
        sum += v;
        if (++got == n) break;
      }
      perItemNs = seconds(Clock::now() - t0) * 1e9 / static_cast<double>(n);
      if (sum == 0) std::abort();
      fmt::print("{:<66} {:.1f} ns/item\n", fmt::format("{} items of std::views::iota(0) through imap, x*x (int64)", n),
                 perItemNs);
    });
    fmt::print("{:<66} parent peak RSS {:.1f} MB (a fresh child that only runs this stream; target <= 64 MB)\n", "",
               static_cast<double>(kb) / 1024.0);
  }
  // (b) 10,000,000 tiny inputs: imap against apply on the same warm pool.
  {
    const std::size_t n = 10'000'000;
    const int reps = quick ? 2 : 5;
    std::vector<std::int64_t> xs(n);
    std::iota(xs.begin(), xs.end(), std::int64_t{0});
    flockmp::BaseMultiProc pool{{.poolSize = 2}};
    pool.start();
    double apply = 1e300, imapDefault = 1e300, imapWide = 1e300;
    for (int rep = 0; rep < reps; ++rep) {
      apply = std::min(apply, bestOf(1, [&] {
        auto out = pool.apply(xs, sq);
        if (out[n - 1] != xs[n - 1] * xs[n - 1]) std::abort();
      }));
      imapDefault = std::min(imapDefault, bestOf(1, [&] {
        std::int64_t sum = 0;
        for (std::int64_t v : pool.imap(xs, sq)) sum += v;
        if (sum == 0) std::abort();
      }));
      imapWide = std::min(imapWide, bestOf(1, [&] {
        std::int64_t sum = 0;
        for (std::int64_t v : pool.imap(xs, sq, {.maxInFlight = std::size_t{1} << 20})) sum += v;
        if (sum == 0) std::abort();
      }));
    }
    fmt::print("{:<66} apply {:.1f} ms; imap {:.1f} ms (throughput {:.0f}% of apply), with maxInFlight = 2^20 "
               "{:.1f} ms ({:.0f}%); target >= 80%\n",
               "10,000,000 x x*x (int64), warm pool: imap against apply", apply * 1e3, imapDefault * 1e3,
               100.0 * apply / imapDefault, imapWide * 1e3, 100.0 * apply / imapWide);
  }
  // (c) mapReduce of 10,000,000 x x*x (sum) against two threads folding the same range.
  {
    const std::int64_t n = 10'000'000;
    const int reps = quick ? 2 : 5;
    std::int64_t serial = 0;
    for (std::int64_t x = 0; x < n; ++x) serial += x * x;
    const auto plus = [](std::int64_t a, std::int64_t b) { return a + b; };
    flockmp::BaseMultiProc pool{{.poolSize = 2}};
    pool.start();
    double threads = 1e300, oneShot = 1e300, onPool = 1e300;
    for (int rep = 0; rep < reps; ++rep) {
      threads = std::min(threads, bestOf(1, [&] {
        std::int64_t part[2] = {0, 0};
        std::thread t([&] {
          for (std::int64_t x = n / 2; x < n; ++x) part[1] += x * x;
        });
        for (std::int64_t x = 0; x < n / 2; ++x) part[0] += x * x;
        t.join();
        if (part[0] + part[1] != serial) std::abort();
      }));
      oneShot = std::min(oneShot, bestOf(1, [&] {
        if (flockmp::FunctionAsync::mapReduce(std::views::iota(std::int64_t{0}, n), sq, plus, std::int64_t{0},
                                              {.poolSize = 2}) != serial)
          std::abort();
      }));
      onPool = std::min(onPool, bestOf(1, [&] {
        if (pool.mapReduce(std::views::iota(std::int64_t{0}, n), sq, plus, std::int64_t{0}) != serial) std::abort();
      }));
    }
    fmt::print("{:<66} 2 threads {:.2f} ms; one-shot mapReduce {:.2f} ms ({:.1f}x threads); warm pool mapReduce "
               "{:.2f} ms ({:.1f}x threads; the inputs travel to the pool)\n",
               "mapReduce of 10,000,000 x x*x (int64 sum)", threads * 1e3, oneShot * 1e3, oneShot / threads,
               onPool * 1e3, onPool / threads);
  }
#else
  (void)quick;
  fmt::print("\nstreaming rows skipped: they use std::views, which Clang before 17 cannot use with libstdc++\n");
#endif
}

/// Options::workerOutput: what forwarding (and prefix) costs against inherit, the parent's stdout
/// sent to /dev/null meanwhile (inherit: the workers write there themselves). Rounds alternate the
/// modes so that a drift of the machine does not favour one; each mode keeps its best round.
void outputSection(bool quick) {
  const std::size_t n = quick ? 20'000 : 100'000;
  const int rounds = quick ? 2 : 5;
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  const int devNull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  std::fflush(stdout);
  const int savedOut = ::dup(1);
  const auto modes = {flockmp::WorkerOutput::inherit, flockmp::WorkerOutput::forward, flockmp::WorkerOutput::prefix};
  auto measure = [&](auto&& task) {
    std::array<double, 3> best{1e300, 1e300, 1e300};
    for (int round = 0; round < rounds; ++round) {
      std::size_t m = 0;
      for (auto mode : modes) {
        std::fflush(stdout); // the table so far goes to the real stdout
        ::dup2(devNull, 1);
        const double t = bestOf(1, [&] {
          (void)flockmp::FunctionAsync::apply(idx, task, {.poolSize = 2, .workerOutput = mode});
        });
        std::fflush(stdout);
        ::dup2(savedOut, 1);
        best[m] = std::min(best[m], t);
        ++m;
      }
    }
    return best;
  };
  auto print = [&](std::string_view what, const std::array<double, 3>& t) {
    fmt::print("{:<66} inherit {:.1f} ms; forward {:.1f} ms ({:.3f}x inherit); prefix {:.1f} ms ({:.3f}x inherit)\n",
               what, t[0] * 1e3, t[1] * 1e3, t[1] / t[0], t[2] * 1e3, t[2] / t[0]);
  };
  fmt::print("\nworker output (Options::workerOutput), 2 workers, stdout to /dev/null, best of {} alternating rounds:\n",
             rounds);
  print(fmt::format("{:>10} x  1 KB std::string result, nothing printed", n),
        measure([](int i) { return std::string(1024, static_cast<char>('a' + i % 26)); }));
  print(fmt::format("{:>10} x  1 KB std::string result, also printed as a line", n), measure([](int i) {
          std::string s(1024, static_cast<char>('a' + i % 26));
          std::printf("%s\n", s.c_str());
          return s;
        }));
  print(fmt::format("{:>10} x  one short line printed per input (int result)", n), measure([](int i) {
          std::printf("input %d done\n", i);
          return i;
        }));
  ::close(savedOut);
  ::close(devNull);
}

int main(int argc, char** argv) {
  // First: a process started by Context::spawn becomes a pool worker here; the parent starts the
  // forkserver (Context::forkserver) while it has no other thread.
  flockmp::init(argc, argv);
  bool quick = false, resultsOnly = false, faultsOnly = false, poolsOnly = false, streamsOnly = false,
       outputOnly = false;
  double pythonNsPerItem = 0, pythonTinyMs = 0;
  std::string pythonFaults;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--results-only") == 0) resultsOnly = true; // only the encoded-result rows
    else if (std::strcmp(argv[i], "--faults-only") == 0) faultsOnly = true;   // only goodput under faults
    else if (std::strcmp(argv[i], "--pools-only") == 0) poolsOnly = true;     // only the persistent-pool rows
    else if (std::strcmp(argv[i], "--streams-only") == 0) streamsOnly = true; // only the streaming rows
    else if (std::strcmp(argv[i], "--output-only") == 0) outputOnly = true;   // only the workerOutput rows
    else if (std::strcmp(argv[i], "--python-faults") == 0 && i + 1 < argc) pythonFaults = argv[++i];
    else if (std::strcmp(argv[i], "--python-ns-per-item") == 0 && i + 1 < argc) pythonNsPerItem = std::atof(argv[++i]);
    else if (std::strcmp(argv[i], "--python-tiny-ms") == 0 && i + 1 < argc) pythonTinyMs = std::atof(argv[++i]);
  }
  if (faultsOnly) return faultsSection(quick, pythonFaults) ? 0 : 1;
  if (poolsOnly) {
    printPoolTable(poolSection(quick));
    return 0;
  }
  if (streamsOnly) {
    streamSection(quick);
    return 0;
  }
  if (outputOnly) {
    outputSection(quick);
    return 0;
  }
  const unsigned workers = 2;
  const int reps = quick ? 1 : 3;
  std::vector<Row> rows;

  // Call overhead first, while this process is still small: apply over 2 tiny inputs from a
  // child of it. The same from a parent with 1 GiB resident, in 4 KiB pages and in transparent
  // huge pages (each in its own fresh child, so that the huge pages are not denied by memory the
  // first one fragmented), is measured last so that freeing that memory does not slow the rest.
  // measureCalls(mode) runs in a fresh child: {median, p90, GiB in huge pages}.
  auto measureCalls = [quick](Ballast mode) {
    return inFreshChild<std::array<double, 3>>([&] {
      const BallastMemory ballast(mode);
      std::vector<double> t;
      const int calls = mode == Ballast::none ? (quick ? 20 : 200) : 10;
      for (int i = 0; i < calls; ++i) {
        auto t0 = Clock::now();
        (void)flockmp::FunctionAsync::apply(std::vector<int>{1, 2}, [](int x) { return x + 1; }, {.poolSize = 2});
        t.push_back(seconds(Clock::now() - t0));
      }
      return std::array<double, 3>{percentile(t, 0.5), percentile(t, 0.9), ballast.hugeGib};
    });
  };
  const auto small = resultsOnly ? std::array<double, 3>{} : measureCalls(Ballast::none);
  // Persistent pools next, while this process is still small (their calls and starts are timed
  // in fresh children of it); printed after the main table.
  const std::vector<PoolRow> poolRows = resultsOnly ? std::vector<PoolRow>{} : poolSection(quick);

  // (a) Tiny tasks: x*x over int64. Results are raw (trivially copyable): the parent reads them
  // from the workers' sockets straight into the returned vector, with no codec.
  for (std::size_t n : {std::size_t{1'000'000}, std::size_t{10'000'000}}) {
    if (resultsOnly || (quick && n > 1'000'000)) continue;
    std::vector<std::int64_t> xs(n);
    std::iota(xs.begin(), xs.end(), std::int64_t{0});
    const auto* in = xs.data();
    Row r{fmt::format("{:>10} x  x*x (int64)", n), 0, 0, 0, ""};
    r.serial = bestOf(reps, [&] {
      std::vector<std::int64_t> out(n);
      for (std::size_t i = 0; i < n; ++i) out[i] = in[i] * in[i];
      if (out[n - 1] != in[n - 1] * in[n - 1]) std::abort();
    });
    r.threads = bestOf(reps, [&] {
      auto out = threadMap<std::int64_t>(n, workers, [in](std::size_t i) { return in[i] * in[i]; });
      if (out[n - 1] != in[n - 1] * in[n - 1]) std::abort();
    });
    r.flock = bestOf(reps, [&] {
      auto out = flockmp::FunctionAsync::apply(xs, [](std::int64_t x) { return x * x; }, {.poolSize = static_cast<int>(workers)});
      if (out[n - 1] != in[n - 1] * in[n - 1]) std::abort();
    });
    // flock asks for huge pages for its result buffer (where THP is opt-in); plain threads do not.
    const double threadsHuge = bestOf(reps, [&] {
      auto out = threadMap<std::int64_t>(n, workers, [in](std::size_t i) { return in[i] * in[i]; }, true);
      if (out[n - 1] != in[n - 1] * in[n - 1]) std::abort();
    });
    r.note = fmt::format("{:.2f} ns/item flock; threads with their output in huge pages {:.2f} ms (flock/that {:.2f})",
                         r.flock * 1e9 / static_cast<double>(n), threadsHuge * 1e3, r.flock / threadsHuge);
    if (pythonNsPerItem > 0)
      r.note += fmt::format("; Python Pool.map {:.0f} ns/item = {:.1f}x slower than flock", pythonNsPerItem,
                            pythonNsPerItem * 1e-9 * static_cast<double>(n) / r.flock);
    rows.push_back(r);
  }

  // (b) Coarse tasks: 64 x ~20 ms of pure computation.
  if (!resultsOnly) {
    const std::size_t tasks = quick ? 16 : 64;
    const std::uint64_t perTask = calibrateSpinPerMs() * 20;
    std::vector<std::uint64_t> seeds(tasks);
    std::iota(seeds.begin(), seeds.end(), 1);
    auto work = [perTask](std::uint64_t seed) { return spin(perTask, seed); };
    Row r{fmt::format("{:>10} x  20 ms compute", tasks), 0, 0, 0, ""};
    std::vector<std::uint64_t> expect(tasks);
    r.serial = bestOf(1, [&] {
      for (std::size_t i = 0; i < tasks; ++i) expect[i] = work(seeds[i]);
    });
    r.threads = bestOf(1, [&] {
      auto out = threadMap<std::uint64_t>(tasks, workers, [&](std::size_t i) { return work(seeds[i]); });
      if (out != expect) std::abort();
    });
    r.flock = bestOf(1, [&] {
      auto out = flockmp::FunctionAsync::apply(seeds, work, {.poolSize = static_cast<int>(workers)});
      if (out != expect) std::abort();
    });
    r.note = fmt::format("parallel efficiency flock {:.3f}, threads {:.3f}", r.serial / (workers * r.flock),
                         r.serial / (workers * r.threads));
    rows.push_back(r);
  }

  // (c) Non-trivial results: 1 KB strings, and 1 MB vectors of double, encoded by the codec.
  {
    const std::size_t n = quick ? 20'000 : 100'000;
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    auto make = [](int i) { return std::string(1024, static_cast<char>('a' + i % 26)); };
    Row r{fmt::format("{:>10} x  1 KB std::string result", n), 0, 0, 0, ""};
    r.serial = bestOf(reps, [&] {
      std::vector<std::string> out(n);
      for (std::size_t i = 0; i < n; ++i) out[i] = make(idx[i]);
    });
    r.threads = bestOf(reps, [&] { (void)threadMap<std::string>(n, workers, [&](std::size_t i) { return make(idx[i]); }); });
    r.flock = bestOf(reps, [&] { (void)flockmp::FunctionAsync::apply(idx, make, {.poolSize = static_cast<int>(workers)}); });
    const double bw = pipeBandwidth(1 << 16, std::size_t{1} << 30);
    const double flockBw = static_cast<double>(n) * 1024.0 / r.flock;
    r.note = throughputNote(flockBw, static_cast<double>(n) * 1024.0 / r.serial, bw);
    // The same call with Options::insights (each input timed in its worker, a timing frame per
    // batch), against the call without, alternated so that both see the same machine load.
    flockmp::Insights insights;
    double off = 1e300, on = 1e300;
    for (int k = 0; k < 2 * std::max(reps, 3); ++k) {
      const bool asked = k % 4 == 1 || k % 4 == 2; // off, on, on, off, ...: neither always goes first
      const double t = bestOf(1, [&] {
        (void)flockmp::FunctionAsync::apply(idx, make, {.poolSize = static_cast<int>(workers), .insights = asked ? &insights : nullptr});
      });
      (asked ? on : off) = std::min(asked ? on : off, t);
    }
    r.note += fmt::format("; with insights {:.3f}x the time", on / off);
    rows.push_back(r);
  }
  {
    const std::size_t n = quick ? 64 : 256;
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    auto make = [](int i) { return std::vector<double>(131072, static_cast<double>(i)); };
    Row r{fmt::format("{:>10} x  1 MB std::vector<double> result", n), 0, 0, 0, ""};
    r.serial = bestOf(reps, [&] {
      std::vector<std::vector<double>> out(n);
      for (std::size_t i = 0; i < n; ++i) out[i] = make(idx[i]);
    });
    r.threads = bestOf(reps, [&] { (void)threadMap<std::vector<double>>(n, workers, [&](std::size_t i) { return make(idx[i]); }); });
    r.flock = bestOf(reps, [&] { (void)flockmp::FunctionAsync::apply(idx, make, {.poolSize = static_cast<int>(workers)}); });
    const double bw = pipeBandwidth(1 << 20, std::size_t{1} << 30);
    const double flockBw = static_cast<double>(n) * (1 << 20) / r.flock;
    r.note = throughputNote(flockBw, static_cast<double>(n) * (1 << 20) / r.serial, bw);
    rows.push_back(r);
  }

  // (e) Memory: peak RSS of a process that makes 10,000,000 int64 results, by each method.
  if (!quick && !resultsOnly) {
    static constexpr std::size_t n = 10'000'000; // static: lambdas use it without a capture
    auto withInputs = [](auto body) {
      return [body] {
        std::vector<std::int64_t> xs(n);
        std::iota(xs.begin(), xs.end(), std::int64_t{0});
        body(xs);
      };
    };
    const long threadsKb = peakRssOfChild(withInputs([](const std::vector<std::int64_t>& xs) {
      auto out = threadMap<std::int64_t>(n, 2, [&](std::size_t i) { return xs[i] * xs[i]; });
      if (out.size() != n) std::abort();
    }));
    const long flockKb = peakRssOfChild(withInputs([](const std::vector<std::int64_t>& xs) {
      auto out = flockmp::FunctionAsync::apply(xs, [](std::int64_t x) { return x * x; }, {.poolSize = 2});
      if (out.size() != n) std::abort();
    }));
    fmt::print("peak RSS for 10,000,000 int64 (80 MB in + 80 MB out): threads {} MB, flock parent {} MB\n",
               threadsKb / 1024, flockKb / 1024);
  }

  if (!resultsOnly) {
    const auto big = quick ? std::array<double, 3>{} : measureCalls(Ballast::smallPages);
    const auto huge = quick ? std::array<double, 3>{} : measureCalls(Ballast::hugePages);
    Row r{"         2 x  tiny (call overhead, median)", 0, 0, small[0], ""};
    r.serial = bestOf(5, [] { volatile int x = 1 + 2; (void)x; });
    r.threads = bestOf(5, [&] { (void)threadMap<int>(2, workers, [](std::size_t i) { return static_cast<int>(i) + 1; }); });
    r.note = fmt::format("p90 {:.2f} ms", small[1] * 1e3);
    if (pythonTinyMs > 0) r.note += fmt::format("; Python Pool start+2 items {:.1f} ms", pythonTinyMs);
    if (!quick)
      r.note += fmt::format("; from a 1 GiB parent {:.1f} ms, with it in huge pages {:.2f} ms ({:.2f} GiB of it huge)",
                            big[0] * 1e3, huge[0] * 1e3, huge[2]);
    rows.insert(rows.begin(), r);
  }
  printTable(rows, workers);
  if (!poolRows.empty()) printPoolTable(poolRows);
  if (!resultsOnly) streamSection(quick);
  if (!resultsOnly) outputSection(quick);
  if (!resultsOnly && !faultsSection(quick, pythonFaults)) return 1;
  return 0;
}

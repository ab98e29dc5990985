// flock::mpi::Pool under a real mpirun. One binary, one scenario per run:
// `mpirun -np 3 test_mpi_pool <name>` (tests/mpi/CMakeLists.txt registers each). Every rank checks
// what it can see; a failed check prints its reason and calls MPI_Abort, so the job ends at once
// (CTest's TIMEOUT is the last guard against a hang).
#include <flock/mpi.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <ranges>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "support/processes.hpp"

namespace {

using flockmp::Failure;
using flockmp::FailureKind;
namespace mpi = flockmp::mpi;
using namespace std::chrono_literals;

int rank = 0;  // this process's rank, set before the pool (the forked workers inherit it)
int ranks = 1; // size of MPI_COMM_WORLD

#define EXPECT(cond, ...)                                                                                   \
  do {                                                                                                      \
    if (!(cond)) fail(__LINE__, #cond, fmt::format(__VA_ARGS__));                                            \
  } while (0)

[[noreturn]] void fail(int line, const char* cond, const std::string& why) {
  std::fprintf(stderr, "test_mpi_pool: rank %d: line %d: check failed: %s: %s\n", rank, line, cond, why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

/// f(0), f(1), ..., f(n - 1), made as they are read: a single-pass range without a size, as a
/// generator or a filter gives. Not std::views, which Clang before 17 cannot use with libstdc++ 12.
template <class F>
struct Generated {
  std::int64_t n;
  F f;
  struct End {};
  struct Iterator {
    using value_type = std::int64_t;
    using difference_type = std::ptrdiff_t;
    const Generated* range = nullptr;
    std::int64_t i = 0;
    std::int64_t operator*() const { return range->f(i); }
    Iterator& operator++() {
      ++i;
      return *this;
    }
    void operator++(int) { ++i; }
    bool operator==(End) const { return i >= range->n; }
  };
  Iterator begin() const { return Iterator{this, 0}; }
  End end() const { return {}; }
};
template <class F>
Generated(std::int64_t, F) -> Generated<F>;

std::vector<std::int64_t> iota64(std::size_t n) {
  std::vector<std::int64_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::int64_t>(i);
  return v;
}

// A failure that names a rank other than the root (which only schedules) and its host.
void expectPlace(const Failure& f) {
  EXPECT(f.rank > 0 && f.rank < ranks, "input {} names rank {}", f.index, f.rank);
  EXPECT(!f.host.empty(), "input {} names no host", f.index);
  EXPECT(contains(f.describe(), fmt::format("rank {} on {}", f.rank, f.host)), "describe(): {}", f.describe());
}

// What ran where: the result, the rank and the worker's pid.
struct Ran {
  std::int64_t value = 0;
  std::int32_t rank = -1;
  std::int64_t pid = 0;
};

Ran triple(std::int64_t x) { return {3 * x + 1, rank, ::getpid()}; }

// A function object the codec carries: its field travels with every batch.
struct AddK {
  std::int64_t k = 0;
  Ran operator()(const std::string& s) const { return {static_cast<std::int64_t>(s.size()) + k, rank, ::getpid()}; }
};

// Many streamed inputs come back in input order, from a sized range and from one of unknown
// length (read as ranks ask for work), computed on the other ranks only. Catches a batch stored
// at the wrong offset, a lost or duplicated batch, and a count miswritten for an unsized range.
void inOrder() {
  mpi::Pool pool({.poolSize = 2});
  if (!pool.isRoot()) return;
  const auto xs = iota64(200'000);
  const auto ys = pool.apply(xs, triple);
  EXPECT(ys.size() == xs.size(), "{} results", ys.size());
  std::set<int> where;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    EXPECT(ys[i].value == 3 * xs[i] + 1, "result {} is {}", i, ys[i].value);
    where.insert(ys[i].rank);
  }
  EXPECT(!where.contains(0), "the root computed");
  EXPECT(where.size() == static_cast<std::size_t>(ranks - 1), "{} ranks computed", where.size());

  // Unsized: the even numbers below 2n, made as they are read (no size, read as batches go out).
  const std::size_t n = 50'001;
  const Generated evens{static_cast<std::int64_t>(n), [](std::int64_t i) { return 2 * i; }};
  static_assert(std::ranges::input_range<decltype(evens)> && !std::ranges::sized_range<decltype(evens)>);
  const auto zs = pool.apply(evens, [](std::int64_t x) { return x / 2; }, {.batchSize = 333});
  EXPECT(zs.size() == n, "{} results from the unsized range", zs.size());
  for (std::size_t i = 0; i < n; ++i) EXPECT(zs[i] == static_cast<std::int64_t>(i), "result {} is {}", i, zs[i]);
}

// A segfault at input 17 and a throw at input 3: one failure each (naming the input, a rank other
// than the root and its host), every other result right.
void faults() {
  mpi::Pool pool({.poolSize = 2});
  if (!pool.isRoot()) return;
  const auto xs = iota64(300);
  const auto f = [](std::int64_t x) {
    if (x == 17) flockmp::test::segfault();
    if (x == 3) throw std::runtime_error("three");
    return x * x;
  };
  try {
    (void)pool.apply(xs, f);
    EXPECT(false, "apply did not throw");
  } catch (const flockmp::TaskError& e) {
    const auto& fs = e.failures();
    EXPECT(fs.size() == 2, "{} failures: {}", fs.size(), e.what());
    EXPECT(fs[0].index == 3 && fs[0].kind == FailureKind::exception && fs[0].message == "three", "{}", fs[0].describe());
    EXPECT(fs[1].index == 17 && fs[1].kind == FailureKind::crashed && fs[1].type == "SIGSEGV", "{}", fs[1].describe());
    for (const auto& x : fs) expectPlace(x);
    const auto& outs = e.outcomes<std::int64_t>();
    EXPECT(outs.size() == xs.size(), "{} outcomes", outs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (i == 3 || i == 17) EXPECT(!outs[i], "input {} has a value", i);
      else EXPECT(outs[i] && *outs[i] == xs[i] * xs[i], "outcome {} is wrong", i);
    }
  }
  // The pool goes on after a failed call, and tryApply gives the same as outcomes.
  const auto outs = pool.tryApply(xs, f);
  EXPECT(outs.size() == xs.size() && !outs[3] && !outs[17] && outs[18] && *outs[18] == 324, "tryApply outcomes");
}

// A hung input is killed at the call's timeOutError (a CallOptions, sent to the ranks) and
// reported as timed out; the others finish.
void timeout() {
  mpi::Pool pool({.poolSize = 2, .setupTimeout = 60s});
  if (!pool.isRoot()) return;
  const auto xs = iota64(30);
  const auto f = [](std::int64_t x) {
    if (x == 5) std::this_thread::sleep_for(120s);
    return x + 1;
  };
  const auto outs = pool.tryApply(xs, f, {.timeOutError = 3s});
  EXPECT(outs.size() == xs.size(), "{} outcomes", outs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (i == 5) {
      EXPECT(!outs[i] && outs[i].failure().kind == FailureKind::timedOut, "input 5 did not time out");
      expectPlace(outs[i].failure());
    } else {
      EXPECT(outs[i] && *outs[i] == xs[i] + 1, "outcome {} is wrong", i);
    }
  }
}

// Successive calls on one pool, with different callables (a function, a captureless lambda, a
// codable function object), all run on the same workers: per rank, the pids seen over every call
// are at most poolSize. Catches workers forked per call or per batch, and a call that runs the
// previous call's callable. The calls' insights add up, per rank, to what each rank was given.
void persist() {
  const std::size_t workers = 2;
  std::vector<std::size_t> given;
  mpi::Pool pool({.poolSize = workers}, {.inputsPerRank = &given});
  if (!pool.isRoot()) return;
  EXPECT(pool.workersPerRank().size() == static_cast<std::size_t>(ranks) && pool.workersPerRank()[0] == 0 &&
             pool.workersPerRank()[1] == workers,
         "workersPerRank is wrong");
  std::map<int, std::set<std::int64_t>> pids;
  const auto record = [&](const std::vector<Ran>& rs) {
    for (const auto& r : rs) pids[r.rank].insert(r.pid);
  };
  for (int round = 0; round < 3; ++round) {
    const auto xs = iota64(5000);
    flockmp::Insights in;
    const auto a = pool.apply(xs, triple, {.insights = &in});
    // Insights: one row per worker of each rank, whose inputs add up per rank to what the rank
    // was given, and to the call's inputs over all rows.
    EXPECT(in.inputs == xs.size() && in.notRun == 0, "insights: {} inputs, {} not run", in.inputs, in.notRun);
    std::vector<std::size_t> perRank(static_cast<std::size_t>(ranks), 0);
    for (const auto& w : in.workers) {
      EXPECT(w.rank > 0 && w.rank < ranks && !w.host.empty(), "a row names rank {} on '{}'", w.rank, w.host);
      perRank[static_cast<std::size_t>(w.rank)] += w.inputs;
    }
    EXPECT(in.workers.size() <= workers * static_cast<std::size_t>(ranks - 1), "{} rows", in.workers.size());
    for (std::size_t i = 0; i < xs.size(); ++i) EXPECT(a[i].value == 3 * xs[i] + 1, "round {} result {}", round, i);
    record(a);
    std::size_t sum = 0;
    for (auto g : given) sum += g;
    EXPECT(given.size() == static_cast<std::size_t>(ranks) && given[0] == 0 && sum == xs.size(),
           "inputsPerRank: root {} sum {}", given.empty() ? 0 : given[0], sum);
    EXPECT(perRank == given, "insights' inputs per rank differ from inputsPerRank");

    const std::vector<std::string> words = {"a", "bb", "ccc", "", "eeeee"};
    const auto b = pool.apply(words, AddK{100 * (round + 1)});
    for (std::size_t i = 0; i < words.size(); ++i)
      EXPECT(b[i].value == static_cast<std::int64_t>(words[i].size()) + 100 * (round + 1), "round {} word {}", round, i);
    record(b);

    const auto c = pool.apply(xs, [](std::int64_t x) { return Ran{x - 7, rank, ::getpid()}; });
    for (std::size_t i = 0; i < xs.size(); ++i) EXPECT(c[i].value == xs[i] - 7, "round {} lambda result {}", round, i);
    record(c);
  }
  EXPECT(!pids.contains(0), "the root computed");
  for (const auto& [r, set] : pids)
    EXPECT(set.size() <= workers, "rank {} ran on {} different workers over the calls (poolSize {})", r, set.size(),
           workers);
}

// An exception on the root, in the middle of a call whose batches run on the ranks (the input
// range throws when read), leaves the pool usable; another exception unwinds past the pool, whose
// destructor releases every rank: every rank reaches the end (mpirun's exit status 0). A call on
// another rank is an Error.
void release() {
  const auto slow = [](std::int64_t x) {
    std::this_thread::sleep_for(5ms);
    return x;
  };
  try {
    mpi::Pool pool({.poolSize = 1});
    if (!pool.isRoot()) {
      try {
        (void)pool.apply(iota64(3), slow);
        EXPECT(false, "apply on rank {} did not throw", rank);
      } catch (const flockmp::Error& e) {
        EXPECT(contains(e.what(), "only the root"), "{}", e.what());
      }
      return;
    }
    const Generated throwing{400, [](std::int64_t x) {
                               if (x == 300) throw std::out_of_range("input 300 is unreadable");
                               return x;
                             }};
    try {
      (void)pool.apply(throwing, slow, {.batchSize = 20});
      EXPECT(false, "the throwing range did not throw");
    } catch (const std::out_of_range&) {
    }
    const auto ys = pool.apply(iota64(100), slow);
    for (std::size_t i = 0; i < ys.size(); ++i) EXPECT(ys[i] == static_cast<std::int64_t>(i), "result {}", i);
    // Batches are running on the ranks when this throws.
    (void)pool.apply(throwing, slow, {.batchSize = 20});
    EXPECT(false, "the throwing range did not throw");
  } catch (const std::out_of_range&) {
    EXPECT(rank == 0, "rank {} caught the root's exception", rank);
  }
}

// The root's stopToken cancels the batches already running on the other ranks: every input is
// handed out at once (two batches of 20) and hangs, and the stop comes from the first progress
// report, after they went out. Without the cancel reaching the ranks the call would hang (CTest's
// timeout). The pool's workers are replaced and the pool goes on.
void stop() {
  mpi::Pool pool({.poolSize = 1});
  if (!pool.isRoot()) return;
  const auto xs = iota64(40);
  std::stop_source source;
  std::vector<flockmp::Progress> seen;
  flockmp::CallOptions call{.batchSize = 20};
  call.stopToken = source.get_token();
  call.onProgress = [&](const flockmp::Progress& p) {
    seen.push_back(p);
    source.request_stop();
  };
  const auto outs = pool.tryApply(
      xs,
      [](std::int64_t x) {
        std::this_thread::sleep_for(600s);
        return x;
      },
      call);
  EXPECT(outs.size() == xs.size(), "{} outcomes", outs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    EXPECT(!outs[i] && outs[i].failure().kind == FailureKind::cancelled, "input {} was not cancelled", i);
    expectPlace(outs[i].failure()); // cancelled on a rank, not before it was handed out
  }
  EXPECT(!seen.empty() && seen.back().done == xs.size() && seen.back().failed == xs.size(), "last progress");
  const auto ys = pool.apply(iota64(10), triple);
  EXPECT(ys.size() == 10 && ys[9].value == 28, "the pool does not work after a stop");
}

// A failed input with failFast cancels the batches running on the other ranks: input 0 fails at
// once, every other input hangs; the call ends (else CTest's timeout) with one exception and the
// rest cancelled.
void failFast() {
  mpi::Pool pool({.poolSize = 1});
  if (!pool.isRoot()) return;
  const auto xs = iota64(40);
  const auto outs = pool.tryApply(
      xs,
      [](std::int64_t x) {
        if (x == 0) throw std::runtime_error("first");
        std::this_thread::sleep_for(600s);
        return x;
      },
      {.batchSize = 1, .failFast = true});
  EXPECT(!outs[0] && outs[0].failure().kind == FailureKind::exception, "input 0: {}",
         outs[0] ? "a value" : outs[0].failure().describe());
  for (std::size_t i = 1; i < xs.size(); ++i)
    EXPECT(!outs[i] && outs[i].failure().kind == FailureKind::cancelled, "input {} was not cancelled", i);
}

} // namespace

int main(int argc, char** argv) {
  const std::string name = argc > 1 ? argv[1] : "";
  mpi::Environment env(argc, argv);
  rank = env.rank();
  ranks = env.size();
  const std::map<std::string, std::function<void()>> scenarios = {
      {"order", inOrder}, {"faults", faults}, {"timeout", timeout},     {"persist", persist},
      {"release", release}, {"stop", stop},   {"fail-fast", failFast},
  };
  const auto it = scenarios.find(name);
  if (it == scenarios.end()) {
    std::fprintf(stderr, "usage: mpirun -np 3 test_mpi_pool <scenario>\n");
    return 2;
  }
  if (ranks < 3) fail(__LINE__, "ranks >= 3", "run under mpirun -np 3 (or more)");
  it->second();
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) std::printf("test_mpi_pool %s: passed on %d ranks\n", name.c_str(), ranks);
  return 0;
}

// flock::mpi under a real mpirun. One binary, one scenario per run: `mpirun -np 3 test_mpi <name>`
// (tests/mpi/CMakeLists.txt registers each). Every rank checks what it can see; a failed check
// prints its reason and calls MPI_Abort, so the job ends at once instead of leaving the other
// ranks waiting in a collective (CTest's TIMEOUT is the last guard).
#include <flock/mpi.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "support/processes.hpp"
#include "support/test_util.hpp"

namespace {

using flockmp::Failure;
using flockmp::FailureKind;
namespace mpi = flockmp::mpi;
using namespace std::chrono_literals;

int rank = 0;  // this process's rank, set before any call (the forked workers inherit it)
int ranks = 1; // size of MPI_COMM_WORLD

#define EXPECT(cond, ...)                                                                                   \
  do {                                                                                                      \
    if (!(cond)) fail(__LINE__, #cond, fmt::format(__VA_ARGS__));                                            \
  } while (0)

[[noreturn]] void fail(int line, const char* cond, const std::string& why) {
  std::fprintf(stderr, "test_mpi: rank %d: line %d: check failed: %s: %s\n", rank, line, cond, why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

std::vector<std::int64_t> iota64(std::size_t n) {
  std::vector<std::int64_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::int64_t>(i);
  return v;
}

// A failure that names a real rank and its host (catches failures that lose where they ran).
void expectPlace(const Failure& f) {
  EXPECT(f.rank >= 0 && f.rank < ranks, "input {} names rank {}", f.index, f.rank);
  EXPECT(!f.host.empty(), "input {} names no host", f.index);
  EXPECT(contains(f.describe(), fmt::format("rank {} on {}", f.rank, f.host)), "describe(): {}", f.describe());
}

// 1,000,000 inputs come back in input order on the root, nothing on the others; with broadcast,
// everywhere. Catches a batch stored at the wrong offset, a lost or duplicated batch, and results
// that do not reach the other ranks when asked.
void inOrder() {
  const auto xs = iota64(1'000'000);
  const auto f = [](std::int64_t x) { return 3 * x + 1; };
  std::vector<std::size_t> given;
  const auto ys = mpi::apply(xs, f, {.poolSize = 2}, {.inputsPerRank = &given});
  if (rank == 0) {
    EXPECT(ys.size() == xs.size(), "{} results", ys.size());
    for (std::size_t i = 0; i < xs.size(); ++i) EXPECT(ys[i] == 3 * xs[i] + 1, "result {} is {}", i, ys[i]);
    std::size_t sum = 0;
    for (auto g : given) sum += g;
    EXPECT(given.size() == static_cast<std::size_t>(ranks) && sum == xs.size(), "inputs given per rank add up to {}", sum);
  } else {
    EXPECT(ys.empty(), "rank {} got {} results without broadcast", rank, ys.size());
  }

  const auto small = iota64(10'000);
  const auto all = mpi::apply(small, f, {.poolSize = 2}, {.broadcast = true});
  EXPECT(all.size() == small.size(), "{} results with broadcast", all.size());
  for (std::size_t i = 0; i < small.size(); ++i) EXPECT(all[i] == 3 * small[i] + 1, "broadcast result {} is {}", i, all[i]);

  // A void callable: nothing to return, nothing lost.
  mpi::apply(small, [](std::int64_t) {}, {.poolSize = 2});

  // No inputs: every rank leaves at once (a root that waited for results would hang here).
  EXPECT(mpi::apply(std::vector<std::int64_t>{}, f, {.poolSize = 2}, {.broadcast = true}).empty(), "results from nothing");

  // Another communicator: each rank alone on MPI_COMM_SELF is its own root and does all the work.
  const auto alone = mpi::apply(small, f, {.poolSize = 2}, {.comm = MPI_COMM_SELF});
  EXPECT(alone.size() == small.size() && alone.back() == 3 * small.back() + 1, "a call on MPI_COMM_SELF failed");

  // The guided sizes: large first, shrinking, never under the rank's workers nor over what is left.
  static_assert(mpi::detail::guidedBatch(1200, 3, 2) == 100);
  static_assert(mpi::detail::guidedBatch(10, 3, 2) == 2);
  static_assert(mpi::detail::guidedBatch(1, 3, 4) == 1);
  static_assert(mpi::detail::guidedBatch(1200, 3, 2, 7) == 7);
  static_assert(mpi::detail::guidedBatch(0, 3, 2) == 0);
}

// A segfault at input 17 and an abort at input 3, wherever they run: one failure each (crashed,
// with the signal, the rank and the host) and every other result right, on every rank.
void faults() {
  const auto xs = iota64(200);
  const auto f = [](std::int64_t x) {
    if (x == 17) flockmp::test::segfault();
    if (x == 3) std::abort();
    return x * x;
  };
  try {
    (void)mpi::apply(xs, f, {.poolSize = 2});
    EXPECT(false, "apply did not throw");
  } catch (const flockmp::TaskError& e) {
    const auto& fs = e.failures();
    EXPECT(fs.size() == 2, "{} failures: {}", fs.size(), e.what());
    EXPECT(fs[0].index == 3 && fs[0].kind == FailureKind::crashed && fs[0].type == "SIGABRT", "{}", fs[0].describe());
    EXPECT(fs[1].index == 17 && fs[1].kind == FailureKind::crashed && fs[1].type == "SIGSEGV", "{}", fs[1].describe());
    for (const auto& x : fs) expectPlace(x);
    EXPECT(contains(e.what(), "input 3: crashed SIGABRT"), "what(): {}", e.what());
    const auto& outs = e.outcomes<std::int64_t>();
    if (rank == 0) {
      EXPECT(outs.size() == xs.size(), "{} outcomes", outs.size());
      for (std::size_t i = 0; i < xs.size(); ++i) {
        if (i == 3 || i == 17) EXPECT(!outs[i], "input {} has a value", i);
        else EXPECT(outs[i] && *outs[i] == xs[i] * xs[i], "outcome {} is wrong", i);
      }
    } else {
      EXPECT(outs.empty(), "rank {} got {} outcomes without broadcast", rank, outs.size());
    }
  }
}

// retries reach every rank's workers: inputs that crash on their first try (a marker file in a
// directory of the rank says whether it was tried) succeed on the retry, wherever they ran. Catches
// options that do not reach the other ranks' engines (the call would throw).
void retries() {
  const flockmp::test::TempDir dir("flock-mpi-retries");
  const auto xs = iota64(40);
  const auto f = [&dir](std::int64_t x) {
    if (x % 10 == 3) {
      const auto marker = dir.path / std::to_string(x);
      if (!std::filesystem::exists(marker)) {
        std::ofstream(marker).put('x');
        flockmp::test::segfault();
      }
    }
    return x * 10;
  };
  const auto ys = mpi::apply(xs, f, {.poolSize = 2, .retries = 1}, {.broadcast = true});
  EXPECT(ys.size() == xs.size(), "{} results", ys.size());
  for (std::size_t i = 0; i < xs.size(); ++i) EXPECT(ys[i] == xs[i] * 10, "result {} is {}", i, ys[i]);
  std::size_t tried = 0; // the crashes this rank's workers had: all four, summed over the ranks
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++tried;
  std::uint64_t mine = tried;
  std::uint64_t all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  EXPECT(all == 4, "{} first tries crashed over all ranks, expected 4", all);
}

// An input that hangs is killed at timeOutError and reported as timed out; the others finish.
void timeout() {
  const auto xs = iota64(30);
  const auto f = [](std::int64_t x) {
    if (x == 5) std::this_thread::sleep_for(60s);
    return x + 1;
  };
  const auto t0 = std::chrono::steady_clock::now();
  const auto outs = mpi::tryApply(xs, f, {.poolSize = 2, .timeOutError = 3s, .setupTimeout = 60s}, {.broadcast = true});
  EXPECT(std::chrono::steady_clock::now() - t0 < 30s, "the hung input was not killed in time");
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

// The last rank runs each input 10x slower: guided batches on demand give it fewer inputs than
// each of the others (counted by the root as it hands them out; no timing is asserted). Catches a
// static split (every rank would get n / ranks).
void slowRank() {
  const auto xs = iota64(240);
  const int slow = ranks - 1;
  const auto f = [slow](std::int64_t x) {
    std::this_thread::sleep_for(rank == slow ? 50ms : 5ms);
    return x;
  };
  std::vector<std::size_t> given;
  const auto ys = mpi::apply(xs, f, {.poolSize = 1}, {.inputsPerRank = &given});
  if (rank == 0) {
    EXPECT(ys == xs, "results out of order");
    EXPECT(given.size() == static_cast<std::size_t>(ranks), "{} counts", given.size());
    const std::string counts = fmt::format("{}", fmt::join(given, ", "));
    std::printf("inputs per rank: %s (rank %d slow)\n", counts.c_str(), slow);
    for (int r = 0; r < slow; ++r)
      EXPECT(given[static_cast<std::size_t>(slow)] < given[static_cast<std::size_t>(r)], "per rank: {}", counts);
    EXPECT(given[static_cast<std::size_t>(slow)] < xs.size() / static_cast<std::size_t>(ranks), "per rank: {}", counts);
  }
}

// Ranks that disagree on the input count all get a clear error (nobody hangs), and the next call
// on the same communicator works (no message of the failed call is left behind).
void disagree() {
  const auto xs = iota64(rank == 1 ? 101 : 100);
  try {
    (void)mpi::apply(xs, [](std::int64_t x) { return x; }, {.poolSize = 1});
    EXPECT(false, "rank {} did not throw", rank);
  } catch (const flockmp::TaskError& e) {
    EXPECT(false, "a TaskError instead of the disagreement: {}", e.what());
  } catch (const flockmp::Error& e) {
    EXPECT(contains(e.what(), "disagree on the number of inputs") && contains(e.what(), "from 100 to 101"), "{}", e.what());
  }
  // A rank with a bad option: it gets its OptionError, the others an error naming it.
  try {
    (void)mpi::apply(iota64(10), [](std::int64_t x) { return x; }, {.poolSize = rank == 2 ? 0 : 1});
    EXPECT(false, "rank {} did not throw for rank 2's poolSize 0", rank);
  } catch (const flockmp::OptionError& e) {
    EXPECT(contains(e.what(), rank == 2 ? "poolSize must be at least 1" : "rank 2 was given invalid options"), "{}", e.what());
  }
  const auto ys = mpi::apply(iota64(100), [](std::int64_t x) { return -x; }, {.poolSize = 1}, {.broadcast = true});
  EXPECT(ys.size() == 100 && ys[99] == -99, "the call after the errors failed");
}

// tryApply: one outcome per input on the root (every rank with broadcast), exceptions named with
// their type, message, rank and host; never a throw for a failed input.
void outcomes() {
  const auto xs = iota64(50);
  const auto f = [](std::int64_t x) -> std::string {
    if (x % 7 == 0) throw std::invalid_argument(fmt::format("bad {}", x));
    return fmt::format("<{}>", x);
  };
  for (const bool broadcast : {false, true}) {
    const auto outs = mpi::tryApply(xs, f, {.poolSize = 2}, {.broadcast = broadcast});
    if (rank != 0 && !broadcast) {
      EXPECT(outs.empty(), "rank {} got {} outcomes", rank, outs.size());
      continue;
    }
    EXPECT(outs.size() == xs.size(), "{} outcomes", outs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (i % 7 == 0) {
        EXPECT(!outs[i], "input {} has a value", i);
        const auto& fl = outs[i].failure();
        EXPECT(fl.index == i && fl.kind == FailureKind::exception && fl.message == fmt::format("bad {}", i) &&
                   contains(fl.type, "invalid_argument"),
               "{}", fl.describe());
        expectPlace(fl);
      } else {
        EXPECT(outs[i] && *outs[i] == fmt::format("<{}>", i), "outcome {} is wrong", i);
      }
    }
  }
}

// Progress on the root covers the whole call and ends at n; a stop requested from it cancels what
// was not handed out yet, and the call still ends on every rank with every other result right.
void progressAndStop() {
  const auto xs = iota64(300);
  const auto f = [](std::int64_t x) {
    std::this_thread::sleep_for(20ms);
    return x;
  };
  std::vector<flockmp::Progress> seen;
  std::stop_source stop;
  flockmp::Options o{.poolSize = 1};
  o.stopToken = stop.get_token();
  o.onProgress = [&](const flockmp::Progress& p) {
    seen.push_back(p);
    if (p.done >= 10) stop.request_stop();
  };
  const auto outs = mpi::tryApply(xs, f, o, {.broadcast = true});
  EXPECT(outs.size() == xs.size(), "{} outcomes", outs.size());
  std::size_t cancelled = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (outs[i]) EXPECT(*outs[i] == xs[i], "outcome {} is wrong", i);
    else {
      EXPECT(outs[i].failure().kind == FailureKind::cancelled, "{}", outs[i].failure().describe());
      ++cancelled;
    }
  }
  EXPECT(cancelled > 0, "the stop cancelled nothing");
  if (rank == 0) {
    EXPECT(!seen.empty() && seen.back().done == xs.size() && seen.back().total == xs.size() &&
               seen.back().failed == cancelled,
           "last progress {}/{} ({} failed)", seen.empty() ? 0 : seen.back().done, xs.size(),
           seen.empty() ? 0 : seen.back().failed);
    for (std::size_t k = 1; k < seen.size(); ++k) EXPECT(seen[k].done >= seen[k - 1].done, "progress went back");
  } else {
    EXPECT(seen.empty(), "rank {} reported progress", rank);
  }
}

// The root's stopToken cancels the batches running on the other ranks: each of the three ranks
// runs one batch of 10 hanging inputs (one worker each); the root stops once every rank's worker
// has started (a marker file per rank: all ranks share this host's temp directory), so the stop
// finds a batch running on every rank. Without the cancel reaching the other ranks the call would
// hang (CTest's timeout).
void stopRunning() {
  // The root's directory; every rank writes its marker there (the root sends its name).
  std::optional<flockmp::test::TempDir> dir;
  std::vector<char> name(4096, '\0');
  if (rank == 0) {
    dir.emplace("flock-mpi-stop");
    const std::string path = dir->path.string();
    std::copy(path.begin(), path.end(), name.begin());
  }
  MPI_Bcast(name.data(), static_cast<int>(name.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
  const std::filesystem::path shared(name.data());
  const auto xs = iota64(30);
  const auto f = [shared](std::int64_t x) {
    std::ofstream(shared / std::to_string(rank)).put('x');
    std::this_thread::sleep_for(600s);
    return x;
  };
  std::stop_source stop;
  flockmp::Options o{.poolSize = 1, .batchSize = 10};
  o.stopToken = stop.get_token();
  o.onProgress = [&](const flockmp::Progress&) {
    std::size_t started = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(shared)) ++started;
    if (started == static_cast<std::size_t>(ranks)) stop.request_stop();
  };
  const auto outs = mpi::tryApply(xs, f, o, {.broadcast = true});
  EXPECT(outs.size() == xs.size(), "{} outcomes", outs.size());
  std::set<int> where;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    EXPECT(!outs[i] && outs[i].failure().kind == FailureKind::cancelled, "input {} was not cancelled", i);
    where.insert(outs[i].failure().rank);
  }
  EXPECT(where.size() == static_cast<std::size_t>(ranks), "cancelled on {} ranks, not on all {}", where.size(), ranks);
}

// Options::insights on the root covers every rank: a row per worker with its rank and host, whose
// inputs add up, per rank, to what the root gave that rank (ClusterOptions::inputsPerRank), and
// over all rows to n; failures by kind; the slowest inputs by their index in the whole call. The
// other ranks' Insights are left alone. Catches rows lost on the way to the root, indices left
// relative to a batch, and rows without a rank.
void insights() {
  const auto xs = iota64(500);
  const auto f = [](std::int64_t x) {
    if (x == 7) throw std::runtime_error("seven");
    if (x == 321) std::this_thread::sleep_for(1s); // the slowest input, wherever it runs
    return x;
  };
  flockmp::Insights in;
  std::vector<std::size_t> given;
  const auto outs = mpi::tryApply(xs, f, {.poolSize = 2, .insights = &in}, {.inputsPerRank = &given});
  if (rank != 0) {
    EXPECT(in.workers.empty() && in.inputs == 0, "rank {} has insights", rank);
    return;
  }
  EXPECT(outs.size() == xs.size() && !outs[7] && outs[8], "outcomes");
  EXPECT(in.inputs == xs.size() && in.notRun == 0, "inputs {} notRun {}", in.inputs, in.notRun);
  std::vector<std::size_t> perRank(static_cast<std::size_t>(ranks), 0);
  std::size_t sum = 0;
  for (const auto& w : in.workers) {
    EXPECT(w.rank >= 0 && w.rank < ranks && !w.host.empty(), "a worker row names rank {} on '{}'", w.rank, w.host);
    perRank[static_cast<std::size_t>(w.rank)] += w.inputs;
    sum += w.inputs;
  }
  EXPECT(sum == xs.size(), "the workers' inputs add up to {}, not {}", sum, xs.size());
  EXPECT(perRank == given, "per-rank inputs {} differ from what each rank was given {}", perRank, given);
  EXPECT(in.failuresOf(FailureKind::exception) == 1, "{} exceptions", in.failuresOf(FailureKind::exception));
  EXPECT(!in.slowest.empty() && in.slowest.front().index == 321, "slowest: #{}",
         in.slowest.empty() ? 0 : in.slowest.front().index);
  EXPECT(in.wall > 1s, "wall {} ns", in.wall.count());
  EXPECT(contains(in.toJson(), fmt::format("\"rank\":{},\"host\":", in.workers.front().rank)), "{}", in.toJson());
}

// A program that initializes MPI itself (plain MPI_Init, thread level single): apply works, and an
// Environment made afterwards neither initializes nor finalizes.
int ownInit(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  {
    mpi::Environment env;
    EXPECT(!env.ownsMpi(), "Environment claims an MPI it did not initialize");
    const auto ys = mpi::apply(iota64(1000), [](std::int64_t x) { return x * 2; }, {.poolSize = 2}, {.broadcast = true});
    EXPECT(ys.size() == 1000 && ys[999] == 1998, "apply under the program's own MPI_Init failed");
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  EXPECT(!finalized, "Environment finalized an MPI it did not initialize");
  if (rank == 0) std::printf("test_mpi own-init: passed on %d ranks\n", ranks);
  MPI_Finalize();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  const std::string name = argc > 1 ? argv[1] : "";
  if (name == "own-init") return ownInit(argc, argv);

  mpi::Environment env(argc, argv);
  EXPECT(env.ownsMpi(), "Environment did not initialize MPI");
  rank = env.rank();
  ranks = env.size();
  const std::map<std::string, std::function<void()>> scenarios = {
      {"order", inOrder},   {"faults", faults},     {"timeout", timeout},          {"slow-rank", slowRank},
      {"disagree", disagree}, {"outcomes", outcomes}, {"progress-stop", progressAndStop}, {"retries", retries},
      {"stop-running", stopRunning},   {"insights", insights},
  };
  const auto it = scenarios.find(name);
  if (it == scenarios.end()) {
    std::fprintf(stderr, "usage: mpirun -np 3 test_mpi <scenario>\n");
    return 2;
  }
  if (ranks < 3) fail(__LINE__, "ranks >= 3", "run under mpirun -np 3 (or more)");
  it->second();
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) std::printf("test_mpi %s: passed on %d ranks\n", name.c_str(), ranks);
  return 0;
}

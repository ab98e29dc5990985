// flock::mpi figures, run by scripts/bench under `mpirun -np 2` when MPI is installed:
//   - the round trip of one message between two ranks, waited for as flock waits (test + sleep,
//     so that a waiting rank leaves its core to the workers), and the cost of one batch through
//     mpi::apply with batchSize 1 (a round trip to the root plus a fork of one worker);
//   - one call of one input on a warm mpi::Pool against one mpi::apply call (which forks);
//   - 64 tasks of 20 ms of CPU on 2 ranks x 1 worker against 1 rank x 2 workers (both through
//     mpi::apply): on a 2-core machine the ratio of the two times, not the times, is the figure
//     (FunctionAsync::apply with 2 workers, no MPI, is printed as the same run's reference).
#include <flock/flock.hpp>
#include <flock/mpi.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
namespace fm = flockmp::mpi;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Busy work of about `ms` milliseconds of CPU (not a sleep: the point is to share 2 cores).
int spin(int ms) {
  const auto end = Clock::now() + std::chrono::milliseconds(ms);
  volatile std::uint64_t x = 0;
  while (Clock::now() < end)
    for (int i = 0; i < 1000; ++i) x = x + static_cast<std::uint64_t>(i);
  return ms;
}

void barrier() {
  MPI_Request r;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  fm::detail::waitGently(r);
}

// Median time of one round trip (8 bytes there, 16 back), each side waiting as flock does.
double pingPong(int rank, int rounds) {
  std::vector<double> times;
  std::uint64_t out = 0;
  std::uint64_t back[2] = {0, 0};
  for (int k = 0; k < rounds; ++k) {
    MPI_Request r;
    const auto t0 = Clock::now();
    if (rank == 1) {
      MPI_Send(&out, 1, MPI_UINT64_T, 0, 7, MPI_COMM_WORLD);
      MPI_Irecv(back, 2, MPI_UINT64_T, 0, 8, MPI_COMM_WORLD, &r);
      fm::detail::waitGently(r);
      times.push_back(seconds(Clock::now() - t0));
    } else {
      MPI_Irecv(&out, 1, MPI_UINT64_T, 1, 7, MPI_COMM_WORLD, &r);
      fm::detail::waitGently(r);
      MPI_Send(back, 2, MPI_UINT64_T, 1, 8, MPI_COMM_WORLD);
    }
  }
  double median = 0;
  if (rank == 1) {
    std::sort(times.begin(), times.end());
    median = times[times.size() / 2];
  }
  MPI_Bcast(&median, 1, MPI_DOUBLE, 1, MPI_COMM_WORLD);
  return median;
}

} // namespace

int main(int argc, char** argv) {
  fm::Environment env(argc, argv);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rank = env.rank();
  if (env.size() != 2) {
    if (rank == 0) fmt::print(stderr, "mpi_bench: run it with mpirun -np 2\n");
    return 2;
  }
  const int rounds = quick ? 200 : 2000;
  const double rtt = pingPong(rank, rounds);

  // Every input its own batch: the root hands out one index at a time to both ranks.
  const int batches = quick ? 200 : 1000;
  std::vector<int> xs(static_cast<std::size_t>(batches), 1);
  barrier();
  auto t0 = Clock::now();
  (void)fm::apply(xs, [](int x) { return x; }, {.poolSize = 1, .batchSize = 1});
  const double perBatch = seconds(Clock::now() - t0) / batches;

  // 64 x 20 ms: 2 ranks x 1 worker (through the network path) and 1 rank x 2 workers (rank 0
  // alone, on MPI_COMM_SELF, while rank 1 waits without spinning). Best of 3 each.
  std::vector<int> tasks(64, 20);
  const auto task = [](int ms) { return spin(ms); };
  double twoRanks = 1e9;
  double oneRank = 1e9;
  double local = 1e9; // FunctionAsync::apply, no MPI at all: the same machine's local reference
  for (int k = 0; k < 3; ++k) {
    barrier();
    t0 = Clock::now();
    (void)fm::apply(tasks, task, {.poolSize = 1});
    twoRanks = std::min(twoRanks, seconds(Clock::now() - t0));
    barrier();
    if (rank == 0) {
      t0 = Clock::now();
      (void)fm::apply(tasks, task, {.poolSize = 2}, {.comm = MPI_COMM_SELF});
      oneRank = std::min(oneRank, seconds(Clock::now() - t0));
      t0 = Clock::now();
      (void)flockmp::FunctionAsync::apply(tasks, task, {.poolSize = 2});
      local = std::min(local, seconds(Clock::now() - t0));
    }
    barrier();
  }
  // One call of one input, again and again: mpi::apply (collective; each rank forks its worker
  // for the call) against a warm mpi::Pool (rank 1 keeps its worker; the root only schedules).
  const int calls = quick ? 50 : 300;
  const std::vector<int> one{1};
  const auto identity = [](int x) { return x; };
  barrier();
  t0 = Clock::now();
  for (int k = 0; k < calls; ++k) (void)fm::apply(one, identity, {.poolSize = 1});
  const double perApplyCall = seconds(Clock::now() - t0) / calls;
  double perPoolCall = 0;
  {
    fm::Pool pool({.poolSize = 1}); // rank 1 serves here until the root closes the pool
    if (pool.isRoot()) {
      (void)pool.apply(one, identity); // warm: the first call pays nothing the others do not
      t0 = Clock::now();
      for (int k = 0; k < calls; ++k) (void)pool.apply(one, identity);
      perPoolCall = seconds(Clock::now() - t0) / calls;
    }
  }

  if (rank == 0) {
    const double ideal = 64 * 0.020 / 2;
    fmt::print("flock::mpi (Open MPI, 2 ranks on this machine)\n");
    fmt::print("  round trip of one message between ranks (waiting as flock waits): {:8.1f} us\n", rtt * 1e6);
    fmt::print("  one batch through mpi::apply, batchSize 1 (round trip + fork of 1 worker): {:8.1f} us\n", perBatch * 1e6);
    fmt::print("  64 x 20 ms, 2 ranks x 1 worker: {:.3f} s (efficiency {:.3f})\n", twoRanks, ideal / twoRanks);
    fmt::print("  64 x 20 ms, 1 rank x 2 workers: {:.3f} s (efficiency {:.3f})\n", oneRank, ideal / oneRank);
    fmt::print("  64 x 20 ms, FunctionAsync::apply with 2 workers (no MPI): {:.3f} s (efficiency {:.3f})\n", local,
               ideal / local);
    fmt::print("  ratio (1 rank x 2 workers) / (2 ranks x 1 worker): {:.3f}\n", oneRank / twoRanks);
    fmt::print("  one call of 1 input, mpi::apply (forks per call): {:8.1f} us\n", perApplyCall * 1e6);
    fmt::print("  one call of 1 input, warm mpi::Pool (workers persist): {:8.1f} us\n", perPoolCall * 1e6);
  }
}

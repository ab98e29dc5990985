// The same apply across the ranks of an MPI job. Every rank runs this program with the same
// inputs; rank 0 hands out batches of input indices and computes too, each rank runs its batches
// on its own forked workers, and the results come back to rank 0 in input order. A crash costs one
// input, not the job.
//
//   mpirun -np 2 build/examples/mpi_apply
//   mpirun --hostfile hosts -np 8 build/examples/mpi_apply      # across machines
#include <flock/mpi.hpp>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

// One simulation: a deterministic random walk (a linear congruential generator seeded by the job).
struct Job {
  std::uint32_t seed;
  int steps;
};

double simulate(const Job& job) {
  std::uint32_t state = job.seed * 2654435761u + 1;
  double position = 0;
  for (int i = 0; i < job.steps; ++i) {
    state = state * 1664525u + 1013904223u;
    position += (state >> 31) ? 1.0 : -1.0;
  }
  return position;
}

int main(int argc, char** argv) {
  // Initializes MPI (and finalizes it at the end of main); a program that calls MPI_Init itself
  // needs none.
  flockmp::mpi::Environment env(argc, argv);

  std::vector<Job> jobs;
  for (std::uint32_t seed = 0; seed < 40; ++seed) jobs.push_back({seed, 200'000});

  std::vector<std::size_t> perRank;
  const auto outcomes = flockmp::mpi::tryApply(
      jobs,
      [](const Job& job) {
        if (job.seed == 13) std::abort(); // a fatal bug in one job: its worker dies, the rank lives on
        return simulate(job);
      },
      {.poolSize = 2}, {.inputsPerRank = &perRank});

  if (env.rank() == 0) {
    std::size_t ok = 0;
    for (const auto& o : outcomes) {
      if (o) ++ok;
      else fmt::print("failure: {}\n", o.failure().describe());
    }
    fmt::print("ranks: {}, inputs per rank: {}\n", env.size(), perRank);
    fmt::print("jobs with a value: {} of {}\n", ok, outcomes.size());
    fmt::print("job 0: {}, job 39: {}, same as computed here: {}\n", *outcomes[0], *outcomes[39],
               *outcomes[0] == simulate(jobs[0]) && *outcomes[39] == simulate(jobs[39]));
  } else {
    fmt::print("rank {}: done, {} outcomes here (the root has them)\n", env.rank(), outcomes.size());
  }
}

// Includes <flock/mpi.hpp> in a target that links flock::flock but not flock::mpi: one #error
// naming the target, instead of a missing <mpi.h> or undefined references to MPI_*.
#include <flock/mpi.hpp>

int main() { return 0; }

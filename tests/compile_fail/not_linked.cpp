// Includes <flock/sqlite.hpp> in a target that links flock::flock but not flock::sqlite: one
// #error naming the target, instead of a hundred undefined references at link time.
#include <flock/sqlite.hpp>

int main() { return 0; }

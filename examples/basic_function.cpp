// A free function applied to every input in parallel worker processes; results come back in
// input order. The seed's "Basic Function" example.
#include <flock/flock.hpp>

#include <fmt/ranges.h>

#include <vector>

int myFunction(int value) { return value * value; }

int main() {
  const std::vector<int> iterator = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const std::vector<int> res = flockmp::FunctionAsync::apply(iterator, myFunction);
  fmt::print("{}\n", res); // [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]
}

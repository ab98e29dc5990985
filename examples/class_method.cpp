// A static member function (Python's class method) is an ordinary function pointer.
#include <flock/flock.hpp>

#include <fmt/ranges.h>

#include <vector>

struct Geometry {
  static long cube(long side) { return side * side * side; }
};

int main() {
  const std::vector<long> sides = {1, 2, 3, 4, 5};
  auto volumes = flockmp::FunctionAsync::apply(sides, &Geometry::cube);
  fmt::print("{}\n", volumes); // [1, 8, 27, 64, 125]
}

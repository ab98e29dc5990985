// Member functions of an object. Each input is a pair; since `compute` takes two arguments, the
// pair is unpacked into them.
#include <flock/flock.hpp>

#include <fmt/ranges.h>

#include <functional>
#include <utility>
#include <vector>

struct Test {
  // The seed documents the result [11, 44, 99, 176] but computes (foo + bar) ** foo, which gives
  // [11, 484, 35937, 4484544]. The documented output is (foo + bar) * foo, so that is what we
  // compute here.
  long compute(long foo, long bar) const { return (foo + bar) * foo; }
};

int main() {
  const Test inst;
  const std::vector<std::pair<long, long>> iterator = {{1, 10}, {2, 20}, {3, 30}, {4, 40}};

  auto res = flockmp::FunctionAsync::apply(iterator, std::bind_front(&Test::compute, inst));
  fmt::print("bind_front: {}\n", res); // [11, 44, 99, 176]

  // The same, with the member function and the object passed separately.
  auto res2 = flockmp::FunctionAsync::apply(iterator, &Test::compute, inst);
  fmt::print("method, object: {}\n", res2); // [11, 44, 99, 176]
}

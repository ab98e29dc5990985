// The program every consumer project builds: squares 1..10 with flock and checks the result. It
// prints the squares (the consumer tests check that line) and exits non-zero when they are wrong.
#include <flock/flock.hpp>

#if defined(FLOCK_CONSUMER_EXPECTS_ENGINE) && !defined(FLOCK_COMPILED_ENGINE)
#error "linking flock::engine did not define FLOCK_COMPILED_ENGINE: this program compiles the engine again"
#endif

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <numeric>
#include <vector>

int main() {
  std::vector<int> xs(10);
  std::iota(xs.begin(), xs.end(), 1); // 1, 2, ..., 10
  const std::vector<int> squares = flockmp::FunctionAsync::apply(xs, [](int x) { return x * x; });
  fmt::print("flock consumer: {}\n", squares);

  const std::vector<int> expected = {1, 4, 9, 16, 25, 36, 49, 64, 81, 100};
  if (squares != expected) {
    fmt::print(stderr, "flock consumer: wrong result, expected {}\n", expected);
    return 1;
  }
  return 0;
}

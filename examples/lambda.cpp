// Lambdas, with and without captures. With the default `fork` context the workers are copies of
// this process, so a lambda may capture anything, by value or by reference.
#include <flock/flock.hpp>

#include <fmt/ranges.h>

#include <cstddef>
#include <string>
#include <vector>

int main() {
  const std::vector<int> iterator = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

  auto squares = flockmp::FunctionAsync::apply(iterator, [](int x) { return x * x; });
  fmt::print("squares: {}\n", squares); // [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]

  int offset = 100;
  auto shifted = flockmp::FunctionAsync::apply(iterator, [offset](int x) { return x + offset; });
  fmt::print("shifted: {}\n", shifted); // [101, 102, ..., 110]

  const std::vector<std::string> words = {"fork", "pipe", "poll", "waitpid"};
  const std::vector<std::size_t> indices = {3, 0, 2};
  auto picked =
      flockmp::FunctionAsync::apply(indices, [&words](std::size_t i) { return words[i]; });
  fmt::print("picked: {}\n", picked); // ["waitpid", "fork", "poll"]
}

// ListAsync: the list is cut into chunks, each chunk runs in a worker. BaseMultiProc: the pool
// underneath every API class, for when you want to keep the options in one object.
#include <flock/flock.hpp>

#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>
#include <span>
#include <vector>

int main() {
  std::vector<int> list(2000);
  std::iota(list.begin(), list.end(), 0); // 0, 1, ..., 1999

  auto res = flockmp::ListAsync::apply(list, [](int x) { return x * x / 10.0; }, {.poolSize = 4});
  fmt::print("first: {}\n", std::span(res).first(5)); // [0, 0.1, 0.4, 0.9, 1.6]
  fmt::print("count: {}, sum: {:.1f}\n", res.size(), std::accumulate(res.begin(), res.end(), 0.0));

  std::vector<double> expected(list.size());
  std::transform(list.begin(), list.end(), expected.begin(), [](int x) { return x * x / 10.0; });
  fmt::print("same as sequential: {}\n", res == expected);

  flockmp::BaseMultiProc bp{{.poolSize = 5}};
  std::vector<int> iterator(10);
  std::iota(iterator.begin(), iterator.end(), 0); // 0, 1, ..., 9
  auto squares = bp.executeAsync([](int x) { return x * x; }, iterator);
  fmt::print("executeAsync: {}\n", squares); // [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
}

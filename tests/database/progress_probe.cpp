// Runs one call with the default progress options, for test_progress to watch under a
// pseudo-terminal (or with stderr redirected). Usage: flock_progress_probe MODE
//   function: FunctionAsync, 20 inputs of 40 ms on 2 workers
//   lines:    the same with progressLines = true
//   off:      the same with checkProgress = false
//   quick:    a call that ends before the bar would show
//   failing:  the same as function, with 3 inputs that throw
//   database: DatabaseAsync over SQLite (when built with it), 20 inputs
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <flock/function_async.hpp>
#if defined(FLOCK_PROBE_SQLITE)
#include <flock/sqlite.hpp>
#endif

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "function";
  std::vector<int> xs(20);
  for (int i = 0; i < 20; ++i) xs[static_cast<std::size_t>(i)] = i;
  auto slow = [](int x) {
    std::this_thread::sleep_for(40ms);
    return x * x;
  };
  int sum = 0;
  if (mode == "function" || mode == "lines" || mode == "off") {
    flockmp::Options o{.poolSize = 2};
    o.progressLines = mode == "lines";
    o.checkProgress = mode != "off";
    for (int v : flockmp::FunctionAsync::apply(xs, slow, o)) sum += v;
  } else if (mode == "quick") {
    for (int v : flockmp::FunctionAsync::apply(xs, [](int x) { return x; }, {.poolSize = 2}))
      sum += v;
  } else if (mode == "failing") {
    auto outcomes = flockmp::FunctionAsync::tryApply(xs,
                                                     [&](int x) {
                                                       if (x % 7 == 0)
                                                         throw std::runtime_error("bad");
                                                       return slow(x);
                                                     },
                                                     {.poolSize = 2});
    for (auto& o : outcomes)
      if (o) sum += *o;
  } else if (mode == "database") {
#if defined(FLOCK_PROBE_SQLITE)
    flockmp::DatabaseAsync db{{.poolSize = 2}, flockmp::sqlite::setup("mem", ":memory:")};
    for (int v : db.apply(xs, [](int x, flockmp::sqlite::Connection&c) {
           std::this_thread::sleep_for(40ms);
           return c.scalar<int>("select ? * ?", x, x);
         }))
      sum += v;
#else
    std::puts("no sqlite");
    return 2;
#endif
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  std::printf("sum=%d\n", sum);
  return 0;
}

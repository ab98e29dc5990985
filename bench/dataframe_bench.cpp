// DataFrameAsync benchmark: row-like apply over 1,000,000 rows against a serial loop over the
// same rows (same Row lookups), for a light and a heavier per-row function.
//
//   build-bench/bench/dataframe_bench [rows]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <flock/dataframe_async.hpp>

namespace {

using Clock = std::chrono::steady_clock;

/// Best of `reps` wall times of `fn`, in seconds.
template <class F>
double bestOf(int reps, F&& fn) {
  double best = 1e300;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

double light(const flockmp::Row& r) {
  return std::sqrt(static_cast<double>(r.get<std::int64_t>("foo")) + r.get<double>("bar"));
}

/// About a microsecond of arithmetic per row.
double heavy(const flockmp::Row& r) {
  double x = static_cast<double>(r.get<std::int64_t>("foo")) + r.get<double>("bar");
  for (int i = 0; i < 200; ++i) x = std::sqrt(x * x + 1.0) * 0.999;
  return x;
}

template <class F>
void compare(const char* name, const flockmp::DataFrame& df, F fn, std::size_t chunksize) {
  std::vector<double> serial;
  const double tSerial = bestOf(3, [&] {
    serial.clear();
    serial.reserve(df.rowCount());
    for (std::size_t i = 0; i < df.rowCount(); ++i) serial.push_back(fn(flockmp::Row(df, i)));
  });
  std::vector<double> par;
  const double tFlock = bestOf(3, [&] {
    par = flockmp::DataFrameAsync::apply(
        df, fn, {.style = flockmp::Style::rowLike, .chunksize = chunksize});
  });
  const double rows = static_cast<double>(df.rowCount());
  fmt::print("{:<6} chunksize {:>5}: serial {:8.1f} ms ({:6.1f} ns/row)   flock {:8.1f} ms "
             "({:6.1f} ns/row)"
             "   serial/flock {:5.2f}x   same results: {}\n",
             name, chunksize, tSerial * 1e3, tSerial * 1e9 / rows, tFlock * 1e3,
             tFlock * 1e9 / rows, tSerial / tFlock, par == serial);
}

/// How many CPUs are free right now: the speed of two threads spinning at once relative to one
/// (2.0 on an idle 2-CPU machine; near 1.0 when other work holds a CPU, which caps any speed-up).
double parallelCapacity() {
  auto spin = [] {
    volatile double x = 1.0;
    for (int i = 0; i < 20'000'000; ++i) x = x * 1.0000001 + 1e-9;
  };
  const double one = bestOf(3, spin);
  const double two = bestOf(3, [&] {
    std::thread t(spin);
    spin();
    t.join();
  });
  return 2.0 * one / two;
}

} // namespace

int main(int argc, char** argv) {
  const std::size_t rows = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  std::vector<std::int64_t> foo(rows);
  std::vector<double> bar(rows);
  std::iota(foo.begin(), foo.end(), 0);
  for (std::size_t i = 0; i < rows; ++i) bar[i] = 0.5 * static_cast<double>(i);
  const flockmp::DataFrame df{{"foo", foo}, {"bar", bar}};

  fmt::print(
      "DataFrameAsync row-like apply, {} rows x 2 columns, {} workers (CPU count), best of 3\n",
      rows, std::thread::hardware_concurrency());
  fmt::print("parallel capacity now: {:.2f} CPUs\n", parallelCapacity());
  for (std::size_t chunks : {std::size_t{100}, std::size_t{1000}})
    compare("light", df, light, chunks);
  for (std::size_t chunks : {std::size_t{100}, std::size_t{1000}})
    compare("heavy", df, heavy, chunks);
  fmt::print("parallel capacity now: {:.2f} CPUs\n", parallelCapacity());
}

// What you see when inputs fail. flock never drops an input: each one ends with a value or a
// flockmp::Failure that says which input failed and why (an exception, a crash, a timeout...).
#include <flock/flock.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

int parse(int x) {
  if (x == 3) throw std::runtime_error(fmt::format("bad input {}", x));
  return x * 10;
}

// std::abort() stands in for any fatal bug (a null write would be reported as SIGSEGV).
int crashOnFour(int x) {
  if (x == 4) std::abort();
  return x;
}

int hangOnOne(int x) {
  if (x == 1) std::this_thread::sleep_for(10s);
  return x;
}

void printFailure(const flockmp::Failure& f) {
  fmt::print("  {}\n", f.describe());
  fmt::print("    index={} kind={} type={} signal={} exitStatus={} pid={}\n", f.index,
             flockmp::toString(f.kind), f.type, f.signal,
             f.exitStatus ? std::to_string(*f.exitStatus) : "none", f.pid);
}

int main() {
  const std::vector<int> inputs = {0, 1, 2, 3, 4, 5};

  // tryApply never throws for a failed input: it returns one Outcome per input.
  fmt::print("== tryApply, input 3 throws\n");
  auto outcomes = flockmp::FunctionAsync::tryApply(inputs, parse, {.poolSize = 2});
  for (const auto& o : outcomes) {
    if (o.hasValue())
      fmt::print("  value {}\n", *o);
    else
      fmt::print("  failure: {}\n", o.failure().describe());
  }

  // apply returns every result or throws flockmp::TaskError, which keeps the successful results.
  fmt::print("== apply, input 3 throws\n");
  try {
    auto res = flockmp::FunctionAsync::apply(inputs, parse, {.poolSize = 2});
    fmt::print("  unexpected: no exception, {} results\n", res.size());
    return 1;
  } catch (const flockmp::TaskError& e) {
    fmt::print("  what(): {}\n", e.what());
    for (const auto& f : e.failures()) printFailure(f);
    std::size_t ok = 0;
    for (const auto& o : e.outcomes<int>()) ok += o.hasValue() ? 1 : 0;
    fmt::print("  {} of {} inputs kept their value\n", ok, e.outcomes<int>().size());
  }

  // A crash takes down only its worker; the worker is replaced and the other inputs still run.
  fmt::print("== input 4 crashes its worker\n");
  auto crashed = flockmp::FunctionAsync::tryApply(inputs, crashOnFour, {.poolSize = 2});
  for (const auto& o : crashed)
    if (!o) printFailure(o.failure());
  fmt::print("  inputs with a value: {}\n",
             std::count_if(crashed.begin(), crashed.end(), [](const auto& o) { return bool(o); }));

  // An input that runs past Options::timeOutError is killed with its worker.
  fmt::print("== input 1 runs past its 200 ms limit\n");
  const auto start = std::chrono::steady_clock::now();
  auto slow =
      flockmp::FunctionAsync::tryApply(inputs, hangOnOne, {.poolSize = 2, .timeOutError = 200ms});
  for (const auto& o : slow)
    if (!o) printFailure(o.failure());
  fmt::print("  inputs with a value: {}, finished in under 10 s: {}\n",
             std::count_if(slow.begin(), slow.end(), [](const auto& o) { return bool(o); }),
             std::chrono::steady_clock::now() - start < 10s);
}

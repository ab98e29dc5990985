// flock: flockmp::currentInput(), the index of the input the calling worker is running, so that a
// task can seed a generator or label its log lines by its input rather than by its worker.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace flockmp {
namespace detail {

/// Where currentInput() looks. Set by the worker loop in each worker process, never in the
/// parent, so that the parent (and any process that is not a worker) sees nothing.
struct CurrentInputSource {
  /// The worker's WorkerControl::current: the input being run (>= 0), negative between inputs.
  const std::atomic<std::int64_t>* current = nullptr;
  /// An async call (applyAsync, submit) runs the tasks of many handles under one index space;
  /// while one of its tasks runs, this is the task's index within its own handle (else -1).
  std::int64_t local = -1;
};

inline CurrentInputSource& currentInputSource() noexcept {
  static CurrentInputSource source;
  return source;
}

} // namespace detail

/// The index of the input the calling worker process is running: its position in the range given
/// to the call, the index a Failure of that input would carry. Retries of an input keep its
/// index, whichever worker runs them. Empty outside an input: in the calling (parent) process,
/// even while a call runs (in an onProgress callback, say), in an initializer or a finalizer,
/// and in any process that is not a flock worker.
///
/// What the index is, by call: apply, tryApply, imap and its variants, mapReduce, a pool's calls
/// and DatabaseAsync: the input's index in the range. DataFrameAsync: the row (row-like) or the
/// chunk (block-like). applyAsync: the index in its items. submit: 0 (its one task).
///
/// Use it to make work deterministic whatever worker runs it, such as seeding a generator:
///
///   auto draws = flockmp::FunctionAsync::apply(xs, [](int x) {
///     std::mt19937_64 rng(1234 + *flockmp::currentInput());
///     return x + std::uniform_int_distribution<int>(0, 9)(rng);
///   });
///
/// (Forked workers inherit the parent's generators in the same state: without a seed per input,
/// every worker draws the same numbers.)
[[nodiscard]] inline std::optional<std::size_t> currentInput() noexcept {
  const auto& source = detail::currentInputSource();
  if (source.current == nullptr) return std::nullopt;
  const std::int64_t index = source.current->load(std::memory_order_relaxed);
  if (index < 0) return std::nullopt;
  return static_cast<std::size_t>(source.local >= 0 ? source.local : index);
}

} // namespace flockmp

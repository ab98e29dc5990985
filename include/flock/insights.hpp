// flock: what happened in a call, on request (Options::insights): per worker, its start, inputs,
// task and idle time, bytes sent and peak memory; for the call, its wall time, the parent's time
// on results, the slowest inputs, restarts, retries and failures by kind.
#pragma once

#include "detail/config.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "detail/memory.hpp"
#include "error.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <sys/types.h>
#endif

namespace flockmp {

/// One worker process's part in a call (one row per process: a worker that replaced a crashed
/// one, or a recycled one under maxTasksPerWorker, has its own row).
struct WorkerInsights {
  /// Its process id.
  pid_t pid = -1;
  /// From the parent's request to start it (fork, or the forkserver's fork, or exec under spawn)
  /// until it was ready for its first input, its initializer included. A pool's worker started
  /// by an earlier call keeps the start-up time it had then. Zero when it never became ready.
  std::chrono::nanoseconds startup{};
  /// Inputs it resolved in this call, with a result or a failure. An input that crashed it (or
  /// timed out on it) counts here, on the worker that died, unless it was retried: then it counts
  /// on the worker that resolved it at last.
  std::size_t inputs = 0;
  /// Time spent in its inputs (see Insights::slowest for what an input's time includes).
  std::chrono::nanoseconds tasks{};
  /// Time in the call not spent running a batch: waiting for work (at its start, between
  /// batches, after its last one while others finish) and writing results to a full channel.
  /// Counted from the call's start, or from when it became ready if it started later, until
  /// the call's end or its death.
  std::chrono::nanoseconds idle{};
  /// Bytes of results (and failure records) it sent to the parent, those passed through shared
  /// memory included.
  std::uint64_t bytesSent = 0;
  /// Its peak resident set size in bytes: for a worker alive at the end of the call,
  /// /proc/<pid>/status VmHWM read by the parent then (before a one-shot call's workers stop);
  /// for one that ended during the call (crash, timeout, recycling), the ru_maxrss (getrusage)
  /// it reported after its last finished batch of the call (0 if none finished): a process
  /// that has exited has no VmHWM left to read.
  std::uint64_t peakRss = 0;
  /// True when it ended during the call for a reason other than the call's end: it crashed,
  /// timed out, sent a corrupt frame, or was recycled (maxTasksPerWorker).
  bool ended = false;
  /// Under flockmp::mpi, the MPI rank whose worker it was (as Failure::rank); else -1.
  int rank = -1;
  /// Under flockmp::mpi, that rank's host (as Failure::host); else empty.
  std::string host;
};

/// An input and the time it took in its worker.
struct InputTime {
  std::size_t index = 0;
  std::chrono::nanoseconds duration{};
};

/// What happened in a call, filled on request: pass a pointer in Options::insights (or
/// CallOptions::insights for a pool's call) and read it after the call:
///
///   flockmp::Insights insights;
///   auto ys = flockmp::FunctionAsync::apply(xs, fn, {.insights = &insights});
///   fmt::print("{}", insights);
///
/// A pointer, not a return value, so that every call form (apply, tryApply, pools, streams,
/// mapReduce, DatabaseAsync and DataFrameAsync, whose options nest Options) keeps its return type,
/// and so that a call that throws (TaskError, a failed start) still fills it: it is written once,
/// when the call ends, however it ends. It is written from the thread that runs the call.
///
/// Costs nothing when not requested: workers read no clock per input and send no extra bytes;
/// the request reaches them through the shared control block each already has, not the wire.
/// When requested, each worker reads the clock once per input and sends, per batch, one small
/// frame (its task time, its peak memory, and its 5 slowest inputs of the batch).
/// flockmp::mpi::apply fills it on the root only, for the whole call: a row per worker of every
/// batch of every rank (with its rank and host), sent to the root at the end; `wall` is the
/// root's. mpi::Pool fills it on the root per call (a row per worker of each rank: they persist).
/// A pool's async calls (submit, applyAsync) share open-ended calls on a driver thread: their
/// handles give those calls' insights (Future::insights, AsyncCall::insights) when the pool's
/// Options::insights is set, and never write the pool's pointer.
struct Insights {
  /// Number of slowest inputs kept.
  static constexpr std::size_t slowestKept = 5;

  /// From the start of the call (its workers' start included, for a one-shot call) to its end.
  std::chrono::nanoseconds wall{};
  /// The parent's time reading, decoding and storing results.
  std::chrono::nanoseconds parentResults{};
  /// Inputs in the call (for a stream: those read).
  std::size_t inputs = 0;
  /// Of those, the inputs resolved in the parent without reaching a worker: cancelled or never
  /// run (restart budget exhausted, failFast), or whose input could not be encoded. The workers'
  /// `inputs` plus this are the call's `inputs`.
  std::size_t notRun = 0;
  /// One row per worker process that served the call, in the order they started.
  std::vector<WorkerInsights> workers;
  /// The slowest inputs, slowest first (at most slowestKept). An input's time runs in its worker
  /// from its start to the start of the next input of its batch (or the batch's end): the
  /// callable and the encoding of its result, not the writes to the channel. Inputs that crashed
  /// or timed out are not timed (their worker died).
  std::vector<InputTime> slowest;
  /// Workers that died during the call (crash, timeout, corrupt frame, failed start) and were
  /// replaced or given up on.
  std::size_t restarts = 0;
  /// Times an input was run again after its worker crashed or timed out (Options::retries).
  std::size_t retries = 0;
  /// Failed inputs by kind, indexed by FailureKind (see failuresOf).
  std::array<std::size_t, 9> failures{};

  /// The failed inputs of kind `k`.
  [[nodiscard]] std::size_t failuresOf(FailureKind k) const noexcept {
    return failures[static_cast<std::size_t>(k)];
  }

  /// The same data as JSON, for tools: durations in nanoseconds, sizes in bytes, failures as an
  /// object keyed by kind name (every kind present).
  [[nodiscard]] std::string toJson() const;
};

namespace detail {
/// A JSON string literal of `s`: quotes, backslashes and control characters escaped.
FLOCK_ENGINE_INLINE void appendJsonString(std::string& out, std::string_view s);

/// Every FailureKind, in order: a kind added to the enum must be added here and to
/// Insights::failures (the static_assert below checks that the last one is here).
inline constexpr std::array<FailureKind, 9> allFailureKinds{
    FailureKind::exception, FailureKind::crashed,   FailureKind::timedOut, FailureKind::codec,
    FailureKind::protocol,  FailureKind::setup,     FailureKind::cancelled, FailureKind::notRun,
    FailureKind::outOfMemory};
static_assert(static_cast<std::size_t>(allFailureKinds.back()) + 1 == allFailureKinds.size());
static_assert(std::tuple_size_v<decltype(Insights::failures)> == allFailureKinds.size());

/// A duration for people: 3 significant digits and a unit.
FLOCK_ENGINE_INLINE std::string humanDuration(std::chrono::nanoseconds d);

} // namespace detail


} // namespace flockmp

/// A short table for people: one line per worker, then the call's totals, slowest inputs and
/// failures (kinds with none are left out).
namespace flockmp::detail {
/// The table fmt::formatter<Insights> prints. Built with fmt::format only: fmt::format_to on a
/// format context needs fmt/format.h, which the core headers leave out (compile time), and
/// clang cannot link fmt/core.h's inline declaration of it against libfmt.
FLOCK_ENGINE_INLINE std::string insightsTable(const Insights& in);
} // namespace flockmp::detail

template <>
struct fmt::formatter<flockmp::Insights> {
  constexpr auto parse(format_parse_context& ctx) -> decltype(ctx.begin()) { return ctx.begin(); }

  template <class FormatContext>
  auto format(const flockmp::Insights& in, FormatContext& ctx) const -> decltype(ctx.out()) {
    const std::string table = flockmp::detail::insightsTable(in);
    auto out = ctx.out();
    for (const char c : table) *out++ = c;
    return out;
  }
};

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (const char c : s) {
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      else out += c;
    }
  }
  out += '"';
}

FLOCK_ENGINE_INLINE std::string humanDuration(std::chrono::nanoseconds d) {
  const double ns = static_cast<double>(d.count());
  if (ns < 1e3) return fmt::format("{:.0f}ns", ns);
  if (ns < 1e6) return fmt::format("{:.3g}us", ns / 1e3);
  if (ns < 1e9) return fmt::format("{:.3g}ms", ns / 1e6);
  return fmt::format("{:.3g}s", ns / 1e9);
}

FLOCK_ENGINE_INLINE std::string insightsTable(const Insights& in) {
  std::string t = fmt::format("{:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}\n", "worker", "startup", "inputs", "tasks",
                              "idle", "sent", "peak RSS");
  for (const auto& w : in.workers)
    t += fmt::format("{:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}{}{}\n", w.pid, humanDuration(w.startup), w.inputs,
                     humanDuration(w.tasks), humanDuration(w.idle), formatBytes(w.bytesSent, ByteStyle::compact),
                     formatBytes(w.peakRss, ByteStyle::compact),
                     w.ended ? "  (ended)" : "", w.rank >= 0 ? fmt::format("  rank {} on {}", w.rank, w.host) : "");
  t += fmt::format("wall {}, parent on results {}, {} inputs ({} not run), {} restarts, {} retries\n",
                   humanDuration(in.wall), humanDuration(in.parentResults), in.inputs, in.notRun, in.restarts,
                   in.retries);
  if (!in.slowest.empty()) {
    t += "slowest:";
    for (const auto& s : in.slowest) t += fmt::format(" #{} {}", s.index, humanDuration(s.duration));
    t += "\n";
  }
  bool any = false;
  for (std::size_t k = 0; k < allFailureKinds.size(); ++k) {
    if (in.failures[k] == 0) continue;
    t += fmt::format("{} {} {}", any ? "," : "failures:", in.failures[k], toString(allFailureKinds[k]));
    any = true;
  }
  if (any) t += "\n";
  return t;
}

} // namespace flockmp::detail
namespace flockmp {

FLOCK_ENGINE_INLINE std::string Insights::toJson() const {
  std::string j;
  j += fmt::format("{{\"wallNs\":{},\"parentResultsNs\":{},\"inputs\":{},\"notRun\":{},\"restarts\":{},\"retries\":{},",
                   wall.count(), parentResults.count(), inputs, notRun, restarts, retries);
  j += "\"failures\":{";
  for (std::size_t k = 0; k < detail::allFailureKinds.size(); ++k) {
    if (k > 0) j += ',';
    detail::appendJsonString(j, toString(detail::allFailureKinds[k]));
    j += fmt::format(":{}", failures[k]);
  }
  j += "},\"slowest\":[";
  for (std::size_t k = 0; k < slowest.size(); ++k)
    j += fmt::format("{}{{\"index\":{},\"ns\":{}}}", k > 0 ? "," : "", slowest[k].index, slowest[k].duration.count());
  j += "],\"workers\":[";
  for (std::size_t k = 0; k < workers.size(); ++k) {
    const auto& w = workers[k];
    j += fmt::format("{}{{\"pid\":{},\"startupNs\":{},\"inputs\":{},\"tasksNs\":{},\"idleNs\":{},\"bytesSent\":{},"
                     "\"peakRss\":{},\"ended\":{}",
                     k > 0 ? "," : "", w.pid, w.startup.count(), w.inputs, w.tasks.count(), w.idle.count(), w.bytesSent,
                     w.peakRss, w.ended ? "true" : "false");
    if (w.rank >= 0) {
      j += fmt::format(",\"rank\":{},\"host\":", w.rank);
      detail::appendJsonString(j, w.host);
    }
    j += '}';
  }
  j += "]}";
  return j;
}

} // namespace flockmp
#endif // FLOCK_ENGINE_DEFINITIONS

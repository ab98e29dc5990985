// flock: the options every call takes, one aggregate filled with designated initializers.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <stop_token>

namespace flockmp {

struct Insights;

/// How worker processes come to exist.
enum class Context {
  fork,       ///< fork the calling process when the call starts (default on Linux): any callable
              ///< works, captures included, and inputs never cross a pipe
  forkserver, ///< fork from a small server process started early (safe in a multithreaded parent)
  spawn,      ///< start fresh executions of the program image
};

/// What becomes of what workers print on their stdout and stderr (Options::workerOutput).
enum class WorkerOutput {
  /// The workers write to the parent's stdout and stderr themselves, as any child process does.
  /// Their stdio buffers are flushed after each batch, so nothing printed by a finished input
  /// stays buffered, but their lines may land in the middle of the progress bar or of each
  /// other's lines (two workers writing at once).
  inherit,
  /// The workers' stdout and stderr are pipes read by the parent in its event loop; each whole
  /// line is written to the parent's same stream (stdout lines to stdout, stderr lines to
  /// stderr), never cut or mixed with another line, above the progress bar, which is erased and
  /// drawn again below the lines. Order is kept within each stream of each worker (not between a
  /// worker's stdout and its stderr, nor between workers). A line still unfinished when its
  /// worker crashes is printed with ` [cut: worker crashed]` (or `timed out`, `killed`) and a
  /// newline; one unfinished when its call (or a pool) ends gets a newline. The default: the
  /// bar is on by default, and worker lines written into it garble both; the price is one copy
  /// through the parent, and a line is held whole in the parent until its newline comes.
  forward,
  /// Like forward, with `[worker N, input I] ` in front of each line: N is the worker's slot
  /// (0 to poolSize - 1; a replacement worker takes the number of the one it replaces) and I is
  /// the input that was running when the line's first byte was written. A line written outside
  /// any input (the initializer, the finalizer, a process the task left running between
  /// inputs) gets `[worker N] `. To know I exactly even when a batch holds many inputs, each
  /// worker flushes its stdio and writes a small marker to both pipes when each input starts:
  /// two writes per input, so prefer forward for very many tiny inputs.
  prefix,
};

/// A time limit: std::chrono::nanoseconds that any std::chrono duration converts to, floating
/// point ones included (`std::chrono::duration<double>(1.5)`, `30s`, `250ms`). A fraction of a
/// nanosecond is dropped.
struct Duration : std::chrono::nanoseconds {
  constexpr Duration() noexcept = default;
  template <class Rep, class Period>
  constexpr Duration(std::chrono::duration<Rep, Period> d) // NOLINT: implicit on purpose
      : std::chrono::nanoseconds(std::chrono::duration_cast<std::chrono::nanoseconds>(d)) {}
};

/// Supervisor limit in the spirit of Erlang: when more than `maxRestarts` workers die within
/// `period` without finishing a task, the call ends with flockmp::Error instead of forking forever.
struct RestartBudget {
  int maxRestarts = 16;
  std::chrono::milliseconds period{5000};
};

/// Progress of a call, as given to `Options::onProgress`.
struct Progress {
  std::size_t done = 0;   ///< inputs finished (with a value or a failure)
  std::size_t failed = 0; ///< of those, how many failed
  std::size_t total = 0;  ///< inputs in the call (so far, while totalKnown is false)
  /// False while a streaming call (imap, mapReduce over a single-pass range) has not read its
  /// last input: `total` then counts the inputs read so far.
  bool totalKnown = true;
};

/// Options of every flock call. Defaults suit most uses:
///
///   flockmp::FunctionAsync::apply(xs, fn, {.poolSize = 4, .timeOutError = std::chrono::seconds(5)});
struct Options {
  /// Number of worker processes. Default: the online CPU count. Never more workers than inputs.
  /// Zero or negative throws flockmp::OptionError.
  std::optional<int> poolSize{};
  /// Per-input time limit; an input running longer is killed (with its worker's whole process
  /// group) and reported as timed out. Default: no limit.
  std::optional<Duration> timeOutError{};
  /// How workers are started; see Context.
  Context context = Context::fork;
  /// Inputs per batch sent to a worker. 0 (default): adaptive, large batches first and single
  /// inputs at the end, so tiny tasks amortise the pipe and long tasks still balance.
  std::size_t batchSize = 0;
  /// Recycle a worker after this many inputs (for leaky libraries). 0 (default): never.
  std::size_t maxTasksPerWorker = 0;
  /// Most resident memory (RSS, in bytes) a worker may hold. An input that pushes its worker
  /// past it fails with FailureKind::outOfMemory, naming the limit, and the worker is replaced
  /// (what it held unsent runs again elsewhere; `retries` applies, since a fresh worker starts
  /// from its baseline). Resident memory, as the kernel's OOM killer counts it, is measured
  /// rather than allocations, so memory touched without `new` (mmap, a C library) counts:
  /// - the worker reads its peak RSS after each input (so an input that touches memory and
  ///   returns, or frees it before returning, is caught, deterministically);
  /// - the parent reads the RSS of busy workers every 50 ms and kills one past the limit (so an
  ///   input that grows and never returns is caught);
  /// - the worker's address space is capped (RLIMIT_AS) at its size when the limit is armed plus
  ///   twice the limit, so an allocation that can never fit throws std::bad_alloc at once; any
  ///   std::bad_alloc an input throws is then reported as outOfMemory. Not under AddressSanitizer
  ///   or ThreadSanitizer, which reserve terabytes of address space: there the RSS checks alone
  ///   apply, and a `new` that is never touched goes unnoticed.
  /// A worker's RSS includes what it shares with the parent (under Context::fork, the parent's
  /// memory it inherited): a worker already past the limit once started fails to start (a setup
  /// failure naming both figures, ending the call through the restart budget). 0 (default): no
  /// limit. A value below 1 MiB throws flockmp::OptionError (bytes are meant, not megabytes).
  /// The kernel's OOM killer is separate: a worker it kills is reported crashed by SIGKILL.
  std::size_t memoryLimit = 0;
  /// How many times an input whose worker crashed or timed out is tried again on a fresh
  /// worker before it is reported. Default 0.
  int retries = 0;
  /// Cancels the call: inputs not yet finished are reported as cancelled, workers are stopped.
  std::stop_token stopToken{};
  /// See RestartBudget.
  RestartBudget restartBudget{};
  /// Runs once in each worker process before its first input (open a connection, seed a
  /// generator...). If it throws or crashes, the worker is replaced; workers that keep failing
  /// here end the call through the restart budget, with the initializer's error in the message.
  std::function<void()> initializer{};
  /// Longest time a worker may take to start, its initializer included; a worker past it is
  /// killed and counts as a failed setup (replaced, then ending the call through the restart
  /// budget). Default: timeOutError when that is set, else no limit.
  std::optional<Duration> setupTimeout{};
  /// Runs in each worker process when it stops normally (all inputs done, recycled after
  /// maxTasksPerWorker, or stopped by a cancellation between inputs), to close what the
  /// initializer opened. Not run when the worker crashes, times out or is killed: the operating
  /// system reclaims its resources then.
  std::function<void()> finalizer{};
  /// Called from the calling thread (never from a worker) as inputs finish, at most ~10 times a
  /// second plus once at the end.
  std::function<void(const Progress&)> onProgress{};
  /// Show a live progress bar on stderr (done/total, percent, rate, elapsed time and ETA), the
  /// seed's `checkProgress`. Drawn only when stderr is a terminal and the call lasts longer than
  /// a fifth of a second, redrawn at most ~10 times a second from the calling thread; nothing is
  /// printed otherwise (see progressLines). Default: on.
  bool checkProgress = true;
  /// When checkProgress is on but stderr is not a terminal (a log file, CI), print a few plain
  /// progress lines instead (at 25%, 50%, 75% and at the end). Default: off, nothing printed.
  bool progressLines = false;
  /// Stop at the first failed input: the inputs not finished then are reported as cancelled,
  /// naming the input that failed. Default: off, every input runs whatever the others do.
  bool failFast = false;
  /// Streaming calls (imap, imapUnordered and their try-variants): the most inputs held in the
  /// parent at once, counting those read ahead and the results waiting behind a slower input,
  /// rounded down to a power of two. Inputs are read from the range only as this allows, so
  /// memory does not grow with its length. 0 (default): 32768 per worker, enough for tiny
  /// tasks to stream at nearly the speed of apply; set it lower for large inputs or results.
  std::size_t maxInFlight = 0;
  /// What becomes of the workers' stdout and stderr; see WorkerOutput. Default: forward, so
  /// that worker lines never break the progress bar or each other. Set when the workers start:
  /// a pool takes it from its own Options (its workers outlive calls), not from CallOptions.
  WorkerOutput workerOutput = WorkerOutput::forward;
  /// When set, the call fills `*insights` when it ends (however it ends: with a TaskError or
  /// another exception too) with what happened in it: per worker, its start-up, inputs, task and
  /// idle time, bytes sent and peak memory; for the call, its wall time, the parent's time on
  /// results, the 5 slowest inputs, restarts, retries and failures by kind (see Insights, in
  /// <flock/insights.hpp>). On a pool, it also makes the async calls (submit, applyAsync)
  /// gather insights, which their handles give (insights()). Default nullptr: nothing is
  /// measured, nothing costs.
  Insights* insights = nullptr;
};

} // namespace flockmp

// flock internals: the parent's event loop. It starts workers through a Launcher, hands out
// batches of input indices, multiplexes every worker with poll(), accounts for every input
// (result, failure, or requeue), detects dead and hung workers, replaces them, and cleans up.
// One engine serves one call (one-shot: workers forked for it) or every call of a pool
// (persistent workers); the call path is the same.
#pragma once

#include "config.hpp"

#include <poll.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "../error.hpp"
#include "../insights.hpp"
#include "backend.hpp"
#include "../options.hpp"
#include "../progress.hpp"
#include "worker.hpp"
#include "protocol.hpp"
#include "dispatch.hpp"
#include "memory.hpp"
#include "output.hpp"
#include "posix.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <deque>
#include <exception>
#include <stdexcept>
#include <unordered_map>
#endif

namespace flockmp::detail {

/// Number of workers for `items` inputs: the pool size (default: online CPUs), never more than
/// the inputs. The pool size has been checked by validateOptions.
inline std::size_t workerCount(const Options& o, std::size_t items) {
  long n = o.poolSize ? *o.poolSize : ::sysconf(_SC_NPROCESSORS_ONLN);
  return std::min<std::size_t>(static_cast<std::size_t>(std::max(n, 1L)), items);
}

/// Throws OptionError naming the first option that makes no sense.
FLOCK_ENGINE_INLINE void validateOptions(const Options& o);

/// Whether workers serve one call or every call of a pool.
enum class Lifetime { oneCall, pool };

class Engine {
  using Clock = std::chrono::steady_clock;

public:
  /// `opts` gives the workers' options (poolSize, context, initializer, finalizer, setupTimeout,
  /// maxTasksPerWorker); each call brings the rest. Throws flockmp::Error when the context cannot
  /// be used (forkserver or spawn without flockmp::init).
  Engine(const Options& opts, Lifetime life);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  /// Whatever happened (an exception, cancellation), no worker outlives the engine: a pool's idle
  /// workers are asked to stop (their finalizers run), the rest are killed.
  ~Engine();

  /// A pool: start every worker now rather than at the first call. Throws flockmp::Error when
  /// none can start.
  void start() {
    ensureSlots(0);
    startMissing();
  }

  /// A pool that serves one call: no more workers than its inputs (before the first call).
  void sizeFor(std::size_t inputs) noexcept { sizeLimit_ = inputs; }

  /// Stop every worker after the inputs it holds (a pool's close()).
  void close() { shutdown(); }

  /// Number of live workers (for tests and insight).
  [[nodiscard]] std::size_t liveWorkers() const noexcept {
    return static_cast<std::size_t>(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.alive; }));
  }
  /// The pids of the live workers.
  [[nodiscard]] std::vector<pid_t> workerPids() const;

  /// Run every input of `job` with the per-call options of `callOpts` (timeOutError, batchSize,
  /// retries, stopToken, restartBudget, progress, failFast). Afterwards each input has a result
  /// (in the job) or a Failure (takeFailures). A readable `closeFd` (the pool is being closed)
  /// cancels the call.
  void call(JobBase& job, const Options& callOpts, int closeFd = -1);

  /// Begin a call. `openEnded` (a stream): the job has no input yet; extend() hands out more as
  /// they are read, endOfInputs() says there are no more. Drive it with step().
  void open(JobBase& job, const Options& callOpts, int closeFd, bool openEnded);

  /// A stream read inputs [size(), newEnd): hand them out.
  void extend(std::size_t newEnd);

  /// A stream has read its last input.
  void endOfInputs() noexcept { inputsComplete_ = true; }

  /// An eventfd that, when written, makes step() return (new inputs arrived from another
  /// thread); -1: none.
  void setWakeFd(int fd) noexcept { wakeFd_ = fd; }

  /// The call's callable changed (a new task kind): each worker gets it again before its next
  /// batch.
  void callChanged() noexcept { ++callEpoch_; }

  /// Inputs of the call so far.
  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  /// True when the call was cancelled or given up: its remaining inputs were reported.
  [[nodiscard]] bool gaveUp() const noexcept { return gaveUp_; }

  /// Wait for the workers once (for the first event, or as long as timeouts allow) and handle
  /// what happened: results, deaths, timeouts, replacements, more batches. Returns false once the
  /// call is over (its workers are then idle, or stopped for a one-shot call). A stream whose
  /// inputs read so far are all resolved returns at once: it must read more or end.
  /// `waitMs` bounds the wait (0: handle what is ready and return; -1: as timeouts allow).
  bool step(int waitMs = -1);

  /// A stream's consumer left early: the inputs not handed out are dropped; batches in flight
  /// get `grace` to finish (their workers then stay in the pool), after which their workers are
  /// killed. Nothing more of the call is reported.
  void stopEarly(std::chrono::milliseconds grace) noexcept;

  std::vector<Failure> takeFailures() {
    std::sort(failures_.begin(), failures_.end(), [](const Failure& a, const Failure& b) { return a.index < b.index; });
    return std::move(failures_);
  }

private:
  struct StopSignal {
    int fd;
    void operator()() const noexcept {
      std::uint64_t one = 1;
      [[maybe_unused]] auto r = ::write(fd, &one, sizeof one);
    }
  };
  struct DirectRead {
    std::byte* dst = nullptr;
    std::size_t remaining = 0; // bytes still to read into dst
    std::size_t count = 0;     // results in the block
  };
  struct Slot {
    WorkerProcess proc;
    bool alive = false;
    bool eof = false;
    bool stopping = false;     // asked to stop (recycled after maxTasksPerWorker)
    bool timedOut = false;     // killed by us for exceeding timeOutError
    std::string protocolError; // killed by us for a corrupt frame
    bool channelLost = false;  // exited because a task closed or replaced its channel
    std::string setupError;    // its initializer failed or ran past the setup limit
    std::uint64_t killedAtMemory = 0; // killed by us: its resident memory went past memoryLimit
    Clock::time_point startedAt{};
    Clock::time_point lastBytes{};
    std::deque<Batch> outstanding;
    FrameReader reader;
    std::size_t assigned = 0;  // inputs handed to this worker process
    std::size_t finished = 0;  // inputs this worker process resolved
    DirectRead direct;          // a raw block being read straight into the results
    std::int64_t lastCurrent = -1;
    Clock::time_point lastChange{};
    std::vector<std::byte> pending; // frames not yet written to the worker (commands socket full)
    std::size_t pendingAt = 0;      // bytes of `pending` already written
    std::uint64_t callEpoch = 0;    // the call whose callable this worker holds (pools)
    // Insights: what the worker did over its life, and where this call's row starts.
    std::uint64_t launchNs = 0;     // when it was asked for (monotonicNs, the worker's clock)
    std::uint64_t busyNs = 0;       // its batches' times (batchDone)
    std::uint64_t bytesIn = 0;      // result bytes not counted by `reader`: direct reads, shared blocks
    std::size_t row = noRow;        // its row in insights_.workers, during a call that asks for them
    std::size_t rowFinished = 0;    // `finished`, `busyNs` and bytes received when the row opened
    std::uint64_t rowBusyNs = 0;
    std::uint64_t rowBytes = 0;
    bool killed = false;            // killed by us (killGroup)
    OutputPipe output[2];           // its stdout and stderr (WorkerOutput::forward, prefix)
    Clock::time_point outputQuietUntil[2]{}; // see readOutput
  };
  static constexpr std::size_t noRow = SIZE_MAX;

  /// Inputs remain, batches are in flight (a pool's next call must not find this call's
  /// acknowledgements in its channels), or a stream may read more.
  [[nodiscard]] bool running() const noexcept {
    return inCall_ && !gaveUp_ && (resolved_ < n_ || !inputsComplete_ || anyOutstanding());
  }

  /// Runs `f`; an exception out of it (poll failed, no worker could start) leaves no half-served
  /// worker behind: a pool starts afresh at its next call.
  template <class F>
  void guarded(F&& f) {
    try {
      f();
    } catch (...) {
      abandonCall();
      inCall_ = false;
      stopCb_.reset();
      stopFd_ = Fd{};
      publishInsights();
      throw;
    }
  }

  /// One wait for the workers, `capMs` at most (-1: as timeouts allow), and what follows.
  /// `draining_` (a stream stopping early): nothing new is handed out.
  void pollOnce(int capMs);

  /// The call is over: a one-shot call's workers stop; a pool's wait for the next call.
  void finishCall();

  WorkerControl& control(std::size_t i) noexcept { return static_cast<WorkerControl*>(controls_.data())[i]; }
  const WorkerControl& control(std::size_t i) const noexcept {
    return static_cast<const WorkerControl*>(controls_.data())[i];
  }

  struct LaunchContext {
    Engine* engine;
    std::size_t slot;
  };
  /// A forked worker: a one-shot worker runs the job it inherited; a pool's worker serves calls.
  static void workerMain(void* ctx, int commandFd, int resultFd);

  void startWorker(std::size_t i);

  /// The worker slots and their control blocks, made once: a one-shot call gets one worker per
  /// input up to poolSize, a pool gets poolSize.
  void ensureSlots(std::size_t inputs);

  /// Start every worker that is not running. With none running afterwards, nothing has run and
  /// nothing is lost: the first start error is the caller's. With some, the call goes on and the
  /// others are tried again later.
  void startMissing();

  /// A pool's worker that died between calls (a crash, a kill from outside) is noticed before
  /// work is handed out, and replaced by startMissing.
  void noticeIdleDeaths();

  /// Per-call state starts afresh; the workers (and what they count over their life) stay.
  void beginCall(JobBase& job, const Options& callOpts);

  /// The call ended by an exception: its workers may hold half of it, so none is kept.
  void abandonCall() noexcept;

  [[nodiscard]] bool anyOutstanding() const noexcept {
    return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.alive && !s.outstanding.empty(); });
  }

  /// Queue a frame for the worker; flushPending writes it as the socket takes it.
  static void appendFrame(Slot& s, FrameKind kind, const void* payload, std::size_t n);

  /// Write what the worker's commands socket takes without blocking: a worker busy writing
  /// results does not read its next batch, and a parent blocked on sending it would not read
  /// those results. A dead worker's frames are dropped (its pidfd tells the rest).
  static void flushPending(Slot& s);

  [[nodiscard]] bool hasWork() const noexcept { return dispatch_.hasWork(); }
  [[nodiscard]] bool anyAlive() const noexcept {
    return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.alive; });
  }

  /// A worker could not be started (fork, socketpair or pidfd_open failed: a process or fd limit,
  /// memory). It is tried again after a growing delay. While other workers run, the call goes on
  /// with fewer; with none left, each failure counts against the restart budget (see
  /// noteFailedStart) and `countAgainstBudget` is true.
  void noteStartFailure(bool countAgainstBudget, const std::string& cause = {});

  /// Replace dead workers while work remains (not before the start back-off has passed).
  void replaceDead();

  /// A worker ended (or could not start) without finishing any input. More than
  /// restartBudget.maxRestarts of those within restartBudget.period, or in a row with no input
  /// finished in between (workers that fail slowly), end the call: the inputs left are reported
  /// with `cause` instead of forking forever.
  void noteFailedStart(FailureKind kind, const std::string& cause) {
    const auto now = Clock::now();
    if (dispatch_.noteFailedStart(now)) giveUp(kind, cause);
  }


  static Dispatch::WorkerView viewOf(const Slot& s) noexcept {
    return {s.assigned, s.outstanding.size(), !s.outstanding.empty() && s.outstanding.front().suspect, s.stopping};
  }

  /// Every idle worker gets a batch first; then short batches are queued behind running ones
  /// (see Dispatch::nextAhead). A worker that served maxTasksPerWorker is stopped.
  void topUpAll();

  /// Appends a pool batch's encoded inputs to the frame begun last. An input the codec cannot
  /// encode fails alone; the batch stops before it and the inputs after it go back to the queue.
  /// Returns false when nothing is left to send (the frame was dropped).
  bool encodeBatchInputs(Slot& s, Batch& batch, FrameWriter& frames);

  void sendBatch(Slot& s, Batch batch);

  static void sendStop(Slot& s) {
    appendFrame(s, FrameKind::stop, nullptr, 0);
    flushPending(s);
  }

  /// Inputs [begin, begin + count) have their results or failures.
  void resolve(Slot& s, std::size_t begin, std::size_t count);

  /// Inputs [begin, begin + count) resolved in the parent (a failure found there).
  void resolveHere(std::size_t begin, std::size_t count);

  void addFailure(Failure f);

  /// Read and process everything the worker has sent so far.
  void drain(Slot& s);

  void processFrames(Slot& s);

  Batch& expectIndex(Slot& s, std::uint64_t index);

  void onResult(Slot& s, std::span<const std::byte> payload);

  /// A block of raw results for [begin, begin + count). `complete`: the whole payload is here;
  /// otherwise the received part is copied and the rest is read directly (see drain).
  void onRawBlock(Slot& s, std::span<const std::byte> payload, bool complete);

  /// Raw results the worker stored in its batch's shared result area: copied into the sink now,
  /// before the area can serve another batch (see sendBatch).
  void onSharedBlock(Slot& s, std::span<const std::byte> payload);

  /// mapReduce: a worker's fold of the results of [begin, begin + count) (its failures came
  /// before, each in its own frame).
  void onPartial(Slot& s, std::span<const std::byte> payload);

  void finishRawBlock(Slot& s);

  void onFailure(Slot& s, std::span<const std::byte> payload);

  /// Insights: a batch's times, sent by its worker just before its batchDone.
  void onTiming(Slot& s, std::span<const std::byte> payload);

  /// Keeps the Insights::slowestKept slowest inputs seen (unordered until publishInsights).
  void keepSlow(InputTime t);

  /// Insights: worker i starts its row of this call; from now on its batches are timed.
  void openRow(std::size_t i);

  /// Insights: worker i's row is complete (the call ends, or the worker ended: `ended`). Call
  /// before it is killed, so that its peak memory can still be read.
  void closeRow(std::size_t i, bool ended) noexcept;

  /// Insights: the call is over (however it ended): hand them to the caller, once.
  void publishInsights() noexcept;

  void onBatchDone(Slot& s, std::span<const std::byte> payload);

  static void killGroup(Slot& s) noexcept;

  /// The worker's wait status, or nullopt when someone else collected it (a thread of the
  /// application calling waitpid(-1, ...) while SIGCHLD has its default action).
  std::optional<int> reap(Slot& s) noexcept { return launcher_->reap(s.proc); }

  void killAndReap(Slot& s) noexcept;

  /// The worker process has exited: account for everything it held, replace it if needed.
  void handleExit(std::size_t i);

  void accountForDeath(std::size_t i, std::optional<int> status, pid_t pid);

  /// A worker writes each frame whole, so a partial frame followed by silence means it sent a
  /// truncated frame (its later frames, if any, were swallowed as payload): treat it as corrupt.
  void checkStalls();

  static std::string describeStatus(std::optional<int> status, pid_t pid);

  Failure deathFailure(const Slot& s, std::size_t index, std::optional<int> status,
                       pid_t pid) const;

  /// The worker has exited and its group is dead: what its pipes still hold is written, an
  /// unfinished line marked as cut unless the worker ended normally; the pipes are closed.
  void endOutput(Slot& s, std::optional<int> status) noexcept;

  /// Writes the whole lines read from the workers to the parent's stdout and stderr, above the
  /// progress bar (erased, then drawn again below them). Blocking, as the application's own
  /// printf would be: while the parent's stdout is a full pipe nobody reads, the call waits
  /// here, and workers that print meanwhile wait on their full pipes (see WorkerOutput).
  void writeForwardedLines() noexcept;

  /// Reads what stream `k` of a worker holds now. A pipe that held little (a line, a marker)
  /// is left out of the next waits for outputQuiet: its next bytes are read with those that
  /// follow, instead of costing the parent a wake-up per line (and the worker the wake-up of a
  /// sleeping reader). A pipe that held much is watched at once: a worker printing megabytes
  /// never waits on a full pipe for more than a read.
  void readOutput(Slot& s, int k) {
    const std::size_t got = s.output[k].read(forwarded_[k]);
    s.outputQuietUntil[k] = got < outputBusyBytes ? Clock::now() + outputQuiet : Clock::time_point{};
  }

  /// Reads what a worker's output pipes hold now.
  void readOutputs(Slot& s) {
    for (int k = 0; k < 2; ++k) s.output[k].read(forwarded_[k]);
  }

  static std::string formatDuration(std::chrono::nanoseconds d);

  /// Every input without a result or failure gets `kind`.
  void failUnresolved(FailureKind kind, const std::string& message);

  void giveUp(FailureKind kind, const std::string& lastCause);

  /// Cancellation: every worker is asked to send the results it has finished and stop (after its
  /// current input); those still busy after cancelGrace are killed. Every input without a result
  /// then is reported cancelled.
  void cancel(const std::string& message);

  /// The limit on a worker's start (its initializer): setupTimeout, else timeOutError.
  [[nodiscard]] std::optional<Duration> setupLimit() const noexcept {
    return opts_.setupTimeout ? opts_.setupTimeout : opts_.timeOutError;
  }

  void checkTimeouts();

  /// Options::memoryLimit, parent side: an input that grows past the limit and does not return
  /// (the worker checks only after each input) is found by its worker's resident memory, read
  /// every memoryPollInterval while it runs, and killed.
  void checkMemory();

  [[nodiscard]] std::size_t slotOf(const Slot& s) const noexcept { return static_cast<std::size_t>(&s - slots_.data()); }

  int pollTimeoutMs() const;

  void reportProgress(bool final);

  /// All inputs are accounted for: let idle workers exit, then reap them and their groups.
  void shutdown();

  static constexpr std::chrono::seconds stallGrace{3};
  /// How often the parent reads the resident memory of busy workers when memoryLimit is set.
  static constexpr std::chrono::milliseconds memoryPollInterval{50};
  /// See readOutput: a pipe that held less than outputBusyBytes is read again after outputQuiet.
  static constexpr std::chrono::milliseconds outputQuiet{2};
  static constexpr std::size_t outputBusyBytes = 16384;
  /// How long a cancelled call waits for its workers to send what they finished and stop.
  static constexpr std::chrono::milliseconds cancelGrace{200};
  static constexpr std::chrono::milliseconds initialStartBackoff{10};
  static constexpr std::chrono::milliseconds maxStartBackoff{1000};

  Options opts_;
  const Lifetime life_;
  JobBase* job_ = nullptr;
  std::size_t n_ = 0;
  std::uint64_t callEpoch_ = 0;
  std::size_t sizeLimit_ = SIZE_MAX; // most workers a pool starts
  std::unique_ptr<Launcher> launcher_;
  SharedRegion controls_;
  std::size_t controlBytes_ = 0; // the control blocks' part of controls_; the input areas follow
  std::vector<Slot> slots_;
  Dispatch dispatch_;
  std::size_t resolved_ = 0;
  std::size_t failedCount_ = 0;
  std::vector<Failure> failures_;
  Clock::time_point nextStartAttempt_{};
  std::chrono::milliseconds startBackoff_{initialStartBackoff};
  Clock::time_point lastProgress_{};
  Clock::time_point lastMemoryCheck_{};
  std::optional<ProgressBar> progressBar_; // Options::checkProgress, when stderr is a terminal
  bool gaveUp_ = false;
  bool inCall_ = false;          // open() began a call that has not ended
  bool openEnded_ = false;       // a stream: inputs come through extend()
  bool inputsComplete_ = true;   // no input will be added (always, for apply)
  bool draining_ = false;        // a stream stopping early: nothing new is handed out
  int closeFd_ = -1;             // readable when the pool is being closed
  int wakeFd_ = -1;              // readable when another thread added inputs (async calls)
  Fd stopFd_;                    // readable once the call's stopToken is triggered
  std::optional<std::stop_callback<StopSignal>> stopCb_;
  std::optional<std::size_t> failFastCause_; // the input whose failure stops the call (failFast)
  std::vector<pollfd> pfds_;
  std::vector<std::pair<std::size_t, int>> who_;
  std::size_t resolvedHere_ = 0;     // inputs resolved without a worker (see Insights::notRun)
  Insights* insightsOut_ = nullptr;  // the call's Options::insights, until it is filled
  Insights insights_;                // being gathered for insightsOut_
  std::uint64_t callStartNs_ = 0;    // monotonicNs at the call's start
  std::uint64_t parentNs_ = 0;       // the parent's time in drain() this call
  std::string forwarded_[2]; // whole worker lines read, for the parent's stdout and stderr
  Clock::time_point outputNow_{}; // when pollOnce began (which output pipes it watches)
};

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void validateOptions(const Options& o) {
  if (o.poolSize && *o.poolSize <= 0)
    throw OptionError(fmt::format("flock: poolSize must be at least 1 (got {})", *o.poolSize));
  if (o.timeOutError && o.timeOutError->count() <= 0)
    throw OptionError("flock: timeOutError must be a positive duration");
  if (o.setupTimeout && o.setupTimeout->count() <= 0)
    throw OptionError("flock: setupTimeout must be a positive duration");
  if (o.retries < 0) throw OptionError(fmt::format("flock: retries must be >= 0 (got {})", o.retries));
  if (o.restartBudget.maxRestarts < 0)
    throw OptionError(fmt::format("flock: restartBudget.maxRestarts must be >= 0 (got {})", o.restartBudget.maxRestarts));
  if (o.restartBudget.period.count() <= 0) throw OptionError("flock: restartBudget.period must be a positive duration");
  if (o.memoryLimit != 0 && o.memoryLimit < minMemoryLimit)
    throw OptionError(fmt::format("flock: memoryLimit is in bytes and must be 0 (no limit) or at least {} (got {})",
                                  minMemoryLimit, o.memoryLimit));
  if (o.workerOutput != WorkerOutput::inherit && o.workerOutput != WorkerOutput::forward &&
      o.workerOutput != WorkerOutput::prefix)
    throw OptionError(fmt::format("flock: workerOutput must be WorkerOutput::inherit, forward or prefix (got {})",
                                  static_cast<int>(o.workerOutput)));
}

FLOCK_ENGINE_INLINE Engine::Engine(const Options& opts, Lifetime life) : opts_(opts), life_(life) {
  validateOptions(opts);
  launcher_ = life == Lifetime::oneCall
                  ? std::unique_ptr<Launcher>(std::make_unique<ForkLauncher>())
                  : makeLauncher(opts.context);
}

FLOCK_ENGINE_INLINE Engine::~Engine() {
  if (life_ == Lifetime::pool) shutdown();
  for (auto& s : slots_)
    if (s.alive) killAndReap(s);
}

FLOCK_ENGINE_INLINE std::vector<pid_t> Engine::workerPids() const {
  std::vector<pid_t> pids;
  for (const auto& s : slots_)
    if (s.alive) pids.push_back(s.proc.pid);
  return pids;
}

FLOCK_ENGINE_INLINE void Engine::call(JobBase& job, const Options& callOpts, int closeFd) {
  open(job, callOpts, closeFd, false);
  while (step()) {
  }
}

FLOCK_ENGINE_INLINE void Engine::open(JobBase& job, const Options& callOpts, int closeFd,
                                      bool openEnded) {
  beginCall(job, callOpts);
  openEnded_ = openEnded;
  inputsComplete_ = !openEnded;
  closeFd_ = closeFd;
  if (n_ == 0 && !openEnded) {
    publishInsights();
    return;
  }
  inCall_ = true;
  guarded([&] {
    ensureSlots(openEnded ? SIZE_MAX : n_);
    dispatch_.begin(n_, {slots_.size(), opts_.batchSize, opts_.maxTasksPerWorker, opts_.retries,
                         opts_.restartBudget, job.wrap()});
    if (opts_.stopToken.stop_possible()) {
      int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (efd < 0) throwErrno("eventfd for cancellation");
      stopFd_ = Fd(efd, true);
      stopCb_.emplace(opts_.stopToken, StopSignal{efd});
    }
    job_->sink().reserve();
    noticeIdleDeaths();
    // A pool's workers that served earlier calls get their rows (those started now get theirs
    // in startWorker); a worker that died between calls is not this call's restart.
    if (insightsOut_)
      for (std::size_t i = 0; i < slots_.size(); ++i)
        if (slots_[i].alive && slots_[i].row == noRow) openRow(i);
    startMissing();
    topUpAll();
    job_->sink().prepare();
    lastProgress_ = Clock::now();
    progressBar_ = ProgressBar::forOptions(opts_);
  });
}

FLOCK_ENGINE_INLINE void Engine::extend(std::size_t newEnd) {
  if (!inCall_ || gaveUp_ || newEnd <= n_) return;
  dispatch_.extend(n_, newEnd);
  n_ = newEnd;
  guarded([&] { topUpAll(); });
}

FLOCK_ENGINE_INLINE bool Engine::step(int waitMs) {
  if (!inCall_) return false;
  if (openEnded_ && !inputsComplete_ && resolved_ == n_ && !anyOutstanding() && !gaveUp_)
    return true;
  if (running()) guarded([&] { pollOnce(waitMs); });
  if (running()) return true;
  finishCall();
  return false;
}

FLOCK_ENGINE_INLINE void Engine::stopEarly(std::chrono::milliseconds grace) noexcept {
  if (!inCall_) return;
  try {
    draining_ = true;
    dispatch_.drainUnassigned([](std::size_t, std::size_t) {});
    const auto deadline = Clock::now() + grace;
    while (anyOutstanding() && !gaveUp_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      pollOnce(static_cast<int>(left));
    }
    for (auto& s : slots_) {
      if (!s.alive || s.outstanding.empty()) continue;
      killAndReap(s);
      s.outstanding.clear();
    }
    draining_ = false;
    gaveUp_ = true;
    finishCall();
  } catch (...) {
    draining_ = false;
    abandonCall();
    inCall_ = false;
    publishInsights();
  }
}

FLOCK_ENGINE_INLINE void Engine::pollOnce(int capMs) {
  // (slot, 0 = results, 1 = pidfd, 2 = cancelled, 3 = commands writable, 4 = pool closing,
  // 5 = woken, 6 and 7 = stdout and stderr)
  pfds_.clear();
  who_.clear();
  outputNow_ = Clock::now();
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    auto& s = slots_[i];
    if (!s.alive) continue;
    if (!s.eof) {
      pfds_.push_back({s.proc.results.get(), POLLIN, 0});
      who_.emplace_back(i, 0);
    }
    pfds_.push_back({s.proc.pidfd.get(), POLLIN, 0});
    who_.emplace_back(i, 1);
    if (s.pendingAt < s.pending.size()) {
      pfds_.push_back({s.proc.commands.get(), POLLOUT, 0});
      who_.emplace_back(i, 3);
    }
    for (int k = 0; k < 2; ++k) {
      // Read busy workers' pipes too: a worker must never wait on a full pipe for long.
      if (!s.output[k].open() || outputNow_ < s.outputQuietUntil[k]) continue;
      pfds_.push_back({s.output[k].fd(), POLLIN, 0});
      who_.emplace_back(i, 6 + k);
    }
  }
  if (stopFd_) {
    pfds_.push_back({stopFd_.get(), POLLIN, 0});
    who_.emplace_back(SIZE_MAX, 2);
  }
  if (closeFd_ >= 0) {
    pfds_.push_back({closeFd_, POLLIN, 0});
    who_.emplace_back(SIZE_MAX, 4);
  }
  if (wakeFd_ >= 0) {
    pfds_.push_back({wakeFd_, POLLIN, 0});
    who_.emplace_back(SIZE_MAX, 5);
  }
  int timeout = pollTimeoutMs();
  if (capMs >= 0) timeout = timeout < 0 ? capMs : std::min(timeout, capMs);
  int rc = ::poll(pfds_.data(), pfds_.size(), timeout);
  if (rc < 0) {
    if (errno == EINTR) return;
    throwErrno("poll over the workers");
  }
  for (std::size_t k = 0; k < pfds_.size(); ++k) {
    if (pfds_[k].revents == 0) continue;
    auto [i, what] = who_[k];
    if (what == 5) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto r = ::read(wakeFd_, &count, sizeof count);
      continue;
    }
    if (what == 2 || what == 4) {
      cancel(what == 2 ? "cancelled before it finished"
                       : "cancelled: the pool was closed while the call ran");
      break;
    }
    auto& s = slots_[i];
    if (!s.alive) continue;
    if (what == 0) drain(s);
    else if (what == 1) handleExit(i);
    else if (what >= 6) readOutput(s, what - 6);
    else flushPending(s);
  }
  writeForwardedLines();
  if (gaveUp_) return;
  if (failFastCause_ && !draining_) {
    cancel(fmt::format("input {} failed and failFast is on", *failFastCause_));
    return;
  }
  checkTimeouts();
  checkMemory();
  checkStalls();
  if (draining_) {
    // A death requeued what its worker held: a stopping stream runs none of it.
    dispatch_.drainUnassigned([](std::size_t, std::size_t) {});
    return;
  }
  replaceDead();
  if (gaveUp_) return;
  topUpAll();
  reportProgress(false);
}

FLOCK_ENGINE_INLINE void Engine::finishCall() {
  inCall_ = false;
  stopCb_.reset();
  stopFd_ = Fd{};
  publishInsights(); // before a one-shot call's workers stop: their peak memory is read while they
                     // run
  if (life_ == Lifetime::oneCall) {
    shutdown();
  } else {
    // Idle now: nothing writes the control blocks until the next batch. What the call's
    // inputs printed is in the pipes (a worker flushes its stdio before acknowledging a
    // batch): it is written now, unfinished lines included, not at the next call.
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].alive) continue;
      control(i).current.store(-1, std::memory_order_release);
      for (int k = 0; k < 2; ++k) slots_[i].output[k].finish(forwarded_[k], "", false);
    }
    writeForwardedLines();
  }
  reportProgress(true);
}

FLOCK_ENGINE_INLINE void Engine::workerMain(void* ctx, int commandFd, int resultFd) {
  auto* c = static_cast<LaunchContext*>(ctx);
  Engine& e = *c->engine;
  if (e.life_ == Lifetime::oneCall) {
    InheritedJobRunner runner(*e.job_);
    workerLoop(runner, e.control(c->slot), commandFd, resultFd, e.opts_.initializer,
               e.opts_.finalizer);
  } else {
    PoolRunner runner;
    workerLoop(
        runner, e.control(c->slot), commandFd, resultFd, e.opts_.initializer, e.opts_.finalizer,
        std::span<std::byte>(static_cast<std::byte*>(e.controls_.data()), e.controls_.size()));
  }
}

FLOCK_ENGINE_INLINE void Engine::startWorker(std::size_t i) {
  auto& s = slots_[i];
  auto* ctl = new (&control(i)) WorkerControl{};
  ctl->memoryLimit.store(opts_.memoryLimit, std::memory_order_relaxed);
  LaunchContext ctx{this, i};
  s = Slot{};
  const bool mainThread = ::gettid() == ::getpid();
  WorkerStart start{&Engine::workerMain, &ctx, controls_.fd(), controls_.size(), i,
                    life_ == Lifetime::oneCall || mainThread};
  Fd readEnds[2], writeEnds[2];
  const bool forwarding = opts_.workerOutput != WorkerOutput::inherit;
  if (forwarding) {
    for (int k = 0; k < 2; ++k) {
      if (::fcntl(k + 1, F_GETFD) < 0) {
        // The parent has this stream closed: the worker writes to /dev/null, as with inherit.
        const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null < 0) throwErrno("open /dev/null for a worker's output");
        writeEnds[k] = Fd(aboveStdio(null, "moving /dev/null above fd 2"), true);
        continue;
      }
      int p[2];
      if (::pipe2(p, O_CLOEXEC) < 0) throwErrno("pipe for a worker's output");
      readEnds[k] = Fd(aboveStdio(p[0], "moving a worker's output pipe above fd 2"), true);
      writeEnds[k] = Fd(aboveStdio(p[1], "moving a worker's output pipe above fd 2"), true);
      setNonBlocking(readEnds[k].get());
    }
    start.stdoutFd = writeEnds[0].get();
    start.stderrFd = writeEnds[1].get();
    if (opts_.workerOutput == WorkerOutput::prefix) control(i).outputNonce = newOutputNonce();
  }
  s.launchNs = monotonicNs();
  s.proc = launcher_->launch(start);
  if (forwarding) {
    for (int k = 0; k < 2; ++k)
      if (readEnds[k])
        s.output[k] = OutputPipe(std::move(readEnds[k]), static_cast<int>(i),
                               opts_.workerOutput == WorkerOutput::prefix, control(i).outputNonce);
  }
  s.alive = true;
  if (insightsOut_) openRow(i);
  s.startedAt = s.lastChange = s.lastBytes = Clock::now();
  startBackoff_ = initialStartBackoff;
  if (launcher_->portable()) {
    // Validated with the pool's options: both are plain functions here.
    auto* const* init = opts_.initializer.target<void (*)()>();
    auto* const* fin = opts_.finalizer.target<void (*)()>();
    const auto setup = encodeSetup(init ? *init : nullptr, fin ? *fin : nullptr);
    appendFrame(s, FrameKind::setup, setup.data(), setup.size());
    flushPending(s);
  }
}

FLOCK_ENGINE_INLINE void Engine::ensureSlots(std::size_t inputs) {
  if (!slots_.empty()) return;
  const std::size_t count =
      life_ == Lifetime::oneCall ? workerCount(opts_, inputs) : workerCount(opts_, sizeLimit_);
  // The control blocks, then (pools) each worker's two shared input areas, page-aligned. Their
  // pages are touched only when a batch uses them.
  const std::size_t page = 4096;
  controlBytes_ = (sizeof(WorkerControl) * count + page - 1) / page * page;
  const std::size_t bytes =
      controlBytes_ + (life_ == Lifetime::pool ? count * 2 * 2 * sharedAreaBytes : 0);
  controls_ = launcher_->portable() ? SharedRegion::withFd(bytes) : SharedRegion(bytes);
  slots_.resize(count);
}

FLOCK_ENGINE_INLINE void Engine::startMissing() {
  std::exception_ptr firstStartError;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].alive) continue;
    try {
      startWorker(i);
    } catch (const Error&) {
      if (!firstStartError) firstStartError = std::current_exception();
      noteStartFailure(false);
    }
  }
  if (!anyAlive() && firstStartError) std::rethrow_exception(firstStartError);
}

FLOCK_ENGINE_INLINE void Engine::noticeIdleDeaths() {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    auto& s = slots_[i];
    if (!s.alive) continue;
    pollfd p{s.proc.pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) handleExit(i);
  }
}

FLOCK_ENGINE_INLINE void Engine::beginCall(JobBase& job, const Options& callOpts) {
  job_ = &job;
  n_ = job.size();
  opts_.timeOutError = callOpts.timeOutError;
  opts_.batchSize = callOpts.batchSize;
  opts_.retries = callOpts.retries;
  opts_.stopToken = callOpts.stopToken;
  opts_.restartBudget = callOpts.restartBudget;
  opts_.onProgress = callOpts.onProgress;
  opts_.checkProgress = callOpts.checkProgress;
  opts_.progressLines = callOpts.progressLines;
  opts_.failFast = callOpts.failFast;
  opts_.memoryLimit = callOpts.memoryLimit;
  validateOptions(opts_);
  for (std::size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].alive) control(i).memoryLimit.store(opts_.memoryLimit, std::memory_order_relaxed);
  lastMemoryCheck_ = {};
  failFastCause_.reset();
  ++callEpoch_;
  dispatch_.begin(0, {});
  resolved_ = failedCount_ = 0;
  failures_.clear();
  nextStartAttempt_ = {};
  startBackoff_ = initialStartBackoff;
  progressBar_.reset();
  gaveUp_ = false;
  resolvedHere_ = 0;
  insightsOut_ = callOpts.insights;
  if (insightsOut_) {
    insights_ = Insights{};
    callStartNs_ = monotonicNs();
    parentNs_ = 0;
  }
  const auto now = Clock::now();
  for (auto& s : slots_) {
    s.lastCurrent = -1;
    s.lastChange = now;
  }
}

FLOCK_ENGINE_INLINE void Engine::abandonCall() noexcept {
  for (auto& s : slots_)
    if (s.alive) killAndReap(s);
  for (auto& s : slots_) s.outstanding.clear();
}

FLOCK_ENGINE_INLINE void Engine::appendFrame(Slot& s, FrameKind kind, const void* payload,
                                             std::size_t n) {
  FrameHeader h{FrameHeader::magicValue, kind, n};
  const auto* hp = reinterpret_cast<const std::byte*>(&h);
  s.pending.insert(s.pending.end(), hp, hp + sizeof h);
  const auto* p = static_cast<const std::byte*>(payload);
  if (n > 0) s.pending.insert(s.pending.end(), p, p + n);
}

FLOCK_ENGINE_INLINE void Engine::flushPending(Slot& s) {
  while (s.pendingAt < s.pending.size()) {
    const ssize_t w = ::send(s.proc.commands.get(), s.pending.data() + s.pendingAt,
                             s.pending.size() - s.pendingAt, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EPIPE || errno == ECONNRESET) break;
      throwErrno("write to a worker channel");
    }
    s.pendingAt += static_cast<std::size_t>(w);
  }
  s.pending.clear();
  s.pendingAt = 0;
}

FLOCK_ENGINE_INLINE void Engine::noteStartFailure(bool countAgainstBudget,
                                                  const std::string& cause) {
  nextStartAttempt_ = Clock::now() + startBackoff_;
  startBackoff_ = std::min(startBackoff_ * 2, maxStartBackoff);
  if (countAgainstBudget) noteFailedStart(FailureKind::notRun, cause);
}

FLOCK_ENGINE_INLINE void Engine::replaceDead() {
  if (!hasWork() || Clock::now() < nextStartAttempt_) return;
  for (std::size_t i = 0; i < slots_.size() && !gaveUp_; ++i) {
    if (slots_[i].alive) continue;
    try {
      startWorker(i);
    } catch (const Error& e) {
      std::string_view what = e.what();
      if (what.starts_with("flock: ")) what.remove_prefix(7);
      noteStartFailure(!anyAlive(), fmt::format("could not start a replacement worker: {}", what));
      return;
    }
  }
}

FLOCK_ENGINE_INLINE void Engine::topUpAll() {
  for (auto& s : slots_) {
    if (!s.alive || !s.outstanding.empty()) continue;
    if (auto b = dispatch_.nextForIdle(viewOf(s))) sendBatch(s, *b);
    if (dispatch_.shouldRecycle(viewOf(s))) {
      s.stopping = true;
      sendStop(s);
    }
  }
  for (auto& s : slots_)
    if (s.alive)
      if (auto b = dispatch_.nextAhead(viewOf(s))) sendBatch(s, *b);
}

FLOCK_ENGINE_INLINE bool Engine::encodeBatchInputs(Slot& s, Batch& batch, FrameWriter& frames) {
  ByteWriter w(s.pending);
  std::exception_ptr error;
  const std::size_t encoded = job_->encodeInputs(batch.begin, batch.end, w, error);
  if (encoded == batch.end) return true;
  auto [type, message] = [&] {
    try {
      std::rethrow_exception(error);
    } catch (...) {
      return describeCurrentException();
    }
  }();
  addFailure({encoded,
              FailureKind::codec,
              "the input could not be encoded: " + message,
              type,
              0,
              std::nullopt,
              0,
              -1,
              {}});
  resolveHere(encoded, 1);
  dispatch_.giveBack(encoded + 1, batch.end);
  batch.end = encoded;
  if (batch.end == batch.begin) {
    frames.abandon();
    flushPending(s);
    return false;
  }
  const RunHead head{batch.begin, batch.end};
  std::memcpy(s.pending.data() + frames.start() + sizeof(FrameHeader), &head, sizeof head);
  return true;
}

FLOCK_ENGINE_INLINE void Engine::sendBatch(Slot& s, Batch batch) {
  FrameWriter frames(s.pending);
  if (job_->portable() && s.callEpoch != callEpoch_) {
    // A pool's worker learns the call's callable before its first batch of the call.
    s.callEpoch = callEpoch_;
    frames.begin(FrameKind::call);
    ByteWriter w(s.pending);
    job_->encodeCall(w);
    frames.end();
  }
  if (job_->portable() && controls_.size() > controlBytes_) {
    // Raw inputs and raw results that fit go through the worker's shared area: one copy each,
    // no socket. An area is free when no batch the worker holds uses it.
    const std::size_t rawBytes = job_->rawInputBytes(batch.begin, batch.end);
    bool inputsFit = rawBytes > 0 && rawBytes <= sharedAreaBytes;
    const std::size_t resultBytes = (batch.end - batch.begin) * job_->sink().rawElementSize();
    const bool resultsFit =
        job_->sink().rawResults() && resultBytes > 0 && resultBytes <= sharedAreaBytes;
    const std::size_t slot = static_cast<std::size_t>(&s - slots_.data());
    for (int area = 0; area < 2 && (inputsFit || resultsFit); ++area) {
      if (std::any_of(s.outstanding.begin(), s.outstanding.end(),
                      [&](const Batch& b) { return b.area == area; }))
        continue;
      const std::size_t at =
          controlBytes_ + (slot * 2 + static_cast<std::size_t>(area)) * 2 * sharedAreaBytes;
      SharedArea shared;
      if (inputsFit) {
        try {
          job_->copyRawInputs(batch.begin, batch.end,
                              static_cast<std::byte*>(controls_.data()) + at);
          shared.inputOffset = at;
          shared.inputBytes = rawBytes;
        } catch (...) {
          inputsFit = false; // an iterator that threw: encodeInputs finds the input that fails
        }
      }
      if (resultsFit) {
        shared.resultOffset = at + sharedAreaBytes;
        shared.resultBytes = resultBytes;
        batch.resultOffset = at + sharedAreaBytes;
      }
      frames.begin(FrameKind::runShared);
      frames.appendRaw(RunHead{batch.begin, batch.end});
      frames.appendRaw(shared);
      if (!inputsFit && !encodeBatchInputs(s, batch, frames)) return;
      frames.end();
      batch.area = area;
      s.assigned += batch.end - batch.begin;
      s.outstanding.push_back(batch);
      flushPending(s);
      return;
    }
  }
  frames.begin(FrameKind::run);
  frames.appendRaw(RunHead{batch.begin, batch.end});
  if (job_->portable() && !encodeBatchInputs(s, batch, frames)) return;
  frames.end();
  s.assigned += batch.end - batch.begin;
  s.outstanding.push_back(batch);
  // A dead peer is noticed through its pidfd; its batches are then requeued.
  flushPending(s);
}

FLOCK_ENGINE_INLINE void Engine::resolve(Slot& s, std::size_t begin, std::size_t count) {
  resolved_ += count;
  s.finished += count;
  dispatch_.noteFinished();
  job_->sink().done(begin, count);
}

FLOCK_ENGINE_INLINE void Engine::resolveHere(std::size_t begin, std::size_t count) {
  resolved_ += count;
  resolvedHere_ += count;
  job_->sink().done(begin, count);
}

FLOCK_ENGINE_INLINE void Engine::addFailure(Failure f) {
  ++failedCount_;
  if (insightsOut_) ++insights_.failures[static_cast<std::size_t>(f.kind)];
  if (opts_.failFast && !failFastCause_ && f.kind != FailureKind::cancelled)
    failFastCause_ = f.index;
  if (!job_->sink().keepFailure(f)) failures_.push_back(std::move(f));
}

FLOCK_ENGINE_INLINE void Engine::drain(Slot& s) {
  struct Timer { // insights: the parent's time on results
    std::uint64_t* total;
    std::uint64_t start = total ? monotonicNs() : 0;
    ~Timer() {
      if (total) *total += monotonicNs() - start;
    }
  } timer{insightsOut_ ? &parentNs_ : nullptr};
  try {
    for (;;) {
      if (s.direct.remaining > 0) {
        ssize_t r = ::read(s.proc.results.get(), s.direct.dst, s.direct.remaining);
        if (r < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) return;
          // A worker that died with commands unread resets the connection: that is its end.
          if (errno == ECONNRESET) {
            s.eof = true;
            return;
          }
          throwErrno("read from a worker");
        }
        if (r == 0) {
          s.eof = true;
          return;
        }
        s.lastBytes = Clock::now();
        s.bytesIn += static_cast<std::uint64_t>(r);
        s.direct.dst += r;
        s.direct.remaining -= static_cast<std::size_t>(r);
        if (s.direct.remaining == 0) finishRawBlock(s);
        continue;
      }
      auto st = s.reader.fill(s.proc.results.get());
      if (st == FrameReader::Fill::data) s.lastBytes = Clock::now();
      processFrames(s);
      if (st == FrameReader::Fill::wouldBlock) return;
      if (st == FrameReader::Fill::eof) {
        s.eof = true;
        return;
      }
    }
  } catch (const ProtocolError& e) {
    s.protocolError = e.what();
    s.eof = true;
    killGroup(s);
  }
}

FLOCK_ENGINE_INLINE void Engine::processFrames(Slot& s) {
  while (auto f = s.reader.next()) {
    switch (f->kind) {
    case FrameKind::result: onResult(s, f->payload); break;
    case FrameKind::rawBlock: onRawBlock(s, f->payload, true); break;
    case FrameKind::failure: onFailure(s, f->payload); break;
    case FrameKind::batchDone: onBatchDone(s, f->payload); break;
    case FrameKind::sharedBlock: onSharedBlock(s, f->payload); break;
    case FrameKind::partial: onPartial(s, f->payload); break;
    case FrameKind::timing: onTiming(s, f->payload); break;
    default:
      throw ProtocolError(fmt::format("flock: unexpected frame kind {} from a worker",
                                      static_cast<unsigned>(f->kind)));
    }
  }
  // A large raw block: copy what has arrived and read the rest straight into the results.
  if (auto p = s.reader.partial();
      p && p->kind == FrameKind::rawBlock && p->payload.size() >= sizeof(RawBlockHead)) {
    onRawBlock(s, p->payload, false);
    s.reader.discardPartial();
  }
}

FLOCK_ENGINE_INLINE Batch& Engine::expectIndex(Slot& s, std::uint64_t index) {
  if (s.outstanding.empty())
    throw ProtocolError(
        fmt::format("flock: a worker sent a record for input {} it was not running", index));
  auto& b = s.outstanding.front();
  if (index < b.next || index >= b.end)
    throw ProtocolError(
        fmt::format("flock: a worker sent a record for input {} outside its batch [{}, {})", index,
                    b.next, b.end));
  return b;
}

FLOCK_ENGINE_INLINE void Engine::onResult(Slot& s, std::span<const std::byte> payload) {
  if (job_->sink().rawResults())
    throw ProtocolError("flock: unexpected result frame from a worker");
  const std::uint64_t index = headOf<ResultHead>(payload).index;
  auto& b = expectIndex(s, index);
  if (index != b.next) throw ProtocolError("flock: a worker sent results out of order");
  ByteReader r(afterHead<ResultHead>(payload));
  try {
    job_->sink().accept(static_cast<std::size_t>(index), r);
  } catch (...) {
    auto [type, message] = describeCurrentException();
    addFailure({static_cast<std::size_t>(index),
                FailureKind::codec,
                "the result could not be decoded: " + message,
                type,
                0,
                std::nullopt,
                s.proc.pid,
                -1,
                {}});
  }
  ++b.next;
  resolve(s, static_cast<std::size_t>(index), 1);
}

FLOCK_ENGINE_INLINE void Engine::onRawBlock(Slot& s, std::span<const std::byte> payload,
                                            bool complete) {
  if (!job_->sink().rawResults())
    throw ProtocolError("flock: unexpected raw result block from a worker");
  const auto [begin, count] = headOf<RawBlockHead>(payload);
  auto& b = expectIndex(s, begin);
  const std::size_t elem = job_->sink().rawElementSize();
  if (begin != b.next || count == 0 || count > b.end - b.next)
    throw ProtocolError(
        fmt::format("flock: raw result block [{}, +{}) does not continue batch [{}, {})", begin,
                    count, b.next, b.end));
  const std::size_t bytes = static_cast<std::size_t>(count) * elem;
  const std::size_t have = payload.size() - sizeof(RawBlockHead);
  if (complete ? have != bytes : have >= bytes)
    throw ProtocolError("flock: raw result block of the wrong size");
  std::byte* dst = job_->sink().rawDestination(static_cast<std::size_t>(begin));
  if (have > 0) std::memcpy(dst, afterHead<RawBlockHead>(payload).data(), have);
  s.direct = {dst + have, bytes - have, static_cast<std::size_t>(count)};
  if (complete) finishRawBlock(s);
}

FLOCK_ENGINE_INLINE void Engine::onSharedBlock(Slot& s, std::span<const std::byte> payload) {
  if (payload.size() != sizeof(RawBlockHead))
    throw ProtocolError("flock: malformed shared result block");
  const auto [begin, count] = headOf<RawBlockHead>(payload);
  auto& b = expectIndex(s, begin);
  if (!job_->sink().rawResults() || b.resultOffset == 0)
    throw ProtocolError(
        "flock: a worker announced results in a shared area its batch does not have");
  if (begin != b.next || count == 0 || count > b.end - b.next)
    throw ProtocolError(
        fmt::format("flock: shared result block [{}, +{}) does not continue batch [{}, {})", begin,
                    count, b.next, b.end));
  const std::size_t elem = job_->sink().rawElementSize();
  std::memcpy(job_->sink().rawDestination(static_cast<std::size_t>(begin)),
              static_cast<const std::byte*>(controls_.data()) + b.resultOffset +
                  (begin - b.begin) * elem,
              static_cast<std::size_t>(count) * elem);
  s.bytesIn += static_cast<std::uint64_t>(count) * elem;
  b.next += count;
  resolve(s, static_cast<std::size_t>(begin), static_cast<std::size_t>(count));
}

FLOCK_ENGINE_INLINE void Engine::onPartial(Slot& s, std::span<const std::byte> payload) {
  if (payload.size() < sizeof(RawBlockHead)) throw ProtocolError("flock: malformed partial fold");
  const auto [begin, count] = headOf<RawBlockHead>(payload);
  auto& b = expectIndex(s, begin);
  if (begin != b.next || count > b.end - b.next)
    throw ProtocolError(
        fmt::format("flock: partial fold [{}, +{}) does not continue batch [{}, {})", begin, count,
                    b.next, b.end));
  ByteReader r(afterHead<RawBlockHead>(payload));
  bool taken = false;
  try {
    taken = job_->sink().acceptPartial(r);
  } catch (...) {
    // The fold's bytes are there but cannot be decoded: each input it covers fails.
    auto [type, message] = describeCurrentException();
    for (std::size_t i = begin; i < begin + count; ++i)
      addFailure({i,
                  FailureKind::codec,
                  "the partial fold holding this input could not be decoded: " + message,
                  type,
                  0,
                  std::nullopt,
                  s.proc.pid,
                  -1,
                  {}});
    taken = true;
  }
  if (!taken) throw ProtocolError("flock: unexpected partial fold from a worker");
  b.next += count;
  if (count > 0) resolve(s, static_cast<std::size_t>(begin), static_cast<std::size_t>(count));
}

FLOCK_ENGINE_INLINE void Engine::finishRawBlock(Slot& s) {
  auto& b = s.outstanding.front();
  const std::size_t begin = b.next;
  b.next += s.direct.count;
  resolve(s, begin, s.direct.count);
  s.direct = {};
}

FLOCK_ENGINE_INLINE void Engine::onFailure(Slot& s, std::span<const std::byte> payload) {
  Failure f = parseFailure(payload);
  if (f.index == static_cast<std::size_t>(workerFailureIndex)) {
    // The worker failed before running anything (its initializer threw); it exits next.
    s.setupError = f.type.empty() ? f.message : fmt::format("{}: {}", f.type, f.message);
    return;
  }
  auto& b = expectIndex(s, f.index);
  if (f.index != b.next) throw ProtocolError("flock: a worker sent results out of order");
  f.pid = s.proc.pid;
  ++b.next;
  const std::size_t index = f.index;
  addFailure(std::move(f));
  resolve(s, index, 1);
}

FLOCK_ENGINE_INLINE void Engine::onTiming(Slot& s, std::span<const std::byte> payload) {
  if (!insightsOut_ || s.row == noRow)
    throw ProtocolError("flock: unexpected timing frame from a worker");
  const auto head = headOf<TimingHead>(payload);
  if (s.outstanding.empty() || head.count > maxTimedInputs ||
      payload.size() !=
          sizeof(TimingHead) + static_cast<std::size_t>(head.count) * sizeof(TimedInput))
    throw ProtocolError("flock: malformed timing frame");
  const auto& b = s.outstanding.front();
  if (head.begin != b.begin || head.end != b.end)
    throw ProtocolError("flock: timing frame for the wrong batch");
  auto& w = insights_.workers[s.row];
  w.tasks += std::chrono::nanoseconds(static_cast<std::int64_t>(head.tasksNs));
  w.peakRss = std::max(w.peakRss, head.peakRss);
  const auto* records = afterHead<TimingHead>(payload).data();
  for (std::size_t k = 0; k < head.count; ++k) {
    TimedInput t;
    std::memcpy(&t, records + k * sizeof t, sizeof t);
    if (t.index < b.begin || t.index >= b.end)
      throw ProtocolError("flock: timing frame names an input outside its batch");
    keepSlow({static_cast<std::size_t>(t.index),
              std::chrono::nanoseconds(static_cast<std::int64_t>(t.ns))});
  }
}

FLOCK_ENGINE_INLINE void Engine::keepSlow(InputTime t) {
  auto& slow = insights_.slowest;
  if (slow.size() < Insights::slowestKept) {
    slow.push_back(t);
    return;
  }
  auto fastest =
      std::min_element(slow.begin(), slow.end(), [](const InputTime& a, const InputTime& b) {
        return a.duration < b.duration;
      });
  if (t.duration > fastest->duration) *fastest = t;
}

FLOCK_ENGINE_INLINE void Engine::openRow(std::size_t i) {
  auto& s = slots_[i];
  s.row = insights_.workers.size();
  WorkerInsights w;
  w.pid = s.proc.pid;
  insights_.workers.push_back(w);
  s.rowFinished = s.finished;
  s.rowBusyNs = s.busyNs;
  s.rowBytes = s.reader.received() + s.bytesIn;
  control(i).insights.store(1, std::memory_order_release);
}

FLOCK_ENGINE_INLINE void Engine::closeRow(std::size_t i, bool ended) noexcept {
  auto& s = slots_[i];
  if (s.row == noRow || !insightsOut_) {
    s.row = noRow;
    return;
  }
  auto& w = insights_.workers[s.row];
  s.row = noRow;
  auto& ctl = control(i);
  ctl.insights.store(0, std::memory_order_relaxed);
  const std::uint64_t now = monotonicNs();
  w.inputs = s.finished - s.rowFinished;
  w.bytesSent = s.reader.received() + s.bytesIn - s.rowBytes;
  std::uint64_t from = now; // never ready: never idle in the call
  if (ctl.serving.load(std::memory_order_acquire) != 0) {
    const std::uint64_t ready = ctl.readyNs.load(std::memory_order_relaxed);
    w.startup = std::chrono::nanoseconds(
        ready > s.launchNs ? static_cast<std::int64_t>(ready - s.launchNs) : 0);
    from = std::max(callStartNs_, ready);
  }
  const std::uint64_t present = now > from ? now - from : 0, busy = s.busyNs - s.rowBusyNs;
  w.idle = std::chrono::nanoseconds(present > busy ? static_cast<std::int64_t>(present - busy) : 0);
  if (s.alive && s.proc.pid > 0)
    w.peakRss = std::max(w.peakRss, peakResident(s.proc.pid)); // 0 once it has exited
  w.ended = ended;
}

FLOCK_ENGINE_INLINE void Engine::publishInsights() noexcept {
  if (!insightsOut_) return;
  for (std::size_t i = 0; i < slots_.size(); ++i) closeRow(i, false);
  insights_.wall =
      std::chrono::nanoseconds(static_cast<std::int64_t>(monotonicNs() - callStartNs_));
  insights_.parentResults = std::chrono::nanoseconds(static_cast<std::int64_t>(parentNs_));
  insights_.inputs = resolved_;
  insights_.notRun = resolvedHere_;
  std::sort(insights_.slowest.begin(), insights_.slowest.end(),
            [](const InputTime& a, const InputTime& b) {
              return a.duration != b.duration ? a.duration > b.duration : a.index < b.index;
            });
  *std::exchange(insightsOut_, nullptr) = std::move(insights_);
}

FLOCK_ENGINE_INLINE void Engine::onBatchDone(Slot& s, std::span<const std::byte> payload) {
  if (payload.size() != sizeof(BatchDoneBody) || s.outstanding.empty())
    throw ProtocolError("flock: malformed batch acknowledgement");
  const auto done = headOf<BatchDoneBody>(payload);
  auto& b = s.outstanding.front();
  if (done.begin != b.begin || done.end != b.end)
    throw ProtocolError("flock: batch acknowledgement for the wrong batch");
  if (b.next != b.end)
    throw ProtocolError("flock: a worker acknowledged a batch with missing results");
  dispatch_.batchFinished(b.end - b.begin, done.ns);
  s.busyNs += done.ns;
  s.outstanding.pop_front();
}

FLOCK_ENGINE_INLINE void Engine::killGroup(Slot& s) noexcept {
  s.killed = true;
  // The worker leads its own process group: this also kills what it started. While the worker
  // is not yet reaped its pid cannot be reused, so the group id is still ours.
  ::kill(-s.proc.pid, SIGKILL);
  ::kill(s.proc.pid, SIGKILL);
}

FLOCK_ENGINE_INLINE void Engine::killAndReap(Slot& s) noexcept {
  closeRow(static_cast<std::size_t>(&s - slots_.data()),
           false); // while it runs: its peak memory is readable
  killGroup(s);
  const auto status = reap(s);
  endOutput(s, status);
  s.alive = false;
  s.proc = WorkerProcess{};
  s.pending.clear();
  s.pendingAt = 0;
}

FLOCK_ENGINE_INLINE void Engine::handleExit(std::size_t i) {
  auto& s = slots_[i];
  if (!s.eof && s.protocolError.empty()) drain(s); // results it sent before dying still count
  // Kill stragglers in its group (grandchildren holding our channel) before reaping the leader.
  ::kill(-s.proc.pid, SIGKILL);
  const auto status = reap(s);
  const pid_t pid = s.proc.pid;
  s.alive = false;
  endOutput(s, status);

  const bool expected = s.stopping && s.outstanding.empty() && status && WIFEXITED(*status) &&
                        WEXITSTATUS(*status) == 0;
  if (!expected) accountForDeath(i, status, pid);
  closeRow(i, true);
  s.proc = WorkerProcess{};
  s.pending.clear();
  s.pendingAt = 0;
}

FLOCK_ENGINE_INLINE void Engine::accountForDeath(std::size_t i, std::optional<int> status,
                                                 pid_t pid) {
  auto& s = slots_[i];
  const std::int64_t current = control(i).current.load(std::memory_order_acquire);
  s.channelLost = status && WIFEXITED(*status) && WEXITSTATUS(*status) == workerChannelLostExit;
  if (s.channelLost && control(i).serving.load(std::memory_order_acquire) == 0 &&
      s.setupError.empty())
    s.setupError = "the initializer closed or replaced the worker's channel to the parent";
  const DeathVerdict verdict =
      attributeDeath(s.outstanding, current, !s.protocolError.empty() || s.channelLost);
  s.outstanding.clear();
  s.direct = {};
  const auto& culprit = verdict.culprit;
  if (insightsOut_ && s.row != noRow) ++insights_.restarts;
  if (culprit) {
    Failure f = deathFailure(s, *culprit, status, pid);
    if (!dispatch_.applyVerdict(verdict, f.kind != FailureKind::protocol)) {
      addFailure(std::move(f));
      resolve(s, *culprit, 1);
    } else if (insightsOut_) {
      ++insights_.retries;
    }
  } else {
    dispatch_.applyVerdict(verdict, false);
  }
  if (s.finished == 0 && !culprit) {
    // A worker that died outside any input without finishing anything (its initializer
    // failed, say): a fork storm is ended by the restart budget.
    if (!s.setupError.empty())
      noteFailedStart(FailureKind::setup,
                      fmt::format("worker {} initializer failed: {}", pid, s.setupError));
    else noteFailedStart(FailureKind::notRun, describeStatus(status, pid));
  }
}

FLOCK_ENGINE_INLINE void Engine::checkStalls() {
  const auto now = Clock::now();
  for (auto& s : slots_) {
    const std::size_t pending = s.reader.pending() + s.direct.remaining;
    if (!s.alive || s.eof || !s.protocolError.empty() || pending == 0) continue;
    if (now - s.lastBytes > stallGrace) {
      s.protocolError = fmt::format(
          "truncated frame (an incomplete frame, {} bytes missing or unparsed, then silence)",
          pending);
      killGroup(s);
    }
  }
}

FLOCK_ENGINE_INLINE std::string Engine::describeStatus(std::optional<int> status, pid_t pid) {
  if (!status)
    return fmt::format("worker {} ended; its exit status was collected by another wait call", pid);
  if (WIFSIGNALED(*status))
    return fmt::format("worker {} was killed by {}", pid, signalName(WTERMSIG(*status)));
  if (WIFEXITED(*status))
    return fmt::format("worker {} exited with status {}", pid, WEXITSTATUS(*status));
  return fmt::format("worker {} ended (status 0x{:x})", pid, *status);
}

FLOCK_ENGINE_INLINE Failure Engine::deathFailure(const Slot& s, std::size_t index,
                                                 std::optional<int> status, pid_t pid) const {
  Failure f;
  f.index = index;
  f.pid = pid;
  if (!s.protocolError.empty()) {
    f.kind = FailureKind::protocol;
    f.message =
        fmt::format("the worker sent a corrupt frame and was replaced: {}", s.protocolError);
    return f;
  }
  if (s.channelLost) {
    f.kind = FailureKind::protocol;
    f.message = "the task closed or replaced the worker's channel to the parent (a task must not close file "
                "descriptors it did not open); the worker was replaced";
    return f;
  }
  if (s.killedAtMemory != 0) {
    f.kind = FailureKind::outOfMemory;
    f.message = fmt::format(
        "the worker's resident memory reached {} while running this input, past the memoryLimit "
        "of {}; the worker was killed and replaced",
        formatBytes(s.killedAtMemory), formatBytes(opts_.memoryLimit));
    return f;
  }
  if (status && WIFEXITED(*status) && WEXITSTATUS(*status) == workerOutOfMemoryExit &&
      control(slotOf(s)).memoryCause.load(std::memory_order_acquire) != 0) {
    const auto& ctl = control(slotOf(s));
    const std::uint64_t peak = ctl.memoryPeak.load(std::memory_order_relaxed);
    f.kind = FailureKind::outOfMemory;
    if (ctl.memoryCause.load(std::memory_order_relaxed) == 2) {
      f.type = "std::bad_alloc";
      f.message = fmt::format(
          "an allocation failed under the memoryLimit of {} (the worker's peak resident memory was "
          "{}); the worker was replaced",
          formatBytes(opts_.memoryLimit), formatBytes(peak));
    } else {
      f.message = fmt::format(
          "the worker's resident memory peaked at {} while running this input, past the "
          "memoryLimit of {}; the worker was replaced",
          formatBytes(peak), formatBytes(opts_.memoryLimit));
    }
    return f;
  }
  if (s.timedOut) {
    f.kind = FailureKind::timedOut;
    f.message = fmt::format("ran longer than the time limit of {}; the worker was killed",
                            formatDuration(*opts_.timeOutError));
    return f;
  }
  f.kind = FailureKind::crashed;
  if (!status) {
    f.message = "the worker ended while running this input; its exit status was collected by another wait call "
                "(a thread calling waitpid(-1, ...)?)";
  } else if (WIFSIGNALED(*status)) {
    f.signal = WTERMSIG(*status);
    f.type = signalName(f.signal);
    f.message = fmt::format("the worker was killed by {} while running this input", f.type);
    if (f.signal == SIGKILL)
      f.message += " (SIGKILL from outside flock: the out-of-memory killer is a likely cause)";
  } else if (WIFEXITED(*status)) {
    f.exitStatus = WEXITSTATUS(*status);
    f.message =
        fmt::format("the worker exited with status {} while running this input", *f.exitStatus);
  } else {
    f.message = describeStatus(status, pid);
  }
  return f;
}

FLOCK_ENGINE_INLINE void Engine::endOutput(Slot& s, std::optional<int> status) noexcept {
  std::string_view cut = " [cut: worker crashed]";
  if (status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) cut = "";
  else if (s.timedOut) cut = " [cut: worker timed out]";
  else if (s.killed) cut = " [cut: worker killed]";
  try {
    for (int k = 0; k < 2; ++k) s.output[k].finish(forwarded_[k], cut, true);
  } catch (...) {
    // Out of memory for the text: it is dropped, the call goes on.
  }
  writeForwardedLines();
  for (auto& o : s.output) o = OutputPipe{};
}

FLOCK_ENGINE_INLINE void Engine::writeForwardedLines() noexcept {
  if (forwarded_[0].empty() && forwarded_[1].empty()) return;
  if (progressBar_) progressBar_->hide();
  for (int k = 0; k < 2; ++k) {
    if (forwarded_[k].empty()) continue;
    std::fflush(k == 0 ? stdout : stderr); // the application's own text stays before
    writeForwarded(k + 1, forwarded_[k]);
    forwarded_[k].clear();
  }
  if (progressBar_) progressBar_->restore();
}

FLOCK_ENGINE_INLINE std::string Engine::formatDuration(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d % seconds(1) == nanoseconds(0))
    return fmt::format("{}s", duration_cast<seconds>(d).count());
  if (d % milliseconds(1) == nanoseconds(0))
    return fmt::format("{}ms", duration_cast<milliseconds>(d).count());
  if (d % microseconds(1) == nanoseconds(0))
    return fmt::format("{}us", duration_cast<microseconds>(d).count());
  return fmt::format("{}ns", d.count());
}

FLOCK_ENGINE_INLINE void Engine::failUnresolved(FailureKind kind, const std::string& message) {
  auto add = [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      addFailure({i, kind, message, "", 0, std::nullopt, 0, -1, {}});
    }
    resolveHere(b, e - b);
  };
  dispatch_.drainUnassigned(add);
  for (auto& s : slots_) {
    for (auto& b : s.outstanding) add(b.next, b.end);
    s.outstanding.clear();
  }
}

FLOCK_ENGINE_INLINE void Engine::giveUp(FailureKind kind, const std::string& lastCause) {
  gaveUp_ = true;
  for (auto& s : slots_)
    if (s.alive) killAndReap(s);
  failUnresolved(
      kind, fmt::format("{} workers in a row ended or could not start without finishing any input "
                        "(restart budget exhausted; last: {})",
                        dispatch_.failedStarts(), lastCause));
}

FLOCK_ENGINE_INLINE void Engine::cancel(const std::string& message) {
  gaveUp_ = true;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].alive) continue;
    control(i).stop.store(1, std::memory_order_relaxed);
    sendStop(slots_[i]); // an idle worker reads this; a busy one sees the flag after its input
  }
  const auto deadline = Clock::now() + cancelGrace;
  std::vector<pollfd> pfds;
  std::vector<std::pair<std::size_t, bool>> who; // (slot, is pidfd)
  for (;;) {
    pfds.clear();
    who.clear();
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      auto& s = slots_[i];
      if (!s.alive) continue;
      if (!s.eof && s.protocolError.empty()) {
        pfds.push_back({s.proc.results.get(), POLLIN, 0});
        who.emplace_back(i, false);
      }
      pfds.push_back({s.proc.pidfd.get(), POLLIN, 0});
      who.emplace_back(i, true);
      for (auto& o : s.output) {
        if (!o.open()) continue;
        pfds.push_back({o.fd(), POLLIN, 0});
        who.emplace_back(i, false);
      }
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (pfds.empty() || left <= 0) break;
    if (::poll(pfds.data(), pfds.size(), static_cast<int>(left)) < 0 && errno != EINTR) break;
    for (std::size_t k = 0; k < pfds.size(); ++k) {
      if (pfds[k].revents == 0) continue;
      auto& s = slots_[who[k].first];
      if (!s.alive) continue;
      if (!s.eof && s.protocolError.empty()) drain(s);
      readOutputs(s);
      if (who[k].second) killAndReap(s); // it stopped; anything left in its group goes too
    }
    writeForwardedLines();
  }
  for (auto& s : slots_) {
    if (!s.alive) continue;
    if (!s.eof && s.protocolError.empty()) drain(s);
    killAndReap(s);
  }
  failUnresolved(FailureKind::cancelled, message);
}

FLOCK_ENGINE_INLINE void Engine::checkTimeouts() {
  const auto now = Clock::now();
  const auto setup = setupLimit();
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    auto& s = slots_[i];
    if (!s.alive || s.timedOut || !s.setupError.empty()) continue;
    if (setup && control(i).serving.load(std::memory_order_acquire) == 0) {
      if (now - s.startedAt >= *setup) {
        s.setupError = fmt::format("it did not finish within {} ({}); the worker was killed",
                                   formatDuration(*setup),
                                   opts_.setupTimeout ? "setupTimeout" : "timeOutError");
        killGroup(s);
      }
      continue;
    }
    if (!opts_.timeOutError || s.outstanding.empty()) continue;
    const auto cur = control(i).current.load(std::memory_order_acquire);
    if (cur != s.lastCurrent) {
      s.lastCurrent = cur;
      s.lastChange = now;
    } else if (cur >= 0 && now - s.lastChange >= *opts_.timeOutError) {
      s.timedOut = true;
      killGroup(s);
    }
  }
}

FLOCK_ENGINE_INLINE void Engine::checkMemory() {
  if (opts_.memoryLimit == 0) return;
  const auto now = Clock::now();
  if (now - lastMemoryCheck_ < memoryPollInterval) return;
  lastMemoryCheck_ = now;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    auto& s = slots_[i];
    if (!s.alive || s.outstanding.empty() || s.killedAtMemory != 0 || s.timedOut) continue;
    if (control(i).current.load(std::memory_order_acquire) < 0) continue;
    const std::uint64_t resident = memoryUseOf(s.proc.pid).resident;
    if (resident > opts_.memoryLimit) {
      s.killedAtMemory = resident;
      killGroup(s);
    }
  }
}

FLOCK_ENGINE_INLINE int Engine::pollTimeoutMs() const {
  using namespace std::chrono;
  long ms = -1;
  const auto now = Clock::now();
  const auto atMost = [&](long bound) { ms = ms < 0 ? bound : std::min(ms, bound); };
  if (opts_.timeOutError) {
    // Wake often enough to see each new input start, and at the earliest deadline.
    atMost(std::max<long>(1, duration_cast<milliseconds>(*opts_.timeOutError / 4).count()));
    for (const auto& s : slots_) {
      if (!s.alive || s.outstanding.empty() || s.lastCurrent < 0) continue;
      auto left = duration_cast<milliseconds>(s.lastChange + *opts_.timeOutError - now).count() + 1;
      atMost(std::max<long>(0, left));
    }
  }
  if (const auto setup = setupLimit()) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const auto& s = slots_[i];
      if (!s.alive || !s.setupError.empty() ||
          control(i).serving.load(std::memory_order_acquire) != 0)
        continue;
      atMost(
          std::max<long>(0, duration_cast<milliseconds>(s.startedAt + *setup - now).count() + 1));
    }
  }
  if (opts_.onProgress || progressBar_) atMost(100);
  if (opts_.memoryLimit != 0 && anyOutstanding())
    atMost(std::max<long>(
        0, duration_cast<milliseconds>(lastMemoryCheck_ + memoryPollInterval - now).count() + 1));
  for (const auto& s : slots_)
    for (int k = 0; k < 2; ++k)
      if (s.alive && s.output[k].open() && s.outputQuietUntil[k] > now)
        atMost(std::max<long>(1, duration_cast<milliseconds>(s.outputQuietUntil[k] - now).count() +
                                     1));
  for (const auto& s : slots_)
    if (s.alive && (s.reader.pending() > 0 || s.direct.remaining > 0))
      atMost(500); // see checkStalls
  if (hasWork() &&
      std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return !s.alive; }))
    atMost(std::max<long>(0, duration_cast<milliseconds>(nextStartAttempt_ - now).count() +
                                 1)); // see replaceDead
  return static_cast<int>(ms);
}

FLOCK_ENGINE_INLINE void Engine::reportProgress(bool final) {
  if (!opts_.onProgress && !progressBar_) return;
  const auto now = Clock::now();
  if (!final && now - lastProgress_ < std::chrono::milliseconds(100)) return;
  lastProgress_ = now;
  if (progressBar_) progressBar_->update(resolved_, failedCount_, n_, final, now, inputsComplete_);
  if (opts_.onProgress) opts_.onProgress(Progress{resolved_, failedCount_, n_, inputsComplete_});
}

FLOCK_ENGINE_INLINE void Engine::shutdown() {
  for (auto& s : slots_)
    if (s.alive) sendStop(s);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  for (auto& s : slots_) {
    if (!s.alive) continue;
    // Its finalizer may print: its pipes are read while it stops, or it could wait on a full
    // one until killed.
    for (;;) {
      pollfd p[3] = {{s.proc.pidfd.get(), POLLIN, 0},
                     {s.output[0].open() ? s.output[0].fd() : -1, POLLIN, 0}, // poll skips -1
                     {s.output[1].open() ? s.output[1].fd() : -1, POLLIN, 0}};
      const nfds_t n = 3;
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      const int rc = ::poll(p, n, static_cast<int>(std::max<long>(0, left)));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0 || p[0].revents != 0) break;
      try {
        readOutputs(s);
      } catch (...) {
        break;
      }
      writeForwardedLines();
    }
    killAndReap(s); // kills any grandchild left in the worker's group, then reaps
  }
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

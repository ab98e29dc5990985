// flock internals: the loop that runs inside a worker process, and the job interface it serves.
//
// A worker reads `run [begin, end)` commands, runs the callable on those inputs (already in its
// copy-on-write memory under Context::fork), and sends back results or failures. Before each
// input it records the input's index in a small control block in shared memory, so that the
// parent knows which input was running if the worker dies or hangs.
#pragma once

#include "config.hpp"

#include <cxxabi.h>

#if defined(__GLIBC__)
#endif


#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../codec.hpp"
#include "../current_input.hpp"
#include "../error.hpp"
#include "dispatch.hpp"
#include "memory.hpp"
#include "output.hpp"
#include "portable.hpp"
#include "posix.hpp"
#include "protocol.hpp"
#include "sinks.hpp"
#include "type_name.hpp"
#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <cxxabi.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <typeinfo>
#endif

namespace flockmp::detail {

/// Per-worker state shared with the parent (MAP_SHARED). A plain store per input is all it costs,
/// and it tells the parent which input a dead or hung worker was on.
struct alignas(64) WorkerControl {
  /// Written by the worker: the input being run (>= 0); between batches, idleAfter(the last input
  /// run); -1 before the first input.
  std::atomic<std::int64_t> current{-1};
  /// Written by the worker: 0 while it starts and runs the initializer, 1 once it serves inputs.
  std::atomic<std::uint32_t> serving{0};
  /// Written by the parent to cancel: the worker sends what it has finished and stops.
  std::atomic<std::uint32_t> stop{0};
  /// Written by the worker before it exits with workerOutOfMemoryExit: 1 when its peak resident
  /// memory went past the limit, 2 when an allocation failed (std::bad_alloc) under the limit.
  std::atomic<std::uint32_t> memoryCause{0};
  /// Written by the parent: 1 while the call asks for insights (Options::insights); the worker
  /// then times the inputs of each batch it starts. Through here, not the wire: off costs nothing.
  std::atomic<std::uint32_t> insights{0};
  /// Written by the parent: Options::memoryLimit of the call (0: none).
  std::atomic<std::uint64_t> memoryLimit{0};
  /// Written by the worker with memoryCause: its peak resident memory then, in bytes.
  std::atomic<std::uint64_t> memoryPeak{0};
  /// Written by the worker as it becomes ready (serving = 1): CLOCK_MONOTONIC in ns, the clock
  /// the parent reads too, so that the parent knows the worker's start-up time.
  std::atomic<std::uint64_t> readyNs{0};
  /// Written by the parent before the worker starts: the nonce of its output markers under
  /// WorkerOutput::prefix (see output.hpp); 0: no markers.
  std::uint64_t outputNonce = 0;
};
static_assert(sizeof(WorkerControl) == 64);

/// Worker side: input `index` starts (the parent learns it through the control block, and,
/// under WorkerOutput::prefix, through a marker in the output pipes).
FLOCK_ENGINE_INLINE void startInput(WorkerControl& ctl, std::size_t index) noexcept;

/// Thrown inside a worker when the parent asked it to stop (cancellation), after its finished
/// results were sent; the worker loop ends normally and the finalizer runs.
struct StopRequested {};

FLOCK_ENGINE_INLINE std::uint64_t monotonicNs() noexcept;

/// Type name and message of the exception being handled, for any thrown type.
FLOCK_ENGINE_INLINE std::pair<std::string, std::string> describeCurrentException();

/// Worker side: work to finish before any buffered result is sent, such as the commit of
/// DatabaseAsync's batch transaction (DatabaseOptions::batchTransactions), so that no result
/// reaches the parent before what its input wrote is durable. One per worker process; `fn` is
/// cleared before it runs, so it runs once per registration. If it throws, the buffered results
/// cannot be vouched for: the worker prints why and exits without sending them, and the parent
/// runs those inputs again on a fresh worker (see ResultWriter::flush).
struct BeforeSend {
  void (*fn)(void* context) = nullptr;
  void* context = nullptr;
};
inline BeforeSend& beforeSend() noexcept {
  static BeforeSend hook;
  return hook;
}

/// Worker side: frames waiting to go to the parent, written in few large writes.
class ResultWriter {
public:
  ResultWriter(int commandFd, int resultFd, WorkerControl& ctl)
      : commandFd_(commandFd), fd_(resultFd), ctl_(ctl), commandId_(identify(commandFd)), resultId_(identify(resultFd)),
        writer_(buf_) {
    buf_.reserve(1 << 16);
  }

  /// Append the result of input `index`; a codec failure becomes a codec failure record.
  template <class Codec, class R>
  void result(std::size_t index, const R& value) {
    writer_.begin(FrameKind::result);
    writer_.appendRaw(ResultHead{index});
    try {
      ByteWriter bw(buf_);
      Codec::encode(bw, value);
    } catch (...) {
      writer_.abandon();
      auto [type, message] = describeCurrentException();
      failure(index, FailureKind::codec, type, "the result could not be encoded: " + message);
      return;
    }
    writer_.end();
  }

  /// mapReduce: append the fold `acc` of the results of inputs [begin, begin + count). When it
  /// cannot be encoded, each of those inputs fails with the reason.
  template <class Codec, class Acc>
  void partial(std::size_t begin, std::size_t count, const Acc& acc) {
    if (count == 0) return;
    writer_.begin(FrameKind::partial);
    writer_.appendRaw(RawBlockHead{begin, count});
    try {
      ByteWriter bw(buf_);
      Codec::encode(bw, acc);
    } catch (...) {
      writer_.abandon();
      auto [type, message] = describeCurrentException();
      for (std::size_t i = begin; i < begin + count; ++i)
        failure(i, FailureKind::codec, type, "the partial fold holding this input could not be encoded: " + message);
      return;
    }
    writer_.end();
  }

  void failure(std::size_t index, FailureKind kind, std::string_view type, std::string_view message) {
    if (memoryGuard().limit() != 0) checkMemory(kind == FailureKind::exception && handlingBadAlloc());
    appendFailure(writer_, index, kind, type, message);
  }

  /// Options::memoryLimit, after each input (from due() and failure()): a worker whose peak
  /// resident memory went past the limit, or whose input ran out of memory under it (`badAlloc`),
  /// leaves at once with workerOutOfMemoryExit, its current input blamed. Nothing buffered is
  /// sent (nor committed by beforeSend): those inputs run again on the worker that replaces it,
  /// as after a crash.
  void checkMemory(bool badAlloc = false) noexcept;

  /// Start a block of `count` raw results for inputs [begin, begin + count) and return where the
  /// first one goes; the caller constructs them in place, then calls rawBlockEnd.
  std::byte* rawBlockBegin(std::size_t begin, std::size_t count, std::size_t elementSize);
  /// Close the block begun last, keeping only its first `count` results (an input that threw
  /// ends a block early).
  void rawBlockEnd(std::size_t count, std::size_t elementSize);

  /// Raw results of this batch go to `area` (room for `bytes`) in the shared region, announced
  /// by sharedBlock frames; nullptr: in the frames themselves.
  void useSharedResults(std::byte* area, std::size_t bytes) noexcept {
    sharedResults_ = area;
    sharedResultBytes_ = bytes;
  }
  [[nodiscard]] std::byte* sharedResults() const noexcept { return sharedResults_; }
  [[nodiscard]] std::size_t sharedResultBytes() const noexcept { return sharedResultBytes_; }
  /// Announce `count` results from input `begin` on, already written to the shared result area.
  void sharedBlock(std::size_t begin, std::size_t count);

  /// Called before input `i` runs: records it in the control block (for the parent to blame a
  /// death or a hang on it, and under WorkerOutput::prefix in the output pipes; see the free
  /// startInput) and, when the batch is timed, ends the previous input's time.
  void startInput(std::size_t i) noexcept;

  /// Called when a batch starts: time its inputs when the parent asked for insights.
  void timeInputs(bool on) noexcept;

  /// Insights: append the batch's timing frame (its task time, the worker's peak memory, its
  /// slowest inputs) when the batch was timed. Call before batchDone.
  void batchTiming(std::size_t begin, std::size_t end);

  void batchDone(std::size_t begin, std::size_t end, std::uint64_t ns);

  /// Send what is buffered. If the parent is gone there is nobody to work for: exit. Throws
  /// StopRequested afterwards when the parent asked the worker to stop.
  void flush();

  /// Flush when enough bytes are buffered or when due(). Call once per input.
  void flushIfDue() {
    if (due() || buf_.size() >= flushBytes) flush();
  }

  /// Flush when enough bytes are buffered.
  void flushIfFull() {
    if (buf_.size() >= flushBytes) flush();
  }

  /// Called once after each input: true when the results buffered should go now. Reads the clock only
  /// about once a millisecond (an input as cheap as x*x costs less than a clock read); then it is
  /// time when results have waited maxWaitNs (so that progress shows, and a stop or a crash
  /// loses little: a crash makes its worker's unsent results run again), when inputs take slowInputNs or more each (a send per input then costs under 1 %),
  /// or when the parent asked to stop.
  bool due() noexcept;

  /// Called when a batch starts: the time spent waiting for it is not input time.
  void batchStarted() noexcept {
    lastCheck_ = lastFlush_ = monotonicNs();
    countdown_ = stride_ = 1;
  }

  /// Exits (workerChannelLostExit) unless both channel fds still are the sockets the worker was
  /// given: a task may have closed them, or closed them and opened files under their numbers,
  /// which must never receive frames. One fstat each, per flush.
  void verifyChannel() const {
    if (identify(commandFd_) != commandId_ || identify(fd_) != resultId_) channelLost();
  }

  [[noreturn]] static void channelLost() noexcept {
    flushStdio();
    ::_exit(workerChannelLostExit);
  }

  /// Buffered bytes that trigger a write: large enough to amortise the syscall and the parent's
  /// wake-up, small enough to keep the worker's buffer bounded.
  static constexpr std::size_t flushBytes = std::size_t{1} << 20;
  static constexpr std::uint64_t maxWaitNs = 2'000'000;
  static constexpr std::uint64_t slowInputNs = 1'000'000;
  static constexpr std::uint64_t checkEveryNs = 1'000'000;
  static constexpr std::uint64_t maxStride = 4096;

private:
  static constexpr std::uint64_t noInput = ~std::uint64_t{0};

  /// Ends the time of the input being timed (if any) and starts timing `next` (noInput: none).
  void lap(std::uint64_t next) noexcept;

  /// Device and inode of an open fd ({0, 0} when it is not open).
  static std::pair<dev_t, ino_t> identify(int fd) noexcept;

  int commandFd_;
  int fd_;
  WorkerControl& ctl_;
  std::pair<dev_t, ino_t> commandId_;
  std::pair<dev_t, ino_t> resultId_;
  std::vector<std::byte> buf_;
  FrameWriter writer_;
  std::size_t countAt_ = 0;
  std::byte* sharedResults_ = nullptr;
  std::size_t sharedResultBytes_ = 0;
  std::uint64_t lastFlush_ = monotonicNs();
  std::uint64_t lastCheck_ = monotonicNs();
  std::uint64_t countdown_ = 1;
  std::uint64_t stride_ = 1;
  // Insights (see timeInputs): the input being timed, since when, the flush time inside it.
  bool timing_ = false;
  std::uint64_t timedIndex_ = noInput;
  std::uint64_t timedStart_ = 0;
  std::uint64_t excluded_ = 0;
  std::uint64_t tasksNs_ = 0;
  std::array<TimedInput, maxTimedInputs> slow_{};
  std::size_t slowCount_ = 0;
};

/// What the engine runs: typed jobs (see pool.hpp) implement it.
class JobBase {
public:
  virtual ~JobBase() = default;
  [[nodiscard]] virtual std::size_t size() const noexcept = 0;
  /// Where the results go.
  [[nodiscard]] virtual ResultSink& sink() noexcept = 0;
  /// Worker side: run inputs [begin, end) in order, storing `current` before each.
  virtual void runBatch(std::size_t begin, std::size_t end, WorkerControl& ctl, ResultWriter& out) = 0;
  /// True for a pool's call: the workers did not inherit the job, so each gets the callable
  /// (encodeCall) and each batch carries its inputs (encodeInputs).
  [[nodiscard]] virtual bool portable() const noexcept { return false; }
  /// Parent side, pools: the thunk's CodeRef and the bytes that rebuild the callable.
  virtual void encodeCall(ByteWriter&) {}
  /// Parent side, pools: appends the encoded inputs [begin, end) and returns `end`; when input k
  /// cannot be encoded, the bytes of inputs [begin, k) stay, `error` holds why, and k is returned.
  virtual std::size_t encodeInputs(std::size_t, std::size_t end, ByteWriter&, std::exception_ptr&) { return end; }
  /// Parent side, pools: the size of inputs [begin, end) as object bytes when they are raw (they
  /// can then be copied into shared memory by copyRawInputs); 0 otherwise.
  [[nodiscard]] virtual std::size_t rawInputBytes(std::size_t, std::size_t) const noexcept { return 0; }
  /// Copies the object bytes of raw inputs [begin, end) to `dst` (rawInputBytes of them). May
  /// throw when the range computes its values (a transform that throws).
  virtual void copyRawInputs(std::size_t, std::size_t, std::byte*) const {}
  /// Streams: batches must not cross a multiple of this (see Dispatch::Config::wrap); 0: none.
  [[nodiscard]] virtual std::size_t wrap() const noexcept { return 0; }
};

/// Index used in a failure record that concerns the worker itself, not an input.
inline constexpr std::uint64_t workerFailureIndex = ~std::uint64_t{0};

/// What a worker does with the frames of a call: a one-shot worker runs its inherited job; a
/// pool's worker rebuilds each call's callable and decodes the inputs that come with each batch.
class BatchRunner {
public:
  virtual ~BatchRunner() = default;
  /// A `call` frame: the callable of the call that follows.
  virtual void onCall(std::span<const std::byte> payload) = 0;
  /// Run inputs [begin, end), whose encoded values (pool) are `inputs`.
  virtual void run(std::size_t begin, std::size_t end, std::span<const std::byte> inputs, WorkerControl& ctl,
                   ResultWriter& out) = 0;
};

/// A one-shot worker: the job (callable, inputs, result types) is in its copy-on-write memory.
class InheritedJobRunner final : public BatchRunner {
public:
  explicit InheritedJobRunner(JobBase& job) noexcept : job_(job) {}
  void onCall(std::span<const std::byte>) override { ::_exit(workerInternalErrorExit); }
  void run(std::size_t begin, std::size_t end, std::span<const std::byte> inputs, WorkerControl& ctl,
           ResultWriter& out) override {
    if (!inputs.empty()) ::_exit(workerInternalErrorExit);
    job_.runBatch(begin, end, ctl, out);
  }

private:
  JobBase& job_;
};

/// The code a pool's worker runs for one batch of a call: a template instantiated for the call's
/// codec, callable, input and result types (see pool.hpp), found in the worker by its CodeRef.
using PoolThunk = void (*)(std::span<const std::byte> callable, std::size_t begin, std::size_t end,
                           std::span<const std::byte> inputs, WorkerControl& ctl, ResultWriter& out);

/// A pool's worker: each call names its thunk and brings the callable's bytes.
class PoolRunner final : public BatchRunner {
public:
  void onCall(std::span<const std::byte> payload) override;
  void run(std::size_t begin, std::size_t end, std::span<const std::byte> inputs,
           WorkerControl& ctl, ResultWriter& out) override;

private:
  static void failAll(std::size_t begin, std::size_t end, ResultWriter& out, FailureKind kind, std::string_view type,
                      std::string_view message) {
    for (std::size_t i = begin; i < end; ++i) out.failure(i, kind, type, message);
  }

  PoolThunk thunk_ = nullptr;
  std::vector<std::byte> callable_;
  std::string error_;
};

/// The worker's main loop. Leaves by returning (the launcher then _exits) on stop or EOF, after
/// running the finalizer.
FLOCK_ENGINE_INLINE void workerLoop(BatchRunner& runner, WorkerControl& ctl, int commandFd,
                                    int resultFd, const std::function<void()>& initializer,
                                    const std::function<void()>& finalizer,
                                    std::span<std::byte> shared = {});

/// The life of a worker that was not forked from its pool (forkserver, spawn): map the control
/// blocks, read the setup frame, then serve calls. Never returns.
[[noreturn]] FLOCK_ENGINE_INLINE void portableWorkerMain(int commandFd, int resultFd, int controlFd,
                                                         std::size_t controlBytes,
                                                         std::size_t slot);

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void startInput(WorkerControl& ctl, std::size_t index) noexcept {
  ctl.current.store(static_cast<std::int64_t>(index), std::memory_order_relaxed);
  if (workerStdio().nonce != 0) [[unlikely]]
    markOutput(static_cast<std::int64_t>(index));
}

FLOCK_ENGINE_INLINE std::uint64_t monotonicNs() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

FLOCK_ENGINE_INLINE std::pair<std::string, std::string> describeCurrentException() {
  try {
    throw;
  } catch (const std::exception& e) {
    return {tidyTypeName(demangle(typeid(e).name())), e.what()};
  } catch (const char* s) {
    return {"const char*", s ? s : ""};
  } catch (const std::string& s) {
    return {"std::string", s};
  } catch (...) {
    const std::type_info* t = abi::__cxa_current_exception_type();
    return {t ? tidyTypeName(demangle(t->name())) : std::string("unknown exception"), ""};
  }
}

FLOCK_ENGINE_INLINE void ResultWriter::checkMemory(bool badAlloc) noexcept {
  if (memoryGuard().limit() == 0 || ctl_.current.load(std::memory_order_relaxed) < 0) return;
  const std::uint64_t peak = memoryGuard().overLimit();
  if (peak == 0 && !badAlloc) return;
  ctl_.memoryPeak.store(peak != 0 ? peak : peakResident(), std::memory_order_relaxed);
  ctl_.memoryCause.store(peak != 0 ? 1 : 2, std::memory_order_release);
  flushStdio();
  ::_exit(workerOutOfMemoryExit);
}

FLOCK_ENGINE_INLINE std::byte* ResultWriter::rawBlockBegin(std::size_t begin, std::size_t count,
                                                           std::size_t elementSize) {
  writer_.begin(FrameKind::rawBlock);
  countAt_ = buf_.size() + offsetof(RawBlockHead, count);
  writer_.appendRaw(RawBlockHead{begin, count});
  const std::size_t at = buf_.size();
  buf_.resize(at + count * elementSize);
  return buf_.data() + at;
}

FLOCK_ENGINE_INLINE void ResultWriter::rawBlockEnd(std::size_t count, std::size_t elementSize) {
  const auto c = static_cast<std::uint64_t>(count);
  std::memcpy(buf_.data() + countAt_, &c, sizeof c);
  buf_.resize(countAt_ + sizeof c + count * elementSize); // the count closes the head
  if (count == 0) writer_.abandon();
  else writer_.end();
}

FLOCK_ENGINE_INLINE void ResultWriter::sharedBlock(std::size_t begin, std::size_t count) {
  if (count == 0) return;
  writer_.begin(FrameKind::sharedBlock);
  writer_.appendRaw(RawBlockHead{begin, count});
  writer_.end();
}

FLOCK_ENGINE_INLINE void ResultWriter::startInput(std::size_t i) noexcept {
  detail::startInput(ctl_, i);
  if (timing_) [[unlikely]]
    lap(i);
}

FLOCK_ENGINE_INLINE void ResultWriter::timeInputs(bool on) noexcept {
  timing_ = on;
  timedIndex_ = noInput;
  tasksNs_ = excluded_ = 0;
  slowCount_ = 0;
}

FLOCK_ENGINE_INLINE void ResultWriter::batchTiming(std::size_t begin, std::size_t end) {
  if (!timing_) return;
  lap(noInput);
  timing_ = false;
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  writer_.begin(FrameKind::timing);
  writer_.appendRaw(TimingHead{begin, end, tasksNs_,
                               static_cast<std::uint64_t>(ru.ru_maxrss) * 1024u, slowCount_});
  writer_.append(slow_.data(), slowCount_ * sizeof(TimedInput));
  writer_.end();
}

FLOCK_ENGINE_INLINE void ResultWriter::batchDone(std::size_t begin, std::size_t end,
                                                 std::uint64_t ns) {
  writer_.begin(FrameKind::batchDone);
  writer_.appendRaw(BatchDoneBody{begin, end, ns});
  writer_.end();
}

FLOCK_ENGINE_INLINE void ResultWriter::flush() {
  const std::uint64_t flushStart = timing_ ? monotonicNs() : 0;
  verifyChannel();
  if (auto& hook = beforeSend(); hook.fn) {
    try {
      std::exchange(hook.fn, nullptr)(hook.context);
    } catch (...) {
      // Nothing buffered is sent. Marked idle, the worker's death blames no input: the parent
      // runs every input whose result it has not received again, elsewhere.
      const auto [type, message] = describeCurrentException();
      std::fprintf(stderr,
                   "flock: worker %d exits without sending its last results, which it cannot vouch for: %s: %s\n",
                   static_cast<int>(::getpid()), type.c_str(), message.c_str());
      const std::int64_t current = ctl_.current.load(std::memory_order_relaxed);
      if (current >= 0)
        ctl_.current.store(idleAfter(static_cast<std::size_t>(current)), std::memory_order_relaxed);
      flushStdio();
      ::_exit(workerInternalErrorExit);
    }
  }
  if (!buf_.empty()) {
    bool sent = false;
    try {
      sent = writeAll(fd_, buf_.data(), buf_.size());
    } catch (const Error&) {
      channelLost();
    }
    if (!sent) ::_exit(0);
  }
  buf_.clear();
  lastFlush_ = monotonicNs();
  if (timing_) excluded_ += lastFlush_ - flushStart; // writes are not the input's time
  if (ctl_.stop.load(std::memory_order_relaxed) != 0) throw StopRequested{};
}

FLOCK_ENGINE_INLINE bool ResultWriter::due() noexcept {
  checkMemory();
  if (--countdown_ > 0) return false;
  const std::uint64_t now = monotonicNs();
  const std::uint64_t perInput = (now - lastCheck_) / stride_;
  lastCheck_ = now;
  stride_ =
      perInput == 0 ? maxStride : std::clamp<std::uint64_t>(checkEveryNs / perInput, 1, maxStride);
  countdown_ = stride_;
  return perInput >= slowInputNs || now - lastFlush_ >= maxWaitNs ||
         ctl_.stop.load(std::memory_order_relaxed) != 0;
}

FLOCK_ENGINE_INLINE void ResultWriter::lap(std::uint64_t next) noexcept {
  const std::uint64_t now = monotonicNs();
  if (timedIndex_ != noInput) {
    const std::uint64_t span = now - timedStart_;
    const std::uint64_t ns = span > excluded_ ? span - excluded_ : 0;
    tasksNs_ += ns;
    if (slowCount_ < slow_.size()) {
      slow_[slowCount_++] = {timedIndex_, ns};
    } else {
      auto fastest =
          std::min_element(slow_.begin(), slow_.end(),
                           [](const TimedInput& a, const TimedInput& b) { return a.ns < b.ns; });
      if (ns > fastest->ns) *fastest = {timedIndex_, ns};
    }
  }
  timedIndex_ = next;
  timedStart_ = now;
  excluded_ = 0;
}

FLOCK_ENGINE_INLINE std::pair<dev_t, ino_t> ResultWriter::identify(int fd) noexcept {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {0, 0};
  return {st.st_dev, st.st_ino};
}

FLOCK_ENGINE_INLINE void PoolRunner::onCall(std::span<const std::byte> payload) {
  thunk_ = nullptr;
  error_.clear();
  try {
    const auto call = decodeCall(payload);
    thunk_ = reinterpret_cast<PoolThunk>(resolveCodeRef(call.thunk));
    callable_.assign(call.callable.begin(), call.callable.end());
  } catch (const std::exception& e) {
    error_ = e.what();
  }
}

FLOCK_ENGINE_INLINE void PoolRunner::run(std::size_t begin, std::size_t end,
                                         std::span<const std::byte> inputs, WorkerControl& ctl,
                                         ResultWriter& out) {
  if (thunk_ == nullptr) {
    failAll(begin, end, out, FailureKind::exception, "flockmp::Error",
            error_.empty() ? std::string("flock: a batch arrived before its call") : error_);
    return;
  }
  try {
    thunk_(callable_, begin, end, inputs, ctl, out);
  } catch (...) {
    // Only the rebuilding of the callable or of the inputs throws out of a thunk (each input's
    // own exception is its failure), before any input ran.
    auto [type, message] = describeCurrentException();
    failAll(begin, end, out, FailureKind::codec, type,
            "the call could not be rebuilt in the worker: " + message);
  }
}

FLOCK_ENGINE_INLINE void workerLoop(BatchRunner& runner, WorkerControl& ctl, int commandFd,
                                    int resultFd, const std::function<void()>& initializer,
                                    const std::function<void()>& finalizer,
                                    std::span<std::byte> shared) {
  struct Finally {
    const std::function<void()>& fn;
    ~Finally() {
      if (fn) {
        try {
          fn();
        } catch (...) {
          // The inputs are all accounted for; a failing cleanup cannot change their outcomes.
        }
      }
    }
  };
  currentInputSource() = {&ctl.current, -1};
  ResultWriter out(commandFd, resultFd, ctl);
  setUpWorkerStdio(ctl.outputNonce);
#if defined(__GLIBC__)
  // Memory the parent had freed but malloc kept is shared copy-on-write with this worker, so
  // each parent write into it (decoded results, mostly) would copy a page while the worker
  // lives. The worker never uses that memory: let go of its copy, and the parent writes in place.
  ::malloc_trim(0);
#endif
  if (initializer) {
    try {
      initializer();
    } catch (...) {
      auto [type, message] = describeCurrentException();
      out.failure(static_cast<std::size_t>(workerFailureIndex), FailureKind::setup, type, message);
      out.flush();
      flushStdio();
      ::_exit(workerInternalErrorExit);
    }
    flushStdio(); // what the initializer printed goes out now, not with the first batch
  }
  out.verifyChannel(); // an initializer that closed every fd cannot be served
  if (const std::uint64_t limit = ctl.memoryLimit.load(std::memory_order_relaxed); limit != 0) {
    memoryGuard().arm(limit);
    if (const std::uint64_t resident = memoryUseOf().resident; resident > limit) {
      // No input could run within the limit: a setup failure, which ends the call through the
      // restart budget with this message rather than blaming inputs one by one.
      out.failure(static_cast<std::size_t>(workerFailureIndex), FailureKind::setup, "flockmp::OptionError",
                  fmt::format("memoryLimit ({}) is below the worker's resident memory once started ({}); raise it",
                              formatBytes(limit), formatBytes(resident)));
      out.flush();
      flushStdio();
      ::_exit(workerInternalErrorExit);
    }
  }
  ctl.readyNs.store(monotonicNs(), std::memory_order_relaxed);
  ctl.serving.store(1, std::memory_order_release);
  Finally finally{finalizer};
  std::vector<std::byte> payload;
  try {
    for (;;) {
      FrameHeader h;
      bool got = false;
      try {
        got = readExact(commandFd, &h, sizeof h);
        if (got && h.magic == FrameHeader::magicValue && h.length <= maxFramePayload) {
          payload.resize(static_cast<std::size_t>(h.length));
          got = readExact(commandFd, payload.data(), payload.size());
        }
      } catch (const Error&) {
        ResultWriter::channelLost();
      }
      if (!got) return; // parent closed the channel
      if (h.magic != FrameHeader::magicValue || h.length > maxFramePayload) ::_exit(workerInternalErrorExit);
      if (h.kind == FrameKind::stop) return;
      if (h.kind == FrameKind::call) {
        runner.onCall(payload);
        continue;
      }
      if ((h.kind != FrameKind::run && h.kind != FrameKind::runShared) || payload.size() < sizeof(RunHead))
        ::_exit(workerInternalErrorExit);
      const auto run = headOf<RunHead>(payload);
      if (run.end <= run.begin) ::_exit(workerInternalErrorExit);
      std::span<const std::byte> inputs = afterHead<RunHead>(payload);
      out.useSharedResults(nullptr, 0);
      if (h.kind == FrameKind::runShared) {
        if (inputs.size() < sizeof(SharedArea)) ::_exit(workerInternalErrorExit);
        const auto area = headOf<SharedArea>(inputs);
        const auto within = [&](std::uint64_t offset, std::uint64_t bytes) {
          return offset <= shared.size() && bytes <= shared.size() - offset;
        };
        if (!within(area.inputOffset, area.inputBytes) || !within(area.resultOffset, area.resultBytes))
          ::_exit(workerInternalErrorExit);
        // The inputs are in the area, or (not raw, or too large) follow its description.
        inputs = area.inputBytes > 0
                     ? shared.subspan(static_cast<std::size_t>(area.inputOffset), static_cast<std::size_t>(area.inputBytes))
                     : afterHead<SharedArea>(inputs);
        if (area.resultBytes > 0)
          out.useSharedResults(shared.data() + area.resultOffset, static_cast<std::size_t>(area.resultBytes));
      }
      memoryGuard().arm(ctl.memoryLimit.load(std::memory_order_relaxed)); // a pool's call may bring another
      const std::uint64_t t0 = monotonicNs();
      out.batchStarted();
      out.timeInputs(ctl.insights.load(std::memory_order_acquire) != 0);
      const auto begin = static_cast<std::size_t>(run.begin), end = static_cast<std::size_t>(run.end);
      runner.run(begin, end, inputs, ctl, out);
      ctl.current.store(idleAfter(end - 1), std::memory_order_relaxed);
      out.batchTiming(begin, end);
      out.batchDone(begin, end, monotonicNs() - t0);
      // What the tasks printed goes out with their results (stdout to a file or a pipe is fully
      // buffered, and the worker leaves with _exit); what follows is outside any input.
      flushStdio();
      markOutput(-1);
      out.flush();
    }
  } catch (const StopRequested&) {
    ctl.current.store(-1, std::memory_order_relaxed);
  }
}

[[noreturn]] FLOCK_ENGINE_INLINE void portableWorkerMain(int commandFd, int resultFd, int controlFd,
                                                         std::size_t controlBytes,
                                                         std::size_t slot) {
  void* blocks = ::mmap(nullptr, controlBytes, PROT_READ | PROT_WRITE, MAP_SHARED, controlFd, 0);
  ::close(controlFd);
  if (blocks == MAP_FAILED || (slot + 1) * sizeof(WorkerControl) > controlBytes) ::_exit(workerInternalErrorExit);
  auto& ctl = static_cast<WorkerControl*>(blocks)[slot];
  std::function<void()> initializer, finalizer;
  FrameHeader h;
  std::vector<std::byte> payload;
  try {
    if (!readExact(commandFd, &h, sizeof h)) ::_exit(0);
    if (h.magic != FrameHeader::magicValue || h.kind != FrameKind::setup || h.length > maxSetupPayload)
      ::_exit(workerInternalErrorExit);
    payload.resize(static_cast<std::size_t>(h.length));
    if (!readExact(commandFd, payload.data(), payload.size())) ::_exit(0);
  } catch (const Error&) {
    ResultWriter::channelLost();
  }
  std::string setupError;
  try {
    const auto setup = decodeSetup(payload);
    if (setup.initializer) initializer = setup.initializer;
    if (setup.finalizer) finalizer = setup.finalizer;
  } catch (const std::exception& e) {
    setupError = e.what();
  }
  if (!setupError.empty()) {
    // Reported as the initializer's failure: this worker cannot run what its pool was given.
    initializer = [setupError] { throw Error(setupError); };
    finalizer = nullptr;
  }
  PoolRunner runner;
  int code = 0;
  try {
    workerLoop(runner, ctl, commandFd, resultFd, initializer, finalizer,
               std::span<std::byte>(static_cast<std::byte*>(blocks), controlBytes));
  } catch (...) {
    code = workerInternalErrorExit;
  }
  flushStdio();
  ::_exit(code);
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

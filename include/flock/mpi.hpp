// flock::mpi: the same apply across the ranks of an MPI job (MPI-3: tested with Open MPI 4.1;
// started by mpirun or srun).
//
// Collective (SPMD): every rank calls flockmp::mpi::apply with the same inputs and callable. One
// rank (the root) hands out batches of input *indices* on demand and computes too; each rank runs
// its batches on its own forked workers, so a crash or a hang costs one input, never a rank. Only
// indices and results cross the network. The forked workers never call MPI.
//
// mpi::Pool: for a driver that streams its inputs, a pool on the root whose workers are the other
// ranks (each runs what it is sent on a persistent local pool); inputs, results and the
// callable's state travel through the codec.
#pragma once

#ifndef FLOCK_WITH_MPI
#error "<flock/mpi.hpp> needs the CMake target flock::mpi: target_link_libraries(your_target PRIVATE flock::mpi) (without CMake: compile with mpicxx and define FLOCK_WITH_MPI)"
#endif

// flock uses MPI's C API. The C++ bindings (deprecated in MPI-2.2, removed in MPI-3) are left out:
// Open MPI's trip -Wcast-function-type. Include <mpi.h> before this header to keep them.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <ranges>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/core.h>

#include "codec.hpp"
#include "error.hpp"
#include "options.hpp"
#include "pool.hpp"
#include "progress.hpp"

namespace flockmp::mpi {

/// How a collective call spreads over the ranks. Every rank must pass the same values.
struct ClusterOptions {
  /// The rank that schedules (and computes too) and receives the results.
  int root = 0;
  /// Give every rank all the results (and every outcome), not only the root. Default: the other
  /// ranks receive an empty result (apply still throws the same TaskError on every rank).
  bool broadcast = false;
  /// The communicator the call runs on (flock duplicates it, so its messages never meet yours).
  MPI_Comm comm = MPI_COMM_WORLD;
  /// On the root, when set: filled with how many inputs each rank was given (indexed by rank).
  std::vector<std::size_t>* inputsPerRank = nullptr;
};

namespace detail {

/// Batch size for a rank that asks for work: guided, as locally (large first, shrinking as
/// `remaining / (4 * ranks)`), never fewer than the rank's workers so that each of them gets one
/// input, never more than what is left. A fixed `batchSize` (Options) wins.
constexpr std::size_t guidedBatch(std::size_t remaining, std::size_t ranks, std::size_t workers,
                                  std::size_t fixed = 0) noexcept {
  if (remaining == 0) return 0;
  if (fixed > 0) return std::min(fixed, remaining);
  const std::size_t share = (remaining + 4 * ranks - 1) / (4 * std::max<std::size_t>(ranks, 1));
  return std::min(remaining, std::max({share, workers, std::size_t{1}}));
}

inline void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw Error(fmt::format("flock: {} failed: {}", what, std::string(text, static_cast<std::size_t>(len))));
  }
}

inline void requireInitialized() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    throw Error("flock: mpi::apply needs MPI to be initialized (and not finalized): create a flockmp::mpi::Environment "
                "at the top of main, or call MPI_Init_thread yourself");
}

/// Waits for a request by testing it with short sleeps: Open MPI's blocking waits spin a core,
/// which the workers of this rank (or of another rank on the same host) need.
inline void waitGently(MPI_Request& request) {
  // A short spin first: a reply to a request usually comes within a few microseconds.
  const auto spinUntil = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
  auto pause = std::chrono::microseconds(10);
  for (;;) {
    int done = 0;
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    if (std::chrono::steady_clock::now() < spinUntil) continue;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

/// Messages longer than this go in several pieces (MPI counts are int).
inline constexpr std::size_t maxPiece = std::size_t{1} << 30;

/// A byte message: its size, then its bytes in pieces (tag + 1). MPI keeps messages of one
/// sender, tag and communicator in order, so the pieces arrive in order.
inline void sendBytes(const std::vector<std::byte>& bytes, int dest, int tag, MPI_Comm comm) {
  const std::uint64_t size = bytes.size();
  check(MPI_Send(&size, 1, MPI_UINT64_T, dest, tag, comm), "MPI_Send");
  for (std::size_t at = 0; at < bytes.size(); at += maxPiece) {
    const int n = static_cast<int>(std::min(maxPiece, bytes.size() - at));
    check(MPI_Send(bytes.data() + at, n, MPI_BYTE, dest, tag + 1, comm), "MPI_Send");
  }
}

/// Receives a message of sendBytes whose size was already received.
inline void receiveBody(std::vector<std::byte>& bytes, std::uint64_t size, int source, int tag, MPI_Comm comm) {
  bytes.resize(size);
  for (std::size_t at = 0; at < bytes.size(); at += maxPiece) {
    const int n = static_cast<int>(std::min(maxPiece, bytes.size() - at));
    MPI_Request request;
    check(MPI_Irecv(bytes.data() + at, n, MPI_BYTE, source, tag + 1, comm, &request), "MPI_Irecv");
    waitGently(request);
  }
}

/// Broadcasts bytes from `root` (their size first), waiting gently.
inline void broadcastBytes(std::vector<std::byte>& bytes, int root, MPI_Comm comm) {
  std::uint64_t size = bytes.size();
  MPI_Request request;
  check(MPI_Ibcast(&size, 1, MPI_UINT64_T, root, comm, &request), "MPI_Ibcast");
  waitGently(request);
  bytes.resize(size);
  for (std::size_t at = 0; at < bytes.size(); at += maxPiece) {
    const int n = static_cast<int>(std::min(maxPiece, bytes.size() - at));
    check(MPI_Ibcast(bytes.data() + at, n, MPI_BYTE, root, comm, &request), "MPI_Ibcast");
    waitGently(request);
  }
}

/// The call's own communicator (a duplicate of the user's), freed at the end of the call.
class Communicator {
public:
  explicit Communicator(MPI_Comm parent) {
    check(MPI_Comm_dup(parent, &comm_), "MPI_Comm_dup");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~Communicator() { MPI_Comm_free(&comm_); }
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  [[nodiscard]] MPI_Comm get() const noexcept { return comm_; }
  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int size() const noexcept { return size_; }

private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

enum Tag : int {
  tagRequest = 1, // a rank's results of its last batch and its request for the next (+1: its bytes)
  tagAssign = 3,  // the root's answer: [begin, end) of the next batch, empty when all is handed out
                  // (then a third value: whether a cancel was sent to this rank)
  tagCancel = 5,  // the root's stopToken: cancel the batch you run (at most one per rank and call)
  tagInsights = 7, // a rank's insights, once released, when the root asked for them (+1: its bytes)
};

inline std::string processorName() {
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  return std::string(name, static_cast<std::size_t>(std::max(len, 0)));
}

inline void encodeFailure(ByteWriter& w, const Failure& f) {
  BinaryCodec::encode(w, static_cast<std::uint64_t>(f.index));
  BinaryCodec::encode(w, static_cast<std::uint8_t>(f.kind));
  BinaryCodec::encode(w, f.message);
  BinaryCodec::encode(w, f.type);
  BinaryCodec::encode(w, static_cast<std::int32_t>(f.signal));
  BinaryCodec::encode(w, static_cast<std::uint8_t>(f.exitStatus.has_value()));
  BinaryCodec::encode(w, static_cast<std::int32_t>(f.exitStatus.value_or(0)));
  BinaryCodec::encode(w, static_cast<std::int64_t>(f.pid));
  BinaryCodec::encode(w, static_cast<std::int32_t>(f.rank));
  BinaryCodec::encode(w, f.host);
}

inline Failure decodeFailure(ByteReader& r) {
  Failure f;
  f.index = static_cast<std::size_t>(BinaryCodec::decode<std::uint64_t>(r));
  const auto kind = BinaryCodec::decode<std::uint8_t>(r);
  if (kind > static_cast<std::uint8_t>(FailureKind::outOfMemory))
    throw ProtocolError(fmt::format("flock: mpi: a failure of unknown kind {} arrived", kind));
  f.kind = static_cast<FailureKind>(kind);
  f.message = BinaryCodec::decode<std::string>(r);
  f.type = BinaryCodec::decode<std::string>(r);
  f.signal = BinaryCodec::decode<std::int32_t>(r);
  const bool hasExit = BinaryCodec::decode<std::uint8_t>(r) != 0;
  const auto exit = BinaryCodec::decode<std::int32_t>(r);
  if (hasExit) f.exitStatus = exit;
  f.pid = static_cast<pid_t>(BinaryCodec::decode<std::int64_t>(r));
  f.rank = BinaryCodec::decode<std::int32_t>(r);
  f.host = BinaryCodec::decode<std::string>(r);
  return f;
}

/// What one rank made of one batch: an outcome per input.
template <class R>
using BatchOutcomes = std::vector<Outcome<R>>;

/// Runs inputs [begin, end) on this rank's local workers, forked for this batch by the one-shot
/// engine (which brings timeOutError, retries and the stopToken of `local`). Failures come back
/// with their index in the whole input range and this rank's name. Never throws: a batch that
/// cannot run at all (no worker starts) is one failure per input, so no rank waits forever.
/// This is the one place to change to feed a persistent local pool instead.
template <class Codec, class R, class It, class F>
BatchOutcomes<R> runBatch(It first, std::size_t begin, std::size_t end, F& fn, const Options& local, int rank,
                          const std::string& host, Insights* insights = nullptr) {
  using Diff = std::iter_difference_t<It>;
  BatchOutcomes<R> outs;
  try {
    if (insights) {
      Options o = local;
      o.insights = insights;
      outs = flockmp::detail::runOn<true, Codec, R>(first + static_cast<Diff>(begin), end - begin, fn, o);
    } else {
      outs = flockmp::detail::runOn<true, Codec, R>(first + static_cast<Diff>(begin), end - begin, fn, local);
    }
  } catch (const std::exception& e) {
    outs.clear();
    outs.reserve(end - begin);
    for (std::size_t i = begin; i < end; ++i) {
      Failure f;
      f.index = i - begin;
      f.kind = FailureKind::notRun;
      f.message = fmt::format("the batch could not run on this rank: {}", e.what());
      outs.emplace_back(std::move(f));
    }
  }
  for (auto& o : outs) {
    if (!o.hasValue()) {
      Failure f = o.failure();
      f.index += begin;
      f.rank = rank;
      f.host = host;
      o = Outcome<R>(std::move(f));
    }
  }
  return outs;
}

template <class Codec, class R>
void encodeOutcomes(ByteWriter& w, std::size_t begin, BatchOutcomes<R>& outs) {
  BinaryCodec::encode(w, static_cast<std::uint64_t>(begin));
  BinaryCodec::encode(w, static_cast<std::uint64_t>(outs.size()));
  for (auto& o : outs) {
    BinaryCodec::encode(w, static_cast<std::uint8_t>(o.hasValue()));
    if (!o.hasValue()) encodeFailure(w, o.failure());
    else if constexpr (!std::is_void_v<R>) Codec::encode(w, *o);
  }
}

/// The root's record of the call: a value or a failure for every input.
template <class R>
class Results {
public:
  using Stored = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

  explicit Results(std::size_t n) : values_(n) {}

  [[nodiscard]] std::size_t size() const noexcept { return values_.size(); }
  [[nodiscard]] std::size_t failed() const noexcept { return failures_.size(); }
  /// Room for `n` inputs (a pool call grows it as it reads a range of unknown length).
  void resize(std::size_t n) { values_.resize(n); }

  void put(std::size_t i, Outcome<R>&& o) {
    if (o.hasValue()) {
      if constexpr (std::is_void_v<R>) values_[i].emplace();
      else values_[i].emplace(std::move(*o));
    } else {
      failures_.push_back(o.failure());
    }
  }
  void putValue(std::size_t i, Stored&& v) { values_[i].emplace(std::move(v)); }
  void putFailure(Failure f) { failures_.push_back(std::move(f)); }

  /// Reads a batch that encodeOutcomes wrote (untrusted: a corrupt batch throws ProtocolError or
  /// CodecError); returns how many inputs it held.
  template <class Codec>
  std::size_t decodeBatch(ByteReader& r, std::size_t expectBegin, std::size_t expectCount) {
    const auto begin = BinaryCodec::decode<std::uint64_t>(r);
    const auto count = BinaryCodec::decode<std::uint64_t>(r);
    if (begin != expectBegin || count != expectCount)
      throw ProtocolError(fmt::format("flock: mpi: a rank sent results for inputs [{}, {}), not the batch [{}, {}) it was given",
                                      begin, begin + count, expectBegin, expectBegin + expectCount));
    for (std::size_t k = 0; k < count; ++k) {
      const std::size_t i = begin + k;
      if (BinaryCodec::decode<std::uint8_t>(r) != 0) {
        if constexpr (std::is_void_v<R>) values_[i].emplace();
        else values_[i].emplace(Codec::template decode<R>(r));
      } else {
        Failure f = decodeFailure(r);
        if (f.index != i) throw ProtocolError(fmt::format("flock: mpi: a failure of input {} arrived as input {}", f.index, i));
        failures_.push_back(std::move(f));
      }
    }
    return count;
  }

  /// Failures sorted by index (done once, at the end).
  std::vector<Failure>& sortedFailures() {
    std::sort(failures_.begin(), failures_.end(), [](const Failure& a, const Failure& b) { return a.index < b.index; });
    return failures_;
  }

  /// Everything the other ranks need: the failures, and with `all` every value too.
  template <class Codec>
  std::vector<std::byte> encodeSummary(bool all) {
    std::vector<std::byte> bytes;
    ByteWriter w(bytes);
    auto& fs = sortedFailures();
    BinaryCodec::encode(w, static_cast<std::uint64_t>(fs.size()));
    for (const auto& f : fs) encodeFailure(w, f);
    if (all) {
      if constexpr (!std::is_void_v<R>) {
        for (auto& v : values_) {
          BinaryCodec::encode(w, static_cast<std::uint8_t>(v.has_value()));
          if (v) Codec::encode(w, *v);
        }
      }
    }
    return bytes;
  }

  template <class Codec>
  void decodeSummary(ByteReader& r, bool all) {
    const auto count = BinaryCodec::decode<std::uint64_t>(r);
    for (std::uint64_t k = 0; k < count; ++k) failures_.push_back(decodeFailure(r));
    if (all) {
      if constexpr (std::is_void_v<R>) {
        for (auto& v : values_) v.emplace();
      } else {
        for (auto& v : values_)
          if (BinaryCodec::decode<std::uint8_t>(r) != 0) v.emplace(Codec::template decode<R>(r));
      }
    }
    r.expectEnd();
  }

  /// One outcome per input (failures sorted first).
  std::vector<Outcome<R>> outcomes() {
    std::vector<Outcome<R>> out;
    out.reserve(values_.size());
    auto& fs = sortedFailures();
    std::size_t next = 0;
    for (std::size_t i = 0; i < values_.size(); ++i) {
      if (next < fs.size() && fs[next].index == i) {
        out.emplace_back(fs[next++]);
      } else if constexpr (std::is_void_v<R>) {
        out.emplace_back();
      } else {
        out.emplace_back(std::move(*values_[i]));
      }
    }
    return out;
  }

  std::vector<Stored> values() {
    std::vector<Stored> out;
    out.reserve(values_.size());
    for (auto& v : values_) out.push_back(std::move(*v));
    return out;
  }

private:
  std::vector<std::optional<Stored>> values_;
  std::vector<Failure> failures_;
};

/// Adds a batch's insights to a rank's: its workers (named by rank and host), its slowest inputs
/// (by their index in the whole call), restarts, retries and the time on results. The call's
/// inputs, failures and wall time are the root's to count.
inline void mergeInsights(Insights& into, Insights&& part, std::size_t begin, int rank, const std::string& host) {
  into.parentResults += part.parentResults;
  into.restarts += part.restarts;
  into.retries += part.retries;
  for (auto& w : part.workers) {
    if (w.rank < 0) {
      w.rank = rank;
      w.host = host;
    }
    into.workers.push_back(std::move(w));
  }
  for (auto s : part.slowest) {
    s.index += begin;
    into.slowest.push_back(s);
  }
  std::sort(into.slowest.begin(), into.slowest.end(),
            [](const InputTime& a, const InputTime& b) { return a.duration > b.duration; });
  if (into.slowest.size() > Insights::slowestKept) into.slowest.resize(Insights::slowestKept);
}

inline void encodeInsights(ByteWriter& w, const Insights& in) {
  BinaryCodec::encode(w, static_cast<std::int64_t>(in.parentResults.count()));
  BinaryCodec::encode(w, static_cast<std::uint64_t>(in.restarts));
  BinaryCodec::encode(w, static_cast<std::uint64_t>(in.retries));
  BinaryCodec::encode(w, static_cast<std::uint64_t>(in.workers.size()));
  for (const auto& x : in.workers) {
    BinaryCodec::encode(w, static_cast<std::int64_t>(x.pid));
    BinaryCodec::encode(w, static_cast<std::int64_t>(x.startup.count()));
    BinaryCodec::encode(w, static_cast<std::uint64_t>(x.inputs));
    BinaryCodec::encode(w, static_cast<std::int64_t>(x.tasks.count()));
    BinaryCodec::encode(w, static_cast<std::int64_t>(x.idle.count()));
    BinaryCodec::encode(w, x.bytesSent);
    BinaryCodec::encode(w, x.peakRss);
    BinaryCodec::encode(w, static_cast<std::uint8_t>(x.ended));
    BinaryCodec::encode(w, static_cast<std::int32_t>(x.rank));
    BinaryCodec::encode(w, x.host);
  }
  BinaryCodec::encode(w, static_cast<std::uint64_t>(in.slowest.size()));
  for (const auto& t : in.slowest) {
    BinaryCodec::encode(w, static_cast<std::uint64_t>(t.index));
    BinaryCodec::encode(w, static_cast<std::int64_t>(t.duration.count()));
  }
}

inline Insights decodeInsights(ByteReader& r) {
  Insights in;
  in.parentResults = std::chrono::nanoseconds(BinaryCodec::decode<std::int64_t>(r));
  in.restarts = static_cast<std::size_t>(BinaryCodec::decode<std::uint64_t>(r));
  in.retries = static_cast<std::size_t>(BinaryCodec::decode<std::uint64_t>(r));
  const auto workers = BinaryCodec::decode<std::uint64_t>(r);
  for (std::uint64_t k = 0; k < workers; ++k) {
    WorkerInsights x;
    x.pid = static_cast<pid_t>(BinaryCodec::decode<std::int64_t>(r));
    x.startup = std::chrono::nanoseconds(BinaryCodec::decode<std::int64_t>(r));
    x.inputs = static_cast<std::size_t>(BinaryCodec::decode<std::uint64_t>(r));
    x.tasks = std::chrono::nanoseconds(BinaryCodec::decode<std::int64_t>(r));
    x.idle = std::chrono::nanoseconds(BinaryCodec::decode<std::int64_t>(r));
    x.bytesSent = BinaryCodec::decode<std::uint64_t>(r);
    x.peakRss = BinaryCodec::decode<std::uint64_t>(r);
    x.ended = BinaryCodec::decode<std::uint8_t>(r) != 0;
    x.rank = BinaryCodec::decode<std::int32_t>(r);
    x.host = BinaryCodec::decode<std::string>(r);
    in.workers.push_back(std::move(x));
  }
  const auto slowest = BinaryCodec::decode<std::uint64_t>(r);
  for (std::uint64_t k = 0; k < slowest; ++k) {
    InputTime t;
    t.index = static_cast<std::size_t>(BinaryCodec::decode<std::uint64_t>(r));
    t.duration = std::chrono::nanoseconds(BinaryCodec::decode<std::int64_t>(r));
    in.slowest.push_back(t);
  }
  r.expectEnd();
  return in;
}

/// The root's own share of the work, run by one thread of its own so that the root's MPI thread
/// keeps answering the other ranks while its workers compute. This thread forks the workers
/// (and outlives them: PR_SET_PDEATHSIG follows the forking thread) and never calls MPI.
template <class Codec, class R, class It, class F>
class RootLane {
public:
  RootLane(It first, F& fn, Options local, int rank, std::string host, bool insights = false)
      : first_(first), fn_(fn), local_(std::move(local)), rank_(rank), host_(std::move(host)), insights_(insights) {
    local_.stopToken = stop_.get_token();
    local_.onProgress = [this](const Progress& p) { running_.store(p.done, std::memory_order_relaxed); };
    thread_ = std::thread([this] { loop(); });
  }
  ~RootLane() {
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
    }
    stop_.request_stop();
    cv_.notify_all();
    thread_.join();
  }
  RootLane(const RootLane&) = delete;
  RootLane& operator=(const RootLane&) = delete;

  [[nodiscard]] bool idle() {
    std::lock_guard lock(mutex_);
    return !task_ && !done_;
  }
  void give(std::size_t begin, std::size_t end) {
    {
      std::lock_guard lock(mutex_);
      task_ = {begin, end};
    }
    cv_.notify_all();
  }
  /// The finished batch, if there is one: its first index and outcomes.
  std::optional<std::pair<std::size_t, BatchOutcomes<R>>> take() {
    std::lock_guard lock(mutex_);
    auto out = std::move(done_);
    done_.reset();
    return out;
  }
  /// Waits until the running batch is finished, at most `d` (the root's idle wait: it wakes at
  /// once for its own batch, and polls the other ranks at least every `d`).
  void waitDone(std::chrono::microseconds d) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, d, [&] { return done_.has_value(); });
  }
  /// Inputs of the running batch finished so far (for progress).
  [[nodiscard]] std::size_t running() const noexcept { return running_.load(std::memory_order_relaxed); }
  /// Cancels the running batch and every later one (Options::stopToken of the root).
  void cancel() { stop_.request_stop(); }
  /// The insights of this rank's batches so far (when asked for at construction).
  Insights takeInsights() {
    std::lock_guard lock(mutex_);
    return std::move(collected_);
  }

private:
  void loop() {
    for (;;) {
      std::pair<std::size_t, std::size_t> task;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return quit_ || task_.has_value(); });
        if (quit_) return;
        task = *task_;
      }
      running_.store(0, std::memory_order_relaxed);
      Insights batch;
      auto outs = runBatch<Codec, R>(first_, task.first, task.second, fn_, local_, rank_, host_,
                                     insights_ ? &batch : nullptr);
      {
        std::lock_guard lock(mutex_);
        if (insights_) mergeInsights(collected_, std::move(batch), task.first, rank_, host_);
        task_.reset();
        running_.store(0, std::memory_order_relaxed);
        done_.emplace(task.first, std::move(outs));
      }
      cv_.notify_all();
    }
  }

  It first_;
  F& fn_;
  Options local_;
  int rank_;
  std::string host_;
  bool insights_;
  Insights collected_; // guarded by mutex_
  std::stop_source stop_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<std::pair<std::size_t, std::size_t>> task_;
  std::optional<std::pair<std::size_t, BatchOutcomes<R>>> done_;
  std::atomic<std::size_t> running_{0};
  bool quit_ = false;
  std::thread thread_;
};

/// The options of one batch on this rank: progress is the root's business (it aggregates every
/// rank's), so the local engine draws nothing.
inline Options localOptions(const Options& o) {
  Options local = o;
  local.onProgress = nullptr;
  local.checkProgress = false;
  local.progressLines = false;
  local.insights = nullptr; // each batch has its own, merged by the rank and sent to the root
  return local;
}

/// The root: hands out batches to the ranks that ask (itself included, through its lane),
/// collects their results, and reports progress.
template <class Codec, class R, class It, class F>
Results<R> runRoot(It first, std::size_t n, F& fn, const Options& opts, const ClusterOptions& cluster,
                   const Communicator& comm, const std::vector<std::string>& hosts) {
  const auto callStart = std::chrono::steady_clock::now();
  const int ranks = comm.size();
  const int me = comm.rank();
  Results<R> results(n);
  std::vector<std::size_t> given(static_cast<std::size_t>(ranks), 0);
  // Per rank, the batch it is running: [begin, begin + count).
  std::vector<std::pair<std::size_t, std::size_t>> running(static_cast<std::size_t>(ranks), {0, 0});
  std::size_t next = 0;      // first input not handed out
  std::size_t completed = 0; // inputs with a value or a failure
  int released = 0;          // other ranks told that no work is left
  bool stopped = false;
  std::vector<std::uint8_t> cancelSent(static_cast<std::size_t>(ranks), 0);
  const std::size_t myWorkers = flockmp::detail::workerCount(opts, SIZE_MAX);

  RootLane<Codec, R, It, F> lane(first, fn, localOptions(opts), me, hosts[static_cast<std::size_t>(me)],
                                 opts.insights != nullptr);
  auto progressBar = flockmp::detail::ProgressBar::forOptions(opts);
  auto lastReport = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  const auto report = [&](bool final) {
    if (!opts.onProgress && !progressBar) return;
    const auto now = std::chrono::steady_clock::now();
    if (!final && now - lastReport < std::chrono::milliseconds(100)) return;
    lastReport = now;
    const std::size_t done = final ? completed : std::min(n, completed + lane.running());
    if (opts.onProgress) opts.onProgress(Progress{done, results.failed(), n});
    if (progressBar) progressBar->update(done, results.failed(), n, final);
  };
  const auto handOut = [&](int rank, std::size_t workers) -> std::pair<std::size_t, std::size_t> {
    const std::size_t count = guidedBatch(n - next, static_cast<std::size_t>(ranks), workers, opts.batchSize);
    const std::size_t begin = next;
    next += count;
    given[static_cast<std::size_t>(rank)] += count;
    running[static_cast<std::size_t>(rank)] = {begin, count};
    return {begin, begin + count};
  };

  std::vector<std::byte> message;
  auto pause = std::chrono::microseconds(10);
  while (completed < n || released < ranks - 1) {
    bool acted = false;
    if (!stopped && opts.stopToken.stop_requested()) {
      // What is not handed out yet is cancelled; the root's own batch is cancelled by its engine,
      // and the batches running on other ranks by theirs, told by a cancel message.
      stopped = true;
      lane.cancel();
      for (int r = 0; r < ranks; ++r) {
        if (r == me || running[static_cast<std::size_t>(r)].second == 0) continue;
        const std::uint64_t one = 1;
        check(MPI_Send(&one, 1, MPI_UINT64_T, r, tagCancel, comm.get()), "MPI_Send");
        cancelSent[static_cast<std::size_t>(r)] = 1;
      }
      for (; next < n; ++next) {
        Failure f;
        f.index = next;
        f.kind = FailureKind::cancelled;
        f.message = "the call was cancelled before this input was handed to a rank";
        results.putFailure(std::move(f));
        ++completed;
      }
    }
    if (auto batch = lane.take()) {
      for (std::size_t k = 0; k < batch->second.size(); ++k) results.put(batch->first + k, std::move(batch->second[k]));
      completed += batch->second.size();
      acted = true;
    }
    if (next < n && lane.idle()) {
      auto [b, e] = handOut(me, myWorkers);
      lane.give(b, e);
      acted = true;
    }
    int arrived = 0;
    MPI_Status status;
    check(MPI_Iprobe(MPI_ANY_SOURCE, tagRequest, comm.get(), &arrived, &status), "MPI_Iprobe");
    if (arrived) {
      const int source = status.MPI_SOURCE;
      std::uint64_t size = 0;
      check(MPI_Recv(&size, 1, MPI_UINT64_T, source, tagRequest, comm.get(), MPI_STATUS_IGNORE), "MPI_Recv");
      receiveBody(message, size, source, tagRequest, comm.get());
      ByteReader r(message);
      const auto workers = BinaryCodec::decode<std::uint64_t>(r);
      auto& [begin, count] = running[static_cast<std::size_t>(source)];
      completed += results.template decodeBatch<Codec>(r, begin, count);
      r.expectEnd();
      begin = 0;
      count = 0;
      std::uint64_t assign[3] = {0, 0, 0};
      if (next < n) {
        auto [b, e] = handOut(source, static_cast<std::size_t>(std::max<std::uint64_t>(workers, 1)));
        assign[0] = b;
        assign[1] = e;
      } else {
        ++released;
        assign[2] = cancelSent[static_cast<std::size_t>(source)];
      }
      check(MPI_Send(assign, 3, MPI_UINT64_T, source, tagAssign, comm.get()), "MPI_Send");
      acted = true;
    }
    report(false);
    if (acted) {
      pause = std::chrono::microseconds(10);
    } else {
      lane.waitDone(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(500));
    }
  }
  report(true);
  if (cluster.inputsPerRank) *cluster.inputsPerRank = given;
  if (opts.insights) {
    // Every other rank sends its part once released; the call's totals are counted here.
    Insights total = lane.takeInsights();
    for (int r = 0; r < ranks; ++r) {
      if (r == me) continue;
      std::uint64_t size = 0;
      MPI_Request request;
      check(MPI_Irecv(&size, 1, MPI_UINT64_T, r, tagInsights, comm.get(), &request), "MPI_Irecv");
      waitGently(request);
      receiveBody(message, size, r, tagInsights, comm.get());
      ByteReader reader(message);
      mergeInsights(total, decodeInsights(reader), 0, r, hosts[static_cast<std::size_t>(r)]);
    }
    total.inputs = n;
    std::size_t ran = 0;
    for (const auto& w : total.workers) ran += w.inputs;
    total.notRun = n - std::min(n, ran);
    for (const auto& f : results.sortedFailures()) ++total.failures[static_cast<std::size_t>(f.kind)];
    total.wall = std::chrono::steady_clock::now() - callStart;
    *opts.insights = std::move(total);
  }
  return results;
}

/// Any other rank: asks the root for batches, runs them on its workers (in a lane thread, so that
/// this thread sees a cancel from the root meanwhile), sends the results back with its next
/// request, until the root says that no work is left.
template <class Codec, class R, class It, class F>
void runMember(It first, F& fn, const Options& opts, int root, const Communicator& comm, const std::string& host,
               bool insights) {
  const auto workers = static_cast<std::uint64_t>(flockmp::detail::workerCount(opts, SIZE_MAX));
  RootLane<Codec, R, It, F> lane(first, fn, localOptions(opts), comm.rank(), host, insights);
  // The root's cancel (its stopToken), posted for the whole call: it comes at most once.
  std::uint64_t cancelMessage = 0;
  MPI_Request cancelRequest;
  check(MPI_Irecv(&cancelMessage, 1, MPI_UINT64_T, root, tagCancel, comm.get(), &cancelRequest), "MPI_Irecv");
  bool cancelled = false;
  const auto pollCancel = [&] {
    if (cancelled) return;
    int arrived = 0;
    check(MPI_Test(&cancelRequest, &arrived, MPI_STATUS_IGNORE), "MPI_Test");
    if (arrived) {
      cancelled = true;
      lane.cancel();
    }
  };
  std::vector<std::byte> message;
  ByteWriter w(message);
  BinaryCodec::encode(w, workers);
  BatchOutcomes<R> none;
  encodeOutcomes<Codec, R>(w, 0, none);
  for (;;) {
    sendBytes(message, root, tagRequest, comm.get());
    std::uint64_t assign[3] = {0, 0, 0};
    MPI_Request request;
    check(MPI_Irecv(assign, 3, MPI_UINT64_T, root, tagAssign, comm.get(), &request), "MPI_Irecv");
    waitGently(request);
    if (assign[0] >= assign[1]) {
      // Released: take the cancel the root sent (it says whether it did), or withdraw the receive.
      if (!cancelled && assign[2] != 0) waitGently(cancelRequest);
      else if (!cancelled) {
        MPI_Cancel(&cancelRequest);
        MPI_Wait(&cancelRequest, MPI_STATUS_IGNORE);
      }
      if (insights) {
        message.clear();
        encodeInsights(w, lane.takeInsights());
        sendBytes(message, root, tagInsights, comm.get());
      }
      return;
    }
    lane.give(assign[0], assign[1]);
    auto pause = std::chrono::microseconds(10);
    std::optional<std::pair<std::size_t, BatchOutcomes<R>>> done;
    while (!(done = lane.take())) {
      pollCancel();
      if (opts.stopToken.stop_requested()) lane.cancel(); // this rank's own stopToken
      lane.waitDone(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
    message.clear();
    BinaryCodec::encode(w, workers);
    encodeOutcomes<Codec, R>(w, assign[0], done->second);
  }
}

/// Every rank checks its options and the call's shape, then all agree, before any work: a rank
/// that disagrees makes every rank throw instead of hanging.
/// Returns whether the root asked for insights (Options::insights), which every rank then collects.
inline bool agree(std::size_t n, const Options& opts, const ClusterOptions& cluster, const Communicator& comm) {
  std::exception_ptr mine;
  try {
    flockmp::detail::validateOptions(opts);
    if (cluster.root < 0 || cluster.root >= comm.size())
      throw OptionError(fmt::format("flock: mpi: root must be a rank of the communicator, 0 to {} (got {})", comm.size() - 1,
                                    cluster.root));
  } catch (...) {
    mine = std::current_exception();
  }
  const auto count = static_cast<std::int64_t>(n);
  const std::int64_t root = cluster.root;
  const std::int64_t broadcast = cluster.broadcast ? 1 : 0;
  // Maxima of x and -x give the largest and smallest value of each across the ranks.
  const std::int64_t insights = comm.rank() == cluster.root && opts.insights ? 1 : 0;
  std::int64_t v[8] = {count, -count, root, -root, broadcast, -broadcast, mine ? comm.rank() + 1 : 0, insights};
  check(MPI_Allreduce(MPI_IN_PLACE, v, 8, MPI_INT64_T, MPI_MAX, comm.get()), "MPI_Allreduce");
  if (mine) std::rethrow_exception(mine);
  if (v[6] != 0)
    throw OptionError(fmt::format("flock: mpi: rank {} was given invalid options (its error names them); no rank ran anything",
                                  v[6] - 1));
  if (v[0] != -v[1])
    throw Error(fmt::format("flock: mpi: the ranks disagree on the number of inputs: rank {} has {}, others have from {} to {}; "
                            "every rank must call mpi::apply with the same inputs",
                            comm.rank(), n, -v[1], v[0]));
  if (v[2] != -v[3])
    throw OptionError(fmt::format("flock: mpi: the ranks disagree on the root: rank {} names {}, others from {} to {}",
                                  comm.rank(), root, -v[3], v[2]));
  if (v[4] != -v[5]) throw OptionError("flock: mpi: the ranks disagree on ClusterOptions::broadcast");
  return v[7] != 0;
}

/// Every rank's host name, on every rank (a failure names the host of its rank).
inline std::vector<std::string> gatherHosts(const Communicator& comm) {
  std::vector<char> all(static_cast<std::size_t>(comm.size()) * MPI_MAX_PROCESSOR_NAME, '\0');
  std::vector<char> mine(MPI_MAX_PROCESSOR_NAME, '\0');
  const std::string name = processorName();
  std::copy(name.begin(), name.end(), mine.begin());
  MPI_Request request;
  check(MPI_Iallgather(mine.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                       comm.get(), &request),
        "MPI_Iallgather");
  waitGently(request);
  std::vector<std::string> hosts;
  for (int r = 0; r < comm.size(); ++r) {
    const char* p = all.data() + static_cast<std::size_t>(r) * MPI_MAX_PROCESSOR_NAME;
    hosts.emplace_back(p, std::find(p, p + MPI_MAX_PROCESSOR_NAME, '\0'));
  }
  return hosts;
}

/// Ends the MPI job after an error that leaves other ranks waiting in a call (MPI_Abort).
[[noreturn]] inline void abortJob(const Communicator& comm, const char* why) {
  std::fprintf(stderr, "flock: mpi: rank %d cannot go on with the call (%s): aborting the MPI job\n", comm.rank(), why);
  std::fflush(stderr);
  MPI_Abort(comm.get(), 1);
  std::abort(); // MPI_Abort does not return
}

template <bool Try, class Codec, class R, class It, class F>
auto runCollective(It first, std::size_t n, F& fn, const Options& opts, const ClusterOptions& cluster)
    -> flockmp::detail::CallResult<Try, R> {
  requireInitialized();
  Communicator comm(cluster.comm);
  const bool insights = agree(n, opts, cluster, comm);
  const auto hosts = gatherHosts(comm);
  const bool isRoot = comm.rank() == cluster.root;

  Results<R> results(0);
  try {
    if (isRoot) results = runRoot<Codec, R>(first, n, fn, opts, cluster, comm, hosts);
    else runMember<Codec, R>(first, fn, opts, cluster.root, comm, hosts[static_cast<std::size_t>(comm.rank())], insights);
  } catch (const std::exception& e) {
    // The other ranks wait for this one inside the call and cannot be told: end the job (MPI's
    // last resort) rather than leave them hanging.
    abortJob(comm, e.what());
  }
  if (!isRoot) results = Results<R>(n);
  // Every rank learns the failures (so apply throws the same TaskError everywhere), and with
  // broadcast every value.
  std::vector<std::byte> summary;
  if (isRoot) summary = results.template encodeSummary<Codec>(cluster.broadcast);
  broadcastBytes(summary, cluster.root, comm.get());
  if (!isRoot) {
    ByteReader r(summary);
    results.template decodeSummary<Codec>(r, cluster.broadcast);
  }
  const bool whole = isRoot || cluster.broadcast;

  if constexpr (Try) {
    if (!whole) return std::vector<Outcome<R>>{};
    return results.outcomes();
  } else {
    if (results.failed() > 0) {
      std::vector<Failure> failures = results.sortedFailures();
      throw TaskError(std::move(failures), whole ? results.outcomes() : std::vector<Outcome<R>>{});
    }
    if constexpr (std::is_void_v<R>) return;
    else {
      if (!whole) return std::vector<R>{};
      return results.values();
    }
  }
}

template <bool Try, class Codec, class F, class Range>
auto run(F& fn, Range&& items, const Options& opts, const ClusterOptions& cluster)
    -> flockmp::detail::CallResult<Try, typename flockmp::detail::SafeResult<F, std::ranges::range_reference_t<Range>>::type> {
  using Ref = std::ranges::range_reference_t<Range>;
  using R = typename flockmp::detail::SafeResult<F, Ref>::type;
  if constexpr (!flockmp::detail::CallableOn<F, Ref>) {
    flockmp::detail::requireCallable<F, Ref>();
    return {};
  } else if constexpr (!std::is_void_v<R> && !CodecFor<Codec, R>) {
    requireCodable<Codec, R>(); // results cross the network through the codec
    return {};
  } else if constexpr (std::ranges::random_access_range<Range> && std::ranges::sized_range<Range>) {
    return runCollective<Try, Codec, R>(std::ranges::begin(items), static_cast<std::size_t>(std::ranges::size(items)), fn,
                                        opts, cluster);
  } else {
    std::vector<std::ranges::range_value_t<Range>> copy;
    for (auto&& x : items) copy.push_back(std::forward<decltype(x)>(x));
    return runCollective<Try, Codec, R>(copy.begin(), copy.size(), fn, opts, cluster);
  }
}

} // namespace detail

/// Runs `fn(item)` for every item across the ranks of the communicator: a collective call that
/// every rank makes with the same inputs and callable. The root (rank 0) hands out batches of
/// indices on demand (large first, shrinking, so a slow rank or host gets less) and computes too;
/// each rank runs its batches on `options.poolSize` local worker processes (default: its CPUs)
/// forked from it, which inherit `fn` and the inputs: only indices and results (through `Codec`)
/// cross the network. The workers never call MPI.
///
/// Returns the results in input order on the root, an empty vector on the other ranks (every
/// rank gets them with `cluster.broadcast`). When an input fails (exception, crash, timeout),
/// every rank throws the same flockmp::TaskError; its failures name the input, the rank and the
/// host. Ranks that disagree on the number of inputs (or on `cluster`) all throw flockmp::Error
/// before anything runs. `timeOutError`, `retries`, `batchSize` and the other options apply to
/// each rank's workers as locally; progress (`onProgress`, `checkProgress`) is reported on the
/// root for the whole call; the root's `stopToken` cancels what is not handed out yet and the
/// batches running on every rank (a rank's own stopToken cancels its own batch). An error that
/// leaves the other ranks waiting inside the call (an MPI error, a corrupt message, an exception
/// from `onProgress`) ends the job with MPI_Abort, MPI's last resort, rather than hang.
///
///   flockmp::mpi::Environment env(argc, argv);
///   auto squares = flockmp::mpi::apply(xs, [](int x) { return x * x; }); // on rank 0
template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
auto apply(Range&& items, F&& fn, const Options& options = {}, const ClusterOptions& cluster = {}) {
  return detail::run<false, Codec>(fn, std::forward<Range>(items), options, cluster);
}

/// Like apply, but never throws for failed inputs: one flockmp::Outcome per input on the root
/// (on every rank with `cluster.broadcast`; an empty vector on the others otherwise).
template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
auto tryApply(Range&& items, F&& fn, const Options& options = {}, const ClusterOptions& cluster = {}) {
  return detail::run<true, Codec>(fn, std::forward<Range>(items), options, cluster);
}

/// MPI for a program that has none of its own: initializes MPI (MPI_Init_thread) when it is not
/// yet initialized and finalizes it at the end of its life; does nothing when the program
/// initialized MPI itself. Create one at the top of main, before any thread or flock call.
///
/// Thread level: flock calls MPI only from the thread that calls mpi::apply, one call at a time;
/// the root's second thread (which forks its workers) never calls MPI. MPI_THREAD_FUNNELED (the
/// default asked for) is enough when apply is called from the main thread; ask for
/// MPI_THREAD_SERIALIZED to call it from another thread.
///
/// Open MPI warns once per rank about fork() on fabrics that pin memory (InfiniBand; not over
/// shared memory or TCP). flock leaves that warning on: its workers never call MPI, but on a
/// kernel older than 5.13 pinned pages are missing in a forked child, and a worker that touched
/// one would crash (one failed input each). Silence it with OMPI_MCA_mpi_warn_on_fork=0.
class Environment {
public:
  explicit Environment(int requiredThreadLevel = MPI_THREAD_FUNNELED) { init(nullptr, nullptr, requiredThreadLevel); }
  Environment(int& argc, char**& argv, int requiredThreadLevel = MPI_THREAD_FUNNELED) {
    init(&argc, &argv, requiredThreadLevel);
  }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  /// Finalizes MPI if this object initialized it and nobody finalized it since.
  ~Environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }

  /// The thread level MPI provides.
  [[nodiscard]] int threadLevel() const noexcept { return provided_; }
  /// Whether this object initialized MPI (and will finalize it).
  [[nodiscard]] bool ownsMpi() const noexcept { return owns_; }
  /// This process's rank in MPI_COMM_WORLD.
  [[nodiscard]] int rank() const noexcept {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }
  /// The number of ranks in MPI_COMM_WORLD.
  [[nodiscard]] int size() const noexcept {
    int s = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
  }

private:
  void init(int* argc, char*** argv, int required) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) {
      MPI_Query_thread(&provided_);
      return;
    }
    detail::check(MPI_Init_thread(argc, argv, required, &provided_), "MPI_Init_thread");
    owns_ = true;
  }

  int provided_ = MPI_THREAD_SINGLE;
  bool owns_ = false;
};

namespace detail {

// A pool's messages: the root sends tasks (a batch, a cancel, the close) and each rank answers
// every batch with one result message. Tags apart from mpi::apply's (the pool has its own
// communicator anyway).
enum PoolTag : int {
  tagPoolTask = 21,   // root -> rank: PoolMessage and its body (+1: its bytes)
  tagPoolResult = 23, // rank -> root: the outcomes of one batch (+1: its bytes)
};
enum class PoolMessage : std::uint8_t { batch = 1, cancel = 2, close = 3 };

/// What a rank knows when it runs one batch of a pool call.
struct RankBatch {
  flockmp::BaseMultiProc& pool;
  CallOptions call;
  std::uint64_t begin = 0;
  std::uint64_t count = 0;
  int rank = 0;
  const std::string& host;
};

/// The code a rank runs for a batch, named by its offset in the program (the same binary on
/// every rank): rebuilds the callable, decodes the inputs, runs them on the rank's pool and
/// writes their outcomes. One instantiation per (Codec, callable, input, result) of a call.
using RankThunk = void (*)(RankBatch& batch, ByteReader& in, ByteWriter& out);

/// Failures of a rank's batch: their index in the whole call, the rank and its host.
template <class R>
void placeFailures(BatchOutcomes<R>& outs, std::size_t begin, int rank, const std::string& host) {
  for (auto& o : outs) {
    if (!o.hasValue()) {
      Failure f = o.failure();
      f.index += begin;
      f.rank = rank;
      f.host = host;
      o = Outcome<R>(std::move(f));
    }
  }
}

template <class Codec, class Fn, class In, class R>
void rankThunk(RankBatch& b, ByteReader& in, ByteWriter& out) {
  const Fn fn = flockmp::detail::decodeCallable<Codec, Fn>(in);
  std::vector<In> inputs;
  inputs.reserve(static_cast<std::size_t>(b.count));
  for (std::uint64_t k = 0; k < b.count; ++k) inputs.push_back(Codec::template decode<In>(in));
  in.expectEnd();
  BatchOutcomes<R> outs = b.pool.template tryApply<Codec>(inputs, fn, b.call);
  if (outs.size() != inputs.size())
    throw ProtocolError(fmt::format("flock: mpi::Pool: {} outcomes for {} inputs", outs.size(), inputs.size()));
  placeFailures(outs, static_cast<std::size_t>(b.begin), b.rank, b.host);
  encodeOutcomes<Codec, R>(out, static_cast<std::size_t>(b.begin), outs);
}

/// A batch that could not run at all on a rank: one failure per input, so nothing is lost.
inline void encodeFailedBatch(ByteWriter& w, std::uint64_t begin, std::uint64_t count, FailureKind kind,
                              const std::string& message, int rank, const std::string& host) {
  BinaryCodec::encode(w, begin);
  BinaryCodec::encode(w, count);
  for (std::uint64_t k = 0; k < count; ++k) {
    Failure f;
    f.index = static_cast<std::size_t>(begin + k);
    f.kind = kind;
    f.message = message;
    f.rank = rank;
    f.host = host;
    BinaryCodec::encode(w, std::uint8_t{0});
    encodeFailure(w, f);
  }
}

/// The call options a batch carries to a rank (its stopToken is the rank's own).
inline void encodeCallOptions(ByteWriter& w, const Options& o) {
  BinaryCodec::encode(w, static_cast<std::uint8_t>(o.timeOutError.has_value()));
  BinaryCodec::encode(w, static_cast<std::int64_t>(o.timeOutError.value_or(Duration{}).count()));
  BinaryCodec::encode(w, static_cast<std::int32_t>(o.retries));
  BinaryCodec::encode(w, static_cast<std::uint64_t>(o.memoryLimit));
  BinaryCodec::encode(w, static_cast<std::uint8_t>(o.insights != nullptr));
}

/// `insights`: whether the root asked for the batch's insights (sent after its outcomes).
inline CallOptions decodeCallOptions(ByteReader& r, bool& insights) {
  CallOptions c;
  const bool hasTimeout = BinaryCodec::decode<std::uint8_t>(r) != 0;
  const auto ns = BinaryCodec::decode<std::int64_t>(r);
  if (hasTimeout) c.timeOutError = Duration(std::chrono::nanoseconds(ns));
  c.retries = BinaryCodec::decode<std::int32_t>(r);
  c.memoryLimit = static_cast<std::size_t>(BinaryCodec::decode<std::uint64_t>(r));
  insights = BinaryCodec::decode<std::uint8_t>(r) != 0;
  return c;
}

/// A code address every rank compares at the start: ranks that run different programs (whose
/// thunks would sit at different offsets) fail there, clearly, instead of calling wrong code.
inline void poolAnchor() {}

/// A non-root rank's pool: one thread owns a local flockmp::BaseMultiProc (so its workers, which
/// die with the thread that forked them, live as long as the mpi::Pool) and runs the batches the
/// rank's MPI thread gives it; that thread never calls MPI.
class RankLane {
public:
  RankLane(Options local, int rank, std::string host) : rank_(rank), host_(std::move(host)) {
    thread_ = std::thread([this, local = std::move(local)]() mutable { loop(std::move(local)); });
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return started_; });
  }
  ~RankLane() {
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
      if (stop_) stop_->request_stop();
    }
    cv_.notify_all();
    thread_.join();
  }
  RankLane(const RankLane&) = delete;
  RankLane& operator=(const RankLane&) = delete;

  /// Why the local pool could not start (empty when it did).
  [[nodiscard]] const std::string& startError() const noexcept { return startError_; }
  /// The local pool's worker count.
  [[nodiscard]] std::size_t workers() const noexcept { return workers_; }

  /// Runs a batch message (whose kind, call and first index were read already).
  void give(std::vector<std::byte> message, std::size_t offset, std::uint64_t call, std::uint64_t begin,
            std::uint64_t count) {
    {
      std::lock_guard lock(mutex_);
      task_.emplace(Task{std::move(message), offset, call, begin, count});
      stop_.emplace();
    }
    cv_.notify_all();
  }
  /// Cancels the running batch if it is the one named.
  void cancel(std::uint64_t call, std::uint64_t begin) {
    std::lock_guard lock(mutex_);
    if (task_ && task_->call == call && task_->begin == begin && stop_) stop_->request_stop();
  }
  /// The result message of the finished batch, if there is one.
  std::optional<std::vector<std::byte>> take() {
    std::lock_guard lock(mutex_);
    auto out = std::move(done_);
    done_.reset();
    return out;
  }
  void waitDone(std::chrono::microseconds d) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, d, [&] { return done_.has_value(); });
  }

private:
  struct Task {
    std::vector<std::byte> message;
    std::size_t offset = 0;
    std::uint64_t call = 0;
    std::uint64_t begin = 0;
    std::uint64_t count = 0;
  };

  void loop(Options local) {
    std::optional<flockmp::BaseMultiProc> pool;
    try {
      workers_ = flockmp::detail::workerCount(local, SIZE_MAX);
      pool.emplace(std::move(local));
      pool->start(); // workers start with the pool, not at its first batch
    } catch (const std::exception& e) {
      startError_ = e.what();
      pool.reset();
    }
    {
      std::lock_guard lock(mutex_);
      started_ = true;
    }
    cv_.notify_all();
    for (;;) {
      Task task;
      std::stop_token token;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return quit_ || task_.has_value(); });
        if (quit_) break;
        task = std::move(*task_);
        token = stop_->get_token();
      }
      std::vector<std::byte> result;
      ByteWriter w(result);
      BinaryCodec::encode(w, task.call);
      const std::size_t head = result.size();
      try {
        if (!pool) throw Error(fmt::format("the rank's workers could not start: {}", startError_));
        ByteReader r(task.message);
        r.take(task.offset);
        const auto thunk = reinterpret_cast<RankThunk>(flockmp::detail::resolveCodeRef(flockmp::detail::CodeRef::decode(r)));
        bool wantInsights = false;
        CallOptions call = decodeCallOptions(r, wantInsights);
        call.stopToken = token;
        Insights insights;
        if (wantInsights) call.insights = &insights;
        RankBatch batch{*pool, std::move(call), task.begin, task.count, rank_, host_};
        thunk(batch, r, w);
        if (wantInsights) {
          Insights placed;
          mergeInsights(placed, std::move(insights), static_cast<std::size_t>(task.begin), rank_, host_);
          BinaryCodec::encode(w, std::uint8_t{1});
          encodeInsights(w, placed);
        } else {
          BinaryCodec::encode(w, std::uint8_t{0});
        }
      } catch (const std::exception& e) {
        result.resize(head);
        encodeFailedBatch(w, task.begin, task.count, FailureKind::notRun,
                          fmt::format("the batch could not run on this rank: {}", e.what()), rank_, host_);
        BinaryCodec::encode(w, std::uint8_t{0}); // no insights
      }
      {
        std::lock_guard lock(mutex_);
        task_.reset();
        stop_.reset();
        done_.emplace(std::move(result));
      }
      cv_.notify_all();
    }
    if (pool) pool->close(); // here, while the thread that forked the workers is alive
  }

  int rank_;
  std::string host_;
  std::string startError_;
  std::size_t workers_ = 1;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<Task> task_;
  std::optional<std::stop_source> stop_;
  std::optional<std::vector<std::byte>> done_;
  bool started_ = false;
  bool quit_ = false;
  std::thread thread_;
};

/// Sends a message and waits for it gently (a large one waits for the receiver).
inline void sendGently(const std::vector<std::byte>& bytes, int dest, int tag, MPI_Comm comm) {
  const std::uint64_t size = bytes.size();
  MPI_Request request;
  check(MPI_Isend(&size, 1, MPI_UINT64_T, dest, tag, comm, &request), "MPI_Isend");
  waitGently(request);
  for (std::size_t at = 0; at < bytes.size(); at += maxPiece) {
    const int n = static_cast<int>(std::min(maxPiece, bytes.size() - at));
    check(MPI_Isend(bytes.data() + at, n, MPI_BYTE, dest, tag + 1, comm, &request), "MPI_Isend");
    waitGently(request);
  }
}

} // namespace detail

/// A pool on the root whose workers are the other ranks, for a driver program that streams its
/// inputs (the collective mpi::apply needs every input on every rank). Every rank constructs it
/// (a collective call, with the same arguments); on the other ranks the constructor serves: it
/// runs what the root sends on the rank's own persistent pool of `options.poolSize` forked
/// workers (a flockmp::BaseMultiProc, default: its CPUs), and returns when the root closes the
/// pool. On the root it returns at once, and apply/tryApply run over inputs read from the range
/// as ranks ask for batches (guided, as mpi::apply).
///
/// As on a local pool, the workers did not inherit the call: inputs and results travel through
/// `Codec`, and the callable must be rebuildable on another rank (a function pointer, a
/// captureless lambda or empty function object, a function object the codec carries); anything
/// else is a compile-time error. The ranks must run the same program (checked at construction).
/// A crash, abort or timeout costs one input; failures name the input, the rank and the host.
/// The workers persist: a rank's workers serve every call of the pool.
///
///   flockmp::mpi::Environment env(argc, argv);
///   flockmp::mpi::Pool pool({.poolSize = 4}); // the other ranks serve here until the root closes it
///   if (pool.isRoot()) {
///     auto squares = pool.apply(xs, [](int x) { return x * x; });
///   }
///
/// Per call (CallOptions, or the pool's Options where unset): timeOutError, retries and
/// memoryLimit apply on every rank's workers; batchSize fixes the inputs per batch; stopToken
/// and failFast cancel what is not handed out and the batches running on the ranks; progress
/// and insights are reported on the root. Calls are made from the thread that constructed the pool (one at a
/// time; MPI_THREAD_SERIALIZED for several threads). When a call throws on the root, the pool
/// stays usable; destroying (or closing) it cancels what runs on the ranks and releases them,
/// so an exception on the root never leaves a rank waiting. It needs at least two ranks. While it
/// is open the other ranks serve it: no other collective call (mpi::apply included) until the
/// root closes it. `cluster.broadcast` does not apply; `cluster.inputsPerRank` is filled per call.
class Pool {
public:
  /// Collective. Throws flockmp::OptionError on every rank for bad options or disagreeing
  /// ranks, flockmp::Error when a rank's workers cannot start or the ranks run different
  /// programs. On a non-root rank, returns when the root closes the pool (it is then closed).
  explicit Pool(Options options = {}, ClusterOptions cluster = {})
      : opts_(std::move(options)), root_(cluster.root), given_(cluster.inputsPerRank) {
    detail::requireInitialized();
    comm_.emplace(cluster.comm);
    if (comm_->size() < 2)
      throw OptionError("flock: mpi::Pool needs at least two ranks (its workers are the ranks other than the root); "
                        "with one rank use flockmp::BaseMultiProc");
    isRoot_ = comm_->rank() == root_;
    hosts_ = detail::gatherHosts(*comm_);
    Options local = detail::localOptions(opts_);
    std::optional<detail::RankLane> lane;
    std::exception_ptr mine;
    try {
      flockmp::detail::validateOptions(opts_);
      if (root_ < 0 || root_ >= comm_->size())
        throw OptionError(fmt::format("flock: mpi: root must be a rank of the communicator, 0 to {} (got {})",
                                      comm_->size() - 1, root_));
      if (!isRoot_) {
        lane.emplace(local, comm_->rank(), hosts_[static_cast<std::size_t>(comm_->rank())]);
        if (!lane->startError().empty())
          throw Error(fmt::format("flock: mpi::Pool: the workers of rank {} on {} could not start: {}", comm_->rank(),
                                  hosts_[static_cast<std::size_t>(comm_->rank())], lane->startError()));
      }
    } catch (...) {
      mine = std::current_exception();
    }
    const auto anchor = static_cast<std::int64_t>(
        flockmp::detail::codeRefOf(reinterpret_cast<const void*>(&detail::poolAnchor)).offset);
    const std::int64_t root = root_;
    const std::int64_t workers = lane ? static_cast<std::int64_t>(lane->workers()) : 0;
    // Maxima of x and -x give the largest and smallest value of each across the ranks.
    std::int64_t v[5] = {root, -root, anchor, -anchor, mine ? comm_->rank() + 1 : 0};
    detail::check(MPI_Allreduce(MPI_IN_PLACE, v, 5, MPI_INT64_T, MPI_MAX, comm_->get()), "MPI_Allreduce");
    workers_.assign(static_cast<std::size_t>(comm_->size()), 0);
    MPI_Request request;
    detail::check(MPI_Iallgather(&workers, 1, MPI_INT64_T, workers_.data(), 1, MPI_INT64_T, comm_->get(), &request),
                  "MPI_Iallgather");
    detail::waitGently(request);
    if (mine) std::rethrow_exception(mine);
    if (v[4] != 0)
      throw Error(fmt::format("flock: mpi::Pool: rank {} could not set up the pool (its error says why); no rank serves",
                              v[4] - 1));
    if (v[0] != -v[1])
      throw OptionError(fmt::format("flock: mpi: the ranks disagree on the root: rank {} names {}, others from {} to {}",
                                    comm_->rank(), root, -v[1], v[0]));
    if (v[2] != -v[3])
      throw Error("flock: mpi::Pool: the ranks run different programs (an mpi::Pool runs code by its place in the "
                  "program, so every rank must run the same executable)");
    busy_.assign(static_cast<std::size_t>(comm_->size()), Batch{});
    if (!isRoot_) {
      try {
        serve(*lane);
      } catch (const std::exception& e) {
        // The root would wait for this rank's answer forever: end the job (MPI's last resort).
        std::fprintf(stderr, "flock: mpi::Pool: rank %d cannot serve the root any more (%s): aborting the job\n",
                     comm_->rank(), e.what());
        MPI_Abort(comm_->get(), 1);
      }
      lane.reset();
      closed_ = true;
      comm_.reset();
    }
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  /// On the root: cancels what runs on the ranks and releases them (see close).
  ~Pool() { close(); }

  /// Whether this rank is the root (the one that calls apply).
  [[nodiscard]] bool isRoot() const noexcept { return isRoot_; }
  /// Workers per rank, indexed by rank (0 for the root, which only schedules).
  [[nodiscard]] std::vector<std::size_t> workersPerRank() const {
    return {workers_.begin(), workers_.end()};
  }

  /// On the root: cancels the batches still running on the ranks, waits for their answers, and
  /// releases every rank (their constructors return; their workers stop). Later calls throw
  /// flockmp::Error. Calling it again, or on another rank, does nothing.
  void close() noexcept {
    if (!isRoot_ || closed_) return;
    closed_ = true;
    try {
      drain();
      std::vector<std::byte> message;
      ByteWriter w(message);
      BinaryCodec::encode(w, static_cast<std::uint8_t>(detail::PoolMessage::close));
      for (int r = 0; r < comm_->size(); ++r)
        if (r != root_) detail::sendGently(message, r, detail::tagPoolTask, comm_->get());
    } catch (const std::exception& e) {
      // The ranks would wait for the root forever: end the job (MPI's last resort).
      std::fprintf(stderr, "flock: mpi::Pool could not release the other ranks (%s): aborting the job\n", e.what());
      MPI_Abort(comm_->get(), 1);
    }
    comm_.reset();
  }

  /// On the root: runs `fn` on every element of `items` on the other ranks' workers; the results
  /// in input order (nothing when `fn` returns void). `items` is read as ranks ask for work, so
  /// it may be single-pass. Throws flockmp::TaskError when an input failed (its failures name
  /// the input, rank and host), flockmp::Error on another rank or after close.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto apply(Range&& items, const F& fn, const CallOptions& call = {}) {
    return run<false, Codec>(std::forward<Range>(items), callableOf(fn), call);
  }
  /// Like apply, but never throws for failed inputs: one flockmp::Outcome per input.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto tryApply(Range&& items, const F& fn, const CallOptions& call = {}) {
    return run<true, Codec>(std::forward<Range>(items), callableOf(fn), call);
  }

private:
  /// The batch a rank is running.
  struct Batch {
    bool busy = false;
    std::uint64_t call = 0;
    std::uint64_t begin = 0;
    std::uint64_t count = 0;
  };

  template <class F>
  static auto callableOf(const F& fn) {
    if constexpr (std::is_function_v<F>) return &fn;
    else return fn;
  }

  template <bool Try, class Codec, class Range, class Fn>
  auto run(Range&& items, const Fn& fn, const CallOptions& call)
      -> flockmp::detail::CallResult<Try, typename flockmp::detail::SafeResult<Fn, std::remove_cv_t<std::ranges::range_value_t<Range>>&>::type> {
    using In = std::remove_cv_t<std::ranges::range_value_t<Range>>;
    using R = typename flockmp::detail::SafeResult<Fn, In&>::type;
    if constexpr (!flockmp::detail::CallableOn<Fn, In&>) {
      flockmp::detail::requireCallable<Fn, In&>();
      return {};
    } else if constexpr (!flockmp::detail::PortableCallable<Codec, Fn>) {
      (void)flockmp::detail::PortabilityCheck<Fn>{};
      return {};
    } else if constexpr (!CodecFor<Codec, In>) {
      requireCodable<Codec, In>(); // inputs travel to the ranks through the codec
      return {};
    } else if constexpr (!std::is_void_v<R> && !CodecFor<Codec, R>) {
      requireCodable<Codec, R>();
      return {};
    } else {
      auto results = runCall<Codec, Fn, In, R>(items, fn, call);
      if constexpr (Try) {
        return results.outcomes();
      } else {
        if (results.failed() > 0) {
          std::vector<Failure> failures = results.sortedFailures();
          throw TaskError(std::move(failures), results.outcomes());
        }
        if constexpr (!std::is_void_v<R>) return results.values();
      }
    }
  }

  void requireOpen() const {
    if (!isRoot_) throw Error("flock: mpi::Pool: only the root calls apply (the other ranks serve in the constructor)");
    if (closed_) throw Error("flock: mpi::Pool: this pool is closed");
  }

  Options merged(const CallOptions& c) const { return flockmp::detail::withCallOptions(opts_, c); }

  template <class Codec, class Fn, class In, class R, class Range>
  detail::Results<R> runCall(Range& items, const Fn& fn, const CallOptions& call) {
    requireOpen();
    const Options opts = merged(call);
    flockmp::detail::validateOptions(opts);
    const auto callStart = std::chrono::steady_clock::now();
    Insights collected;
    drain(); // the answers of a call that threw on the root
    const std::uint64_t id = ++calls_;
    if (given_) given_->assign(static_cast<std::size_t>(comm_->size()), 0);
    // What every batch of this call carries before its inputs: the code to run, the options of
    // the ranks' workers, the callable.
    static const flockmp::detail::CodeRef thunk =
        flockmp::detail::codeRefOf(reinterpret_cast<const void*>(&detail::rankThunk<Codec, Fn, In, R>));
    std::vector<std::byte> head;
    {
      ByteWriter w(head);
      thunk.encode(w);
      detail::encodeCallOptions(w, opts);
      flockmp::detail::encodeCallable<Codec, Fn>(w, fn);
    }
    constexpr bool sized = std::ranges::sized_range<Range>;
    std::size_t total = 0;
    if constexpr (sized) total = static_cast<std::size_t>(std::ranges::size(items));
    const std::size_t members = static_cast<std::size_t>(comm_->size() - 1);

    detail::Results<R> results(0);
    auto it = std::ranges::begin(items);
    const auto end = std::ranges::end(items);
    std::size_t next = 0;      // inputs read (and handed out)
    std::size_t completed = 0; // inputs with a value or a failure
    bool stopped = false;
    auto progressBar = flockmp::detail::ProgressBar::forOptions(opts);
    auto lastReport = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    const auto report = [&](bool final) {
      if (!opts.onProgress && !progressBar) return;
      const auto now = std::chrono::steady_clock::now();
      if (!final && now - lastReport < std::chrono::milliseconds(100)) return;
      lastReport = now;
      const bool known = sized || final || it == end;
      const std::size_t all = sized ? total : next;
      if (opts.onProgress) opts.onProgress(Progress{completed, results.failed(), all, known});
      if (progressBar) progressBar->update(completed, results.failed(), all, final, now, known);
    };

    std::vector<std::byte> message;
    std::vector<std::byte> answer;
    auto pause = std::chrono::microseconds(10);
    for (;;) {
      bool acted = false;
      if (!stopped && (opts.stopToken.stop_requested() || (opts.failFast && results.failed() > 0))) {
        stopped = true;
        cancelRunning();
      }
      for (int r = 0; r < comm_->size() && !stopped && it != end; ++r) {
        auto& b = busy_[static_cast<std::size_t>(r)];
        if (r == root_ || b.busy) continue;
        const auto workers = static_cast<std::size_t>(std::max<std::int64_t>(workers_[static_cast<std::size_t>(r)], 1));
        const std::size_t want = sized ? detail::guidedBatch(total - next, members, workers, opts.batchSize)
                                       : (opts.batchSize > 0 ? opts.batchSize : 4 * workers);
        message.clear();
        ByteWriter w(message);
        BinaryCodec::encode(w, static_cast<std::uint8_t>(detail::PoolMessage::batch));
        BinaryCodec::encode(w, id);
        BinaryCodec::encode(w, static_cast<std::uint64_t>(next));
        const std::size_t countAt = message.size();
        BinaryCodec::encode(w, std::uint64_t{0}); // the count, written below
        w.write(head.data(), head.size());
        std::uint64_t count = 0;
        for (; count < want && it != end; ++it, ++count) {
          In x = *it;
          Codec::encode(w, x);
        }
        std::memcpy(message.data() + countAt, &count, sizeof count);
        if (count == 0) break;
        results.resize(next + count);
        detail::sendGently(message, r, detail::tagPoolTask, comm_->get());
        b = Batch{true, id, next, count};
        next += count;
        acted = true;
      }
      int arrived = 0;
      MPI_Status status;
      detail::check(MPI_Iprobe(MPI_ANY_SOURCE, detail::tagPoolResult, comm_->get(), &arrived, &status), "MPI_Iprobe");
      if (arrived) {
        const int source = status.MPI_SOURCE;
        auto& b = busy_[static_cast<std::size_t>(source)];
        receiveAnswer(source, answer);
        ByteReader r(answer);
        const auto answered = BinaryCodec::decode<std::uint64_t>(r);
        if (!b.busy || answered != b.call)
          throw ProtocolError(fmt::format("flock: mpi::Pool: rank {} answered call {}, which it was not running", source,
                                          answered));
        b.busy = false;
        completed += results.template decodeBatch<Codec>(r, static_cast<std::size_t>(b.begin),
                                                         static_cast<std::size_t>(b.count));
        if (BinaryCodec::decode<std::uint8_t>(r) != 0) {
          mergeRows(collected, detail::decodeInsights(r));
        } else {
          r.expectEnd();
        }
        if (given_) (*given_)[static_cast<std::size_t>(source)] += static_cast<std::size_t>(b.count);
        acted = true;
      }
      const bool running = std::any_of(busy_.begin(), busy_.end(), [](const Batch& b) { return b.busy; });
      if (!running && (stopped || it == end)) break;
      report(false);
      if (acted) {
        pause = std::chrono::microseconds(10);
      } else {
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(500));
      }
    }
    if (stopped) {
      // What was not handed out is cancelled (a range of unknown length is read to its end to
      // give each of its inputs an outcome, as a local apply does).
      const std::string why = opts.stopToken.stop_requested()
                                  ? "the call was cancelled before this input was handed to a rank"
                                  : "an earlier input failed (failFast) before this input was handed to a rank";
      if constexpr (sized) {
        for (; next < total; ++next) results.putFailure(cancelled(next, why));
      } else {
        for (; it != end; ++it, ++next) results.putFailure(cancelled(next, why));
      }
      results.resize(next);
      completed = next;
    }
    report(true);
    if (opts.insights) {
      collected.inputs = results.size();
      std::size_t ran = 0;
      for (const auto& w : collected.workers) ran += w.inputs;
      collected.notRun = collected.inputs - std::min(collected.inputs, ran);
      for (const auto& f : results.sortedFailures()) ++collected.failures[static_cast<std::size_t>(f.kind)];
      collected.wall = std::chrono::steady_clock::now() - callStart;
      *opts.insights = std::move(collected);
    }
    return results;
  }

  /// Adds a batch's insights to the call's: a worker that served several batches (the ranks'
  /// workers persist) keeps one row.
  static void mergeRows(Insights& into, Insights&& part) {
    std::vector<WorkerInsights> rows = std::move(part.workers);
    part.workers.clear();
    detail::mergeInsights(into, std::move(part), 0, -1, {});
    for (auto& w : rows) {
      auto same = std::find_if(into.workers.begin(), into.workers.end(),
                               [&](const WorkerInsights& x) { return x.rank == w.rank && x.pid == w.pid; });
      if (same == into.workers.end()) {
        into.workers.push_back(std::move(w));
        continue;
      }
      same->inputs += w.inputs;
      same->tasks += w.tasks;
      same->idle += w.idle;
      same->bytesSent += w.bytesSent;
      same->peakRss = std::max(same->peakRss, w.peakRss);
      same->ended = same->ended || w.ended;
    }
  }

  static Failure cancelled(std::size_t index, const std::string& why) {
    Failure f;
    f.index = index;
    f.kind = FailureKind::cancelled;
    f.message = why;
    return f;
  }

  /// Receives the answer of `source` (it was probed or is due).
  void receiveAnswer(int source, std::vector<std::byte>& answer) {
    std::uint64_t size = 0;
    MPI_Request request;
    detail::check(MPI_Irecv(&size, 1, MPI_UINT64_T, source, detail::tagPoolResult, comm_->get(), &request), "MPI_Irecv");
    detail::waitGently(request);
    detail::receiveBody(answer, size, source, detail::tagPoolResult, comm_->get());
  }

  /// Asks every rank that runs a batch to cancel it (its inputs come back cancelled).
  void cancelRunning() {
    for (int r = 0; r < comm_->size(); ++r) {
      const auto& b = busy_[static_cast<std::size_t>(r)];
      if (!b.busy) continue;
      std::vector<std::byte> message;
      ByteWriter w(message);
      BinaryCodec::encode(w, static_cast<std::uint8_t>(detail::PoolMessage::cancel));
      BinaryCodec::encode(w, b.call);
      BinaryCodec::encode(w, b.begin);
      detail::sendGently(message, r, detail::tagPoolTask, comm_->get());
    }
  }

  /// Cancels and collects (unread) the batches of a call that ended by an exception on the root,
  /// so that no rank is left sending an answer nobody takes.
  void drain() {
    if (std::none_of(busy_.begin(), busy_.end(), [](const Batch& b) { return b.busy; })) return;
    cancelRunning();
    std::vector<std::byte> answer;
    for (int r = 0; r < comm_->size(); ++r) {
      auto& b = busy_[static_cast<std::size_t>(r)];
      if (!b.busy) continue;
      receiveAnswer(r, answer);
      b.busy = false;
    }
  }

  /// A non-root rank: runs the batches the root sends on its lane, answers each, until the root
  /// closes the pool.
  void serve(detail::RankLane& lane) {
    const MPI_Comm comm = comm_->get();
    std::vector<std::byte> message;
    for (;;) {
      std::uint64_t size = 0;
      MPI_Request request;
      detail::check(MPI_Irecv(&size, 1, MPI_UINT64_T, root_, detail::tagPoolTask, comm, &request), "MPI_Irecv");
      // Wait for the root's next message, answering finished batches meanwhile.
      auto pause = std::chrono::microseconds(10);
      for (;;) {
        int arrived = 0;
        detail::check(MPI_Test(&request, &arrived, MPI_STATUS_IGNORE), "MPI_Test");
        if (arrived) break;
        if (auto result = lane.take()) {
          detail::sendGently(*result, root_, detail::tagPoolResult, comm);
          pause = std::chrono::microseconds(10);
          continue;
        }
        lane.waitDone(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(1000));
      }
      detail::receiveBody(message, size, root_, detail::tagPoolTask, comm);
      ByteReader r(message);
      const auto kind = static_cast<detail::PoolMessage>(BinaryCodec::decode<std::uint8_t>(r));
      if (kind == detail::PoolMessage::close) break;
      const auto call = BinaryCodec::decode<std::uint64_t>(r);
      const auto begin = BinaryCodec::decode<std::uint64_t>(r);
      if (kind == detail::PoolMessage::cancel) {
        lane.cancel(call, begin);
      } else if (kind == detail::PoolMessage::batch) {
        const auto count = BinaryCodec::decode<std::uint64_t>(r);
        const std::size_t offset = message.size() - r.remaining();
        lane.give(std::move(message), offset, call, begin, count);
        message = {};
      } else {
        throw ProtocolError(fmt::format("flock: mpi::Pool: a message of unknown kind {} arrived",
                                        static_cast<int>(kind)));
      }
    }
  }

  Options opts_;
  int root_ = 0;
  std::vector<std::size_t>* given_ = nullptr;
  bool isRoot_ = false;
  bool closed_ = false;
  std::optional<detail::Communicator> comm_;
  std::vector<std::string> hosts_;
  std::vector<std::int64_t> workers_;
  std::vector<Batch> busy_;
  std::uint64_t calls_ = 0;
};

} // namespace flockmp::mpi

// flock internals: asynchronous work on a pool (submit, applyAsync). Every task of every handle
// goes into one open-ended call that a driver thread runs on the pool's engine, so tasks of
// several handles share the workers at once. A task is a record: the kind of call (its thunk and
// the callable's bytes, sent to each worker once per change of the table) and its encoded
// arguments. Results are routed back to the handle that owns the task.
#pragma once

#include "config.hpp"

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../codec.hpp"
#include "../error.hpp"
#include "../insights.hpp"
#include "run.hpp"
#include "stream.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <sys/eventfd.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <thread>
#endif

namespace flockmp::detail {

/// The kind of a task the workers run: the parent's record of a task thunk and its callable.
struct TaskKind {
  CodeRef thunk;
  std::vector<std::byte> callable;
};

/// Worker side: run one task of a kind, from its encoded arguments, and buffer its outcome.
using TaskThunk = void (*)(std::span<const std::byte> callable, std::size_t index, std::span<const std::byte> args,
                           WorkerControl& ctl, ResultWriter& out);

/// The kind of a task: `fn` on a decoded `In`, spread into its arguments when `Spread` (submit's
/// argument tuple), or given as one input that invokeOn may unpack (applyAsync's items).
template <class Codec, class F, class In, class R, bool Spread>
void taskThunk(std::span<const std::byte> callable, std::size_t index, std::span<const std::byte> args,
               WorkerControl& /*ctl: asyncThunk already recorded the input*/, ResultWriter& out) {
  std::optional<F> fn;
  std::optional<In> in;
  try {
    ByteReader cr(callable);
    fn.emplace(decodeCallable<Codec, F>(cr));
    ByteReader ar(args);
    in.emplace(Codec::template decode<In>(ar));
    ar.expectEnd();
  } catch (...) {
    auto [type, message] = describeCurrentException();
    out.failure(index, FailureKind::codec, type, "the task could not be rebuilt in the worker: " + message);
    return;
  }
  try {
    if constexpr (Spread) {
      if constexpr (std::is_void_v<R>) {
        std::apply(*fn, *in);
        out.template result<Codec, std::tuple<>>(index, std::tuple<>{});
      } else {
        out.template result<Codec, R>(index, std::apply(*fn, *in));
      }
    } else {
      if constexpr (std::is_void_v<R>) {
        invokeOn(*fn, *in);
        out.template result<Codec, std::tuple<>>(index, std::tuple<>{});
      } else {
        out.template result<Codec, R>(index, invokeOn(*fn, *in));
      }
    }
  } catch (...) {
    auto [type, message] = describeCurrentException();
    out.failure(index, FailureKind::exception, type, message);
  }
}

/// The result of submit(fn, args...): fn called with the arguments' decayed copies.
template <class F, class Tuple>
struct SafeSubmitResult {
  using type = int; // only for a misused call, after its one error
};
template <class F, class... Args>
  requires std::is_invocable_v<const F&, Args&...>
struct SafeSubmitResult<F, std::tuple<Args...>> {
  using type = std::remove_cvref_t<std::invoke_result_t<const F&, Args&...>>;
};

/// The record kind of a task cancelled before it was sent: its worker reports it cancelled.
inline constexpr std::uint32_t cancelledTaskKind = 0xffffffffu;

/// Worker side of the async call: the callable's bytes are the table of task kinds, the inputs
/// are records ([u32 kind][u64 index in its handle][u64 length][arguments]); the index in its
/// handle is what currentInput() gives its task.
FLOCK_ENGINE_INLINE void asyncThunk(std::span<const std::byte> callable, std::size_t begin,
                                    std::size_t end, std::span<const std::byte> inputs,
                                    WorkerControl& ctl, ResultWriter& out);

/// A handle's side of its tasks, as the driver sees it (results are decoded by the driver).
class AsyncTarget {
public:
  virtual ~AsyncTarget() = default;
  /// Decode task `local`'s result (throws CodecError on bad bytes).
  virtual void accept(std::size_t local, ByteReader& r) = 0;
  virtual void fail(std::size_t local, Failure f) = 0;
  [[nodiscard]] bool cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }
  void cancel() noexcept { cancelled_.store(true, std::memory_order_relaxed); }

private:
  std::atomic<bool> cancelled_{false};
};

/// Where the driver leaves the Insights of the open-ended call that ran a handle's tasks, for
/// the handle to wait for (shared, so that the handle keeps it after get()).
class InsightsSlot {
public:
  /// The call ended: its insights, given to every handle it served.
  void fill(std::shared_ptr<const Insights> insights);
  const Insights& wait();

private:
  std::mutex m_;
  std::condition_variable cv_;
  std::shared_ptr<const Insights> insights_;
};

/// Tasks of one handle and one kind, waiting for the driver: their arguments, encoded.
struct TaskGroup {
  std::shared_ptr<AsyncTarget> target;
  TaskKind kind;
  std::vector<std::byte> args;        // the encoded arguments, one after the other
  std::vector<std::size_t> offsets;   // task k's arguments are [offsets[k], offsets[k + 1])
  std::shared_ptr<InsightsSlot> insights; // set when the pool gathers insights (Options::insights)
};

/// The async call's job: tasks in segments of consecutive indices, each of one handle and kind.
class AsyncJob final : public JobBase, private ResultSink {
public:
  [[nodiscard]] std::size_t size() const noexcept override { return 0; } // open-ended
  [[nodiscard]] ResultSink& sink() noexcept override { return *this; }
  void runBatch(std::size_t, std::size_t, WorkerControl&, ResultWriter&) override { ::_exit(workerInternalErrorExit); }
  [[nodiscard]] bool portable() const noexcept override { return true; }

  void encodeCall(ByteWriter& w) override;
  std::size_t encodeInputs(std::size_t begin, std::size_t end, ByteWriter& w,
                           std::exception_ptr&) override;

  /// Add a group's tasks at indices [next(), next() + count). True when its kind is new (the
  /// workers need the table again).
  bool add(TaskGroup group);
  [[nodiscard]] std::size_t next() const noexcept { return next_; }
  /// The call ended with tasks unresolved (no worker could start): each fails with `message`.
  void failUnresolved(FailureKind kind, const std::string& message);
  /// True when every task added has its outcome.
  [[nodiscard]] bool idle() const noexcept { return segments_.empty(); }
  /// A new call: the kinds table starts empty again.
  void reset();
  /// The call ended: its insights go to every handle it ran tasks of.
  void publish(const Insights& insights);

private:
  struct Segment {
    std::size_t first;
    std::size_t count;
    std::uint32_t kind;
    TaskGroup group;
    std::size_t resolved;
    std::vector<bool> isResolved;
  };

  Segment& segmentOf(std::size_t index);

  // ResultSink: results go to their handles.
  [[nodiscard]] bool rawResults() const noexcept override { return false; }
  [[nodiscard]] std::size_t rawElementSize() const noexcept override { return 0; }
  [[nodiscard]] std::byte* rawDestination(std::size_t) noexcept override { return nullptr; }
  void prepare() override {}
  void accept(std::size_t index, ByteReader& payload) override {
    auto& seg = segmentOf(index);
    seg.group.target->accept(index - seg.first, payload);
  }
  bool keepFailure(Failure& f) override;
  void done(std::size_t begin, std::size_t count) noexcept override;

  std::vector<TaskKind> kinds_;
  std::map<std::string, std::uint32_t> kindIds_;
  std::deque<Segment> segments_;
  std::size_t next_ = 0;
  std::vector<std::shared_ptr<InsightsSlot>> served_; // handles of this call that asked for insights
};

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void asyncThunk(std::span<const std::byte> callable, std::size_t begin,
                                    std::size_t end, std::span<const std::byte> inputs,
                                    WorkerControl& ctl, ResultWriter& out) {
  struct Kind {
    TaskThunk thunk = nullptr;
    std::span<const std::byte> callable;
    std::string error;
  };
  std::vector<Kind> kinds;
  ByteReader tr(callable);
  const auto count = tr.readRaw<std::uint64_t>();
  for (std::uint64_t k = 0; k < count; ++k) {
    Kind kind;
    const CodeRef ref = CodeRef::decode(tr);
    const auto bytes = tr.readRaw<std::uint64_t>();
    kind.callable = {tr.take(static_cast<std::size_t>(bytes)), static_cast<std::size_t>(bytes)};
    try {
      kind.thunk = reinterpret_cast<TaskThunk>(resolveCodeRef(ref));
    } catch (const std::exception& e) {
      kind.error = e.what();
    }
    kinds.push_back(std::move(kind));
  }
  ByteReader ir(inputs);
  for (std::size_t i = begin; i < end; ++i) {
    const auto kind = ir.readRaw<std::uint32_t>();
    const auto local = ir.readRaw<std::uint64_t>();
    const auto length = ir.readRaw<std::uint64_t>();
    const std::span<const std::byte> args{ir.take(static_cast<std::size_t>(length)), static_cast<std::size_t>(length)};
    if (local > static_cast<std::uint64_t>(INT64_MAX)) throw ProtocolError("flock: a task record with a bad index arrived");
    out.startInput(i);
    currentInputSource().local = static_cast<std::int64_t>(local);
    if (kind == cancelledTaskKind) {
      out.failure(i, FailureKind::cancelled, "", "cancelled before it ran");
    } else if (kind >= kinds.size()) {
      out.failure(i, FailureKind::protocol, "", "a task of an unknown kind arrived");
    } else if (kinds[kind].thunk == nullptr) {
      out.failure(i, FailureKind::exception, "flockmp::Error", kinds[kind].error);
    } else {
      kinds[kind].thunk(kinds[kind].callable, i, args, ctl, out);
    }
    currentInputSource().local = -1;
    out.flushIfDue();
  }
  ir.expectEnd();
}

FLOCK_ENGINE_INLINE void InsightsSlot::fill(std::shared_ptr<const Insights> insights) {
  {
    std::lock_guard lock(m_);
    if (insights_) return; // once: the first call to end with this handle's tasks
    insights_ = std::move(insights);
  }
  cv_.notify_all();
}

FLOCK_ENGINE_INLINE const Insights& InsightsSlot::wait() {
  std::unique_lock lock(m_);
  cv_.wait(lock, [&] { return insights_ != nullptr; });
  return *insights_;
}

FLOCK_ENGINE_INLINE void AsyncJob::encodeCall(ByteWriter& w) {
  static const CodeRef thunk = codeRefOf(reinterpret_cast<const void*>(&asyncThunk));
  encodeCallHead(w, thunk);
  w.writeRaw<std::uint64_t>(kinds_.size());
  for (const auto& k : kinds_) {
    k.thunk.encode(w);
    w.writeRaw<std::uint64_t>(k.callable.size());
    w.write(k.callable.data(), k.callable.size());
  }
}

FLOCK_ENGINE_INLINE std::size_t AsyncJob::encodeInputs(std::size_t begin, std::size_t end,
                                                       ByteWriter& w, std::exception_ptr&) {
  for (std::size_t i = begin; i < end; ++i) {
    auto& seg = segmentOf(i);
    const std::size_t k = i - seg.first;
    if (seg.group.target->cancelled()) {
      w.writeRaw<std::uint32_t>(cancelledTaskKind);
      w.writeRaw<std::uint64_t>(k);
      w.writeRaw<std::uint64_t>(0);
      continue;
    }
    const std::size_t from = seg.group.offsets[k], to = seg.group.offsets[k + 1];
    w.writeRaw<std::uint32_t>(seg.kind);
    w.writeRaw<std::uint64_t>(k);
    w.writeRaw<std::uint64_t>(to - from);
    w.write(seg.group.args.data() + from, to - from);
  }
  return end;
}

FLOCK_ENGINE_INLINE bool AsyncJob::add(TaskGroup group) {
  std::string key(reinterpret_cast<const char*>(group.kind.callable.data()),
                  group.kind.callable.size());
  key += group.kind.thunk.object;
  key += std::to_string(group.kind.thunk.offset);
  bool added = false;
  auto [it, inserted] = kindIds_.try_emplace(key, static_cast<std::uint32_t>(kinds_.size()));
  if (inserted) {
    kinds_.push_back(group.kind);
    added = true;
  }
  if (group.insights) served_.push_back(group.insights);
  const std::size_t count = group.offsets.size() - 1;
  segments_.push_back(
      Segment{next_, count, it->second, std::move(group), 0, std::vector<bool>(count, false)});
  next_ += count;
  return added;
}

FLOCK_ENGINE_INLINE void AsyncJob::failUnresolved(FailureKind kind, const std::string& message) {
  for (auto& seg : segments_)
    for (std::size_t k = 0; k < seg.count; ++k)
      if (!seg.isResolved[k])
        seg.group.target->fail(k, Failure{k, kind, message, "", 0, std::nullopt, 0, -1, {}});
  segments_.clear();
}

FLOCK_ENGINE_INLINE void AsyncJob::reset() {
  kinds_.clear();
  kindIds_.clear();
  segments_.clear();
  served_.clear();
  next_ = 0;
}

FLOCK_ENGINE_INLINE void AsyncJob::publish(const Insights& insights) {
  if (served_.empty()) return;
  auto shared = std::make_shared<const Insights>(insights);
  for (auto& slot : served_) slot->fill(shared);
  served_.clear();
}

FLOCK_ENGINE_INLINE auto AsyncJob::segmentOf(std::size_t index) -> Segment& {
  // Segments are in index order; most lookups are near the front.
  auto it = std::upper_bound(segments_.begin(), segments_.end(), index,
                             [](std::size_t i, const Segment& s) { return i < s.first; });
  if (it == segments_.begin())
    throw ProtocolError(fmt::format("flock: no task has index {}", index));
  --it;
  if (index >= it->first + it->count)
    throw ProtocolError(fmt::format("flock: no task has index {}", index));
  return *it;
}

FLOCK_ENGINE_INLINE bool AsyncJob::keepFailure(Failure& f) {
  auto& seg = segmentOf(f.index);
  const std::size_t local = f.index - seg.first;
  f.index = local;
  seg.group.target->fail(local, std::move(f));
  return true;
}

FLOCK_ENGINE_INLINE void AsyncJob::done(std::size_t begin, std::size_t count) noexcept {
  // A batch, hence a resolved range, may span segments.
  while (count > 0) {
    auto it = std::upper_bound(segments_.begin(), segments_.end(), begin,
                               [](std::size_t i, const Segment& s) { return i < s.first; });
    if (it == segments_.begin()) return;
    --it;
    const std::size_t take = std::min(count, it->first + it->count - begin);
    for (std::size_t k = begin - it->first; k < begin - it->first + take; ++k)
      it->isResolved[k] = true;
    it->resolved += take;
    begin += take;
    count -= take;
  }
  while (!segments_.empty() && segments_.front().resolved == segments_.front().count)
    segments_.pop_front();
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

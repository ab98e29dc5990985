// flock: asynchronous work on a pool. BaseMultiProc::submit gives a Future for one call,
// BaseMultiProc::applyAsync an AsyncCall for a whole range; the caller goes on meanwhile.
#pragma once

#include "detail/config.hpp"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "detail/async.hpp"
#include "detail/engine.hpp"
#include "error.hpp"
#include "options.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <deque>
#include <thread>
#endif

namespace flockmp {

namespace detail {

/// The outcomes of a handle's tasks, filled by the driver thread, waited for by the handle.
template <class R>
class TaskState : public AsyncTarget {
public:
  explicit TaskState(std::size_t n) : outcomes_(n) {}

  void fail(std::size_t local, Failure f) override { store(local, Outcome<R>(std::move(f)), true); }

  void wait() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return done_ == outcomes_.size(); });
  }
  template <class Rep, class Period>
  bool waitFor(std::chrono::duration<Rep, Period> d) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, d, [&] { return done_ == outcomes_.size(); });
  }
  [[nodiscard]] bool ready() {
    std::lock_guard lock(m_);
    return done_ == outcomes_.size();
  }
  [[nodiscard]] Progress progress() {
    std::lock_guard lock(m_);
    return Progress{done_, failed_, outcomes_.size(), true};
  }
  /// Every outcome, once all are in.
  std::vector<Outcome<R>> take() {
    wait();
    std::vector<Outcome<R>> out;
    out.reserve(outcomes_.size());
    for (auto& o : outcomes_) out.push_back(std::move(*o));
    return out;
  }

protected:
  void store(std::size_t local, Outcome<R> o, bool failed) {
    std::lock_guard lock(m_);
    if (local >= outcomes_.size() || outcomes_[local]) return; // never twice (the engine resolves each once)
    outcomes_[local].emplace(std::move(o));
    if (failed) ++failed_;
    if (++done_ == outcomes_.size()) cv_.notify_all();
  }

private:
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::optional<Outcome<R>>> outcomes_;
  std::size_t done_ = 0;
  std::size_t failed_ = 0;
};

/// TaskState whose results are decoded by `Codec`.
template <class Codec, class R>
class CodecTaskState final : public TaskState<R> {
public:
  using TaskState<R>::TaskState;
  void accept(std::size_t local, ByteReader& r) override {
    // Decoded before storing: a bad result throws here and becomes this task's failure.
    if constexpr (std::is_void_v<R>) {
      (void)Codec::template decode<std::tuple<>>(r);
      r.expectEnd();
      this->store(local, Outcome<R>(), false);
    } else {
      R value = Codec::template decode<R>(r);
      r.expectEnd();
      this->store(local, Outcome<R>(std::move(value)), false);
    }
  }
};

/// The thread that runs a pool's asynchronous tasks: while any are queued or running, it holds
/// the pool (sync calls wait) and keeps one open-ended call going on its engine.
class AsyncService {
public:
  AsyncService(std::function<std::unique_ptr<EngineLease>()> acquire, Options opts);
  AsyncService(const AsyncService&) = delete;
  AsyncService& operator=(const AsyncService&) = delete;
  ~AsyncService() { stop(); }

  /// True when the pool asks for insights: handles then get a slot for them.
  [[nodiscard]] bool gathersInsights() const noexcept { return gather_; }

  /// Queue tasks. Throws flockmp::Error once the pool is closing.
  void post(TaskGroup group);

  /// Wake the driver (a handle was cancelled: its queued tasks go out as cancelled records).
  void wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(wake_.get(), &one, sizeof one);
  }

  /// The pool closes: what is queued is cancelled; the driver ends once the pool's close
  /// cancelled its running call.
  void stop() noexcept;

private:
  void run();

  /// One open-ended call: feeds queued tasks to the engine until none is left.
  void serve(Engine& engine, int closeFd);

  void failIncoming(std::unique_lock<std::mutex>& lock, const std::string& message,
                    FailureKind kind = FailureKind::cancelled);

  std::function<std::unique_ptr<EngineLease>()> acquire_;
  Options opts_;
  Fd wake_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<TaskGroup> incoming_;
  bool stopping_ = false;
  AsyncJob job_;
  bool gather_ = false; // the pool's Options::insights was set
  std::thread thread_; // last: it starts once everything it uses exists
};

/// What Future and AsyncCall share: the outcomes of their tasks, the service that runs them,
/// waiting, and cancelling. Destroying a handle whose tasks are not all done cancels those not
/// sent to a worker yet.
template <class R>
class AsyncHandle {
public:
  AsyncHandle() = default;
  AsyncHandle(AsyncHandle&& o) noexcept
      : state_(std::move(o.state_)), service_(std::exchange(o.service_, nullptr)), insights_(std::move(o.insights_)) {}
  AsyncHandle& operator=(AsyncHandle&& o) noexcept {
    if (this != &o) {
      abandon();
      state_ = std::move(o.state_);
      service_ = std::exchange(o.service_, nullptr);
      insights_ = std::move(o.insights_);
    }
    return *this;
  }
  ~AsyncHandle() { abandon(); }

  /// Wait until every task has its outcome.
  void wait() const {
    requireValid();
    state_->wait();
  }
  /// Wait at most `d`, as std::future::wait_for: ready, or timeout.
  template <class Rep, class Period>
  std::future_status waitFor(std::chrono::duration<Rep, Period> d) const {
    requireValid();
    return state_->waitFor(d) ? std::future_status::ready : std::future_status::timeout;
  }
  /// True once every task has its outcome.
  [[nodiscard]] bool ready() const {
    requireValid();
    return state_->ready();
  }
  /// True until get() or tryGet() took the outcomes.
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }
  /// Cancel the tasks not sent to a worker yet (they are reported cancelled); running ones
  /// finish.
  void cancel() const {
    requireValid();
    state_->cancel();
    // Once every task has its outcome the service may be gone (the pool closed): nothing to wake.
    if (!state_->ready()) service_->wake();
  }

  /// What the open-ended call that ran these tasks did, once that call ended (it waits for
  /// that). The pool's async tasks share open-ended calls on a driver thread: one starts when a
  /// task arrives on an idle pool and ends when no async task is left, so the insights cover
  /// every handle whose tasks ran in that call, this one's and those alongside it. Still
  /// available after get() or tryGet(). Needs the pool's Options::insights (the pointer itself
  /// is only written by the pool's sync calls); throws flockmp::Error otherwise.
  [[nodiscard]] const Insights& insights() const {
    if (!insights_)
      throw Error(state_ || service_ ? "flock: this pool gathers no insights: set its Options::insights"
                                     : "flock: this handle has no tasks (it was default-constructed or moved from)");
    return insights_->wait();
  }

protected:
  AsyncHandle(std::shared_ptr<TaskState<R>> state, AsyncService* service,
              std::shared_ptr<InsightsSlot> insights) noexcept
      : state_(std::move(state)), service_(service), insights_(std::move(insights)) {}

  void requireValid() const {
    if (!state_) throw Error("flock: this handle has no result (it was moved from, or its result was taken)");
  }
  /// Every outcome, once all are in; the handle is then empty.
  std::vector<Outcome<R>> takeOutcomes() {
    requireValid();
    auto outcomes = state_->take();
    state_.reset();
    return outcomes;
  }

  std::shared_ptr<TaskState<R>> state_;

private:
  void abandon() noexcept {
    if (state_ && !state_->ready()) {
      state_->cancel();
      service_->wake();
    }
    state_.reset();
  }

  AsyncService* service_ = nullptr;
  std::shared_ptr<InsightsSlot> insights_; // null when the pool gathers no insights
};

} // namespace detail

/// The result of one task submitted to a pool (BaseMultiProc::submit), in the manner of
/// std::future: wait(), waitFor(), ready(), valid(), cancel(), and get() or tryGet().
template <class R>
class Future : public detail::AsyncHandle<R> {
public:
  Future() = default;

  /// The task's value (nothing for a void task); throws flockmp::TaskError when it failed
  /// (threw, crashed, timed out, was cancelled). Waits for it; afterwards valid() is false.
  R get() {
    Outcome<R> o = tryGet();
    if (!o) throw TaskError(std::vector<Failure>{o.failure()}, std::vector<Outcome<R>>{});
    if constexpr (!std::is_void_v<R>) return std::move(o.value());
  }
  /// The task's outcome, never throwing for a failed task. Waits for it; afterwards valid() is
  /// false.
  Outcome<R> tryGet() { return std::move(this->takeOutcomes().front()); }

private:
  friend class BaseMultiProc;
  using detail::AsyncHandle<R>::AsyncHandle;
};

/// A whole range running on a pool in the background (BaseMultiProc::applyAsync): wait(),
/// waitFor(), ready(), valid(), cancel(), progress(), and get() or tryGet().
template <class R>
class AsyncCall : public detail::AsyncHandle<R> {
public:
  AsyncCall() = default;

  /// The results in input order (nothing for a void callable), as apply returns them; throws
  /// flockmp::TaskError when an input failed. Waits for the call; afterwards valid() is false.
  auto get() {
    auto outcomes = tryGet();
    std::vector<Failure> failures;
    for (const auto& o : outcomes)
      if (!o) failures.push_back(o.failure());
    if (!failures.empty()) throw TaskError(std::move(failures), std::move(outcomes));
    if constexpr (std::is_void_v<R>) {
      return;
    } else {
      std::vector<R> values;
      values.reserve(outcomes.size());
      for (auto& o : outcomes) values.push_back(std::move(o.value()));
      return values;
    }
  }
  /// One outcome per input, never throwing for failed inputs. Waits for the call; afterwards
  /// valid() is false.
  std::vector<Outcome<R>> tryGet() { return this->takeOutcomes(); }
  /// Inputs finished so far (with a value or a failure), of how many.
  [[nodiscard]] Progress progress() const {
    this->requireValid();
    return this->state_->progress();
  }

private:
  friend class BaseMultiProc;
  using detail::AsyncHandle<R>::AsyncHandle;
};

} // namespace flockmp

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE
AsyncService::AsyncService(std::function<std::unique_ptr<EngineLease>()> acquire, Options opts)
    : acquire_(std::move(acquire)), opts_(std::move(opts)) {
  // Async work has no caller thread to draw a bar for, nor one stop token: each handle has
  // its own progress() and cancel().
  opts_.checkProgress = false;
  opts_.onProgress = nullptr;
  opts_.stopToken = {};
  opts_.failFast = false;
  // Nor is the pool's Insights* written from the driver thread, where it would race with the
  // caller's reads: when the pool asks for insights, each open-ended call hands its own to
  // the handles it served (AsyncHandle::insights).
  gather_ = opts_.insights != nullptr;
  opts_.insights = nullptr;
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) throwErrno("eventfd for async calls");
  wake_ = Fd(efd, true);
  thread_ = std::thread([this] { run(); });
}

FLOCK_ENGINE_INLINE void AsyncService::post(TaskGroup group) {
  {
    std::lock_guard lock(m_);
    if (stopping_) throw Error("flock: this pool is closed");
    incoming_.push_back(std::move(group));
  }
  cv_.notify_one();
  wake();
}

FLOCK_ENGINE_INLINE void AsyncService::stop() noexcept {
  {
    std::lock_guard lock(m_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_one();
  wake();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

FLOCK_ENGINE_INLINE void AsyncService::run() {
  for (;;) {
    {
      std::unique_lock lock(m_);
      cv_.wait(lock, [&] { return !incoming_.empty() || stopping_; });
      if (stopping_) {
        failIncoming(lock, "cancelled: the pool was closed");
        return;
      }
    }
    std::unique_ptr<EngineLease> lease;
    try {
      lease = acquire_();
    } catch (const std::exception& e) {
      std::unique_lock lock(m_); // the pool is closing
      failIncoming(lock, e.what());
      continue;
    }
    serve(lease->engine(), lease->closeFd());
  }
}

FLOCK_ENGINE_INLINE void AsyncService::serve(Engine& engine, int closeFd) {
  job_.reset();
  Options opts = opts_;
  Insights insights;
  if (gather_)
    opts.insights = &insights; // filled by the engine when this call ends, however it ends
  try {
    engine.open(job_, opts, closeFd, true);
    engine.setWakeFd(wake_.get());
    for (;;) {
      std::deque<TaskGroup> arrived;
      {
        std::lock_guard lock(m_);
        arrived.swap(incoming_);
        if (arrived.empty() && job_.idle()) {
          engine.endOfInputs();
          break;
        }
      }
      bool newKind = false;
      for (auto& g : arrived) newKind = job_.add(std::move(g)) || newKind;
      if (newKind) engine.callChanged();
      engine.extend(job_.next());
      if (!engine.step()) break; // cancelled (the pool closes): every task has its failure
    }
    while (engine.step()) {
    }
  } catch (const std::exception& e) {
    // No worker could start, or the engine failed: every task of this call, and every task
    // queued meanwhile, fails with the reason (queued ones would only meet it again).
    job_.failUnresolved(FailureKind::notRun, e.what());
    std::unique_lock lock(m_);
    failIncoming(lock, e.what(), FailureKind::notRun);
  }
  engine.setWakeFd(-1);
  if (!job_.idle()) job_.failUnresolved(FailureKind::cancelled, "cancelled: the pool was closed");
  job_.publish(insights);
}

FLOCK_ENGINE_INLINE void AsyncService::failIncoming(std::unique_lock<std::mutex>& lock,
                                                    const std::string& message, FailureKind kind) {
  std::deque<TaskGroup> dropped;
  dropped.swap(incoming_);
  lock.unlock();
  for (auto& g : dropped) {
    const std::size_t n = g.offsets.size() - 1;
    for (std::size_t k = 0; k < n; ++k)
      g.target->fail(k, Failure{k, kind, message, "", 0, std::nullopt, 0, -1, {}});
    if (g.insights) { // no call ran these tasks: all of them were resolved here
      auto none = std::make_shared<Insights>();
      none->inputs = none->notRun = n;
      none->failures[static_cast<std::size_t>(kind)] = n;
      g.insights->fill(std::move(none));
    }
  }
  lock.lock();
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

// flock: BaseMultiProc, the pool every API class is a thin layer over.
#pragma once

#include "detail/config.hpp"

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include "async.hpp"
#include "codec.hpp"
#include "detail/fold.hpp"
#include "detail/run.hpp"
#include "detail/stream.hpp"
#include "error.hpp"
#include "insights.hpp"
#include "options.hpp"
#include "stream.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <sys/eventfd.h>
#include <atomic>
#include <thread>
#endif

namespace flockmp {

/// The options of one call on a pool; each one left unset is the pool's (see Options, where
/// each is described).
struct CallOptions {
  std::optional<Duration> timeOutError{};
  std::optional<std::size_t> batchSize{};
  std::optional<int> retries{};
  std::stop_token stopToken{};
  std::function<void(const Progress&)> onProgress{};
  std::optional<bool> checkProgress{};
  std::optional<bool> progressLines{};
  std::optional<bool> failFast{};
  std::optional<std::size_t> maxInFlight{};
  std::optional<std::size_t> memoryLimit{};
  /// Where this call's Insights go (nullptr: the pool's Options::insights, by default none).
  Insights* insights = nullptr;
};

namespace detail {
/// `o` with the fields `c` sets taking their place (the options of one call on a pool).
FLOCK_ENGINE_INLINE Options withCallOptions(Options o, const CallOptions& c);
} // namespace detail

/// A pool of persistent worker processes (the seed's BaseMultiProc). Workers start at the first
/// call (or at start()) and serve every later call until close() or destruction; initializer and
/// finalizer run once per worker life. Each call returns its results in input order, with every
/// guarantee of a one-shot call (a crashed or hung worker is replaced, retries, stopToken,
/// progress).
///
/// The workers did not inherit a later call's callable or inputs, so the callable must be
/// rebuildable in a worker (a function pointer, a captureless lambda or empty function object,
/// a member function with a codable object, a function object the codec carries) and the inputs
/// travel through the codec. Anything else is a compile-time error naming the fix.
///
///   flockmp::BaseMultiProc pool{{.poolSize = 4, .context = flockmp::Context::spawn}};
///   std::vector<int> squares = pool.apply(xs, [](int x) { return x * x; });
///
/// A pool may be called from several threads; calls run one after the other. Destroying or
/// closing it while a call runs cancels that call (its inputs are reported cancelled).
class BaseMultiProc : private detail::PoolCaller {
public:
  /// Throws flockmp::OptionError for a bad option, and flockmp::Error when Context::forkserver or
  /// Context::spawn is asked for but flockmp::init was not called. No process starts here.
  explicit BaseMultiProc(Options options = {});
  BaseMultiProc(const BaseMultiProc&) = delete;
  BaseMultiProc& operator=(const BaseMultiProc&) = delete;
  /// Cancels a call in flight (in another thread), waits for it, then stops the workers.
  ~BaseMultiProc() { close(); }

  /// Start every worker now instead of at the first call. Throws flockmp::Error when none starts.
  void start();

  /// Stop the workers (their finalizers run); a call in flight in another thread is cancelled
  /// first. Later calls throw flockmp::Error. Calling it again does nothing.
  void close() noexcept;

  /// Run `fn` on every element of `items` on the pool's workers. Returns the results in input
  /// order (nothing when `fn` returns void). Throws flockmp::TaskError if any input failed (its
  /// outcomes<R>() keeps the successful results), flockmp::Error if no worker can start or the
  /// pool is closed. `Codec` carries the inputs, the callable's state and the results.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto apply(Range&& items, const F& fn, const CallOptions& call = {}) {
    return detail::runPortable<false, Codec>(*this, callableOf(fn), std::forward<Range>(items), merged(call));
  }
  /// apply for a member function and the object it runs on (the object travels by the codec).
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  auto apply(Range&& items, M method, const Obj& obj, const CallOptions& call = {}) {
    if constexpr (!CodecFor<Codec, Obj>) {
      requireCodable<Codec, Obj>(); // the object travels to the workers through the codec
      return detail::CallResult<false, int>{};
    } else {
      return detail::runPortable<false, Codec>(*this, detail::MemberCall<M, Obj>{method, obj}, std::forward<Range>(items),
                                               merged(call));
    }
  }
  /// Like apply, but never throws for failed inputs: one flockmp::Outcome per input.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto tryApply(Range&& items, const F& fn, const CallOptions& call = {}) {
    return detail::runPortable<true, Codec>(*this, callableOf(fn), std::forward<Range>(items), merged(call));
  }
  /// tryApply for a member function and the object it runs on.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  auto tryApply(Range&& items, M method, const Obj& obj, const CallOptions& call = {}) {
    if constexpr (!CodecFor<Codec, Obj>) {
      requireCodable<Codec, Obj>(); // the object travels to the workers through the codec
      return detail::CallResult<true, int>{};
    } else {
      return detail::runPortable<true, Codec>(*this, detail::MemberCall<M, Obj>{method, obj}, std::forward<Range>(items),
                                              merged(call));
    }
  }

  /// The seed's argument order: `executeAsync(function, iterator)`; the same as apply.
  template <class Codec = BinaryCodec, class F, std::ranges::input_range Range>
  auto executeAsync(const F& fn, Range&& items) {
    return apply<Codec>(std::forward<Range>(items), fn);
  }
  /// Like executeAsync, but never throws for failed inputs: one Outcome per input.
  template <class Codec = BinaryCodec, class F, std::ranges::input_range Range>
  auto tryExecuteAsync(const F& fn, Range&& items) {
    return tryApply<Codec>(std::forward<Range>(items), fn);
  }

  /// Stream `fn` over `items` on the pool's workers: results in input order, each given as soon
  /// as it and those before it are in. `items` may be single-pass and unbounded (a generator,
  /// std::views::istream); it is read only as CallOptions::maxInFlight allows. Iterating throws
  /// flockmp::TaskError at the first failed input (its failures() hold that one). See Stream.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto imap(Range&& items, const F& fn, const CallOptions& call = {}) {
    return stream<detail::StreamKind::values, Codec>(std::forward<Range>(items), callableOf(fn), call);
  }
  /// Like imap, but never throws for failed inputs: one flockmp::Outcome per input, in order.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto tryImap(Range&& items, const F& fn, const CallOptions& call = {}) {
    return stream<detail::StreamKind::outcomes, Codec>(std::forward<Range>(items), callableOf(fn), call);
  }
  /// Like imap, but results come as they complete, each with its input's index
  /// (flockmp::Indexed). Throws flockmp::TaskError at the first failed input it reaches.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto imapUnordered(Range&& items, const F& fn, const CallOptions& call = {}) {
    return stream<detail::StreamKind::indexedValues, Codec>(std::forward<Range>(items), callableOf(fn), call);
  }
  /// Like imapUnordered, but never throws for failed inputs: (index, Outcome) as they complete.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto tryImapUnordered(Range&& items, const F& fn, const CallOptions& call = {}) {
    return stream<detail::StreamKind::indexedOutcomes, Codec>(std::forward<Range>(items), callableOf(fn), call);
  }

  /// Map `fn` over `items` and fold the results with `reduce(acc, result)`, starting from
  /// `init`, which must be reduce's identity (0 for a sum, an empty map for a histogram): each
  /// worker folds its own inputs from `init`, and the parent folds the workers' partial folds
  /// with `reduce(acc, partial)`, in whatever order they arrive (so reduce must be associative
  /// and commutative, as for std::reduce). Per-input results are never stored. Throws
  /// flockmp::TaskError when an input failed (see tryMapReduce).
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Acc>
  Acc mapReduce(Range&& items, const F& fn, const Reduce& reduce, Acc init, const CallOptions& call = {}) {
    return detail::runFoldCall<false, Codec, true>(std::forward<Range>(items), callableOf(fn), callableOf(reduce),
                                                   callableOf(reduce), std::move(init), merged(call), this);
  }
  /// mapReduce whose partial folds are combined by `merge(acc, partial)` (for an accumulator
  /// that is not a result: a map of counts from strings, say).
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Merge, class Acc>
  Acc mapReduce(Range&& items, const F& fn, const Reduce& reduce, const Merge& merge, Acc init,
                const CallOptions& call = {}) {
    return detail::runFoldCall<false, Codec, true>(std::forward<Range>(items), callableOf(fn), callableOf(reduce),
                                                   callableOf(merge), std::move(init), merged(call), this);
  }
  /// Like mapReduce, but never throws for failed inputs: the fold of those that succeeded, and
  /// the failures.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Acc>
  Reduced<Acc> tryMapReduce(Range&& items, const F& fn, const Reduce& reduce, Acc init, const CallOptions& call = {}) {
    return detail::runFoldCall<true, Codec, true>(std::forward<Range>(items), callableOf(fn), callableOf(reduce),
                                                  callableOf(reduce), std::move(init), merged(call), this);
  }
  /// tryMapReduce with a separate `merge` for the partial folds.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Merge, class Acc>
  Reduced<Acc> tryMapReduce(Range&& items, const F& fn, const Reduce& reduce, const Merge& merge, Acc init,
                            const CallOptions& call = {}) {
    return detail::runFoldCall<true, Codec, true>(std::forward<Range>(items), callableOf(fn), callableOf(reduce),
                                                  callableOf(merge), std::move(init), merged(call), this);
  }

  /// Run `fn(args...)` on one of the pool's workers while the caller goes on; the Future gives
  /// its value. Tasks from submit and applyAsync share the workers as they come, and sync calls
  /// wait until no async task is left. The callable must be portable and the arguments codable
  /// (they are copied); the pool's timeOutError and retries apply. Throws flockmp::Error when
  /// the pool is closed.
  template <class Codec = BinaryCodec, class F, class... Args>
  [[nodiscard]] auto submit(const F& fn, Args&&... args) {
    using Fn = decltype(callableOf(fn));
    using In = std::tuple<std::decay_t<Args>...>;
    using R = typename detail::SafeSubmitResult<Fn, In>::type;
    if constexpr (!std::is_invocable_v<const Fn&, std::decay_t<Args>&...>) {
      static_assert(std::is_invocable_v<const Fn&, std::decay_t<Args>&...>,
                    "flock: submit: the callable cannot be called with these arguments");
      return Future<int>{};
    } else if constexpr (!detail::PortableCallable<Codec, Fn>) {
      (void)detail::PortabilityCheck<Fn>{};
      return Future<R>{};
    } else if constexpr (!CodecFor<Codec, In>) {
      requireCodable<Codec, In>();
      return Future<R>{};
    } else if constexpr (!std::is_void_v<R> && !CodecFor<Codec, R>) {
      requireCodable<Codec, R>();
      return Future<R>{};
    } else {
      auto state = std::make_shared<detail::CodecTaskState<Codec, R>>(1);
      detail::TaskGroup group{state, taskKind<Codec, Fn, In, R, true>(callableOf(fn)), {}, {0}, nullptr};
      ByteWriter w(group.args);
      Codec::encode(w, In(std::forward<Args>(args)...));
      group.offsets.push_back(group.args.size());
      startHere(); // before the driver thread exists, on a first call
      auto* service = asyncService();
      auto insights = insightsSlot(*service);
      group.insights = insights;
      service->post(std::move(group));
      return Future<R>(std::move(state), service, std::move(insights));
    }
  }

  /// Run `fn` on every element of `items` on the pool's workers while the caller goes on; the
  /// AsyncCall gives the results in input order (get), their outcomes (tryGet), progress() and
  /// cancel(). The inputs are encoded (copied) here, so `items` may go away afterwards. Several
  /// may run at once with submitted tasks; see submit.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  [[nodiscard]] auto applyAsync(Range&& items, const F& fn) {
    using Fn = decltype(callableOf(fn));
    using In = std::remove_cv_t<std::ranges::range_value_t<Range>>;
    using R = typename detail::SafeResult<Fn, In&>::type;
    if constexpr (!detail::CallableOn<Fn, In&>) {
      detail::requireCallable<Fn, In&>();
      return AsyncCall<R>{};
    } else if constexpr (!detail::PortableCallable<Codec, Fn>) {
      (void)detail::PortabilityCheck<Fn>{};
      return AsyncCall<R>{};
    } else if constexpr (!CodecFor<Codec, In>) {
      requireCodable<Codec, In>();
      return AsyncCall<R>{};
    } else if constexpr (!std::is_void_v<R> && !CodecFor<Codec, R>) {
      requireCodable<Codec, R>();
      return AsyncCall<R>{};
    } else {
      detail::TaskGroup group{nullptr, taskKind<Codec, Fn, In, R, false>(callableOf(fn)), {}, {0}, nullptr};
      ByteWriter w(group.args);
      for (auto&& x : items) {
        Codec::encode(w, static_cast<const In&>(x));
        group.offsets.push_back(group.args.size());
      }
      auto state = std::make_shared<detail::CodecTaskState<Codec, R>>(group.offsets.size() - 1);
      group.target = state;
      if (group.offsets.size() > 1) startHere(); // before the driver thread exists, on a first call
      auto* service = asyncService();
      auto insights = insightsSlot(*service);
      if (insights && group.offsets.size() == 1) insights->fill(std::make_shared<const Insights>()); // no call runs
      group.insights = insights;
      if (group.offsets.size() > 1) service->post(std::move(group));
      return AsyncCall<R>(std::move(state), service, std::move(insights));
    }
  }

  [[nodiscard]] const Options& options() const noexcept { return opts_; }

  /// The pids of the running workers (empty before the first call or start()).
  [[nodiscard]] std::vector<pid_t> workerPids() {
    std::lock_guard lock(callMutex_);
    return engine_ ? engine_->workerPids() : std::vector<pid_t>{};
  }

private:
  /// Counts a caller in while it uses the engine; close() waits for none to be left.
  struct Enter {
    BaseMultiProc& pool;
    explicit Enter(BaseMultiProc& p) : pool(p) {
      std::lock_guard lock(pool.stateMutex_);
      if (pool.closing_) throw Error("flock: this pool is closed");
      ++pool.active_;
    }
    ~Enter() {
      std::lock_guard lock(pool.stateMutex_);
      --pool.active_;
      pool.idle_.notify_all();
    }
    Enter(const Enter&) = delete;
    Enter& operator=(const Enter&) = delete;
  };

  /// A stream holds the pool (its lock) for its life: the engine runs one call at a time.
  class Lease final : public detail::EngineLease {
  public:
    explicit Lease(BaseMultiProc& pool) : pool_(pool), enter_(pool), lock_(pool.lockForCall()) {
      pool_.owner_.store(std::this_thread::get_id());
      std::lock_guard state(pool_.stateMutex_);
      if (pool_.closing_) {
        pool_.owner_.store(std::thread::id{});
        throw Error("flock: this pool is closed");
      }
    }
    ~Lease() override {
      pool_.owner_.store(std::thread::id{});
      bool closing = false;
      {
        std::lock_guard state(pool_.stateMutex_);
        closing = pool_.closing_;
      }
      if (closing) {
        try {
          pool_.engine_->close(); // close() was called from this stream's thread
        } catch (...) {
          // the engine kills what it could not stop
        }
      }
    }
    detail::Engine& engine() noexcept override { return *pool_.engine_; }
    int closeFd() const noexcept override { return pool_.closeFd_.get(); }

  private:
    BaseMultiProc& pool_;
    Enter enter_;
    std::unique_lock<std::mutex> lock_;
  };

  /// The engine's lock, for one call. A thread that holds it for a stream and calls again would
  /// wait for itself: that is an error.
  std::unique_lock<std::mutex> lockForCall();

  /// The async driver, started at the first submit or applyAsync.
  detail::AsyncService* asyncService();

  /// Context::fork: an idle pool's missing workers start in this thread, before async tasks go
  /// to the driver thread. Forked from the driver instead, a worker could copy a lock that this
  /// thread holds at that moment (an allocator's under AddressSanitizer, a user's mutex) and wait
  /// on it forever. Replacements for workers that die while tasks run are still forked there.
  void startHere() noexcept;

  /// Where a new handle's insights will go, when the pool asks for them.
  static std::shared_ptr<detail::InsightsSlot> insightsSlot(const detail::AsyncService& service) {
    return service.gathersInsights() ? std::make_shared<detail::InsightsSlot>() : nullptr;
  }

  template <class Codec, class Fn, class In, class R, bool Spread>
  static detail::TaskKind taskKind(const Fn& fn) {
    static const detail::CodeRef thunk =
        detail::codeRefOf(reinterpret_cast<const void*>(&detail::taskThunk<Codec, Fn, In, R, Spread>));
    detail::TaskKind kind{thunk, {}};
    ByteWriter w(kind.callable);
    detail::encodeCallable<Codec, Fn>(w, fn);
    return kind;
  }

  template <detail::StreamKind K, class Codec, class Range, class F>
  auto stream(Range&& items, const F& fn, const CallOptions& call) {
    return detail::makeStream<K, Codec, false>(std::forward<Range>(items), fn, merged(call),
                                               [&] { return std::make_unique<Lease>(*this); });
  }

  std::vector<Failure> call(detail::JobBase& job, const Options& callOpts) override;

  Options merged(const CallOptions& c) const { return detail::withCallOptions(opts_, c); }

  /// A function is carried as a pointer to it; anything else as itself.
  template <class F>
  static auto callableOf(const F& fn) {
    if constexpr (std::is_function_v<F>) return &fn;
    else return fn;
  }

  Options opts_;
  std::unique_ptr<detail::Engine> engine_;
  detail::Fd closeFd_;          // readable once close() began: cancels the call in flight
  std::mutex callMutex_;        // one call at a time on the engine
  std::atomic<std::thread::id> owner_{}; // the thread whose stream holds callMutex_
  std::mutex stateMutex_;       // guards closing_ and active_
  std::condition_variable idle_;
  std::size_t active_ = 0;
  bool closing_ = false;
  std::unique_ptr<detail::AsyncService> async_; // guarded by stateMutex_ until closing_
};

/// A shorter name for BaseMultiProc.
using Pool = BaseMultiProc;

} // namespace flockmp

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp {

FLOCK_ENGINE_INLINE BaseMultiProc::BaseMultiProc(Options options) : opts_(std::move(options)) {
  detail::validateOptions(opts_);
  if (opts_.context != Context::fork) {
    const auto plain = [](const std::function<void()>& f) {
      return !f || f.target<void (*)()>() != nullptr;
    };
    if (!plain(opts_.initializer) || !plain(opts_.finalizer))
      throw OptionError("flock: under Context::forkserver and Context::spawn the initializer and finalizer must be plain functions (a function pointer, or +[] { ... } for a captureless lambda): the workers did not "
                        "inherit a std::function's state");
  }
  engine_ = std::make_unique<detail::Engine>(opts_, detail::Lifetime::pool);
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) detail::throwErrno("eventfd for closing a pool");
  closeFd_ = detail::Fd(efd, true);
}

FLOCK_ENGINE_INLINE void BaseMultiProc::start() {
  Enter enter(*this);
  auto lock = lockForCall();
  engine_->start();
}

FLOCK_ENGINE_INLINE void BaseMultiProc::close() noexcept {
  {
    std::lock_guard lock(stateMutex_);
    if (closing_) {
      return;
    }
    closing_ = true;
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] auto w = ::write(closeFd_.get(), &one, sizeof one);
  // Queued async tasks are cancelled; the running async call was cancelled just now.
  if (async_) async_->stop();
  // This thread's stream holds the pool: it is cancelled at its next step, and stops the
  // workers when it is destroyed (see Lease).
  if (owner_.load() == std::this_thread::get_id()) return;
  std::unique_lock lock(stateMutex_);
  idle_.wait(lock, [&] { return active_ == 0; });
  lock.unlock();
  std::lock_guard call(callMutex_);
  try {
    engine_->close();
  } catch (...) {
    // close() is noexcept: the engine kills what it could not stop
  }
  engine_.reset();
}

FLOCK_ENGINE_INLINE std::unique_lock<std::mutex> BaseMultiProc::lockForCall() {
  if (owner_.load() == std::this_thread::get_id())
    throw Error("flock: this pool is running a stream (imap) in this thread; finish or destroy the stream before "
                "another call on the pool");
  return std::unique_lock(callMutex_);
}

FLOCK_ENGINE_INLINE void BaseMultiProc::startHere() noexcept {
  // A stream of this thread holds callMutex_ (try_lock on it would be undefined); a call of
  // another thread holding it has its workers up.
  if (opts_.context != Context::fork || owner_.load() == std::this_thread::get_id()) return;
  try {
    Enter enter(*this);
    std::unique_lock lock(callMutex_, std::try_to_lock);
    if (lock) engine_->start();
  } catch (...) {
    // Closed meanwhile, or a worker could not start: the driver meets the same and reports it.
  }
}

FLOCK_ENGINE_INLINE detail::AsyncService* BaseMultiProc::asyncService() {
  std::lock_guard state(stateMutex_);
  if (closing_) throw Error("flock: this pool is closed");
  if (!async_)
    async_ = std::make_unique<detail::AsyncService>(
        [this] { return std::make_unique<Lease>(*this); }, opts_);
  return async_.get();
}

FLOCK_ENGINE_INLINE std::vector<Failure> BaseMultiProc::call(detail::JobBase& job,
                                                             const Options& callOpts) {
  Enter enter(*this);
  auto lock = lockForCall();
  {
    std::lock_guard state(stateMutex_);
    if (closing_) throw Error("flock: this pool is closed");
  }
  engine_->call(job, callOpts, closeFd_.get());
  return engine_->takeFailures();
}

FLOCK_ENGINE_INLINE Options detail::withCallOptions(Options o, const CallOptions& c) {
  if (c.timeOutError) o.timeOutError = c.timeOutError;
  if (c.batchSize) o.batchSize = *c.batchSize;
  if (c.retries) o.retries = *c.retries;
  if (c.stopToken.stop_possible()) o.stopToken = c.stopToken;
  if (c.onProgress) o.onProgress = c.onProgress;
  if (c.checkProgress) o.checkProgress = *c.checkProgress;
  if (c.progressLines) o.progressLines = *c.progressLines;
  if (c.failFast) o.failFast = *c.failFast;
  if (c.maxInFlight) o.maxInFlight = *c.maxInFlight;
  if (c.memoryLimit) o.memoryLimit = *c.memoryLimit;
  if (c.insights) o.insights = c.insights;
  return o;
}

} // namespace flockmp
#endif // FLOCK_ENGINE_DEFINITIONS

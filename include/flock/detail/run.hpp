// flock internals: what every call runs on, below the public classes: typed jobs, the worker's
// side of a batch (raw or encoded results, decoded inputs), and the one-shot and pool call paths.
#pragma once

#include "config.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <stop_token>
#include <cstddef>
#include <new>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

#include "../codec.hpp"
#include "engine.hpp"
#include "invoke.hpp"
#include "portable.hpp"
#include "posix.hpp"
#include "sinks.hpp"
#include "../error.hpp"
#include "../options.hpp"
#include "worker.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <algorithm>
#include <cstring>
#include <iterator>
#endif

namespace flockmp::detail {

/// Worker side: run inputs [begin, end) through `call(i)` (which invokes the callable on input i)
/// and buffer their results or failures in `out`, raw blocks or encoded (see runResults).
template <class R, class Call>
void runResultsRaw(std::size_t begin, std::size_t end, Call&& call, [[maybe_unused]] WorkerControl& ctl, ResultWriter& out) {
  constexpr std::size_t elementSize = std::is_void_v<R> ? 0 : sizeof(std::conditional_t<std::is_void_v<R>, char, R>);
  if constexpr (elementSize > 0) {
    if (std::byte* area = out.sharedResults(); area && out.sharedResultBytes() >= (end - begin) * elementSize) {
      // A pool's batch with a shared result area: each result is stored at its place there, and
      // sharedBlock frames announce the ones written so far (an input that throws ends a block).
      std::size_t from = begin;
      for (std::size_t i = begin; i < end; ++i) {
        out.startInput(i);
        try {
          const R value = call(i);
          std::memcpy(area + (i - begin) * elementSize, &value, elementSize);
        } catch (...) {
          out.sharedBlock(from, i - from);
          auto [type, message] = describeCurrentException();
          out.failure(i, FailureKind::exception, type, message);
          from = i + 1;
          continue;
        }
        if (out.due()) {
          out.sharedBlock(from, i + 1 - from);
          from = i + 1;
          out.flush();
        }
      }
      out.sharedBlock(from, end - from);
      return;
    }
  }
  // Results are constructed in the output buffer in blocks; an input that throws closes its
  // block early, is reported, and a new block starts after it.
  constexpr std::size_t perBlock = elementSize == 0 ? std::size_t{1} << 20 : ResultWriter::flushBytes / elementSize + 1;
  std::size_t i = begin;
  while (i < end) {
    const std::size_t blockBegin = i;
    const std::size_t count = std::min(end - i, perBlock);
    std::byte* dst = out.rawBlockBegin(blockBegin, count, elementSize);
    bool closed = false; // the block ended early: an input threw, or its results are due
    for (; i < blockBegin + count; ++i) {
      out.startInput(i);
      try {
        if constexpr (std::is_void_v<R>) call(i);
        else {
          // Frames have no alignment in the buffer: build the value aligned, then copy its
          // bytes (the compiler turns this into a plain store).
          const R value = call(i);
          std::memcpy(dst + (i - blockBegin) * elementSize, &value, elementSize);
        }
      } catch (...) {
        out.rawBlockEnd(i - blockBegin, elementSize);
        auto [type, message] = describeCurrentException();
        out.failure(i, FailureKind::exception, type, message);
        ++i;
        closed = true;
        break;
      }
      if (out.due()) {
        ++i;
        out.rawBlockEnd(i - blockBegin, elementSize);
        out.flush();
        closed = true;
        break;
      }
    }
    if (!closed) out.rawBlockEnd(count, elementSize);
    out.flushIfFull(); // due() was asked once per input above
  }
}

template <class Codec, class R, class Call>
void runResultsEncoded(std::size_t begin, std::size_t end, Call&& call, [[maybe_unused]] WorkerControl& ctl, ResultWriter& out) {
  for (std::size_t i = begin; i < end; ++i) {
    out.startInput(i);
    try {
      out.template result<Codec, R>(i, call(i));
    } catch (...) {
      auto [type, message] = describeCurrentException();
      out.failure(i, FailureKind::exception, type, message);
    }
    out.flushIfDue();
  }
}


/// A pool's inputs of this type travel as raw bytes (one block per batch), not one by one.
template <class Codec, class In>
constexpr bool rawInputFor() {
  if constexpr (requires { Codec::template isRaw<In>; }) return Codec::template isRaw<In> && std::is_default_constructible_v<In>;
  else return false;
}

/// Runs inputs [begin, end) through `call(i)`, raw or encoded as the result type travels.
template <class Codec, class R, class Call>
void runResults(std::size_t begin, std::size_t end, Call&& call, WorkerControl& ctl, ResultWriter& out) {
  if constexpr (rawResultFor<Codec, R>()) runResultsRaw<R>(begin, end, call, ctl, out);
  else runResultsEncoded<Codec, R>(begin, end, call, ctl, out);
}

/// The input type a pool's worker decodes for a range: its values, without const.
template <class It>
using InputOf = std::remove_cv_t<std::iter_value_t<It>>;

template <class Codec, class F, class In, class R>
void poolThunk(std::span<const std::byte> callable, std::size_t begin, std::size_t end,
               std::span<const std::byte> inputs, WorkerControl& ctl, ResultWriter& out);

/// The inputs of a job, at `first[0..n)`: a one-shot job's workers inherit them; a portable job
/// (a pool's call) sends them with each batch. `Portable` says whether the job can travel, the
/// constructor whether this one does: a call that can travel builds one job type whether it runs
/// on a pool or on workers forked for it, so that its code is compiled once.
template <class Codec, class It, bool Portable>
class IndexedInputs : public JobBase {
protected:
  using Diff = std::iter_difference_t<It>;

public:
  IndexedInputs(It first, std::size_t n, bool portable = Portable)
      : first_(std::move(first)), n_(n), portable_(Portable && portable) {}

  [[nodiscard]] std::size_t size() const noexcept override { return n_; }
  [[nodiscard]] bool portable() const noexcept override { return portable_; }
  /// Raw inputs are copied as object bytes (to shared memory, or a frame), from the range or as
  /// its iterator makes them (std::views::iota).
  static constexpr bool copiesRaw = Portable && rawInputFor<Codec, InputOf<It>>();

  [[nodiscard]] std::size_t rawInputBytes(std::size_t begin, std::size_t end) const noexcept override {
    if constexpr (copiesRaw) return (end - begin) * sizeof(InputOf<It>);
    else {
      (void)begin;
      (void)end;
      return 0;
    }
  }
  void copyRawInputs(std::size_t begin, std::size_t end, std::byte* dst) const override {
    using In = InputOf<It>;
    if constexpr (copiesRaw) {
      if constexpr (std::contiguous_iterator<It>) {
        std::memcpy(dst, std::to_address(first_ + static_cast<Diff>(begin)), (end - begin) * sizeof(In));
      } else {
        // A computed range (std::views::iota, a transform): each value is made and stored.
        for (std::size_t i = begin; i < end; ++i) {
          const In v = first_[static_cast<Diff>(i)];
          std::memcpy(dst + (i - begin) * sizeof(In), &v, sizeof(In));
        }
      }
    } else {
      (void)begin;
      (void)end;
      (void)dst;
    }
  }
  std::size_t encodeInputs(std::size_t begin, std::size_t end, ByteWriter& w, std::exception_ptr& error) override {
    if constexpr (Portable) {
      using In = InputOf<It>;
      bool copied = false;
      if constexpr (copiesRaw) {
        auto& buffer = w.buffer();
        const std::size_t at = buffer.size();
        buffer.resize(at + (end - begin) * sizeof(In));
        try {
          copyRawInputs(begin, end, buffer.data() + at);
          copied = true;
        } catch (...) {
          buffer.resize(at); // an iterator that threw: one by one below, to find the input
        }
      }
      if (!copied) {
        for (std::size_t i = begin; i < end; ++i) {
          const std::size_t mark = w.size();
          try {
            Codec::encode(w, static_cast<const In&>(first_[static_cast<Diff>(i)]));
          } catch (...) {
            w.buffer().resize(mark);
            error = std::current_exception();
            return i;
          }
        }
      }
    } else {
      (void)begin;
      (void)w;
      (void)error;
    }
    return end;
  }

protected:
  decltype(auto) input(std::size_t i) const { return first_[static_cast<Diff>(i)]; }

private:
  It first_;
  std::size_t n_;
  bool portable_;
};

/// A typed job: the inputs, the callable, and where the results go.
template <class Codec, class It, class F, class R, bool Portable = false>
class Job final : public IndexedInputs<Codec, It, Portable> {
public:
  Job(It first, std::size_t n, F& fn, bool portable)
      : IndexedInputs<Codec, It, Portable>(std::move(first), n, portable), fn_(fn), sink_(n) {}

  [[nodiscard]] VectorSink<Codec, R>& sink() noexcept override { return sink_; }

  void runBatch(std::size_t begin, std::size_t end, WorkerControl& ctl, ResultWriter& out) override {
    auto call = [this](std::size_t i) -> decltype(auto) { return invokeOn(fn_, this->input(i)); };
    runResults<Codec, R>(begin, end, call, ctl, out);
  }

  void encodeCall(ByteWriter& w) override {
    if constexpr (Portable) {
      using Fn = std::remove_cvref_t<F>;
      static const CodeRef thunk = codeRefOf(reinterpret_cast<const void*>(&poolThunk<Codec, Fn, InputOf<It>, R>));
      encodeCallHead(w, thunk);
      encodeCallable<Codec, Fn>(w, fn_);
    } else {
      (void)w;
    }
  }

private:
  F& fn_;
  VectorSink<Codec, R> sink_;
};

/// The error for a batch of raw inputs whose size does not match its count.
FLOCK_ENGINE_INLINE CodecError batchSizeError(std::size_t count, std::size_t bytes);

/// Worker side: decode the inputs [begin, end) of a batch and run `fn` on them (raw inputs that
/// are aligned run where they are) through `runInputs(begin, end, call)`.
template <class Codec, class In, class F, class Run>
void runDecoded(F& fn, std::size_t begin, std::size_t end, std::span<const std::byte> inputs, Run&& runInputs) {
  const std::size_t count = end - begin;
  std::vector<In> xs;
  In* at = nullptr; // the batch's inputs, decoded or where they arrived
  ByteReader ir(inputs);
  if constexpr (rawInputFor<Codec, In>()) {
    if (ir.remaining() != count * sizeof(In)) throw batchSizeError(count, ir.remaining());
    if (reinterpret_cast<std::uintptr_t>(inputs.data()) % alignof(In) == 0) {
      // Aligned (the shared input area, or a frame's payload): run on the bytes where they are.
      at = reinterpret_cast<In*>(const_cast<std::byte*>(inputs.data()));
    } else {
      xs.resize(count);
      if (count > 0) ir.read(xs.data(), count * sizeof(In));
      at = xs.data();
    }
  } else {
    xs.reserve(count);
    for (std::size_t k = 0; k < count; ++k) xs.push_back(Codec::template decode<In>(ir));
    ir.expectEnd();
    at = xs.data();
  }
  // One call path for every case, so that the batch loop is compiled once.
  runInputs(begin, end, [&](std::size_t i) -> decltype(auto) { return invokeOn(fn, at[i - begin]); });
}

/// A pool worker's code for one batch of a call: rebuild the callable and the inputs, then run
/// them like a one-shot worker does. Found in the worker by its CodeRef (see Job::encodeCall).
template <class Codec, class F, class In, class R>
void poolThunk(std::span<const std::byte> callable, std::size_t begin, std::size_t end,
               std::span<const std::byte> inputs, WorkerControl& ctl, ResultWriter& out) {
  ByteReader cr(callable);
  F fn = decodeCallable<Codec, F>(cr);
  runDecoded<Codec, In>(fn, begin, end, inputs,
                        [&](std::size_t b, std::size_t e, auto&& call) { runResults<Codec, R>(b, e, call, ctl, out); });
}

template <class T>
struct CallableCheck {
  static_assert(sizeof(T) == 0,
                "flock: the callable cannot be called with an element of the input range, nor with "
                "the element's tuple members unpacked. Check the parameter types of the callable.");
};

template <class F, class Ref>
constexpr void requireCallable() {
  if constexpr (!CallableOn<F, Ref>) (void)CallableCheck<F>{};
}

/// A pool's side of a call (BaseMultiProc): runs a job on the pool's workers and returns its
/// failures sorted by index.
class PoolCaller {
public:
  virtual std::vector<Failure> call(JobBase& job, const Options& callOpts) = 0;
  // Virtual: a class deriving from BaseMultiProc (the seed's base class) may be deleted through a
  // pointer to BaseMultiProc, which then has a virtual destructor too.
  virtual ~PoolCaller() = default;
};

/// Runs `job` on `pool`'s persistent workers, or on workers forked for it (pool == nullptr), and
/// returns its failures sorted by index.
FLOCK_ENGINE_INLINE std::vector<Failure> runJob(JobBase& job, const Options& opts,
                                                PoolCaller* pool);

/// Run `fn` over `first[0..n)` and hand back either outcomes (Try) or values/TaskError. With
/// `pool`, on its persistent workers (the call must be `Portable`); otherwise on workers forked
/// for this call.
template <bool Try, class Codec, class R, bool Portable = false, class It, class F>
auto runOn(It first, std::size_t n, F& fn, const Options& opts, PoolCaller* pool = nullptr) {
  Job<Codec, It, F, R, Portable> job(std::move(first), n, fn, pool != nullptr);
  std::vector<Failure> failures = runJob(job, opts, pool);
  if constexpr (Try) {
    return job.sink().outcomes(failures);
  } else {
    if (!failures.empty()) {
      auto outcomes = job.sink().outcomes(failures);
      throw TaskError(std::move(failures), std::move(outcomes));
    }
    if constexpr (std::is_void_v<R>) return;
    else return job.sink().values();
  }
}

/// What a call returns: outcomes for the try-variants, values (or nothing) otherwise.
template <bool Try, class R>
using CallResult = std::conditional_t<Try, std::vector<Outcome<R>>,
                                      std::conditional_t<std::is_void_v<R>, void, std::vector<R>>>;

template <class F, class Ref>
struct SafeResult {
  using type = int; // only used to give a misused call a return type after its one error
};
template <class F, class Ref>
  requires CallableOn<F, Ref>
struct SafeResult<F, Ref> {
  using type = ResultOf<F, Ref>;
};

template <bool Try, class Codec, class F, class Range>
auto runPortable(PoolCaller& pool, const F& fn, Range&& items, const Options& opts)
    -> CallResult<Try, typename SafeResult<F, std::remove_cv_t<std::ranges::range_value_t<Range>>&>::type>;

/// A one-shot call under Context::forkserver or Context::spawn: a pool that lives for this call,
/// with no more workers than inputs.
class OneCallPool final : public PoolCaller {
public:
  explicit OneCallPool(const Options& opts) : engine_(opts, Lifetime::pool) {}
  std::vector<Failure> call(JobBase& job, const Options& callOpts) override;

private:
  Engine engine_;
};

FLOCK_ENGINE_INLINE OptionError notPortableUnder(Context c);

/// Calls `run(first, n)` on the range's own elements when they can be indexed (a sized random
/// access range), or else on a copy read into memory once (a single-pass or unsized range).
template <class Range, class Run>
decltype(auto) onIndexed(Range&& items, Run&& run) {
  if constexpr (std::ranges::random_access_range<Range> && std::ranges::sized_range<Range>) {
    return run(std::ranges::begin(items), static_cast<std::size_t>(std::ranges::size(items)));
  } else {
    std::vector<std::remove_cv_t<std::ranges::range_value_t<Range>>> copy;
    if constexpr (std::ranges::sized_range<Range>) copy.reserve(static_cast<std::size_t>(std::ranges::size(items)));
    for (auto&& x : items) copy.push_back(std::forward<decltype(x)>(x));
    return run(copy.begin(), copy.size());
  }
}

/// Runs a call that can travel (a portable callable, codable inputs) on `pool`, or on workers
/// forked for it when `pool` is null: one job type for both (see IndexedInputs).
template <bool Try, class Codec, class R, class F, class Range>
auto runTravelling(PoolCaller* pool, const F& fn, Range&& items, const Options& opts) {
  F local = fn;
  return onIndexed(std::forward<Range>(items), [&](auto first, std::size_t n) {
    return runOn<Try, Codec, R, true>(std::move(first), n, local, opts, pool);
  });
}

template <bool Try, class Codec, class R, class F, class Range>
auto runChecked(F& fn, Range&& items, const Options& opts) {
  validateOptions(opts);
  using Fn = std::decay_t<F>;
  using In = std::remove_cv_t<std::ranges::range_value_t<Range>>;
  if constexpr (PortableCallable<Codec, Fn> && CodecFor<Codec, In> && CallableOn<Fn, In&> &&
                std::is_same_v<ResultOf<Fn, In&>, R>) {
    if (opts.context != Context::fork) {
      OneCallPool pool(opts);
      return runPortable<Try, Codec>(pool, static_cast<const Fn&>(fn), std::forward<Range>(items), opts);
    }
    // Under Context::fork too: the same job as on a pool, its workers index the caller's range in
    // their copy-on-write memory.
    return runTravelling<Try, Codec, R>(nullptr, static_cast<const Fn&>(fn), std::forward<Range>(items), opts);
  } else {
    if (opts.context != Context::fork) throw notPortableUnder(opts.context);
  }
  // Under Context::fork the workers index the caller's range in their copy-on-write memory.
  return onIndexed(std::forward<Range>(items),
                   [&](auto first, std::size_t n) { return runOn<Try, Codec, R>(std::move(first), n, fn, opts); });
}

template <bool Try, class Codec, class F, class Range>
auto run(F& fn, Range&& items, const Options& opts) -> CallResult<Try, typename SafeResult<F, std::ranges::range_reference_t<Range>>::type> {
  using Ref = std::ranges::range_reference_t<Range>;
  using R = typename SafeResult<F, Ref>::type;
  // Misuse stops here with one readable error, before anything else is instantiated.
  if constexpr (!CallableOn<F, Ref>) {
    requireCallable<F, Ref>();
    return {};
  } else if constexpr (!std::is_void_v<R> && !CodecFor<Codec, R>) {
    requireCodable<Codec, R>();
    return {};
  } else {
    return runChecked<Try, Codec, R>(fn, std::forward<Range>(items), opts);
  }
}

/// A pool's call: the callable must be portable and the inputs codable; each is checked here
/// with one readable error.
template <bool Try, class Codec, class F, class Range>
auto runPortable(PoolCaller& pool, const F& fn, Range&& items, const Options& opts)
    -> CallResult<Try, typename SafeResult<F, std::remove_cv_t<std::ranges::range_value_t<Range>>&>::type> {
  using In = std::remove_cv_t<std::ranges::range_value_t<Range>>;
  using R = typename SafeResult<F, In&>::type;
  if constexpr (!CallableOn<F, In&>) {
    requireCallable<F, In&>();
    return {};
  } else if constexpr (!PortableCallable<Codec, F>) {
    (void)PortabilityCheck<F>{};
    return {};
  } else if constexpr (!CodecFor<Codec, In>) {
    requireCodable<Codec, In>();
    return {};
  } else if constexpr (!std::is_void_v<R> && !CodecFor<Codec, R>) {
    requireCodable<Codec, R>();
    return {};
  } else {
    return runTravelling<Try, Codec, R>(&pool, fn, std::forward<Range>(items), opts);
  }
}

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE std::vector<Failure> runJob(JobBase& job, const Options& opts,
                                                PoolCaller* pool) {
  if (pool) return pool->call(job, opts);
  Engine engine(opts, Lifetime::oneCall);
  engine.call(job, opts);
  return engine.takeFailures();
}

FLOCK_ENGINE_INLINE std::vector<Failure> OneCallPool::call(JobBase& job, const Options& callOpts) {
  engine_.sizeFor(job.size());
  engine_.call(job, callOpts);
  return engine_.takeFailures();
}

FLOCK_ENGINE_INLINE CodecError batchSizeError(std::size_t count, std::size_t bytes) {
  return CodecError(fmt::format("flock: a batch of {} inputs arrived with {} bytes", count, bytes));
}

FLOCK_ENGINE_INLINE OptionError notPortableUnder(Context c) {
  return OptionError(fmt::format(
      "flock: under Context::{} the workers do not inherit the callable: pass a function pointer, a captureless "
      "lambda, an empty or codable function object, and codable inputs (or use Context::fork)",
      c == Context::spawn ? "spawn" : "forkserver"));
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

// flock: BaseMultiProc, the pool every API class is a thin layer over.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <new>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

#include "codec.hpp"
#include "detail/engine.hpp"
#include "detail/invoke.hpp"
#include "detail/posix.hpp"
#include "error.hpp"
#include "options.hpp"
#include "worker.hpp"

namespace flockmp {

namespace detail {

/// Results of this type travel as raw bytes: the worker constructs them in its output buffer
/// and the parent reads them straight into the result vector, with no codec on either side.
template <class Codec, class R>
constexpr bool rawResultFor() {
  if constexpr (std::is_void_v<R>) return true;
  else if constexpr (std::is_same_v<R, bool>) return false; // std::vector<bool> has no data() to read into
  else if constexpr (requires { Codec::template isRaw<R>; }) return Codec::template isRaw<R>;
  else return false;
}

/// A typed job: inputs at `first[0..n)`, the callable, and result storage.
template <class Codec, class It, class F, class R>
class Job final : public JobBase {
public:
  static constexpr bool raw = rawResultFor<Codec, R>();
  /// Encoded results are stored as R itself (no std::optional around it, so the vector is
  /// handed over as is) when an empty R is cheap: a noexcept default constructor, as std::string
  /// and the standard containers have.
  static constexpr bool direct = [] {
    if constexpr (std::is_void_v<R> || raw) return true;
    else if constexpr (std::is_same_v<R, bool>) return false; // std::vector<bool> packs bits
    else return std::is_nothrow_default_constructible_v<R> && std::is_nothrow_move_assignable_v<R>;
  }();
  static constexpr std::size_t elementSize = [] {
    if constexpr (std::is_void_v<R>) return std::size_t{0};
    else return sizeof(R);
  }();

  Job(It first, std::size_t n, F& fn) : first_(std::move(first)), n_(n), fn_(fn) {}

  [[nodiscard]] std::size_t size() const noexcept override { return n_; }
  [[nodiscard]] bool rawResults() const noexcept override { return raw; }
  [[nodiscard]] std::size_t rawElementSize() const noexcept override { return elementSize; }
  [[nodiscard]] std::byte* rawDestination(std::size_t index) noexcept override {
    if constexpr (raw && !std::is_void_v<R>) return reinterpret_cast<std::byte*>(values_.data() + index);
    else {
      (void)index;
      return nullptr;
    }
  }
  void reserveParent() override {
    if constexpr (!std::is_void_v<R>) {
      values_.reserve(n_);
      resultPages_ = ResultPages(values_.data(), n_ * sizeof(typename decltype(values_)::value_type));
    }
  }
  void prepareParent() override {
    if constexpr (!std::is_void_v<R>) values_.resize(n_); // within the reserved capacity: same pages
  }

  void runBatch(std::size_t begin, std::size_t end, WorkerControl& ctl, WorkerOutput& out) override {
    if constexpr (raw) runRaw(begin, end, ctl, out);
    else runEncoded(begin, end, ctl, out);
  }

  void acceptResult(std::size_t index, ByteReader& payload) override {
    if constexpr (!raw) {
      if constexpr (direct) values_[index] = Codec::template decode<R>(payload);
      else values_[index].emplace(Codec::template decode<R>(payload));
      payload.expectEnd();
    } else {
      (void)index;
      (void)payload;
    }
  }

  /// One outcome per input; `failures` sorted by index.
  std::vector<Outcome<R>> outcomes(const std::vector<Failure>& failures) {
    std::vector<Outcome<R>> out;
    out.reserve(n_);
    auto f = failures.begin();
    for (std::size_t i = 0; i < n_; ++i) {
      if (f != failures.end() && f->index == i) {
        out.emplace_back(*f);
        while (f != failures.end() && f->index == i) ++f;
        continue;
      }
      if constexpr (std::is_void_v<R>) out.emplace_back();
      else if constexpr (direct) out.emplace_back(std::move(values_[i]));
      else out.emplace_back(std::move(*values_[i]));
    }
    return out;
  }

  /// All results, when no input failed: stored as R, they are handed over without a copy.
  std::vector<R> values() {
    resultPages_.release();
    if constexpr (direct) {
      return std::move(values_);
    } else {
      std::vector<R> v;
      v.reserve(n_);
      for (auto& o : values_) v.push_back(std::move(*o));
      return v;
    }
  }

private:
  using Diff = std::iter_difference_t<It>;

  void runRaw(std::size_t begin, std::size_t end, WorkerControl& ctl, WorkerOutput& out) {
    // Results are constructed in the output buffer in blocks; an input that throws closes its
    // block early, is reported, and a new block starts after it.
    constexpr std::size_t perBlock = elementSize == 0 ? std::size_t{1} << 20 : WorkerOutput::flushBytes / elementSize + 1;
    std::size_t i = begin;
    while (i < end) {
      const std::size_t blockBegin = i;
      const std::size_t count = std::min(end - i, perBlock);
      std::byte* dst = out.rawBlockBegin(blockBegin, count, elementSize);
      bool closed = false; // the block ended early: an input threw, or its results are due
      for (; i < blockBegin + count; ++i) {
        ctl.current.store(static_cast<std::int64_t>(i), std::memory_order_relaxed);
        try {
          if constexpr (std::is_void_v<R>) invokeOn(fn_, first_[static_cast<Diff>(i)]);
          else {
            // Frames have no alignment in the buffer: build the value aligned, then copy its
            // bytes (the compiler turns this into a plain store).
            const R value = invokeOn(fn_, first_[static_cast<Diff>(i)]);
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

  void runEncoded(std::size_t begin, std::size_t end, WorkerControl& ctl, WorkerOutput& out) {
    for (std::size_t i = begin; i < end; ++i) {
      ctl.current.store(static_cast<std::int64_t>(i), std::memory_order_relaxed);
      try {
        out.template result<Codec, R>(i, invokeOn(fn_, first_[static_cast<Diff>(i)]));
      } catch (...) {
        auto [type, message] = describeCurrentException();
        out.failure(i, FailureKind::exception, type, message);
      }
      out.flushIfDue();
    }
  }

  It first_;
  std::size_t n_;
  F& fn_;
  std::conditional_t<std::is_void_v<R>, char, std::conditional_t<direct, std::vector<R>, std::vector<std::optional<R>>>> values_{};
  ResultPages resultPages_; // declared after values_: released before the buffer is freed
};

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

/// Run `fn` over `first[0..n)` and hand back either outcomes (Try) or values/TaskError.
template <bool Try, class Codec, class R, class It, class F>
auto runOn(It first, std::size_t n, F& fn, const Options& opts) {
  Job<Codec, It, F, R> job(std::move(first), n, fn);
  std::vector<Failure> failures;
  {
    Engine engine(job, opts);
    engine.run();
    failures = engine.takeFailures();
  }
  if constexpr (Try) {
    return job.outcomes(failures);
  } else {
    if (!failures.empty()) {
      auto outcomes = job.outcomes(failures);
      throw TaskError(std::move(failures), std::move(outcomes));
    }
    if constexpr (std::is_void_v<R>) return;
    else return job.values();
  }
}

template <bool Try, class Codec, class R, class F, class Range>
auto runChecked(F& fn, Range&& items, const Options& opts) {
  validateOptions(opts);
  if constexpr (std::ranges::random_access_range<Range> && std::ranges::sized_range<Range>) {
    // Under Context::fork the workers index the caller's range in their copy-on-write memory.
    return runOn<Try, Codec, R>(std::ranges::begin(items), static_cast<std::size_t>(std::ranges::size(items)), fn, opts);
  } else {
    // A single-pass or unsized range is materialised once so that inputs can be indexed.
    std::vector<std::ranges::range_value_t<Range>> copy;
    if constexpr (std::ranges::sized_range<Range>) copy.reserve(static_cast<std::size_t>(std::ranges::size(items)));
    for (auto&& x : items) copy.push_back(std::forward<decltype(x)>(x));
    return runOn<Try, Codec, R>(copy.begin(), copy.size(), fn, opts);
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

} // namespace detail

/// A pool of worker processes that runs a callable over a range of inputs and returns the
/// results in input order (the seed's BaseMultiProc). Workers are started for each call under
/// Context::fork, so the callable and the inputs are inherited, never serialized.
///
///   flockmp::BaseMultiProc bp{{.poolSize = 5}};
///   std::vector<int> res = bp.executeAsync([](int x) { return x * x; }, std::vector{1, 2, 3});
class BaseMultiProc {
public:
  /// Throws flockmp::OptionError for a bad option (poolSize <= 0, timeOutError <= 0...).
  explicit BaseMultiProc(Options options = {}) : opts_(std::move(options)) { detail::validateOptions(opts_); }

  /// Run `fn` on every element of `items` in parallel worker processes. Returns the results in
  /// input order (nothing when `fn` returns void). Throws flockmp::TaskError if any input failed
  /// (its outcomes<R>() keeps the successful results) and flockmp::Error if workers cannot be
  /// started. `Codec` carries the results back (default: the built-in BinaryCodec).
  template <class Codec = BinaryCodec, class F, std::ranges::input_range Range>
  auto executeAsync(F&& fn, Range&& items) {
    return detail::run<false, Codec>(fn, std::forward<Range>(items), opts_);
  }

  /// Like executeAsync, but never throws for failed inputs: one Outcome per input.
  template <class Codec = BinaryCodec, class F, std::ranges::input_range Range>
  auto tryExecuteAsync(F&& fn, Range&& items) {
    return detail::run<true, Codec>(fn, std::forward<Range>(items), opts_);
  }

  [[nodiscard]] const Options& options() const noexcept { return opts_; }

private:
  Options opts_;
};

} // namespace flockmp

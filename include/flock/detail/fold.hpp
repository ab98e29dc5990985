// flock internals: mapReduce. Each worker folds the results of its inputs with `reduce` and
// sends one partial fold per stretch of inputs (never a result per input); the parent merges the
// partials as they arrive.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../codec.hpp"
#include "../error.hpp"
#include "run.hpp"

namespace flockmp {

/// What tryMapReduce returns: the fold of every input that succeeded, and the failures (sorted
/// by index) of those that did not.
template <class Acc>
struct Reduced {
  Acc value;
  std::vector<Failure> failures;
};

} // namespace flockmp

namespace flockmp::detail {

// Messages built out of line (in flock::engine when it is linked), not for every mapReduce type.
/// The failure message of an input whose fold was lost when the reduce threw at input `at`.
FLOCK_ENGINE_INLINE std::string reduceThrew(std::size_t at, std::string_view message);
/// The error for a mapReduce worker that sent a per-input result.
FLOCK_ENGINE_INLINE ProtocolError resultInsteadOfFold(std::size_t index);

/// The map and the fold a worker runs: `fn` on each input, `reduce(acc, result)` from `init`.
template <class F, class Reduce, class Acc>
struct FoldCall {
  F fn;
  Reduce reduce;
  Acc init;
};

/// Worker side: fold the results of inputs [begin, end). A stretch of inputs that succeeded is
/// sent as one partial fold when results are due (as ResultWriter::due says) and before each
/// failure, so the parent accounts for every input, and a crash loses only the unsent stretch
/// (which runs again). A `reduce` that throws fails the inputs of the stretch it was folding.
template <class Codec, class Acc, class Call, class Reduce>
void runFold(std::size_t begin, std::size_t end, Call&& call, Reduce& reduce, const Acc& init, [[maybe_unused]] WorkerControl& ctl,
             ResultWriter& out) {
  Acc acc = init;
  std::size_t from = begin; // the first input not yet reported; [from, i) are folded into acc
  const auto sendUpTo = [&](std::size_t upTo) {
    if (upTo > from) {
      out.template partial<Codec>(from, upTo - from, acc);
      acc = init;
    }
    from = upTo;
  };
  for (std::size_t i = begin; i < end; ++i) {
    out.startInput(i);
    bool mapped = false;
    try {
      auto result = call(i);
      mapped = true;
      acc = std::invoke(reduce, std::move(acc), std::move(result));
    } catch (...) {
      auto [type, message] = describeCurrentException();
      if (!mapped) {
        sendUpTo(i);
        out.failure(i, FailureKind::exception, type, message);
      } else {
        // The fold so far is lost with the exception: each input it held fails, naming why.
        const std::string why = reduceThrew(i, message);
        for (std::size_t k = from; k <= i; ++k) out.failure(k, FailureKind::exception, type, why);
        acc = init;
      }
      from = i + 1;
      out.flushIfDue();
      continue;
    }
    if (out.due()) {
      sendUpTo(i + 1);
      out.flush();
    }
  }
  sendUpTo(end);
}

/// Parent side: merges the workers' partial folds into one value as they arrive.
template <class Codec, class Acc, class Merge>
class FoldSink final : public ResultSink {
public:
  FoldSink(Merge& merge, const Acc& init) : merge_(merge), total_(init) {}

  [[nodiscard]] bool rawResults() const noexcept override { return false; }
  [[nodiscard]] std::size_t rawElementSize() const noexcept override { return 0; }
  [[nodiscard]] std::byte* rawDestination(std::size_t) noexcept override { return nullptr; }
  void prepare() override {}
  void accept(std::size_t index, ByteReader&) override {
    throw resultInsteadOfFold(index);
  }
  bool acceptPartial(ByteReader& payload) override {
    Acc partial = Codec::template decode<Acc>(payload);
    payload.expectEnd();
    total_ = std::invoke(merge_, std::move(total_), std::move(partial));
    return true;
  }

  Acc take() { return std::move(total_); }

private:
  Merge& merge_;
  Acc total_;
};

/// A pool worker's code for one batch of a mapReduce: rebuild the map, the fold and its start,
/// and the inputs, then fold.
template <class Codec, class F, class Reduce, class Acc, class In>
void foldThunk(std::span<const std::byte> callable, std::size_t begin, std::size_t end,
               std::span<const std::byte> inputs, WorkerControl& ctl, ResultWriter& out) {
  ByteReader cr(callable);
  F fn = decodeCallable<Codec, F>(cr);
  Reduce reduce = decodeCallable<Codec, Reduce>(cr);
  const Acc init = Codec::template decode<Acc>(cr);
  runDecoded<Codec, In>(fn, begin, end, inputs, [&](std::size_t b, std::size_t e, auto&& call) {
    runFold<Codec, Acc>(b, e, call, reduce, init, ctl, out);
  });
}

/// A mapReduce's job: inputs at `first[0..n)`, inherited (one-shot) or sent (`Portable`).
template <class Codec, class It, class F, class Reduce, class Acc, class Merge, bool Portable>
class FoldJob final : public IndexedInputs<Codec, It, Portable> {
public:
  FoldJob(It first, std::size_t n, FoldCall<F, Reduce, Acc>& fold, Merge& merge)
      : IndexedInputs<Codec, It, Portable>(std::move(first), n), fold_(fold), sink_(merge, fold.init) {}

  [[nodiscard]] FoldSink<Codec, Acc, Merge>& sink() noexcept override { return sink_; }

  void runBatch(std::size_t begin, std::size_t end, WorkerControl& ctl, ResultWriter& out) override {
    auto call = [this](std::size_t i) -> decltype(auto) { return invokeOn(fold_.fn, this->input(i)); };
    runFold<Codec, Acc>(begin, end, call, fold_.reduce, fold_.init, ctl, out);
  }

  void encodeCall(ByteWriter& w) override {
    if constexpr (Portable) {
      static const CodeRef thunk =
          codeRefOf(reinterpret_cast<const void*>(&foldThunk<Codec, F, Reduce, Acc, InputOf<It>>));
      encodeCallHead(w, thunk);
      encodeCallable<Codec, F>(w, fold_.fn);
      encodeCallable<Codec, Reduce>(w, fold_.reduce);
      Codec::encode(w, fold_.init);
    } else {
      (void)w;
    }
  }

private:
  FoldCall<F, Reduce, Acc>& fold_;
  FoldSink<Codec, Acc, Merge> sink_;
};

template <class T>
struct FoldCheck {
  static_assert(sizeof(T) == 0,
                "flock: mapReduce needs reduce(Acc, R) and merge(Acc, Acc) that return something convertible "
                "to Acc (the type of init), where R is what the callable returns for an input.");
};

/// Runs a mapReduce: on `pool` (Portable) or on workers forked for it. Try: a Reduced with the
/// failures; otherwise the value, or TaskError when an input failed.
template <bool Try, class Codec, bool Portable, class Range, class F, class Reduce, class Merge, class Acc>
auto runFoldCall(Range&& items, const F& fn, const Reduce& reduce, const Merge& merge, Acc init, const Options& opts,
                 PoolCaller* pool) -> std::conditional_t<Try, Reduced<Acc>, Acc> {
  using In = std::remove_cv_t<std::ranges::range_value_t<Range>>;
  using Ref = std::conditional_t<Portable, In&, std::ranges::range_reference_t<Range>>;
  using Out = std::conditional_t<Try, Reduced<Acc>, Acc>;
  if constexpr (!CallableOn<F, Ref>) {
    requireCallable<F, Ref>();
    return Out{};
  } else if constexpr (std::is_void_v<ResultOf<F, Ref>>) {
    (void)FoldCheck<F>{};
    return Out{};
  } else if constexpr (!std::is_convertible_v<std::invoke_result_t<const Reduce&, Acc, ResultOf<F, Ref>>, Acc> ||
                       !std::is_convertible_v<std::invoke_result_t<const Merge&, Acc, Acc>, Acc>) {
    (void)FoldCheck<Reduce>{};
    return Out{};
  } else if constexpr (Portable && (!PortableCallable<Codec, F> || !PortableCallable<Codec, Reduce>)) {
    (void)PortabilityCheck<F>{};
    return Out{};
  } else if constexpr (!CodecFor<Codec, Acc> || (Portable && !CodecFor<Codec, In>)) {
    requireCodable<Codec, Acc>();
    requireCodable<Codec, In>();
    return Out{};
  } else {
    validateOptions(opts);
    using Fn = std::decay_t<F>;
    using Red = std::decay_t<Reduce>;
    using Mrg = std::decay_t<Merge>;
    FoldCall<Fn, Red, Acc> fold{fn, reduce, std::move(init)};
    Mrg localMerge = merge;
    auto go = [&](auto first, std::size_t n) {
      FoldJob<Codec, decltype(first), Fn, Red, Acc, Mrg, Portable> job(first, n, fold, localMerge);
      std::vector<Failure> failures = runJob(job, opts, pool);
      if constexpr (Try) {
        return Reduced<Acc>{job.sink().take(), std::move(failures)};
      } else {
        if (!failures.empty()) throw TaskError(std::move(failures), std::vector<Outcome<Acc>>{});
        return job.sink().take();
      }
    };
    // A single-pass range is read once into memory (the results are still never stored).
    return onIndexed(std::forward<Range>(items), go);
  }
}

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE std::string reduceThrew(std::size_t at, std::string_view message) {
  return fmt::format("the reduce threw while folding input {}: {}", at, message);
}

FLOCK_ENGINE_INLINE ProtocolError resultInsteadOfFold(std::size_t index) {
  return ProtocolError(fmt::format("flock: a mapReduce worker sent a result for input {} instead of a fold", index));
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS

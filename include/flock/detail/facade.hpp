// flock internals: the one-shot facades' overload set (apply / tryApply, each with a callable or
// a member function and its object), written once for FunctionAsync and ListAsync.
#pragma once

#include <functional>
#include <ranges>
#include <type_traits>
#include <utility>

#include "../codec.hpp"
#include "../options.hpp"
#include "../pool.hpp"
#include "../stream.hpp"
#include "fold.hpp"

namespace flockmp::detail {

/// One-shot calls: workers forked from the caller for each call (see FunctionAsync).
struct OneShotApply {
  /// Run `fn(item)` for every item (a tuple-like item is unpacked when `fn` takes its members).
  /// Returns `std::vector<R>` in input order, nothing for a void `fn`. Throws flockmp::TaskError
  /// when an input fails, flockmp::OptionError for bad options, flockmp::Error when workers
  /// cannot be started.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto apply(Range&& items, F&& fn, const Options& options = {}) {
    return detail::run<false, Codec>(fn, std::forward<Range>(items), options);
  }

  /// Convenience for instance methods: `apply(items, &T::method, obj)` is
  /// `apply(items, std::bind_front(&T::method, obj))`.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  static auto apply(Range&& items, M method, Obj&& obj, const Options& options = {}) {
    auto fn = std::bind_front(method, std::forward<Obj>(obj));
    return detail::run<false, Codec>(fn, std::forward<Range>(items), options);
  }

  /// Like apply, but never throws for failed inputs: one flockmp::Outcome per input.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto tryApply(Range&& items, F&& fn, const Options& options = {}) {
    return detail::run<true, Codec>(fn, std::forward<Range>(items), options);
  }

  /// Stream `fn` over `items` on workers that live while the stream does: results in input
  /// order, each as soon as it and those before it are in. `items` may be single-pass and
  /// unbounded; it is read only as Options::maxInFlight allows, and the inputs travel to the
  /// workers through the codec. Under Context::fork the workers are forked from the caller and
  /// any callable works; otherwise it must be portable (see BaseMultiProc). Iterating throws
  /// flockmp::TaskError at the first failed input. See flockmp::Stream.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto imap(Range&& items, const F& fn, const Options& options = {}) {
    return stream<StreamKind::values, Codec>(std::forward<Range>(items), fn, options);
  }
  /// Like imap, but never throws for failed inputs: one flockmp::Outcome per input, in order.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto tryImap(Range&& items, const F& fn, const Options& options = {}) {
    return stream<StreamKind::outcomes, Codec>(std::forward<Range>(items), fn, options);
  }
  /// Like imap, but results come as they complete, each with its input's index.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto imapUnordered(Range&& items, const F& fn, const Options& options = {}) {
    return stream<StreamKind::indexedValues, Codec>(std::forward<Range>(items), fn, options);
  }
  /// Like imapUnordered, but never throws for failed inputs: (index, Outcome) as they complete.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto tryImapUnordered(Range&& items, const F& fn, const Options& options = {}) {
    return stream<StreamKind::indexedOutcomes, Codec>(std::forward<Range>(items), fn, options);
  }

  /// Map `fn` over `items` and fold the results with `reduce(acc, result)` from `init`, which
  /// must be reduce's identity: each worker folds its own inputs, and the parent folds their
  /// partial folds (reduce must be associative and commutative). Per-input results are never
  /// stored. Throws flockmp::TaskError when an input failed. See BaseMultiProc::mapReduce.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Acc>
  static Acc mapReduce(Range&& items, const F& fn, const Reduce& reduce, Acc init, const Options& options = {}) {
    return fold<false, Codec>(std::forward<Range>(items), fn, reduce, reduce, std::move(init), options);
  }
  /// mapReduce whose partial folds are combined by `merge(acc, partial)`.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Merge, class Acc>
  static Acc mapReduce(Range&& items, const F& fn, const Reduce& reduce, const Merge& merge, Acc init,
                       const Options& options = {}) {
    return fold<false, Codec>(std::forward<Range>(items), fn, reduce, merge, std::move(init), options);
  }
  /// Like mapReduce, but never throws for failed inputs: the fold of those that succeeded, and
  /// the failures.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Acc>
  static Reduced<Acc> tryMapReduce(Range&& items, const F& fn, const Reduce& reduce, Acc init,
                                   const Options& options = {}) {
    return fold<true, Codec>(std::forward<Range>(items), fn, reduce, reduce, std::move(init), options);
  }
  /// tryMapReduce with a separate `merge` for the partial folds.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F, class Reduce, class Merge, class Acc>
  static Reduced<Acc> tryMapReduce(Range&& items, const F& fn, const Reduce& reduce, const Merge& merge, Acc init,
                                   const Options& options = {}) {
    return fold<true, Codec>(std::forward<Range>(items), fn, reduce, merge, std::move(init), options);
  }

  /// tryApply for instance methods.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  static auto tryApply(Range&& items, M method, Obj&& obj, const Options& options = {}) {
    auto fn = std::bind_front(method, std::forward<Obj>(obj));
    return detail::run<true, Codec>(fn, std::forward<Range>(items), options);
  }

private:
  template <bool Try, class Codec, class Range, class F, class Reduce, class Merge, class Acc>
  static auto fold(Range&& items, const F& fn, const Reduce& reduce, const Merge& merge, Acc init,
                   const Options& options) {
    using Fn = std::decay_t<F>;
    using Red = std::decay_t<Reduce>;
    if (options.context != Context::fork) {
      if constexpr (PortableCallable<Codec, Fn> && PortableCallable<Codec, Red>) {
        OneCallPool pool(options);
        return runFoldCall<Try, Codec, true>(std::forward<Range>(items), static_cast<const Fn&>(fn),
                                             static_cast<const Red&>(reduce), merge, std::move(init), options, &pool);
      } else {
        throw notPortableUnder(options.context);
      }
    }
    return runFoldCall<Try, Codec, false>(std::forward<Range>(items), static_cast<const Fn&>(fn),
                                          static_cast<const Red&>(reduce), merge, std::move(init), options, nullptr);
  }

  template <StreamKind K, class Codec, class Range, class F>
  static auto stream(Range&& items, const F& fn, const Options& options) {
    const auto lease = [&] { return std::make_unique<OwnEngine>(options); };
    using Fn = std::decay_t<F>;
    if constexpr (PortableCallable<Codec, Fn>) {
      if (options.context != Context::fork)
        return makeStream<K, Codec, false>(std::forward<Range>(items), static_cast<const Fn&>(fn), options, lease);
    } else {
      if (options.context != Context::fork) throw notPortableUnder(options.context);
    }
    return makeStream<K, Codec, true>(std::forward<Range>(items), static_cast<const Fn&>(fn), options, lease);
  }
};

} // namespace flockmp::detail

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

  /// tryApply for instance methods.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  static auto tryApply(Range&& items, M method, Obj&& obj, const Options& options = {}) {
    auto fn = std::bind_front(method, std::forward<Obj>(obj));
    return detail::run<true, Codec>(fn, std::forward<Range>(items), options);
  }

private:
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

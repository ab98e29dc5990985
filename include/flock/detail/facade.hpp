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

  /// tryApply for instance methods.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  static auto tryApply(Range&& items, M method, Obj&& obj, const Options& options = {}) {
    auto fn = std::bind_front(method, std::forward<Obj>(obj));
    return detail::run<true, Codec>(fn, std::forward<Range>(items), options);
  }
};

} // namespace flockmp::detail

// flock: ListAsync, the seed's chunked apply over a list.
#pragma once

#include <ranges>
#include <utility>

#include "codec.hpp"
#include "options.hpp"
#include "pool.hpp"

namespace flockmp {

/// Apply a callable over a list split into chunks, one chunk per batch sent to a worker (the
/// seed's ListAsync). `chunkSize` sets the chunk length; by default chunks are adaptive (large
/// first, small at the end), which is what every flock call does, so ListAsync::apply and
/// FunctionAsync::apply give the same results; ListAsync keeps the seed's name.
///
///   auto r = flockmp::ListAsync::apply(xs, [](int x) { return x * x / 10.0; }, {.poolSize = 4});
struct ListAsync {
  /// Results in input order; throws flockmp::TaskError when an input fails.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto apply(Range&& list, F&& fn, const Options& options = {}) {
    return detail::run<false, Codec>(fn, std::forward<Range>(list), options);
  }

  /// One flockmp::Outcome per input; never throws for failed inputs.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  static auto tryApply(Range&& list, F&& fn, const Options& options = {}) {
    return detail::run<true, Codec>(fn, std::forward<Range>(list), options);
  }
};

} // namespace flockmp

// flock: FunctionAsync, the one-line parallel apply (the seed's FunctionAsync.apply).
#pragma once

#include <functional>
#include <ranges>
#include <type_traits>
#include <utility>

#include "detail/facade.hpp"

namespace flockmp {

/// Apply a callable to every input in parallel worker processes; results in input order.
///
///   auto squares = flockmp::FunctionAsync::apply(xs, [](int x) { return x * x; });
///   auto powers  = flockmp::FunctionAsync::apply(pairs, &Test::compute, inst); // pairs unpacked
///   auto halves  = flockmp::FunctionAsync::apply(xs, half, {.poolSize = 4});
struct FunctionAsync : detail::OneShotApply {};

} // namespace flockmp

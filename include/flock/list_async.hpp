// flock: ListAsync, the seed's chunked apply over a list.
#pragma once

#include "detail/facade.hpp"

namespace flockmp {

/// Apply a callable over a list split into chunks, one chunk per batch sent to a worker (the
/// seed's ListAsync). `batchSize` sets the chunk length; by default chunks are adaptive (large
/// first, small at the end), which is what every flock call does, so ListAsync::apply and
/// FunctionAsync::apply give the same results; ListAsync keeps the seed's name.
///
///   auto r = flockmp::ListAsync::apply(xs, [](int x) { return x * x / 10.0; }, {.poolSize = 4});
/// Its apply and tryApply take a callable, or a member function and its object, as
/// FunctionAsync's do.
struct ListAsync : detail::OneShotApply {};

} // namespace flockmp

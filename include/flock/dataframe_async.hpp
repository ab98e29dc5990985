// flock: DataFrameAsync, the seed's apply over a table: row-like (the callable sees one row, its
// results form a column) or block-like (the callable sees a chunk of rows and returns a table;
// the chunks come back concatenated in row order).
//
//   df["new-var"] = flockmp::DataFrameAsync::apply(df[{"foo", "bar"}], [](const flockmp::Row& x) {
//     return std::pow(x.get<std::int64_t>("foo") + x.get<std::int64_t>("bar"), 2);
//   }, {.style = flockmp::Style::rowLike});
//   auto squared = flockmp::DataFrameAsync::apply(df, [](const flockmp::DataFrame& v) {
//     return v * v;
//   }, {.style = flockmp::Style::blockLike});
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <functional>
#include <iterator>
#include <numeric>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "codec.hpp"
#include "dataframe.hpp"
#include "error.hpp"
#include "function_async.hpp"
#include "options.hpp"
#include "pool.hpp"

namespace flockmp {

// ---- The Table concept -------------------------------------------------------------------

/// How block-like apply sees a table type: its row count, a slice of rows, and how to append
/// one table below another. Specialize it for a table type of your own:
///
///   template <> struct flockmp::TableTraits<my::Table> {
///     static std::size_t rows(const my::Table& t) { return t.height(); }
///     static my::Table slice(const my::Table& t, std::size_t b, std::size_t e) { return t.rows(b,
///     e); } static void append(my::Table& out, my::Table&& part) { out.stack(std::move(part)); }
///   };
///
/// Provided: types with members `rowCount()`, `slice(b, e)` and `append(const T&)` (like
/// DataFrame), flockmp::Column, and random-access containers built from an iterator pair (a
/// `std::vector` or `std::deque` of records: one element is one row). Strings are not tables.
template <class T>
struct TableTraits {
  /// Marks the primary template: T is not a table unless a specialization below (or yours)
  /// applies.
  using NotATable = void;
};

namespace detail {

template <class T>
concept MemberTable = requires(const T& t, T& out, std::size_t i) {
  { t.rowCount() } -> std::convertible_to<std::size_t>;
  { t.slice(i, i) } -> std::same_as<T>;
  out.append(t);
};

template <class T>
struct IsBasicString : std::false_type {};
template <class C, class Tr, class A>
struct IsBasicString<std::basic_string<C, Tr, A>> : std::true_type {};

template <class T>
concept ContainerTable =
    !MemberTable<T> && !IsBasicString<T>::value && std::ranges::random_access_range<const T> &&
    std::ranges::sized_range<const T> &&
    std::constructible_from<T, std::ranges::iterator_t<const T>,
                            std::ranges::iterator_t<const T>> &&
    requires(T & out, T&& part) {
  out.insert(out.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
};

} // namespace detail

template <detail::MemberTable T>
struct TableTraits<T> {
  static std::size_t rows(const T& t) { return static_cast<std::size_t>(t.rowCount()); }
  static T slice(const T& t, std::size_t begin, std::size_t end) { return t.slice(begin, end); }
  static void append(T& out, T&& part) { out.append(std::move(part)); }
};

template <detail::ContainerTable T>
struct TableTraits<T> {
  static std::size_t rows(const T& t) { return static_cast<std::size_t>(std::ranges::size(t)); }
  static T slice(const T& t, std::size_t begin, std::size_t end) {
    auto first = std::ranges::begin(t);
    using D = std::ranges::range_difference_t<const T>;
    return T(first + static_cast<D>(begin), first + static_cast<D>(end));
  }
  static void append(T& out, T&& part) {
    out.insert(out.end(), std::make_move_iterator(part.begin()),
               std::make_move_iterator(part.end()));
  }
};

template <>
struct TableTraits<Column> {
  static std::size_t rows(const Column& c) { return c.size(); }
  static Column slice(const Column& c, std::size_t begin, std::size_t end) {
    return c.slice(begin, end);
  }
  static void append(Column& out, Column&& part) { out.append(part); }
};

/// A type block-like apply can cut into row ranges and put back together, through
/// TableTraits<T>: `rows(t)`, `slice(t, begin, end)` (rows [begin, end) as a new T) and
/// `append(out, part)` (part's rows below out's).
///
///   struct Trade { std::int64_t id; double price; };
///   static_assert(flockmp::Table<std::vector<Trade>>);
///   auto taxed = flockmp::DataFrameAsync::apply(trades, [](const std::vector<Trade>& part) {
///     std::vector<Trade> out = part;
///     for (auto& t : out) t.price *= 1.2;
///     return out;
///   });
template <class T>
concept Table = std::movable<T> && requires(const T& t, T& out, T&& part, std::size_t i) {
  { TableTraits<T>::rows(t) } -> std::convertible_to<std::size_t>;
  { TableTraits<T>::slice(t, i, i) } -> std::same_as<T>;
  TableTraits<T>::append(out, std::move(part));
};

// ---- Options -----------------------------------------------------------------------------

/// How DataFrameAsync::apply runs the callable.
enum class Style {
  automatic, ///< from the callable: row-like when it takes a `const Row&`, block-like otherwise
  rowLike,   ///< the callable sees one Row; its results form a column (a std::vector)
  blockLike, ///< the callable sees a chunk of rows (a table); the chunks' results are joined
};

/// Options of DataFrameAsync, in the seed's order:
///
///   DataFrameAsync::apply(df, fn, {.style = Style::rowLike, .chunksize = 100, .poolSize = 4});
///   DataFrameAsync::apply(df, fn, {.pool = {.timeOutError = std::chrono::seconds(5)}});
struct DataFrameOptions {
  /// Row-like or block-like; see Style. A style that contradicts the callable's parameter
  /// throws flockmp::OptionError.
  Style style = Style::automatic;
  /// How many chunks the table is split into (the seed's chunksize, default 100): block-like,
  /// each chunk is one task; row-like, one batch of rows. A table with fewer rows is split into
  /// single rows. Must be >= 1.
  std::size_t chunksize = 100;
  /// Number of worker processes (default: `pool.poolSize`, which defaults to the CPU count).
  std::optional<int> poolSize{};
  /// Every other flock option (timeOutError, retries, initializer, onProgress...). Leave its
  /// `batchSize` at 0: chunksize above sets the batches.
  Options pool{};
};

namespace detail {

/// Rows [begin, end) of chunk k when `rows` rows are split into `chunks` near-equal chunks.
inline std::pair<std::size_t, std::size_t> chunkRange(std::size_t rows, std::size_t chunks,
                                                      std::size_t k) {
  const std::size_t q = rows / chunks, r = rows % chunks;
  const std::size_t begin = k * q + std::min(k, r);
  return {begin, begin + q + (k < r ? 1 : 0)};
}

inline std::size_t chunkCount(std::size_t rows, const DataFrameOptions& o) {
  if (o.chunksize == 0)
    throw OptionError("flock: DataFrameOptions::chunksize must be at least 1");
  return std::min(o.chunksize, rows);
}

inline Options poolOptions(const DataFrameOptions& o) {
  Options opts = o.pool;
  if (o.poolSize) opts.poolSize = o.poolSize;
  if (opts.batchSize == 0) opts.batchSize = 1;
  return opts;
}

/// 0, 1, ..., n - 1: the inputs of a call over rows or chunks (a vector, not std::views::iota,
/// which Clang before 16 cannot use with libstdc++ 12).
inline std::vector<std::size_t> indicesUpTo(std::size_t n) {
  std::vector<std::size_t> v(n);
  std::iota(v.begin(), v.end(), std::size_t{0});
  return v;
}

template <class F>
concept UniqueCallOperator = requires {
  &std::remove_cvref_t<F>::operator();
};

/// Whether apply treats F as row-like: a function (pointer) or a function object with one,
/// non-template call operator that takes a `const Row&`. Generic lambdas are never asked (that
/// would instantiate their body with a Row), so they are block-like.
template <class F>
constexpr bool takesRow() {
  using D = std::remove_cvref_t<F>;
  if constexpr (std::is_function_v<D> ||
                (std::is_pointer_v<D> && std::is_function_v<std::remove_pointer_t<D>>))
    return std::is_invocable_v<D&, const Row&>;
  else if constexpr (std::is_class_v<D> && UniqueCallOperator<D>)
    return std::is_invocable_v<D&, const Row&>;
  else
    return false;
}

template <class Arg, class F>
struct ResultFor {
  using type = void;
};
template <class Arg, class F>
requires std::is_invocable_v<F&, const Arg&>
struct ResultFor<Arg, F> {
  using type = std::remove_cvref_t<std::invoke_result_t<F&, const Arg&>>;
};

/// What a row-like callable returns per row (void when it cannot take a Row).
template <class F>
using RowResult = typename ResultFor<Row, F>::type;

/// What a block-like callable returns per chunk of a T (void when it cannot take a T).
template <class T, class F>
using BlockResult = typename ResultFor<T, F>::type;

inline std::string rowsText(std::size_t begin, std::size_t end) {
  return end == begin + 1 ? fmt::format("row {}", begin) : fmt::format("rows [{}, {})", begin, end);
}

/// Row-like results travel as this type: bool as one byte, so that a column of bools streams as
/// raw bytes like the other scalar columns (the pool carries bool results through the codec,
/// std::vector<bool> having no storage to read into); every other type as itself.
template <class R>
struct RowCarriedOf {
  using type = R;
};
template <class R>
requires std::same_as<R, bool>
struct RowCarriedOf<R> {
  using type = unsigned char;
};
template <class R>
using RowCarried = typename RowCarriedOf<R>::type;

template <class C, class R>
C toCarried(const R& v) {
  if constexpr (std::is_same_v<R, C>)
    return v;
  else
    return static_cast<C>(v);
}

template <class R, class C>
R fromCarried(const C& c) {
  if constexpr (std::is_same_v<R, C>)
    return c;
  else
    return c != 0;
}

/// Options for a row-like call: rows are the pool's inputs, and the seed's chunksize (a number
/// of chunks) becomes the pool's batch length.
inline Options rowPoolOptions(std::size_t rows, const DataFrameOptions& o) {
  const std::size_t chunks = chunkCount(rows, o);
  Options opts = o.pool;
  if (o.poolSize) opts.poolSize = o.poolSize;
  if (opts.batchSize == 0 && chunks != 0) opts.batchSize = (rows + chunks - 1) / chunks;
  return opts;
}

/// The failure of one row, named as such: "row 7: ...". A Row's own message already ends with
/// " (row 7)"; the prefix replaces it, so the row is named once.
inline Failure rowFailure(Failure f) {
  const std::string suffix = fmt::format(" (row {})", f.index);
  if (f.message.size() >= suffix.size() && f.message.ends_with(suffix)) f.message.resize(f.message.size() - suffix.size());
  f.message = f.message.empty() ? fmt::format("row {}", f.index)
                                : fmt::format("row {}: {}", f.index, f.message);
  return f;
}

template <class R, class C>
Outcome<R> rowOutcome(const Outcome<C>& o) {
  if (!o.hasValue()) return rowFailure(o.failure());
  return fromCarried<R>(*o);
}

/// Runs fn on every row: the rows are the pool's inputs (each worker reads them from its copy of
/// the frame), in batches of about rows / chunksize, and the results stream back into one
/// vector. Try: one Outcome per row; otherwise the values or a TaskError naming the rows.
template <bool Try, class R, class F>
auto runRows(const DataFrame& df, F& fn, const DataFrameOptions& o) {
  using C = RowCarried<R>;
  const std::size_t rows = df.rowCount();
  const Options opts = rowPoolOptions(rows, o);
  auto perRow = [&df, &fn](std::size_t i) -> C {
    const Row row(df, i);
    if constexpr (std::is_same_v<R, C>)
      return std::invoke(fn, row);
    else
      return toCarried<C>(static_cast<R>(std::invoke(fn, row)));
  };
  const auto indices = indicesUpTo(rows);
  if constexpr (Try) {
    auto carried = FunctionAsync::tryApply(indices, perRow, opts);
    if constexpr (std::is_same_v<R, C>) {
      for (auto& c : carried)
        if (!c.hasValue()) c = Outcome<R>(rowFailure(c.failure()));
      return carried;
    } else {
      std::vector<Outcome<R>> out;
      out.reserve(carried.size());
      for (const auto& c : carried) out.push_back(rowOutcome<R>(c));
      return out;
    }
  } else {
    try {
      std::vector<C> values = FunctionAsync::apply(indices, perRow, opts);
      if constexpr (std::is_same_v<R, C>) {
        return values;
      } else {
        std::vector<R> out;
        out.reserve(values.size());
        for (const C& c : values) out.push_back(fromCarried<R>(c));
        return out;
      }
    } catch (const TaskError& e) {
      std::vector<Failure> failures;
      failures.reserve(e.failures().size());
      for (const auto& f : e.failures()) failures.push_back(rowFailure(f));
      std::vector<Outcome<R>> outcomes;
      const auto& carried = e.outcomes<C>();
      outcomes.reserve(carried.size());
      for (const auto& c : carried) outcomes.push_back(rowOutcome<R>(c));
      throw TaskError(std::move(failures), std::move(outcomes));
    }
  }
}

/// Runs fn on every chunk; one outcome per chunk, failures naming the chunk's rows.
template <class U, Table T, class F>
std::vector<Outcome<U>> blockOutcomes(const T& table, F& fn, const DataFrameOptions& o,
                                      std::vector<Failure>& failures) {
  const std::size_t rows = TableTraits<T>::rows(table);
  // An empty table is one empty block, so that fn still shapes the result (its columns).
  const std::size_t n = std::max<std::size_t>(chunkCount(rows, o), 1);
  auto work = [&table, &fn, rows, n](std::size_t k) -> U {
    const auto [begin, end] = chunkRange(rows, n, k);
    const T part = TableTraits<T>::slice(table, begin, end);
    return std::invoke(fn, part);
  };
  auto outcomes = FunctionAsync::tryApply(indicesUpTo(n), work, poolOptions(o));
  for (std::size_t k = 0; k < n; ++k) {
    if (outcomes[k].hasValue()) continue;
    const auto [begin, end] = chunkRange(rows, n, k);
    Failure g = outcomes[k].failure();
    g.message = fmt::format(
        "{}: {}", begin == end ? std::string("rows [0, 0)") : rowsText(begin, end), g.message);
    failures.push_back(g);
    outcomes[k] = Outcome<U>(std::move(g));
  }
  return outcomes;
}

} // namespace detail

/// Apply a callable over a table in parallel worker processes (the seed's DataFrameAsync).
///
/// - Row-like: `fn(const Row&)` returns a value per row; the results come back as a
///   `std::vector<R>` in row order, ready to become a column (`df["new"] = ...`).
/// - Block-like: `fn(const T&)` gets a chunk of rows of the table (a DataFrame slice, or a slice
///   of any Table); when it returns a Table the chunks' results are concatenated in row order,
///   otherwise apply returns one result per chunk (`std::vector<U>`).
///
/// The table is split into `chunksize` chunks (single rows when it has fewer). Block-like, each
/// chunk is one task; row-like, each chunk is one batch of rows sent to a worker, and every row
/// is an input of its own (timeOutError and retries apply per row). Under Context::fork the
/// workers read their rows from their copy of the table: only results travel back.
///
/// Failures throw flockmp::TaskError, and the rest of the table completes. Row-like: one Failure
/// per failed row, `index` = the row, message "row 7: ..." (a row that crashes its worker is
/// reported as crashed; the other rows of its batch still run). Block-like: one Failure per
/// failed chunk, `index` = the chunk, message "rows [100, 200): ...". `outcomes<R>()` keeps the
/// results that succeeded (per row, or per chunk). Results are carried by BinaryCodec.
struct DataFrameAsync {
  /// Row-like or block-like, from `options.style`, or (Style::automatic) from the callable: a
  /// function or lambda taking `const Row&` is row-like; anything else, generic lambdas
  /// included, is block-like. A style that contradicts the callable throws
  /// flockmp::OptionError; use applyRows / applyBlocks to choose at compile time.
  template <Table T, class F>
  static auto apply(const T& table, F&& fn, const DataFrameOptions& options = {}) {
    if constexpr (std::same_as<T, DataFrame> && detail::takesRow<F>()) {
      checkStyle(options.style, Style::rowLike);
      return applyRows(table, fn, options);
    } else {
      checkStyle(options.style, Style::blockLike);
      return applyBlocks(table, fn, options);
    }
  }

  /// apply, with one Outcome per row (row-like) or per chunk (block-like); never throws for a
  /// failed row or chunk.
  template <Table T, class F>
  static auto tryApply(const T& table, F&& fn, const DataFrameOptions& options = {}) {
    if constexpr (std::same_as<T, DataFrame> && detail::takesRow<F>()) {
      checkStyle(options.style, Style::rowLike);
      return tryApplyRows(table, fn, options);
    } else {
      checkStyle(options.style, Style::blockLike);
      return tryApplyBlocks(table, fn, options);
    }
  }

  /// Row-like apply: `fn(const Row&)` for every row; the results in row order.
  template <class F>
  static auto applyRows(const DataFrame& df, F&& fn, const DataFrameOptions& options = {}) {
    using R = detail::RowResult<F>;
    if constexpr (!rowCallable<F, R>()) {
      return std::vector<int>{};
    } else {
      return detail::runRows<false, R>(df, fn, options);
    }
  }

  /// Row-like apply with one Outcome per row.
  template <class F>
  static auto tryApplyRows(const DataFrame& df, F&& fn, const DataFrameOptions& options = {}) {
    using R = detail::RowResult<F>;
    if constexpr (!rowCallable<F, R>())
      return std::vector<Outcome<int>>{};
    else
      return detail::runRows<true, R>(df, fn, options);
  }

  /// Block-like apply: `fn(const T&)` for every chunk of rows; a Table result is concatenated in
  /// row order, any other result type gives one value per chunk.
  template <Table T, class F>
  static auto applyBlocks(const T& table, F&& fn, const DataFrameOptions& options = {}) {
    using U = detail::BlockResult<T, F>;
    if constexpr (!blockCallable<T, F, U>()) {
      return std::vector<int>{};
    } else {
      std::vector<Failure> failures;
      auto outcomes = detail::blockOutcomes<U>(table, fn, options, failures);
      if (!failures.empty()) throw TaskError(std::move(failures), std::move(outcomes));
      if constexpr (Table<U>) {
        U out = std::move(*outcomes.front());
        for (std::size_t k = 1; k < outcomes.size(); ++k)
          TableTraits<U>::append(out, std::move(*outcomes[k]));
        return out;
      } else {
        std::vector<U> out;
        out.reserve(outcomes.size());
        for (auto& o : outcomes) out.push_back(std::move(*o));
        return out;
      }
    }
  }

  /// Block-like apply with one Outcome per chunk.
  template <Table T, class F>
  static auto tryApplyBlocks(const T& table, F&& fn, const DataFrameOptions& options = {}) {
    using U = detail::BlockResult<T, F>;
    std::vector<Failure> failures;
    if constexpr (!blockCallable<T, F, U>())
      return std::vector<Outcome<int>>{};
    else
      return detail::blockOutcomes<U>(table, fn, options, failures);
  }

private:
  static void checkStyle(Style asked, Style callable) {
    if (asked == Style::automatic || asked == callable) return;
    if (callable == Style::rowLike)
      throw OptionError(
          "flock: DataFrameAsync: style is blockLike but the callable takes a const flockmp::Row& "
          "(row-like); give it a const DataFrame& parameter, or leave style automatic");
    throw OptionError(
        "flock: DataFrameAsync: style is rowLike but the callable does not take a const "
        "flockmp::Row& (generic lambdas, overloaded function objects and std::bind results count "
        "as block-like); take a const flockmp::Row&, or call DataFrameAsync::applyRows");
  }

  // Misuse stops with one readable error; the caller then instantiates nothing else.
  template <class F, class R>
  static constexpr bool rowCallable() {
    if constexpr (!std::is_invocable_v<F&, const Row&>) {
      static_assert(
          std::is_invocable_v<F&, const Row&>,
          "flock: DataFrameAsync row-like apply: the callable must take a const flockmp::Row&");
      return false;
    } else if constexpr (std::is_void_v<R>) {
      static_assert(!std::is_void_v<R>, "flock: DataFrameAsync row-like apply: the callable must "
                                        "return a value (the values form a column)");
      return false;
    } else {
      requireCodable<BinaryCodec, R>();
      return CodecFor<BinaryCodec, R>;
    }
  }

  template <class T, class F, class U>
  static constexpr bool blockCallable() {
    if constexpr (!std::is_invocable_v<F&, const T&>) {
      static_assert(std::is_invocable_v<F&, const T&>,
                    "flock: DataFrameAsync block-like apply: the callable must take a const T& "
                    "(a chunk of the table: a const DataFrame& for a DataFrame)");
      return false;
    } else if constexpr (std::is_void_v<U>) {
      static_assert(!std::is_void_v<U>,
                    "flock: DataFrameAsync block-like apply: the callable must return a value");
      return false;
    } else {
      requireCodable<BinaryCodec, U>();
      return CodecFor<BinaryCodec, U>;
    }
  }
};

} // namespace flockmp

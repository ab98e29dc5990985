// DataFrameAsync: the original Flock's test_df.py ported, row-like and block-like apply, chunking,
// order, empty and one-row frames, failures named by row range, and the Table concept.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <flock/dataframe_async.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"

using flockmp::DataFrame;
using flockmp::DataFrameAsync;
using flockmp::Row;
using flockmp::Style;
using flockmp::test::contains;

namespace {

DataFrame seedFrame() { return DataFrame{{"foo", {5, 10, 15, 20}}, {"bar", {1, 2, 3, 4}}}; }

/// test_df.py's frame: foo = 0..999, bar = 2000..2999.
DataFrame thousand() {
  std::vector<std::int64_t> foo(1000), bar(1000);
  std::iota(foo.begin(), foo.end(), 0);
  std::iota(bar.begin(), bar.end(), 2000);
  return DataFrame{{"foo", foo}, {"bar", bar}};
}

DataFrame counting(std::size_t n) {
  std::vector<std::int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return DataFrame{{"i", v}};
}

struct Trade {
  std::int64_t id;
  double price;
  std::string symbol;
  bool operator==(const Trade&) const = default;
};

std::vector<Trade> trades(std::size_t n) {
  std::vector<Trade> v;
  for (std::size_t i = 0; i < n; ++i)
    v.push_back({static_cast<std::int64_t>(i), 1.0 + static_cast<double>(i), i % 2 ? "AAA" : "BB"});
  return v;
}

/// A user table with its own shape, made a Table through TableTraits.
struct Series {
  std::vector<double> data;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(data);
  }
};

double rowSum(const Row& r) {
  return static_cast<double>(r.get<std::int64_t>("foo") + r.get<std::int64_t>("bar"));
}

} // namespace

template <>
struct flockmp::TableTraits<Series> {
  static std::size_t rows(const Series& s) { return s.data.size(); }
  static Series slice(const Series& s, std::size_t b, std::size_t e) {
    return Series{{s.data.begin() + static_cast<std::ptrdiff_t>(b),
                   s.data.begin() + static_cast<std::ptrdiff_t>(e)}};
  }
  static void append(Series& out, Series&& part) {
    out.data.insert(out.data.end(), part.data.begin(), part.data.end());
  }
};

// The Table concept: what block-like apply accepts.
static_assert(flockmp::Table<DataFrame>);
static_assert(flockmp::Table<flockmp::Column>);
static_assert(flockmp::Table<std::vector<Trade>>);
static_assert(flockmp::Table<std::deque<int>>);
static_assert(flockmp::Table<Series>);
static_assert(!flockmp::Table<std::string>);
static_assert(!flockmp::Table<int>);
static_assert(!flockmp::Table<Trade>);

TEST_CASE("test_df.py: block-like x^2 keeps the shape (1000, 2)", "[dataframe_async][seed]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = thousand();
  const DataFrame res =
      DataFrameAsync::apply(df, [](const auto& x) { return x * x; }, {.style = Style::blockLike});
  CHECK(res.shape() == std::pair<std::size_t, std::size_t>{1000, 2});
  CHECK(res == df * df);
  CHECK(res["bar"].values<std::int64_t>()[999] == 2999 * 2999);

  const DataFrame viaMap = DataFrameAsync::apply(
      df, [](const DataFrame& x) { return flockmp::map(x, [](auto v) { return v * v; }); });
  CHECK(viaMap == res);
}

TEST_CASE("test_df.py: block-like ((v^2)/20*v)*v keeps 1000 rows", "[dataframe_async][seed]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = thousand();
  const DataFrame res = DataFrameAsync::apply(
      df, [](const DataFrame& v) { return ((v * v) / 20 * v) * v; }, {.style = Style::blockLike});
  CHECK(res.rowCount() == 1000);
  CHECK(res.columnNames() == df.columnNames());
  CHECK(res["foo"].values<double>()[10] == 10.0 * 10 / 20 * 10 * 10);
  CHECK(res == ((df * df) / 20 * df) * df);
}

TEST_CASE("test_df.py: row-like (foo+bar)^2 on the seed's frame", "[dataframe_async][seed]") {
  flockmp::test::DeadlockGuard guard;
  DataFrame df = seedFrame();
  df["new-var"] = DataFrameAsync::apply(
      df[{"foo", "bar"}],
      [](const Row& x) { return std::pow(x.get<int64_t>("foo") + x.get<int64_t>("bar"), 2); },
      {.style = Style::rowLike});
  CHECK(df["new-var"].values<double>() == std::vector<double>{36, 144, 324, 576});
  CHECK(df.columnNames() == std::vector<std::string>{"foo", "bar", "new-var"});

  // A free function, the automatic style, poolSize and chunksize as in the seed.
  const auto sums = DataFrameAsync::apply(df, rowSum, {.chunksize = 2, .poolSize = 2});
  CHECK(sums == std::vector<double>{6, 12, 18, 24});
  CHECK(DataFrameAsync::apply(df, &rowSum) == sums);
}

TEST_CASE("row-like results come back in row order across many chunks", "[dataframe_async]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = counting(10'000);
  std::vector<std::int64_t> expected(10'000);
  std::iota(expected.begin(), expected.end(), 0);
  for (std::size_t chunks : {std::size_t{1}, std::size_t{7}, std::size_t{100}, std::size_t{1000}}) {
    const auto res =
        DataFrameAsync::apply(df,
                              [](const Row& r) {
                                if (static_cast<std::size_t>(r.get<std::int64_t>("i")) != r.index())
                                  throw std::logic_error("index");
                                return r.get<std::int64_t>("i");
                              },
                              {.chunksize = chunks, .poolSize = 3});
    CHECK(res == expected);
  }
  // Strings and bools as results, strings as input.
  const DataFrame names{{"name", {"ann", "bob", "cy"}}};
  CHECK(DataFrameAsync::apply(names, [](const Row& r) {
          return r.get<std::string>("name") + "!";
        }) == std::vector<std::string>{"ann!", "bob!", "cy!"});
  CHECK(DataFrameAsync::apply(names, [](const Row& r) {
          return r.get<std::string>("name").size() == 3;
        }) == std::vector<bool>{true, true, false});
}

TEST_CASE("block-like chunks follow chunksize and come back in order", "[dataframe_async]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = counting(10);
  // A result that is not a table: one value per chunk.
  auto sizes = DataFrameAsync::apply(df, [](const DataFrame& part) { return part.rowCount(); },
                                     {.chunksize = 3});
  CHECK(sizes == std::vector<std::size_t>{4, 3, 3});
  // Fewer rows than chunks: single rows.
  sizes = DataFrameAsync::apply(df, [](const DataFrame& part) { return part.rowCount(); });
  CHECK(sizes == std::vector<std::size_t>(10, 1));
  auto firsts = DataFrameAsync::apply(
      df, [](const DataFrame& part) { return part["i"].values<std::int64_t>().front(); });
  CHECK(firsts == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});

  const DataFrame big = counting(5'000);
  const DataFrame back = DataFrameAsync::apply(big, [](const DataFrame& part) { return part + 1; },
                                               {.chunksize = 997, .poolSize = 3});
  CHECK(back == big + 1);
  // A block returning a std::vector (a table) is concatenated into one column.
  const std::vector<double> halves = DataFrameAsync::apply(
      big, [](const DataFrame& part) { return (part["i"] / 2).values<double>(); });
  REQUIRE(halves.size() == 5'000);
  CHECK(halves[4'999] == 2'499.5);
}

TEST_CASE("empty frames and one-row frames", "[dataframe_async]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame none{{"foo", std::vector<std::int64_t>{}}, {"bar", std::vector<double>{}}};
  CHECK(DataFrameAsync::apply(none, rowSum).empty());
  CHECK(DataFrameAsync::tryApply(none, rowSum).empty());
  const DataFrame sq = DataFrameAsync::apply(none, [](const DataFrame& v) { return v * v; });
  CHECK(sq.shape() == std::pair<std::size_t, std::size_t>{0, 2});
  CHECK(sq.columnNames() == none.columnNames());
  CHECK(DataFrameAsync::apply(DataFrame{}, [](const DataFrame& v) { return v; }) == DataFrame{});

  const DataFrame one{{"foo", {3}}, {"bar", {4}}};
  CHECK(DataFrameAsync::apply(one, rowSum) == std::vector<double>{7});
  CHECK(DataFrameAsync::apply(one, [](const DataFrame& v) { return v * v; }) == one * one);
}

TEST_CASE("a failing row is reported with its row; the other rows complete",
          "[dataframe_async][errors]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = counting(100);
  auto fn = [](const Row& r) {
    const auto i = r.get<std::int64_t>("i");
    if (i == 7 || i == 42) throw std::runtime_error("bad value " + std::to_string(i));
    return i * 10;
  };
  try {
    (void)DataFrameAsync::apply(df, fn, {.chunksize = 10});
    FAIL("no TaskError");
  } catch (const flockmp::TaskError& e) {
    CHECK_THAT(e.what(), contains("input 7: exception std::runtime_error: row 7: bad value 7"));
    CHECK_THAT(e.what(), contains("and 1 other failed input"));
    REQUIRE(e.failures().size() == 2);
    CHECK(e.failures()[1].index == 42);
    CHECK(e.failures()[1].message == "row 42: bad value 42");
    CHECK(e.failures()[1].pid > 0);
    const auto& outcomes = e.outcomes<std::int64_t>();
    REQUIRE(outcomes.size() == 100);
    CHECK(*outcomes[6] == 60);
    CHECK_FALSE(outcomes[7].hasValue());
    CHECK(*outcomes[99] == 990);
  }
  const auto outcomes = DataFrameAsync::tryApply(df, fn, {.chunksize = 3});
  REQUIRE(outcomes.size() == 100);
  CHECK(std::count_if(outcomes.begin(), outcomes.end(),
                      [](const auto& o) { return o.hasValue(); }) == 98);
  CHECK(outcomes[42].failure().message == "row 42: bad value 42");

  // A Row error inside the callable (a misspelt column) names the column and the row.
  CHECK_THROWS_WITH(DataFrameAsync::apply(df, [](const Row& r) { return r.get<double>("j"); }),
                    contains("no column \"j\" in the row (row 0"));
  // A column of the wrong type names the row once (catches "row 3: ... (row 3)").
  const auto wrongType = DataFrameAsync::tryApply(df, [](const Row& r) { return r.get<std::string>("i"); });
  REQUIRE_FALSE(wrongType[3].hasValue());
  CHECK(wrongType[3].failure().message == "row 3: flock: column \"i\" holds int64 values, not string");
  // An int64 column reads as double, as in pandas (catches a type error for a lossless read).
  const auto asDouble = DataFrameAsync::apply(df, [](const Row& r) { return r.get<double>("i") / 2; });
  CHECK(asDouble[5] == 2.5);
}

TEST_CASE("a row that crashes its worker is reported; the other rows complete",
          "[dataframe_async][errors]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = counting(40);
  const auto outcomes = DataFrameAsync::tryApplyRows(df,
                                                     [](const Row& r) {
                                                       if (r.index() == 13) std::abort();
                                                       return static_cast<double>(r.index());
                                                     },
                                                     {.chunksize = 4, .poolSize = 2});
  REQUIRE(outcomes.size() == 40);
  for (std::size_t i = 0; i < 40; ++i) {
    if (i == 13) {
      REQUIRE_FALSE(outcomes[i].hasValue());
      CHECK(outcomes[i].failure().kind == flockmp::FailureKind::crashed);
      CHECK(outcomes[i].failure().index == 13);
      CHECK_THAT(outcomes[i].failure().message, contains("row 13"));
    } else {
      CHECK(*outcomes[i] == static_cast<double>(i));
    }
  }
}

TEST_CASE("a row that runs past timeOutError is reported as timed out",
          "[dataframe_async][errors]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = counting(6);
  try {
    (void)DataFrameAsync::apply(df,
                                [](const Row& r) {
                                  if (r.index() == 2)
                                    std::this_thread::sleep_for(std::chrono::seconds(20));
                                  return true;
                                },
                                {.pool = {.timeOutError = std::chrono::milliseconds(300)}});
    FAIL("no TaskError");
  } catch (const flockmp::TaskError& e) {
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].index == 2);
    CHECK(e.failures()[0].kind == flockmp::FailureKind::timedOut);
    CHECK_THAT(e.what(), contains("row 2"));
    const auto& outcomes = e.outcomes<bool>();
    REQUIRE(outcomes.size() == 6);
    CHECK(*outcomes[5]);
  }
}

TEST_CASE("a failing block is reported with its row range", "[dataframe_async][errors]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = counting(1000);
  auto fn = [](const DataFrame& part) {
    if (part.row(0).get<std::int64_t>("i") == 500) throw std::invalid_argument("no 500");
    return part * 2;
  };
  try {
    (void)DataFrameAsync::apply(df, fn, {.chunksize = 10});
    FAIL("no TaskError");
  } catch (const flockmp::TaskError& e) {
    REQUIRE(e.failures().size() == 1);
    CHECK(e.failures()[0].index == 5); // the block
    CHECK(e.failures()[0].type == "std::invalid_argument");
    CHECK(e.failures()[0].message == "rows [500, 600): no 500");
    CHECK_THAT(e.what(), contains("rows [500, 600): no 500"));
    const auto& blocks = e.outcomes<DataFrame>();
    REQUIRE(blocks.size() == 10);
    CHECK(*blocks[9] == df.slice(900, 1000) * 2);
  }
  const auto blocks = DataFrameAsync::tryApplyBlocks(df, fn, {.chunksize = 10});
  CHECK(blocks.size() == 10);
  CHECK_FALSE(blocks[5].hasValue());
}

TEST_CASE("style and chunksize are checked", "[dataframe_async][errors]") {
  const DataFrame df = seedFrame();
  CHECK_THROWS_WITH(DataFrameAsync::apply(df, rowSum, {.style = Style::blockLike}),
                    contains("style is blockLike but the callable takes a const flockmp::Row&"));
  CHECK_THROWS_AS(
      DataFrameAsync::apply(df, [](const DataFrame& v) { return v; }, {.style = Style::rowLike}),
      flockmp::OptionError);
  CHECK_THROWS_WITH(DataFrameAsync::apply(df, rowSum, {.chunksize = 0}), contains("chunksize"));
  CHECK_THROWS_AS(DataFrameAsync::apply(df, rowSum, {.poolSize = 0}), flockmp::OptionError);
}

TEST_CASE("generic callables: apply is block-like, applyRows is row-like", "[dataframe_async]") {
  flockmp::test::DeadlockGuard guard;
  const DataFrame df = seedFrame();
  CHECK(DataFrameAsync::apply(df, [](const auto& v) { return v + v; }) == df + df);
  CHECK(DataFrameAsync::applyRows(df, [](const auto& r) {
          return r.template get<std::int64_t>("foo");
        }) == std::vector<std::int64_t>{5, 10, 15, 20});
  CHECK(DataFrameAsync::applyBlocks(df, [](const auto& v) { return v.rowCount(); },
                                    {.chunksize = 2}) == std::vector<std::size_t>{2, 2});
  // Timeouts and the other pool options go through `base`.
  CHECK(DataFrameAsync::apply(df, rowSum, {.pool = {.timeOutError = std::chrono::seconds(30)}}) ==
        std::vector<double>{6, 12, 18, 24});
}

TEST_CASE("block-like apply works on a std::vector of records and other tables",
          "[dataframe_async][table]") {
  flockmp::test::DeadlockGuard guard;
  const std::vector<Trade> in = trades(1000);
  const std::vector<Trade> taxed = DataFrameAsync::apply(in,
                                                         [](const std::vector<Trade>& part) {
                                                           std::vector<Trade> out = part;
                                                           for (auto& t : out) t.price *= 2;
                                                           return out;
                                                         },
                                                         {.chunksize = 16});
  REQUIRE(taxed.size() == 1000);
  for (std::size_t i = 0; i < taxed.size(); ++i) {
    CHECK(taxed[i].id == static_cast<std::int64_t>(i));
    CHECK(taxed[i].price == 2 * in[i].price);
    CHECK(taxed[i].symbol == in[i].symbol);
  }
  // A non-table result per chunk: partial sums.
  const auto sums = DataFrameAsync::apply(in,
                                          [](const std::vector<Trade>& part) {
                                            double s = 0;
                                            for (const auto& t : part) s += t.price;
                                            return s;
                                          },
                                          {.chunksize = 8});
  CHECK(sums.size() == 8);
  CHECK(std::accumulate(sums.begin(), sums.end(), 0.0) == 1000.0 * 1001.0 / 2);

  const Series series{{1, 2, 3, 4, 5}};
  const Series doubled = DataFrameAsync::apply(series,
                                               [](const Series& s) {
                                                 Series out = s;
                                                 for (double& x : out.data) x *= 2;
                                                 return out;
                                               },
                                               {.chunksize = 2});
  CHECK(doubled.data == std::vector<double>{2, 4, 6, 8, 10});

  const flockmp::Column col{1, 2, 3};
  const flockmp::Column col2 =
      DataFrameAsync::apply(col, [](const flockmp::Column& c) { return c * c; });
  CHECK(col2 == flockmp::Column{1, 4, 9});
}

// flockmp::DataFrame: construction, access, rows, slicing, arithmetic, printing, the codec, CSV.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <flock/codec.hpp>
#include <flock/dataframe.hpp>

#include "catch.hpp"
#include "support/test_util.hpp"

using flockmp::Column;
using flockmp::ColumnType;
using flockmp::CsvError;
using flockmp::DataFrame;
using flockmp::DataFrameError;
using flockmp::Row;
using flockmp::test::contains;

using flockmp::test::range;
using flockmp::test::TempDir;

namespace {

DataFrame seedFrame() { return DataFrame{{"foo", {5, 10, 15, 20}}, {"bar", {1, 2, 3, 4}}}; }

/// Every column type, with awkward strings.
DataFrame mixedFrame() {
  return DataFrame{{"id", {1, 2, 3}},
                   {"price", {0.1, 2.5, -3.0}},
                   {"name", {"plain", "comma, inside", "quote \"q\" and\nnewline"}},
                   {"ok", {true, false, true}}};
}


template <class F>
std::string errorOf(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

} // namespace

TEST_CASE("a DataFrame is built from {name, values} pairs, as in the seed", "[dataframe][seed]") {
  const DataFrame df = seedFrame();
  CHECK(df.rowCount() == 4);
  CHECK(df.columnCount() == 2);
  CHECK(df.shape() == std::pair<std::size_t, std::size_t>{4, 2});
  CHECK(df.columnNames() == std::vector<std::string>{"foo", "bar"});
  CHECK(df["foo"].type() == ColumnType::int64);
  CHECK(df["foo"].values<std::int64_t>() == std::vector<std::int64_t>{5, 10, 15, 20});
  CHECK(df["bar"] == Column{1, 2, 3, 4});
  CHECK(df.hasColumn("bar"));
  CHECK_FALSE(df.hasColumn("baz"));

  const DataFrame mixed = mixedFrame();
  CHECK(mixed["price"].type() == ColumnType::float64);
  CHECK(mixed["name"].type() == ColumnType::string);
  CHECK(mixed["ok"].type() == ColumnType::boolean);
  CHECK(mixed["ok"].values<bool>() == std::vector<bool>{true, false, true});

  const DataFrame fromVectors{{"a", std::vector<float>{0.5f, 1.5f}},
                              {"b", std::vector<unsigned>{7, 8}}};
  CHECK(fromVectors["a"].values<double>() == std::vector<double>{0.5, 1.5});
  CHECK(fromVectors["b"].values<std::int64_t>() == std::vector<std::int64_t>{7, 8});

  CHECK(DataFrame{}.shape() == std::pair<std::size_t, std::size_t>{0, 0});
  CHECK(DataFrame{}.empty());
}

TEST_CASE("columns of different lengths are rejected at construction", "[dataframe][errors]") {
  const std::string msg = errorOf([] { DataFrame df{{"foo", {1, 2, 3}}, {"bar", {1, 2}}}; });
  CHECK_THAT(msg, contains("\"bar\" has 2 rows"));
  CHECK_THAT(msg, contains("\"foo\" has 3"));
  CHECK_THROWS_AS((DataFrame{{"foo", {1, 2, 3}}, {"bar", {1, 2}}}), DataFrameError);
  CHECK_THROWS_AS((DataFrame{{"foo", {1}}, {"foo", {2}}}), flockmp::Error);
  CHECK_THAT(errorOf([] {
               DataFrame df{{"foo", {1}}, {"foo", {2}}};
             }),
             contains("duplicate column name \"foo\""));
}

TEST_CASE("columns are selected by name and a missing one is named", "[dataframe]") {
  DataFrame df = mixedFrame();
  const DataFrame two = df[{"name", "id"}];
  CHECK(two.columnNames() == std::vector<std::string>{"name", "id"});
  CHECK(two.rowCount() == 3);
  CHECK(two["id"] == df["id"].column());
  CHECK(df.select(std::vector<std::string>{"ok"}).columnNames() == std::vector<std::string>{"ok"});

  const std::string msg = errorOf([&] { (void)std::as_const(df)["nope"]; });
  CHECK_THAT(msg, contains("no column \"nope\""));
  CHECK_THAT(msg, contains("\"id\", \"price\", \"name\", \"ok\""));
  CHECK_THROWS_AS((df[{"id", "nope"}]), DataFrameError);
  CHECK_THROWS_AS(df["nope"].size(), DataFrameError);
}

TEST_CASE("assigning to df[name] adds or replaces a column of the right length", "[dataframe]") {
  DataFrame df = seedFrame();
  df["new-var"] = std::vector<double>{36, 144, 324, 576};
  CHECK(df.columnNames() == std::vector<std::string>{"foo", "bar", "new-var"});
  CHECK(df["new-var"].values<double>() == std::vector<double>{36, 144, 324, 576});

  df["bar"] = {"a", "b", "c", "d"}; // replaced, keeps its position
  CHECK(df.columnNames() == std::vector<std::string>{"foo", "bar", "new-var"});
  CHECK(df["bar"].type() == ColumnType::string);

  df["copy"] = df["foo"];
  CHECK(df["copy"] == df["foo"].column());
  df["sum"] = df["foo"] + df["copy"];
  CHECK(df["sum"].values<std::int64_t>() == std::vector<std::int64_t>{10, 20, 30, 40});

  const std::string msg = errorOf([&] { df["short"] = std::vector<int>{1, 2}; });
  CHECK_THAT(msg, contains("\"short\" has 2 rows"));
  CHECK_THAT(msg, contains("\"foo\" has 4"));
  CHECK_FALSE(df.hasColumn("short"));

  DataFrame empty;
  empty["first"] = std::vector<bool>{true, false};
  CHECK(empty.shape() == std::pair<std::size_t, std::size_t>{2, 1});
  empty.dropColumn("first");
  CHECK(empty.columnCount() == 0);
}

TEST_CASE("a Row gives typed values by column name and names what is wrong", "[dataframe][row]") {
  const DataFrame df = mixedFrame();
  const Row r = df.row(1);
  CHECK(r.index() == 1);
  CHECK(r.get<std::int64_t>("id") == 2);
  CHECK(r.get<double>("price") == 2.5);
  CHECK(r.get<std::string>("name") == "comma, inside");
  CHECK(r.get<bool>("ok") == false);
  CHECK(r.get<std::int64_t>(std::size_t{0}) == 2);

  const std::string missing = errorOf([&] { (void)r.get<double>("cost"); });
  CHECK_THAT(missing, contains("no column \"cost\""));
  CHECK_THAT(missing, contains("row 1"));
  CHECK_THAT(missing, contains("\"price\""));

  const std::string wrong = errorOf([&] { (void)r.get<std::string>("id"); });
  CHECK_THAT(wrong, contains("column \"id\" holds int64 values, not string"));
  CHECK(r.get<double>("id") == 2.0); // an int64 column reads as double, as in pandas
  CHECK_THROWS_AS(r.get<std::int64_t>("price"), DataFrameError); // but a double is not truncated
  CHECK_THROWS_AS(r.get<std::string>("ok"), DataFrameError);
  CHECK_THROWS_AS(r.get<bool>(std::size_t{9}), DataFrameError);
  CHECK_THROWS_AS(df.row(3), std::out_of_range);
}

TEST_CASE("slices, concatenation and equality keep row order", "[dataframe]") {
  const DataFrame df = mixedFrame();
  const DataFrame mid = df.slice(1, 3);
  CHECK(mid.rowCount() == 2);
  CHECK(mid["id"].values<std::int64_t>() == std::vector<std::int64_t>{2, 3});
  CHECK(df.slice(2, 2).rowCount() == 0);
  CHECK(df.slice(2, 2).columnNames() == df.columnNames());
  CHECK(df.head(2) == df.slice(0, 2));
  CHECK_THROWS_AS(df.slice(2, 4), std::out_of_range);
  CHECK_THROWS_AS(df.slice(2, 1), std::out_of_range);

  const std::vector<DataFrame> parts{df.slice(0, 1), df.slice(1, 1), df.slice(1, 3)};
  CHECK(DataFrame::concat(parts) == df);
  CHECK(DataFrame::concat(std::vector<DataFrame>{}) == DataFrame{});
  CHECK_FALSE(df == df.slice(0, 2));
  DataFrame other = df;
  other["id"] = {1, 2, 4};
  CHECK_FALSE(df == other);

  DataFrame a = seedFrame();
  CHECK_THAT(errorOf([&] { a.append(mixedFrame()); }), contains("different columns"));
  DataFrame typed{{"foo", {0.5}}, {"bar", {1}}};
  CHECK_THAT(errorOf([&] { a.append(typed); }),
             contains("column \"foo\" holds int64 values in one and double"));
}

TEST_CASE("elementwise arithmetic on frames and columns", "[dataframe][arithmetic]") {
  const DataFrame df = seedFrame();
  const DataFrame sq = df * df;
  CHECK(sq["foo"].values<std::int64_t>() == std::vector<std::int64_t>{25, 100, 225, 400});
  CHECK(sq.columnNames() == df.columnNames());

  const DataFrame div = df / 5; // true division, as in pandas
  CHECK(div["foo"].values<double>() == std::vector<double>{1, 2, 3, 4});
  CHECK((df + 1)["bar"].values<std::int64_t>() == std::vector<std::int64_t>{2, 3, 4, 5});
  CHECK((100 - df)["bar"].values<std::int64_t>() == std::vector<std::int64_t>{99, 98, 97, 96});
  CHECK((df * 0.5)["bar"].values<double>() == std::vector<double>{0.5, 1, 1.5, 2});
  CHECK((df["foo"] - df["bar"]).values<std::int64_t>() == std::vector<std::int64_t>{4, 8, 12, 16});

  const DataFrame squares = flockmp::map(df, [](auto v) { return v * v; });
  CHECK(squares == sq);
  CHECK(flockmp::map(df["foo"], [](std::int64_t v) { return v / 2.0; }).values<double>() ==
        std::vector<double>{2.5, 5, 7.5, 10});

  const DataFrame big{{"x", {std::numeric_limits<std::int64_t>::max()}}};
  CHECK_THAT(errorOf([&] { (void)(big * 2); }), contains("int64 overflow"));
  CHECK_THAT(errorOf([&] { (void)(mixedFrame() * 2); }), contains("column \"name\""));
  CHECK_THAT(errorOf([&] { (void)flockmp::map(mixedFrame(), [](auto v) { return v; }); }),
             contains("column \"name\" holds string values"));
  CHECK_THAT(errorOf([&] { (void)(df * mixedFrame()); }), contains("different columns"));
}

TEST_CASE("a DataFrame prints as an aligned table", "[dataframe][print]") {
  const DataFrame df = seedFrame();
  CHECK(fmt::format("{}", df) == "   foo  bar\n"
                                 "0    5    1\n"
                                 "1   10    2\n"
                                 "2   15    3\n"
                                 "3   20    4");
  CHECK(df.toString() == fmt::format("{}", df));

  std::vector<std::int64_t> foo(1000), bar(1000);
  for (std::int64_t i = 0; i < 1000; ++i) foo[i] = i, bar[i] = 2000 + i;
  const DataFrame big{{"foo", foo}, {"bar", bar}};
  CHECK(fmt::format("{:4}", big) == "     foo   bar\n"
                                    "0      0  2000\n"
                                    "1      1  2001\n"
                                    "...  ...   ...\n"
                                    "998  998  2998\n"
                                    "999  999  2999\n"
                                    "\n"
                                    "[1000 rows x 2 columns]");
  CHECK_THAT(big.toString(), contains("[1000 rows x 2 columns]"));

  const DataFrame mixed = mixedFrame();
  CHECK(mixed.toString() == "   id  price                    name     ok\n"
                            "0   1    0.1                   plain   true\n"
                            "1   2    2.5           comma, inside  false\n"
                            "2   3   -3.0  quote \"q\" and\\nnewline   true");
  CHECK(DataFrame{}.toString() == "Empty DataFrame");
  CHECK(mixed.slice(0, 0).toString() == "Empty DataFrame\nColumns: [id, price, name, ok]");
  CHECK(fmt::format("{}", mixed["name"]) == R"(["plain", "comma, inside", "quote "q" and
newline"])");
  std::ostringstream os;
  os << df["foo"];
  CHECK(os.str() == "[5, 10, 15, 20]");
}

TEST_CASE("the codec carries a DataFrame and rejects a corrupt one", "[dataframe][codec]") {
  static_assert(flockmp::Serializable<DataFrame>);
  static_assert(flockmp::Serializable<Column>);
  const DataFrame df = mixedFrame();
  const auto bytes = flockmp::encode(df);
  CHECK(flockmp::decode<DataFrame>(bytes) == df);
  CHECK(flockmp::decode<DataFrame>(flockmp::encode(DataFrame{})) == DataFrame{});
  CHECK(flockmp::decode<DataFrame>(flockmp::encode(df.slice(0, 0))) == df.slice(0, 0));
  const std::vector<DataFrame> frames{df, seedFrame()};
  CHECK(flockmp::decode<std::vector<DataFrame>>(flockmp::encode(frames)) == frames);

  auto truncated = bytes;
  truncated.resize(bytes.size() / 2);
  CHECK_THROWS_AS(flockmp::decode<DataFrame>(truncated), flockmp::CodecError);

  // Two columns of different lengths, made by encoding the parts by hand.
  const std::vector<std::string> names{"a", "b"};
  const std::vector<Column> cols{Column{1, 2}, Column{1}};
  std::vector<std::byte> bad;
  flockmp::ByteWriter w{bad};
  flockmp::BinaryCodec::encode(w, names);
  flockmp::BinaryCodec::encode(w, cols);
  CHECK_THROWS_WITH(flockmp::decode<DataFrame>(bad), contains("columns of different lengths"));
}

TEST_CASE("CSV round-trips every column type, quotes, commas and newlines", "[dataframe][csv]") {
  const DataFrame df = mixedFrame();
  const std::string csv = df.toCsv();
  CHECK(csv == "id,price,name,ok\n"
               "1,0.1,plain,true\n"
               "2,2.5,\"comma, inside\",false\n"
               "3,-3.0,\"quote \"\"q\"\" and\nnewline\",true\n");
  CHECK(DataFrame::parseCsv(csv) == df);

  SECTION("through a file") {
    TempDir dir;
    const auto path = dir.path / "frame.csv";
    df.writeCsv(path);
    CHECK(DataFrame::readCsv(path) == df);
    std::ostringstream os;
    df.writeCsv(os);
    std::istringstream is(os.str());
    CHECK(DataFrame::readCsv(is) == df);
    const std::string msg = errorOf([&] { (void)DataFrame::readCsv(dir.path / "missing.csv"); });
    CHECK_THAT(msg, contains("missing.csv"));
  }
  SECTION("doubles read back exactly, and as doubles") {
    const DataFrame d{{"x", {1.0, 0.1 + 0.2, 1e300, -0.0, 1e-310}}};
    const DataFrame back = DataFrame::parseCsv(d.toCsv());
    CHECK(back["x"].type() == ColumnType::float64);
    CHECK(back == d);
    const DataFrame special{
        {"x", {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}}};
    CHECK(DataFrame::parseCsv(special.toCsv()) == special);
    const DataFrame nan = DataFrame::parseCsv(DataFrame{{"x", {std::nan("")}}}.toCsv());
    CHECK(std::isnan(nan["x"].values<double>()[0]));
  }
  SECTION("CRLF line ends, blank lines, other delimiters, no header") {
    CHECK(DataFrame::parseCsv("a,b\r\n1,x\r\n\r\n2,\"y\r\nz\"\r\n") ==
          DataFrame{{"a", {1, 2}}, {"b", {"x", "y\r\nz"}}});
    CHECK(DataFrame::parseCsv("a;b\n1;2,5\n", {.delimiter = ';'}) ==
          DataFrame{{"a", {1}}, {"b", {"2,5"}}});
    CHECK(DataFrame::parseCsv("1,2\n3,4\n", {.header = false}) ==
          DataFrame{{"0", {1, 3}}, {"1", {2, 4}}});
    CHECK(DataFrame::parseCsv("a,b\n1,2") == DataFrame{{"a", {1}}, {"b", {2}}}); // no final newline
    const DataFrame semi{{"a b", {"x;y"}}, {"c", {1.5}}};
    CHECK(DataFrame::parseCsv(semi.toCsv({.delimiter = ';'}), {.delimiter = ';'}) == semi);
  }
  SECTION("one column with empty strings, empty frames") {
    const DataFrame one{{"s", {"", "a", ""}}};
    CHECK(DataFrame::parseCsv(one.toCsv()) == one);
    CHECK(DataFrame::parseCsv("") == DataFrame{});
    CHECK(DataFrame{}.toCsv().empty());
    const DataFrame header = DataFrame::parseCsv("a,b\n");
    CHECK(header.shape() == std::pair<std::size_t, std::size_t>{0, 2});
    const DataFrame typedEmpty{{"a", std::vector<std::int64_t>{}}, {"b", std::vector<double>{}}};
    CHECK(DataFrame::parseCsv(typedEmpty.toCsv(),
                              {.types = {{"a", ColumnType::int64}, {"b", ColumnType::float64}}}) ==
          typedEmpty);
  }
}

TEST_CASE("CSV types are inferred, or given", "[dataframe][csv]") {
  const DataFrame df = DataFrame::parseCsv("i,d,e,b,s,z\n"
                                           "1,1.5,,TRUE,007x,\n"
                                           "-2,2,3,false,x,\n");
  CHECK(df["i"].type() == ColumnType::int64);
  CHECK(df["d"].type() == ColumnType::float64);
  CHECK(df["e"].type() == ColumnType::float64); // an empty cell among numbers is NaN
  CHECK(std::isnan(df["e"].values<double>()[0]));
  CHECK(df["b"].values<bool>() == std::vector<bool>{true, false});
  CHECK(df["s"].type() == ColumnType::string);
  CHECK(df["z"].values<std::string>() == std::vector<std::string>{"", ""});

  const DataFrame typed = DataFrame::parseCsv("code,flag,n\n001,1,7\n002,0,8\n",
                                              {.types = {{"code", ColumnType::string},
                                                         {"flag", ColumnType::boolean},
                                                         {"n", ColumnType::float64}}});
  CHECK(typed["code"].values<std::string>() == std::vector<std::string>{"001", "002"});
  CHECK(typed["flag"].values<bool>() == std::vector<bool>{true, false});
  CHECK(typed["n"].values<double>() == std::vector<double>{7, 8});
}

TEST_CASE("bad CSV is reported with its line and column", "[dataframe][csv][errors]") {
  auto fault = [](std::string_view text, const flockmp::CsvOptions& o = {}) {
    try {
      (void)DataFrame::parseCsv(text, o);
    } catch (const CsvError& e) {
      return std::tuple<std::size_t, std::size_t, std::string>{e.line(), e.column(), e.what()};
    }
    return std::tuple<std::size_t, std::size_t, std::string>{0, 0, "(no error)"};
  };
  SECTION("a record with too few or too many fields") {
    auto [line, column, msg] = fault("a,b,c\n1,2,3\n4,5\n");
    CHECK(line == 3);
    CHECK(column == 3);
    CHECK_THAT(msg,
               contains("CSV line 3, column 3: 2 fields, expected 3 (column 3 \"c\" is missing)"));
    auto [line2, column2, msg2] = fault("a,b\n1,2\n\n3,4,5\n");
    CHECK(line2 == 4);
    CHECK(column2 == 3);
    CHECK_THAT(msg2, contains("3 fields, expected 2"));
  }
  SECTION("a quoted field never closed") {
    auto [line, column, msg] = fault("a,b\n1,\"open\n2,3\n");
    CHECK(line == 2);
    CHECK(column == 2);
    CHECK_THAT(msg, contains("quoted field not closed"));
  }
  SECTION("a quote inside an unquoted field, text after a closing quote") {
    auto [line, column, msg] = fault("a,b\n1,2\n3,4\"5\n");
    CHECK(line == 3);
    CHECK(column == 2);
    CHECK_THAT(msg, contains("quote inside an unquoted field"));
    auto [line2, column2, msg2] = fault("a,b\n\"x\nx\"y,2\n");
    CHECK(line2 == 3);
    CHECK(column2 == 1);
    CHECK_THAT(msg2, contains("unexpected 'y' after a closing quote"));
  }
  SECTION("a value that is not of the column's given type") {
    auto [line, column, msg] = fault("a,b\n1,2\n3,x\n", {.types = {{"b", ColumnType::int64}}});
    CHECK(line == 3);
    CHECK(column == 2);
    CHECK_THAT(msg, contains("CSV line 3, column 2 (\"b\"): cannot read \"x\" as int64"));
    auto [line2, column2, msg2] = fault("a\n1\n", {.types = {{"zz", ColumnType::int64}}});
    CHECK(line2 == 1);
    CHECK_THAT(msg2, contains("\"zz\", which is not in the CSV"));
  }
  SECTION("duplicate header names") {
    auto [line, column, msg] = fault("a,b,a\n1,2,3\n");
    CHECK(line == 1);
    CHECK(column == 3);
    CHECK_THAT(msg, contains("duplicate column name \"a\""));
  }
  SECTION("a file's name is in the message") {
    TempDir dir;
    const auto path = dir.path / "bad.csv";
    { std::ofstream(path) << "a,b\n1\n"; }
    CHECK_THROWS_WITH(DataFrame::readCsv(path), contains("bad.csv: CSV line 2, column 2"));
  }
}

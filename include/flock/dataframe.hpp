// flock: DataFrame, a small columnar table (named, typed columns of equal length) for
// DataFrameAsync. It reads and writes CSV, prints like pandas, does elementwise arithmetic and is
// carried by the codec.
//
//   flockmp::DataFrame df{{"foo", {5, 10, 15, 20}}, {"bar", {1, 2, 3, 4}}};
//   df["sum"] = df["foo"] + df["bar"];                 // a new int64 column
//   double x = df.row(2).get<double>("ratio");          // typed access by column name
//   fmt::print("{}\n", df);                             // aligned table, head and tail rows
//   df.writeCsv("out.csv"); auto back = flockmp::DataFrame::readCsv("out.csv");
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <optional>
#include <ostream>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "codec.hpp"
#include "error.hpp"

namespace flockmp {

/// A DataFrame misused: a missing column, a value of another type than asked, columns of
/// different lengths, frames that cannot be concatenated, arithmetic on a non-numeric column.
class DataFrameError : public Error {
public:
  using Error::Error;
};

/// CSV that cannot be read. `line()` and `column()` (both 1-based) locate the fault; they are 0
/// when it has no place in the text (a file that cannot be opened).
class CsvError : public Error {
public:
  CsvError(const std::string& message, std::size_t line, std::size_t column)
      : Error(message), line_(line), column_(column) {}
  [[nodiscard]] std::size_t line() const noexcept { return line_; }
  [[nodiscard]] std::size_t column() const noexcept { return column_; }

private:
  std::size_t line_;
  std::size_t column_;
};

/// The type of a column's values.
enum class ColumnType {
  int64,   ///< std::int64_t
  float64, ///< double
  string,  ///< std::string
  boolean, ///< bool
};

/// The C++ name of a column type: `"int64"`, `"double"`, `"string"`, `"bool"`.
constexpr std::string_view toString(ColumnType t) noexcept {
  switch (t) {
  case ColumnType::int64: return "int64";
  case ColumnType::float64: return "double";
  case ColumnType::string: return "string";
  case ColumnType::boolean: return "bool";
  }
  return "unknown";
}

/// The element types a column stores.
template <class T>
concept ColumnValue = std::same_as<T, std::int64_t> || std::same_as<T, double> ||
    std::same_as<T, std::string> || std::same_as<T, bool>;

/// Element types a column can be built from: integers become int64, floating point becomes
/// double, bool stays bool, anything convertible to std::string becomes a string.
template <class T>
concept ColumnConvertible = std::is_arithmetic_v<T> || std::convertible_to<T, std::string>;

namespace detail {

template <ColumnValue T>
constexpr ColumnType columnTypeOf() {
  if constexpr (std::same_as<T, std::int64_t>)
    return ColumnType::int64;
  else if constexpr (std::same_as<T, double>)
    return ColumnType::float64;
  else if constexpr (std::same_as<T, std::string>)
    return ColumnType::string;
  else
    return ColumnType::boolean;
}

/// The stored element type for a ColumnConvertible T.
template <class T>
using StoredAs = std::conditional_t<
    std::same_as<T, bool>, bool,
    std::conditional_t<std::is_integral_v<T>, std::int64_t,
                       std::conditional_t<std::is_floating_point_v<T>, double, std::string>>>;

/// `1`, `0.5`, `nan`, `-inf`, `3.0` (an integral value keeps a `.0`, so it reads back as double).
/// The names separated by ", ".
inline std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

inline std::string doubleText(double v, bool shortest) {
  std::string s = shortest ? fmt::format("{}", v) : fmt::format("{:.6g}", v);
  if (std::all_of(s.begin(), s.end(), [](char c) { return c == '-' || (c >= '0' && c <= '9'); }))
    s += ".0";
  return s;
}

} // namespace detail

/// One column: a std::vector of int64, double, string or bool values.
///
///   flockmp::Column a{1, 2, 3};                        // int64
///   flockmp::Column b = std::vector<float>{0.5f, 1};   // converted to double
///   const std::vector<std::int64_t>& v = a.values<std::int64_t>();
class Column {
public:
  using Storage = std::variant<std::vector<std::int64_t>, std::vector<double>,
                               std::vector<std::string>, std::vector<bool>>;

  /// An empty int64 column.
  Column() = default;
  Column(std::initializer_list<int> v) : data_(std::vector<std::int64_t>(v.begin(), v.end())) {}
  Column(std::initializer_list<std::int64_t> v) : data_(std::vector<std::int64_t>(v)) {}
  Column(std::initializer_list<double> v) : data_(std::vector<double>(v)) {}
  Column(std::initializer_list<bool> v) : data_(std::vector<bool>(v)) {}
  Column(std::initializer_list<const char*> v)
      : data_(std::vector<std::string>(v.begin(), v.end())) {}
  Column(std::initializer_list<std::string> v) : data_(std::vector<std::string>(v)) {}

  /// From a vector of any ColumnConvertible type (a result of DataFrameAsync::apply, say). A
  /// vector of a stored type is moved in; unsigned values above INT64_MAX throw DataFrameError.
  template <ColumnConvertible T>
  Column(std::vector<T> v) { // NOLINT: implicit, so that `df["x"] = vector` works
    using S = detail::StoredAs<T>;
    if constexpr (std::same_as<T, S>) {
      data_ = std::move(v);
    } else {
      std::vector<S> out;
      out.reserve(v.size());
      for (auto& x : v) {
        if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t))
          if (x > static_cast<T>(std::numeric_limits<std::int64_t>::max()))
            throw DataFrameError(fmt::format("flock: value {} does not fit in an int64 column", x));
        if constexpr (std::same_as<S, std::string>)
          out.emplace_back(std::move(x));
        else
          out.push_back(static_cast<S>(x));
      }
      data_ = std::move(out);
    }
  }

  [[nodiscard]] ColumnType type() const noexcept { return static_cast<ColumnType>(data_.index()); }
  [[nodiscard]] std::size_t size() const noexcept {
    return std::visit([](const auto& v) { return v.size(); }, data_);
  }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  /// Whether the column stores T values.
  template <ColumnValue T>
  [[nodiscard]] bool holds() const noexcept {
    return std::holds_alternative<std::vector<T>>(data_);
  }

  /// The values, as stored. Throws DataFrameError when the column stores another type.
  template <ColumnValue T>
  [[nodiscard]] const std::vector<T>& values() const {
    if (const auto* v = std::get_if<std::vector<T>>(&data_)) return *v;
    throw DataFrameError(fmt::format("flock: the column holds {} values, not {}", toString(type()),
                                     toString(detail::columnTypeOf<T>())));
  }
  template <ColumnValue T>
  [[nodiscard]] std::vector<T>& values() {
    return const_cast<std::vector<T>&>(std::as_const(*this).values<T>());
  }

  /// The stored vector, to std::visit.
  [[nodiscard]] const Storage& storage() const noexcept { return data_; }

  /// Rows [begin, end) as a new column. Throws std::out_of_range unless begin <= end <= size().
  [[nodiscard]] Column slice(std::size_t begin, std::size_t end) const {
    if (begin > end || end > size())
      throw std::out_of_range(
          fmt::format("flock: slice [{}, {}) of a column of {} rows", begin, end, size()));
    Column out;
    std::visit(
        [&](const auto& v) {
          using V = std::remove_cvref_t<decltype(v)>;
          out.data_ = V(v.begin() + static_cast<std::ptrdiff_t>(begin),
                        v.begin() + static_cast<std::ptrdiff_t>(end));
        },
        data_);
    return out;
  }

  /// Appends the values of `other`, which must store the same type (else DataFrameError).
  void append(const Column& other) {
    if (other.type() != type()) {
      if (empty()) {
        *this = other;
        return;
      }
      throw DataFrameError(fmt::format("flock: cannot append {} values to a {} column",
                                       toString(other.type()), toString(type())));
    }
    std::visit(
        [&](auto& v) {
          using V = std::remove_cvref_t<decltype(v)>;
          const auto& o = std::get<V>(other.data_);
          v.insert(v.end(), o.begin(), o.end());
        },
        data_);
  }

  /// Value `i` as text: `5`, `2.5`, `3.0`, `nan`, `true`, or the string itself. `shortest`
  /// doubles read back exactly; otherwise they have 6 significant digits.
  [[nodiscard]] std::string text(std::size_t i, bool shortest = true) const {
    return std::visit(
        [&](const auto& v) -> std::string {
          using T = typename std::remove_cvref_t<decltype(v)>::value_type;
          if constexpr (std::same_as<T, std::string>)
            return v[i];
          else if constexpr (std::same_as<T, bool>)
            return v[i] ? "true" : "false";
          else if constexpr (std::same_as<T, double>)
            return detail::doubleText(v[i], shortest);
          else
            return fmt::format("{}", v[i]);
        },
        data_);
  }

  friend bool operator==(const Column&, const Column&) = default;

private:
  friend struct flockmp::CodecAccess;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(data_);
  }

  Storage data_;
};

/// A named column, as given to the DataFrame constructor: `{"foo", {5, 10, 15, 20}}`.
struct NamedColumn {
  std::string name;
  Column values;
};

class DataFrame;
class ColumnRef;

/// One row of a DataFrame, as row-like apply passes it: typed lookup by column name.
///
///   [](const flockmp::Row& x) { return x.get<std::int64_t>("foo") * x.get<double>("w"); }
///
/// A Row refers to its frame (it is a view): use it while the frame lives.
class Row {
public:
  Row(const DataFrame& frame, std::size_t index) noexcept : df_(&frame), i_(index) {}

  /// The value of column `name` in this row. T is the column's type exactly (std::int64_t,
  /// double, std::string, bool): a missing column or another type throws DataFrameError naming
  /// the column, the types and the row. Strings are returned by const reference.
  template <class T>
  [[nodiscard]] std::conditional_t<std::same_as<T, std::string>, const std::string&, T>
  get(std::string_view name) const;

  /// The value of the column at position `column` (0-based).
  template <class T>
  [[nodiscard]] std::conditional_t<std::same_as<T, std::string>, const std::string&, T>
  get(std::size_t column) const;

  /// The row's position in its frame.
  [[nodiscard]] std::size_t index() const noexcept { return i_; }
  [[nodiscard]] const DataFrame& frame() const noexcept { return *df_; }

private:
  template <class T>
  static constexpr void checkType() {
    static_assert(ColumnValue<T>, "flockmp::Row::get<T>: T must be std::int64_t, double, "
                                  "std::string or bool (the types a column stores)");
  }
  template <class T>
  std::conditional_t<std::same_as<T, std::string>, const std::string&, T>
  at(const Column& c, std::string_view name) const;

  const DataFrame* df_;
  std::size_t i_;
};

/// How DataFrame reads and writes CSV.
struct CsvOptions {
  /// Field separator.
  char delimiter = ',';
  /// Whether the first record names the columns. Without one, columns are named "0", "1"...
  bool header = true;
  /// Column types by name; other columns are inferred: int64 when every value is an integer,
  /// double when every value is a number or empty (empty reads as NaN), bool when every value is
  /// `true` or `false` (any case), string otherwise (and for a frame with no rows).
  std::vector<std::pair<std::string, ColumnType>> types{};
};

/// Named, typed columns of equal length, in insertion order.
///
///   flockmp::DataFrame df{{"foo", {5, 10, 15, 20}}, {"bar", {1, 2, 3, 4}}};
///   df["baz"] = std::vector<double>{0.5, 1, 1.5, 2};   // add or replace a column
///   flockmp::DataFrame two = df[{"foo", "bar"}];       // select columns
///   const flockmp::Column& foo = std::as_const(df)["foo"];
class DataFrame {
public:
  DataFrame() = default;

  /// Throws DataFrameError when two columns share a name or have different lengths.
  DataFrame(std::initializer_list<NamedColumn> columns) {
    for (const auto& c : columns) addColumn(c.name, c.values);
  }
  explicit DataFrame(std::vector<NamedColumn> columns) {
    for (auto& c : columns) addColumn(std::move(c.name), std::move(c.values));
  }

  [[nodiscard]] std::size_t rowCount() const noexcept {
    return columns_.empty() ? 0 : columns_.front().size();
  }
  [[nodiscard]] std::size_t columnCount() const noexcept { return columns_.size(); }
  /// (rows, columns), like pandas' `shape`.
  [[nodiscard]] std::pair<std::size_t, std::size_t> shape() const noexcept {
    return {rowCount(), columnCount()};
  }
  /// No rows (a frame may have columns and no rows).
  [[nodiscard]] bool empty() const noexcept { return rowCount() == 0; }
  [[nodiscard]] const std::vector<std::string>& columnNames() const noexcept { return names_; }

  /// Position of the column called `name`, if there is one.
  [[nodiscard]] std::optional<std::size_t> columnIndex(std::string_view name) const noexcept {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) return i;
    return std::nullopt;
  }
  [[nodiscard]] bool hasColumn(std::string_view name) const noexcept {
    return columnIndex(name).has_value();
  }

  /// The column called `name`; throws DataFrameError naming it and the columns there are.
  [[nodiscard]] const Column& column(std::string_view name) const {
    if (auto i = columnIndex(name)) return columns_[*i];
    throw DataFrameError(missingColumn(name));
  }
  /// The column at position `i`; throws std::out_of_range.
  [[nodiscard]] const Column& column(std::size_t i) const {
    if (i >= columns_.size())
      throw std::out_of_range(
          fmt::format("flock: column {} of a frame with {} columns", i, columns_.size()));
    return columns_[i];
  }

  [[nodiscard]] const Column& operator[](std::string_view name) const { return column(name); }
  /// A reference to the column called `name`, which need not exist yet: assigning to it adds or
  /// replaces the column (`df["new"] = values`); reading a missing one throws DataFrameError.
  [[nodiscard]] ColumnRef operator[](std::string_view name);
  /// The named columns, in the order given, as a new frame.
  [[nodiscard]] DataFrame operator[](std::initializer_list<std::string_view> names) const {
    return select(std::span<const std::string_view>(names.begin(), names.size()));
  }
  [[nodiscard]] DataFrame operator[](std::initializer_list<std::string_view> names) {
    return std::as_const(*this)[names];
  }
  template <class S>
  requires std::convertible_to<const S&, std::string_view>
  [[nodiscard]] DataFrame select(std::span<const S> names) const {
    DataFrame out;
    for (const auto& n : names) out.addColumn(std::string(std::string_view(n)), column(n));
    return out;
  }
  [[nodiscard]] DataFrame select(const std::vector<std::string>& names) const {
    return select(std::span<const std::string>(names));
  }

  /// Adds the column, or replaces the one of that name. Its length must be rowCount() unless the
  /// frame has no columns (DataFrameError otherwise, naming both columns and lengths).
  void setColumn(std::string name, Column values) {
    if (auto i = columnIndex(name)) {
      if (columns_.size() > 1) checkLength(name, values, *i == 0 ? 1 : 0);
      columns_[*i] = std::move(values);
    } else {
      addColumn(std::move(name), std::move(values));
    }
  }

  /// Removes the column called `name` (DataFrameError when there is none).
  void dropColumn(std::string_view name) {
    auto i = columnIndex(name);
    if (!i) throw DataFrameError(missingColumn(name));
    names_.erase(names_.begin() + static_cast<std::ptrdiff_t>(*i));
    columns_.erase(columns_.begin() + static_cast<std::ptrdiff_t>(*i));
  }

  /// Row `i` (std::out_of_range past the end).
  [[nodiscard]] Row row(std::size_t i) const {
    if (i >= rowCount())
      throw std::out_of_range(fmt::format("flock: row {} of a frame with {} rows", i, rowCount()));
    return Row(*this, i);
  }

  /// Rows [begin, end) as a new frame with the same columns. Throws std::out_of_range unless
  /// begin <= end <= rowCount().
  [[nodiscard]] DataFrame slice(std::size_t begin, std::size_t end) const {
    if (begin > end || end > rowCount())
      throw std::out_of_range(
          fmt::format("flock: slice [{}, {}) of a frame with {} rows", begin, end, rowCount()));
    DataFrame out;
    out.names_ = names_;
    out.columns_.reserve(columns_.size());
    for (const auto& c : columns_) out.columns_.push_back(c.slice(begin, end));
    return out;
  }
  /// The first n rows (all of them when there are fewer).
  [[nodiscard]] DataFrame head(std::size_t n = 5) const {
    return slice(0, std::min(n, rowCount()));
  }

  /// Appends the rows of `other` below these. Both frames must have the same column names in the
  /// same order and the same column types (DataFrameError otherwise); a frame without columns
  /// takes the other's.
  void append(const DataFrame& other) {
    if (other.columns_.empty()) return;
    if (columns_.empty()) {
      *this = other;
      return;
    }
    checkAppendable(other);
    for (std::size_t i = 0; i < columns_.size(); ++i) columns_[i].append(other.columns_[i]);
  }

  /// The frames one below the other, in order.
  [[nodiscard]] static DataFrame concat(std::span<const DataFrame> frames) {
    DataFrame out;
    for (const auto& f : frames) out.append(f);
    return out;
  }

  /// Same column names, types and values, in the same order.
  friend bool operator==(const DataFrame&, const DataFrame&) = default;

  /// An aligned table like pandas prints: the column names, then the rows with their index. A
  /// frame with more than `maxRows` rows shows its first and last rows around a `...` line and
  /// ends with `[R rows x C columns]`. Doubles show 6 significant digits; strings longer than
  /// 50 characters are cut, and newlines in them show as `\n`.
  [[nodiscard]] std::string toString(std::size_t maxRows = 10) const;

  /// Parses CSV text (RFC 4180: fields with the delimiter, quotes or newlines are quoted, a quote
  /// in a quoted field is doubled; `\n` or `\r\n` ends a record; blank lines are skipped).
  /// Throws CsvError naming the line and column of a fault.
  [[nodiscard]] static DataFrame parseCsv(std::string_view text, const CsvOptions& options = {}) {
    return parseCsvImpl(text, options, "");
  }
  /// Reads a CSV file (see parseCsv); the message of a CsvError also names the file.
  [[nodiscard]] static DataFrame readCsv(const std::filesystem::path& path,
                                         const CsvOptions& options = {}) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw CsvError(fmt::format("flock: cannot open CSV file {}", path.string()), 0, 0);
    std::ostringstream ss;
    ss << in.rdbuf();
    return parseCsvImpl(ss.str(), options, path.string());
  }
  [[nodiscard]] static DataFrame readCsv(std::istream& in, const CsvOptions& options = {}) {
    std::ostringstream ss;
    ss << in.rdbuf();
    return parseCsvImpl(ss.str(), options, "");
  }

  /// The frame as CSV: a header row (when options.header), then one record per row. Doubles
  /// are written so that they read back exactly and as doubles (`3.0`, `nan`, `inf`).
  [[nodiscard]] std::string toCsv(const CsvOptions& options = {}) const;
  void writeCsv(std::ostream& out, const CsvOptions& options = {}) const { out << toCsv(options); }
  /// Writes a CSV file; throws flockmp::Error when it cannot be written.
  void writeCsv(const std::filesystem::path& path, const CsvOptions& options = {}) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (out) out << toCsv(options);
    out.flush();
    if (!out) throw Error(fmt::format("flock: cannot write CSV file {}", path.string()));
  }

private:
  friend struct flockmp::CodecAccess;
  friend class Row;

  template <class Ar>
  void serialize(Ar& ar) {
    ar(names_, columns_);
    if constexpr (Ar::isDecoding) {
      if (names_.size() != columns_.size())
        throw CodecError("flock: corrupt DataFrame: column names and columns differ in number");
      for (std::size_t i = 1; i < columns_.size(); ++i)
        if (columns_[i].size() != columns_[0].size())
          throw CodecError("flock: corrupt DataFrame: columns of different lengths");
    }
  }

  std::string missingColumn(std::string_view name) const {
    return fmt::format("flock: no column \"{}\" (columns: {})", name, quotedNames());
  }
  std::string quotedNames() const {
    std::string s;
    for (const auto& n : names_) s += fmt::format("{}\"{}\"", s.empty() ? "" : ", ", n);
    return s.empty() ? "none" : s;
  }

  void checkLength(std::string_view name, const Column& values, std::size_t other) const {
    if (values.size() != columns_[other].size())
      throw DataFrameError(
          fmt::format("flock: column \"{}\" has {} rows but column \"{}\" has {}: all columns "
                      "of a DataFrame have the same length",
                      name, values.size(), names_[other], columns_[other].size()));
  }

  void addColumn(std::string name, Column values) {
    if (hasColumn(name))
      throw DataFrameError(fmt::format("flock: duplicate column name \"{}\"", name));
    if (!columns_.empty()) checkLength(name, values, 0);
    names_.push_back(std::move(name));
    columns_.push_back(std::move(values));
  }

  void checkAppendable(const DataFrame& other) const {
    if (other.names_ != names_)
      throw DataFrameError(
          fmt::format("flock: cannot concatenate frames with different columns ({} and {})",
                      quotedNames(), other.quotedNames()));
    for (std::size_t i = 0; i < columns_.size(); ++i)
      if (columns_[i].type() != other.columns_[i].type() && !columns_[i].empty() &&
          !other.columns_[i].empty())
        throw DataFrameError(fmt::format(
            "flock: cannot concatenate frames: column \"{}\" holds {} values in one and {} in "
            "the other",
            names_[i], flockmp::toString(columns_[i].type()),
            flockmp::toString(other.columns_[i].type())));
  }

  static DataFrame parseCsvImpl(std::string_view text, const CsvOptions& options,
                                const std::string& source);

  std::vector<std::string> names_;
  std::vector<Column> columns_;
};

/// What `df["name"]` gives on a non-const frame: assign to it to add or replace the column,
/// or read it like a const Column&.
class ColumnRef {
public:
  ColumnRef(DataFrame& frame, std::string_view name) : df_(&frame), name_(name) {}

  /// Adds or replaces the column (see DataFrame::setColumn).
  ColumnRef& operator=(Column values) {
    df_->setColumn(name_, std::move(values));
    return *this;
  }
  /// Copies the other column's values (`df["b"] = df["a"]`).
  ColumnRef& operator=(const ColumnRef& other) { return *this = Column(other.column()); }
  ColumnRef(const ColumnRef&) = default;

  /// The column; throws DataFrameError when it does not exist.
  [[nodiscard]] const Column& column() const { return std::as_const(*df_).column(name_); }
  operator const Column&() const { return column(); } // NOLINT: reads like the column

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] ColumnType type() const { return column().type(); }
  [[nodiscard]] std::size_t size() const { return column().size(); }
  template <ColumnValue T>
  [[nodiscard]] const std::vector<T>& values() const {
    return column().values<T>();
  }
  [[nodiscard]] std::string text(std::size_t i, bool shortest = true) const {
    return column().text(i, shortest);
  }

  friend bool operator==(const ColumnRef& a, const Column& b) { return a.column() == b; }

private:
  DataFrame* df_;
  std::string name_;
};

inline ColumnRef DataFrame::operator[](std::string_view name) { return ColumnRef(*this, name); }

template <class T>
std::conditional_t<std::same_as<T, std::string>, const std::string&, T>
Row::at(const Column& c, std::string_view name) const {
  if (const auto* v = std::get_if<std::vector<T>>(&c.storage())) return (*v)[i_];
  if constexpr (std::is_same_v<T, double>) {
    // An int64 column reads as double, as in pandas (exact up to 2^53).
    if (const auto* v = std::get_if<std::vector<std::int64_t>>(&c.storage())) return static_cast<double>((*v)[i_]);
  }
  throw DataFrameError(fmt::format("flock: column \"{}\" holds {} values, not {} (row {})", name,
                                   toString(c.type()), toString(detail::columnTypeOf<T>()), i_));
}

template <class T>
std::conditional_t<std::same_as<T, std::string>, const std::string&, T>
Row::get(std::string_view name) const {
  checkType<T>();
  if constexpr (ColumnValue<T>) {
    auto i = df_->columnIndex(name);
    if (!i)
      throw DataFrameError(fmt::format("flock: no column \"{}\" in the row (row {}; columns: {})",
                                       name, i_, df_->quotedNames()));
    return at<T>(df_->columns_[*i], name);
  }
}

template <class T>
std::conditional_t<std::same_as<T, std::string>, const std::string&, T>
Row::get(std::size_t column) const {
  checkType<T>();
  if constexpr (ColumnValue<T>) {
    if (column >= df_->columnCount())
      throw DataFrameError(fmt::format("flock: no column {} in the row (row {}; {} columns)",
                                       column, i_, df_->columnCount()));
    return at<T>(df_->columns_[column], df_->names_[column]);
  }
}

// ---- Printing ----------------------------------------------------------------------------

inline std::string DataFrame::toString(std::size_t maxRows) const {
  const std::size_t rows = rowCount(), cols = columnCount();
  if (rows == 0) {
    std::string s = "Empty DataFrame";
    if (cols != 0) s += fmt::format("\nColumns: [{}]", detail::joined(names_));
    return s;
  }
  // The rows shown: all, or the first ceil(maxRows/2) and the last floor(maxRows/2).
  const bool cut = rows > maxRows;
  const std::size_t top = cut ? (maxRows + 1) / 2 : rows;
  const std::size_t bottom = cut ? maxRows / 2 : 0;
  std::vector<std::size_t> shown;
  for (std::size_t i = 0; i < top; ++i) shown.push_back(i);
  for (std::size_t i = rows - bottom; i < rows; ++i) shown.push_back(i);

  auto display = [](std::string s) {
    std::string out;
    for (char c : s) {
      if (c == '\n')
        out += "\\n";
      else if (c == '\r')
        out += "\\r";
      else
        out += c;
    }
    if (out.size() > 50) out = out.substr(0, 47) + "...";
    return out;
  };

  // cells[c][r]: column 0 is the index.
  std::vector<std::vector<std::string>> cells(cols + 1);
  std::vector<std::size_t> width(cols + 1, 0);
  for (std::size_t r : shown) cells[0].push_back(fmt::format("{}", r));
  for (std::size_t c = 0; c < cols; ++c) {
    width[c + 1] = display(names_[c]).size();
    for (std::size_t r : shown) cells[c + 1].push_back(display(columns_[c].text(r, false)));
  }
  for (std::size_t c = 0; c <= cols; ++c)
    for (const auto& s : cells[c]) width[c] = std::max(width[c], s.size());
  if (cut)
    for (auto& w : width) w = std::max<std::size_t>(w, 3); // room for "..."

  std::string out(width[0], ' ');
  for (std::size_t c = 0; c < cols; ++c)
    out += fmt::format("  {:>{}}", display(names_[c]), width[c + 1]);
  auto line = [&](std::size_t k) {
    out += '\n';
    out += fmt::format("{:<{}}", cells[0][k], width[0]);
    for (std::size_t c = 0; c < cols; ++c)
      out += fmt::format("  {:>{}}", cells[c + 1][k], width[c + 1]);
  };
  for (std::size_t k = 0; k < top; ++k) line(k);
  if (cut) {
    out += '\n';
    out += fmt::format("{:<{}}", "...", width[0]);
    for (std::size_t c = 0; c < cols; ++c) out += fmt::format("  {:>{}}", "...", width[c + 1]);
    for (std::size_t k = top; k < shown.size(); ++k) line(k);
    out += fmt::format("\n\n[{} rows x {} columns]", rows, cols);
  }
  // Trailing spaces of the index padding on lines are harmless; the header's leading ones align.
  return out;
}

inline std::ostream& operator<<(std::ostream& os, const DataFrame& df) {
  return os << df.toString();
}
inline std::ostream& operator<<(std::ostream& os, const Column& c) {
  os << '[';
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (i != 0) os << ", ";
    if (c.type() == ColumnType::string)
      os << '"' << c.text(i) << '"';
    else
      os << c.text(i);
  }
  return os << ']';
}

// ---- CSV ---------------------------------------------------------------------------------

namespace detail::csv {

struct Cell {
  std::string text;
  std::size_t line;
};

inline std::string where(const std::string& source, std::size_t line, std::size_t column,
                         std::string_view name) {
  std::string s = "flock: ";
  if (!source.empty()) s += source + ": ";
  s += fmt::format("CSV line {}", line);
  if (column != 0) s += fmt::format(", column {}", column);
  if (!name.empty()) s += fmt::format(" (\"{}\")", name);
  return s + ": ";
}

/// Splits CSV text into records of cells; every cell knows the line it starts on.
class Reader {
public:
  Reader(std::string_view text, char delimiter, const std::string& source)
      : t_(text), d_(delimiter), source_(source) {}

  /// The next record, or false at the end of the text. Blank lines are skipped.
  bool next(std::vector<Cell>& record, std::size_t& recordLine) {
    record.clear();
    while (i_ < t_.size() && (t_[i_] == '\n' || (t_[i_] == '\r' && peek(1) == '\n'))) {
      i_ += t_[i_] == '\r' ? 2 : 1;
      ++line_;
    }
    if (i_ >= t_.size()) return false;
    recordLine = line_;
    for (;;) {
      Cell cell{std::string(), line_};
      const std::size_t column = record.size() + 1;
      if (i_ < t_.size() && t_[i_] == '"') {
        ++i_;
        for (;;) {
          if (i_ >= t_.size())
            throw CsvError(where(source_, cell.line, column, "") +
                               "quoted field not closed before the end of the text",
                           cell.line, column);
          const char c = t_[i_];
          if (c == '"') {
            if (peek(1) == '"') {
              cell.text += '"';
              i_ += 2;
              continue;
            }
            ++i_;
            break;
          }
          if (c == '\n') ++line_;
          cell.text += c;
          ++i_;
        }
        if (i_ < t_.size() && t_[i_] != d_ && !atLineEnd())
          throw CsvError(where(source_, line_, column, "") +
                             fmt::format("unexpected '{}' after a closing quote (a quote inside a "
                                         "quoted field is written \"\")",
                                         t_[i_]),
                         line_, column);
      } else {
        while (i_ < t_.size() && t_[i_] != d_ && !atLineEnd()) {
          if (t_[i_] == '"')
            throw CsvError(where(source_, line_, column, "") +
                               "quote inside an unquoted field (quote the whole field and "
                               "double the quote: \"a \"\"b\"\"\")",
                           line_, column);
          cell.text += t_[i_++];
        }
      }
      record.push_back(std::move(cell));
      if (i_ < t_.size() && t_[i_] == d_) {
        ++i_;
        continue;
      }
      if (i_ < t_.size()) { // end of line
        i_ += t_[i_] == '\r' ? 2 : 1;
        ++line_;
      }
      return true;
    }
  }

private:
  char peek(std::size_t k) const { return i_ + k < t_.size() ? t_[i_ + k] : '\0'; }
  bool atLineEnd() const { return t_[i_] == '\n' || (t_[i_] == '\r' && peek(1) == '\n'); }

  std::string_view t_;
  char d_;
  const std::string& source_;
  std::size_t i_ = 0;
  std::size_t line_ = 1;
};

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

inline std::optional<std::int64_t> parseInt(std::string_view s) {
  s = trim(s);
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

inline std::optional<double> parseDouble(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::numeric_limits<double>::quiet_NaN();
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  // Out of range (1e999) reads as the nearest representable value, like strtod.
  if (ec == std::errc::result_out_of_range && p == s.data() + s.size()) {
    return std::strtod(std::string(s).c_str(), nullptr);
  }
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

inline std::optional<bool> parseBool(std::string_view s) {
  s = trim(s);
  auto is = [&](std::string_view w) {
    return s.size() == w.size() && std::equal(s.begin(), s.end(), w.begin(), [](char a, char b) {
             return (a >= 'A' && a <= 'Z' ? static_cast<char>(a - 'A' + 'a') : a) == b;
           });
  };
  if (is("true")) return true;
  if (is("false")) return false;
  return std::nullopt;
}

inline ColumnType infer(const std::vector<Cell>& cells) {
  if (cells.empty()) return ColumnType::string;
  if (std::all_of(cells.begin(), cells.end(),
                  [](const Cell& c) { return parseInt(c.text).has_value(); }))
    return ColumnType::int64;
  if (std::any_of(cells.begin(), cells.end(),
                  [](const Cell& c) { return !trim(c.text).empty(); }) &&
      std::all_of(cells.begin(), cells.end(),
                  [](const Cell& c) { return parseDouble(c.text).has_value(); }))
    return ColumnType::float64;
  if (std::all_of(cells.begin(), cells.end(),
                  [](const Cell& c) { return parseBool(c.text).has_value(); }))
    return ColumnType::boolean;
  return ColumnType::string;
}

template <class T, class Parse>
Column convert(std::vector<Cell>& cells, Parse parse, std::size_t column, std::string_view name,
               const std::string& source) {
  std::vector<T> out;
  out.reserve(cells.size());
  for (auto& c : cells) {
    auto v = parse(c.text);
    if (!v)
      throw CsvError(
          where(source, c.line, column, name) +
              fmt::format("cannot read \"{}\" as {}", c.text, toString(detail::columnTypeOf<T>())),
          c.line, column);
    out.push_back(*v);
  }
  return Column(std::move(out));
}

inline std::string quote(const std::string& s, char delimiter, bool quoteEmpty) {
  const bool needs = (s.empty() && quoteEmpty) ||
                     s.find_first_of(std::string{delimiter, '"', '\n', '\r'}) != std::string::npos;
  if (!needs) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

} // namespace detail::csv

inline DataFrame DataFrame::parseCsvImpl(std::string_view text, const CsvOptions& options,
                                         const std::string& source) {
  using detail::csv::Cell;
  using detail::csv::where;
  detail::csv::Reader reader(text, options.delimiter, source);
  std::vector<Cell> record;
  std::size_t line = 0;
  std::vector<std::string> names;
  std::vector<std::vector<Cell>> cells;
  bool first = true;
  std::size_t headerLine = 1;
  while (reader.next(record, line)) {
    if (first) {
      first = false;
      headerLine = line;
      for (std::size_t c = 0; c < record.size(); ++c) {
        std::string name = options.header ? record[c].text : std::to_string(c);
        if (std::find(names.begin(), names.end(), name) != names.end())
          throw CsvError(where(source, record[c].line, c + 1, "") +
                             fmt::format("duplicate column name \"{}\"", name),
                         record[c].line, c + 1);
        names.push_back(std::move(name));
      }
      cells.resize(names.size());
      if (options.header) continue;
    }
    if (record.size() != names.size()) {
      const std::size_t column = std::min(record.size(), names.size()) + 1;
      std::string msg = fmt::format("{} fields, expected {}", record.size(), names.size());
      if (record.size() < names.size())
        msg += fmt::format(" (column {} \"{}\" is missing)", column, names[column - 1]);
      throw CsvError(where(source, line, column, "") + msg, line, column);
    }
    for (std::size_t c = 0; c < record.size(); ++c) cells[c].push_back(std::move(record[c]));
  }

  for (const auto& [name, type] : options.types) {
    (void)type;
    if (std::find(names.begin(), names.end(), name) == names.end())
      throw CsvError(where(source, headerLine, 0, "") +
                         fmt::format("CsvOptions::types names column \"{}\", which is not in the "
                                     "CSV (columns: {})",
                                     name, detail::joined(names)),
                     headerLine, 0);
  }

  DataFrame df;
  for (std::size_t c = 0; c < names.size(); ++c) {
    std::optional<ColumnType> type;
    for (const auto& [n, t] : options.types)
      if (n == names[c]) type = t;
    if (!type) type = detail::csv::infer(cells[c]);
    const std::size_t column = c + 1;
    Column col;
    switch (*type) {
    case ColumnType::int64:
      col = detail::csv::convert<std::int64_t>(cells[c], detail::csv::parseInt, column, names[c],
                                               source);
      break;
    case ColumnType::float64:
      col = detail::csv::convert<double>(cells[c], detail::csv::parseDouble, column, names[c],
                                         source);
      break;
    case ColumnType::boolean:
      col = detail::csv::convert<bool>(
          cells[c],
          [](std::string_view s) -> std::optional<bool> {
            if (auto b = detail::csv::parseBool(s)) return b;
            auto t = detail::csv::trim(s);
            if (t == "1") return true;
            if (t == "0") return false;
            return std::nullopt;
          },
          column, names[c], source);
      break;
    case ColumnType::string: {
      std::vector<std::string> v;
      v.reserve(cells[c].size());
      for (auto& cell : cells[c]) v.push_back(std::move(cell.text));
      col = Column(std::move(v));
      break;
    }
    }
    df.addColumn(names[c], std::move(col));
  }
  return df;
}

inline std::string DataFrame::toCsv(const CsvOptions& options) const {
  std::string out;
  const char d = options.delimiter;
  // A record of one empty field would be a blank line, which readers skip: quote it.
  const bool quoteEmpty = columns_.size() == 1;
  if (options.header && !names_.empty()) {
    for (std::size_t c = 0; c < names_.size(); ++c) {
      if (c != 0) out += d;
      out += detail::csv::quote(names_[c], d, quoteEmpty);
    }
    out += '\n';
  }
  const std::size_t rows = rowCount();
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < columns_.size(); ++c) {
      if (c != 0) out += d;
      out += detail::csv::quote(columns_[c].text(r), d, quoteEmpty);
    }
    out += '\n';
  }
  return out;
}

// ---- Elementwise arithmetic --------------------------------------------------------------

namespace detail {

enum class ArithOp {
  add,
  sub,
  mul,
  div
};

inline constexpr std::string_view opName(ArithOp op) {
  switch (op) {
  case ArithOp::add: return "+";
  case ArithOp::sub: return "-";
  case ArithOp::mul: return "*";
  case ArithOp::div: return "/";
  }
  return "?";
}

using Operand =
    std::variant<std::span<const std::int64_t>, std::span<const double>, std::int64_t, double>;

inline Operand operand(const Column& c) {
  if (const auto* v = std::get_if<std::vector<std::int64_t>>(&c.storage())) return std::span(*v);
  if (const auto* v = std::get_if<std::vector<double>>(&c.storage())) return std::span(*v);
  throw DataFrameError(
      fmt::format("flock: arithmetic needs int64 or double values, not {}", toString(c.type())));
}
inline Operand operand(const ColumnRef& c) { return operand(c.column()); }
template <class S>
requires std::is_arithmetic_v<S> Operand operand(S s) {
  if constexpr (std::is_integral_v<S>)
    return static_cast<std::int64_t>(s);
  else
    return static_cast<double>(s);
}

template <class T>
inline constexpr bool isSpan = !std::is_arithmetic_v<T>;

/// a op b, elementwise; a scalar operand is broadcast. int64 op int64 stays int64 (overflow
/// throws DataFrameError) except for `/`, which is true division and gives double.
inline Column arithmetic(const Operand& a, const Operand& b, ArithOp op) {
  return std::visit(
      [op](const auto& x, const auto& y) -> Column {
        using X = std::remove_cvref_t<decltype(x)>;
        using Y = std::remove_cvref_t<decltype(y)>;
        std::size_t n = 0;
        if constexpr (isSpan<X> && isSpan<Y>) {
          if (x.size() != y.size())
            throw DataFrameError(fmt::format("flock: `{}` of columns of {} and {} rows", opName(op),
                                             x.size(), y.size()));
        }
        if constexpr (isSpan<X>)
          n = x.size();
        else if constexpr (isSpan<Y>)
          n = y.size();
        auto at = [](const auto& v, std::size_t i) {
          if constexpr (isSpan<std::remove_cvref_t<decltype(v)>>)
            return v[i];
          else
            return v;
        };
        using XE = decltype(at(x, 0));
        using YE = decltype(at(y, 0));
        if constexpr (std::same_as<XE, std::int64_t> && std::same_as<YE, std::int64_t>) {
          if (op != ArithOp::div) {
            std::vector<std::int64_t> out(n);
            for (std::size_t i = 0; i < n; ++i) {
              const std::int64_t p = at(x, i), q = at(y, i);
              bool overflow = false;
              switch (op) {
              case ArithOp::add: overflow = __builtin_add_overflow(p, q, &out[i]); break;
              case ArithOp::sub: overflow = __builtin_sub_overflow(p, q, &out[i]); break;
              default: overflow = __builtin_mul_overflow(p, q, &out[i]); break;
              }
              if (overflow)
                throw DataFrameError(
                    fmt::format("flock: int64 overflow in {} {} {} (row {})", p, opName(op), q, i));
            }
            return Column(std::move(out));
          }
        }
        std::vector<double> out(n);
        for (std::size_t i = 0; i < n; ++i) {
          const double p = static_cast<double>(at(x, i)), q = static_cast<double>(at(y, i));
          switch (op) {
          case ArithOp::add: out[i] = p + q; break;
          case ArithOp::sub: out[i] = p - q; break;
          case ArithOp::mul: out[i] = p * q; break;
          case ArithOp::div: out[i] = p / q; break;
          }
        }
        return Column(std::move(out));
      },
      a, b);
}

template <class T>
concept ColumnLike = std::same_as<T, Column> || std::same_as<T, ColumnRef>;
template <class T>
concept Scalar = std::is_arithmetic_v<T>;

template <class A, class B>
concept ColumnOperands = (ColumnLike<A> && (ColumnLike<B> || Scalar<B>)) ||
                         (Scalar<A> && ColumnLike<B>);
template <class A, class B>
concept FrameOperands = (std::same_as<A, DataFrame> && (std::same_as<B, DataFrame> || Scalar<B>)) ||
                        (Scalar<A> && std::same_as<B, DataFrame>);

/// Elementwise arithmetic on frames, column by column: two frames must have the same column
/// names in the same order and the same row count.
template <class A, class B>
DataFrame frameArithmetic(const A& a, const B& b, ArithOp op) {
  const DataFrame& shape = [&]() -> const DataFrame& {
    if constexpr (std::same_as<A, DataFrame>)
      return a;
    else
      return b;
  }();
  if constexpr (std::same_as<A, DataFrame> && std::same_as<B, DataFrame>) {
    if (a.columnNames() != b.columnNames())
      throw DataFrameError(fmt::format("flock: `{}` of frames with different columns ({} and {})",
                                       opName(op), joined(a.columnNames()),
                                       joined(b.columnNames())));
  }
  std::vector<NamedColumn> out;
  out.reserve(shape.columnCount());
  for (std::size_t c = 0; c < shape.columnCount(); ++c) {
    const std::string& name = shape.columnNames()[c];
    try {
      Operand x, y;
      if constexpr (std::same_as<A, DataFrame>)
        x = operand(a.column(c));
      else
        x = operand(a);
      if constexpr (std::same_as<B, DataFrame>)
        y = operand(b.column(c));
      else
        y = operand(b);
      out.push_back({name, arithmetic(x, y, op)});
    } catch (const DataFrameError& e) {
      std::string_view what = e.what();
      if (what.starts_with("flock: ")) what.remove_prefix(7);
      throw DataFrameError(fmt::format("flock: column \"{}\": {}", name, what));
    }
  }
  return DataFrame(std::move(out));
}

} // namespace detail

/// Elementwise arithmetic on columns (`df["foo"] + df["bar"]`, `col * 2`) and frames
/// (`df * df`, `df / 20`, `1 - df`). Columns must be int64 or double; int64 with int64 stays
/// int64 (overflow throws DataFrameError), anything with a double gives double, and `/` is true
/// division (always double), as in pandas. Frames combine column by column.
template <class A, class B>
requires detail::ColumnOperands<A, B> Column operator+(const A& a, const B& b) {
  return detail::arithmetic(detail::operand(a), detail::operand(b), detail::ArithOp::add);
}
template <class A, class B>
requires detail::ColumnOperands<A, B> Column operator-(const A& a, const B& b) {
  return detail::arithmetic(detail::operand(a), detail::operand(b), detail::ArithOp::sub);
}
template <class A, class B>
requires detail::ColumnOperands<A, B> Column operator*(const A& a, const B& b) {
  return detail::arithmetic(detail::operand(a), detail::operand(b), detail::ArithOp::mul);
}
template <class A, class B>
requires detail::ColumnOperands<A, B> Column operator/(const A& a, const B& b) {
  return detail::arithmetic(detail::operand(a), detail::operand(b), detail::ArithOp::div);
}
template <class A, class B>
requires detail::FrameOperands<A, B> DataFrame operator+(const A& a, const B& b) {
  return detail::frameArithmetic(a, b, detail::ArithOp::add);
}
template <class A, class B>
requires detail::FrameOperands<A, B> DataFrame operator-(const A& a, const B& b) {
  return detail::frameArithmetic(a, b, detail::ArithOp::sub);
}
template <class A, class B>
requires detail::FrameOperands<A, B> DataFrame operator*(const A& a, const B& b) {
  return detail::frameArithmetic(a, b, detail::ArithOp::mul);
}
template <class A, class B>
requires detail::FrameOperands<A, B> DataFrame operator/(const A& a, const B& b) {
  return detail::frameArithmetic(a, b, detail::ArithOp::div);
}

/// `fn` applied to every value of an int64 or double column; the results form a new column
/// (of the type fn returns). Other columns throw DataFrameError (fn is never called with them, so
/// a generic lambda such as `[](auto v) { return v * v; }` works).
template <class F>
Column map(const Column& c, F&& fn) {
  return std::visit(
      [&](const auto& v) -> Column {
        using T = typename std::remove_cvref_t<decltype(v)>::value_type;
        if constexpr (std::same_as<T, std::int64_t> || std::same_as<T, double>) {
          using R = std::remove_cvref_t<std::invoke_result_t<F&, T>>;
          static_assert(ColumnConvertible<R>,
                        "flockmp::map: fn must return a number, bool or string");
          std::vector<R> out;
          out.reserve(v.size());
          for (T x : v) out.push_back(std::invoke(fn, x));
          return Column(std::move(out));
        } else {
          throw DataFrameError(
              fmt::format("flock: map needs int64 or double values, not {}", toString(c.type())));
        }
      },
      c.storage());
}

/// `fn` applied to every value of every column (all must be int64 or double; select the numeric
/// columns first with `df[{"a", "b"}]`): `flockmp::map(df, [](auto v) { return v * v; })`.
template <class F>
DataFrame map(const DataFrame& df, F&& fn) {
  std::vector<NamedColumn> out;
  out.reserve(df.columnCount());
  for (std::size_t c = 0; c < df.columnCount(); ++c) {
    const std::string& name = df.columnNames()[c];
    if (df.column(c).type() != ColumnType::int64 && df.column(c).type() != ColumnType::float64)
      throw DataFrameError(fmt::format("flock: map needs int64 or double columns; column \"{}\" "
                                       "holds {} values (select the numeric columns first)",
                                       name, toString(df.column(c).type())));
    out.push_back({name, map(df.column(c), fn)});
  }
  return DataFrame(std::move(out));
}

} // namespace flockmp

/// `fmt::print("{}", df)` prints DataFrame::toString(10); `{:N}` shows at most N rows.
template <>
struct fmt::formatter<flockmp::DataFrame> {
  std::size_t maxRows = 10;
  constexpr auto parse(fmt::format_parse_context& ctx) -> decltype(ctx.begin()) {
    auto it = ctx.begin();
    if (it != ctx.end() && *it >= '0' && *it <= '9') {
      maxRows = 0;
      while (it != ctx.end() && *it >= '0' && *it <= '9')
        maxRows = maxRows * 10 + static_cast<std::size_t>(*it++ - '0');
    }
    if (it != ctx.end() && *it != '}')
      throw fmt::format_error("flockmp::DataFrame format: use {} or {:N} (N = rows shown)");
    return it;
  }
  template <class Ctx>
  auto format(const flockmp::DataFrame& df, Ctx& ctx) const -> decltype(ctx.out()) {
    const std::string s = df.toString(maxRows);
    return std::copy(s.begin(), s.end(), ctx.out());
  }
};

/// `fmt::print("{}", column)` prints `[1, 2, 3]` (strings quoted).
template <>
struct fmt::formatter<flockmp::Column> {
  constexpr auto parse(fmt::format_parse_context& ctx) -> decltype(ctx.begin()) {
    auto it = ctx.begin();
    if (it != ctx.end() && *it != '}') throw fmt::format_error("flockmp::Column format: use {}");
    return it;
  }
  template <class Ctx>
  auto format(const flockmp::Column& c, Ctx& ctx) const -> decltype(ctx.out()) {
    std::ostringstream ss;
    ss << c;
    const std::string s = ss.str();
    return std::copy(s.begin(), s.end(), ctx.out());
  }
};

// <flock/dataframe.hpp> gives all of the seed's flockmp.dataframe: DataFrameAsync too. Last, as
// dataframe_async.hpp needs the DataFrame above (#pragma once ends the cycle either way round).
#include "dataframe_async.hpp" // IWYU pragma: export

// flock: a ready-made DatabaseAsync setup for PostgreSQL through libpq (optional: link the CMake
// target flock::postgres, which brings PostgreSQL::PostgreSQL). A small RAII connection with
// exec/query helpers, and `flockmp::postgres::setup(name, conninfo)`, a DatabaseSetup that opens
// one per worker.
//
//   flockmp::DatabaseAsync db{{.poolSize = 4}, flockmp::postgres::setup("pg_con", "host=db
//   dbname=app")}; auto totals = db.apply(ids, [](int id, flockmp::postgres::Connection& pg) {
//     return pg.scalar<long>("select sum(amount) from orders where customer = $1", id);
//   });
#pragma once

// One readable error instead of a hundred undefined references at link time.
#if !defined(FLOCK_WITH_POSTGRES)
#error "<flock/postgres.hpp> needs the CMake target flock::postgres: target_link_libraries(your_target PRIVATE flock::postgres) (without CMake: define FLOCK_WITH_POSTGRES and link -lpq)"
#endif

#include <libpq-fe.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "database.hpp"
#include "error.hpp"

namespace flockmp::postgres {

/// A libpq call failed; `what()` holds the server's or libpq's message (a broken connection says
/// so: "server closed the connection unexpectedly", "no connection to the server"...).
class Error : public flockmp::Error {
public:
  using flockmp::Error::Error;
};

/// The result of a statement; cleared by its destructor. Values are text (libpq's text format).
class Result {
public:
  explicit Result(PGresult* r) noexcept : r_(r) {}
  Result(Result&& o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
  Result& operator=(Result&& o) noexcept {
    if (this != &o) {
      PQclear(r_);
      r_ = std::exchange(o.r_, nullptr);
    }
    return *this;
  }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  ~Result() { PQclear(r_); }

  [[nodiscard]] int rows() const noexcept { return PQntuples(r_); }
  [[nodiscard]] int columns() const noexcept { return PQnfields(r_); }
  [[nodiscard]] bool isNull(int row, int column) const noexcept {
    return PQgetisnull(r_, row, column) != 0;
  }
  /// The value at (row, column) as text; std::nullopt for NULL.
  [[nodiscard]] std::optional<std::string> value(int row, int column) const {
    if (row >= rows() || column >= columns())
      throw Error(fmt::format("postgres: no value at row {}, column {} ({} rows, {} columns)", row,
                              column, rows(), columns()));
    if (isNull(row, column)) return std::nullopt;
    return std::string(PQgetvalue(r_, row, column),
                       static_cast<std::size_t>(PQgetlength(r_, row, column)));
  }
  /// Rows changed by an INSERT/UPDATE/DELETE.
  [[nodiscard]] std::int64_t affected() const {
    const char* s = PQcmdTuples(r_);
    return (s && *s) ? std::stoll(s) : 0;
  }
  [[nodiscard]] PGresult* get() const noexcept { return r_; }

private:
  PGresult* r_;
};

/// An open libpq connection; closed (PQfinish) by its destructor. Move-only.
class Connection {
public:
  /// Connect with a libpq connection string (`host=... port=... dbname=... user=...`). Throws
  /// postgres::Error with libpq's message when the connection cannot be made.
  explicit Connection(const std::string& conninfo) : c_(PQconnectdb(conninfo.c_str())) {
    if (!c_) throw Error("postgres: out of memory allocating a connection");
    if (PQstatus(c_) != CONNECTION_OK) {
      std::string message = trim(PQerrorMessage(c_));
      PQfinish(c_);
      c_ = nullptr;
      throw Error(fmt::format("postgres: cannot connect: {}", message));
    }
  }
  Connection(Connection&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Connection& operator=(Connection&& o) noexcept {
    if (this != &o) {
      PQfinish(c_);
      c_ = std::exchange(o.c_, nullptr);
    }
    return *this;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { PQfinish(c_); }

  /// The raw handle, for everything else in libpq.
  [[nodiscard]] PGconn* get() const noexcept { return c_; }
  /// True while the connection is usable (false after the server went away and libpq noticed).
  [[nodiscard]] bool ok() const noexcept { return c_ && PQstatus(c_) == CONNECTION_OK; }
  /// The same as ok(): DatabaseAsync asks it after an input fails, and reopens a dead connection
  /// before the worker's next input, retrying with backoff while the server is down (up to
  /// DatabaseOptions::setupTimeout), so a server restart costs each worker only the input whose
  /// statement it cut off.
  [[nodiscard]] bool alive() const noexcept { return ok(); }
  /// The server process serving this connection (pg_stat_activity.pid).
  [[nodiscard]] int backendPid() const noexcept { return PQbackendPID(c_); }

  /// Run one statement with `$1, $2...` parameters bound to `args` (integers, reals, strings,
  /// nullptr). Throws postgres::Error with the server's message when it fails.
  template <class... Args>
  Result exec(std::string_view sql, const Args&... args) {
    std::vector<std::optional<std::string>> text{toText(args)...};
    std::vector<const char*> values;
    values.reserve(text.size());
    for (const auto& t : text) values.push_back(t ? t->c_str() : nullptr);
    const std::string query(sql);
    Result r(sizeof...(Args) == 0 ? PQexec(c_, query.c_str())
                                  : PQexecParams(c_, query.c_str(), static_cast<int>(values.size()),
                                                 nullptr, values.data(), nullptr, nullptr, 0));
    const auto status = r.get() ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY) {
      std::string message = r.get() ? PQresultErrorMessage(r.get()) : "";
      if (message.empty()) message = PQerrorMessage(c_);
      throw Error(fmt::format("postgres: {}", trim(message)));
    }
    return r;
  }

  /// The first column of the first row, as T (an integer type, a floating-point type or
  /// std::string). Throws postgres::Error when there is no row or the value is NULL.
  template <class T, class... Args>
  T scalar(std::string_view sql, const Args&... args) {
    auto r = exec(sql, args...);
    if (r.rows() == 0 || r.columns() == 0)
      throw Error(fmt::format("postgres: \"{}\" returned no row", sql));
    auto v = r.value(0, 0);
    if (!v) throw Error(fmt::format("postgres: \"{}\" returned NULL", sql));
    if constexpr (std::is_same_v<T, std::string>)
      return *v;
    else if constexpr (std::is_same_v<T, bool>)
      return *v == "t";
    else if constexpr (std::is_integral_v<T>)
      return static_cast<T>(std::stoll(*v));
    else
      return static_cast<T>(std::stod(*v));
  }

private:
  template <class T>
  static std::optional<std::string> toText(const T& v) {
    if constexpr (std::is_same_v<T, std::nullptr_t>)
      return std::nullopt;
    else if constexpr (std::is_same_v<T, bool>)
      return std::string(v ? "t" : "f");
    else if constexpr (std::is_arithmetic_v<T>)
      return fmt::format("{}", v);
    else
      return std::string(std::string_view(v));
  }
  static std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  PGconn* c_ = nullptr;
};

/// The server of postgres::setup: connects with `parameters.at("conninfo")`.
struct Server {
  Connection operator()(const Parameters& parameters) const {
    const auto conninfo = parameters.find("conninfo");
    if (conninfo == parameters.end())
      throw Error("postgres: the setup has no \"conninfo\" parameter");
    return Connection(conninfo->second);
  }
};

/// A DatabaseSetup named `name` that connects with the libpq connection string `conninfo` in
/// every worker.
inline DatabaseSetup<Server> setup(std::string name, std::string conninfo) {
  return DatabaseSetup<Server>{std::move(name), Server{},
                               Parameters{{"conninfo", std::move(conninfo)}}};
}

} // namespace flockmp::postgres

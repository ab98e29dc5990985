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
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/core.h>

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

  /// Rows returned (0 for a statement that returns none).
  [[nodiscard]] int rows() const noexcept { return PQntuples(r_); }
  /// Columns of each row.
  [[nodiscard]] int columns() const noexcept { return PQnfields(r_); }
  /// Whether the value at (row, column) is NULL.
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
  /// The raw result, for everything else in libpq.
  [[nodiscard]] PGresult* get() const noexcept { return r_; }

private:
  PGresult* r_;
};

/// An open libpq connection; closed (PQfinish) by its destructor. Move-only.
///
/// A statement run with parameters (exec, scalar) is prepared on the server once and kept, keyed
/// by its SQL text (`statementCacheSize` of them, the least recently used deallocated first), so
/// a loop that runs the same INSERT parses and plans it once. The server drops them when the
/// connection closes.
class Connection {
public:
  /// Connect with a libpq connection string (`host=... port=... dbname=... user=...`). Throws
  /// postgres::Error with libpq's message when the connection cannot be made.
  explicit Connection(const std::string& conninfo, std::size_t statementCacheSize = 64)
      : c_(PQconnectdb(conninfo.c_str())), cacheSize_(statementCacheSize) {
    if (!c_) throw Error("postgres: out of memory allocating a connection");
    if (PQstatus(c_) != CONNECTION_OK) {
      std::string message = trim(PQerrorMessage(c_));
      PQfinish(c_);
      c_ = nullptr;
      throw Error(fmt::format("postgres: cannot connect: {}", message));
    }
  }
  Connection(Connection&& o) noexcept
      : c_(std::exchange(o.c_, nullptr)), cacheSize_(o.cacheSize_),
        statements_(std::move(o.statements_)), byText_(std::move(o.byText_)),
        prepares_(o.prepares_), nextName_(o.nextName_) {}
  Connection& operator=(Connection&& o) noexcept {
    if (this != &o) {
      close();
      c_ = std::exchange(o.c_, nullptr);
      cacheSize_ = o.cacheSize_;
      statements_ = std::move(o.statements_);
      byText_ = std::move(o.byText_);
      prepares_ = o.prepares_;
      nextName_ = o.nextName_;
    }
    return *this;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(); }

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
  /// nullptr), prepared once per connection (see the class comment); its rows, if any, are in
  /// the Result. Without `args` the SQL is sent as it is, unprepared, and may hold several
  /// statements separated by `;`. Throws postgres::Error with the server's message when it fails.
  template <class... Args>
  Result exec(std::string_view sql, const Args&... args) {
    if constexpr (sizeof...(Args) == 0) {
      const std::string query(sql);
      return check(Result(PQexec(c_, query.c_str())));
    } else {
      std::vector<std::optional<std::string>> text{toText(args)...};
      std::vector<const char*> values;
      values.reserve(text.size());
      for (const auto& t : text) values.push_back(t ? t->c_str() : nullptr);
      const std::string& name = statement(sql);
      return check(Result(PQexecPrepared(c_, name.c_str(), static_cast<int>(values.size()),
                                         values.data(), nullptr, nullptr, 0)));
    }
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

  /// The server-side name of the prepared statement for `sql`, prepared now if it is not cached.
  const std::string& statement(std::string_view sql) {
    if (auto it = byText_.find(sql); it != byText_.end()) {
      statements_.splice(statements_.begin(), statements_, it->second);
      return statements_.front().second;
    }
    std::string name = fmt::format("flock_{}", nextName_++);
    const std::string query(sql);
    check(Result(PQprepare(c_, name.c_str(), query.c_str(), 0, nullptr)));
    ++prepares_;
    if (cacheSize_ > 0 && statements_.size() >= cacheSize_) {
      deallocate(statements_.back().second);
      byText_.erase(std::string_view(statements_.back().first));
      statements_.pop_back();
    }
    if (cacheSize_ == 0) {
      // Nothing kept: the unnamed slot would do, but a name keeps one code path; drop the last.
      if (!statements_.empty()) deallocate(statements_.back().second);
      statements_.clear();
      byText_.clear();
      statements_.emplace_front(std::string(), std::move(name));
      return statements_.front().second;
    }
    statements_.emplace_front(query, std::move(name));
    byText_.emplace(std::string_view(statements_.front().first), statements_.begin());
    return statements_.front().second;
  }

  /// Statements this connection has prepared: those exec and scalar found in the cache are not
  /// counted again.
  [[nodiscard]] std::uint64_t prepares() const noexcept { return prepares_; }

  /// Batch transactions (DatabaseOptions::batchTransactions): start a transaction.
  void begin() { exec("begin"); }
  /// Commit the transaction begun by begin().
  void commit() { exec("commit"); }
  /// Roll back the transaction begun by begin().
  void rollback() { exec("rollback"); }
  /// Open a savepoint inside a transaction (DatabaseAsync takes one around each input).
  void savepoint() { exec("savepoint flock_input"); }
  /// Keep what was done since savepoint().
  void releaseSavepoint() { exec("release savepoint flock_input"); }
  /// Undo what was done since savepoint() (also after an error aborted the transaction), and
  /// close it.
  void rollbackToSavepoint() { exec("rollback to savepoint flock_input; release savepoint flock_input"); }

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

  /// `r`, or postgres::Error with the server's (or libpq's) message when it failed.
  Result check(Result r) {
    const auto status = r.get() ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY) {
      std::string message = r.get() ? PQresultErrorMessage(r.get()) : "";
      if (message.empty()) message = PQerrorMessage(c_);
      throw Error(fmt::format("postgres: {}", trim(message)));
    }
    return r;
  }

  /// Drop a prepared statement on the server. A failure (inside an aborted transaction, say)
  /// only leaves it allocated until the connection closes; names are never reused.
  void deallocate(const std::string& name) noexcept {
    const std::string sql = fmt::format("deallocate {}", name);
    PQclear(PQexec(c_, sql.c_str()));
  }

  void close() noexcept {
    byText_.clear();
    statements_.clear(); // the server drops its prepared statements with the session
    PQfinish(c_);
    c_ = nullptr;
  }

  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  PGconn* c_ = nullptr;
  std::size_t cacheSize_ = 64;
  /// (SQL text, statement name), most recently used first; byText_ points into it.
  std::list<std::pair<std::string, std::string>> statements_;
  std::unordered_map<std::string_view, std::list<std::pair<std::string, std::string>>::iterator,
                     TextHash, std::equal_to<>>
      byText_;
  std::uint64_t prepares_ = 0;
  std::uint64_t nextName_ = 0;
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

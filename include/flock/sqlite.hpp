// flock: a ready-made DatabaseAsync setup for SQLite (optional: link the CMake target
// flock::sqlite, which brings SQLite::SQLite3). A small RAII connection with exec/query helpers,
// and `flockmp::sqlite::setup(name, path)`, a DatabaseSetup that opens one per worker.
//
//   flockmp::DatabaseAsync db{{.poolSize = 4}, flockmp::sqlite::setup("sqlite_con",
//   "/tmp/app.db")}; auto names = db.apply(ids, [](int id, flockmp::sqlite::Connection& con) {
//     return con.scalar<std::string>("select name from users where id = ?", id);
//   });
#pragma once

// One readable error instead of a hundred undefined references at link time.
#if !defined(FLOCK_WITH_SQLITE)
#error "<flock/sqlite.hpp> needs the CMake target flock::sqlite: target_link_libraries(your_target PRIVATE flock::sqlite) (without CMake: define FLOCK_WITH_SQLITE and link -lsqlite3)"
#endif

#include <sqlite3.h>

#include <chrono>
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
#include <variant>
#include <vector>

#include <fmt/core.h>

#include "database.hpp"
#include "error.hpp"

namespace flockmp::sqlite {

/// An SQLite call failed; `what()` holds SQLite's message, `code()` its (extended) result code.
class Error : public flockmp::Error {
public:
  Error(const std::string& message, int code) : flockmp::Error(message), code_(code) {}
  [[nodiscard]] int code() const noexcept { return code_; }

private:
  int code_;
};

/// One column value of a result row: NULL, integer, real, or text (blobs come back as text).
/// Read it with `std::get<std::int64_t>(v)`, `std::get_if<std::string>(&v)`, `std::visit`...
using Value = std::variant<std::nullptr_t, std::int64_t, double, std::string>;
/// One result row of Connection::query: its column values, in the order the SELECT names them.
using Row = std::vector<Value>;

class Connection;

/// How a Connection opens its database.
struct OpenOptions {
  bool create = true;    ///< create the file if it does not exist
  bool readOnly = false; ///< open read-only
  /// Wait this long for a lock held by another connection before failing with SQLITE_BUSY
  /// (workers writing the same file take turns).
  std::chrono::milliseconds busyTimeout{10'000};
  /// Switch the database to write-ahead logging (readers and a writer run concurrently). The
  /// mode is stored in the file, so setting it once, when the database is created, is enough.
  bool wal = false;
  /// Prepared statements a connection keeps, keyed by their SQL text (the least recently used
  /// goes first). 0: none kept, every statement is prepared again.
  std::size_t statementCacheSize = 64;
  /// Runs right after the database is open (after `wal`), for per-connection settings such as
  /// `[](flockmp::sqlite::Connection& c) { c.exec("pragma synchronous=normal"); }`. What it
  /// throws fails the open: in DatabaseAsync, a SetupError naming the setup.
  std::function<void(Connection&)> onOpen{};
};

/// A prepared statement; finalized by its destructor.
class Statement {
public:
  Statement(sqlite3* db, std::string_view sql) : db_(db) {
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, &tail);
    if (rc != SQLITE_OK)
      throw Error(fmt::format("sqlite: cannot prepare \"{}\": {}", sql, sqlite3_errmsg(db)), rc);
  }
  Statement(Statement&& o) noexcept : db_(o.db_), stmt_(std::exchange(o.stmt_, nullptr)) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  /// Bind `args` to the parameters 1..n.
  template <class... Args>
  void bindAll(const Args&... args) {
    int i = 0;
    (bind(++i, args), ...);
  }

  /// Advance: true when a row is available.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(fmt::format("sqlite: {}", sqlite3_errmsg(db_)), sqlite3_extended_errcode(db_));
  }

  /// Columns of each result row.
  [[nodiscard]] int columns() const { return sqlite3_column_count(stmt_); }

  /// Column `i` (from 0) of the current row.
  [[nodiscard]] Value column(int i) const {
    switch (sqlite3_column_type(stmt_, i)) {
    case SQLITE_NULL: return nullptr;
    case SQLITE_INTEGER: return static_cast<std::int64_t>(sqlite3_column_int64(stmt_, i));
    case SQLITE_FLOAT: return sqlite3_column_double(stmt_, i);
    default: {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, i));
      return std::string(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(stmt_, i)));
    }
    }
  }

  /// The raw handle, for everything else in the SQLite C API.
  [[nodiscard]] sqlite3_stmt* get() const noexcept { return stmt_; }

  /// Make the statement ready to run again: rewind it and drop its bindings.
  void reset() noexcept {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

private:
  template <class T>
  void bind(int i, const T& v) {
    int rc;
    if constexpr (std::is_same_v<T, std::nullptr_t>)
      rc = sqlite3_bind_null(stmt_, i);
    else if constexpr (std::is_integral_v<T>)
      rc = sqlite3_bind_int64(stmt_, i, static_cast<sqlite3_int64>(v));
    else if constexpr (std::is_floating_point_v<T>)
      rc = sqlite3_bind_double(stmt_, i, static_cast<double>(v));
    else {
      const std::string_view s(v);
      rc = sqlite3_bind_text64(stmt_, i, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    }
    if (rc != SQLITE_OK)
      throw Error(fmt::format("sqlite: cannot bind parameter {}: {}", i, sqlite3_errmsg(db_)), rc);
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

/// An open SQLite database; closed by its destructor. Move-only.
///
/// Statements run through exec (with parameters), query and scalar are prepared once and kept,
/// keyed by their SQL text (OpenOptions::statementCacheSize, the least recently used evicted
/// first), so a loop that runs the same INSERT prepares it once. The cache is dropped when the
/// connection closes.
class Connection {
public:
  /// Open (by default create) the database at `path`. Throws sqlite::Error with SQLite's message.
  explicit Connection(const std::string& path, const OpenOptions& options = {})
      : cacheSize_(options.statementCacheSize) {
    int flags = options.readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
    if (options.create && !options.readOnly) flags |= SQLITE_OPEN_CREATE;
    const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close_v2(db_);
      db_ = nullptr;
      throw Error(fmt::format("sqlite: cannot open \"{}\": {}", path, message), rc);
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, static_cast<int>(options.busyTimeout.count()));
    try {
      if (options.wal) {
        const auto mode = scalar<std::string>("pragma journal_mode=wal");
        if (mode != "wal")
          throw Error(
              fmt::format("sqlite: \"{}\" cannot use write-ahead logging (mode {})", path, mode),
              SQLITE_ERROR);
      }
      if (options.onOpen) options.onOpen(*this);
    } catch (...) {
      close(); // the destructor does not run for a constructor that throws
      throw;
    }
  }
  Connection(Connection&& o) noexcept
      : db_(std::exchange(o.db_, nullptr)), cacheSize_(o.cacheSize_),
        statements_(std::move(o.statements_)), byText_(std::move(o.byText_)),
        prepares_(o.prepares_) {}
  Connection& operator=(Connection&& o) noexcept {
    if (this != &o) {
      close();
      db_ = std::exchange(o.db_, nullptr);
      cacheSize_ = o.cacheSize_;
      statements_ = std::move(o.statements_);
      byText_ = std::move(o.byText_);
      prepares_ = o.prepares_;
    }
    return *this;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(); }

  /// The raw handle, for everything else in the SQLite C API.
  [[nodiscard]] sqlite3* get() const noexcept { return db_; }
  /// Whether the database is open (false once moved from).
  explicit operator bool() const noexcept { return db_ != nullptr; }

  /// Run SQL without parameters; several statements separated by `;` are allowed. Not cached.
  void exec(const std::string& sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string message = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      throw Error(fmt::format("sqlite: {}", message), sqlite3_extended_errcode(db_));
    }
  }

  /// Run one statement with `?` parameters bound to `args` (integers, reals, strings, nullptr).
  /// Returns the number of rows it changed.
  template <class Arg, class... Args>
  std::int64_t exec(std::string_view sql, const Arg& arg, const Args&... args) {
    Use st(statement(sql));
    st->bindAll(arg, args...);
    while (st->step()) {}
    return static_cast<std::int64_t>(sqlite3_changes(db_));
  }

  /// All rows of one statement with `?` parameters bound to `args`, each a Row of Values.
  template <class... Args>
  std::vector<Row> query(std::string_view sql, const Args&... args) {
    Use st(statement(sql));
    st->bindAll(args...);
    std::vector<Row> rows;
    while (st->step()) {
      Row r;
      r.reserve(static_cast<std::size_t>(st->columns()));
      for (int i = 0; i < st->columns(); ++i) r.push_back(st->column(i));
      rows.push_back(std::move(r));
    }
    return rows;
  }

  /// The first column of the first row, as T (an integer type, a floating-point type or
  /// std::string). Throws sqlite::Error when there is no row or the value is NULL.
  template <class T, class... Args>
  T scalar(std::string_view sql, const Args&... args) {
    Use st(statement(sql));
    st->bindAll(args...);
    if (!st->step()) throw Error(fmt::format("sqlite: \"{}\" returned no row", sql), SQLITE_ERROR);
    auto v = st->column(0);
    if (std::holds_alternative<std::nullptr_t>(v))
      throw Error(fmt::format("sqlite: \"{}\" returned NULL", sql), SQLITE_ERROR);
    if constexpr (std::is_same_v<T, std::string>) {
      if (auto* s = std::get_if<std::string>(&v)) return *s;
      return std::visit(
          [](const auto& x) -> std::string {
            if constexpr (std::is_arithmetic_v<std::decay_t<decltype(x)>>)
              return fmt::format("{}", x);
            else
              return {};
          },
          v);
    } else if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(sqlite3_column_int64(st->get(), 0));
    } else {
      return static_cast<T>(sqlite3_column_double(st->get(), 0));
    }
  }

  /// Rowid of the last row inserted through this connection.
  [[nodiscard]] std::int64_t lastInsertRowid() const noexcept {
    return sqlite3_last_insert_rowid(db_);
  }

  /// The cached prepared statement for `sql`, prepared now if it is not cached. It stays valid
  /// until it is evicted (statementCacheSize newer statements) or the connection closes.
  Statement& statement(std::string_view sql) {
    if (auto it = byText_.find(sql); it != byText_.end()) {
      statements_.splice(statements_.begin(), statements_, it->second);
      return statements_.front().second;
    }
    Statement st(db_, sql);
    ++prepares_;
    if (cacheSize_ == 0) {
      uncached_.reset();
      uncached_.emplace(std::move(st));
      return *uncached_;
    }
    if (statements_.size() >= cacheSize_) {
      byText_.erase(std::string_view(statements_.back().first));
      statements_.pop_back();
    }
    statements_.emplace_front(std::string(sql), std::move(st));
    byText_.emplace(std::string_view(statements_.front().first), statements_.begin());
    return statements_.front().second;
  }

  /// Statements this connection has prepared: those exec, query and scalar found in the cache
  /// are not counted again.
  [[nodiscard]] std::uint64_t prepares() const noexcept { return prepares_; }

  /// Batch transactions (DatabaseOptions::batchTransactions): `begin immediate`, so that workers
  /// writing one file queue for its write lock (busyTimeout) instead of failing later with
  /// SQLITE_BUSY when a read lock would have to become a write lock.
  void begin() { step("begin immediate"); }
  /// Commit the transaction begun by begin().
  void commit() { step("commit"); }
  /// Roll back the transaction begun by begin().
  void rollback() { step("rollback"); }
  /// Open a savepoint inside a transaction (DatabaseAsync takes one around each input).
  void savepoint() { step("savepoint flock_input"); }
  /// Keep what was done since savepoint().
  void releaseSavepoint() { step("release flock_input"); }
  /// Undo what was done since savepoint(), and close it.
  void rollbackToSavepoint() {
    step("rollback to flock_input");
    step("release flock_input");
  }

private:
  /// Resets a cached statement when its use ends, thrown out of or not.
  struct Use {
    Statement& st;
    explicit Use(Statement& s) noexcept : st(s) {}
    ~Use() { st.reset(); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    Statement* operator->() const noexcept { return &st; }
  };

  void step(std::string_view sql) {
    Use st(statement(sql));
    while (st->step()) {}
  }

  void close() noexcept {
    byText_.clear();
    statements_.clear(); // finalized before the database closes
    uncached_.reset();
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }

  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  sqlite3* db_ = nullptr;
  std::size_t cacheSize_ = 64;
  /// Most recently used first; byText_ points into it (list nodes do not move).
  std::list<std::pair<std::string, Statement>> statements_;
  std::unordered_map<std::string_view, std::list<std::pair<std::string, Statement>>::iterator,
                     TextHash, std::equal_to<>>
      byText_;
  std::optional<Statement> uncached_; // statementCacheSize == 0: the last statement prepared
  std::uint64_t prepares_ = 0;
};

/// The server of sqlite::setup: opens `parameters.at("path")` with `options`.
struct Server {
  OpenOptions options{};
  Connection operator()(const Parameters& parameters) const {
    const auto path = parameters.find("path");
    if (path == parameters.end())
      throw Error("sqlite: the setup has no \"path\" parameter", SQLITE_MISUSE);
    return Connection(path->second, options);
  }
};

/// A DatabaseSetup named `name` that opens the SQLite database at `path` in every worker (with
/// `options`; by default a 10 s busy timeout, so workers writing the same file take turns).
/// Per-connection settings go in `options.onOpen`:
///
///   flockmp::sqlite::setup("db", "/tmp/app.db",
///       {.wal = true, .onOpen = [](auto& c) { c.exec("pragma synchronous=normal"); }});
inline DatabaseSetup<Server> setup(std::string name, std::string path, OpenOptions options = {}) {
  return DatabaseSetup<Server>{std::move(name), Server{options},
                               Parameters{{"path", std::move(path)}}};
}

} // namespace flockmp::sqlite

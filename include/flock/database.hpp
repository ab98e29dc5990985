// flock: DatabaseAsync, the seed's class for callables that need database connections. A
// connection cannot be sent to another process and opening one per task is slow, so every worker
// opens each setup's connection once, before its first input, hands it to the callable for every
// input it runs, and closes it when it stops.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#include <fmt/core.h>

#include "codec.hpp"
#include "detail/invoke.hpp"
#include "error.hpp"
#include "options.hpp"
#include "pool.hpp"
#include "detail/worker.hpp"

namespace flockmp {

/// Named connection parameters handed to a setup's server (the seed's `parameters` dict).
using Parameters = std::map<std::string, std::string, std::less<>>;

/// Thrown inside a worker when a setup's connection cannot be opened (or does not open within
/// DatabaseOptions::setupTimeout). The parent reports the inputs that could not run as failures
/// of kind FailureKind::setup whose message carries this error's `what()`:
/// `setup "pg_con" failed in worker 1234: <the driver's message>`. A connection that broke
/// mid-run and could not be opened again within the reopen deadline fails the input that waited
/// for it with this error (kind FailureKind::exception):
/// `setup "pg_con" failed in worker 1234: reopening the connection after it broke: still failing
/// after retrying for 30.0s (...); last error: <the driver's message>`.
class SetupError : public Error {
public:
  SetupError(std::string setup, pid_t worker, std::string cause)
      : Error(fmt::format("setup \"{}\" failed in worker {}: {}", setup, worker, cause)),
        setup_(std::move(setup)), worker_(worker), cause_(std::move(cause)) {}

  /// The setup's name.
  [[nodiscard]] const std::string& setup() const noexcept { return setup_; }
  /// The worker process that tried to connect.
  [[nodiscard]] pid_t worker() const noexcept { return worker_; }
  /// What the driver said (exception type and message), or the timeout.
  [[nodiscard]] const std::string& cause() const noexcept { return cause_; }

private:
  std::string setup_;
  pid_t worker_;
  std::string cause_;
};

/// What DatabaseAsync needs from a setup: a `name` (labels errors) and `connect()`, which opens
/// one connection of any type (an RAII object, or a handle with its close function such as a
/// `std::unique_ptr<T, Closer>`). DatabaseSetup and classes derived from BaseDatabaseSetup model
/// it; so does any user type with these two members.
template <class S>
concept DatabaseSetupType = std::copy_constructible<S> && requires(const S& s) {
  { s.name } -> std::convertible_to<std::string_view>;
  s.connect();
  requires !std::is_void_v<decltype(s.connect())>;
};

/// The connection type a setup opens.
template <DatabaseSetupType S>
using ConnectionOf = std::remove_cvref_t<decltype(std::declval<const S&>().connect())>;

/// A connection recipe, the seed's `DatabaseSetup(server=..., name=..., parameters=...)`:
/// `server(parameters)` opens one connection (a server that takes no arguments is called with
/// none). The connection type is deduced from the server:
///
///   flockmp::DatabaseSetup sqlite{.name = "sqlite_con",
///                                 .server = [](const flockmp::Parameters& p) { return
///                                 Db(p.at("path")); }, .parameters = {{"path",
///                                 "/var/data/app.db"}}};
template <class Server>
struct DatabaseSetup {
  /// Labels errors: `setup "sqlite_con" failed in worker 1234: ...`.
  std::string name;
  /// Opens a connection: called once in each worker process, never in the caller's process.
  Server server;
  /// Handed to `server`.
  Parameters parameters{};

  /// Open one connection.
  auto connect() const {
    if constexpr (std::is_invocable_v<const Server&, const Parameters&>)
      return std::invoke(server, parameters);
    else
      return std::invoke(server);
  }
};

template <class Server>
DatabaseSetup(std::string, Server, Parameters) -> DatabaseSetup<Server>;
template <class Server>
DatabaseSetup(std::string, Server) -> DatabaseSetup<Server>;

/// Base class to package a setup once and reuse it (the seed's BaseDatabaseSetup):
///
///   struct Warehouse : flockmp::BaseDatabaseSetup<PgConn> {
///     Warehouse() : BaseDatabaseSetup("warehouse", {{"conninfo", "host=db dbname=wh"}}) {}
///     PgConn server(const flockmp::Parameters& p) const override { return
///     PgConn(p.at("conninfo")); }
///   };
///   flockmp::DatabaseAsync db{Warehouse{}};
template <class Connection>
class BaseDatabaseSetup {
public:
  using connection_type = Connection;

  explicit BaseDatabaseSetup(std::string setupName, Parameters setupParameters = {})
      : name(std::move(setupName)), parameters(std::move(setupParameters)) {}
  virtual ~BaseDatabaseSetup() = default;
  BaseDatabaseSetup(const BaseDatabaseSetup&) = default;
  BaseDatabaseSetup& operator=(const BaseDatabaseSetup&) = default;

  /// Open one connection from `parameters`.
  virtual Connection server(const Parameters& parameters) const = 0;
  Connection connect() const { return server(parameters); }
  /// Whether `connection` is still usable; asked after an input that used it failed. A dead one
  /// is closed and opened again before the worker's next input (retried with backoff while the
  /// server is down, see DatabaseOptions::setupTimeout). Default: the connection's own `alive()`
  /// when it has one, else true.
  virtual bool alive(const Connection& connection) const {
    if constexpr (requires { { connection.alive() } -> std::convertible_to<bool>; })
      return static_cast<bool>(connection.alive());
    else
      return true;
  }

  std::string name;
  Parameters parameters;
};

/// Options of a DatabaseAsync.
///
///   flockmp::DatabaseAsync db{{.poolSize = 4, .setupTimeout = 5s, .pool = {.maxTasksPerWorker
///   = 1000}},
///                             sqlite, pg};
struct DatabaseOptions {
  /// Worker processes, each with its own connections: the same as pool.poolSize, written here for
  /// short (give one or the other). Default: the online CPU count. Never more than the inputs.
  /// Zero or negative throws flockmp::OptionError.
  std::optional<int> poolSize{};
  /// Longest time a worker may take to open all its connections. A setup still connecting then is
  /// abandoned, the worker reports a SetupError ("timed out") and exits, and a fresh worker tries
  /// again within the restart budget (stretched, if needed, so that workers whose setups keep
  /// timing out always end the call). To bound a hung connect, connections are opened on a
  /// short-lived helper thread of the worker. std::nullopt: no limit, connections are opened on
  /// the worker's own thread. Default: 30 s.
  ///
  /// It is also the reopen deadline: a connection found dead after an input failed (the server
  /// restarts) is opened again before the worker's next input, retried with exponential backoff
  /// (10 ms, doubling, at most 1 s apart) for up to setupTimeout after the first failed reopen,
  /// so a server that is down for a while costs no inputs. Only past that deadline does an input
  /// fail, with a SetupError naming the setup, how long it retried and the driver's last error;
  /// later inputs then try once each and fail at once until a reopen succeeds. With std::nullopt
  /// the reopen deadline is defaultReopenDeadline (30 s): "no limit" lifts the bound on one
  /// connect, it does not make workers wait forever for a server that never comes back.
  std::optional<Duration> setupTimeout = std::chrono::seconds(30);

  /// How long workers keep retrying to reopen broken connections when setupTimeout is
  /// std::nullopt.
  static constexpr std::chrono::seconds defaultReopenDeadline{30};
  /// Everything else: timeOutError, maxTasksPerWorker, retries, restartBudget, checkProgress,
  /// onProgress, stopToken... An `initializer` here runs after the connections are open, a
  /// `finalizer` before they are closed.
  Options pool{};
  /// Keep the workers, and the connections they opened, from one apply to the next: the
  /// DatabaseAsync runs its calls on a pool of Context::fork workers started at its first call and
  /// stopped (connections closed) when the last copy of it is destroyed. The callable must then
  /// be one a pool can carry (a function pointer, a captureless lambda, an empty or codable
  /// function object, or a member function with a codable object); another is an OptionError.
  bool persistent = false;
  /// Run each worker's inputs in transactions, one per batch: the worker begins one on every
  /// connection before the first input after its last results were sent, and commits them all
  /// just before it sends results again (at the end of each batch, and within a long batch each
  /// time its results are due, a few milliseconds apart at most), so no result reaches the
  /// caller before what its input wrote is committed. Each input runs inside a savepoint: an
  /// input that throws is rolled back alone and reported with its index, the others commit.
  /// When a commit fails, or a connection breaks inside a transaction, the worker exits without
  /// sending the results of the inputs in it, and they run again on a fresh worker (nothing of
  /// theirs was committed; workers that keep failing end the call through the restart budget).
  /// With several setups, the connections commit one after another, in setup order: not
  /// atomically across databases. Every connection type needs `begin()`, `commit()`,
  /// `rollback()`, `savepoint()`, `releaseSavepoint()` and `rollbackToSavepoint()`, as
  /// sqlite::Connection and postgres::Connection have; otherwise an OptionError. Default: off,
  /// every statement commits on its own.
  bool batchTransactions = false;
};

namespace detail {

/// Constructs T from the callable's result in place (no move needed).
template <class F>
struct ConstructFrom {
  F f;
  operator std::invoke_result_t<F&>() { return f(); } // NOLINT: implicit on purpose
};
template <class F>
ConstructFrom(F) -> ConstructFrom<F>;

/// The connections of the current worker process, in setup order. Lives in the caller's stack
/// frame; under Context::fork each worker has its own copy, filled by its initializer. The
/// caller's copy stays empty: the caller never connects.
template <class... Conns>
struct ConnectionSlots {
  std::tuple<std::optional<Conns>...> conns;
  bool open = false;
  bool broken = false; // a connection was found dead and closed: reopen before the next input
  // Reopening after a break (DatabaseAsync::reopenBroken): when the first reopen attempt failed
  // (the deadline counts from there), the wait before the next attempt, and attempts so far.
  std::optional<std::chrono::steady_clock::time_point> reopenFailingSince;
  std::chrono::milliseconds reopenBackoff{0};
  int reopenAttempts = 0;
  // DatabaseOptions::batchTransactions: a transaction is open on every connection; a connection
  // broke (or could not be rolled back) inside it, so its inputs' writes are gone.
  bool inTransaction = false;
  bool transactionLost = false;

  /// Close the first `count` connections, the last opened first.
  void closeFirst(std::size_t count) noexcept {
    open = false;
    closeFrom<sizeof...(Conns)>(count);
  }

private:
  template <std::size_t I>
  void closeFrom(std::size_t count) noexcept {
    if constexpr (I > 0) {
      if (I - 1 < count) {
        try {
          std::get<I - 1>(conns).reset();
        } catch (...) {
          // A failing close cannot change any input's outcome.
        }
      }
      closeFrom<I - 1>(count);
    }
  }
};

template <class F, class T, class... C, std::size_t... I>
constexpr bool applicableWithImpl(std::index_sequence<I...>) {
  return std::is_invocable_v<F, decltype(std::get<I>(std::declval<T>()))..., C&...>;
}

/// F can be called with the input (whole, or its tuple members unpacked) followed by C&...
template <class F, class T, class... C>
concept CallableWithConnections = std::is_invocable_v<F, T, C&...> ||
    (TupleLike<T>&& applicableWithImpl<F, T, C...>(
        std::make_index_sequence<std::tuple_size_v<std::remove_cvref_t<T>>>{}));

/// Whether a connection is still usable after an input that used it failed: the setup's
/// `alive(conn)` when it has one, else the connection's own `alive()`, else assumed usable.
template <class S, class C>
bool connectionAlive(const S& setup, const C& conn) {
  if constexpr (requires { { setup.alive(conn) } -> std::convertible_to<bool>; })
    return static_cast<bool>(setup.alive(conn));
  else if constexpr (requires { { conn.alive() } -> std::convertible_to<bool>; })
    return static_cast<bool>(conn.alive());
  else
    return true;
}

/// A connection DatabaseOptions::batchTransactions can use.
template <class C>
concept BatchTransactional = requires(C& c) {
  c.begin();
  c.commit();
  c.rollback();
  c.savepoint();
  c.releaseSavepoint();
  c.rollbackToSavepoint();
};

/// Calls `f(conn)` for every open connection, in setup order.
template <class... Conns, class F>
void forEachOpen(ConnectionSlots<Conns...>& slots, F&& f) {
  std::apply([&](auto&... conn) { ((conn ? f(*conn) : void()), ...); }, slots.conns);
}

/// Roll back the batch transaction on every open connection; errors are moot (the worker is
/// about to exit, or the connection is gone).
template <class... Conns>
void abandonTransaction(ConnectionSlots<Conns...>& slots) noexcept {
  forEachOpen(slots, [](auto& conn) {
    try {
      conn.rollback();
    } catch (...) {
    }
  });
  slots.inTransaction = false;
}

/// ResultWriter's BeforeSend hook: commit the batch transaction before its results go. Throws
/// (and the worker exits without sending them) when it cannot.
template <class... Conns>
void commitBeforeSend(void* context) {
  auto& slots = *static_cast<ConnectionSlots<Conns...>*>(context);
  if (!slots.inTransaction) return;
  if (slots.transactionLost) {
    abandonTransaction(slots);
    throw Error("flock: DatabaseAsync: a connection broke inside the batch transaction, so the "
                "writes of its inputs are lost; they run again on a fresh worker");
  }
  try {
    forEachOpen(slots, [](auto& conn) { conn.commit(); });
  } catch (...) {
    abandonTransaction(slots);
    throw;
  }
  slots.inTransaction = false;
}

/// The callable the pool runs: the user's callable with the worker's connections appended.
/// After an input fails, connections that report themselves dead are closed; they are opened
/// again before the next input (by `owner`, the DatabaseAsync that knows the setups).
template <class F, class Owner, class... Conns>
struct WithConnections {
  F* fn;
  ConnectionSlots<Conns...>* slots;
  const Owner* owner;

  template <class T>
  requires CallableWithConnections<F&, T, Conns...>
  decltype(auto) operator()(T&& x) const {
    if (!slots->open) throw Error("flock: DatabaseAsync: the worker's connections are not open");
    if constexpr ((BatchTransactional<Conns> && ...)) {
      if (owner->options().batchTransactions) return inTransaction(std::forward<T>(x));
    }
    if (slots->broken) owner->reopenBroken(*slots);
    try {
      return invoke(std::forward<T>(x));
    } catch (...) {
      owner->closeDead(*slots);
      throw;
    }
  }

private:
  /// DatabaseOptions::batchTransactions: run the input in a savepoint of the batch transaction,
  /// beginning that transaction first when the last results were sent.
  template <class T>
  decltype(auto) inTransaction(T&& x) const {
    if (slots->transactionLost)
      throw Error("flock: DatabaseAsync: a connection broke inside the batch transaction; this "
                  "input runs again on a fresh worker");
    if (!slots->inTransaction) {
      if (slots->broken) owner->reopenBroken(*slots);
      try {
        forEachOpen(*slots, [](auto& conn) { conn.begin(); });
      } catch (...) {
        abandonTransaction(*slots);
        owner->closeDead(*slots);
        throw;
      }
      slots->inTransaction = true;
      detail::beforeSend() = {&commitBeforeSend<Conns...>, slots};
    }
    try {
      forEachOpen(*slots, [](auto& conn) { conn.savepoint(); });
      if constexpr (std::is_void_v<decltype(invoke(std::forward<T>(x)))>) {
        invoke(std::forward<T>(x));
        forEachOpen(*slots, [](auto& conn) { conn.releaseSavepoint(); });
      } else {
        decltype(auto) result = invoke(std::forward<T>(x));
        forEachOpen(*slots, [](auto& conn) { conn.releaseSavepoint(); });
        return result;
      }
    } catch (...) {
      try {
        forEachOpen(*slots, [](auto& conn) { conn.rollbackToSavepoint(); });
      } catch (...) {
        slots->transactionLost = true;
      }
      const bool wasBroken = slots->broken;
      owner->closeDead(*slots);
      if (slots->broken && !wasBroken) slots->transactionLost = true;
      throw;
    }
  }

  template <class T>
  decltype(auto) invoke(T&& x) const {
    return std::apply(
        [&](auto&... conn) -> decltype(auto) {
          if constexpr (std::is_invocable_v<F&, T, Conns&...>) {
            return std::invoke(*fn, std::forward<T>(x), *conn...);
          } else {
            return std::apply(
                [&](auto&&... members) -> decltype(auto) {
                  return std::invoke(*fn, std::forward<decltype(members)>(members)..., *conn...);
                },
                std::forward<T>(x));
          }
        },
        slots->conns);
  }
};

/// A persistent DatabaseAsync's per-worker state: the connections its pool's workers opened, and
/// the DatabaseAsync they came from (in the worker's copy of the caller's memory).
template <class Owner, class Slots>
struct PooledConnections {
  Slots slots;
  const Owner* owner = nullptr;
  static PooledConnections& get() {
    static PooledConnections state;
    return state;
  }
};

/// A persistent DatabaseAsync's call: the user's (portable) callable, given the worker's
/// connections. Travels to the workers as that callable (see WrapsCallable).
template <class F, class Owner, class... Conns>
struct PooledDatabaseCall {
  using WrappedCallable = F;
  F wrapped;

  template <class T>
    requires CallableWithConnections<F&, T, Conns...>
  decltype(auto) operator()(T&& x) {
    auto& state = PooledConnections<Owner, ConnectionSlots<Conns...>>::get();
    if (state.owner == nullptr) throw Error("flock: DatabaseAsync: this worker has no connections");
    const WithConnections<F, Owner, Conns...> call{&wrapped, &state.slots, state.owner};
    return call(std::forward<T>(x));
  }
};

template <class F, class T, class... Conns>
struct DatabaseCallableCheck {
  static_assert(
      sizeof(F) == 0,
      "flock: the DatabaseAsync callable must take the input (or the members of a tuple input) "
      "followed by one reference per setup, in setup order: fn(input, Conn1&, Conn2&...). Check "
      "its parameter types and the order of the setups.");
};

/// "std::runtime_error: cannot connect" for the exception being handled (its message alone when
/// its type has no name).
inline std::string currentExceptionText() {
  auto [type, message] = describeCurrentException();
  return type.empty() ? message : fmt::format("{}: {}", type, message);
}

/// A measured duration for messages: "850ms", "2.4s".
inline std::string describeElapsed(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d < seconds(1)) return fmt::format("{}ms", duration_cast<milliseconds>(d).count());
  return fmt::format("{:.1f}s", duration<double>(d).count());
}

inline std::string describeDuration(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d % seconds(1) == nanoseconds(0))
    return fmt::format("{}s", duration_cast<seconds>(d).count());
  if (d % milliseconds(1) == nanoseconds(0))
    return fmt::format("{}ms", duration_cast<milliseconds>(d).count());
  return fmt::format("{}us", duration_cast<microseconds>(d).count());
}

} // namespace detail

/// Runs a callable that needs database connections over many inputs in worker processes; each
/// worker opens every setup's connection once and passes them to the callable after the input,
/// in setup order. Results come back in input order.
///
///   flockmp::DatabaseAsync db{{.poolSize = 4}, sqlite, pg};
///   auto rows = db.apply(ids, [](int id, Sqlite& sqlite_con, PgConn& pg_con) { ... });
///
/// Worker lifecycle: each worker opens its connections before its first input and closes them
/// (last setup first) when it stops normally, including when it is recycled after
/// `maxTasksPerWorker`. A worker that crashes or times out is replaced, and the replacement
/// opens fresh connections. A connection that fails to open makes the worker exit with a
/// SetupError; workers that keep failing end the call through the restart budget, and every input
/// that could not run is reported with FailureKind::setup. A connection that breaks mid-run makes
/// the input that hit it fail with the driver's own exception; when the connection (or its
/// setup) can tell it is dead, through `alive()`, it is closed and opened again before the
/// worker's next input, as postgres::Connection does. While the server is down that reopen is
/// retried with backoff up to setupTimeout (see DatabaseOptions), so a restart fails only the
/// inputs whose statements it cut off, at most one per worker.
template <DatabaseSetupType... Setups>
class DatabaseAsync {
public:
  /// The setups, opened in this order in every worker; default options.
  explicit DatabaseAsync(Setups... setups)
      : DatabaseAsync(DatabaseOptions{}, std::move(setups)...) {}
  /// Options first, then the setups.
  explicit DatabaseAsync(DatabaseOptions options, Setups... setups)
      : setups_(std::move(setups)...), options_(std::move(options)) {
    validate();
    if (options_.persistent) shared_ = std::make_shared<Shared>();
  }
  /// The seed's shape: `DatabaseAsync(std::tuple{sqlite, pg}, {.poolSize = 4})`.
  explicit DatabaseAsync(std::tuple<Setups...> setups, DatabaseOptions options = {})
      : setups_(std::move(setups)), options_(std::move(options)) {
    validate();
    if (options_.persistent) shared_ = std::make_shared<Shared>();
  }

  /// With DatabaseOptions::persistent, the pids of the running workers (empty before the first
  /// call); otherwise empty.
  [[nodiscard]] std::vector<pid_t> workerPids() const {
    if (!shared_) return {};
    std::lock_guard lock(shared_->mutex);
    return shared_->pool ? shared_->pool->workerPids() : std::vector<pid_t>{};
  }

  /// Run `fn(input, conn...)` for every input (a tuple input is unpacked first when `fn` takes
  /// its members). Returns `std::vector<R>` in input order, nothing for a void `fn`. Throws
  /// flockmp::TaskError when an input fails (setup failures included: their kind is
  /// FailureKind::setup), flockmp::OptionError for bad options.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto apply(Range&& items, F&& fn) const {
    return call<false, Codec>(std::forward<Range>(items), fn);
  }

  /// Like apply, but never throws for failed inputs: one flockmp::Outcome per input.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class F>
  auto tryApply(Range&& items, F&& fn) const {
    return call<true, Codec>(std::forward<Range>(items), fn);
  }

  /// Convenience for instance methods: `apply(items, &T::method, obj)` is
  /// `apply(items, std::bind_front(&T::method, obj))`; the method takes the input, then the
  /// connections.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  auto apply(Range&& items, M method, Obj&& obj) const {
    detail::MemberCall<M, std::decay_t<Obj>> fn{method, std::forward<Obj>(obj)};
    return call<false, Codec>(std::forward<Range>(items), fn);
  }

  /// tryApply for instance methods.
  template <class Codec = BinaryCodec, std::ranges::input_range Range, class M, class Obj>
    requires std::is_member_function_pointer_v<M>
  auto tryApply(Range&& items, M method, Obj&& obj) const {
    detail::MemberCall<M, std::decay_t<Obj>> fn{method, std::forward<Obj>(obj)};
    return call<true, Codec>(std::forward<Range>(items), fn);
  }

  [[nodiscard]] const std::tuple<Setups...>& setups() const noexcept { return setups_; }
  [[nodiscard]] const DatabaseOptions& options() const noexcept { return options_; }

  /// The pool options a call runs with: poolSize, the restart budget stretched
  /// for setupTimeout (the connection initializer and finalizer are added per call).
  [[nodiscard]] Options poolOptions() const {
    Options o = options_.pool;
    if (options_.poolSize) o.poolSize = options_.poolSize;
    if (options_.setupTimeout) {
      // Workers whose setup times out die at most once per setupTimeout each; the budget must
      // remember enough of those deaths to end the call.
      const auto need = std::chrono::ceil<std::chrono::milliseconds>(
                            *options_.setupTimeout * (o.restartBudget.maxRestarts + 1)) +
                        std::chrono::seconds(1);
      if (o.restartBudget.period < need) o.restartBudget.period = need;
      // The pool's own limit on a worker's start (else its timeOutError) must not cut the
      // connections short: each setup has setupTimeout, plus a margin for the user's initializer.
      if (!o.setupTimeout) o.setupTimeout = *options_.setupTimeout * sizeof...(Setups) + std::chrono::seconds(5);
    }
    return o;
  }

private:
  using Slots = detail::ConnectionSlots<ConnectionOf<Setups>...>;

  void validate() const {
    if (options_.poolSize && *options_.poolSize <= 0)
      throw OptionError(
          fmt::format("flock: poolSize must be at least 1 (got {})", *options_.poolSize));
    if (options_.poolSize && options_.pool.poolSize &&
        *options_.pool.poolSize != *options_.poolSize)
      throw OptionError(
          "flock: DatabaseOptions: give poolSize or pool.poolSize, not both");
    if (options_.setupTimeout && options_.setupTimeout->count() <= 0)
      throw OptionError(
          "flock: setupTimeout must be a positive duration (or std::nullopt for none)");
    detail::validateOptions(options_.pool);
    if (options_.batchTransactions) {
      constexpr std::array<bool, sizeof...(Setups)> transactional{
          detail::BatchTransactional<ConnectionOf<Setups>>...};
      std::size_t i = 0;
      std::optional<std::string_view> lacking;
      std::apply(
          [&](const auto&... setup) {
            ((!lacking && !transactional[i] ? (void)(lacking = setup.name) : void(), ++i), ...);
          },
          setups_);
      if (lacking)
        throw OptionError(fmt::format(
            "flock: DatabaseOptions::batchTransactions: the connections of setup \"{}\" have no "
            "begin(), commit(), rollback(), savepoint(), releaseSavepoint() and "
            "rollbackToSavepoint()",
            *lacking));
    }
    if (options_.persistent) {
      if (options_.pool.context != Context::fork)
        throw OptionError("flock: a persistent DatabaseAsync runs on Context::fork workers (they inherit the "
                          "setups); leave pool.context at its default");
    }
  }

  /// A persistent DatabaseAsync's pool, shared by its copies; started at the first call.
  struct Shared {
    std::mutex mutex;
    std::unique_ptr<BaseMultiProc> pool;
  };
  using WorkerState = detail::PooledConnections<DatabaseAsync, detail::ConnectionSlots<ConnectionOf<Setups>...>>;

  BaseMultiProc& persistentPool() const {
    std::lock_guard lock(shared_->mutex);
    if (!shared_->pool) {
      Options o = poolOptions();
      o.initializer = [this, user = std::move(o.initializer)] {
        auto& state = WorkerState::get();
        state.owner = this; // this DatabaseAsync, as the worker's copy of memory holds it
        openAll(state.slots);
        if (user) user();
      };
      o.finalizer = [user = std::move(o.finalizer)] {
        struct Close {
          ~Close() { WorkerState::get().slots.closeFirst(sizeof...(Setups)); }
        } close;
        if (user) user();
      };
      shared_->pool = std::make_unique<BaseMultiProc>(std::move(o));
    }
    return *shared_->pool;
  }

  template <bool Try, class Codec, class Range, class F>
  auto call(Range&& items, F& fn) const {
    using Ref = std::ranges::range_reference_t<Range>;
    if constexpr (!detail::CallableWithConnections<F&, Ref, ConnectionOf<Setups>...>) {
      (void)detail::DatabaseCallableCheck<F, Ref, ConnectionOf<Setups>...>{};
      return;
    } else {
      if (options_.persistent) {
        using Fn = std::decay_t<F>;
        if constexpr (detail::PortableCallable<Codec, Fn>) {
          detail::PooledDatabaseCall<Fn, DatabaseAsync, ConnectionOf<Setups>...> pooled{fn};
          if constexpr (Try) return persistentPool().template tryApply<Codec>(std::forward<Range>(items), pooled);
          else return persistentPool().template apply<Codec>(std::forward<Range>(items), pooled);
        } else {
          throw OptionError(
              "flock: a persistent DatabaseAsync needs a callable its workers can rebuild (a function pointer, a "
              "captureless lambda, an empty or codable function object, or a member function with a codable "
              "object); this one holds state such as a lambda capture");
        }
      }
      Slots slots;
      Options o = poolOptions();
      o.initializer = [this, &slots, user = std::move(o.initializer)] {
        openAll(slots);
        if (user) user();
      };
      o.finalizer = [&slots, user = std::move(o.finalizer)] {
        struct Close {
          Slots& s;
          ~Close() { s.closeFirst(sizeof...(Setups)); }
        } close{slots};
        if (user) user();
      };
      detail::WithConnections<std::remove_reference_t<F>, DatabaseAsync, ConnectionOf<Setups>...>
          wrapped{&fn, &slots, this};
      return detail::run<Try, Codec>(wrapped, std::forward<Range>(items), o);
    }
  }

  template <class, class, class...>
  friend struct detail::WithConnections;

  /// Worker side, after an input failed: close every connection that reports itself dead.
  void closeDead(Slots& slots) const noexcept {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (closeIfDead<I>(slots), ...); }
    (std::index_sequence_for<Setups...>{});
  }

  template <std::size_t I>
  void closeIfDead(Slots& slots) const noexcept {
    auto& slot = std::get<I>(slots.conns);
    if (!slot) return;
    bool alive = false;
    try {
      alive = detail::connectionAlive(std::get<I>(setups_), *slot);
    } catch (...) {
      // A health check that throws says enough.
    }
    if (alive) return;
    try {
      slot.reset();
    } catch (...) {
      // Closing a dead connection may fail; it is gone either way.
    }
    slots.broken = true;
  }

  /// Worker side, before an input: open again, in setup order, the connections closed as dead.
  ///
  /// A server that restarts refuses connections for a while, and failing the input at the first
  /// refusal would fail every input the worker takes until the server is back. So a failed reopen
  /// is retried with exponential backoff (10 ms, doubling, capped at 1 s) until it succeeds or
  /// the reopen deadline passes: setupTimeout (DatabaseOptions::defaultReopenDeadline when that is
  /// std::nullopt) after the first failed attempt. Only then does the input fail, with a
  /// SetupError naming the setup, how long it retried and the last error. Past the deadline each
  /// input tries once and fails at once, so a server that never comes back ends the call at the
  /// speed of refused connects, and one that does come back is picked up by the next input.
  ///
  /// timeOutError: the wait runs inside the input that is about to run (the worker has taken it
  /// and the engine's per-input clock is running; nothing here can pause it), so it counts
  /// against that input's timeOutError. A per-input kill during the wait would fail an innocent
  /// input as timed out and take the worker with it (its replacement could not connect either),
  /// so with a timeOutError the wait within one input stops at half of it, leaving the other
  /// half for the input's own work: that input then fails with a SetupError that says so, and the
  /// next input goes on waiting towards the same deadline. To ride out restarts without losing
  /// inputs, keep timeOutError well above the restart time.
  void reopenBroken(Slots& slots) const {
    using Clock = std::chrono::steady_clock;
    constexpr std::chrono::milliseconds firstBackoff{10};
    constexpr std::chrono::milliseconds maxBackoff{1000};
    const auto entered = Clock::now();
    std::optional<Clock::time_point> inputLimit;
    if (options_.pool.timeOutError)
      inputLimit =
          entered + std::chrono::duration_cast<Clock::duration>(*options_.pool.timeOutError / 2);
    const std::chrono::nanoseconds limit =
        options_.setupTimeout ? std::chrono::nanoseconds(*options_.setupTimeout)
                              : std::chrono::nanoseconds(DatabaseOptions::defaultReopenDeadline);
    for (;;) {
      std::string failedSetup, error;
      if (reopenClosed(slots, failedSetup, error)) {
        slots.broken = false;
        slots.reopenFailingSince.reset();
        slots.reopenAttempts = 0;
        return;
      }
      const auto now = Clock::now();
      if (!slots.reopenFailingSince) {
        slots.reopenFailingSince = now;
        slots.reopenBackoff = firstBackoff;
      }
      ++slots.reopenAttempts;
      const auto deadline = *slots.reopenFailingSince + limit;
      if (now >= deadline)
        throw SetupError(
            std::move(failedSetup), ::getpid(),
            fmt::format("reopening the connection after it broke: still failing after retrying for "
                        "{} ({} attempts; the limit is {} = {}); last error: {}",
                        detail::describeElapsed(now - *slots.reopenFailingSince),
                        slots.reopenAttempts,
                        options_.setupTimeout ? "setupTimeout" : "defaultReopenDeadline",
                        detail::describeDuration(limit), error));
      auto wake = std::min<Clock::time_point>(now + slots.reopenBackoff, deadline);
      if (inputLimit && wake > *inputLimit) {
        if (now >= *inputLimit)
          throw SetupError(
              std::move(failedSetup), ::getpid(),
              fmt::format("reopening the connection after it broke: not open again after waiting "
                          "{} in this input (at most half its timeOutError of {}); the worker's "
                          "next input goes on retrying until {} after the first failed attempt; "
                          "last error: {}",
                          detail::describeElapsed(now - entered),
                          detail::describeDuration(*options_.pool.timeOutError),
                          detail::describeDuration(limit), error));
        wake = *inputLimit;
      }
      std::this_thread::sleep_until(wake);
      slots.reopenBackoff = std::min(slots.reopenBackoff * 2, maxBackoff);
    }
  }

  /// One attempt to open every closed connection, in setup order. False, with the setup's name
  /// and the driver's message, at the first that fails (those opened before it stay open).
  bool reopenClosed(Slots& slots, std::string& failedSetup, std::string& error) const {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return (reopenIfClosed<I>(slots, failedSetup, error) && ...);
    }(std::index_sequence_for<Setups...>{});
  }

  template <std::size_t I>
  bool reopenIfClosed(Slots& slots, std::string& failedSetup, std::string& error) const {
    auto& slot = std::get<I>(slots.conns);
    if (slot) return true;
    const auto& setup = std::get<I>(setups_);
    try {
      slot.emplace(detail::ConstructFrom{[&] { return setup.connect(); }});
      return true;
    } catch (...) {
      failedSetup = std::string(setup.name);
      error = detail::currentExceptionText();
      if (error.empty()) error = "unknown error";
      return false;
    }
  }

  /// Worker side: open every connection in setup order; on failure close those already open and
  /// throw SetupError.
  void openAll(Slots& slots) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      std::size_t opened = 0;
      try {
        ((openOne<I>(slots), ++opened), ...);
      } catch (...) {
        slots.closeFirst(opened);
        throw;
      }
    }
    (std::index_sequence_for<Setups...>{});
    slots.open = true;
  }

  template <std::size_t I>
  void openOne(Slots& slots) const {
    const auto& setup = std::get<I>(setups_);
    auto& slot = std::get<I>(slots.conns);
    const auto fail = [&](const std::string& cause) {
      return SetupError(std::string(setup.name), ::getpid(), cause);
    };
    if (!options_.setupTimeout) {
      try {
        slot.emplace(detail::ConstructFrom{[&] { return setup.connect(); }});
      } catch (...) {
        throw fail(detail::currentExceptionText());
      }
      return;
    }
    // The connect runs on a helper thread so that a hung one can be abandoned: the worker then
    // reports the timeout and exits (_exit ends the helper thread too).
    struct Shared {
      std::mutex m;
      std::condition_variable cv;
      bool done = false;
      std::string error;
    };
    auto shared = std::make_shared<Shared>();
    std::thread helper([shared, &setup, &slot] {
      std::string error;
      try {
        slot.emplace(detail::ConstructFrom{[&] { return setup.connect(); }});
      } catch (...) {
        error = detail::currentExceptionText();
        if (error.empty()) error = "unknown error";
      }
      std::lock_guard lock(shared->m);
      shared->done = true;
      shared->error = std::move(error);
      shared->cv.notify_all();
    });
    std::unique_lock lock(shared->m);
    if (!shared->cv.wait_for(lock, *options_.setupTimeout, [&] { return shared->done; })) {
      lock.unlock();
      helper.detach();
      throw fail(fmt::format("timed out: the connection did not open within setupTimeout ({})",
                             detail::describeDuration(*options_.setupTimeout)));
    }
    std::string error = std::move(shared->error);
    lock.unlock();
    helper.join();
    if (!error.empty()) throw fail(error);
  }

  std::tuple<Setups...> setups_;
  std::shared_ptr<Shared> shared_; // DatabaseOptions::persistent only
  DatabaseOptions options_;
};

template <class... Setups>
DatabaseAsync(std::tuple<Setups...>, DatabaseOptions) -> DatabaseAsync<Setups...>;
template <class... Setups>
DatabaseAsync(std::tuple<Setups...>) -> DatabaseAsync<Setups...>;

} // namespace flockmp

// DatabaseAsync on a real PostgreSQL server: a throw-away cluster this test starts itself (see
// pg_cluster.hpp) and always stops. Parallel inserts and selects through libpq with exact counts,
// one connection per worker, setup failures for a wrong password or port, and a server restarted
// mid-run.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <flock/postgres.hpp>

#include "catch.hpp"
#include "support/test_util.hpp"
#include "pg_cluster.hpp"
#include "support/deadlock_guard.hpp"
#include "support/proc_stats.hpp"

using namespace std::chrono_literals;
using flockmp::FailureKind;
using flockmp::postgres::Connection;
using flockmp::test::contains;
using flockmp::test::DeadlockGuard;
using flockmp::test::PgCluster;

using flockmp::test::range;
using flockmp::test::TempDir;

namespace {

// Configured with server binaries that have since gone: skip (CTest SKIP_RETURN_CODE 77).
[[maybe_unused]] const bool binariesChecked = [] {
  if (!PgCluster::available()) {
    std::printf(
        "flock: PostgreSQL server binaries not found in %s: the PostgreSQL tests are skipped\n",
        FLOCK_PG_BINDIR);
    std::fflush(stdout);
    std::_Exit(77);
  }
  return true;
}();

/// One cluster for the whole binary, started on first use, stopped at exit.
PgCluster& cluster() {
  static PgCluster c;
  return c;
}


/// Fresh tables for a test: items(id, worker, backend) and events(pid, backend, event).
void resetTables() {
  Connection c(cluster().conninfo());
  c.exec("set client_min_messages = warning");
  c.exec("drop table if exists items; drop table if exists events");
  c.exec(
      "create table items(id integer not null, worker integer not null, backend integer not null)");
  c.exec(
      "create table events(pid integer not null, backend integer not null, event text not null)");
}

/// A connection that records its opening and closing in the database.
struct Tracked {
  Connection con;
  explicit Tracked(const std::string& conninfo) : con(conninfo) {
    con.exec("insert into events values($1, $2, 'open')", static_cast<int>(::getpid()),
             con.backendPid());
  }
  Tracked(Tracked&&) = default;
  Tracked& operator=(Tracked&&) = delete;
  ~Tracked() {
    if (!con.get()) return;
    try {
      con.exec("insert into events values($1, $2, 'close')", static_cast<int>(::getpid()),
               con.backendPid());
    } catch (...) {}
  }
};

auto trackedSetup(const std::string& conninfo) {
  return flockmp::DatabaseSetup{"pg_con", [](const flockmp::Parameters& p) { return Tracked(p.at("conninfo")); },
                                flockmp::Parameters{{"conninfo", conninfo}}};
}

std::multiset<int> events(const std::string& event) {
  Connection c(cluster().conninfo());
  auto r = c.exec("select pid from events where event = $1", event);
  std::multiset<int> out;
  for (int i = 0; i < r.rows(); ++i) out.insert(std::stoi(*r.value(i, 0)));
  return out;
}

/// Client connections to the test database other than the caller's own `c`, once the closed
/// ones are gone (a backend exits shortly after its client disconnects).
int otherClients(Connection& c) {
  int n = 0;
  for (int tries = 0; tries < 50; ++tries) {
    n = c.scalar<int>(
        "select count(*) from pg_stat_activity where datname = current_database() and "
        "backend_type = 'client backend' and pid <> pg_backend_pid()");
    if (n == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  return n;
}

} // namespace

TEST_CASE("postgres: parallel inserts and selects through libpq, one connection per worker",
          "[database][postgres]") {
  DeadlockGuard guard(240);
  resetTables();
  const int fdsBefore = flockmp::test::openFdCount();
  const int n = 300;
  flockmp::DatabaseAsync db{{.poolSize = 4, .pool = {.batchSize = 10}},
                            trackedSetup(cluster().conninfo())};
  const auto backends = db.apply(range(n), [](int id, Tracked& t) {
    t.con.exec("insert into items values($1, $2, $3)", id, static_cast<int>(::getpid()),
               t.con.backendPid());
    if (t.con.scalar<int>("select count(*) from items where id = $1", id) != 1)
      throw std::logic_error("row not there once");
    return t.con.backendPid();
  });
  REQUIRE(backends.size() == static_cast<std::size_t>(n));
  CHECK(flockmp::test::childProcessCount() == 0);
  CHECK(flockmp::test::openFdCount() == fdsBefore); // the caller opened no connection

  Connection c(cluster().conninfo());
  CHECK(c.scalar<int>("select count(*) from items") == n);
  CHECK(c.scalar<int>("select count(distinct id) from items") == n);
  CHECK(c.scalar<int>("select max(id) from items") == n - 1);
  // Every input ran on its worker's one connection: 4 workers, 4 backends, 4 opens, 4 closes.
  CHECK(std::set<int>(backends.begin(), backends.end()).size() == 4);
  CHECK(c.scalar<int>("select count(distinct backend) from items") == 4);
  CHECK(c.scalar<int>("select count(distinct worker) from items") == 4);
  const auto opens = events("open");
  CHECK(opens.size() == 4);
  CHECK(std::set<int>(opens.begin(), opens.end()).size() == 4);
  CHECK(events("close") == opens);
  CHECK(c.scalar<int>(
            "select count(*) from events e join (select distinct worker, backend from items) i "
            "on e.pid = i.worker and e.backend = i.backend where e.event = 'open'") == 4);
  CHECK(otherClients(c) == 0); // every worker closed its connection
}

TEST_CASE("postgres: the ready-made setup, recycled workers open fresh connections",
          "[database][postgres]") {
  DeadlockGuard guard(240);
  resetTables();
  flockmp::DatabaseAsync db{{.poolSize = 2, .pool = {.maxTasksPerWorker = 10}},
                            flockmp::postgres::setup("pg_con", cluster().conninfo())};
  const auto backends = db.apply(range(50), [](int id, Connection& pg) {
    pg.exec("insert into items values($1, $2, $3)", id, static_cast<int>(::getpid()),
            pg.backendPid());
    return pg.backendPid();
  });
  Connection c(cluster().conninfo());
  CHECK(c.scalar<int>("select count(distinct id) from items") == 50);
  CHECK(c.scalar<int>("select count(*) from items") == 50);
  // At most 10 inputs per worker, and one connection (one backend) per worker.
  CHECK(c.scalar<int>("select count(distinct worker) from items") >= 5);
  CHECK(c.scalar<int>("select count(distinct backend) from items") ==
        c.scalar<int>("select count(distinct worker) from items"));
  CHECK(c.scalar<int>("select max(n) from (select count(*) n from items group by worker) t") <= 10);
  CHECK(otherClients(c) == 0);
}

TEST_CASE("postgres: a wrong password or port is a setup failure naming the setup",
          "[database][postgres][faults]") {
  DeadlockGuard guard(120);
  const auto budget = flockmp::RestartBudget{.maxRestarts = 3, .period = 60s};
  SECTION("wrong password") {
    flockmp::DatabaseAsync db{
        {.poolSize = 2, .pool = {.restartBudget = budget}},
        flockmp::postgres::setup("pg_con", cluster().conninfo("not-the-password"))};
    try {
      db.apply(range(6), [](int id, Connection&) { return id; });
      FAIL("no exception");
    } catch (const flockmp::TaskError& e) {
      REQUIRE(e.failures().size() == 6);
      for (const auto& f : e.failures()) {
        CHECK(f.kind == FailureKind::setup);
        CHECK_THAT(f.message, contains("setup \"pg_con\" failed in worker "));
        CHECK_THAT(f.message, contains("password authentication failed for user \"flock\""));
      }
    }
  }
  SECTION("wrong port") {
    flockmp::DatabaseAsync db{
        {.poolSize = 2, .pool = {.restartBudget = budget}},
        flockmp::postgres::setup("pg_con",
                                 cluster().conninfo(PgCluster::password, PgCluster::freePort()))};
    auto outcomes = db.tryApply(range(6), [](int id, Connection&) { return id; });
    for (const auto& o : outcomes) {
      REQUIRE_FALSE(o.hasValue());
      CHECK(o.failure().kind == FailureKind::setup);
      CHECK_THAT(o.failure().message, contains("setup \"pg_con\" failed in worker "));
      CHECK_THAT(o.failure().message, contains("Connection refused"));
    }
  }
  CHECK(flockmp::test::childProcessCount() == 0);
}

TEST_CASE("postgres: a server down mid-run fails at most one input per worker; the others wait "
          "for it to come back",
          "[database][postgres][faults]") {
  DeadlockGuard guard(240);
  resetTables();
  // Once 6 inputs are done, a thread of the caller stops the server (fast shutdown: the open
  // connections are cut), keeps it down for a second and starts it again, while the caller goes
  // on handing out inputs. The trigger is a count of finished inputs; the second only makes the
  // outage long enough for the workers to take many inputs meanwhile (without waiting for the
  // server they failed about 30 of the 40). No assertion depends on timing.
  std::thread restarter;
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{restarter}; // also when the call throws
  std::string restartError;
  std::atomic<bool> down{false};
  flockmp::Options pool{.onProgress = [&](const flockmp::Progress& p) {
    // Called in the caller's process while the workers run.
    if (restarter.joinable() || p.done < 6) return;
    restarter = std::thread([&] {
      try {
        cluster().stop();
        down = true;
        std::this_thread::sleep_for(1s);
        cluster().start();
      } catch (const std::exception& e) {
        restartError = e.what();
      }
    });
  }};
  pool.batchSize = 1;
  // setupTimeout is the reopen deadline: far above the outage, so no input waits past it.
  flockmp::DatabaseAsync db{{.poolSize = 2, .setupTimeout = 120s, .pool = pool},
                            flockmp::postgres::setup("pg_con", cluster().conninfo())};
  auto outcomes = db.tryApply(range(40), [](int id, Connection& pg) {
    std::this_thread::sleep_for(30ms);
    return pg.scalar<int>("select $1::int * 2", id);
  });
  if (restarter.joinable()) restarter.join();
  if (!cluster().running()) cluster().start();
  REQUIRE(restartError.empty());
  REQUIRE(down); // the server did go down during the run
  REQUIRE(outcomes.size() == 40);
  int ok = 0, failed = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (outcomes[i].hasValue()) {
      CHECK(*outcomes[i] == 2 * static_cast<int>(i));
      ++ok;
    } else {
      const auto& f = outcomes[i].failure();
      INFO(f.describe());
      // The task's own error, not a crash or a timeout.
      CHECK(f.kind == FailureKind::exception);
      // Only a statement on a connection the shutdown cut: never a reopen given up while the
      // server was down (a flockmp::SetupError: the bug of failing inputs during the outage).
      CHECK(f.type == "flockmp::postgres::Error");
      ++failed;
    }
  }
  INFO(failed << " of 40 inputs failed");
  CHECK(ok + failed == 40);
  // Each worker loses at most the one input whose statement found its connection cut; every
  // other input waited for the server (before the fix about 30 of the 40 failed).
  CHECK(failed <= 2);
  // Fresh workers (a new call) connect to the restarted server.
  auto again = db.apply(
      range(4), [](int id, Connection& pg) { return pg.scalar<int>("select $1::int + 1", id); });
  CHECK(again == std::vector<int>{1, 2, 3, 4});
  Connection c(cluster().conninfo());
  CHECK(otherClients(c) == 0); // the workers' reopened connections were closed too
}

// ---------------------------------------------------------------------------------------------
// The statement cache and batch transactions (issue 15).

TEST_CASE("postgres: a statement with parameters is prepared once per connection and kept, "
          "within a bound", "[database][postgres][statements]") {
  resetTables();
  Connection c(cluster().conninfo(), 2);
  const auto serverSide = [&] {
    return c.scalar<int>("select count(*) from pg_prepared_statements"); // unprepared: no args
  };
  for (int i = 0; i < 50; ++i) c.exec("insert into items values($1, $2, $3)", i, 0, 0);
  // Bug caught: every exec prepares again (50 prepares).
  CHECK(c.prepares() == 1);
  CHECK(serverSide() == 1);
  CHECK(c.scalar<int>("select count(*) from items where id < $1", 10) == 10);
  CHECK(c.scalar<int>("select count(*) from items where id >= $1", 10) == 40); // evicts the insert
  CHECK(c.prepares() == 3);
  // Bug caught: an evicted statement left allocated on the server (3 there instead of 2).
  CHECK(serverSide() == 2);
  c.exec("insert into items values($1, $2, $3)", 50, 0, 0); // evicted, so prepared again
  CHECK(c.prepares() == 4);
  CHECK(c.scalar<int>("select count(*) from items") == 51);
  // A failing execution leaves the cached statement usable.
  CHECK_THROWS_AS(c.exec("insert into items values($1, $2, $3)", "not a number", 0, 0),
                  flockmp::postgres::Error);
  c.exec("insert into items values($1, $2, $3)", 51, 0, 0);
  CHECK(c.prepares() == 4);
}

TEST_CASE("postgres: batchTransactions runs inputs in a transaction; a throwing input is rolled "
          "back alone and reported with its index",
          "[database][postgres][transactions]") {
  DeadlockGuard guard(240);
  resetTables();
  flockmp::DatabaseAsync db{{.poolSize = 2, .batchTransactions = true},
                            flockmp::postgres::setup("pg_con", cluster().conninfo())};
  const auto outcomes = db.tryApply(range(100), [](int id, Connection& pg) {
    pg.exec("insert into items values($1, $2, $3)", id, static_cast<int>(::getpid()),
            pg.backendPid());
    if (id % 10 == 3) throw std::runtime_error("input " + std::to_string(id) + " fails");
    if (id % 10 == 7) pg.exec("select 1/0"); // a server error aborts the transaction
    // Under autocommit the insert's transaction ended with it, and this select's own has no
    // transaction id; inside the batch transaction the insert's id is still there.
    return pg.exec("select txid_current_if_assigned() is not null").value(0, 0) == "t";
  });
  REQUIRE(outcomes.size() == 100);
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    INFO("input " << i);
    if (i % 10 == 3 || i % 10 == 7) {
      REQUIRE(!outcomes[i]);
      CHECK(outcomes[i].failure().index == i);
      if (i % 10 == 7) CHECK_THAT(outcomes[i].failure().message, contains("division by zero"));
    } else {
      REQUIRE(outcomes[i]);
      CHECK(*outcomes[i]); // bug: the option ignored, every statement autocommits
    }
  }
  Connection c(cluster().conninfo());
  // Bug caught: a batch never committed; a failing input's insert kept; the transaction left
  // aborted after a server error (every later input of the batch failing too).
  CHECK(c.scalar<int>("select count(*) from items") == 80);
  CHECK(c.scalar<int>("select count(*) from items where id % 10 in (3, 7)") == 0);
  CHECK(otherClients(c) == 0);
}
